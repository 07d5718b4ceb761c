"""Issue 22 item 15 / 21: every backend of an op keeps one contract, tested over the same cases.

``box_iou``: the same values, the same gradient (an IoU loss term never silently gets none) and the same
memory (the output plus ~40 MB) on every backend. ``batched_nms``: the same kept set on every backend for
any threshold (negative ones included), NaN / inf / degenerate boxes and NaN scores, equal to the
textbook oracle. The C++ greedy pass is not quadratic in boxes that do not overlap.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_close_verbose, single_thread
from hypothesis import given, settings
from hypothesis import strategies as st
from test_nms import naive_nms, peak_rss_rise_mb

from yolov9k import ops
from yolov9k.ops.box_iou import box_iou_reference
from yolov9k.ops.nms import batched_nms


def cpu_backends() -> list[str]:
    if not ops.extension_loaded():
        pytest.fail("yolov9k._C is not built; CI must build it")
    return ["torch", "cpp"]


BACKENDS = ["torch", "cpp"]
DEVICES = {"torch": "cpu", "cpp": "cpu"}
if torch.cuda.is_available():  # the GPU check runs these too
    BACKENDS.append("cuda")
    DEVICES["cuda"] = "cuda"


def boxes_with_oddities(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Overlapping boxes plus a zero-area, an inverted, a NaN and an inf box."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(9, 2, generator=g, dtype=torch.float64) * 10
    boxes = torch.cat([xy, xy + 2 + torch.rand(9, 2, generator=g, dtype=torch.float64) * 6], 1)
    odd = torch.tensor(
        [[3.0, 3, 3, 3], [6, 6, 2, 2], [float("nan"), 0, 4, 4], [0, 0, float("inf"), 5]], dtype=torch.float64
    )
    return torch.cat([boxes, odd]).to(dtype)


# ---- box_iou: gradient -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_box_iou_gradient_is_the_references_on_every_backend(backend):
    """The cpp kernel used to have no autograd: an IoU loss term got no gradient at all."""
    if backend != "cuda":
        cpu_backends()
    dev = DEVICES[backend]
    a = boxes_with_oddities()[:9].to(dev).requires_grad_()
    b = (boxes_with_oddities()[:9].to(dev) + 0.5).requires_grad_()
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(lambda x, y: ops.box_iou(x, y), (a, b))
    for dtype in (torch.float32, torch.float64, torch.float16):
        finite = boxes_with_oddities(dtype)[:11]  # with a zero-area and an inverted box: union 0 pairs
        x = finite.to(dev).requires_grad_()
        y = torch.cat([finite.flip(0) + 1, finite[9:]]).to(dev).requires_grad_()
        w = torch.rand(len(x), len(y), generator=torch.Generator().manual_seed(1)).to(dev, dtype)
        with ops.use_backend(backend):
            got = torch.autograd.grad((ops.box_iou(x, y) * w).sum(), (x, y))
        want = torch.autograd.grad((box_iou_reference(x, y) * w).sum(), (x, y))
        for g, r, name in zip(got, want, ("boxes1", "boxes2")):
            assert g.dtype == dtype and g.isfinite().all()
            tol = 1e-3 if dtype == torch.float16 else 1e-6
            assert_close_verbose(g.float().cpu(), r.float().cpu(), atol=tol, what=f"{backend} {dtype} {name}")
        assert want[0].abs().sum() > 0  # the case is not trivially zero


def test_box_iou_gradient_across_row_blocks(monkeypatch):
    """Blocked forward and backward (the reference and the native backward) equal one block's."""
    cpu_backends()
    boxes_mod = sys.modules["yolov9k.ops.box_iou"]  # the module (yolov9k.ops.box_iou is the function)

    a = boxes_with_oddities().requires_grad_()
    b = (boxes_with_oddities() + 1).requires_grad_()
    whole = {be: None for be in ("torch", "cpp")}
    for be in whole:
        with ops.use_backend(be):
            out = ops.box_iou(a, b)
            whole[be] = (out.detach(), *torch.autograd.grad(out.square().sum(), (a, b)))
    monkeypatch.setattr(boxes_mod, "_IOU_BLOCK", 20)  # one or two rows per block
    for be in whole:
        with ops.use_backend(be):
            out = ops.box_iou(a, b)
            blocked = (out.detach(), *torch.autograd.grad(out.square().sum(), (a, b)))
        for x, y in zip(blocked, whole[be]):
            assert_close_verbose(x, y, atol=1e-12, what=f"{be} blocked")


# ---- box_iou: memory ---------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="ASan inflates the resident set")
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_box_iou_memory_is_the_output_plus_a_block(backend):
    """4000 x 4000 boxes: the output is 64 MB; the reference used to make six N x M temporaries
    (~600 MB) and failed to allocate at 2e4 x 2e4 where the kernel worked."""
    cpu_backends()
    setup = f"""
from yolov9k import ops
g = torch.Generator().manual_seed(0)
xy = torch.rand(4000, 2, generator=g) * 1000
a = torch.cat([xy, xy + 30], 1)
ctx = ops.use_backend("{backend}")
ctx.__enter__()
"""
    rise = peak_rss_rise_mb(setup, "out = ops.box_iou(a, a)\nassert out.shape == (4000, 4000)")
    assert rise < 64 + 60, f"box_iou [{backend}] 4000 x 4000 raised peak RSS by {rise:.0f} MB"


# ---- batched_nms: one contract -----------------------------------------------------------------------

THRESHOLDS = [-1.0, -0.5, -1e-9, 0.0, 0.3, 0.5, 1.0, 1.5]


def odd_nms_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    boxes = boxes_with_oddities(torch.float32)
    boxes = torch.cat([boxes, boxes[:4] + 0.25, torch.tensor([[0.0, 0, float("inf"), float("inf")]])])
    scores = torch.linspace(0.9, 0.1, len(boxes))
    scores[[4, 16]] = float("nan")  # the NaN, inf and degenerate boxes have scores
    scores[5] = scores[6]  # a tie
    idxs = torch.tensor([0, 1] * (len(boxes) // 2) + [0] * (len(boxes) % 2))
    return boxes, scores, idxs


@pytest.mark.parametrize("thr", THRESHOLDS)
def test_batched_nms_same_set_on_every_backend(thr):
    """A negative threshold with a NaN box kept different sets on torch and cpp."""
    boxes, scores, idxs = odd_nms_case()
    want = naive_nms(boxes, scores, idxs, thr)
    for backend in BACKENDS:
        if backend != "cuda":
            cpu_backends()
        dev = DEVICES[backend]
        with ops.use_backend(backend):
            got = batched_nms(boxes.to(dev), scores.to(dev), idxs.to(dev), thr)
        assert got.tolist() == want, f"{backend} thr={thr}"


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    seed=st.integers(0, 2**31 - 1),
    thr=st.sampled_from(THRESHOLDS) | st.floats(-2, 2),
    odd=st.floats(0, 0.3),
)
def test_fuzz_batched_nms_backends_agree_with_the_oracle(n, seed, thr, odd):
    cpu_backends()
    g = torch.Generator().manual_seed(seed)
    xy = torch.round(torch.rand(n, 2, generator=g) * 40)
    boxes = torch.cat([xy, xy + torch.round(torch.rand(n, 2, generator=g) * 15)], 1)  # zero sizes too
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0])
    pick = torch.rand(n, 4, generator=g) < odd
    boxes[pick] = special[torch.randint(4, (int(pick.sum()),), generator=g)]
    scores = torch.round(torch.rand(n, generator=g) * 4) / 4
    scores[torch.rand(n, generator=g) < odd] = float("nan")
    idxs = torch.randint(3, (n,), generator=g)
    want = naive_nms(boxes, scores, idxs, thr)
    for backend in ("torch", "cpp"):
        with ops.use_backend(backend):
            assert batched_nms(boxes, scores, idxs, thr).tolist() == want, backend


# ---- batched_nms: not quadratic in boxes that do not overlap ----------------------------------------


def sparse_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """n boxes of 8-16 px spread over a square of side 40 sqrt(n): almost none overlap."""
    xy = torch.rand(n, 2, generator=gen) * (n**0.5 * 40)
    return torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=gen) * 8], 1)


def test_spatial_index_keeps_exactly_the_references_set():
    """Sparse boxes mixed with clusters, wide boxes, tiny boxes and odd values, in few groups, at several
    thresholds: the grid of the C++ kernel (after 64 kept boxes of a group) changes no decision."""
    cpu_backends()
    g = torch.Generator().manual_seed(3)
    parts = [
        sparse_boxes(3000, g),
        torch.tensor([[0.0, 0, 2000, 30], [500, 0, 540, 2000], [0, 0, 3000, 3000]]),  # wide
        sparse_boxes(400, g) / 50,  # tiny
        sparse_boxes(400, g)[:, :2].repeat(1, 2) + torch.tensor([0.0, 0, 300, 300]),  # large, overlapping
        torch.tensor([[float("nan"), 0, 5, 5], [0, 0, float("inf"), 5], [7, 7, 7, 7]]),
    ]
    boxes = torch.cat(parts)
    scores = torch.rand(len(boxes), generator=g)
    idxs = torch.randint(3, (len(boxes),), generator=g)
    for thr in (0.0, 0.1, 0.5, 0.9):
        with single_thread(), ops.use_backend("torch"):
            want = batched_nms(boxes, scores, idxs, thr)
        with ops.use_backend("cpp"):
            got = batched_nms(boxes, scores, idxs, thr)
        assert got.tolist() == want.tolist(), f"thr={thr}"
        assert len(want) > 200


# docs/reliability.md: "1e5 boxes that barely overlap, one class: about 0.2 s in the C++ NMS"
SPARSE_100K_BUDGET_S = 2.0  # 10x the documented figure (a busy CI machine); it took ~11 s before


def test_cpp_nms_on_1e5_sparse_boxes_of_one_class_is_not_quadratic():
    cpu_backends()
    g = torch.Generator().manual_seed(0)
    n = 100_000
    boxes, scores = sparse_boxes(n, g), torch.rand(n, generator=g)
    idxs = torch.zeros(n, dtype=torch.int64)
    with ops.use_backend("cpp"):
        start = time.perf_counter()
        keep = batched_nms(boxes, scores, idxs, 0.5)
        seconds = time.perf_counter() - start
    assert len(keep) > 0.98 * n  # almost nothing overlaps: it keeps (and so tests) almost every box
    assert torch.all(scores[keep][1:] <= scores[keep][:-1])
    assert seconds < SPARSE_100K_BUDGET_S, f"C++ NMS took {seconds:.2f} s on 1e5 sparse boxes"
