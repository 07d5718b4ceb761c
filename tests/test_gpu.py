"""GPU parity of the native kernels (run by benchmarks/gpu_check.sh; skipped without a CUDA device).

CUDA kernels (csrc/cuda) against the CPU kernels / references, bit for bit, and the Triton assigner
on CUDA tensors at full size against the reference on the same device. Every test name contains
``cuda``: gpu_check.sh selects them with ``-k cuda``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close_verbose
from test_assign_kernels import NAMES, anchors, make_problem
from test_nms import CASES, naive_nms, random_boxes, random_pred

from yolov9k import ops
from yolov9k.ops._extension import has_native_kernel
from yolov9k.ops.assign import assign, assign_reference
from yolov9k.ops.nms import postprocess_fixed

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(autouse=True)
def _strict_kernels(monkeypatch):
    """A kernel that fails its first-use check is an error here, never a silent fallback."""
    monkeypatch.setenv("YOLOV9K_STRICT_KERNELS", "1")


def _require_cuda_kernel(op: str) -> None:
    if not has_native_kernel(op, "CUDA"):
        pytest.fail(f"yolov9k._C has no CUDA kernel for {op}: build with CUDA (gpu_check.sh does)")


# --------------------------------------------------------------------------------------------------
# postprocess (CUDA) == postprocess (CPU kernel), bit for bit


SETTINGS = [
    dict(conf_thres=0.001, iou_thres=0.7, multi_label=True),
    dict(conf_thres=0.001, iou_thres=0.7),
    dict(conf_thres=0.25, iou_thres=0.45),
    dict(conf_thres=0.25, iou_thres=0.45, multi_label=True, agnostic=True),
    dict(conf_thres=0.05, iou_thres=0.5, max_det=7, max_nms=50, classes=[0, 3, 5]),
]


def _cpu_fixed(pred: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    with ops.use_backend("cpp"):
        return postprocess_fixed(pred.cpu(), **kw)


@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
@pytest.mark.parametrize("batch", [1, 3, 32])
def test_cuda_postprocess_equals_cpu(kw, batch):
    _require_cuda_kernel("postprocess")
    pred = random_pred(batch, 8, 2000, torch.Generator().manual_seed(batch))
    pred[0, 4:, :5] = float("nan")  # NaN scores drop their anchors on every backend
    want = _cpu_fixed(pred, **kw)
    with ops.use_backend("cuda"):
        got = postprocess_fixed(pred.cuda(), **kw)
    assert got[0].is_cuda and got[1].is_cuda
    assert torch.equal(got[1].cpu(), want[1]), f"counts {got[1].tolist()} vs {want[1].tolist()}"
    assert torch.equal(got[0].cpu(), want[0]), "detections differ"


def test_cuda_postprocess_fixture_80_classes_fp16(fixtures_dir):
    _require_cuda_kernel("postprocess")
    pred = torch.load(fixtures_dir / "nms_fixture.pt", weights_only=True)["synthetic_pred"]
    for dtype in (torch.float32, torch.float16):
        p = pred.to(dtype)
        want = _cpu_fixed(p, **SETTINGS[0])
        got = postprocess_fixed(p.cuda(), **SETTINGS[0])
        assert torch.equal(got[1].cpu(), want[1]) and torch.equal(got[0].cpu(), want[0]), dtype


def test_cuda_postprocess_empty_and_no_candidates():
    _require_cuda_kernel("postprocess")
    for pred in (torch.zeros(0, 84, 100), torch.zeros(2, 84, 0), torch.zeros(2, 84, 100)):
        dets, counts = postprocess_fixed(pred.cuda(), 0.25, 0.45)
        assert dets.shape == (pred.shape[0], 300, 6) and (counts == 0).all() and (dets == 0).all()


def test_cuda_postprocess_graph_capture_replays():
    """One capture, new inputs copied in, replayed: the same results as eager calls."""
    _require_cuda_kernel("postprocess")
    gen = torch.Generator().manual_seed(5)
    static = random_pred(4, 80, 8400, gen).cuda()
    for _ in range(2):  # warm-up: allocations and cub's temporary storage before the capture
        postprocess_fixed(static, **SETTINGS[0])
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        dets, counts = postprocess_fixed(static, **SETTINGS[0])
    for seed in (6, 7):
        new = random_pred(4, 80, 8400, torch.Generator().manual_seed(seed)).cuda()
        static.copy_(new)
        graph.replay()
        want = postprocess_fixed(new, **SETTINGS[0])
        assert torch.equal(counts, want[1]) and torch.equal(dets, want[0])


def test_cuda_postprocess_makes_no_host_sync():
    _require_cuda_kernel("postprocess")
    pred = random_pred(8, 80, 8400, torch.Generator().manual_seed(8)).cuda()
    postprocess_fixed(pred, **SETTINGS[0])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        dets, counts = postprocess_fixed(pred, **SETTINGS[0])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(counts.sum()) > 0


# --------------------------------------------------------------------------------------------------
# batched_nms (CUDA) == the naive oracle and the CPU kernel


@pytest.mark.parametrize("case", sorted(CASES))
def test_cuda_batched_nms_edge_cases(case):
    _require_cuda_kernel("batched_nms")
    boxes, scores, idxs = CASES[case]
    with ops.use_backend("cuda"):
        got = ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5)
    assert got.is_cuda and got.dtype == torch.int64
    assert got.tolist() == naive_nms(boxes, scores, idxs, 0.5)


@pytest.mark.parametrize("n", [1, 255, 256, 257, 3000, 30000])
@pytest.mark.parametrize("max_keep", [None, 1, 100])
def test_cuda_batched_nms_equals_cpu(n, max_keep):
    _require_cuda_kernel("batched_nms")
    gen = torch.Generator().manual_seed(n)
    boxes = torch.round(random_boxes(n, gen, scale=400, clusters=20))  # integer corners: exact IoU ties
    scores = torch.round(torch.rand(n, generator=gen) * 64) / 64  # many score ties
    scores[::11] = -0.0  # ranks as +0.0 (ties by index)
    idxs = torch.randint(5, (n,), generator=gen)
    with ops.use_backend("cpp"):
        want = ops.batched_nms(boxes, scores, idxs, 0.6, max_keep)
    with ops.use_backend("cuda"):
        got = ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.6, max_keep)
    assert got.cpu().tolist() == want.tolist()
    if n <= 257:  # the oracle is plain Python: small inputs only
        full = naive_nms(boxes, scores, idxs, 0.6)
        assert want.tolist() == (full if max_keep is None else full[:max_keep])


def test_cuda_batched_nms_half_input():
    _require_cuda_kernel("batched_nms")
    gen = torch.Generator().manual_seed(1)
    boxes, scores = random_boxes(500, gen), torch.rand(500, generator=gen)
    idxs = torch.randint(3, (500,), generator=gen)
    for dtype in (torch.float16, torch.bfloat16):
        with ops.use_backend("cpp"):
            want = ops.batched_nms(boxes.to(dtype), scores.to(dtype), idxs, 0.5)
        got = ops.batched_nms(boxes.to(dtype).cuda(), scores.to(dtype).cuda(), idxs.cuda(), 0.5)
        assert got.cpu().tolist() == want.tolist(), dtype


# --------------------------------------------------------------------------------------------------
# assign: Triton on CUDA == the reference on CUDA (same torch pow/atan), at full size


def _assert_assign_equal(got, want, scores_rtol: float) -> None:
    for name, g, w in zip(NAMES, got, want):
        rtol = scores_rtol if name == "target_scores" else 0.0
        assert_close_verbose(g.double(), w.double(), rtol=rtol, atol=0.0, what=name)


def test_cuda_triton_assign_fixture_full_size(fixtures_dir):
    tal = torch.load(fixtures_dir / "tal_fixture.pt", weights_only=True)
    i = tal["inputs"]
    args = [
        t.cuda()
        for t in (i["pd_scores_fp16"].float(), i["pd_bboxes"], i["anc_points"], i["gt_labels"])
        + (i["gt_bboxes"], i["mask_gt"])
    ]
    with ops.use_backend("triton"):
        got = assign(*args)
    want = assign_reference(*args)
    _assert_assign_equal(got, want, scores_rtol=0.0)
    assert torch.equal(got[3].cpu(), tal["outputs"]["fg_mask"])
    assert torch.equal(got[4].cpu(), tal["intermediates"]["target_gt_idx"])


@pytest.mark.parametrize(
    "kind,bsz,m,img,dtype",
    [
        ("random", 16, 100, 640, torch.float32),
        ("crowd", 2, 1000, 640, torch.float16),
        ("border", 4, 20, 320, torch.bfloat16),
        ("tiny", 3, 50, 256, torch.float32),
        ("duplicate", 2, 8, 128, torch.float16),
    ],
)
def test_cuda_triton_assign_equals_reference(kind, bsz, m, img, dtype):
    problem = make_problem(m, bsz=bsz, m=m, img=img, n_cls=80, kind=kind, score_dtype=dtype)
    args = [t.cuda() for t in problem]
    with ops.use_backend("triton"):
        got = assign(*args)
    _assert_assign_equal(got, assign_reference(*args), scores_rtol=0.0)


def test_cuda_triton_assign_anchor_layout_read_once():
    """Repeated calls with one anchor tensor (as DetectionLoss makes them) sync no more."""
    args = [t.cuda() for t in make_problem(0, bsz=2, m=10, img=320, n_cls=80)]
    args[2] = anchors(320).cuda()
    with ops.use_backend("triton"):
        assign(*args)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = assign(*args)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert out[3].any()


# --------------------------------------------------------------------------------------------------
# box_iou (CUDA) == box_iou (CPU kernel), bit for bit (no FMA contraction in the CUDA kernel)


def _iou_boxes(n: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Boxes with full-mantissa corners (where a contracted a*b+c rounds differently), plus
    degenerate, inverted, NaN and infinite ones."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 1000
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 300
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[::17, 2:] = boxes[::17, :2]  # zero area
    boxes[5::19] = boxes[5::19, [2, 3, 0, 1]]  # inverted
    boxes[7::23, 1] = float("nan")
    boxes[11::29, 2] = float("inf")
    return boxes.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_box_iou_bit_identical_to_cpu(dtype):
    _require_cuda_kernel("box_iou")
    gen = torch.Generator().manual_seed(7)
    a, b = _iou_boxes(700, gen, dtype), _iou_boxes(900, gen, dtype)
    b[:50] = a[:50]  # identical pairs: IoU exactly 1
    with ops.use_backend("cpp"):
        want = ops.box_iou(a, b)
    with ops.use_backend("cuda"):
        got = ops.box_iou(a.cuda(), b.cuda()).cpu()
    assert got.dtype == want.dtype == dtype
    same = (got == want) | (got.isnan() & want.isnan())
    assert bool(same.all()), f"{int((~same).sum())} of {same.numel()} IoUs differ from the CPU kernel"


def test_cuda_postprocess_max_det_over_shared_memory_is_one_line_error():
    """max_det beyond what the device's opt-in shared memory holds: one line that says the limit."""
    _require_cuda_kernel("postprocess")
    pred = random_pred(1, 80, 500, torch.Generator().manual_seed(3)).cuda()
    optin = torch.cuda.get_device_properties(pred.device).shared_memory_per_block_optin
    too_many = optin // 24 + 1  # a kept box takes 24 bytes (DevBox: 5 floats and an int)
    with pytest.raises(RuntimeError, match=r"max_det=\d+ needs \d+ bytes of shared memory") as info:
        torch.ops.yolov9k.postprocess(pred, 0.001, 0.7, too_many, 30000, False, False, None)
    first = str(info.value).strip().splitlines()[0]
    room = int(first.split("use max_det <= ")[1].split()[0])
    assert 0 < room < too_many
    dets, counts = torch.ops.yolov9k.postprocess(pred, 0.001, 0.7, room, 30000, False, False, None)
    assert dets.shape == (1, room, 6) and int(counts[0]) <= room


def test_cuda_concat_conv_fp64_runs_the_plain_conv():
    """fp64 never launches the concat GEMM (its tiles do not fit sm_86 / sm_89 shared memory)."""
    from yolov9k.kernels import concat_conv1x1 as cc

    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, c, 9, 7, generator=g, dtype=torch.float64).cuda() for c in (16, 8, 24)]
    weight = torch.randn(32, 48, 1, 1, generator=g, dtype=torch.float64).cuda()
    bias = torch.randn(32, generator=g, dtype=torch.float64).cuda()
    got = cc.concat_conv1x1_silu_impl(inputs, weight, bias)
    want = torch.nn.functional.silu(torch.nn.functional.conv2d(torch.cat(inputs, 1), weight, bias))
    assert got.dtype == torch.float64 and torch.equal(got, want)
