"""One training step (forward + loss + backward + optimizer step) of gelan-t and yolov9-t on CPU,
with our kernels (``auto``: the C++ assigner) and with the PyTorch references only (``torch``), in
the default (NCHW) memory layout and in ``channels_last`` (NHWC, the trainer's ``channels_last``
option: model and inputs).

Full: batch 8, imgsz 320; ``YOLOV9K_BENCH_QUICK=1``: batch 2, imgsz 128.
"""

from __future__ import annotations

import pytest
from conftest import device_name, pick
from profile_step import make_step

from yolov9k.ops import use_backend

BATCH = pick(8, 2)
IMGSZ = pick(320, 128)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("model_name", ["gelan-t", "yolov9-t"])
def test_train_step_cpu(benchmark, model_name, backend, layout):
    train_step, _ = make_step(model_name, BATCH, IMGSZ, layout == "channels_last")

    def step() -> float:
        with use_backend(backend):
            return train_step()

    benchmark.group = f"train step cpu {model_name} B={BATCH} {IMGSZ}px"
    benchmark.extra_info.update(
        device=device_name("cpu"), batch=BATCH, imgsz=IMGSZ, dtype="float32", backend=backend, layout=layout
    )
    loss = benchmark.pedantic(step, rounds=pick(3, 2), warmup_rounds=1, iterations=1)
    assert loss == loss  # finite step ran
