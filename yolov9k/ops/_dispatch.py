"""The op registry and the one route that chooses which implementation of an op runs.

Every op lives in one module of ``yolov9k/ops/`` (docs/adding-an-op.md) that calls :func:`define`
once (its reference, its kernel ops with their fakes and autograd) and :func:`register` per kernel
backend. :func:`select` is the only route from a call to an implementation, for the public functions
and for ``accelerate``d models alike.

Routing, said once for the whole package (README, ``accelerate`` and the op modules point here):

* CUDA tensors: CUDA extension -> Triton -> PyTorch reference. CPU tensors: C++ extension ->
  PyTorch reference (Triton runs on CPU tensors only when forced under ``TRITON_INTERPRET=1``, for
  tests). A backend counts only if the op registered it and it can run here (extension built with
  the kernel, triton installed, right device).
* ``YOLOV9K_BACKEND=auto|torch|cpp|triton|cuda`` or the ``use_backend`` context manager forces one;
  a forced backend that cannot run raises ``BackendUnavailableError``.
* Kernel backends on CUDA are wrapped by the first-use guard (``_guard``): a kernel that fails its
  first call falls back to the reference.

Two op namespaces remain, because two mechanisms define ops: ``yolov9k::`` holds the C++/CUDA ops
of the compiled extension (schemas in ``csrc/<op>.cpp``; their fakes and autograd are registered
from the op's Python module by :func:`define` once the extension loads), and ``yolov9k_triton::``
holds the Triton ops, defined in Python with ``torch.library.custom_op`` in ``yolov9k/kernels/``
(imported only when triton is used, so that the package imports without triton). One name space
would need the Triton ops to be declared by the extension, which may not be built.

The registry fails loudly: :func:`select` on an op that no loaded module defined raises
``UnknownOpError``, and when the extension loads, a ``yolov9k::`` op that no module claims raises
``RegistryError`` (an op module that ``yolov9k/ops/__init__.py`` does not import).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from yolov9k.errors import Yolov9kError
from yolov9k.ops import _guard
from yolov9k.ops._extension import extension_already_loaded, extension_loaded, has_native_kernel

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "KernelOp",
    "OpSpec",
    "RegistryError",
    "UnknownOpError",
    "backends",
    "check_registry",
    "define",
    "implementation",
    "implemented",
    "register",
    "registered_ops",
    "requested_backend",
    "select",
    "use_backend",
]

BACKENDS = ("cuda", "triton", "cpp", "torch")
_CHOICES = ("auto", *BACKENDS)
NATIVE_NAMESPACE = "yolov9k"


class BackendUnavailableError(Yolov9kError, RuntimeError):
    """A forced backend cannot run this op on these tensors."""


class UnknownOpError(Yolov9kError, KeyError):
    """An op was used or registered before its module called :func:`define` (module not imported)."""


class RegistryError(Yolov9kError, RuntimeError):
    """The registry and the built kernels disagree (e.g. a ``yolov9k::`` op that no module claims)."""


@dataclass(frozen=True)
class KernelOp:
    """A ``torch.library`` op that a kernel backend calls.

    ``yolov9k::`` ops (schema in ``csrc/``) carry their ``fake`` and optional autograd
    (``backward`` + ``setup_context``) here; :func:`define` registers them when the extension loads.
    ``yolov9k_triton::`` ops are ``torch.library.custom_op``s that carry their own (``kernels/``).
    """

    qualname: str
    fake: Callable | None = None
    backward: Callable | None = None
    setup_context: Callable | None = None

    @property
    def native(self) -> bool:
        return self.qualname.startswith(NATIVE_NAMESPACE + "::")


@dataclass
class OpSpec:
    """Everything the registry knows about one op (see :func:`define`)."""

    name: str
    module: str
    reference: Callable
    kernel_ops: tuple[KernelOp, ...]
    triton_module: str | None = None
    impls: dict[str, _Impl] = field(default_factory=dict)
    attached: bool = False


@dataclass(frozen=True)
class _Impl:
    fn: Callable
    native_op: str | None = None  # "yolov9k::<name>" kernels must exist for cpp/cuda


_OPS: dict[str, OpSpec] = {}
_OVERRIDE: contextvars.ContextVar[str | None] = contextvars.ContextVar("yolov9k_backend", default=None)


def define(
    name: str,
    *,
    reference: Callable,
    kernel_ops: Sequence[KernelOp] = (),
    triton_module: str | None = None,
) -> OpSpec:
    """Declare op ``name`` (once, in its module): its PyTorch ``reference`` (the ``torch`` backend,
    the oracle of the kernels and the guard's fallback), the ``kernel_ops`` its backends call, and the
    module defining its ``yolov9k_triton::`` ops (imported by tests/test_ops_registry.py to check
    their fakes).
    """
    if name in _OPS:
        raise RegistryError(f"op {name!r} is defined twice ({_OPS[name].module} and {reference.__module__})")
    spec = OpSpec(name, reference.__module__, reference, tuple(kernel_ops), triton_module)
    spec.impls["torch"] = _Impl(reference)
    _OPS[name] = spec
    if extension_already_loaded():  # a module imported after the extension loaded: attach now
        _attach(spec)
    return spec


def register(op: str, backend: str, fn: Callable, native_op: str | None = None) -> None:
    """Declare that ``backend`` implements ``op`` with ``fn`` (``op`` must be defined first).

    For ``cpp`` / ``cuda`` pass ``native_op`` (the ``yolov9k::`` op name): the backend then counts
    as available only when the built extension has a kernel for it.
    """
    if backend not in BACKENDS or backend == "torch":
        raise ValueError(f"unknown kernel backend {backend!r}; expected one of {BACKENDS[:-1]}")
    _spec(op).impls[backend] = _Impl(fn, native_op)


def registered_ops() -> dict[str, OpSpec]:
    """Every defined op by name (a copy)."""
    return dict(_OPS)


def _spec(op: str) -> OpSpec:
    try:
        return _OPS[op]
    except KeyError:
        raise UnknownOpError(
            f"op {op!r} is not registered: its module (yolov9k/ops/<module>.py calling "
            f"_dispatch.define({op!r}, ...)) was not imported by yolov9k/ops/__init__.py; "
            f"registered: {sorted(_OPS)}"
        ) from None


def _attach(spec: OpSpec) -> None:
    """Register the fakes and autograd of ``spec``'s ``yolov9k::`` ops (the extension is loaded)."""
    if spec.attached:
        return
    spec.attached = True
    for k in spec.kernel_ops:
        if not k.native or not _op_exists(k.qualname):
            continue  # an extension built before this op existed lacks it: nothing to attach
        if k.fake is not None:
            torch.library.register_fake(k.qualname)(k.fake)
        if k.backward is not None:
            torch.library.register_autograd(k.qualname, k.backward, setup_context=k.setup_context)


def _op_exists(qualname: str) -> bool:
    namespace, name = qualname.split("::")
    return hasattr(getattr(torch.ops, namespace), name)


def native_ops_defined() -> list[str]:
    """``yolov9k::`` ops the loaded extension defines (internal ``_`` ops excluded)."""
    prefix = NATIVE_NAMESPACE + "::"
    names = torch._C._dispatch_get_all_op_names()
    return sorted(n for n in names if n.startswith(prefix) and not n[len(prefix) :].startswith("_"))


def check_registry() -> None:
    """Raise ``RegistryError`` when a ``yolov9k::`` op of the extension has no Python home."""
    if extension_loaded():
        _check_orphans()


def _check_orphans() -> None:
    claimed = {k.qualname for spec in _OPS.values() for k in spec.kernel_ops}
    orphans = [n for n in native_ops_defined() if n not in claimed]
    if orphans:
        raise RegistryError(
            f"the extension defines {orphans} but no loaded yolov9k.ops module declares them "
            "(define(..., kernel_ops=[KernelOp(...)])): their fakes and autograd are not registered. "
            "Import the op's module in yolov9k/ops/__init__.py (docs/adding-an-op.md)."
        )


def on_extension_loaded() -> None:
    """Called by ``_extension`` after ``yolov9k._C`` imported: attach every op, then check coverage."""
    for spec in _OPS.values():
        _attach(spec)
    _check_orphans()


def implemented(op: str, backend: str) -> bool:
    """Whether ``backend`` has a registered implementation of ``op`` (it may still be unable to run here)."""
    return backend in _spec(op).impls


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
    impl = _spec(op).impls.get(backend)
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


def _choose(op: str, device: torch.device, module_path: bool) -> str:
    wanted = requested_backend()
    if wanted != "auto":
        if module_path and not implemented(op, wanted):
            return "torch"
        reason = _why_unavailable(op, wanted, device)
        if reason is not None:
            raise BackendUnavailableError(f"YOLOV9K_BACKEND={wanted} cannot run {op}: {reason}")
        return wanted
    for backend in _auto_order(device):
        if _why_unavailable(op, backend, device) is None:
            return backend
    raise BackendUnavailableError(f"no implementation of {op!r} for {device}")


def select(op: str, device: torch.device | str, *, module_path: bool = False) -> tuple[str, Callable]:
    """(backend name, callable) that runs ``op`` on tensors of ``device``: the one route (rules in
    the module docstring).

    Args:
        module_path: for modules that keep their original forward (``accelerate``): a forced backend
            that the op does not implement, and a kernel that failed its first-use check on this
            device, give ``"torch"`` (run the original forward) instead of an error / the guarded
            kernel.

    A kernel backend on CUDA comes wrapped by the first-use guard (``_guard``): its first call per
    variant is checked against the reference, and a failure falls back to the reference.
    """
    device = torch.device(device)
    backend = _choose(op, device, module_path)
    if module_path and backend != "torch" and _guard.has_fallen_back(op, device):
        backend = "torch"
    return backend, implementation(op, backend, device)


def implementation(op: str, backend: str, device: torch.device | str) -> Callable:
    """The registered implementation, guarded when it is a kernel that the guard watches on ``device``."""
    spec = _spec(op)
    fn = spec.impls[backend].fn
    if backend == "torch" or not _guard.active(torch.device(device)):
        return fn
    return _guard.guarded(op, backend, fn, spec.reference)


def backends(device: torch.device | str | None = None) -> dict[str, str]:
    """Which backend each registered op uses here, for ``device`` (default: cuda if present)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {}
    for op in sorted(_OPS):
        try:
            out[op] = select(op, device)[0]
        except BackendUnavailableError as exc:
            out[op] = f"unavailable ({exc})"
            continue
        if out[op] != "torch" and _guard.has_fallen_back(op, torch.device(device)):
            out[op] += " -> torch (the kernel failed: see kernel_fallbacks)"
    return out
