"""Task-aligned assigner: our reference (``yolov9k.ops.assign``, torch backend) vs the dense
official algorithm (``official_assigner.py``), side by side, at 640 px (A = 8400), M in {20, 100}.

Peak extra memory: on CPU, measured in a fresh subprocess as the rise of the peak resident set size
over the resident size just before one call, inputs already built (``conftest.peak_rss_rise_mb``); on CUDA,
``torch.cuda.max_memory_allocated`` over the allocated memory before the call. Both go into
``benchmark.extra_info['peak_extra_mb']``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import QUICK, device_name, peak_rss_rise_mb, pick, requires_cuda, synchronize
from official_assigner import official_style_assign

from yolov9k.ops import use_backend
from yolov9k.ops.assign import assign
from yolov9k.ops.boxes import make_anchors

B = pick(16, 2)
IMG = 640
NC = 80
ROUNDS = pick(5, 1)
PROVIDERS = {"reference": assign, "official": official_style_assign}


def make_inputs(batch: int, m: int, device: str = "cpu", seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Realistic-looking inputs: boxes of 8..320 px, 60-100 % of the M slots valid per image."""
    g = torch.Generator().manual_seed(seed)
    feats = [torch.empty(0, 0, IMG // s, IMG // s) for s in (8, 16, 32)]
    anc, stride = make_anchors(feats, [8, 16, 32], 0.5)
    anc = anc * stride
    a = anc.shape[0]
    scores = torch.rand(batch, a, NC, generator=g) ** 3
    ltrb = torch.rand(batch, a, 4, generator=g) * stride[None] * 4
    pd = torch.cat([anc - ltrb[..., :2], anc + ltrb[..., 2:]], -1)
    wh = 8 + torch.rand(batch, m, 2, generator=g) * 312
    xy = torch.rand(batch, m, 2, generator=g) * (IMG - wh)
    gt = torch.cat([xy, xy + wh], -1)
    labels = torch.randint(0, NC, (batch, m, 1), generator=g).float()
    n_valid = (m * (0.6 + 0.4 * torch.rand(batch, 1, generator=g))).long()
    mask = (torch.arange(m)[None] < n_valid).float()[..., None]
    gt, labels = gt * mask, labels * mask
    return tuple(t.to(device) for t in (scores, pd, anc, labels, gt, mask))


def _peak_extra_mb_cpu(provider: str, batch: int, m: int) -> float:
    """Peak RSS rise (MB) of one call in a fresh process, inputs already built."""
    setup = (
        "from test_bench_assign import PROVIDERS, make_inputs\n"
        "from yolov9k.ops import use_backend\n"
        f"args = make_inputs({batch}, {m})"
    )
    return peak_rss_rise_mb(setup, f"with use_backend('torch'):\n    PROVIDERS[{provider!r}](*args)")


def _run(benchmark, provider: str, m: int, device: str) -> None:
    args = make_inputs(B, m, device)
    fn = PROVIDERS[provider]

    def call():
        with use_backend("torch"):
            out = fn(*args)
        synchronize(device)
        return out

    if device == "cuda":
        call()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _peak_extra_mb_cpu(provider, B, m)
    benchmark.extra_info.update(
        device=device_name(device),
        provider=provider,
        batch=B,
        anchors=args[0].shape[1],
        max_gt=m,
        classes=NC,
        topk=10,
        quick=QUICK,
        peak_extra_mb=round(peak, 1),
    )
    out = benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=0 if QUICK else 1)
    assert out[3].shape == (B, args[0].shape[1])


@pytest.mark.parametrize("m", [20, 100])
@pytest.mark.parametrize("provider", ["reference", "official"])
@pytest.mark.op_bench("assign")
def test_assign_cpu(benchmark, provider, m):
    benchmark.group = f"assign cpu B={B} A=8400 M={m}"
    _run(benchmark, provider, m, "cpu")


@requires_cuda
@pytest.mark.parametrize("m", [20, 100])
@pytest.mark.parametrize("provider", ["reference", "official"])
def test_assign_cuda(benchmark, provider, m):
    benchmark.group = f"assign cuda B={B} A=8400 M={m}"
    _run(benchmark, provider, m, "cuda")
