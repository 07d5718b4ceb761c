"""The op registry is complete and fails loudly (docs/adding-an-op.md).

Every op that a ``yolov9k.ops`` module defines must have: a reference (its ``torch`` backend), at
least one kernel op with a fake (``yolov9k::`` ops: declared in the op's module; ``yolov9k_triton::``
ops: registered by their ``custom_op`` in ``kernels/``), a parity test in ``tests/`` marked
``@pytest.mark.op_parity("<op>")`` and a benchmark case in ``benchmarks/`` marked
``@pytest.mark.op_bench("<op>")``. ``missing_parts`` checks one op; it is itself tested on fake ops
below, so that the completeness test can fail.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

import yolov9k.ops  # noqa: F401  (imports every op module)
from yolov9k.ops import _dispatch
from yolov9k.ops._dispatch import KernelOp, OpSpec, RegistryError, UnknownOpError
from yolov9k.ops._extension import extension_loaded

ROOT = Path(__file__).resolve().parents[1]


def marked_ops(paths: Iterable[Path], marker: str) -> set[str]:
    """Op names given to ``pytest.mark.<marker>("op")`` anywhere in ``paths`` (decorators and
    ``pytestmark``), read from the source without importing it."""
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == marker
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(node.args[0].value)
    return found


def _fake_registered(qualname: str) -> bool:
    from torch._library.simple_registry import singleton

    return singleton.find(qualname).fake_impl.kernel is not None


def missing_parts(spec: OpSpec, parity: set[str], bench: set[str], *, check_torch: bool = True) -> list[str]:
    """What ``spec`` lacks of the recipe (empty when complete). ``check_torch``: also ask
    torch.library whether the fakes are registered (needs the extension / triton)."""
    missing = []
    if not callable(spec.reference) or spec.impls.get("torch") is None:
        missing.append("reference")
    if not spec.kernel_ops:
        missing.append("kernel op (nothing to dispatch to)")
    for k in spec.kernel_ops:
        if k.native and k.fake is None:
            missing.append(f"fake of {k.qualname}")
        elif not k.native and spec.triton_module is None:
            missing.append(f"triton_module defining {k.qualname}")
    if check_torch:
        if extension_loaded():
            missing += [
                f"registered fake of {k.qualname}"
                for k in spec.kernel_ops
                if k.native and not _fake_registered(k.qualname)
            ]
        if spec.triton_module is not None and _dispatch.triton_importable():
            importlib.import_module(spec.triton_module)
            missing += [
                f"registered fake of {k.qualname}"
                for k in spec.kernel_ops
                if not k.native and not _fake_registered(k.qualname)
            ]
    if spec.name not in parity:
        missing.append(f'parity test (@pytest.mark.op_parity("{spec.name}") in tests/)')
    if spec.name not in bench:
        missing.append(f'benchmark case (@pytest.mark.op_bench("{spec.name}") in benchmarks/)')
    return missing


def _parity() -> set[str]:
    return marked_ops(sorted((ROOT / "tests").glob("test_*.py")), "op_parity")


def _bench() -> set[str]:
    return marked_ops(sorted((ROOT / "benchmarks").glob("test_bench_*.py")), "op_bench")


# --- the real registry ---------------------------------------------------------------------------


def test_registry_lists_the_seven_ops():
    assert set(_dispatch.registered_ops()) == {
        "assign",
        "batched_nms",
        "bn_silu",
        "box_iou",
        "concat_conv1x1_silu",
        "hsv_jitter",
        "postprocess",
    }


@pytest.mark.parametrize("op", sorted(_dispatch.registered_ops()))
def test_every_registered_op_is_complete(op):
    assert extension_loaded(), (
        "yolov9k._C is not built; CI must build it (the fakes of yolov9k:: ops are checked)"
    )
    assert missing_parts(_dispatch.registered_ops()[op], _parity(), _bench()) == []


def test_every_op_module_is_imported_by_the_package():
    """An ops module that calls ``define`` but that ``yolov9k/ops/__init__.py`` does not import would
    register nothing: every ``define("name", ...)`` in the sources is in the registry."""
    defined = set()
    for path in sorted((ROOT / "yolov9k" / "ops").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "define"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                defined.add(node.args[0].value)
    assert defined == set(_dispatch.registered_ops())


def test_native_op_without_python_home_raises(monkeypatch):
    assert extension_loaded(), "yolov9k._C is not built; CI must build it"
    _dispatch.check_registry()  # complete: no error
    monkeypatch.delitem(_dispatch._OPS, "box_iou")  # as if yolov9k/ops/box_iou.py were not imported
    with pytest.raises(RegistryError, match=r"yolov9k::box_iou.*yolov9k/ops/__init__.py"):
        _dispatch.check_registry()


def test_unknown_op_is_a_loud_error():
    with pytest.raises(UnknownOpError, match="not registered.*__init__"):
        _dispatch.select("not_an_op", "cpu")
    with pytest.raises(UnknownOpError):
        _dispatch.register("not_an_op", "cpp", lambda x: x, native_op="not_an_op")
    assert "not_an_op" not in _dispatch.registered_ops()


def test_defining_an_op_twice_is_an_error():
    with pytest.raises(RegistryError, match="defined twice"):
        _dispatch.define("box_iou", reference=lambda a, b: a)


def test_the_native_fakes_give_shapes():
    """The fakes declared in the op modules are the ones torch uses (FakeTensor shapes)."""
    assert extension_loaded(), "yolov9k._C is not built; CI must build it"
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        iou = torch.ops.yolov9k.box_iou(torch.empty(3, 4), torch.empty(5, 4))
        y, mean, invstd = torch.ops.yolov9k.bn_silu_train(
            torch.empty(2, 3, 4, 4), torch.empty(3), torch.empty(3), 1e-5
        )
    assert iou.shape == (3, 5) and y.shape == (2, 3, 4, 4) and mean.shape == invstd.shape == (3,)


# --- the checker, on fake ops (it must be able to fail) ---------------------------------------------


def _fake_fn(x: torch.Tensor) -> torch.Tensor:
    return x


def _spec(**overrides) -> OpSpec:
    fields = dict(
        name="fake_op",
        module=__name__,
        reference=_fake_fn,
        kernel_ops=(KernelOp("yolov9k::fake_op", fake=_fake_fn),),
    )
    fields.update(overrides)
    spec = OpSpec(**fields)
    if spec.reference is not None:
        spec.impls["torch"] = _dispatch._Impl(spec.reference)
    return spec


def _missing(spec: OpSpec, parity=("fake_op",), bench=("fake_op",)) -> list[str]:
    return missing_parts(spec, set(parity), set(bench), check_torch=False)


def test_checker_passes_a_complete_fake_op():
    assert _missing(_spec()) == []


@pytest.mark.parametrize(
    "spec_overrides, parity, bench, want",
    [
        (dict(reference=None), ("fake_op",), ("fake_op",), "reference"),
        (
            dict(kernel_ops=(KernelOp("yolov9k::fake_op"),)),
            ("fake_op",),
            ("fake_op",),
            "fake of yolov9k::fake_op",
        ),
        (dict(kernel_ops=()), ("fake_op",), ("fake_op",), "kernel op"),
        (
            dict(kernel_ops=(KernelOp("yolov9k_triton::fake_op"),)),
            ("fake_op",),
            ("fake_op",),
            "triton_module",
        ),
        ({}, (), ("fake_op",), "parity test"),
        ({}, ("fake_op",), (), "benchmark case"),
    ],
    ids=["no-reference", "no-fake", "no-kernel-op", "triton-op-without-module", "no-parity", "no-bench"],
)
def test_checker_names_the_missing_part(spec_overrides, parity, bench, want):
    got = _missing(_spec(**spec_overrides), parity, bench)
    assert len(got) == 1 and got[0].startswith(want), got


def test_checker_asks_torch_whether_a_fake_is_registered():
    """A fake declared but never registered (the op module was not loaded) is caught."""
    assert extension_loaded(), "yolov9k._C is not built; CI must build it"
    spec = _spec(name="box_iou", kernel_ops=(KernelOp("yolov9k::box_iou", fake=_fake_fn),))
    assert missing_parts(spec, {"box_iou"}, {"box_iou"}) == []
    unregistered = _spec(kernel_ops=(KernelOp("yolov9k::_cuda_version", fake=_fake_fn),))
    assert missing_parts(unregistered, {"fake_op"}, {"fake_op"}) == [
        "registered fake of yolov9k::_cuda_version"
    ]


def test_marker_scan_reads_decorators_and_pytestmark(tmp_path):
    src = tmp_path / "test_x.py"
    src.write_text(
        "import pytest\n"
        'pytestmark = pytest.mark.op_parity("a")\n'
        '@pytest.mark.op_parity("b")\n'
        "def test_b(): pass\n"
        '@pytest.mark.op_bench("c")\n'
        "def test_c(): pass\n"
    )
    assert marked_ops([src], "op_parity") == {"a", "b"}
    assert marked_ops([src], "op_bench") == {"c"}
