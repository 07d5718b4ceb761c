"""DetectionLoss: official fixture values, an official-style (masked_select) implementation for
values and gradients, model gradients, empty targets, dtypes, the DDP hook and input checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_verbose

from yolov9k.loss import DetectionLoss, pad_targets
from yolov9k.ops.assign import assign
from yolov9k.ops.boxes import bbox2dist, bbox_iou, dist2bbox, make_anchors, xywh2xyxy

NAMES = ["gelan-t", "yolov9-t"]


@pytest.fixture(scope="module", params=NAMES)
def fx(request, fixtures_dir):
    return torch.load(fixtures_dir / f"{request.param}_fixture.pt", weights_only=True)


def _stand_in(fx):
    """The model attributes the loss reads, without a model."""
    return SimpleNamespace(nc=80, stride=fx["stride"], reg_max=16, is_dual=fx["name"].startswith("yolov9"))


def _preds(fx, requires_grad=False):
    to = fx["train_output"]
    if _stand_in(fx).is_dual:
        return (
            [x.clone().requires_grad_(requires_grad) for x in to[0]],
            [x.clone().requires_grad_(requires_grad) for x in to[1]],
        )
    return [x.clone().requires_grad_(requires_grad) for x in to]


def test_fixture_loss(fx):
    total, items = DetectionLoss(_stand_in(fx))(_preds(fx), fx["targets"])
    assert total.dim() == 0 and items.shape == (3,) and not items.requires_grad
    assert_close_verbose(total, fx["loss"]["total"], rtol=1e-6, what="total")
    assert_close_verbose(items, fx["loss"]["items"], rtol=1e-6, what="items")


# ---------------------------------------------------------------------------------------------
# Official-style implementation: loops to pad targets, masked_select of foreground anchors,
# F.cross_entropy twice for DFL; written independently of yolov9k.loss.


def _official_branch(
    maps, gt_labels, gt_bboxes, mask_gt, nc, reg_max, strides, eps=0.0, gamma=0.0, cls_pw=1.0
):
    b = maps[0].shape[0]
    no = 4 * reg_max + nc
    dist, scores = torch.cat([x.view(b, no, -1) for x in maps], 2).split((4 * reg_max, nc), 1)
    dist, scores = dist.permute(0, 2, 1).contiguous(), scores.permute(0, 2, 1).contiguous()
    anchors, stride_t = make_anchors(maps, strides, 0.5)
    proj = torch.arange(reg_max).float()
    pbox = dist2bbox(dist.view(b, -1, 4, reg_max).softmax(3).matmul(proj), anchors, xywh=False)
    _, tbox, tscore, fg, _ = assign(
        scores.detach().sigmoid(), pbox.detach() * stride_t, anchors * stride_t, gt_labels, gt_bboxes, mask_gt
    )
    tbox = tbox / stride_t
    tss = max(tscore.sum(), 1)
    cp, cn = 1.0 - 0.5 * eps, 0.5 * eps  # yolov5's smooth_BCE(eps): positive and negative BCE targets
    target = tscore.clone()
    target[fg] = tscore[fg] * cp + (1 - tscore[fg]) * cn  # matched anchors only, as yolov5 does
    pos_weight = torch.tensor([cls_pw])
    cls = F.binary_cross_entropy_with_logits(scores, target, pos_weight=pos_weight, reduction="none")
    if gamma > 0:  # official FocalLoss(BCEcls, gamma), alpha 0.25
        p = scores.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        cls = cls * (target * 0.25 + (1 - target) * 0.75) * (1.0 - p_t) ** gamma
    cls = cls.sum() / tss
    box = torch.zeros(()) * 0
    dfl = torch.zeros(()) * 0
    if fg.sum():
        w = tscore.sum(-1)[fg][:, None]
        iou = bbox_iou(pbox[fg], tbox[fg], xywh=False, CIoU=True)
        box = ((1.0 - iou) * w).sum() / tss
        target = bbox2dist(anchors, tbox, reg_max - 1)[fg]  # (n, 4)
        logits = dist[fg].view(-1, reg_max)
        left = target.long()
        wl = (left + 1).float() - target
        ce_l = F.cross_entropy(logits, left.view(-1), reduction="none").view(left.shape) * wl
        ce_r = F.cross_entropy(logits, (left + 1).view(-1), reduction="none").view(left.shape) * (1 - wl)
        dfl = ((ce_l + ce_r).mean(-1, keepdim=True) * w).sum() / tss
    return torch.stack([box, cls, dfl])


def official_style_loss(preds, targets, strides, nc=80, reg_max=16, **cls_options):
    branches = list(preds) if isinstance(preds, tuple) else [preds]
    b, _, h, w = branches[0][0].shape
    imgsz = torch.tensor([w, h, w, h]) * strides[0]
    counts = [int((targets[:, 0] == i).sum()) for i in range(b)]
    gt = torch.zeros(b, max(counts, default=0), 5)
    for i in range(b):
        rows = targets[targets[:, 0] == i, 1:]
        gt[i, : len(rows)] = rows
    gt[..., 1:] = xywh2xyxy(gt[..., 1:] * imgsz)
    labels, boxes = gt.split((1, 4), 2)
    mask = boxes.sum(2, keepdim=True).gt(0).float()
    items = [_official_branch(m, labels, boxes, mask, nc, reg_max, strides, **cls_options) for m in branches]
    loss = items[0] if len(items) == 1 else items[0] * 0.25 + items[1]
    loss = loss * torch.tensor([7.5, 0.5, 1.5])
    return loss.sum() * b, loss.detach()


def _targets_variants(fx):
    t = fx["targets"]
    return {
        "fixture": t,
        "image1_empty": t[t[:, 0] == 0],
        "image0_empty": t[t[:, 0] == 1],
        "none": t[:0],
    }


@pytest.mark.parametrize("variant", ["fixture", "image1_empty", "image0_empty", "none"])
def test_values_and_grads_match_official_style(fx, variant):
    targets = _targets_variants(fx)[variant]
    preds_a, preds_b = _preds(fx, True), _preds(fx, True)
    total, items = DetectionLoss(_stand_in(fx))(preds_a, targets)
    ref_total, ref_items = official_style_loss(preds_b, targets, fx["stride"].tolist())
    assert torch.isfinite(total) and total.requires_grad
    assert_close_verbose(items, ref_items, rtol=1e-6, atol=1e-7, what="items")
    total.backward()
    ref_total.backward()
    flat = lambda p: list(p[0]) + list(p[1]) if isinstance(p, tuple) else p  # noqa: E731
    for i, (a, b) in enumerate(zip(flat(preds_a), flat(preds_b))):
        assert torch.isfinite(a.grad).all()
        assert_close_verbose(a.grad, b.grad, rtol=1e-5, atol=1e-9, what=f"d loss / d map {i}")


def test_zero_targets_finite_with_grad(fx):
    preds = _preds(fx, True)
    total, items = DetectionLoss(_stand_in(fx))(preds, torch.zeros(0, 6))
    assert torch.isfinite(total) and items[0] == 0 and items[2] == 0 and items[1] > 0
    total.backward()
    first = preds[0][0] if isinstance(preds, tuple) else preds[0]
    assert torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_maps_computed_in_float32(fx, dtype):
    low = _preds(fx)
    if isinstance(low, tuple):
        low = tuple([x.to(dtype) for x in branch] for branch in low)
        up = tuple([x.float() for x in branch] for branch in low)
    else:
        low = [x.to(dtype) for x in low]
        up = [x.float() for x in low]
    loss = DetectionLoss(_stand_in(fx))
    total, items = loss(low, fx["targets"])
    ref_total, ref_items = loss(up, fx["targets"])
    assert total.dtype == torch.float32
    assert torch.equal(items, ref_items)


def test_eval_output_accepted(fx):
    loss = DetectionLoss(_stand_in(fx))
    preds = _preds(fx)
    fake_y = torch.zeros(2, 84, 2100)
    wrapped = ([fake_y, fake_y], list(preds)) if isinstance(preds, tuple) else (fake_y, preds)
    assert torch.equal(loss(wrapped, fx["targets"])[1], loss(preds, fx["targets"])[1])


def test_tss_reduce_hook(fx):
    seen = []

    def double(t):
        seen.append(t.clone())
        return t * 2

    base = DetectionLoss(_stand_in(fx))(_preds(fx), fx["targets"])[1]
    hooked = DetectionLoss(_stand_in(fx), tss_reduce=double)(_preds(fx), fx["targets"])[1]
    assert len(seen) == (2 if _stand_in(fx).is_dual else 1)
    assert_close_verbose(hooked * 2, base, rtol=1e-6, what="items with doubled target-score sum")


@pytest.mark.parametrize(
    ("label_smoothing", "fl_gamma", "cls_pw"),
    [(0.1, 0.0, 1.0), (1.0, 0.0, 1.0), (0.0, 1.5, 1.0), (0.2, 2.0, 2.0)],
)
def test_label_smoothing_and_focal_loss_follow_their_formulas(fx, label_smoothing, fl_gamma, cls_pw):
    """Class targets of foreground anchors t -> t (1 - eps/2) + (1 - t) eps/2 (yolov5's smooth_BCE), the
    official FocalLoss for fl_gamma > 0, as the official-style loss above has them; box, DFL unchanged."""
    hyp = {"label_smoothing": label_smoothing, "fl_gamma": fl_gamma, "cls_pw": cls_pw}
    preds_a, preds_b = _preds(fx, True), _preds(fx, True)
    total, items = DetectionLoss(_stand_in(fx), hyp=hyp)(preds_a, fx["targets"])
    ref_total, ref_items = official_style_loss(
        preds_b, fx["targets"], fx["stride"].tolist(), eps=label_smoothing, gamma=fl_gamma, cls_pw=cls_pw
    )
    assert_close_verbose(items, ref_items, rtol=1e-6, atol=1e-7, what="items")
    plain = DetectionLoss(_stand_in(fx))(_preds(fx), fx["targets"])[1]
    assert abs(float(items[1] - plain[1])) > 1e-4 * float(plain[1])  # the class loss changed ...
    assert_close_verbose(items[[0, 2]], plain[[0, 2]], rtol=0, atol=0, what="box, dfl")  # ... and only it
    total.backward()
    ref_total.backward()
    flat = lambda p: list(p[0]) + list(p[1]) if isinstance(p, tuple) else p  # noqa: E731
    for i, (a, b) in enumerate(zip(flat(preds_a), flat(preds_b))):
        assert_close_verbose(a.grad, b.grad, rtol=1e-5, atol=1e-9, what=f"d loss / d map {i}")


def test_label_smoothing_zero_is_the_official_loss(fx):
    base = DetectionLoss(_stand_in(fx))(_preds(fx), fx["targets"])[1]
    zero = DetectionLoss(_stand_in(fx), hyp={"label_smoothing": 0.0, "fl_gamma": 0.0})(
        _preds(fx), fx["targets"]
    )[1]
    assert torch.equal(base, zero)
    assert_close_verbose(base, fx["loss"]["items"], rtol=1e-6, what="items")


@pytest.mark.parametrize("hyp", [{"label_smoothing": -0.1}, {"label_smoothing": 1.5}, {"fl_gamma": -1.0}])
def test_out_of_range_class_loss_options_are_refused(fx, hyp):
    with pytest.raises(ValueError, match="out of range"):
        DetectionLoss(_stand_in(fx), hyp=hyp)


def test_hyp_gains(fx):
    base = DetectionLoss(_stand_in(fx))(_preds(fx), fx["targets"])[1]
    other = DetectionLoss(_stand_in(fx), hyp={"box": 1.0, "cls": 1.0})(_preds(fx), fx["targets"])[1]
    assert_close_verbose(other, base / torch.tensor([7.5, 0.5, 1.0]), rtol=1e-6, what="gains")


def test_pad_targets_layout():
    t = torch.tensor([[1, 3, 0.5, 0.5, 0.2, 0.4], [0, 1, 0.25, 0.5, 0.5, 0.5], [1, 2, 0.5, 0.25, 0.1, 0.1]])
    out = pad_targets(t, 3, (200.0, 100.0), nc=5)
    assert out.shape == (3, 2, 5)
    assert out[0, 0].tolist() == [1, 0.0, 25.0, 100.0, 75.0] and (out[0, 1] == 0).all()
    assert out[1, 0].tolist() == pytest.approx([3, 80.0, 30.0, 120.0, 70.0])
    assert out[1, 1].tolist() == pytest.approx([2, 90.0, 20.0, 110.0, 30.0])
    assert (out[2] == 0).all()


@pytest.mark.parametrize(
    "targets, match",
    [
        (torch.zeros(3, 5), r"\(N, 6\)"),
        (torch.tensor([[2.0, 0, 0.5, 0.5, 0.1, 0.1]]), "image index"),
        (torch.tensor([[0.0, 80, 0.5, 0.5, 0.1, 0.1]]), "class"),
        (torch.tensor([[0.0, 1, float("nan"), 0.5, 0.1, 0.1]]), "NaN"),
    ],
)
def test_bad_targets(fx, targets, match):
    with pytest.raises(ValueError, match=match):
        DetectionLoss(_stand_in(fx))(_preds(fx), targets)


def test_bad_preds(fx):
    loss = DetectionLoss(_stand_in(fx))
    preds = _preds(fx)
    single = preds[1] if isinstance(preds, tuple) else preds
    with pytest.raises(ValueError, match="maps"):
        loss(
            [single[0], single[1]] if not isinstance(preds, tuple) else (single[:2], single[:2]),
            fx["targets"],
        )
    with pytest.raises(ValueError, match="is_dual"):
        loss(single if isinstance(preds, tuple) else (single, single), fx["targets"])


# ---------------------------------------------------------------------------------------------
# Gradients through the real model (yolov9k.models)


@pytest.mark.slow
def test_model_gradients(fx):
    models = pytest.importorskip("yolov9k.models")
    torch.manual_seed(0)
    model = models.build_model(fx["name"])
    model.load_state_dict(fx["state_dict"], strict=True)
    model.train()
    total, items = DetectionLoss(model)(model(fx["input"]), fx["targets"])
    # the model's train maps agree with the fixture only to float32 noise (~1e-3 abs), hence 1e-5
    assert_close_verbose(items, fx["loss"]["items"], rtol=1e-5, what="items via the model")
    total.backward()
    params = dict(model.named_parameters())
    got = torch.tensor([params[n].grad.norm() for n in fx["grad_norms"]["names"]])
    # 2e-4: measured 1.1e-4 on yolov9-t's model.0.conv.weight, from the model's float32 noise
    assert_close_verbose(got, torch.tensor(fx["grad_norms"]["values"]), rtol=2e-4, what="grad_norms")
    names = [n for n, v in fx["grad_norms_all"].items() if v is not None]
    frozen = [n for n, v in fx["grad_norms_all"].items() if v is None]
    assert set(fx["grad_norms_all"]) == set(params)
    assert all(params[n].grad is None for n in frozen)
    got_all = torch.stack([params[n].grad.norm() for n in names])
    want_all = torch.tensor([fx["grad_norms_all"][n] for n in names])
    # 1e-3, not 1e-4: the model's own float32 noise (train maps within ~1e-3 of the fixture) moves
    # the smallest norms (~1e-4, BN params of the last neck block) by up to ~9e-4 relative; the
    # loss's own gradient is checked tightly against the official-style loss above.
    assert_close_verbose(got_all, want_all, rtol=1e-3, atol=1e-9, what="grad_norms_all")


# ---------------------------------------------------------------------------------------------
# Host syncs (MISSION: none on the per-step path)


def test_repeated_calls_reuse_cached_constants(fx):
    """Anchors and constants are cached per device and map sizes; values do not change."""
    loss = DetectionLoss(_stand_in(fx))
    first = loss(_preds(fx), fx["targets"])[1]
    cached = dict(loss._cache)
    assert len(cached) == 1
    second = loss(_preds(fx), fx["targets"])[1]
    assert torch.equal(first, second) and loss._cache.keys() == cached.keys()
    assert all(a is b for a, b in zip(next(iter(loss._cache.values())), next(iter(cached.values()))))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_makes_no_host_sync(fx):
    """Forward + loss + backward of a real model on CUDA with the loader's CPU targets raises under
    ``set_sync_debug_mode('error')`` at the first host sync: none happens (after a warm-up step
    that fills the caches), and the loss equals the CPU one."""
    models = pytest.importorskip("yolov9k.models")
    model = models.build_model(fx["name"])
    model.load_state_dict(fx["state_dict"], strict=True)
    model.train()
    cpu_items = DetectionLoss(model)(model(fx["input"]), fx["targets"])[1]
    model.cuda()
    x = fx["input"].cuda()
    loss = DetectionLoss(model)
    loss(model(x), fx["targets"])[0].backward()  # warm-up: caches, cuDNN/Triton autotuning
    model.zero_grad()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total, items = loss(model(x), fx["targets"])
        total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert_close_verbose(items.cpu(), cpu_items, rtol=1e-3, what="CUDA loss items vs CPU")
