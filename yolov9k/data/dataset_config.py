"""Dataset YAML parsing (yolov5 / ultralytics / yolov9 style) into resolved image lists.

A dataset YAML has ``path`` (root, optional), ``train`` / ``val`` / ``test`` (each a folder of images,
a .txt list of image paths, one image, or a list of those; relative to ``path``), ``names`` (list or
``{index: name}``) and optionally ``nc``. A split can instead point at a COCO json
(``train: annotations/instances_train.json``); its images are then looked up in ``images/<split>``
(or the folder named by ``<split>_images``). ``<split>_json`` names a COCO json that describes the same
images as the YOLO labels (used for COCO evaluation).

Everything is checked before any image is read: the YAML's size and what its aliases expand to
(``yolov9k.io.textfiles``), ``nc`` and the number of names against ``MAX_CLASSES`` (the bound every
model and checkpoint has too), and each path for being what it must be (a folder, a list, an image).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolov9k.data.images import is_image_file
from yolov9k.errors import InputError, InputNotFoundError
from yolov9k.io.limits import MAX_CLASSES, MAX_LIST_BYTES
from yolov9k.io.textfiles import load_yaml_file, read_text_file

__all__ = ["DatasetConfig", "load_dataset_config", "resolve_image_files"]

SPLITS = ("train", "val", "test")


@dataclass
class DatasetConfig:
    """A resolved dataset description.

    Attributes:
        yaml_file: the YAML read (None for a dict).
        root: dataset root all relative paths were resolved against.
        train, val, test: image files per split (sorted within each source, sources in order).
        names: class index -> name.
        nc: number of classes.
        coco_json: per split, the COCO json when the split is given as one (else absent).
        coco_images: per split given as a COCO json, the folder its ``file_name`` entries are in.
        raw: the parsed mapping as given.
    """

    yaml_file: Path | None
    root: Path
    train: list[str]
    val: list[str]
    test: list[str]
    names: dict[int, str]
    nc: int
    coco_json: dict[str, Path] = field(default_factory=dict)
    coco_images: dict[str, Path] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def given_names(self) -> dict[int, str] | None:
        """``names`` when the YAML gives them (a COCO json's categories must match them), else None."""
        return self.names if self.raw.get("names") is not None else None

    def split(self, name: str) -> list[str]:
        """Image files of ``name`` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


def _parse_nc(raw: dict[str, Any]) -> int | None:
    """The ``nc`` entry as an int in [1, MAX_CLASSES] (None when absent); the error names the key."""
    nc = raw.get("nc")
    if nc is None:
        return None
    try:
        value = float(nc) if isinstance(nc, int | float | str) and not isinstance(nc, bool) else math.nan
    except (ValueError, OverflowError):
        value = math.nan
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise InputError(f"dataset 'nc' must be a whole number of classes, got {str(nc)[:40]!r}")
    if not 1 <= value <= MAX_CLASSES:
        raise InputError(f"dataset 'nc' must be in [1, {MAX_CLASSES}], got {int(value)}")
    return int(value)


def _class_name(value: Any, where: str) -> str:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"'names' {where} must be a text, got a {type(value).__name__}")


def _parse_names(raw: dict[str, Any]) -> dict[int, str]:
    names = raw.get("names")
    nc = _parse_nc(raw)
    if names is None:
        if nc is None:
            raise InputError("dataset YAML needs 'names' (list or {index: name}) or 'nc'")
        return {i: f"class{i}" for i in range(nc)}
    if not isinstance(names, list | tuple | dict):
        raise InputError(f"'names' must be a list or a dict, got {type(names).__name__}")
    if not 1 <= len(names) <= MAX_CLASSES:
        raise InputError(f"'names' must have 1 to {MAX_CLASSES} entries, got {len(names)}")
    if isinstance(names, list | tuple):
        out = {i: _class_name(n, f"entry {i}") for i, n in enumerate(names)}
    else:
        try:
            out = {int(k): _class_name(v, f"entry {k!r}") for k, v in names.items()}
        except (TypeError, ValueError, OverflowError) as e:
            if "'names' entry" in str(e):
                raise
            raise InputError(f"'names' keys must be class indices, got {str(list(names))[:80]}") from e
        if sorted(out) != list(range(len(out))):
            raise InputError(f"'names' indices must be 0..{len(out) - 1}, got {str(sorted(out))[:80]}")
    if nc is not None and nc != len(out):
        raise InputError(f"'nc' is {nc} but 'names' has {len(out)} entries")
    return out


def _resolve(p: str | os.PathLike, root: Path) -> Path:
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else root / p


def _path_entry(value: Any, what: str) -> str | os.PathLike:
    """A YAML path entry, checked to be text (not a number, a list or a mapping)."""
    if isinstance(value, str | os.PathLike) and str(value):
        return value
    raise InputError(f"{what}: expected a path, got {type(value).__name__} {str(value)[:60]!r}")


def _what_it_is(p: Path) -> str:
    """What is at ``p`` in words: 'not found', 'a folder', 'a file', 'a FIFO, device or socket'."""
    if not p.exists():
        return "not found"
    if p.is_dir():
        return "a folder"
    return "a file" if p.is_file() else "a FIFO, device or socket"


def resolve_image_files(source: Any, root: Path, what: str = "split") -> list[str]:
    """Image files named by ``source`` (folder, .txt list, image file, or a list of those).

    Folders are searched recursively; .txt lines are paths relative to the list's folder when they start
    with ``./`` or ``../`` (as the official loader), otherwise relative to ``root`` unless absolute.
    A list file may hold at most ``MAX_LIST_BYTES`` bytes of UTF-8 text.

    Raises:
        FileNotFoundError: a path does not exist, listing everything looked for.
        ValueError: a path is something else than a folder, a .txt list or an image (named, with what
            it is), a list file is too large or not UTF-8, or no image files were found.
    """
    sources = source if isinstance(source, list | tuple) else [source]
    files: list[str] = []
    missing: list[str] = []
    wrong: list[str] = []
    for s in sources:
        p = _resolve(_path_entry(s, what), root)
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and is_image_file(f))
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in read_text_file(p, f"{what}: image list", MAX_LIST_BYTES).splitlines():
                line = line.strip()
                if not line:
                    continue
                base = p.parent if line.startswith(("./", "../")) else root
                f = _resolve(line, base)
                if is_image_file(f):
                    files.append(str(f))
                else:
                    wrong.append(f"{f} (listed in {p}, not an image file name)")
        elif p.is_file() and is_image_file(p):
            files.append(str(p))
        elif p.exists():
            wrong.append(f"{p} ({_what_it_is(p)}, not a folder, a .txt list or an image)")
        else:
            missing.append(str(p))
    if missing:
        raise InputNotFoundError(f"{what}: not found: " + ", ".join(missing))
    if wrong:
        raise InputError(f"{what}: " + ", ".join(wrong))
    if not files:
        raise InputError(f"{what}: no image files in " + ", ".join(str(_resolve(s, root)) for s in sources))
    return files


def _coco_images_dir(raw: dict[str, Any], split: str, json_file: Path, root: Path) -> Path:
    key = f"{split}_images"
    if key in raw:
        return _resolve(_path_entry(raw[key], key), root)
    for cand in (root / "images" / split, json_file.parent.parent / "images" / split, root / split):
        if cand.is_dir():
            return cand
    return root / "images" / split


def _existing_json(entry: Any, root: Path, what: str) -> Path:
    """The COCO json file an entry names; FileNotFoundError / ValueError saying what is there instead."""
    json_file = _resolve(_path_entry(entry, what), root)
    if json_file.is_file():
        return json_file
    kind = _what_it_is(json_file)
    error = InputNotFoundError if kind == "not found" else InputError
    raise error(f"{what}: COCO json {json_file}: {kind}, not a json file")


def load_dataset_config(data: str | os.PathLike | dict[str, Any]) -> DatasetConfig:
    """Parse a dataset YAML (path or already-loaded dict) and resolve every split's image files.

    ``path`` is taken relative to the YAML's folder when relative (and the YAML's folder when absent);
    a split that is absent or null gives an empty list except ``train`` and ``val``, which are required.

    Raises:
        FileNotFoundError: the YAML or a split's path does not exist (the message lists what was looked for).
        IsADirectoryError: the YAML path is a folder.
        ValueError: malformed, oversized or non-UTF-8 YAML, an ``nc`` or a names list over
            ``MAX_CLASSES``, a path that is something else than it must be (saying what it is).
    """
    if isinstance(data, dict):
        raw, yaml_file, base = dict(data), None, Path.cwd()
    else:
        yaml_file = Path(os.path.expanduser(str(data)))
        if not yaml_file.exists():
            raise InputNotFoundError(f"dataset YAML not found: {yaml_file.resolve()}")
        raw = load_yaml_file(yaml_file, "dataset YAML")
        if not isinstance(raw, dict):
            raise InputError(f"dataset YAML {yaml_file} must be a mapping, got {type(raw).__name__}")
        base = yaml_file.resolve().parent
    root = _resolve(_path_entry(raw["path"], "path"), base) if raw.get("path") else base
    names = _parse_names(raw)
    splits: dict[str, list[str]] = {}
    coco: dict[str, Path] = {}
    coco_images: dict[str, Path] = {}
    for split in SPLITS:
        src = raw.get(split)
        if src is None or src == "":
            if split in ("train", "val"):
                raise InputError(f"dataset {yaml_file or 'dict'} has no '{split}' entry")
            splits[split] = []
            continue
        if isinstance(src, str | os.PathLike) and str(src).lower().endswith(".json"):
            json_file = _existing_json(src, root, split)
            coco[split] = json_file
            images_dir = _coco_images_dir(raw, split, json_file, root)
            if not images_dir.is_dir():
                kind = _what_it_is(images_dir)
                raise InputNotFoundError(f"{split}: images of {json_file.name} not in {images_dir} ({kind})")
            splits[split] = resolve_image_files(images_dir, root, what=split)
            coco_images[split] = images_dir
        else:
            splits[split] = resolve_image_files(src, root, what=split)
        if raw.get(f"{split}_json"):  # ground truth also given as COCO json (e.g. for COCO evaluation)
            coco[split] = _existing_json(raw[f"{split}_json"], root, f"{split}_json")
    return DatasetConfig(
        yaml_file=yaml_file,
        root=root,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        names=names,
        nc=len(names),
        coco_json=coco,
        coco_images=coco_images,
        raw=raw,
    )
