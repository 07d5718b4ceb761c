"""The model a user-facing verb was given (a zoo name, a checkpoint file or a module): checked early,
resolved to a model and made ready for inference.

Devices and run folders are ``yolov9k.run_setup``'s (training uses them too).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from yolov9k.checkpoint import load_model
from yolov9k.errors import InputNotFoundError, IsAFolderError
from yolov9k.models import MODELS, build_model, reparameterize

__all__ = [
    "check_model_arg",
    "resolve_model",
    "to_inference_model",
    "inference_copies",
    "cpu_workers",
    "OneDNNConv2d",
    "use_onednn_1x1",
    "LOGGER",
]

LOGGER = logging.getLogger("yolov9k")

ModelArg = nn.Module | str | os.PathLike


def check_model_arg(model: ModelArg) -> None:
    """Fail early (before data sets are scanned) when ``model`` names no file and no zoo model."""
    if isinstance(model, str | os.PathLike) and str(model) not in MODELS:
        if Path(model).expanduser().is_dir():
            raise IsAFolderError(f"model {str(model)!r} is a folder, not a checkpoint file")
        if not Path(model).expanduser().is_file():
            raise InputNotFoundError(
                f"model {str(model)!r} is neither a checkpoint file nor a zoo name ({', '.join(MODELS)})"
            )


def resolve_model(
    model: ModelArg,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
    fuse: bool = True,
) -> nn.Module:
    """An eval-mode model on ``device`` from a model object, a checkpoint file or a zoo name.

    Args:
        model: a ``DetectionModel`` (used as is: moved and put in eval mode, never fused, since it
            belongs to the caller), a checkpoint path (official pickle, yolov9k checkpoint or state
            dict; loaded safely), or a zoo name such as ``"gelan-t"`` (random weights, with a warning).
        device: where the model goes.
        num_classes: only for zoo names.
        fuse: fold BatchNorm and RepConvN of models this function creates.
    Raises:
        FileNotFoundError: neither a file nor a zoo name. ValueError / UnsafeCheckpointError: from
        the checkpoint reader (not a checkpoint, corrupt, foreign pickled code).
    """
    device = torch.device(device)
    if isinstance(model, nn.Module):
        if not hasattr(model, "stride") or not hasattr(model, "nc"):
            raise TypeError(f"expected a yolov9k DetectionModel, got {type(model).__name__}")
        return model.to(device).eval()
    if not isinstance(model, str | os.PathLike):
        raise TypeError(
            f"model must be a DetectionModel, a checkpoint path or a zoo name, got {type(model).__name__}"
        )
    text = str(model)
    if text in MODELS and not Path(text).is_file():
        warnings.warn(f"model {text!r} is a zoo name: random weights (pass a checkpoint file)", stacklevel=3)
        net = build_model(text, num_classes=num_classes).to(device).eval()
        return net.fuse() if fuse else net
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputNotFoundError(
            f"model {text!r} is neither a checkpoint file nor a zoo name ({', '.join(MODELS)})"
        )
    return load_model(path, device=device, fuse=fuse)


def to_inference_model(model: nn.Module, fuse: bool = True) -> nn.Module:
    """A copy of ``model`` ready for deployment: PGI branch removed (yolov9-X -> gelan-X), BN and
    RepConvN folded, eval mode, no gradients. The caller's model is not modified.
    """
    net = copy.deepcopy(model).eval()
    if getattr(net, "is_dual", False):
        net = reparameterize(net).eval()
    if fuse and hasattr(net, "fuse"):  # stand-in detectors (tests) may have nothing to fuse
        net.fuse()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def inference_copies(
    model: nn.Module,
    copies: int,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    owned: bool = False,
    onednn_1x1: bool = False,
) -> list[nn.Module]:
    """``copies`` independent inference models (one per prediction worker: a forward pass caches
    anchors in its head, so two threads never share one).

    Args:
        model: an eval-mode model on its device. owned: it was made for this run (from a file or a
            zoo name, already fused) and may become the first copy; otherwise it is the caller's and
            every copy is :func:`to_inference_model`'s (PGI branch removed, fused), the caller's
            model untouched.
        dtype: weight dtype (float16 for fp16 inference).
        channels_last: NHWC memory format (faster on CPU: ``benchmarks/RESULTS.md``, issue 21).
        onednn_1x1: 1x1 convs as :class:`OneDNNConv2d` (CPU float32; see :func:`use_onednn_1x1`).
    """
    base = model if owned else to_inference_model(model)
    if onednn_1x1:
        use_onednn_1x1(base)
    for p in base.parameters():
        p.requires_grad_(False)
    base = base.to(dtype=dtype)
    if channels_last:
        base = base.to(memory_format=torch.channels_last)
    return [base] + [copy.deepcopy(base) for _ in range(copies - 1)]


def cpu_workers(threads: int) -> tuple[int, int]:
    """(workers, torch threads per worker) for CPU prediction with ``threads`` threads in all.

    Two workers, each running whole images on half the threads: on a 2-core AMD EPYC (AVX-512) two
    single-threaded forward passes side by side beat one two-threaded pass over the same images,
    6.6 vs 4.4 images/s (``benchmarks/RESULTS.md``, issue 21); one worker on one thread.
    """
    workers = 2 if threads >= 2 else 1
    return workers, max(1, threads // workers)


class OneDNNConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose CPU float32 forward always runs oneDNN's convolution (same parameters).

    ATen sends a 1x1 convolution of a small batch on one thread to its own GEMM path
    (``_slow_conv2d_forward``, chosen when that was faster single-threaded), every other CPU float32
    convolution to oneDNN. With channels_last maps on a 2-core AMD EPYC (AVX-512), one thread per
    prediction worker, oneDNN is faster: gelan-c forward 0.92 vs 1.01 s, gelan-s 278 vs 288 ms
    (``benchmarks/RESULTS.md``, issue 21). The sums are the same up to float rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
        ):
            return torch.mkldnn_convolution(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super().forward(x)


def use_onednn_1x1(model: nn.Module) -> int:
    """Turn ``model``'s plain 1x1 ``nn.Conv2d`` layers into :class:`OneDNNConv2d` (in place: the
    class changes, parameters and state-dict keys stay); a no-op without oneDNN. Returns how many."""
    if not torch.backends.mkldnn.is_available():
        return 0
    n = 0
    for m in model.modules():
        if type(m) is nn.Conv2d and m.kernel_size == (1, 1):
            m.__class__ = OneDNNConv2d
            n += 1
    return n
