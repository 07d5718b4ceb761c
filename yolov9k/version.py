"""The package version (one place; ``yolov9k.__version__`` re-exports it)."""

__version__ = "0.1.0"
