"""Fused Conv-BN-SiLU / ELAN aggregation (``yolov9k.ops.bn_silu``, ``yolov9k.ops.concat_conv1x1_silu``):
eager vs torch.compile vs ours.

GPU cases (skipped without CUDA; run by benchmarks/gpu_check.sh on a lent GPU):
  * per-block latency of gelan-c's ELAN blocks (fused, eval, channels-last) at batch 32, 640 px:
    eager vs ``torch.compile`` (fp16 only, compile time kept out of the timing by a warm-up round)
    vs ``accelerate`` with the Triton backend, fp16 and bf16;
  * full fused gelan-c inference forward (batch 32, fp16, channels-last), kernels on vs off;
  * a yolov9-c training step (forward + backward of a stand-in loss, AMP fp16, batch 16,
    channels-last), kernels on vs off; the loss is left out so the model path is what is compared.
CPU cases (also in quick mode, smaller):
  * the reference ``bn_silu`` vs eager BatchNorm2d + SiLU (both torch), forward;
  * training forward + backward of ``bn_silu`` (float32, NCHW, running-stat update included): the
    C++ op (``bn_silu_cpp``) vs the reference (eager BatchNorm2d + SiLU) at gelan-t's shapes of a
    batch of 8 at 320 px, (8, 16, 160, 160), (8, 64, 40, 40) and (8, 128, 20, 20);
  * forward + backward of ADown / AConv's 2x2 average pool: ``avg_pool_2x2`` (a depthwise conv on
    CPU NCHW) vs ATen's ``avg_pool2d``, at (8, 64, 40, 40) and (8, 32, 80, 80).

TODO(gpu): a measured crossover (below some size eager wins) would become a size rule in
``yolov9k.ops._dispatch.select``; until then Triton runs for every CUDA shape.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from conftest import QUICK, device_name, pick, requires_cuda, synchronize
from torch import nn

from yolov9k.models import build_model
from yolov9k.models.accelerate import accelerate
from yolov9k.models.blocks import SPPELAN, RepNCSPELAN4, avg_pool_2x2
from yolov9k.ops import use_backend
from yolov9k.ops._extension import has_native_kernel
from yolov9k.ops.bn_silu import bn_silu_cpp, bn_silu_reference

BATCH = pick(32, 2)
TRAIN_BATCH = pick(16, 2)
IMG = pick(640, 160)
ROUNDS = pick(10, 2)
# Representative gelan-c aggregation blocks (layer indices): stride 4, 16 and the SPPELAN.
BLOCK_LAYERS = (2, 6, 9)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# gelan-t's BN shapes at batch 8, 320 px (quick: batch 2, a quarter of the size).
CPU_TRAIN_SHAPES = [
    pick(s, (2, s[1], s[2] // 4, s[3] // 4)) for s in ((8, 16, 160, 160), (8, 64, 40, 40), (8, 128, 20, 20))
]


# ADown / AConv pool inputs of gelan-t at batch 8, 320 px (quick: batch 2, a quarter of the size).
CPU_POOL_SHAPES = [pick(s, (2, s[1], s[2] // 4, s[3] // 4)) for s in ((8, 64, 40, 40), (8, 32, 80, 80))]


def _time(benchmark, fn, device) -> None:
    def run():
        fn()
        synchronize(device)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@functools.lru_cache(maxsize=1)
def _gelan_c_block_inputs() -> dict[int, tuple[nn.Module, tuple[int, ...]]]:
    """{layer: (fused eval block on CUDA, input shape at BATCH x IMG)} for BLOCK_LAYERS of gelan-c."""
    model = build_model("gelan-c").cuda().eval().fuse()
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = [
        model.model[i].register_forward_pre_hook(lambda m, a, i=i: shapes.setdefault(i, tuple(a[0].shape)))
        for i in BLOCK_LAYERS
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, IMG, IMG, device="cuda"))
    for h in hooks:
        h.remove()
    out = {}
    for i in BLOCK_LAYERS:
        block = model.model[i]
        assert isinstance(block, (RepNCSPELAN4, SPPELAN)), type(block)
        out[i] = (block, (BATCH, *shapes[i][1:]))
    return out


@requires_cuda
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("provider", ["eager", "compile", "ours"])
@pytest.mark.parametrize("layer", BLOCK_LAYERS)
@pytest.mark.op_bench("concat_conv1x1_silu")
def test_gelan_c_elan_block(benchmark, layer, provider, dtype):
    if provider == "compile" and dtype != "fp16":
        pytest.skip("torch.compile measured in fp16 only (compile time budget of gpu_check.sh)")
    block, shape = _gelan_c_block_inputs()[layer]
    dt = DTYPES[dtype]
    block = copy.deepcopy(block).to(dtype=dt, memory_format=torch.channels_last)
    x = torch.randn(shape, device="cuda", dtype=dt).contiguous(memory_format=torch.channels_last)
    backend = "torch"
    if provider == "compile":
        block = torch.compile(block)
    elif provider == "ours":
        block, backend = accelerate(block), "triton"

    def fn():
        with torch.no_grad(), use_backend(backend):
            block(x)

    benchmark.extra_info.update(
        device=device_name("cuda"), dtype=dtype, mode="fused-eval", layer=layer, shape=list(shape)
    )
    _time(benchmark, fn, "cuda")


@requires_cuda
@pytest.mark.parametrize("kernels", ["off", "on"])
def test_gelan_c_fused_inference(benchmark, kernels):
    model = build_model("gelan-c").cuda().eval().fuse().half().to(memory_format=torch.channels_last)
    if kernels == "on":
        accelerate(model)
    x = torch.randn(BATCH, 3, IMG, IMG, device="cuda", dtype=torch.float16)
    x = x.contiguous(memory_format=torch.channels_last)

    def fn():
        with torch.no_grad(), use_backend("triton" if kernels == "on" else "torch"):
            model(x)

    benchmark.extra_info.update(device=device_name("cuda"), dtype="fp16", mode="inference", batch=BATCH)
    _time(benchmark, fn, "cuda")


@requires_cuda
@pytest.mark.parametrize("kernels", ["off", "on"])
def test_yolov9_c_train_step(benchmark, kernels):
    model = build_model("yolov9-c").cuda().train().to(memory_format=torch.channels_last)
    if kernels == "on":
        accelerate(model)
    x = torch.randn(TRAIN_BATCH, 3, IMG, IMG, device="cuda").contiguous(memory_format=torch.channels_last)

    def fn():
        with use_backend("triton" if kernels == "on" else "torch"):
            with torch.autocast("cuda", dtype=torch.float16):
                aux, main = model(x)
                loss = sum(m.float().square().mean() for m in (*aux, *main))
            loss.backward()
        model.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    benchmark.extra_info.update(device=device_name("cuda"), dtype="amp-fp16", mode="train", batch=TRAIN_BATCH)
    _time(benchmark, fn, "cuda")
    benchmark.extra_info["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20


@pytest.mark.parametrize("provider", ["eager_module", "reference"])
def test_cpu_bn_silu_reference(benchmark, provider):
    """CPU, torch only: the reference op costs what the eager BatchNorm2d + SiLU pair costs."""
    shape = (pick(8, 2), 64, pick(80, 20), pick(80, 20))
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    bn = nn.BatchNorm2d(64, eps=1e-3, momentum=0.03)
    act = nn.SiLU()
    if provider == "eager_module":
        fn = lambda: act(bn(x))  # noqa: E731
    else:
        args = (bn.weight, bn.bias, bn.running_mean, bn.running_var, True, 0.03, 1e-3)
        fn = lambda: bn_silu_reference(x, *args)  # noqa: E731
    with torch.no_grad():
        benchmark.extra_info.update(
            device=device_name("cpu"), dtype="fp32", mode="train-forward", quick=QUICK
        )
        _time(benchmark, fn, "cpu")


@pytest.mark.skipif(not has_native_kernel("bn_silu_train", "CPU"), reason="yolov9k._C without bn_silu_train")
@pytest.mark.parametrize("provider", ["reference", "cpp"])
@pytest.mark.parametrize("shape", CPU_TRAIN_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.op_bench("bn_silu")
def test_cpu_bn_silu_train_forward_backward(benchmark, shape, provider):
    """CPU training step of BN + SiLU: forward (running-stat update included) + backward to x, weight
    and bias; ``cpp`` = the C++ ops, ``reference`` = eager BatchNorm2d + SiLU."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 2 + 1).requires_grad_()
    grad = torch.randn(shape, generator=gen)
    bn = nn.BatchNorm2d(shape[1], eps=1e-3, momentum=0.03)
    impl = bn_silu_cpp if provider == "cpp" else bn_silu_reference
    args = (bn.weight, bn.bias, bn.running_mean, bn.running_var, True, 0.03, 1e-3, bn.num_batches_tracked)

    def fn():
        impl(x, *args).backward(grad)
        x.grad = bn.weight.grad = bn.bias.grad = None

    benchmark.extra_info.update(
        device=device_name("cpu"), dtype="fp32", mode="train-forward-backward", shape=list(shape), quick=QUICK
    )
    _time(benchmark, fn, "cpu")


@pytest.mark.parametrize("provider", ["avg_pool2d", "depthwise_conv"])
@pytest.mark.parametrize("shape", CPU_POOL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cpu_avg_pool_2x2_forward_backward(benchmark, shape, provider):
    """CPU, float32 NCHW: the 2x2/1 average pool of ADown / AConv, forward + backward to x."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_()
    grad = torch.randn(shape[0], shape[1], shape[2] - 1, shape[3] - 1, generator=gen)
    pool = avg_pool_2x2 if provider == "depthwise_conv" else lambda t: F.avg_pool2d(t, 2, 1, 0, False, True)

    def fn():
        pool(x).backward(grad)
        x.grad = None

    benchmark.extra_info.update(
        device=device_name("cpu"), dtype="fp32", mode="forward-backward", shape=list(shape), quick=QUICK
    )
    _time(benchmark, fn, "cpu")
