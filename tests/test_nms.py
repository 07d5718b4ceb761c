"""NMS and post-processing: official fixture parity, an independent naive oracle, C++ vs reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import single_thread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolov9k import ops
from yolov9k.ops import _dispatch
from yolov9k.ops.nms import (
    batched_nms,
    batched_nms_reference,
    postprocess,
    postprocess_fixed,
    postprocess_reference,
)


def reference(pred: torch.Tensor, *args, **kwargs) -> list[torch.Tensor]:
    with single_thread():
        return postprocess_reference(pred, *args, **kwargs)


def require_extension() -> None:
    if not ops.extension_loaded():
        pytest.fail("yolov9k._C is not built; CI must build it")


@pytest.fixture(scope="module")
def nms_fixture(fixtures_dir):
    return torch.load(fixtures_dir / "nms_fixture.pt", weights_only=True)


# --------------------------------------------------------------------------------------------------
# Independent oracle: the textbook O(n^2) loop in plain Python floats
# --------------------------------------------------------------------------------------------------


def naive_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, thr: float) -> list[int]:
    """Greedy NMS by definition: visit boxes best first, keep one unless a kept box of its class
    overlaps it by IoU > thr. float32 arithmetic emulated by rounding through a float32 tensor."""
    b = boxes.float().tolist()
    s = scores.float().tolist()
    g = idxs.tolist()

    def f32(v: float) -> float:
        return torch.tensor(v, dtype=torch.float32).item()

    def iou(p, q) -> float:
        w = max(f32(min(p[2], q[2]) - max(p[0], q[0])), 0.0)
        h = max(f32(min(p[3], q[3]) - max(p[1], q[1])), 0.0)
        inter = f32(w * h)
        union = f32(f32(f32(p[2] - p[0]) * f32(p[3] - p[1])) + f32(f32(q[2] - q[0]) * f32(q[3] - q[1])))
        union = f32(union - inter)
        return f32(inter / union) if union > 0 else 0.0

    order = sorted((i for i in range(len(s)) if s[i] == s[i]), key=lambda i: (-s[i], i))
    keep: list[int] = []
    for i in order:
        if all(g[k] != g[i] or not iou(b[k], b[i]) > thr for k in keep):
            keep.append(i)
    return keep


def random_boxes(n: int, gen: torch.Generator, scale: float = 200.0, clusters: int = 5) -> torch.Tensor:
    """Boxes around a few centres, so that many overlap."""
    centres = torch.rand(clusters, 2, generator=gen) * scale
    c = centres[torch.randint(clusters, (n,), generator=gen)] + torch.randn(n, 2, generator=gen) * scale / 30
    wh = (torch.rand(n, 2, generator=gen) + 0.2) * scale / 6
    return torch.cat([c - wh / 2, c + wh / 2], 1)


def random_pred(batch: int, nc: int, anchors: int, gen: torch.Generator, objects: int = 15) -> torch.Tensor:
    """(B, 4 + nc, A) model-like output: clusters of overlapping boxes with high scores over a
    background of low scores."""
    xy = torch.rand(batch, 2, anchors, generator=gen) * 640
    wh = torch.rand(batch, 2, anchors, generator=gen) * 60 + 4
    scores = torch.rand(batch, nc, anchors, generator=gen) ** 8 * 0.05
    for b in range(batch):
        for _ in range(objects):
            a = torch.randint(anchors, (8,), generator=gen)
            centre, size = torch.rand(2, 1, generator=gen) * 640, torch.rand(2, 1, generator=gen) * 150 + 10
            xy[b, :, a] = centre + torch.randn(2, 8, generator=gen) * 4
            wh[b, :, a] = size * (1 + torch.randn(2, 8, generator=gen) * 0.05)
            cls = torch.randint(nc, (2,), generator=gen)
            scores[b, cls[0], a] = torch.rand(8, generator=gen) * 0.6 + 0.3
            scores[b, cls[1], a] = torch.rand(8, generator=gen) * 0.4
    return torch.cat([xy, wh, scores], 1)


def assert_same_dets(got: list[torch.Tensor], expected: list[torch.Tensor], what: str) -> None:
    assert len(got) == len(expected), f"{what}: {len(got)} images vs {len(expected)}"
    for b, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape, f"{what} image {b}: {tuple(g.shape)} detections vs {tuple(e.shape)}"
        same = (g == e) | (g.isnan() & e.isnan())
        if not same.all():
            bad = (~same).any(1).nonzero().flatten()
            raise AssertionError(
                f"{what} image {b}: rows {bad[:10].tolist()} differ, first: {g[bad[0]]} vs {e[bad[0]]}"
            )


# --------------------------------------------------------------------------------------------------
# Official fixture
# --------------------------------------------------------------------------------------------------

SETTING_NAMES = [
    "val_conf0.001_iou0.7_multilabel",
    "conf0.001_iou0.7_single",
    "detect_conf0.25_iou0.45_single",
    "conf0.25_iou0.45_multilabel",
]


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("name", SETTING_NAMES)
def test_fixture_parity(nms_fixture, name, backend):
    if backend == "cpp":
        require_extension()
    s = next(s for s in nms_fixture["settings"] if s["name"] == name)
    kwargs = dict(
        max_det=s["max_det"], multi_label=s["multi_label"], agnostic=s["agnostic"], classes=s["classes"]
    )
    with ops.use_backend(backend), single_thread():
        got = postprocess(nms_fixture["synthetic_pred"], s["conf_thres"], s["iou_thres"], **kwargs)
    assert_same_dets(got, nms_fixture["synthetic_outputs"][name], f"{name} [{backend}]")
    if nms_fixture["yolov9t_pred"] is not None:  # the fixture stores only the outputs (all empty)
        with ops.use_backend(backend):
            got = postprocess(nms_fixture["yolov9t_pred"], s["conf_thres"], s["iou_thres"], **kwargs)
        assert_same_dets(got, nms_fixture["yolov9t_outputs"][name], f"yolov9t {name} [{backend}]")


def test_fixture_independent_of_anchor_order(nms_fixture):
    """Shuffling anchors changes only tie-breaking, which this data has none of."""
    require_extension()
    pred = nms_fixture["synthetic_pred"]
    perm = torch.randperm(pred.shape[2], generator=torch.Generator().manual_seed(0))
    got = postprocess(pred[:, :, perm], 0.001, 0.7, multi_label=True)
    assert_same_dets(got, nms_fixture["synthetic_outputs"][SETTING_NAMES[0]], "permuted anchors")


# --------------------------------------------------------------------------------------------------
# batched_nms: oracle and C++ vs reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.op_parity("batched_nms")
def test_batched_nms_matches_naive_oracle(seed, backend):
    if backend == "cpp":
        require_extension()
    gen = torch.Generator().manual_seed(seed)
    n = 60
    boxes = random_boxes(n, gen)
    scores = torch.rand(n, generator=gen)
    scores[::7] = scores[1]  # ties
    idxs = torch.randint(3, (n,), generator=gen)
    thr = [0.3, 0.5, 0.6, 0.7, 0.0, 1.0][seed]
    expected = naive_nms(boxes, scores, idxs, thr)
    with ops.use_backend(backend):
        got = batched_nms(boxes, scores, idxs, thr)
    assert got.dtype == torch.int64
    assert got.tolist() == expected


def test_naive_oracle_detects_a_wrong_answer():
    """The oracle itself must be able to disagree (a chain a-b-c: b is suppressed, c survives)."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    idxs = torch.zeros(3, dtype=torch.int64)
    assert naive_nms(boxes, scores, idxs, 0.75) == [0, 2]
    assert naive_nms(boxes, scores, idxs, 0.85) == [0, 1, 2]
    assert batched_nms(boxes, scores, idxs, 0.75).tolist() == [0, 2]


CASES = {
    "empty": (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)),
    "one": (torch.tensor([[1.0, 2, 3, 4]]), torch.tensor([0.5]), torch.tensor([0])),
    "identical": (
        torch.tensor([[1.0, 2, 30, 40]]).repeat(9, 1),
        torch.full((9,), 0.5),
        torch.zeros(9, dtype=torch.int64),
    ),
    "zero_area": (
        torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]]),
        torch.tensor([0.9, 0.8, 0.7]),
        torch.zeros(3, dtype=torch.int64),
    ),
    "inf_boxes": (
        torch.tensor(
            [[0.0, 0, float("inf"), 10], [0, 0, float("inf"), 10], [0, 0, 5, 5], [-float("inf"), 0, 5, 5]]
        ),
        torch.tensor([0.9, 0.8, 0.7, 0.6]),
        torch.zeros(4, dtype=torch.int64),
    ),
    "nan_scores": (
        torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]]),
        torch.tensor([float("nan"), 0.5, float("nan")]),
        torch.zeros(3, dtype=torch.int64),
    ),
    "nan_box": (
        torch.tensor([[0.0, 0, float("nan"), 10], [0, 0, 10, 10]]),
        torch.tensor([0.9, 0.8]),
        torch.zeros(2, dtype=torch.int64),
    ),
    "two_classes": (
        torch.tensor([[0.0, 0, 10, 10]]).repeat(4, 1),
        torch.tensor([0.1, 0.2, 0.3, 0.4]),
        torch.tensor([0, 1, 0, 1]),
    ),
    "negative_class_ids": (
        torch.tensor([[0.0, 0, 10, 10]]).repeat(3, 1),
        torch.tensor([0.1, 0.2, 0.3]),
        torch.tensor([-5, 2**40, -5]),
    ),
}
EXPECTED = {
    "empty": [],
    "one": [0],
    "identical": [0],
    "zero_area": [0, 1, 2],
    "inf_boxes": [0, 1, 2, 3],
    "nan_scores": [1],
    "nan_box": [0, 1],
    "two_classes": [3, 2],
    "negative_class_ids": [2, 1],
}


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_nms_edge_cases(case, backend):
    if backend == "cpp":
        require_extension()
    boxes, scores, idxs = CASES[case]
    with ops.use_backend(backend):
        got = batched_nms(boxes, scores, idxs, 0.5)
    assert got.tolist() == EXPECTED[case]
    assert got.tolist() == naive_nms(boxes, scores, idxs, 0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_batched_nms_low_precision_is_computed_in_float32(dtype):
    require_extension()
    gen = torch.Generator().manual_seed(3)
    boxes, scores = random_boxes(200, gen).to(dtype), torch.rand(200, generator=gen).to(dtype)
    idxs = torch.randint(4, (200,), generator=gen)
    expected = batched_nms_reference(boxes.float(), scores.float(), idxs, 0.5)
    with ops.use_backend("cpp"):
        got = batched_nms(boxes, scores, idxs, 0.5)
    assert got.tolist() == expected.tolist()


def test_batched_nms_max_keep_is_a_prefix():
    require_extension()
    gen = torch.Generator().manual_seed(4)
    boxes, scores = random_boxes(500, gen), torch.rand(500, generator=gen)
    idxs = torch.randint(2, (500,), generator=gen)
    full = batched_nms(boxes, scores, idxs, 0.5)
    for k in (0, 1, 7, len(full), len(full) + 5):
        assert batched_nms(boxes, scores, idxs, 0.5, max_keep=k).tolist() == full[:k].tolist()


def peak_rss_rise_mb(setup: str, call: str) -> float:
    """Peak resident-memory rise (MB) of ``call`` after ``setup``, in a fresh single-thread process.

    The kernel's peak (VmHWM) is reset just before ``call`` by writing 5 to /proc/self/clear_refs,
    so neither ``setup`` nor this process counts.
    """
    code = f"""
import json
import torch
torch.set_num_threads(1)
{setup}
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
{call}
print(json.dumps(status("VmHWM:") - before))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="ASan (.ci/sanitize.sh) inflates the resident set; the plain test run checks this bound",
)
@pytest.mark.parametrize("n_classes", [1, 80])
def test_reference_nms_memory_is_linear(n_classes):
    """The reference used to keep one tensor per kept box alive (2e4 boxes: 1.5 GB); now it must
    stay O(N): here about 35 MB with one class (IoU blocks of 32 x N), 6 MB with 80."""
    setup = f"""
from yolov9k.ops.nms import batched_nms_reference
g = torch.Generator().manual_seed(0)
n = 20_000
centres = torch.rand(400, 2, generator=g) * 4000
xy = centres[torch.randint(400, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 20
boxes = torch.cat([xy, xy + 40 + torch.rand(n, 2, generator=g) * 40], 1)
scores = torch.rand(n, generator=g)
idxs = torch.randint({n_classes}, (n,), generator=g)
"""
    call = "keep = batched_nms_reference(boxes, scores, idxs, 0.5)\nassert 5000 < len(keep) < n"
    rise = peak_rss_rise_mb(setup, call)
    assert rise < 60.0, f"reference NMS on 2e4 boxes raised peak RSS by {rise:.0f} MB"


def test_reference_nms_100k_boxes_equals_cpp():
    """1e5 boxes / 80 classes: the C++ kernel keeps a score-ordered subset, and the fallback gives
    exactly that result in seconds."""
    require_extension()
    gen = torch.Generator().manual_seed(5)
    n = 100_000
    boxes = random_boxes(n, gen, scale=4000, clusters=400)
    scores = torch.rand(n, generator=gen)
    idxs = torch.randint(80, (n,), generator=gen)
    with ops.use_backend("cpp"):
        want = batched_nms(boxes, scores, idxs, 0.5)
    assert 0 < len(want) < n
    assert torch.all(scores[want][1:] <= scores[want][:-1])
    with single_thread(), ops.use_backend("torch"):
        start = time.perf_counter()
        got = batched_nms(boxes, scores, idxs, 0.5)
        seconds = time.perf_counter() - start
    assert got.tolist() == want.tolist()
    assert seconds < 120, f"reference NMS took {seconds:.0f} s on 1e5 boxes"


@pytest.mark.parametrize(
    "args,error",
    [
        ((torch.zeros(3, 5), torch.zeros(3), torch.zeros(3, dtype=torch.int64)), ValueError),
        ((torch.zeros(3, 4), torch.zeros(2), torch.zeros(3, dtype=torch.int64)), ValueError),
        ((torch.zeros(3, 4), torch.zeros(3), torch.zeros(3)), TypeError),
        (
            (torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3), torch.zeros(3, dtype=torch.int64)),
            TypeError,
        ),
    ],
)
def test_batched_nms_bad_input(args, error):
    with pytest.raises(error):
        batched_nms(*args, 0.5)


def test_native_op_bad_input_is_a_clear_error():
    require_extension()
    with pytest.raises(RuntimeError, match="idxs must be an integer"):
        torch.ops.yolov9k.batched_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2), 0.5)
    with pytest.raises(RuntimeError, match="pred must have shape"):
        torch.ops.yolov9k.postprocess(torch.zeros(2, 4, 10), 0.1, 0.5, 300, 30000, False, False, None)
    with pytest.raises(RuntimeError, match="class_mask"):
        torch.ops.yolov9k.postprocess(
            torch.zeros(1, 6, 10), 0.1, 0.5, 300, 30000, False, False, torch.ones(3, dtype=torch.bool)
        )


# --------------------------------------------------------------------------------------------------
# postprocess: C++ vs reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nc,kwargs",
    [
        (80, dict(conf_thres=0.001, iou_thres=0.7, multi_label=True)),
        (80, dict(conf_thres=0.25, iou_thres=0.45)),
        (1, dict(conf_thres=0.01, iou_thres=0.6, multi_label=True)),
        (1, dict(conf_thres=0.01, iou_thres=0.6)),
        (80, dict(conf_thres=0.01, iou_thres=0.5, agnostic=True)),
        (80, dict(conf_thres=0.01, iou_thres=0.5, multi_label=True, agnostic=True)),
        (80, dict(conf_thres=0.001, iou_thres=0.7, multi_label=True, max_det=7)),
        (80, dict(conf_thres=0.001, iou_thres=0.7, max_nms=50)),
        (80, dict(conf_thres=0.01, iou_thres=0.5, multi_label=True, classes=[0, 3, 17, 79, 200])),
        (5, dict(conf_thres=0.0, iou_thres=0.0)),
        (5, dict(conf_thres=1.0, iou_thres=1.0)),
    ],
)
@pytest.mark.op_parity("postprocess")
def test_cpp_matches_reference(nc, kwargs):
    require_extension()
    pred = random_pred(3, nc, 400, torch.Generator().manual_seed(nc))
    expected = reference(pred, **kwargs)
    with ops.use_backend("cpp"):
        got = postprocess(pred, **kwargs)
    assert_same_dets(got, expected, str(kwargs))


def test_cpp_matches_reference_30k_candidates():
    """More candidates than max_nms: both must cut at the same 30000 best."""
    require_extension()
    gen = torch.Generator().manual_seed(6)
    pred = random_pred(1, 80, 8400, gen)
    pred[:, 4:] += 0.0001  # every pair is a candidate: 672000 > max_nms
    kwargs = dict(conf_thres=0.0001, iou_thres=0.7, multi_label=True, max_det=300)
    assert_same_dets(postprocess(pred, **kwargs), reference(pred, **kwargs), "30k")


def test_postprocess_no_candidates_and_empty_inputs():
    require_extension()
    for backend in ("torch", "cpp"):
        with ops.use_backend(backend):
            out = postprocess(torch.zeros(2, 84, 100), 0.25, 0.45)
            assert [tuple(o.shape) for o in out] == [(0, 6), (0, 6)]
            assert postprocess(torch.zeros(0, 84, 100)) == []
            assert [tuple(o.shape) for o in postprocess(torch.zeros(1, 84, 0))] == [(0, 6)]


def test_postprocess_identical_boxes_and_ties():
    """All boxes identical, all scores equal: the lowest anchor (then class) wins."""
    pred = torch.zeros(1, 4 + 3, 50)
    pred[0, :4] = torch.tensor([50.0, 50, 20, 20])[:, None]
    pred[0, 4:] = 0.5
    for backend in ["torch"] + (["cpp"] if ops.extension_loaded() else []):
        with ops.use_backend(backend):
            out = postprocess(pred, 0.25, 0.45, multi_label=True)[0]
            assert out[:, 5].tolist() == [0.0, 1.0, 2.0]
            out = postprocess(pred, 0.25, 0.45, multi_label=True, agnostic=True)[0]
            assert out[:, 4:].tolist() == [[0.5, 0.0]]


def test_postprocess_nan_and_inf():
    """NaN scores drop their anchor (as the official amax does); NaN/inf boxes never suppress."""
    require_extension()
    pred = random_pred(2, 10, 300, torch.Generator().manual_seed(7))
    pred[0, 4 + 3, :40] = float("nan")
    pred[0, 0, 40:60] = float("nan")
    pred[1, 2, :30] = float("inf")
    pred[1, 4 + 2, 100] = float("inf")
    for kwargs in (dict(multi_label=True), dict(multi_label=False)):
        expected = reference(pred, 0.01, 0.5, **kwargs)
        with ops.use_backend("cpp"):
            got = postprocess(pred, 0.01, 0.5, **kwargs)
        assert_same_dets(got, expected, f"nan/inf {kwargs}")
        assert not torch.isnan(got[0][:, 4]).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_postprocess_half_input(dtype):
    require_extension()
    pred = random_pred(2, 20, 500, torch.Generator().manual_seed(8)).to(dtype)
    expected = reference(pred.float(), 0.01, 0.6, multi_label=True)
    with ops.use_backend("cpp"):
        got = postprocess(pred, 0.01, 0.6, multi_label=True)
    assert got[0].dtype == torch.float32
    assert_same_dets(got, expected, str(dtype))


def test_postprocess_tuple_input_and_non_contiguous():
    require_extension()
    pred = random_pred(2, 8, 200, torch.Generator().manual_seed(9))
    expected = reference(pred, 0.05, 0.5)
    nc_view = pred.transpose(1, 2).contiguous().transpose(1, 2)
    assert not nc_view.is_contiguous()
    assert_same_dets(postprocess((pred, "loss-stuff"), 0.05, 0.5), expected, "tuple")
    assert_same_dets(postprocess(nc_view, 0.05, 0.5), expected, "non-contiguous")


def test_postprocess_fixed_layout():
    require_extension()
    pred = random_pred(3, 8, 200, torch.Generator().manual_seed(10))
    dets, counts = postprocess_fixed(pred, 0.05, 0.5, max_det=20)
    assert dets.shape == (3, 20, 6) and counts.dtype == torch.int64 and counts.shape == (3,)
    expected = reference(pred, 0.05, 0.5, max_det=20)
    for b in range(3):
        assert counts[b] == len(expected[b])
        assert torch.equal(dets[b, : counts[b]], expected[b])
        assert torch.all(dets[b, counts[b] :] == 0)


@pytest.mark.parametrize(
    "pred,kwargs,error",
    [
        (torch.zeros(2, 84), {}, ValueError),
        (torch.zeros(2, 4, 10), {}, ValueError),
        (torch.zeros(2, 84, 10, dtype=torch.int64), {}, TypeError),
        (torch.zeros(2, 84, 10), dict(conf_thres=1.5), ValueError),
        (torch.zeros(2, 84, 10), dict(iou_thres=-0.1), ValueError),
        (torch.zeros(2, 84, 10), dict(max_det=0), ValueError),
        ([], {}, ValueError),
        ("pred", {}, TypeError),
    ],
)
def test_postprocess_bad_input(pred, kwargs, error):
    with pytest.raises(error):
        postprocess(pred, **kwargs)


# --------------------------------------------------------------------------------------------------
# Fuzzing (hypothesis): C++ vs reference on random shapes and values
# --------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(0, 3),
    nc=st.integers(1, 6),
    anchors=st.integers(0, 80),
    seed=st.integers(0, 2**31 - 1),
    conf=st.sampled_from([0.0, 0.001, 0.3, 0.9]),
    iou=st.sampled_from([0.0, 0.3, 0.45, 0.6, 0.7, 1.0]),
    multi_label=st.booleans(),
    agnostic=st.booleans(),
    max_det=st.integers(1, 30),
    max_nms=st.integers(1, 100),
    nan_frac=st.sampled_from([0.0, 0.1]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
)
def test_fuzz_postprocess_cpp_vs_reference(
    batch, nc, anchors, seed, conf, iou, multi_label, agnostic, max_det, max_nms, nan_frac, dtype
):
    require_extension()
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(batch, 4 + nc, anchors, generator=gen)
    pred[:, :2] *= 100
    pred[:, 2:4] *= 40
    pred[:, 4:] = torch.round(pred[:, 4:] * 8) / 8  # many exact score ties
    pred[torch.rand(pred.shape, generator=gen) < nan_frac] = float("nan")
    pred = pred.to(dtype)
    kwargs = dict(multi_label=multi_label, agnostic=agnostic, max_det=max_det, max_nms=max_nms)
    expected = reference(pred, conf, iou, **kwargs)
    with ops.use_backend("cpp"):
        got = postprocess(pred, conf, iou, **kwargs)
    assert_same_dets(got, expected, "fuzz")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), groups=st.integers(1, 4), seed=st.integers(0, 2**31 - 1), iou=st.floats(0, 1))
def test_fuzz_batched_nms_cpp_vs_oracle(n, groups, seed, iou):
    require_extension()
    gen = torch.Generator().manual_seed(seed)
    boxes = torch.round(random_boxes(n, gen, scale=50, clusters=3))  # integer corners: exact ties in IoU
    scores = torch.round(torch.rand(n, generator=gen) * 4) / 4
    idxs = torch.randint(groups, (n,), generator=gen)
    with ops.use_backend("cpp"):
        got = batched_nms(boxes, scores, idxs, iou)
    assert got.tolist() == naive_nms(boxes, scores, idxs, iou)


# --------------------------------------------------------------------------------------------------
# Registration and dispatch
# --------------------------------------------------------------------------------------------------


def test_opcheck_registrations():
    require_extension()
    gen = torch.Generator().manual_seed(11)
    pred = random_pred(2, 6, 100, gen)
    mask = torch.tensor([True, False, True, True, False, True])
    for args in [
        (pred, 0.05, 0.5, 20, 30000, True, False, None),
        (pred, 0.05, 0.5, 20, 100, False, True, mask),
    ]:
        torch.library.opcheck(
            torch.ops.yolov9k.postprocess.default, args, test_utils=("test_schema", "test_faketensor")
        )
    boxes, scores = random_boxes(40, gen), torch.rand(40, generator=gen)
    idxs = torch.randint(3, (40,), generator=gen)
    torch.library.opcheck(
        torch.ops.yolov9k.batched_nms.default,
        (boxes, scores, idxs, 0.5, -1),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_dispatch_reports_backends():
    expected = "cpp" if ops.extension_loaded() else "torch"
    assert _dispatch.backends("cpu")["postprocess"] == expected
    assert _dispatch.backends("cpu")["batched_nms"] == expected
    with ops.use_backend("cuda"), pytest.raises(ops.BackendUnavailableError):
        postprocess(torch.zeros(1, 6, 10))
