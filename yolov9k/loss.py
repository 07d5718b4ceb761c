"""YOLOv9 detection loss: BCE classification + CIoU box + DFL, on task-aligned (TAL) targets.

Same values as the official ``utils/loss_tal.py`` (GELAN) and ``utils/loss_tal_dual.py`` (PGI dual
head) on the same inputs. Per branch, with ``S = max(sum of target_scores, 1)``:

  * cls = sum over anchors and classes of BCE-with-logits(score, target_scores) / S
  * box = sum over foreground anchors of (1 - CIoU(pred, target)) * w / S, w = target score of
    the anchor (Zheng et al. 2020, arXiv:1911.08287)
  * dfl = sum over foreground anchors of DFL(pred distribution, target distance) * w / S:
    Distribution Focal Loss of GFL (Li et al. 2020, arXiv:2006.04388), the cross-entropy to the two
    integer bins around the target distance weighted by linear interpolation, averaged over the
    four sides. Target distances are in stride units and clamped to ``[0, reg_max - 1 - 0.01]``
    (the official code passes ``reg_max - 1`` = 15 to its box loss).

Items are ``[box * 7.5, cls * 0.5, dfl * 1.5]`` (the official gains, hard-coded there; here read
from ``hyp['box'|'cls'|'dfl']``, whose defaults are hyp.scratch-high's values:
``yolov9k.options.HYP_DEFAULTS``, the one source of every hyperparameter default).
The dual loss runs one assignment per branch and adds ``0.25 * aux + main`` before the gains.
``total = items.sum() * batch_size``.

Two class-loss options act only when set (their defaults give the official loss exactly):

  * ``label_smoothing`` = eps: the BCE targets of foreground anchors become
    ``t * (1 - eps) + eps / 2``, i.e. yolov5's ``smooth_BCE(eps)`` (positive target ``1 - eps/2``,
    negative ``eps/2``) applied to TAL's soft score ``t`` of every class of the anchor (Szegedy et al.
    2016, arXiv:1512.00567, for two classes per BCE term). Background anchors keep target 0, as
    yolov5 smooths the class targets of matched predictions only; the normaliser ``S`` and the
    box / DFL weights keep the unsmoothed scores. The official YOLOv9 computes ``smooth_BCE`` and
    never uses it.
  * ``fl_gamma`` = g > 0: each BCE term is multiplied by ``alpha_t * (1 - p_t) ** g`` with
    ``p_t = t p + (1 - t)(1 - p)``, ``alpha_t = 0.25 t + 0.75 (1 - t)`` (the official ``FocalLoss``).

Differences from the official code that do not change values: box and DFL terms are computed over
all anchors and masked (no ``masked_select``, no ``if fg_mask.sum()``); targets are padded where
they are (the data loader's CPU tensors) and copied to the device asynchronously, and anchors and
constants are cached per device, so a step on CUDA makes no host sync at all (with targets already
on the GPU there is one: sizing the padded target tensor, see ``pad_targets``); everything is
computed in float32 whatever the dtype of the maps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from yolov9k.ops.assign import assign
from yolov9k.ops.boxes import bbox2dist, bbox_iou, dist2bbox, make_anchors, xywh2xyxy
from yolov9k.options import HYP_DEFAULTS

__all__ = ["DetectionLoss", "LOSS_HYP_KEYS", "pad_targets", "ddp_normalizer"]

LOSS_HYP_KEYS = ("box", "cls", "dfl", "cls_pw", "fl_gamma", "label_smoothing")  # what the loss reads
FOCAL_ALPHA = 0.25  # alpha of the official FocalLoss
AUX_WEIGHT = 0.25  # weight of the PGI auxiliary branch (official loss_tal_dual.py)

Maps = Sequence[Tensor]


def ddp_normalizer(t: Tensor) -> Tensor:
    """The loss normaliser ``max(sum of t over DDP ranks, 1) / world_size`` (``max(t, 1)`` alone).

    Pass it as ``DetectionLoss(..., tss_reduce=ddp_normalizer)``: every rank then divides by the
    global target-score sum (clamped once, globally) over the world size, and DDP's gradient
    averaging gives exactly the single-process ``sum of per-anchor losses / max(sum of scores, 1)``
    for the global batch, even when most ranks hold no targets.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return t.clamp(min=1)
    t = t.detach().clone()
    dist.all_reduce(t)
    return t.clamp(min=1) / dist.get_world_size()


def pad_targets(targets: Tensor, batch_size: int, imgsz_wh: tuple[float, float], nc: int) -> Tensor:
    """Normalized targets -> per-image padded pixel boxes, on the targets' device (no Python loop).

    Args:
        targets: (N, 6) ``[img_idx, cls, x, y, w, h]``, xywh normalized to [0, 1].
        batch_size: B. imgsz_wh: input size (width, height) in pixels. nc: number of classes.
    Returns:
        (B, Mmax, 5) float32 ``[cls, x1, y1, x2, y2]`` in pixels, each image's targets first in
        their input order, zero rows after (Mmax = most targets in one image; 0 when N == 0).
    The single host sync of the loss happens here: Mmax (the padded size) and the input checks
    (image index in [0, B), class in [0, nc), finite values) reach the host in one transfer.
    """
    if not isinstance(targets, Tensor) or targets.dim() != 2 or targets.shape[1] != 6:
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"targets must be a (N, 6) tensor [img, cls, x, y, w, h], got {shape}")
    device = targets.device
    t = targets.float()
    n = t.shape[0]
    if n == 0:
        return torch.zeros(batch_size, 0, 5, device=device)
    img, cls = t[:, 0], t[:, 1]
    counts = (img[None, :] == torch.arange(batch_size, device=device, dtype=t.dtype)[:, None]).sum(1)
    bad_img = (img < 0) | (img >= batch_size) | (img != img.floor())
    bad_cls = (cls < 0) | (cls >= nc) | (cls != cls.floor())
    checks = torch.stack([counts.max(), bad_img.any(), bad_cls.any(), ~torch.isfinite(t).all()])
    m_max, any_bad_img, any_bad_cls, any_nonfinite = checks.tolist()  # the one host sync
    if any_nonfinite:
        raise ValueError("targets contain NaN or inf")
    if any_bad_img:
        raise ValueError(f"targets: image index (column 0) must be an integer in [0, {batch_size})")
    if any_bad_cls:
        raise ValueError(f"targets: class (column 1) must be an integer in [0, {nc})")

    order = torch.argsort(img, stable=True)
    img_sorted = img[order].long()
    start = counts.cumsum(0) - counts
    slot = torch.arange(n, device=device) - start[img_sorted]
    out = torch.zeros(batch_size, int(m_max), 5, device=device)
    out[img_sorted, slot] = t[order, 1:]
    w, h = imgsz_wh
    scale = torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
    out[..., 1:5] = xywh2xyxy(out[..., 1:5] * scale)
    return out


class DetectionLoss:
    """YOLOv9 loss for GELAN (single head) and YOLOv9 (PGI dual head) models.

    Args:
        model: provides ``nc``, ``stride`` (Tensor[nl], pixels), ``reg_max`` (16) and optionally
            ``is_dual`` and ``hyp``; a DDP/compiled wrapper with ``.module`` is unwrapped.
        hyp: loss hyperparameters (:data:`LOSS_HYP_KEYS`): ``box``, ``cls``, ``dfl`` (gains),
            ``cls_pw`` (BCE positive weight), ``fl_gamma`` (focal loss gamma) and ``label_smoothing``
            (see the module docstring); missing keys take ``yolov9k.options.HYP_DEFAULTS`` (the
            official values). Default: ``model.hyp`` if present.
        tal_topk: positives per gt in the assigner (official 10).
        tss_reduce: optional function mapping each branch's target-score sum to the normaliser
            (default ``max(sum, 1)``), e.g. ``ddp_normalizer`` under DDP.

    Call: ``total, items = loss(preds, targets)``.
        preds: train-mode output: list of nl maps (B, 4*reg_max + nc, H_i, W_i) (GELAN), or a pair
            ``(aux_maps, main_maps)`` (YOLOv9); an eval-mode ``(y, maps)`` output is accepted too.
        targets: (N, 6) ``[img_idx, cls, x, y, w, h]`` normalized.
        Returns total (0-dim, with grad) = items.sum() * B and items = [box, cls, dfl] (detached).
    """

    def __init__(
        self,
        model: Any,
        hyp: Mapping[str, float] | None = None,
        tal_topk: int = 10,
        tss_reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        model = getattr(model, "module", model)
        for attr in ("nc", "stride", "reg_max"):
            if not hasattr(model, attr):
                raise AttributeError(f"DetectionLoss: model has no attribute {attr!r}")
        self.nc = int(model.nc)
        self.reg_max = int(model.reg_max)
        self.strides = [float(s) for s in torch.as_tensor(model.stride).flatten().tolist()]
        self.is_dual: bool | None = getattr(model, "is_dual", None)
        if hyp is None:
            hyp = getattr(model, "hyp", None) or {}
        self.hyp = {k: float(hyp.get(k, HYP_DEFAULTS[k])) for k in LOSS_HYP_KEYS}
        for k in ("fl_gamma", "label_smoothing"):
            if not 0.0 <= self.hyp[k] <= (1.0 if k == "label_smoothing" else float("inf")):
                raise ValueError(f"DetectionLoss: hyp[{k!r}] = {self.hyp[k]} is out of range")
        self.topk = int(tal_topk)
        self.tss_reduce = tss_reduce
        self._cache: dict[tuple, tuple[Tensor, ...]] = {}  # per (device, map sizes): anchors, constants

    def _constants(self, maps: Maps) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(anchors (A, 2), strides (A, 1), gains (3,), BCE pos_weight (1,)) on the maps' device.

        Built once per device and feature-map sizes: no tensor from host data on the step path.
        """
        device = maps[0].device
        key = (device, tuple(tuple(x.shape[2:]) for x in maps))
        if key not in self._cache:
            shapes = [torch.empty(0, 0, *x.shape[2:], device=device) for x in maps]  # float32 anchors
            anchors, strides = make_anchors(shapes, self.strides, 0.5)
            gains = torch.tensor([self.hyp["box"], self.hyp["cls"], self.hyp["dfl"]]).to(device)
            pos_weight = torch.tensor([self.hyp["cls_pw"]]).to(device)
            self._cache[key] = (anchors, strides, gains, pos_weight)
        return self._cache[key]

    # ---- inputs -------------------------------------------------------------------------------
    def _branches(self, preds: Any) -> list[Maps]:
        """Split ``preds`` into one or two lists of head maps (aux first)."""
        pair = isinstance(preds, (tuple, list)) and len(preds) == 2
        if pair and isinstance(preds[0], Tensor) and preds[0].dim() == 3:
            preds = preds[1]  # eval-mode GELAN output (y, maps)
        elif pair and isinstance(preds[0], (tuple, list)) and len(preds[0]) > 0:
            first = preds[0][0]
            if isinstance(first, Tensor) and first.dim() == 3:  # eval-mode dual ([y_aux, y_main], maps)
                preds = preds[1]
        dual = isinstance(preds, (tuple, list)) and len(preds) > 0 and isinstance(preds[0], (tuple, list))
        if self.is_dual is not None and dual != bool(self.is_dual):
            kind = "a (aux_maps, main_maps) pair" if self.is_dual else "a list of maps"
            raise ValueError(f"DetectionLoss: the model is_dual={self.is_dual}, expected {kind}")
        branches = list(preds) if dual else [preds]
        for maps in branches:
            if len(maps) != len(self.strides) or not all(
                isinstance(x, Tensor) and x.dim() == 4 for x in maps
            ):
                raise ValueError(
                    f"DetectionLoss: expected {len(self.strides)} maps (B, C, H, W) per branch, got "
                    f"{[tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__ for x in maps]}"
                )
            no = 4 * self.reg_max + self.nc
            if any(x.shape[1] != no for x in maps):
                raise ValueError(f"DetectionLoss: maps must have 4*reg_max+nc = {no} channels")
        return branches

    # ---- per-branch loss ----------------------------------------------------------------------
    def _decode(self, maps: Maps) -> tuple[Tensor, Tensor]:
        """maps -> pred_dist (B, A, 4*reg_max) and pred_scores (B, A, nc) logits, float32."""
        b = maps[0].shape[0]
        no = 4 * self.reg_max + self.nc
        flat = torch.cat([x.float().reshape(b, no, -1) for x in maps], 2)
        pred_dist, pred_scores = flat.split((4 * self.reg_max, self.nc), 1)
        pred_dist = pred_dist.permute(0, 2, 1).contiguous()
        pred_scores = pred_scores.permute(0, 2, 1).contiguous()
        return pred_dist, pred_scores

    def _branch_loss(
        self,
        maps: Maps,
        gt_labels: Tensor,
        gt_bboxes: Tensor,
        mask_gt: Tensor,
        anchors: Tensor,
        strides: Tensor,
        pos_weight: Tensor,
    ) -> Tensor:
        """(3,) unscaled [box, cls, dfl] of one head branch. anchors (A, 2) and strides (A, 1)."""
        pred_dist, pred_scores = self._decode(maps)
        b, a, _ = pred_dist.shape
        proj = torch.arange(self.reg_max, dtype=torch.float32, device=pred_dist.device)
        # DFL decoding: expectation of the softmax over reg_max bins, per side (l, t, r, b).
        pred_ltrb = pred_dist.view(b, a, 4, self.reg_max).softmax(3).matmul(proj)
        pred_bboxes = dist2bbox(pred_ltrb, anchors, xywh=False)

        _, target_bboxes, target_scores, fg, _ = assign(
            pred_scores.detach().sigmoid(),
            pred_bboxes.detach() * strides,
            anchors * strides,
            gt_labels,
            gt_bboxes,
            mask_gt,
            topk=self.topk,
            alpha=0.5,  # TOOD's alpha/beta as YOLOv9 sets them
            beta=6.0,
        )
        target_bboxes = target_bboxes / strides
        tss = target_scores.sum()
        # A hook returns the final normaliser itself (see ddp_normalizer); else max(sum, 1).
        tss = self.tss_reduce(tss) if self.tss_reduce is not None else tss.clamp(min=1)

        loss_cls = self._cls_loss(pred_scores, target_scores, fg, pos_weight).sum() / tss

        weight = target_scores.sum(-1)  # (B, A): the anchor's normalised metric, 0 on background
        iou = bbox_iou(pred_bboxes, target_bboxes, xywh=False, CIoU=True)[..., 0]
        loss_box = torch.where(fg, (1.0 - iou) * weight, 0.0).sum() / tss

        target_ltrb = bbox2dist(anchors, target_bboxes, self.reg_max - 1)  # official: reg_max - 1
        loss_dfl = torch.where(
            fg, self._dfl(pred_dist.view(b, a, 4, self.reg_max), target_ltrb) * weight, 0.0
        )
        loss_dfl = loss_dfl.sum() / tss
        return torch.stack([loss_box, loss_cls, loss_dfl])

    def _cls_loss(self, logits: Tensor, target_scores: Tensor, fg: Tensor, pos_weight: Tensor) -> Tensor:
        """(B, A, nc) BCE terms of the class loss, with label smoothing and focal weighting when set.

        logits and target_scores (B, A, nc); fg (B, A) bool, the foreground anchors.
        """
        t = target_scores
        eps = self.hyp["label_smoothing"]
        if eps > 0:  # yolov5's smooth_BCE on the targets of foreground anchors
            t = torch.where(fg[..., None], t * (1.0 - eps) + 0.5 * eps, t)
        bce = F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight, reduction="none")
        gamma = self.hyp["fl_gamma"]
        if gamma > 0:  # the official FocalLoss around the BCE
            p = logits.sigmoid()
            p_t = t * p + (1 - t) * (1 - p)
            alpha_t = t * FOCAL_ALPHA + (1 - t) * (1 - FOCAL_ALPHA)
            bce = bce * alpha_t * (1.0 - p_t) ** gamma
        return bce

    @staticmethod
    def _dfl(pred_dist: Tensor, target: Tensor) -> Tensor:
        """Distribution focal loss (GFL, Li et al. 2020). pred_dist (B, A, 4, n) logits, target
        (B, A, 4) in bins, within [0, n - 1) -> (B, A), the mean over the four sides."""
        left = target.long()
        right = left + 1
        w_left = right.float() - target
        w_right = 1 - w_left
        logp = pred_dist.log_softmax(-1)
        ce_left = -logp.gather(-1, left[..., None])[..., 0]
        ce_right = -logp.gather(-1, right[..., None])[..., 0]
        return (ce_left * w_left + ce_right * w_right).mean(-1)

    def __call__(self, preds: Any, targets: Tensor) -> tuple[Tensor, Tensor]:
        branches = self._branches(preds)
        maps = branches[0]
        batch_size = maps[0].shape[0]
        device = maps[0].device
        h, w = maps[0].shape[2:]
        imgsz_wh = (w * self.strides[0], h * self.strides[0])
        anchors, strides, gains, pos_weight = self._constants(maps)
        # Padded where the targets are (CPU from the loader: no device sync), then copied async.
        gt = pad_targets(targets, batch_size, imgsz_wh, self.nc).to(device, non_blocking=True)
        gt_labels, gt_bboxes = gt.split((1, 4), 2)
        mask_gt = gt_bboxes.sum(2, keepdim=True).gt_(0)

        items = [
            self._branch_loss(m, gt_labels, gt_bboxes, mask_gt, anchors, strides, pos_weight)
            for m in branches
        ]
        loss = items[0] if len(items) == 1 else items[0] * AUX_WEIGHT + items[1]
        loss = loss * gains
        return loss.sum() * batch_size, loss.detach()
