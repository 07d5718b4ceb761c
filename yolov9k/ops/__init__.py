"""Dispatched operators of yolov9k (native kernels with PyTorch-reference fallbacks).

One module per op (``nms`` holds the pair ``batched_nms`` and ``postprocess``, which share their
conventions) holds its reference, kernel-op fakes and autograd, registration and public function
(docs/adding-an-op.md). Every such module must be imported here:
the registry raises for an op whose module was not (``_dispatch``). ``backends()`` tells which
implementation each op uses on this machine; ``_dispatch`` has the routing rules and
``YOLOV9K_BACKEND`` forces one.
"""

from __future__ import annotations

from yolov9k.ops import _guard, boxes
from yolov9k.ops._dispatch import BACKENDS, BackendUnavailableError, backends, triton_importable, use_backend
from yolov9k.ops._extension import extension_cuda_version, extension_loaded
from yolov9k.ops.assign import assign
from yolov9k.ops.bn_silu import bn_silu
from yolov9k.ops.box_iou import box_iou
from yolov9k.ops.concat_conv1x1_silu import concat_conv1x1_silu
from yolov9k.ops.hsv_jitter import hsv_jitter
from yolov9k.ops.hsv_jitter import kernel_matches_opencv as hsv_jitter_kernel_matches_opencv
from yolov9k.ops.nms import batched_nms, postprocess, postprocess_fixed

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "assign",
    "backends",
    "batched_nms",
    "bn_silu",
    "backend_info",
    "box_iou",
    "boxes",
    "concat_conv1x1_silu",
    "extension_loaded",
    "extension_cuda_version",
    "hsv_jitter",
    "hsv_jitter_kernel_matches_opencv",
    "postprocess",
    "postprocess_fixed",
    "use_backend",
]


def backend_info() -> dict[str, object]:
    """Everything a bug report needs about the kernels: extension, triton, per-op backends, and the
    kernels that failed their first-use check in this process (``kernel_fallbacks``: op, backend,
    device, variant, error; see ``yolov9k.ops._guard``)."""
    import torch

    return {
        "torch": torch.__version__,
        "extension": extension_loaded(),
        "extension_cuda": extension_cuda_version(),
        "triton": triton_importable(),
        "cuda_available": torch.cuda.is_available(),
        "ops_cpu": backends("cpu"),
        **({"ops_cuda": backends("cuda")} if torch.cuda.is_available() else {}),
        "strict_kernels": _guard.strict(),
        "kernel_fallbacks": _guard.fallbacks(),
    }
