"""Guarded first use of the accelerated kernels: a kernel that fails on a user's GPU costs speed, never
the run.

On CUDA tensors, the first call of each accelerated op (any backend but ``torch``) per (device,
dtype, layout and, for ``bn_silu``, mode) is *checked*: the kernel runs, the device is synchronised
(so compile, ptxas and launch errors surface here, named), and its result is compared with the
PyTorch reference on that same call (mutable state such as BatchNorm running statistics is compared
on copies; ``bn_silu`` in training also compares the gradients of a backward probe). Later calls of
that variant go straight to the kernel, inside a ``try`` that costs nothing unless it raises (the
guard's cost per call, ~2 us of Python: benchmarks/test_bench_guard.py, benchmarks/RESULTS.md).

On failure (an exception, or a result outside the reference's rounding) the op falls back to its
reference for the rest of the process on that device, with **one** ``KernelFallbackWarning`` naming
the op, backend, device, variant and error; ``yolov9k.ops.backend_info()["kernel_fallbacks"]`` and
``yolov9k info`` list it. ``YOLOV9K_STRICT_KERNELS=1`` turns the fallback into a
``KernelFallbackError`` (the GPU tests and ``benchmarks/gpu_check.sh`` set it). An exception that
the reference raises too is the input's fault: it propagates, and nothing falls back.

Not covered: a kernel that corrupts memory (an illegal address poisons the CUDA context, and no
fallback can run on it; the check at least names the op that did it); a backward kernel that fails
to compile for a later integer specialisation of a variant already checked (the check compiles the
variant's backward once). Calls under CUDA-graph capture or ``torch.compile`` tracing are not
checked (warm up first, as capture requires anyway).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "KernelFallbackError",
    "KernelFallbackWarning",
    "fallbacks",
    "guarded",
    "has_fallen_back",
    "register_verifier",
    "strict",
]

STRICT_ENV = "YOLOV9K_STRICT_KERNELS"


class KernelFallbackError(RuntimeError):
    """A kernel failed its check (or later raised) while ``YOLOV9K_STRICT_KERNELS=1``."""


class KernelFallbackWarning(UserWarning):
    """A kernel failed and its op now runs the PyTorch reference (once per op and device)."""


class KernelMismatch(RuntimeError):
    """The kernel's result is outside the reference's rounding."""


@dataclass(frozen=True)
class Fallback:
    op: str
    backend: str
    device: str
    variant: str
    error: str


# Relative tolerance of a checked result, by dtype, against the reference on the same inputs (scaled by
# the reference's largest magnitude): rounding differences pass, a wrong kernel does not.
_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
_OP_RTOL: dict[tuple[str, torch.dtype], float] = {
    # TF32 products (10-bit mantissa) summed over K channels: ~1e-3 of the output scale.
    ("concat_conv1x1_silu", torch.float32): 1e-2,
}

_lock = threading.Lock()
_checked: set[tuple] = set()
# The checked variants again, keyed without strings: (op, backend, torch.device, dtype, layout, mode).
# A fallback removes its op's entries on that device.
_fast: set[tuple] = set()
_fallen: dict[tuple[str, str], Fallback] = {}  # (op, device) -> record
_verifiers: dict[str, Callable[..., Any]] = {}
_variant_extras: dict[str, Callable[..., str]] = {}
_wrappers: dict[tuple, Callable] = {}
_cpu_for_tests = False


def strict() -> bool:
    """YOLOV9K_STRICT_KERNELS=1: a failing kernel is an error instead of a fallback."""
    return os.environ.get(STRICT_ENV, "0").strip().lower() in ("1", "true", "yes")


def register_verifier(op: str, verify: Callable[..., Any], variant: Callable[..., str] | None = None) -> None:
    """Op-specific first-call check ``verify(kernel, reference, args, kwargs, op) -> kernel output``
    (raises on failure, leaving mutable state as before the call) and extra variant key
    ``variant(*args, **kwargs) -> str``. Register before the op's first call."""
    _verifiers[op] = verify
    if variant is not None:
        _variant_extras[op] = variant


def fallbacks() -> list[dict[str, str]]:
    """Every op that fell back in this process: op, backend, device, variant, error."""
    return [asdict(f) for f in _fallen.values()]


def has_fallen_back(op: str, device: torch.device | str) -> bool:
    """Whether ``op`` runs its reference on ``device`` for the rest of the process."""
    d = str(device)
    return any(o == op and (dev == d or dev.split(":")[0] == d) for o, dev in _fallen)


@contextlib.contextmanager
def guard_cpu_tensors() -> Iterator[None]:
    """Test hook: the guard also acts on CPU tensors (a CPU machine can then test it) and starts clean."""
    global _cpu_for_tests
    saved = _cpu_for_tests, set(_checked), dict(_fallen), set(_fast)
    _cpu_for_tests = True
    _checked.clear()
    _fallen.clear()
    _fast.clear()
    try:
        yield
    finally:
        _cpu_for_tests = False
        _checked.clear()
        _checked.update(saved[1])
        _fast.clear()
        _fast.update(saved[3])
        _fallen.clear()
        _fallen.update(saved[2])


def active(device: torch.device) -> bool:
    """Whether calls on ``device`` are guarded."""
    return device.type == "cuda" or _cpu_for_tests


def _first_tensor(args: tuple) -> Tensor | None:
    for a in args:
        if isinstance(a, Tensor):
            return a
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], Tensor):
            return a[0]
    return None


def _layout(t: Tensor) -> str:
    if t.is_contiguous():
        return "contiguous"
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


def guarded(op: str, backend: str, kernel: Callable, reference: Callable) -> Callable:
    """``kernel`` wrapped by the guard (one wrapper per (op, backend, kernel), made once)."""
    key = (op, backend, kernel, reference)
    wrapper = _wrappers.get(key)
    if wrapper is None:
        wrapper = _make_wrapper(op, backend, kernel, reference)
        _wrappers[key] = wrapper
    return wrapper


def _make_wrapper(op: str, backend: str, kernel: Callable, reference: Callable) -> Callable:
    verify = _verifiers.get(op, verify_outputs)

    def call(*args, **kwargs):
        t = _first_tensor(args)
        if t is None or not (t.is_cuda or _cpu_for_tests) or torch.compiler.is_compiling():
            return kernel(*args, **kwargs)
        extra = _variant_extras.get(op)
        mode = extra(*args, **kwargs) if extra is not None else ""
        fast = (op, backend, t.device, t.dtype, _layout(t), mode)
        if fast in _fast:  # the steady state: a variant already checked, on a device that has not fallen back
            try:
                return kernel(*args, **kwargs)
            except Exception as e:
                return _fail(op, backend, str(t.device), _variant(t, mode), e, reference, args, kwargs)
        if _capturing():
            return kernel(*args, **kwargs)
        device = str(t.device)
        if (op, device) in _fallen:
            return reference(*args, **kwargs)
        variant = _variant(t, mode)
        try:
            out = verify(kernel, reference, args, kwargs, op)
        except Exception as e:
            return _fail(op, backend, device, variant, e, reference, args, kwargs)
        with _lock:
            _checked.add((op, backend, device, variant))
            _fast.add(fast)
        return out

    call.__name__ = f"guarded_{op}_{backend}"
    call.__doc__ = kernel.__doc__
    return call


def _capturing() -> bool:
    """CUDA-graph capture: no synchronisation or host-side comparison may happen."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _variant(t: Tensor, mode: str) -> str:
    variant = f"{str(t.dtype).removeprefix('torch.')}/{_layout(t)}"
    return f"{variant}/{mode}" if mode else variant


def _fail(op, backend, device, variant, error, reference, args, kwargs):
    """Fall back (or raise in strict mode); an error the reference raises too is the input's."""
    out = reference(*args, **kwargs)  # raises for input that the reference rejects too: the input's fault
    text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
    message = (
        f"yolov9k: the {backend} kernel of {op} failed on {device} ({name}), variant {variant}: {text}. "
        f"{op} runs its PyTorch reference for the rest of this process (slower, same results)."
    )
    if strict():
        raise KernelFallbackError(f"{message} [{STRICT_ENV}=1 makes this an error]") from error
    with _lock:
        first = (op, device) not in _fallen
        _fallen.setdefault((op, device), Fallback(op, backend, device, variant, text))
        _fast.difference_update([k for k in _fast if k[0] == op and str(k[2]) == device])
    if first:
        warnings.warn(
            f"{message} YOLOV9K_BACKEND=torch runs every op on the references; "
            f"{STRICT_ENV}=1 makes a failing kernel an error.",
            KernelFallbackWarning,
            stacklevel=3,
        )
    return out


def synchronize(t: Tensor | None) -> None:
    if t is not None and t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def verify_outputs(kernel: Callable, reference: Callable, args: tuple, kwargs: dict, op: str = "") -> Any:
    """The default check: the kernel's output against the reference's on the same arguments
    (for ops without mutable arguments)."""
    out = kernel(*args, **kwargs)
    synchronize(_first_tensor(args))
    with torch.no_grad():
        want = reference(*args, **kwargs)
    compare(out, want, op)
    return out


def compare(got: Any, want: Any, op: str = "", what: str = "output") -> None:
    """Raise KernelMismatch unless ``got`` matches ``want``: same structure, integer / bool tensors
    equal, floating tensors within the dtype's rounding (NaN where the reference has NaN)."""
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            raise KernelMismatch(f"{what}: {type(got).__name__} of {_len(got)} items, reference {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            compare(g, w, op, f"{what}[{i}]")
        return
    if not isinstance(want, Tensor):
        if got != want:
            raise KernelMismatch(f"{what}: {got!r} != reference {want!r}")
        return
    if not isinstance(got, Tensor) or got.shape != want.shape:
        shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
        raise KernelMismatch(f"{what}: shape {shape}, reference {tuple(want.shape)}")
    g, w = got.detach(), want.detach().to(got.device)
    if not w.is_floating_point():
        if not torch.equal(g, w.to(g.dtype)):
            raise KernelMismatch(f"{what}: {int((g != w).sum())} of {w.numel()} elements differ")
        return
    if w.numel() == 0:
        return
    rtol = _OP_RTOL.get((op, w.dtype), _RTOL.get(w.dtype, 1e-4))
    g64, w64 = g.double(), w.double()
    nan = w64.isnan()
    if not torch.equal(g64.isnan(), nan):
        raise KernelMismatch(f"{what}: NaN where the reference has none (or the reverse)")
    finite = w64[~nan]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    err = (g64 - w64).abs()[~nan]
    worst = float(err.max()) if err.numel() else 0.0
    if not worst <= rtol * max(scale, 1e-30):  # `not <=`: a NaN error fails
        raise KernelMismatch(f"{what}: max |error| {worst:.3g} > {rtol:g} x max |reference| {scale:.3g}")


def _len(x: Any) -> str:
    return str(len(x)) if isinstance(x, (list, tuple)) else "?"
