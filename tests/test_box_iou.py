"""Parity of the dispatched box_iou (C++ / CUDA) with the PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close_verbose

from yolov9k import ops
from yolov9k.ops.box_iou import box_iou_reference


def random_boxes(n: int, generator: torch.Generator, scale: float = 100.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * scale
    wh = torch.rand(n, 2, generator=generator) * scale / 4
    return torch.cat([xy, xy + wh], 1)


def naive_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i, p in enumerate(a.double().tolist()):
        for j, q in enumerate(b.double().tolist()):
            w = max(min(p[2], q[2]) - max(p[0], q[0]), 0.0)
            h = max(min(p[3], q[3]) - max(p[1], q[1]), 0.0)
            inter = w * h
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def test_reference_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(7, g), random_boxes(9, g)
    a[0] = b[0]  # identical pair -> IoU 1
    a[1, 2:] = a[1, :2]  # degenerate box
    expected = naive_iou(a, b)
    assert_close_verbose(box_iou_reference(a.double(), b.double()), expected, atol=1e-12, what="iou")
    assert box_iou_reference(a, b)[0, 0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("n,m", [(0, 0), (0, 5), (3, 0), (1, 1), (17, 33), (128, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.op_parity("box_iou")
def test_cpp_matches_reference(n, m, dtype):
    if not ops.extension_loaded():
        pytest.fail("yolov9k._C is not built; CI must build it")
    g = torch.Generator().manual_seed(n * 100 + m)
    a, b = random_boxes(n, g).to(dtype), random_boxes(m, g).to(dtype)
    with ops.use_backend("cpp"):
        got = ops.box_iou(a, b)
    expected = box_iou_reference(a, b)
    assert got.dtype == dtype and got.shape == (n, m)
    tol = 0 if dtype in (torch.float32, torch.float64) else 1e-2
    assert_close_verbose(got.float(), expected.float(), atol=tol, what=f"box_iou {dtype}")


def test_non_contiguous_input():
    g = torch.Generator().manual_seed(1)
    a = random_boxes(10, g).t().contiguous().t()  # non-contiguous view
    assert not a.is_contiguous()
    with ops.use_backend("cpp"):
        got = ops.box_iou(a, a)
    assert_close_verbose(got, box_iou_reference(a, a), what="non-contiguous")


@pytest.mark.parametrize("bad", [torch.zeros(3, 5), torch.zeros(4), torch.zeros(3, 4, dtype=torch.int64)])
def test_bad_input_is_a_clear_error(bad):
    with pytest.raises((ValueError, TypeError)):
        ops.box_iou(bad, torch.zeros(2, 4))


def test_forced_unavailable_backend_raises():
    with ops.use_backend("cuda"), pytest.raises(ops.BackendUnavailableError, match="CUDA tensors"):
        ops.box_iou(torch.zeros(1, 4), torch.zeros(1, 4))


def test_backends_reports_cpp_when_built():
    report = ops.backends("cpu")
    assert report["box_iou"] == ("cpp" if ops.extension_loaded() else "torch")
    with ops.use_backend("torch"):
        assert ops.backends("cpu")["box_iou"] == "torch"


def test_fake_kernel_shapes():
    if not ops.extension_loaded():
        pytest.fail("yolov9k._C is not built")
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = torch.ops.yolov9k.box_iou(torch.empty(5, 4), torch.empty(3, 4))
    assert tuple(out.shape) == (5, 3)


def test_opcheck_registration():
    if not ops.extension_loaded():
        pytest.fail("yolov9k._C is not built")
    g = torch.Generator().manual_seed(2)
    torch.library.opcheck(
        torch.ops.yolov9k.box_iou.default,
        (random_boxes(6, g), random_boxes(4, g)),
        test_utils=("test_schema", "test_faketensor"),
    )
