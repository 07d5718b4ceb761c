"""One training step (forward + loss + backward + optimizer step) of gelan-t and yolov9-t on CPU,
with our kernels (``auto``: the C++ assigner) and with the PyTorch references only (``torch``), in
the default (NCHW) memory layout and in ``channels_last`` (NHWC, the trainer's ``channels_last``
option: model and inputs).

Full: batch 8, imgsz 320; ``YOLOV9K_BENCH_QUICK=1``: batch 2, imgsz 128.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import device_name, pick
from yolov9k.engine.optim import build_optimizer
from yolov9k.loss import DetectionLoss
from yolov9k.models import build_model
from yolov9k.ops import use_backend

BATCH = pick(8, 2)
IMGSZ = pick(320, 128)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("model_name", ["gelan-t", "yolov9-t"])
def test_train_step_cpu(benchmark, model_name, backend, layout):
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=80).train()
    x = torch.rand(BATCH, 3, IMGSZ, IMGSZ)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = DetectionLoss(model)
    opt = build_optimizer(model, "SGD", lr=0.01, momentum=0.937, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    n = 4 * BATCH
    targets = torch.cat(
        [torch.arange(n).remainder(BATCH)[:, None].float(), torch.randint(0, 80, (n, 1), generator=g).float(),
         0.2 + 0.6 * torch.rand(n, 2, generator=g), 0.05 + 0.3 * torch.rand(n, 2, generator=g)], 1,
    )  # fmt: skip

    def step() -> float:
        with use_backend(backend):
            loss, _ = loss_fn(model(x), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    benchmark.group = f"train step cpu {model_name} B={BATCH} {IMGSZ}px"
    benchmark.extra_info.update(
        device=device_name("cpu"), batch=BATCH, imgsz=IMGSZ, dtype="float32", backend=backend, layout=layout
    )
    loss = benchmark.pedantic(step, rounds=pick(3, 2), warmup_rounds=1, iterations=1)
    assert loss == loss  # finite step ran
