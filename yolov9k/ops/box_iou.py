"""The ``box_iou`` op, in one home: the pairwise IoU matrix of two sets of xyxy boxes.

Reference (:func:`box_iou_reference`), gradient (:func:`box_iou_backward`), the fake and autograd of
the native ``yolov9k::box_iou`` (schema ``csrc/box_iou.cpp``, kernels ``csrc/cpu/box_iou_kernel.cpp``
and ``csrc/cuda/box_iou_kernel.cu``), their registration, and the public :func:`box_iou`. Which
kernel runs: ``yolov9k.ops._dispatch``. Walk-through: docs/adding-an-op.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

from yolov9k.ops import _dispatch
from yolov9k.ops._dispatch import KernelOp
from yolov9k.ops.boxes import box_area

__all__ = ["box_iou", "box_iou_backward", "box_iou_reference"]

# --- reference and gradient ----------------------------------------------------------------------

_IOU_BLOCK = 1 << 20  # (row, column) pairs per block: ~40 MB of float32 intermediates


def _row_blocks(n: int, m: int) -> list[slice]:
    """Row slices of an (n, m) IoU matrix with at most ``_IOU_BLOCK`` pairs each (at least one row)."""
    rows = max(1, _IOU_BLOCK // max(m, 1))
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def _iou_block(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every row of ``a`` with every row of ``b`` (same dtype), the arithmetic of the op."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    ok = union > 0  # else IoU 0; dividing by 1 there keeps 0/0 out of the gradient
    return torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)), torch.zeros_like(inter))


def box_iou_reference(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes in PyTorch: the reference of the ``yolov9k::box_iou`` op and the
    ``torch`` backend of :func:`box_iou` (no argument checks).

    Computed in blocks of rows, so that its memory is the output plus ~40 MB (not several N x M
    temporaries), like the native kernels'. Differentiable (autograd through the blocks).

    Args:
        boxes1: Tensor[N, 4] xyxy.
        boxes2: Tensor[M, 4] xyxy.
    Returns:
        Tensor[N, M]: ``inter / (area1 + area2 - inter)``, 0 where the union is not positive. Computed
        in float32 (float64 for float64 input) and returned in the input dtype.
    """
    dtype = boxes1.dtype
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    a, b = boxes1.to(compute), boxes2.to(compute)
    n, m = a.shape[0], b.shape[0]
    blocks = _row_blocks(n, m)
    if len(blocks) <= 1:
        return _iou_block(a, b).to(dtype)
    out = torch.empty(n, m, dtype=dtype, device=a.device)
    for rows in blocks:
        out[rows] = _iou_block(a[rows], b)  # a CopySlices step when gradients are needed
    return out


def box_iou_backward(boxes1: Tensor, boxes2: Tensor, grad: Tensor, needs: tuple[bool, bool]) -> tuple:
    """Gradients of ``sum(grad * box_iou(boxes1, boxes2))`` w.r.t. the boxes, block by block (memory
    as the forward): the autograd formula of the native ``yolov9k::box_iou`` kernels, so that every
    backend gives an IoU loss term the same gradient as :func:`box_iou_reference`.

    Returns:
        (grad of boxes1 or None, grad of boxes2 or None), each in its input's dtype.
    """
    grad1 = torch.zeros_like(boxes1) if needs[0] else None
    grad2 = torch.zeros_like(boxes2) if needs[1] else None
    b = boxes2.detach().requires_grad_(needs[1])
    with torch.enable_grad():
        for rows in _row_blocks(boxes1.shape[0], boxes2.shape[0]):
            a = boxes1[rows].detach().requires_grad_(needs[0])
            inputs = [t for t, need in ((a, needs[0]), (b, needs[1])) if need]
            got = list(torch.autograd.grad(_iou_block_as(a, b, boxes1.dtype), inputs, grad[rows]))
            if needs[0]:
                grad1[rows] = got.pop(0)
            if needs[1]:
                grad2 += got.pop(0)
    return grad1, grad2


def _iou_block_as(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    return _iou_block(a.to(compute), b.to(compute)).to(dtype)


# --- the native op: fake, autograd, registration -------------------------------------------------


def _fake(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    torch._check(boxes1.dim() == 2 and boxes1.shape[1] == 4, lambda: "boxes1 must be (N, 4)")
    torch._check(boxes2.dim() == 2 and boxes2.shape[1] == 4, lambda: "boxes2 must be (M, 4)")
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


def _setup_context(ctx, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
    boxes1, boxes2 = ctx.saved_tensors
    return box_iou_backward(boxes1, boxes2, grad, tuple(ctx.needs_input_grad[:2]))


def _native(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return torch.ops.yolov9k.box_iou(boxes1, boxes2)


# The native kernels' backward is the reference's gradient (an IoU loss term never gets none).
_dispatch.define(
    "box_iou",
    reference=box_iou_reference,
    kernel_ops=[KernelOp("yolov9k::box_iou", fake=_fake, backward=_backward, setup_context=_setup_context)],
)
for _backend in ("cpp", "cuda"):
    _dispatch.register("box_iou", _backend, _native, native_op="box_iou")


# --- public function -----------------------------------------------------------------------------


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU matrix of xyxy boxes (dispatched: C++ / CUDA kernel, or :func:`box_iou_reference`).

    Args:
        boxes1: Tensor[N, 4] xyxy, floating point.
        boxes2: Tensor[M, 4] xyxy, same device.
    Returns:
        Tensor[N, M] in the input dtype (computed in float32, or float64 for float64 input):
        ``inter / (area1 + area2 - inter)``, 0 where the union is not positive.

    Every backend gives the same values, the same gradient (the native kernels' backward is
    :func:`box_iou_backward`) and the same memory: the output plus at most ~40 MB of temporaries.

    Raises:
        ValueError / TypeError: not (N, 4) floating-point boxes on one device.
    """
    for name, t in (("boxes1", boxes1), ("boxes2", boxes2)):
        if t.dim() != 2 or t.shape[-1] != 4:
            raise ValueError(f"box_iou: {name} must have shape (N, 4), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"box_iou: {name} must be floating point, got {t.dtype}")
    if boxes1.device != boxes2.device:
        raise ValueError(f"box_iou: boxes on different devices ({boxes1.device}, {boxes2.device})")
    _, fn = _dispatch.select("box_iou", boxes1.device)
    return fn(boxes1, boxes2)
