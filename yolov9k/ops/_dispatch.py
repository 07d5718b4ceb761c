"""The one place that chooses which implementation of an op runs.

Order for CUDA tensors: CUDA extension -> Triton -> PyTorch reference. For CPU tensors: C++
extension -> PyTorch reference (Triton runs on CPU tensors only when forced under
``TRITON_INTERPRET=1``, for tests). ``YOLOV9K_BACKEND=auto|torch|cpp|triton|cuda`` or the
``use_backend`` context manager forces one; a forced backend that cannot run raises a clear error.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from yolov9k.errors import Yolov9kError
from yolov9k.ops import _guard
from yolov9k.ops._extension import has_native_kernel

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "register",
    "select",
    "use_backend",
    "requested_backend",
    "backends",
    "implemented",
    "implementation",
]

BACKENDS = ("cuda", "triton", "cpp", "torch")
_CHOICES = ("auto", *BACKENDS)


class BackendUnavailableError(Yolov9kError, RuntimeError):
    """A forced backend cannot run this op on these tensors."""


@dataclass(frozen=True)
class _Impl:
    fn: Callable
    native_op: str | None = None  # "yolov9k::<name>" kernels must exist for cpp/cuda


_REGISTRY: dict[str, dict[str, _Impl]] = {}
_OVERRIDE: contextvars.ContextVar[str | None] = contextvars.ContextVar("yolov9k_backend", default=None)


def register(op: str, backend: str, fn: Callable, native_op: str | None = None) -> None:
    """Declare that ``backend`` implements ``op`` with ``fn``.

    For ``cpp`` / ``cuda`` pass ``native_op`` (the ``yolov9k::`` op name): the backend then counts
    as available only when the built extension has a kernel for it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    _REGISTRY.setdefault(op, {})[backend] = _Impl(fn, native_op)


def implemented(op: str, backend: str) -> bool:
    """Whether ``backend`` has a registered implementation of ``op`` (it may still be unable to run here)."""
    return backend in _REGISTRY.get(op, {})


def requested_backend() -> str:
    """The forced backend ('auto' when none): ``use_backend`` first, then YOLOV9K_BACKEND."""
    value = _OVERRIDE.get() or os.environ.get("YOLOV9K_BACKEND", "auto")
    value = value.strip().lower() or "auto"
    if value not in _CHOICES:
        raise ValueError(f"YOLOV9K_BACKEND={value!r} is not one of {_CHOICES}")
    return value


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force the backend of every op inside the block (tests, benchmarks)."""
    if name not in _CHOICES:
        raise ValueError(f"backend {name!r} is not one of {_CHOICES}")
    token = _OVERRIDE.set(name)
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


@functools.lru_cache(maxsize=1)
def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _why_unavailable(op: str, backend: str, device: torch.device) -> str | None:
    """None when ``backend`` can run ``op`` on ``device``, else the reason."""
    impl = _REGISTRY.get(op, {}).get(backend)
    if impl is None:
        return f"op {op!r} has no {backend} implementation"
    if backend == "torch":
        return None
    if backend == "cpp":
        if device.type != "cpu":
            return f"the C++ CPU kernels take CPU tensors, got {device}"
        if not has_native_kernel(impl.native_op or op, "CPU"):
            return "the native extension yolov9k._C is not built (pip install --no-build-isolation -e .)"
        return None
    if backend == "cuda":
        if device.type != "cuda":
            return f"the CUDA kernels take CUDA tensors, got {device}"
        if not has_native_kernel(impl.native_op or op, "CUDA"):
            return "yolov9k._C was built without CUDA (needs a CUDA torch and nvcc at build time)"
        return None
    # triton
    if not triton_importable():
        return "triton is not installed (pip install triton)"
    if device.type == "cuda" or (device.type == "cpu" and triton_interpreted()):
        return None
    return f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tests), got {device}"


def _auto_order(device: torch.device) -> tuple[str, ...]:
    return ("cuda", "triton", "torch") if device.type == "cuda" else ("cpp", "torch")


def select(op: str, device: torch.device | str) -> tuple[str, Callable]:
    """(backend name, callable) that runs ``op`` on tensors of ``device``.

    A kernel backend on CUDA comes wrapped by the first-use guard (``_guard``): its first call per
    variant is checked against the reference, and a failure falls back to the reference.
    """
    device = torch.device(device)
    wanted = requested_backend()
    if wanted != "auto":
        reason = _why_unavailable(op, wanted, device)
        if reason is not None:
            raise BackendUnavailableError(f"YOLOV9K_BACKEND={wanted} cannot run {op}: {reason}")
        return wanted, implementation(op, wanted, device)
    for backend in _auto_order(device):
        if _why_unavailable(op, backend, device) is None:
            return backend, implementation(op, backend, device)
    raise BackendUnavailableError(f"no implementation of {op!r} for {device}")


def implementation(op: str, backend: str, device: torch.device, fn: Callable | None = None) -> Callable:
    """``fn`` (default: the registered implementation of ``op`` on ``backend``), guarded when it is a
    kernel that the guard watches on ``device`` (see ``_guard``)."""
    fn = fn if fn is not None else _REGISTRY[op][backend].fn
    reference = _REGISTRY[op].get("torch")
    if backend == "torch" or reference is None or not _guard.active(device):
        return fn
    return _guard.guarded(op, backend, fn, reference.fn)


def backends(device: torch.device | str | None = None) -> dict[str, str]:
    """Which backend each registered op uses here, for ``device`` (default: cuda if present)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {}
    for op in sorted(_REGISTRY):
        try:
            out[op] = select(op, device)[0]
        except BackendUnavailableError as exc:
            out[op] = f"unavailable ({exc})"
            continue
        if out[op] != "torch" and _guard.has_fallen_back(op, torch.device(device)):
            out[op] += " -> torch (the kernel failed: see kernel_fallbacks)"
    return out
