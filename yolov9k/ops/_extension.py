"""Loading of the native extension ``yolov9k._C``.

The package works without the extension (pure-PyTorch references, one warning); this module is
the one place that knows whether it was built, with or without CUDA.
"""

from __future__ import annotations

import functools
import warnings

import torch

__all__ = [
    "extension_already_loaded",
    "extension_loaded",
    "extension_cuda_version",
    "has_native_kernel",
    "load_error",
]

_LOAD_ERROR: str | None = None


@functools.lru_cache(maxsize=1)
def _load() -> bool:
    global _LOAD_ERROR
    try:
        from yolov9k import _C  # noqa: F401  (import runs the TORCH_LIBRARY registrations)
    except ImportError as exc:  # not built, or built against another torch
        _LOAD_ERROR = str(exc)
        warnings.warn(
            "yolov9k: the native extension yolov9k._C is not available "
            f"({exc}); using the PyTorch reference implementations. Build it with "
            "`pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    from yolov9k.ops import _dispatch  # imports us: resolved at call time

    _dispatch.on_extension_loaded()  # fakes and autograd of every defined op; orphan ops raise
    return True


def extension_loaded() -> bool:
    """True when ``yolov9k._C`` imported and registered its ops."""
    return _load()


def extension_already_loaded() -> bool:
    """True when the extension was already imported in this process (never triggers the import)."""
    return _load.cache_info().currsize > 0 and _load()


def load_error() -> str | None:
    """Why the extension did not load (None when it did or was not tried)."""
    _load()
    return _LOAD_ERROR


def extension_cuda_version() -> int:
    """CUDA runtime version the extension was built with, or -1 (CPU-only build / not built)."""
    if not extension_loaded():
        return -1
    return int(torch.ops.yolov9k._cuda_version())


def has_native_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``yolov9k::<op>`` has a kernel for ``dispatch_key`` ("CPU" or "CUDA")."""
    if not extension_loaded():
        return False
    name = f"yolov9k::{op}"
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(name, dispatch_key)
    except RuntimeError:  # op not defined by this build
        return False
