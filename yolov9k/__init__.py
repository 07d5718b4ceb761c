"""yolov9k: YOLOv9 (GELAN + PGI) for PyTorch with fused native kernels."""

from __future__ import annotations

from yolov9k import ops

__version__ = "0.1.0"

__all__ = ["ops", "__version__"]
