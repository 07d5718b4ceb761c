"""Upper bounds on what a file may declare, shared by the readers (``yolov9k.io``, ``yolov9k.data``) and
the model builder (``yolov9k.models.parse``), so that all refuse the same hostile values, before any work.

Each is far above any real use and documented in ``docs/reliability.md`` with the test that holds it.
"""

from __future__ import annotations

__all__ = [
    "MAX_CLASSES",
    "MAX_YAML_BYTES",
    "MAX_YAML_NODES",
    "MAX_YAML_DEPTH",
    "MAX_LIST_BYTES",
    "MAX_COCO_JSON_BYTES",
]

MAX_CLASSES = 100_000  # classes of a model or data set, far above any real one
# A dataset / model YAML: its size, and the nodes it expands to when every alias is followed (an
# "alias bomb" of a few hundred bytes expands to billions). 4 MiB of YAML parses in ~3 s and ~180 MB.
MAX_YAML_BYTES = 4 << 20
MAX_YAML_NODES = 1_000_000
MAX_YAML_DEPTH = 64  # nesting levels (real dataset YAMLs have 3)
MAX_LIST_BYTES = 128 << 20  # a .txt list of image paths (~1.5 million lines)
# A COCO instances json: COCO train2017's is 448 MiB and takes ~2.5 GB of Python objects to read.
MAX_COCO_JSON_BYTES = 1 << 30
