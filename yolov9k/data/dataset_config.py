"""Dataset YAML parsing (yolov5 / ultralytics / yolov9 style) into resolved image lists.

A dataset YAML has ``path`` (root, optional), ``train`` / ``val`` / ``test`` (each a folder of images,
a .txt list of image paths, one image, or a list of those; relative to ``path``), ``names`` (list or
``{index: name}``) and optionally ``nc``. A split can instead point at a COCO json
(``train: annotations/instances_train.json``); its images are then looked up in ``images/<split>``
(or the folder named by ``<split>_images``). ``<split>_json`` names a COCO json that describes the same
images as the YOLO labels (used for COCO evaluation).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolov9k.data.images import is_image_file
from yolov9k.errors import InputError, InputNotFoundError

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
    raw: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[str]:
        """Image files of ``name`` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


def _parse_nc(raw: dict[str, Any]) -> int | None:
    """The ``nc`` entry as a non-negative int (None when absent); the error names the key."""
    nc = raw.get("nc")
    if nc is None:
        return None
    try:
        value = float(nc) if isinstance(nc, int | float | str) and not isinstance(nc, bool) else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise InputError(f"dataset 'nc' must be a whole number of classes, got {nc!r}")
    return int(value)


def _parse_names(raw: dict[str, Any]) -> dict[int, str]:
    names = raw.get("names")
    nc = _parse_nc(raw)
    if names is None:
        if nc is None:
            raise InputError("dataset YAML needs 'names' (list or {index: name}) or 'nc'")
        return {i: f"class{i}" for i in range(nc)}
    if isinstance(names, (list, tuple)):
        out = {i: str(n) for i, n in enumerate(names)}
    elif isinstance(names, dict):
        try:
            out = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as e:
            raise InputError(f"'names' keys must be class indices, got {list(names)}") from e
        if sorted(out) != list(range(len(out))):
            raise InputError(f"'names' indices must be 0..{len(out) - 1}, got {sorted(out)}")
    else:
        raise InputError(f"'names' must be a list or a dict, got {type(names).__name__}")
    if nc is not None and nc != len(out):
        raise InputError(f"'nc' is {nc} but 'names' has {len(out)} entries")
    return out


def _resolve(p: str | os.PathLike, root: Path) -> Path:
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else root / p


def resolve_image_files(source: Any, root: Path, what: str = "split") -> list[str]:
    """Image files named by ``source`` (folder, .txt list, image file, or a list of those).

    Folders are searched recursively; .txt lines are paths relative to the list's folder when they start
    with ``./`` or ``../`` (as the official loader), otherwise relative to ``root`` unless absolute.

    Raises:
        FileNotFoundError: a path does not exist, listing everything looked for.
        ValueError: no image files found.
    """
    sources = source if isinstance(source, (list, tuple)) else [source]
    files: list[str] = []
    missing: list[str] = []
    for s in sources:
        p = _resolve(s, root)
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and is_image_file(f))
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line:
                    continue
                base = p.parent if line.startswith(("./", "../")) else root
                f = _resolve(line, base)
                if is_image_file(f):
                    files.append(str(f))
                else:
                    missing.append(f"{f} (listed in {p}, not an image file)")
        elif p.is_file() and is_image_file(p):
            files.append(str(p))
        else:
            missing.append(str(p))
    if missing:
        raise InputNotFoundError(f"{what}: not found: " + ", ".join(missing))
    if not files:
        raise InputError(f"{what}: no image files in " + ", ".join(str(_resolve(s, root)) for s in sources))
    return files


def _coco_images_dir(raw: dict[str, Any], split: str, json_file: Path, root: Path) -> Path:
    key = f"{split}_images"
    if key in raw:
        return _resolve(raw[key], root)
    for cand in (root / "images" / split, json_file.parent.parent / "images" / split, root / split):
        if cand.is_dir():
            return cand
    return root / "images" / split


def load_dataset_config(data: str | os.PathLike | dict[str, Any]) -> DatasetConfig:
    """Parse a dataset YAML (path or already-loaded dict) and resolve every split's image files.

    ``path`` is taken relative to the YAML's folder when relative (and the YAML's folder when absent);
    a split that is absent or null gives an empty list except ``train`` and ``val``, which are required.

    Raises:
        FileNotFoundError: the YAML or a split's path does not exist (the message lists what was looked for).
        ValueError: malformed YAML content.
    """
    if isinstance(data, dict):
        raw, yaml_file, base = dict(data), None, Path.cwd()
    else:
        yaml_file = Path(os.path.expanduser(str(data)))
        if not yaml_file.is_file():
            raise InputNotFoundError(f"dataset YAML not found: {yaml_file.resolve()}")
        try:
            raw = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise InputError(f"invalid dataset YAML {yaml_file}: {e}") from e
        if not isinstance(raw, dict):
            raise InputError(f"dataset YAML {yaml_file} must be a mapping, got {type(raw).__name__}")
        base = yaml_file.resolve().parent
    root = _resolve(raw["path"], base) if raw.get("path") else base
    names = _parse_names(raw)
    splits: dict[str, list[str]] = {}
    coco: dict[str, Path] = {}
    for split in SPLITS:
        src = raw.get(split)
        if src is None or src == "":
            if split in ("train", "val"):
                raise InputError(f"dataset {yaml_file or 'dict'} has no '{split}' entry")
            splits[split] = []
            continue
        if isinstance(src, (str, os.PathLike)) and str(src).lower().endswith(".json"):
            json_file = _resolve(src, root)
            if not json_file.is_file():
                raise InputNotFoundError(f"{split}: COCO json not found: {json_file}")
            coco[split] = json_file
            images_dir = _coco_images_dir(raw, split, json_file, root)
            if not images_dir.is_dir():
                raise InputNotFoundError(f"{split}: images of {json_file.name} not found in {images_dir}")
            splits[split] = resolve_image_files(images_dir, root, what=split)
        else:
            splits[split] = resolve_image_files(src, root, what=split)
        if raw.get(f"{split}_json"):  # ground truth also given as COCO json (e.g. for COCO evaluation)
            json_file = _resolve(raw[f"{split}_json"], root)
            if not json_file.is_file():
                raise InputNotFoundError(f"{split}_json: COCO json not found: {json_file}")
            coco[split] = json_file
    return DatasetConfig(
        yaml_file=yaml_file,
        root=root,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        names=names,
        nc=len(names),
        coco_json=coco,
        raw=raw,
    )
