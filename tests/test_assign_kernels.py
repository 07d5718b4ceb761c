"""Native assigner kernels against the PyTorch reference: the C++ op ``yolov9k::assign`` (exact,
bit for bit) and the Triton kernels under the CPU interpreter (same assignment; scores to an ulp,
because the interpreter has no libdevice pow, see kernels/assign.py)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import assert_close_verbose
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolov9k.ops import use_backend
from yolov9k.ops._extension import has_native_kernel
from yolov9k.ops.assign import assign, assign_reference
from yolov9k.ops.boxes import make_anchors

requires_cpp = pytest.mark.skipif(
    not has_native_kernel("assign", "CPU"), reason="yolov9k._C built without yolov9k::assign"
)
requires_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
# the interpreter's float64 log of a zero IoU (pow of 0 is 0, as intended)
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")
NAMES = ("target_labels", "target_bboxes", "target_scores", "fg_mask", "target_gt_idx")


def cpp_assign(*args, topk=10, alpha=0.5, beta=6.0, eps=1e-9):
    return torch.ops.yolov9k.assign(*args, topk, alpha, beta, eps)


def assert_same(got, want, scores_rtol: float = 0.0) -> None:
    """Exact equality of every output (scores: optionally to ``scores_rtol``), with statistics."""
    for name, g, w in zip(NAMES, got, want):
        assert g.dtype == w.dtype, f"{name}: dtype {g.dtype} != {w.dtype}"
        rtol = scores_rtol if name == "target_scores" else 0.0
        assert_close_verbose(g.double(), w.double(), rtol=rtol, atol=0.0, what=name)


# ---------------------------------------------------------------------------------------------
# Inputs


def anchors(img: int, strides=(8, 16, 32)) -> torch.Tensor:
    """(A, 2) anchor centres in px, as the loss builds them."""
    feats = [torch.empty(0, 0, img // s, img // s) for s in strides]
    anc, stride = make_anchors(feats, list(strides), 0.5)
    return anc * stride


def make_problem(
    seed: int,
    bsz: int = 2,
    m: int = 6,
    img: int = 128,
    n_cls: int = 4,
    kind: str = "random",
    score_dtype: torch.dtype = torch.float32,
    garbage_padding: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Random problem. kind: random | tiny (boxes between anchor centres) | border (boxes partly
    outside the image) | duplicate (identical gts) | crowd (many overlapping gts: contested anchors)."""
    g = torch.Generator().manual_seed(seed)
    anc = anchors(img)
    a = anc.shape[0]
    scores = torch.rand(bsz, a, n_cls, generator=g).to(score_dtype)
    half = 2 + torch.rand(bsz, a, 2, generator=g) * img / 4
    ctr = anc[None] + (torch.rand(bsz, a, 2, generator=g) - 0.5) * 8
    pd = torch.cat([ctr - half, ctr + half], -1)
    if kind == "tiny":
        wh = 0.5 + torch.rand(bsz, m, 2, generator=g) * 3
        xy = torch.rand(bsz, m, 2, generator=g) * (img - 4)
    elif kind == "border":
        wh = 4 + torch.rand(bsz, m, 2, generator=g) * img * 0.6
        xy = (torch.rand(bsz, m, 2, generator=g) * 1.3 - 0.3) * img
    elif kind == "crowd":
        wh = 8 + torch.rand(bsz, m, 2, generator=g) * img / 3
        xy = img / 4 + torch.rand(bsz, m, 2, generator=g) * img / 4
    else:
        wh = 1 + torch.rand(bsz, m, 2, generator=g) * img * 0.6
        xy = torch.rand(bsz, m, 2, generator=g) * (img - wh)
    gt = torch.cat([xy, xy + wh], -1)
    labels = torch.randint(0, n_cls, (bsz, m, 1), generator=g).float()
    if kind == "duplicate" and m > 1:
        gt[:, 1:] = gt[:, :1]
        labels[:, 1::2] = labels[:, :1]
    n_valid = torch.randint(0, m + 1, (bsz, 1), generator=g)
    mask = (torch.arange(m)[None] < n_valid).float()[..., None]
    if not garbage_padding:  # padding rows as the loss writes them: zeros
        gt, labels = gt * mask, labels * mask
    return scores, pd, anc, labels, gt, mask


@st.composite
def problems(draw, img=(128, 256), max_b=3, max_m=8):
    kind = draw(st.sampled_from(["random", "tiny", "border", "duplicate", "crowd"]))
    args = make_problem(
        seed=draw(st.integers(0, 2**31 - 1)),
        bsz=draw(st.integers(1, max_b)),
        m=draw(st.integers(0, max_m)),
        img=draw(st.sampled_from(img)),
        n_cls=draw(st.integers(1, 5)),
        kind=kind,
        score_dtype=draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16])),
        garbage_padding=draw(st.booleans()),
    )
    topk = draw(st.sampled_from([1, 3, 10, 64]))  # 64: more than the candidates of most gts
    return args, topk


# ---------------------------------------------------------------------------------------------
# C++ kernel


@pytest.fixture(scope="module")
def tal(fixtures_dir):
    return torch.load(fixtures_dir / "tal_fixture.pt", weights_only=True)


def _fixture_args(tal):
    i = tal["inputs"]
    return (
        i["pd_scores_fp16"].float(),
        i["pd_bboxes"],
        i["anc_points"],
        i["gt_labels"],
        i["gt_bboxes"],
        i["mask_gt"],
    )


@requires_cpp
def test_cpp_fixture_equals_reference(tal):
    """Bit for bit the reference on the official fixture (its official parity: tests/test_assign.py,
    which runs on every built CPU backend)."""
    s = tal["settings"]
    out = cpp_assign(*_fixture_args(tal), topk=s["topk"], alpha=s["alpha"], beta=s["beta"], eps=s["eps"])
    assert int(out[3].sum()) == sum(tal["summary"]["fg_per_image"])
    assert_same(out, assign_reference(*_fixture_args(tal)))


@requires_cpp
def test_cpp_is_the_cpu_default(tal):
    with use_backend("cpp"):
        got = assign(*_fixture_args(tal))
    assert_same(got, assign_reference(*_fixture_args(tal)))


@requires_cpp
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
@pytest.mark.op_parity("assign")
def test_cpp_matches_reference(case):
    """Bit-exact on random problems: both send every power through ATen's SIMD pow
    (``_vector_pow`` in the reference, ``pow_inplace`` in csrc/cpu/assign_kernel.cpp)."""
    args, topk = case
    assert_same(cpp_assign(*args, topk=topk), assign_reference(*args, topk=topk))


@requires_cpp
def test_cpp_dense_scene_1000_gts():
    g = torch.Generator().manual_seed(3)
    scores, pd, anc, labels, gt, mask = make_problem(1, bsz=2, m=1000, img=256, n_cls=20)
    wh = 2 + torch.rand(2, 1000, 2, generator=g) * 30  # a crowd of small boxes
    xy = torch.rand(2, 1000, 2, generator=g) * (256 - wh)
    gt = torch.cat([xy, xy + wh], -1) * mask
    args = (scores, pd, anc, labels, gt, mask)
    got = cpp_assign(*args)
    assert got[3].sum() > 500
    assert_same(got, assign_reference(*args))


@requires_cpp
@pytest.mark.parametrize("how", ["jitter", "shuffle", "single_level_offset"])
def test_cpp_irregular_anchor_layout(how):
    """Anchors that are not a make_anchors grid take the all-anchors path: same results."""
    scores, pd, anc, labels, gt, mask = make_problem(5, kind="crowd")
    if how == "jitter":
        anc = anc + torch.rand(anc.shape, generator=torch.Generator().manual_seed(0)) - 0.5
    elif how == "shuffle":
        perm = torch.randperm(anc.shape[0], generator=torch.Generator().manual_seed(0))
        anc, scores, pd = anc[perm], scores[:, perm], pd[:, perm]
    else:
        anc = anc + 0.25
    args = (scores, pd, anc, labels, gt, mask)
    assert_same(cpp_assign(*args), assign_reference(*args))


@requires_cpp
def test_cpp_edge_cases():
    scores, pd, anc, labels, gt, mask = make_problem(7, m=4)
    empty = (torch.zeros(2, 0, 1), torch.zeros(2, 0, 4), torch.zeros(2, 0, 1))
    no_gt = cpp_assign(scores, pd, anc, empty[0], empty[1], empty[2])
    assert_same(no_gt, assign_reference(scores, pd, anc, *empty))
    assert (no_gt[0] == scores.shape[2]).all()
    pad = cpp_assign(scores, pd, anc, labels, gt, mask * 0)  # all padding (garbage boxes)
    assert not pad[3].any() and (pad[2] == 0).all()
    assert_same(pad, assign_reference(scores, pd, anc, labels, gt, mask * 0))
    # non-contiguous scores and boxes, int labels, bool mask
    s_t = scores.transpose(1, 2).contiguous().transpose(1, 2)
    pd_t = pd.transpose(0, 1).contiguous().transpose(0, 1)
    want = assign_reference(scores, pd, anc, labels, gt, mask)
    assert_same(cpp_assign(s_t, pd_t, anc, labels.long(), gt, mask.bool()), want)
    # topk larger than the number of anchors
    assert_same(
        cpp_assign(scores, pd, anc, labels, gt, mask, topk=10_000),
        assign_reference(scores, pd, anc, labels, gt, mask, topk=10_000),
    )


@requires_cpp
def test_cpp_nan_predictions_do_not_crash():
    scores, pd, anc, labels, gt, mask = make_problem(8, kind="crowd")
    pd[0, ::7] = float("nan")
    scores[1, ::5] = float("nan")
    gt[0, 0] = float("nan")
    out = cpp_assign(scores, pd, anc, labels, gt, mask)
    assert out[2].shape == scores.shape[:2] + (scores.shape[2],)


@requires_cpp
def test_cpp_opcheck():
    args = make_problem(9, bsz=2, m=3, img=64)
    torch.library.opcheck(
        torch.ops.yolov9k.assign.default,
        args + (10, 0.5, 6.0, 1e-9),
        test_utils=("test_schema", "test_faketensor"),
    )


@requires_cpp
@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.__setitem__(0, a[0][0]), "pd_scores"),
        (lambda a: a.__setitem__(1, a[1][..., :3]), "pd_bboxes"),
        (lambda a: a.__setitem__(1, a[1].double()), "float64"),
        (lambda a: a.__setitem__(2, a[2][:-1]), "anc_points"),
        (lambda a: a.__setitem__(3, a[3][..., 0]), "gt_labels"),
        (lambda a: a.__setitem__(3, a[3] + 100), r"gt_labels must lie in \[0, 4\)"),
        (lambda a: a.__setitem__(3, a[3] - 100), r"gt_labels must lie"),
        (lambda a: a.__setitem__(3, a[3].bool()), "real number"),
        (lambda a: a.__setitem__(4, a[4][:1]), "gt_bboxes"),
        (lambda a: a.__setitem__(4, a[4].long()), "gt_bboxes"),
        (lambda a: a.__setitem__(5, a[5][:, :1]), "mask_gt"),
        (lambda a: a.__setitem__(slice(0, 3), (a[0][:, :0], a[1][:, :0], a[2][:0])), "A > 0"),
    ],
)
def test_cpp_bad_input(change, match):
    args = list(make_problem(10, m=3, img=64))
    change(args)
    with pytest.raises(RuntimeError, match=match):
        cpp_assign(*args)


@requires_cpp
def test_cpp_bad_topk():
    with pytest.raises(RuntimeError, match="topk"):
        cpp_assign(*make_problem(10, m=3, img=64), topk=0)


# ---------------------------------------------------------------------------------------------
# Triton kernels under the interpreter (small shapes: ~0.5 ms per program instance and op)


def triton_assign(*args, **kw):
    from yolov9k.ops.assign import _triton_assign  # the kernels, and the reference for what they leave

    return _triton_assign(*args, **kw)


@requires_triton
def test_grid_levels():
    from yolov9k.kernels.assign import grid_levels

    assert grid_levels(anchors(640)) == [(8.0, 80, 80, 0), (16.0, 40, 40, 6400), (32.0, 20, 20, 8000)]
    assert grid_levels(anchors(64, strides=(8,))) == [(8.0, 8, 8, 0)]
    assert grid_levels(anchors(64) + 0.25) is None
    assert grid_levels(anchors(64).flip(0)) is None


@requires_triton
def test_grid_levels_read_once_per_anchor_tensor(monkeypatch):
    """The (A, 2) host copy happens once per live, unmodified anchor tensor."""
    from yolov9k.kernels import assign as triton_mod

    calls = []
    real = triton_mod.grid_levels
    monkeypatch.setattr(triton_mod, "grid_levels", lambda a: calls.append(1) or real(a))
    anc = anchors(64)
    want = real(anc)
    assert triton_mod._grid_levels_cached(anc) == want and len(calls) == 1
    assert triton_mod._grid_levels_cached(anc) == want and len(calls) == 1
    anc.add_(0.25)  # in-place change: read again, and now irregular
    assert triton_mod._grid_levels_cached(anc) is None and len(calls) == 2
    other = anchors(64)  # equal values, another tensor: read again
    assert triton_mod._grid_levels_cached(other) == want and len(calls) == 3


TRITON_CASES = [
    dict(seed=0, kind="random"),
    dict(seed=1, kind="crowd", topk=3),  # contested anchors
    dict(seed=2, kind="border", score_dtype=torch.float16, garbage_padding=True),
    dict(seed=3, kind="duplicate", score_dtype=torch.bfloat16),
    dict(seed=4, kind="tiny", topk=20),  # topk above the candidates; boxes without any centre
]


@requires_triton
@pytest.mark.parametrize("case", TRITON_CASES, ids=lambda c: c["kind"])
def test_triton_matches_reference(case):
    case = dict(case)
    topk = case.pop("topk", 10)
    args = make_problem(bsz=2, m=4, img=64, **case)
    with use_backend("triton"):
        got = assign(*args, topk=topk)
    assert_same(got, assign_reference(*args, topk=topk), scores_rtol=1e-6)


@requires_triton
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(img=(64,), max_b=2, max_m=4))
def test_triton_random_problems(case):
    args, topk = case
    assert_same(triton_assign(*args, topk=topk), assign_reference(*args, topk=topk), scores_rtol=1e-6)


@requires_triton
def test_triton_fallbacks():
    """M == 0 and irregular anchors go to the reference; all-padding images assign nothing."""
    scores, pd, anc, labels, gt, mask = make_problem(6, bsz=2, m=3, img=64)
    empty = (torch.zeros(2, 0, 1), torch.zeros(2, 0, 4), torch.zeros(2, 0, 1))
    assert_same(triton_assign(scores, pd, anc, *empty), assign_reference(scores, pd, anc, *empty))
    jit = anc + 0.25
    assert_same(
        triton_assign(scores, pd, jit, labels, gt, mask), assign_reference(scores, pd, jit, labels, gt, mask)
    )
    pad = triton_assign(scores, pd, anc, labels, gt, mask * 0)
    assert not pad[3].any() and (pad[2] == 0).all()


# ---------------------------------------------------------------------------------------------
# Every backend on NaN/Inf inputs and float64 boxes


def hostile_problem(seed: int, kind: str) -> tuple[torch.Tensor, ...]:
    """A crowded problem with NaN/Inf (and negative) scores, NaN/Inf predicted boxes and NaN/Inf
    gt boxes (real and padding slots) scattered over it."""
    scores, pd, anc, labels, gt, mask = make_problem(
        seed, bsz=2, m=6, img=64, kind=kind, garbage_padding=True
    )
    g = torch.Generator().manual_seed(seed)
    n_anchor = scores.shape[1]

    def some() -> torch.Tensor:
        return torch.randint(0, n_anchor, (n_anchor // 6,), generator=g)

    nan, inf = float("nan"), float("inf")
    scores[0, some(), 0] = nan
    scores[1, some()] = inf
    scores[0, some(), 1] = -inf
    scores[1, some(), 2] = -0.5
    pd[0, some(), 2] = nan
    pd[1, some(), 0] = -inf
    pd[1, some(), 3] = inf
    gt[0, 1, 2] = inf
    gt[1, 0, 0] = nan
    gt[0, 5] = nan  # a padding slot or a real one, depending on the seed
    return scores, pd, anc, labels, gt, mask


def run_backend(backend: str, *args, **kw):
    with use_backend(backend):
        return assign(*args, **kw)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's NaNs
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["crowd", "duplicate", "random"])
def test_backends_agree_on_nonfinite_inputs(seed, kind):
    """One rule for NaN/Inf (yolov9k/ops/assign.py): the C++ kernel equals the reference bit for bit,
    the Triton kernels under the interpreter too except scores (their usual ulp, module docstring);
    no backend makes a NaN or infinite target score."""
    args = hostile_problem(seed, kind)
    want = run_backend("torch", *args)
    assert torch.isfinite(want[2]).all() and want[3].any()
    fg_box = want[1][want[3]]
    assert torch.isfinite(fg_box).all()
    backends = (["cpp"] if has_native_kernel("assign", "CPU") else []) + (
        ["triton"] if importlib.util.find_spec("triton") else []
    )
    assert backends, "no native backend to compare"
    for backend in backends:
        got = run_backend(backend, *args)
        assert torch.isfinite(got[2]).all(), backend
        assert_same(got, want, scores_rtol=1e-6 if backend == "triton" else 0.0)


@pytest.mark.parametrize("backend", ["torch", "cpp", "triton"])
def test_float64_boxes_every_backend(backend):
    """float64 boxes (a float64 CIoU and metric, as officially) work on every backend, equal to the
    reference; the raw C++ op rejects them with a clear error (test_cpp_bad_input)."""
    if backend == "cpp" and not has_native_kernel("assign", "CPU"):
        pytest.fail("yolov9k._C built without yolov9k::assign")
    scores, pd, anc, labels, gt, mask = make_problem(11, m=5, img=64, kind="crowd")
    args = (scores, pd.double(), anc, labels, gt.double(), mask)
    got = run_backend(backend, *args)
    assert got[1].dtype == torch.float64 and got[2].dtype == torch.float32 and got[3].any()
    assert_same(got, assign_reference(*args))
    as_float32 = assign_reference(scores, pd, anc, labels, gt, mask)
    assert torch.equal(got[3], as_float32[3]) and torch.equal(got[4], as_float32[4])
