"""Reading and writing checkpoints: a restricted unpickler for official pickles, and our format."""

from __future__ import annotations

from yolov9k.io.archive import CheckpointError
from yolov9k.io.official import OfficialCheckpoint, read_official_checkpoint
from yolov9k.io.safe_pickle import UnsafeCheckpointError, read_torch_zip

__all__ = [
    "CheckpointError",
    "OfficialCheckpoint",
    "UnsafeCheckpointError",
    "read_official_checkpoint",
    "read_torch_zip",
]
