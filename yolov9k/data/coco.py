"""COCO instances json: checked once, then turned into samples (training, validation) or into the image
and category ids that ``val --save-json`` writes.

A json is read as a user's file that may be broken anywhere. The file as a whole must be valid JSON of at
most ``MAX_COCO_JSON_BYTES`` with an ``images`` list and well-formed ``categories`` (an ``int`` id each,
no id twice, and, when the dataset YAML names its classes, the same names: by name in another order is
accepted with a warning, other names are refused); otherwise one ``ValueError`` line names the file.
Single entries that are broken are counted skips, logged (the first 20) and summed up per reason, as the
YOLO label scan does:

* images: not an object, no ``file_name``, an id that is not an int or a text, an id or a ``file_name``
  given twice (every such image is skipped: its boxes could belong to either), a ``width`` / ``height``
  that is not a positive number, or that differs from the decoded image (the boxes are in the json's
  pixels, which would silently scale them);
* annotations: not an object, an ``image_id`` that is not an int or a text or names no usable image, a
  ``category_id`` that is not a category, a ``bbox`` that is not four numbers; crowd annotations are
  skipped as in COCO training.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolov9k.data.images import ImageReadError, probe_image
from yolov9k.data.labels import Sample, ScanStats, parse_label_text, verify_in_threads
from yolov9k.errors import InputError
from yolov9k.io.limits import MAX_COCO_JSON_BYTES
from yolov9k.io.textfiles import one_line, read_text_file

__all__ = ["CocoJson", "read_coco_json", "load_coco_json", "coco_image_id"]

LOGGER = logging.getLogger("yolov9k.data")
_MAX_LOGGED = 20  # warnings per json; the rest only counted
_ImageId = int | str


@dataclass
class CocoImage:
    """One usable image entry: ``width`` / ``height`` as the json gives them (None when absent or 0)."""

    file_name: str
    id: _ImageId
    width: float | None
    height: float | None


@dataclass
class CocoJson:
    """A checked COCO json.

    Attributes:
        path: the file. images: the usable image entries, in file order.
        boxes: image id -> ``(class index, [x, y, w, h] pixels)`` of its usable annotations.
        category_ids: ``category_ids[i]`` is the COCO id of class ``i`` (to export predictions back).
        stats: images skipped (``corrupt`` per reason) and annotations dropped (``dropped`` per reason).
        warnings: what was skipped, one line each (the first ``_MAX_LOGGED``), and how many more.
    """

    path: Path
    images: list[CocoImage]
    boxes: dict[_ImageId, list[tuple[int, list[float]]]]
    category_ids: list[int]
    stats: ScanStats = field(default_factory=ScanStats)
    warnings: list[str] = field(default_factory=list)
    _more: int = 0

    def warn(self, text: str) -> None:
        if len(self.warnings) < _MAX_LOGGED:
            self.warnings.append(text)
        else:
            self._more += 1

    def image_ids(self, images_dir: str | Path | None = None) -> dict[str, _ImageId]:
        """File -> image id, for :func:`coco_image_id`: keyed by the normalized path under ``images_dir``
        (when given) and by the bare file name where that is unique in the json."""
        out: dict[str, _ImageId] = {}
        bare = Counter(Path(im.file_name).name for im in self.images)
        for im in self.images:
            if images_dir is not None:
                out[os.path.normpath(Path(images_dir) / im.file_name)] = im.id
            if bare[Path(im.file_name).name] == 1:
                out[Path(im.file_name).name] = im.id
        return out

    def log(self, prefix: str) -> None:
        for w in self.warnings:
            LOGGER.warning("%s%s: %s", prefix, self.path.name, w)
        if self._more:
            LOGGER.warning("%s%s: ... %d more (counted in the summary)", prefix, self.path.name, self._more)


def _is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _positive(value: Any) -> float | None:
    """A json width / height as a float: None when absent or 0, NaN when it is not a positive number."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        v = float(value)
    except OverflowError:  # a 400-digit integer
        return math.nan
    return v if math.isfinite(v) and v > 0 else math.nan


def _bbox(value: Any) -> list[float] | None:
    """``[x, y, w, h]`` as floats, or None when it is not a list of four finite-or-not numbers."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        try:
            out.append(float(v))
        except OverflowError:
            return None
    return out


def _parse_file(path: Path) -> dict[str, Any]:
    text = read_text_file(path, "COCO json", MAX_COCO_JSON_BYTES)
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputError(f"cannot read COCO json {path}: nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, and ints over Python's digit limit
        raise InputError(f"cannot read COCO json {path}: {one_line(str(e), 160)}") from None
    if not isinstance(data, dict):
        raise InputError(
            f"cannot read COCO json {path}: the top level is a {type(data).__name__}, not an object"
        )
    for key, required in (("images", True), ("annotations", False), ("categories", False)):
        if key not in data and not required:
            continue
        if not isinstance(data.get(key), list):
            got = "missing" if key not in data else f"a {type(data[key]).__name__}"
            raise InputError(f"cannot read COCO json {path}: '{key}' must be a list, it is {got}")
    return data


def _category_ids(categories: list[Any], path: Path, names: Mapping[int, str] | None, warn: Any) -> list[int]:
    """COCO category id of each class index: sorted ids, or the YAML's order of names."""
    ids: dict[int, str | None] = {}
    for c in categories:
        cid = c.get("id") if isinstance(c, dict) else None
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise InputError(f"COCO json {path}: category {one_line(str(c), 80)} has no integer 'id'")
        if cid in ids:
            raise InputError(f"COCO json {path}: category id {cid} is given twice (classes would shift)")
        name = c.get("name")
        ids[cid] = name if isinstance(name, str) else None
    order = sorted(ids)
    if not names or not order:
        return order
    yaml_names = [names[i] for i in sorted(names)]
    json_names = [ids[i] for i in order]
    if json_names == yaml_names:
        return order
    by_name = {n: cid for cid, n in ids.items() if n is not None}
    if len(by_name) == len(ids) and sorted(by_name) == sorted(yaml_names):
        warn(
            one_line(
                f"categories are in another order than the dataset YAML's names: matched by name {by_name}"
            )
        )
        return [by_name[n] for n in yaml_names]
    differ = [(i, y, j) for i, (y, j) in enumerate(zip(yaml_names, json_names)) if y != j]
    first = differ[0] if differ else (min(len(yaml_names), len(json_names)), None, None)
    raise InputError(
        f"COCO json {path}: its category names differ from the dataset YAML's names ({len(json_names)} "
        f"categories, {len(yaml_names)} names; class {first[0]}: YAML {first[1]!r}, json {first[2]!r}): "
        "fix one of them"
    )


def read_coco_json(path: str | Path, names: Mapping[int, str] | None = None) -> CocoJson:
    """Read and check a COCO instances json (see the module docs); nothing is decoded.

    Args:
        path: the json. names: the dataset YAML's class names when it gives them: the json's categories
            must carry the same names (in any order); None: classes in sorted category-id order.
    Raises:
        ValueError: the file as a whole is unusable (one line naming it). FileNotFoundError,
        IsADirectoryError, PermissionError: the path cannot be read.
    """
    path = Path(path)
    data = _parse_file(path)
    coco = CocoJson(path, [], {}, [])
    coco.category_ids = _category_ids(data.get("categories", []), path, names, coco.warn)
    cls_of = {cid: i for i, cid in enumerate(coco.category_ids)}
    listed = _read_images(data["images"], coco)
    _read_annotations(data.get("annotations", []), cls_of, listed, coco)
    return coco


def _skip_image(coco: CocoJson, reason: str, detail: str) -> None:
    coco.stats.images += 1
    coco.stats.corrupt[reason] += 1
    coco.warn(f"image skipped: {detail}")


def _read_images(entries: list[Any], coco: CocoJson) -> set[_ImageId]:
    """Fill ``coco.images`` with the usable entries; returns the ids of every entry with a valid id (the
    annotations of a skipped image go with it, uncounted, as the rows of a corrupt YOLO image)."""
    usable: list[CocoImage] = []
    listed: set[_ImageId] = set()
    for i, im in enumerate(entries):
        if not isinstance(im, dict):
            _skip_image(coco, "image entry not an object", f"images[{i}] is a {type(im).__name__}")
            continue
        name = im.get("file_name")
        if not isinstance(name, str) or not name:
            _skip_image(coco, "no file_name in json", f"images[{i}] has no file_name")
            continue
        if not _is_id(im.get("id")):
            _skip_image(coco, "bad image id", f"{name}: id {one_line(repr(im.get('id')), 40)}")
            continue
        listed.add(im["id"])
        w, h = _positive(im.get("width")), _positive(im.get("height"))
        if (w is not None and math.isnan(w)) or (h is not None and math.isnan(h)):
            size = f"{one_line(repr(im.get('width')), 40)} x {one_line(repr(im.get('height')), 40)}"
            detail = f"{name}: width x height {size}"
            _skip_image(coco, "bad width/height in json", detail)
            continue
        usable.append(CocoImage(name, im["id"], w, h))
    ids = Counter(im.id for im in usable)
    files = Counter(im.file_name for im in usable)
    for im in usable:
        if ids[im.id] > 1:
            _skip_image(
                coco, "image id given twice", f"{im.file_name}: id {im.id!r} is shared by {ids[im.id]} images"
            )
        elif files[im.file_name] > 1:
            _skip_image(
                coco, "file_name given twice", f"{im.file_name} is listed {files[im.file_name]} times"
            )
        else:
            coco.images.append(im)
    return listed


def _drop(coco: CocoJson, reason: str, n: int = 1) -> None:
    coco.stats.dropped[reason] += n


def _read_annotations(
    entries: list[Any], cls_of: dict[int, int], listed: set[_ImageId], coco: CocoJson
) -> None:
    usable = {im.id for im in coco.images}
    unknown: Counter = Counter()
    for a in entries:
        if not isinstance(a, dict):
            _drop(coco, "annotation not an object")
            continue
        if a.get("iscrowd", 0):
            coco.stats.crowd += 1
            continue
        image_id = a.get("image_id")
        if not _is_id(image_id):
            _drop(coco, "bad image_id")
            continue
        if image_id not in usable:
            if image_id not in listed:
                unknown[image_id] += 1
            continue
        cid = a.get("category_id")
        cls = cls_of.get(cid) if _is_id(cid) else None
        if cls is None:
            _drop(coco, "unknown category_id")
            continue
        box = _bbox(a.get("bbox"))
        if box is None:
            _drop(coco, "bad bbox")
            continue
        coco.boxes.setdefault(image_id, []).append((cls, box))
    for reason in ("annotation not an object", "bad image_id", "unknown category_id", "bad bbox"):
        if coco.stats.dropped[reason]:
            coco.warn(f"{coco.stats.dropped[reason]} annotations dropped: {reason}")
    if unknown:
        n = sum(unknown.values())
        _drop(coco, "unknown image_id", n)
        shown = ", ".join(map(repr, list(unknown)[:5])) + (", ..." if len(unknown) > 5 else "")
        coco.warn(f"{n} annotations of unknown image_id {shown} dropped")


def _label_rows(boxes: list[tuple[int, list[float]]], w: float, h: float) -> str:
    """YOLO label text of pixel ``[x, y, w, h]`` boxes (top-left) normalized by the image size."""
    rows = []
    for cls, (x, y, bw, bh) in boxes:
        rows.append(f"{cls} {(x + bw / 2) / w!r} {(y + bh / 2) / h!r} {bw / w!r} {bh / h!r}")
    return "\n".join(rows)


def _verify(
    coco: CocoJson, im: CocoImage, images_dir: Path, nc: int
) -> tuple[Sample | None, ScanStats, list[str]]:
    """Check one image (as the YOLO label scan does) and make its labels; never raises. Returns
    (sample, stats, warnings)."""
    st = ScanStats(images=1)
    f = str(images_dir / im.file_name)
    try:
        h, w = probe_image(f)
    except ImageReadError as e:
        st.corrupt[e.reason] += 1
        return None, st, [f"skipping image: {e}"]
    jw, jh = im.width or w, im.height or h
    if (jw, jh) != (w, h):
        st.corrupt["json width/height differ from the image"] += 1
        return None, st, [f"skipping image {f}: the json says {jw:g}x{jh:g} pixels, the image is {w}x{h}"]
    boxes = coco.boxes.get(im.id, [])
    if not boxes:
        st.missing = 1
    labels, st.dropped = parse_label_text(_label_rows(boxes, w, h), nc)
    st.boxes = len(labels)
    return Sample(f, (int(h), int(w)), labels), st, []


def load_coco_json(
    json_path: str | Path,
    images_dir: str | Path,
    nc: int | None = None,
    prefix: str = "",
    names: Mapping[int, str] | None = None,
) -> tuple[list[Sample], ScanStats, list[int]]:
    """Read a COCO instances json into samples.

    Categories get contiguous class indices: in sorted-id order, or in the order of ``names`` (the
    dataset YAML's class names, matched by name); ``category_ids[i]`` is the COCO id of class ``i``.
    Boxes (``[x, y, w, h]`` pixels, top-left corner) become normalized centre xywh and go through the same
    row checks as YOLO labels. What is skipped is counted, logged and summed up (see the module docs).

    Args:
        json_path: the json. images_dir: the folder its ``file_name`` entries are relative to.
        nc: number of classes (default: the number of categories). prefix: put before log lines.
        names: see :func:`read_coco_json`.
    Raises:
        ValueError: an unusable json (see :func:`read_coco_json`) or no usable image.
    """
    coco = read_coco_json(json_path, names)
    images_dir = Path(images_dir)
    nc = len(coco.category_ids) if nc is None else nc
    coco.log(prefix)
    stats = ScanStats()
    stats.merge(coco.stats)
    samples, scanned = verify_in_threads(coco.images, lambda im: _verify(coco, im, images_dir, nc), prefix)
    stats.merge(scanned)
    LOGGER.info("%s%s: %s", prefix, coco.path.name, stats.summary())
    if not samples:
        raise InputError(f"{prefix}no usable images in {coco.path}: {stats.summary()}")
    return samples, stats, coco.category_ids


def coco_image_id(file: str, ids_by_name: Mapping[str, _ImageId]) -> _ImageId:
    """The COCO ``image_id`` of an image file: from the json (by file name) when it lists the image,
    else the file stem, as an int when it is an ASCII number (``000123.jpg`` -> 123)."""
    for key in (os.path.normpath(file), Path(file).name):
        if key in ids_by_name:
            return ids_by_name[key]
    stem = Path(file).stem
    return int(stem) if stem.isascii() and stem.isdigit() else stem
