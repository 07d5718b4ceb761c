"""Post-processing (official non_max_suppression): official-style baseline vs our PyTorch reference
vs our C++ (CPU) / CUDA kernels, on a synthetic YOLO eval output (B, 84, 8400).

Target (MISSION.md): B=32, conf 0.001, multi-label (validation) >= 10x the official on CPU.
"""

from __future__ import annotations

import pytest
import torch
from conftest import device_name, pick, requires_cuda, synchronize
from official_nms import NMS_BACKEND, official_style_nms
from reference_data import reference_dir

from yolov9k import ops
from yolov9k.ops.nms import postprocess, postprocess_fixed

ANCHORS = pick(8400, 1000)
NC = 80
BATCHES = pick([1, 16, 32], [1])
SETTINGS = {
    "val": dict(conf_thres=0.001, iou_thres=0.7, multi_label=True),
    "detect": dict(conf_thres=0.25, iou_thres=0.45),
}


def synthetic_pred(batch: int, device: str = "cpu") -> torch.Tensor:
    """(B, 84, A) like a trained model's output: the NMS fixture's ``synthetic_pred`` (2 images:
    20 objects x 10 overlapping predictions over low-score background, ~13k (anchor, class) pairs
    above 0.001 per image) tiled to ``batch``."""
    fixture = reference_dir() / "nms_fixture.pt"
    base = torch.load(fixture, weights_only=True)["synthetic_pred"][:, :, :ANCHORS]
    return base.repeat((batch + 1) // 2, 1, 1)[:batch].contiguous().to(device)


def _run(benchmark, provider: str, batch: int, setting: str, device: str) -> None:
    pred = synthetic_pred(batch, device)
    kwargs = SETTINGS[setting]

    def call():
        if provider == "official":
            out = official_style_nms(pred, **kwargs)
        elif provider == "fixed":
            with ops.use_backend("cuda"):
                out = postprocess_fixed(pred, **kwargs)
        else:
            with ops.use_backend(provider):
                out = postprocess(pred, **kwargs)
        synchronize(device)
        return out

    benchmark.group = f"postprocess {device} B={batch} A={ANCHORS} {setting}"
    benchmark.extra_info.update(
        device=device_name(device),
        batch=batch,
        anchors=ANCHORS,
        provider=provider,
        **kwargs,
        official_nms_backend=NMS_BACKEND,
    )
    if provider in ("official", "torch") and batch >= 16:
        benchmark.pedantic(call, rounds=1, iterations=1)  # seconds per call: one round
    else:
        benchmark(call)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("provider", ["official", "torch", "cpp"])
@pytest.mark.op_bench("postprocess")
def test_postprocess_cpu(benchmark, provider, batch, setting):
    if provider == "cpp" and not ops.extension_loaded():
        pytest.skip("yolov9k._C not built")
    _run(benchmark, provider, batch, setting, "cpu")


@requires_cuda
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("provider", ["official", "cuda", "fixed"])
def test_postprocess_cuda(benchmark, provider, batch, setting):
    _run(benchmark, provider, batch, setting, "cuda")


def _nms_inputs(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` boxes in clusters over a 640 px image, 80 classes."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(n // 10 + 1, 2, generator=gen) * 640
    c = centres[torch.arange(n) // 10] + torch.randn(n, 2, generator=gen) * 4
    wh = torch.rand(n, 2, generator=gen) * 120 + 8
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
    scores = torch.rand(n, generator=gen)
    idxs = torch.randint(NC, (n,), generator=gen)
    return boxes.to(device), scores.to(device), idxs.to(device)


@requires_cuda
@pytest.mark.parametrize("n", pick([1000, 30000], [1000]))
@pytest.mark.parametrize("provider", ["cuda", "torchvision"])
@pytest.mark.op_bench("batched_nms")
def test_batched_nms_cuda(benchmark, provider, n):
    boxes, scores, idxs = _nms_inputs(n, "cuda")
    if provider == "torchvision":
        tv_ops = pytest.importorskip("torchvision.ops")
        fn = lambda: tv_ops.batched_nms(boxes, scores, idxs, 0.5)  # noqa: E731
    else:
        fn = lambda: ops.batched_nms(boxes, scores, idxs, 0.5)  # noqa: E731

    def call():
        out = fn()
        synchronize("cuda")
        return out

    benchmark.group = f"batched_nms cuda N={n}"
    benchmark.extra_info.update(device=device_name("cuda"), n=n, provider=provider)
    benchmark(call)
