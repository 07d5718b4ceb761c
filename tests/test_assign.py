"""Task-aligned assigner: exact parity with the official fixture, an independent loop-based
implementation on random inputs, properties, edge cases and input checks."""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import assert_close_verbose
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolov9k.ops import _dispatch, use_backend
from yolov9k.ops.assign import assign
from yolov9k.ops.boxes import bbox_iou

# the module (``yolov9k.ops.assign`` may be shadowed by the function of the same name in yolov9k.ops)
assign_mod = importlib.import_module("yolov9k.ops.assign")


def _cpu_backends() -> list[str]:
    out = ["torch"]
    with use_backend("cpp"):
        try:
            _dispatch.select("assign", "cpu")
            out.append("cpp")
        except _dispatch.BackendUnavailableError:
            pass
    return out


@pytest.fixture(autouse=True, params=_cpu_backends())
def backend(request):
    """Every test runs on the reference and on each native CPU backend that is built."""
    with use_backend(request.param):
        yield request.param


# ---------------------------------------------------------------------------------------------
# Official fixture


@pytest.fixture(scope="module")
def tal(fixtures_dir):
    return torch.load(fixtures_dir / "tal_fixture.pt", weights_only=True)


def _fixture_args(tal, dtype=torch.float32):
    i = tal["inputs"]
    return (
        i["pd_scores_fp16"].to(dtype),
        i["pd_bboxes"],
        i["anc_points"],
        i["gt_labels"],
        i["gt_bboxes"],
        i["mask_gt"],
    )


# The float32 powers s**alpha and iou**beta come from the CPU's SIMD pow (SLEEF), whose last bit
# differs between machines: on some x86-64 CPUs ~15% of the fixture's metrics differ from this
# machine's by one ulp (the fixture's CIoUs and every discrete output still match exactly).
# So the fixture is checked in two steps: (1) the assignment (fg set, gt indices, labels, boxes)
# exactly; the scores exactly equal to the official formula evaluated *on this machine* from the
# fixture's assignment; (2) that formula's values equal to the fixture's bits up to the platform's
# pow rounding (exactly equal where the platform's pow is the fixture's).
POW_ULP_RTOL = 2.5e-7  # 2 float32 ulps (2 * 2**-23 relative, rounded up)


def _official_row_values_here(tal) -> torch.Tensor:
    """(B, A) soft-target values of the official algorithm computed with this machine's torch, from
    the fixture's own assignment (dense official shapes and operation order)."""
    i, o, s = tal["inputs"], tal["outputs"], tal["settings"]
    gt, pd = i["gt_bboxes"], i["pd_bboxes"]
    bsz, m = gt.shape[:2]
    overlaps = bbox_iou(gt[:, :, None], pd[:, None], xywh=False, CIoU=True)[..., 0].clamp(0)
    scores = i["pd_scores_fp16"].float()
    labels = i["gt_labels"][..., 0].long()
    bbox_scores = torch.stack([scores[b][:, labels[b]].T for b in range(bsz)])  # (B, M, A)
    metric = bbox_scores.pow(s["alpha"]) * overlaps.pow(s["beta"])
    gt_idx = tal["intermediates"]["target_gt_idx"]
    mask_pos = torch.nn.functional.one_hot(gt_idx, m).permute(0, 2, 1) * o["fg_mask"][:, None]
    metric = metric * mask_pos
    pos_metric = metric.amax(-1, keepdim=True)
    pos_overlaps = (overlaps * mask_pos).amax(-1, keepdim=True)
    return (metric * pos_overlaps / (pos_metric + s["eps"])).amax(-2)


@pytest.fixture(scope="module")
def row_values_here(tal) -> torch.Tensor:
    here = _official_row_values_here(tal)
    fixture = tal["outputs"]["target_scores_row_value"]
    # (2) the formula as evaluated here reproduces the official output up to the platform's pow
    assert_close_verbose(here, fixture, rtol=POW_ULP_RTOL, what="official formula here vs fixture")
    return here


def _check_against_fixture(out, tal, row_values_here):
    labels, bboxes, scores, fg, gt_idx = out
    o = tal["outputs"]
    assert torch.equal(fg, o["fg_mask"]), f"fg differs at {int((fg != o['fg_mask']).sum())} anchors"
    assert torch.equal(gt_idx, tal["intermediates"]["target_gt_idx"])
    assert torch.equal(labels, o["target_labels"])
    assert torch.equal(bboxes, o["target_bboxes"])
    one_hot = torch.nn.functional.one_hot(o["target_labels"], 80)
    expected = one_hot * o["fg_mask"][..., None] * row_values_here[..., None]
    assert_close_verbose(scores, expected, what="target_scores")  # exact (rtol = atol = 0)


def test_fixture_exact(tal, row_values_here):
    s = tal["settings"]
    out = assign(*_fixture_args(tal), topk=s["topk"], alpha=s["alpha"], beta=s["beta"], eps=s["eps"])
    _check_against_fixture(out, tal, row_values_here)
    assert out[2].dtype == torch.float32 and out[4].dtype == torch.int64
    assert float(out[2].sum()) == pytest.approx(tal["summary"]["target_scores_sum"], rel=1e-6)


def test_fixture_fp16_scores_exact(tal, row_values_here):
    """fp16 scores are computed in float32: same result as the float32 copy."""
    _check_against_fixture(assign(*_fixture_args(tal, torch.float16)), tal, row_values_here)


def test_fixture_chunked_equals_whole(tal, row_values_here, monkeypatch, backend):
    """Chunking over images (one image per chunk here) does not change any bit."""
    if backend != "torch":
        pytest.skip("chunking is a property of the reference")
    monkeypatch.setattr(assign_mod, "_CHUNK_ELEMS_CPU", 1)
    _check_against_fixture(assign(*_fixture_args(tal)), tal, row_values_here)


# ---------------------------------------------------------------------------------------------
# Independent implementation: per-gt Python loops, sorting by (metric desc, index asc).


def naive_assign(scores, pd, anc, labels, gt, mask, topk=10, alpha=0.5, beta=6.0, eps=1e-9):
    """Loop version of the official algorithm with our tie rule (slow; small inputs only)."""
    bsz, n_anchor, n_cls = scores.shape
    m = gt.shape[1]
    scores = scores.float()
    labels_l = labels[..., 0].long()
    gt_idx = torch.zeros(bsz, n_anchor, dtype=torch.long)
    fg = torch.zeros(bsz, n_anchor, dtype=torch.bool)
    value = torch.zeros(bsz, n_anchor)
    if m == 0:
        full = torch.full((bsz, n_anchor), n_cls, dtype=torch.long)
        return full, torch.zeros(bsz, n_anchor, 4), torch.zeros(bsz, n_anchor, n_cls), fg, gt_idx
    # Dense metric of the whole batch at once: the same tensor shapes as the official code, so the
    # transcendental functions see the same vectorisation and give the same bits.
    ov = bbox_iou(gt[:, :, None], pd[:, None], xywh=False, CIoU=True)[..., 0].clamp(0)
    s = torch.stack([scores[b][:, labels_l[b]].T for b in range(bsz)])
    metric = s.pow(alpha) * ov.pow(beta)
    for b in range(bsz):
        claims: list[list[int]] = [[] for _ in range(n_anchor)]
        for j in range(m):
            if not bool(mask[b, j, 0]):
                continue
            x1, y1, x2, y2 = gt[b, j].tolist()
            inside = [
                a
                for a in range(n_anchor)
                if min(
                    float(anc[a, 0] - gt[b, j, 0]),
                    float(anc[a, 1] - gt[b, j, 1]),
                    float(gt[b, j, 2] - anc[a, 0]),
                    float(gt[b, j, 3] - anc[a, 1]),
                )
                > eps
            ]
            for a in sorted(inside, key=lambda a: (-float(metric[b, j, a]), a))[:topk]:
                claims[a].append(j)
        for a in range(n_anchor):
            if claims[a]:
                fg[b, a] = True
                gt_idx[b, a] = claims[a][0] if len(claims[a]) == 1 else int(ov[b, :, a].argmax())
        for j in range(m):
            sel = fg[b] & (gt_idx[b] == j)
            if sel.any():
                best_m, best_o = metric[b, j][sel].max(), ov[b, j][sel].max()
                value[b, sel] = (metric[b, j][sel] * best_o / (best_m + eps)).to(value.dtype)
    tl = labels_l.gather(1, gt_idx)
    tb = torch.stack([gt[b][gt_idx[b]] for b in range(bsz)])
    ts = torch.nn.functional.one_hot(tl, n_cls).float() * value[..., None]
    return tl, tb, ts, fg, gt_idx


@st.composite
def assign_inputs(draw, disjoint: bool = False):
    """Small random problems: 1-3 images, a 2-level anchor grid over a 64 px image, 0-5 gt slots."""
    bsz = draw(st.integers(1, 3))
    m = draw(st.integers(0, 5))
    n_cls = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    grids = [(8, 8), (16, 4)]  # stride, cells per side
    anc = torch.cat(
        [
            torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="xy"), -1).reshape(-1, 2)
            * s
            + s / 2
            for s, n in grids
        ]
    ).float()
    a = anc.shape[0]
    scores = torch.rand(bsz, a, n_cls, generator=g)
    if draw(st.booleans()):
        scores = scores.half().float()
    ctr = anc[None] + (torch.rand(bsz, a, 2, generator=g) - 0.5) * 8
    half = 2 + torch.rand(bsz, a, 2, generator=g) * 20
    pd = torch.cat([ctr - half, ctr + half], -1)
    if disjoint:  # one gt per 32x32 quadrant: no anchor is inside two gts
        corner = torch.tensor([[0, 0], [32, 0], [0, 32], [32, 32], [0, 0]]).float()[:m]
        wh = 4 + torch.rand(bsz, m, 2, generator=g) * 27
        xy = corner + torch.rand(bsz, m, 2, generator=g) * (31 - wh)
        m = min(m, 4)
        xy, wh = xy[:, :m], wh[:, :m]
    else:
        wh = 1 + torch.rand(bsz, m, 2, generator=g) * 50
        xy = torch.rand(bsz, m, 2, generator=g) * (64 - wh)
    gt = torch.cat([xy, xy + wh], -1)
    n_valid = torch.randint(0, m + 1, (bsz, 1), generator=g)
    mask = (torch.arange(m)[None] < n_valid).float()[..., None]
    labels = torch.randint(0, n_cls, (bsz, m, 1), generator=g).float()
    topk = draw(st.sampled_from([1, 3, 10]))
    return (scores, pd, anc, labels * mask, gt * mask, mask), topk


HYP = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@HYP
@given(assign_inputs())
def test_matches_loop_implementation(case):
    args, topk = case
    got = assign(*args, topk=topk)
    want = naive_assign(*args, topk=topk)
    for name, g, w in zip(("labels", "bboxes", "scores", "fg", "gt_idx"), got, want):
        if name == "labels" and args[4].shape[1] == 0:
            assert torch.equal(g, w)
        assert_close_verbose(g.float(), w.float(), rtol=1e-6, atol=1e-7, what=name)


def _inside(anc, boxes, eps=1e-9):
    """(A,) anchor centres inside (A, 4) boxes (row by row)."""
    return (
        (anc[:, 0] - boxes[:, 0] > eps)
        & (anc[:, 1] - boxes[:, 1] > eps)
        & (boxes[:, 2] - anc[:, 0] > eps)
        & (boxes[:, 3] - anc[:, 1] > eps)
    )


@HYP
@given(assign_inputs())
def test_properties(case):
    (scores, pd, anc, labels, gt, mask), topk = case
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels, gt, mask, topk=topk)
    assert ((ts >= 0) & (ts <= 1)).all()
    assert (ts[~fg] == 0).all()
    assert ((ts > 0).sum(-1) <= 1).all()
    n_valid = mask[..., 0].sum(1)
    assert (fg.sum(1) <= topk * n_valid).all()
    for b in range(fg.shape[0]):
        valid_boxes = gt[b][mask[b, :, 0].bool()]
        for a in torch.nonzero(fg[b])[:, 0].tolist():
            # official rule: a fg anchor lies inside some gt (its own, unless several gts claimed it)
            assert _inside(anc[a : a + 1].expand(len(valid_boxes), 2), valid_boxes).any()
            assert bool(mask[b, gi[b, a], 0])


@HYP
@given(assign_inputs(disjoint=True))
def test_properties_disjoint_gts(case):
    """With non-overlapping gts every fg anchor lies in its own gt, and a gt has <= topk anchors."""
    (scores, pd, anc, labels, gt, mask), topk = case
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels, gt, mask, topk=topk)
    for b in range(fg.shape[0]):
        a = torch.nonzero(fg[b])[:, 0]
        assert _inside(anc[a], gt[b, gi[b, a]]).all()
        assert torch.equal(tb[b, a], gt[b, gi[b, a]])
        assert torch.equal(tl[b, a], labels[b, gi[b, a], 0].long())
        if len(a):
            assert torch.bincount(gi[b, a]).max() <= topk


# ---------------------------------------------------------------------------------------------
# Edge cases


def _grid(n=8, stride=8.0):
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2).float() * stride + stride / 2


def _simple(bsz=2, m=3, n_cls=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    anc = _grid()
    a = anc.shape[0]
    scores = torch.rand(bsz, a, n_cls, generator=g)
    pd = torch.cat([anc - 6, anc + 6], -1).expand(bsz, a, 4).clone()
    gt = torch.tensor([[4.0, 4.0, 40.0, 36.0], [20.0, 10.0, 60.0, 60.0], [0.0, 30.0, 30.0, 64.0]])
    gt = gt[:m].expand(bsz, m, 4).clone()
    labels = torch.randint(0, n_cls, (bsz, m, 1), generator=g).float()
    mask = torch.ones(bsz, m, 1)
    return scores, pd, anc, labels, gt, mask


def test_no_gt_slots():
    scores, pd, anc, _, _, _ = _simple()
    empty = torch.zeros(2, 0, 4)
    tl, tb, ts, fg, gi = assign(scores, pd, anc, torch.zeros(2, 0, 1), empty, torch.zeros(2, 0, 1))
    assert not fg.any() and (ts == 0).all() and (tb == 0).all() and (gi == 0).all()
    assert (tl == scores.shape[2]).all()  # official background index when M == 0


def test_all_padding():
    scores, pd, anc, labels, gt, mask = _simple()
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels * 0, gt * 0, mask * 0)
    assert not fg.any() and (ts == 0).all() and (tb == 0).all() and (gi == 0).all() and (tl == 0).all()


def test_one_image_padding_only():
    scores, pd, anc, labels, gt, mask = _simple()
    mask[1] = 0
    gt[1] = 0
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels, gt, mask)
    assert fg[0].any() and not fg[1].any() and (ts[1] == 0).all()
    ref = assign(scores[:1], pd[:1], anc, labels[:1], gt[:1], mask[:1])
    for x, y in zip((tl, tb, ts, fg, gi), ref):
        assert torch.equal(x[:1], y)


def test_identical_gts_go_to_first():
    scores, pd, anc, labels, gt, mask = _simple(m=2)
    gt[:, 1] = gt[:, 0]
    labels[:, 1] = labels[:, 0]
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels, gt, mask, topk=5)
    assert (fg.sum(1) == 5).all()
    assert (gi[fg] == 0).all()  # both claim the same anchors; equal overlaps -> the first gt


def test_tiny_gt_without_anchor_centre_gets_nothing():
    scores, pd, anc, labels, gt, mask = _simple(m=2)
    gt[:, 1] = torch.tensor([1.0, 1.0, 3.0, 3.0])  # between anchor centres (4, 12, ...)
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels, gt, mask)
    assert not (fg & (gi == 1)).any()
    assert fg.any()


def test_fewer_inside_anchors_than_topk_takes_all_inside():
    scores, pd, anc, labels, gt, mask = _simple(m=1)
    gt[:, 0] = torch.tensor([0.0, 0.0, 16.0, 16.0])  # 4 anchor centres inside
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels, gt, mask, topk=10)
    assert (fg.sum(1) == 4).all()


def test_tie_rule_lower_anchor_index_first():
    """Equal metrics everywhere: the lowest anchor indices inside the gt win."""
    _, _, anc, labels, gt, mask = _simple(m=1)
    a = anc.shape[0]
    scores = torch.full((1, a, 5), 0.5)
    pd = torch.tensor([0.0, 0.0, 64.0, 64.0]).expand(1, a, 4).clone()
    gt, labels, mask = gt[:1], labels[:1], mask[:1]
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels, gt, mask, topk=3)
    inside = torch.nonzero(_inside(anc, gt[0, 0].expand(a, 4)))[:, 0]
    assert torch.equal(torch.nonzero(fg[0])[:, 0], inside[:3])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_scores_computed_in_float32(dtype):
    scores, pd, anc, labels, gt, mask = _simple()
    low = scores.to(dtype)
    got = assign(low, pd, anc, labels, gt, mask)
    want = assign(low.float(), pd, anc, labels, gt, mask)
    assert got[2].dtype == torch.float32
    for x, y in zip(got, want):
        assert torch.equal(x, y)


def test_bool_mask_and_int_labels():
    scores, pd, anc, labels, gt, mask = _simple()
    want = assign(scores, pd, anc, labels, gt, mask)
    got = assign(scores, pd, anc, labels.long(), gt, mask.bool())
    for x, y in zip(got, want):
        assert torch.equal(x, y)


@pytest.mark.parametrize(
    "change, err, match",
    [
        (lambda a: a.__setitem__(0, a[0][..., :2]), ValueError, "pd_scores"),
        (lambda a: a.__setitem__(1, a[1][..., :3]), ValueError, "pd_bboxes"),
        (lambda a: a.__setitem__(2, a[2][:-1]), ValueError, "anc_points"),
        (lambda a: a.__setitem__(3, a[3][:, :, 0]), ValueError, "gt_labels"),
        (lambda a: a.__setitem__(4, a[4][:1]), ValueError, "gt_bboxes"),
        (lambda a: a.__setitem__(5, a[5][:, :2]), ValueError, "mask_gt"),
        (lambda a: a.__setitem__(1, a[1].long()), TypeError, "pd_bboxes"),
        (lambda a: a.__setitem__(3, a[3] + 10), ValueError, "gt_labels"),
        (lambda a: a.__setitem__(3, a[3] + 0.5), ValueError, "gt_labels"),
    ],
)
def test_bad_input(change, err, match):
    args = list(_simple())
    change(args)
    with pytest.raises(err, match=match):
        assign(*args)


def test_bad_topk():
    with pytest.raises(ValueError, match="topk"):
        assign(*_simple(), topk=0)


# ---------------------------------------------------------------------------------------------
# Non-finite inputs (the rule of the yolov9k.ops.assign module docstring) and float64 boxes

NAN, INF = float("nan"), float("inf")


def _corrupt(kind: str, scores, pd, anchors: torch.Tensor, label: torch.Tensor) -> None:
    """Make the (gt, anchor) pairs of ``anchors`` unassignable in image 0 and 1, in place."""
    if kind == "nan_box":
        pd[:, anchors, 2] = NAN
    elif kind == "inf_box":
        pd[:, anchors, 0] = -INF
    elif kind == "nan_score":
        scores[:, anchors, label] = NAN
    elif kind == "inf_score":
        scores[:, anchors, label] = INF
    else:  # a negative score: its square root (alpha = 0.5) is NaN
        scores[:, anchors, label] = -0.25


@pytest.mark.parametrize("kind", ["nan_box", "inf_box", "nan_score", "inf_score", "negative_score"])
def test_unassignable_predictions_are_never_positive(kind):
    """12 anchor centres lie in the gt; its 4 best are corrupted: the next 5 are taken instead."""
    scores, pd, anc, labels, gt, mask = _simple(m=1)
    labels[:] = 2
    clean = assign(scores, pd, anc, labels, gt, mask, topk=9)
    best4 = torch.nonzero(clean[3][0])[:4, 0]
    _corrupt(kind, scores, pd, best4, torch.tensor(2))
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels, gt, mask, topk=5)
    assert (fg.sum(1) == 5).all()
    assert not fg[:, best4].any()
    assert torch.isfinite(ts).all() and (ts >= 0).all()
    assert (ts.sum(-1) > 0).sum() == 10


def test_inf_gt_box_gets_no_anchor():
    """An infinite gt edge still contains anchor centres, but its CIoUs are NaN: no positives."""
    scores, pd, anc, labels, gt, mask = _simple()
    gt[:, 1, 2] = INF
    tl, tb, ts, fg, gi = assign(scores, pd, anc, labels, gt, mask)
    assert not (fg & (gi == 1)).any() and (fg & (gi == 0)).any()
    assert torch.isfinite(ts).all()


def _contest(scores, pd, gt0_box: torch.Tensor):
    """Slot 0 is padding with ``gt0_box``; slots 1 and 2 hold the same real gt, so the 10 anchors
    they both take are contested among all three slots."""
    _, _, anc, _, _, _ = _simple()
    gt = torch.stack([gt0_box, torch.tensor([16.0, 16, 48, 48]), torch.tensor([16.0, 16, 48, 48])])
    gt = gt.expand(2, 3, 4).clone()
    labels = torch.tensor([1.0, 0.0, 0.0]).expand(2, 3)[..., None].clone()
    mask = torch.tensor([0.0, 1.0, 1.0]).expand(2, 3)[..., None].clone()
    return assign(scores, pd, anc, labels, gt, mask)


def test_nan_gt_box_loses_contested_anchors():
    """A NaN box (here a padding slot) never wins an anchor claimed by several gts."""
    scores, pd, _, _, _, _ = _simple()
    tl, tb, ts, fg, gi = _contest(scores, pd, torch.full((4,), NAN))
    assert (fg.sum(1) == 10).all() and (gi[fg] == 1).all()
    assert torch.isfinite(ts).all() and torch.isfinite(tb[fg]).all()


def test_contested_anchor_whose_new_gt_score_is_nan_is_background():
    """Anchor 27 (centre 28, 28) is contested; padding slot 0 has its exact predicted box, so it wins
    the anchor (official quirk), but the anchor's score of slot 0's class is NaN: background."""
    scores, pd, _, _, _, _ = _simple()
    scores[:, 27, 1] = NAN
    tl, tb, ts, fg, gi = _contest(scores, pd, pd[0, 27].clone())
    assert not fg[:, 27].any() and (gi[:, 27] == 0).all() and (ts[:, 27] == 0).all()
    assert (fg.sum(1) == 9).all() and torch.isfinite(ts).all()
    scores[:, 27, 1] = 0.5  # control: with a finite score the padding slot takes the anchor
    tl, tb, ts, fg, gi = _contest(scores, pd, pd[0, 27].clone())
    assert fg[:, 27].all() and (gi[:, 27] == 0).all()


@pytest.mark.parametrize("which", ["pd_bboxes", "gt_bboxes", "all"])
def test_float64_boxes(which):
    """float64 boxes work on every backend: float64 CIoU and metric (target_bboxes float64 when
    pd_bboxes is), the same assignment as the loop implementation."""
    scores, pd, anc, labels, gt, mask = _simple(m=3, seed=4)
    if which in ("pd_bboxes", "all"):
        pd = pd.double() + 1e-3
    if which in ("gt_bboxes", "all"):
        gt = gt.double()
    if which == "all":
        scores, anc = scores.double(), anc.double()
    got = assign(scores, pd, anc, labels, gt, mask)
    want = naive_assign(scores, pd.double(), anc, labels, gt.double(), mask)
    assert got[1].dtype == (torch.float64 if pd.dtype == torch.float64 else torch.float32)
    assert got[2].dtype == torch.float32 and got[3].any()
    for name, g, w in zip(("labels", "bboxes", "scores", "fg", "gt_idx"), got, want):
        assert_close_verbose(g.double(), w.double(), rtol=1e-6, atol=1e-7, what=name)
