"""A restricted reader for ``torch.save`` zip archives that hold pickled module trees.

The official YOLOv9 checkpoints pickle whole ``models.yolo.DetectionModel`` objects, which
``torch.load(weights_only=True)`` refuses and ``weights_only=False`` would load by *running* code
named in the file. This reader does neither: :class:`RestrictedUnpickler` resolves every global
through an allow-list and nothing else.

- tensors: our own replacements for ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``,
  built with ``torch.frombuffer`` + ``as_strided`` from the bytes of the zip entry ``data/<key>``;
- module classes (official ``models.*`` and ``torch.nn.modules.*``), ``argparse.Namespace``:
  :class:`Record` subclasses, inert containers that only keep the pickled ``__dict__``;
- pathlib paths become ``str``; numpy arrays/scalars/dtypes become Records (values not needed);
  a few containers and constants (OrderedDict, set, torch dtypes) pass.

Any other global raises :class:`UnsafeCheckpointError` naming it, before anything is called.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pathlib
import pickle
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from yolov9k.errors import Yolov9kError
from yolov9k.io.archive import (
    MAX_ENTRY_BYTES,
    MAX_PICKLE_BYTES,
    CheckpointError,
    open_archive,
    read_entry,
)

__all__ = ["UnsafeCheckpointError", "Record", "RestrictedUnpickler", "read_torch_zip", "is_torch_zip"]


class UnsafeCheckpointError(Yolov9kError, pickle.UnpicklingError):
    """The pickle references a global that the restricted unpickler does not allow."""


class Record:
    """Inert stand-in for a pickled object of class ``GLOBAL`` (a module, a namespace).

    Unpickling creates it with ``object.__new__`` and hands the pickled state to ``__setstate__``,
    which only stores it: no method of the original class ever runs.
    """

    GLOBAL = "?"

    def __new__(cls, *args: Any) -> Record:
        # Pickles may create a Record without REDUCE or BUILD (NEWOBJ, copyreg._reconstructor):
        # it still has (empty) arguments and state.
        record = super().__new__(cls)
        record.args = args
        record.state = {}
        return record

    def __init__(self, *args: Any) -> None:  # REDUCE-style construction: keep the arguments only
        self.args = args
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = state if isinstance(state, dict) else {"__state__": state}

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state")
        if state is not None and name in state:
            return state[name]
        raise AttributeError(f"{self.GLOBAL} record has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<Record {self.GLOBAL}>"


# Classes of the official code base (models/common.py, models/yolo.py, models/experimental.py)
# that may appear as pickled modules. They become Records: listing one runs none of its code.
_OFFICIAL_CLASSES: dict[str, frozenset[str]] = {
    "models.yolo": frozenset(
        "DetectionModel Model BaseModel Detect DDetect DualDetect DualDDetect TripleDetect "
        "TripleDDetect Segment DSegment DualDSegment Panoptic ClassificationModel SegmentationModel".split()
    ),
    "models.common": frozenset(
        "Conv AConv ADown RepConvN SP MP ConvTranspose DWConv DWConvTranspose2d DFL BottleneckBase "
        "RBottleneckBase RepNRBottleneckBase Bottleneck RepNBottleneck Res RepNRes BottleneckCSP CSP "
        "RepNCSP CSPBase SPP ASPP SPPCSPC SPPF ReOrg Contract Expand Shortcut Silence Concat Proto "
        "UConv RepNCSPELAN4 ELAN1 SPPELAN CBLinear CBFuse Focus GhostConv GhostBottleneck C3 "
        "C3x C3TR C3SPP C3Ghost TransformerLayer TransformerBlock ImplicitA ImplicitM Classify "
        "CrossConv".split()
    ),
    "models.experimental": frozenset("Sum MixConv2d Ensemble ORT_NMS TRT_NMS ONNX_ORT End2End".split()),
}
# numpy objects in training metadata (an unstripped last.pt pickles best_fitness as an ndarray):
# kept as inert Records too, so such files load; their values are not needed for the weights.
_NUMPY_GLOBALS = frozenset(
    f"numpy.{core}.multiarray.{fn}" for core in ("core", "_core") for fn in ("_reconstruct", "scalar")
) | frozenset({"numpy.ndarray", "numpy.dtype"})
_TORCH_NN = re.compile(r"torch\.nn\.modules\.[a-z_]+")
_RECORD_CLASSES: dict[str, type[Record]] = {}

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "HalfStorage": torch.float16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
_DTYPE_NAMES = frozenset(
    "float16 half float32 float float64 double bfloat16 int64 long int32 int int16 short int8 uint8 "
    "bool complex64 complex128".split()
)


# Tensors may repeat their storage's elements (stride 0, e.g. from expand()) up to this many elements.
_MAX_REPEATED_VIEW = 1 << 20


class StorageType:
    """What ``torch.<X>Storage`` resolves to: just the element dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _record_class(qualname: str) -> type[Record]:
    if qualname not in _RECORD_CLASSES:
        name = qualname.rsplit(".", 1)[1]
        _RECORD_CLASSES[qualname] = type(name, (Record,), {"GLOBAL": qualname, "__module__": __name__})
    return _RECORD_CLASSES[qualname]


def _rebuild_tensor(
    storage: torch.Tensor,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Replacement for ``torch._utils._rebuild_tensor_v2``: a strided view of a storage tensor."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    try:
        view = torch.as_strided(storage, tuple(size), tuple(stride), int(storage_offset))
    except (RuntimeError, TypeError, ValueError, OverflowError) as e:
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise pickle.UnpicklingError(f"invalid tensor layout in checkpoint: {reason}") from None
    # A view with more elements than its storage repeats them (stride 0): harmless here, but a
    # later .float() or .clone() would allocate all of them. Only small ones are accepted.
    if view.numel() > max(storage.numel(), _MAX_REPEATED_VIEW):
        raise pickle.UnpicklingError(
            f"tensor of shape {tuple(view.shape)} repeats a storage of {storage.numel()} elements"
        )
    return view


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = True, backward_hooks: Any = None, *_: Any):
    """Replacement for ``torch._utils._rebuild_parameter(_with_state)``: the plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter rebuilt from a {type(data).__name__}")
    return data


def _path_to_str(pure: type[pathlib.PurePath]) -> Callable[..., str]:
    def build(*parts: Any) -> str:
        if not all(isinstance(p, str) for p in parts):
            raise pickle.UnpicklingError("path parts must be strings")
        return str(pure(*parts))

    return build


def _device_str(*args: Any) -> str:
    """Replacement for ``torch.device``: the device as a string (never moves anything)."""
    if not all(isinstance(a, str | int) for a in args):
        raise pickle.UnpicklingError("torch.device arguments must be str or int")
    return str(torch.device(*args))


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """Replacement for ``_codecs.encode``: protocol-2 pickles store bytes as latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin-1 text")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Replacement for ``copyreg._reconstructor`` (protocol 0/1 objects): only Records."""
    if isinstance(cls, type) and issubclass(cls, Record) and base is object and state is None:
        return cls.__new__(cls)
    raise UnsafeCheckpointError("copyreg._reconstructor is only allowed for allow-listed classes")


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "object"): object,  # the base in copyreg._reconstructor records
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("torch", "device"): _device_str,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _latin1_bytes,
    ("pathlib", "Path"): _path_to_str(pathlib.PurePath),
    ("pathlib", "PosixPath"): _path_to_str(pathlib.PurePosixPath),
    ("pathlib", "PurePosixPath"): _path_to_str(pathlib.PurePosixPath),
    ("pathlib", "WindowsPath"): _path_to_str(pathlib.PureWindowsPath),
    ("pathlib", "PureWindowsPath"): _path_to_str(pathlib.PureWindowsPath),
}


def _refuse_bytearray8(unpickler: pickle._Unpickler) -> None:
    raise pickle.UnpicklingError("BYTEARRAY8 is not allowed in checkpoints")


# The pure-Python unpickler, not the C one: the C unpickler grows its memo to a PUT opcode's index,
# so 5 bytes (LONG_BINPUT 2**31) make it allocate and clear 16 GB; this one keeps a dict.
class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves globals only through the allow-list above.

    ``load_storage(dtype, key, numel)`` supplies the flat tensor for a persistent storage record
    ``('storage', storage_type, key, location, numel)``; storages are cached by key so views share.
    Memory stays proportional to the pickle's size: BYTEARRAY8 (which allocates its declared
    length before reading) is refused.
    """

    dispatch = {**pickle._Unpickler.dispatch, pickle.BYTEARRAY8[0]: _refuse_bytearray8}

    def __init__(self, file: IO[bytes], load_storage: Callable[[torch.dtype, str, int], torch.Tensor]):
        super().__init__(file)
        self._load_storage = load_storage
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # protocol-2 pickles name globals as Python 2 did (copy_reg, __builtin__)
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualname = f"{module}.{name}"
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPE_NAMES:
            return getattr(torch, name)
        if name in _OFFICIAL_CLASSES.get(module, ()) or (module, name) == ("argparse", "Namespace"):
            return _record_class(qualname)
        if qualname in _NUMPY_GLOBALS or re.fullmatch(r"numpy\.dtypes\.[A-Za-z0-9]+DType", qualname):
            return _record_class(qualname)
        if _TORCH_NN.fullmatch(module) and name.isidentifier() and name[:1].isupper():
            return _record_class(qualname)
        raise UnsafeCheckpointError(
            f"checkpoint references the global {qualname!r}, which is not allowed: refusing to load it "
            "(only tensors, plain containers and known YOLOv9 / torch.nn module classes are accepted)"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unsupported persistent id in checkpoint: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage record in checkpoint: {pid!r:.80}")
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in self._storages:
            self._storages[key] = self._load_storage(storage_type.dtype, key, numel)
        storage = self._storages[key]
        if storage.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f"storage {key} is used with two dtypes")
        return storage


def is_torch_zip(path: str | Path) -> bool:
    """True if ``path`` is a zip archive with a ``*/data.pkl`` entry (torch.save >= 1.6 format)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.count("/") == 1 and n.endswith("/data.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _frombytes(data: bytearray, dtype: torch.dtype, big_endian: bool) -> torch.Tensor:
    """The flat tensor over ``data`` (no copy), byte-swapped first if the archive is big-endian."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    if not data:
        return torch.empty(0, dtype=dtype)
    if big_endian != (sys.byteorder == "big") and itemsize > 1:
        unit = itemsize // 2 if dtype.is_complex else itemsize
        swapped = torch.frombuffer(data, dtype=torch.uint8).view(-1, unit).flip(1).contiguous()
        return swapped.view(-1).view(dtype)
    return torch.frombuffer(data, dtype=dtype)


def _describe(error: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:limit]}" if text else type(error).__name__


class _TorchZip:
    """A ``torch.save`` archive whose directory passed :func:`open_archive`, read entry by entry."""

    def __init__(self, zf: zipfile.ZipFile, where: str) -> None:
        self.zf, self.where = zf, where
        pkls = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise CheckpointError(f"{where} is a zip archive but not a torch.save checkpoint (no */data.pkl)")
        self.prefix = pkls[0][: -len("data.pkl")]
        order = (
            bytes(self.read(self.prefix + "byteorder", 16)).strip() if self.has("byteorder") else b"little"
        )
        if order not in (b"little", b"big"):
            raise CheckpointError(f"{where}: unknown byte order {order[:16]!r}")
        self.big_endian = order == b"big"

    def has(self, name: str) -> bool:
        return self.prefix + name in self.zf.NameToInfo

    def read(self, entry: str, limit: int = MAX_ENTRY_BYTES) -> bytearray:
        return read_entry(self.zf, self.zf.getinfo(entry), self.where, limit)

    def pickle_bytes(self) -> bytearray:
        return self.read(self.prefix + "data.pkl", MAX_PICKLE_BYTES)

    def load_storage(self, dtype: torch.dtype, key: str, numel: int) -> torch.Tensor:
        """The storage ``data/<key>``; its declared size must be what the pickle says, checked before
        anything is read."""
        entry = f"{self.prefix}data/{key}"
        info = self.zf.NameToInfo.get(entry)
        if info is None:
            raise pickle.UnpicklingError(f"storage entry {entry[:80]!r} is missing")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if info.file_size != numel * itemsize:
            raise pickle.UnpicklingError(
                f"storage {entry[:80]!r} holds {info.file_size} bytes, the pickle says {numel} x {itemsize}"
            )
        return _frombytes(self.read(entry), dtype, self.big_endian)


def read_torch_zip(path: str | Path) -> Any:
    """Unpickle a ``torch.save`` zip archive with :class:`RestrictedUnpickler`; tensors on CPU.

    The archive directory is checked first (:func:`~yolov9k.io.archive.open_archive`); the pickle
    and each storage are read with their sizes checked before, and their CRC-32 after, reading.

    Raises:
        UnsafeCheckpointError: the pickle names a global outside the allow-list.
        ValueError: not a torch zip archive, or a corrupt, truncated or oversized one.
    """
    try:
        with open_archive(path, str(path)) as zf:
            archive = _TorchZip(zf, str(path))
            data = archive.pickle_bytes()
            return RestrictedUnpickler(io.BytesIO(data), archive.load_storage).load()
    except (UnsafeCheckpointError, CheckpointError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as e:
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (corrupt or truncated?): {_describe(e)}"
        ) from None
    except Exception as e:  # malformed pickles fail in many ways (TypeError, KeyError, struct.error, ...)
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint: malformed pickle: {_describe(e)}"
        ) from None
