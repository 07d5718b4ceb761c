"""Compile every Triton kernel specialisation the wrappers can launch, for real GPU targets, without a GPU.

Run by ``.ci/check_triton_build.sh``; three steps, each its own process:

``collect`` (the project's venv: yolov9k importable)
    Runs the real host wrappers of ``kernels/`` (``bn_silu``, the concat GEMM, the assigner) on
    meta tensors with ``JITFunction.run`` / ``Autotuner.run`` replaced by a recorder, so every launch
    argument (dtypes, data-pointer alignment, integer values, constexprs) is the one a real launch
    gets. Shapes: the *default path* (every zoo model at imgsz 320 / 416 / 640 / 1280, training
    (fp32 and AMP fp16 / bf16: BN + SiLU forward and backward, the assigner as the loss calls it) and
    inference (unfused eval: BN + SiLU forward; fused: the concat GEMM, fp16 / bf16),
    NCHW and channels-last, batch 16, 1 and an odd last batch), plus a *cover* set of every other
    dtype, layout and constexpr the wrappers accept (fp64, channel slices, strided scores,
    other exponents and top-k). Writes a JSON list of launches.
``compile`` (any venv with torch and the Triton under test)
    Swaps Triton's driver for a stub that reports ``GPUTarget("cuda", cc, 32)``, replays each
    launch through the kernel's own JIT path (``warmup``) so that *this* Triton computes the
    specialisation key, keeps one launch per key (every autotune config of an autotuned kernel),
    and compiles them to cubin in ``--jobs`` processes. Registers and spills come from the ptxas
    log (``-v``, which Triton always passes), shared memory from the kernel's metadata.
``report``
    Prints one table (kernel, variant, target, Triton, registers, spill bytes, shared memory,
    warps/stages) and the failures (:func:`verdict`): a compile error; shared memory over the
    target's per-block opt-in limit in a config the code can pick (the concat GEMM's launch-time
    pruning, ``kernels.concat_conv1x1.configs_that_fit``, decides what it can pick); any spill in a
    default-path specialisation. ``--markdown`` writes the summary table for RESULTS.md.

``YOLOV9K_TRITON_CHECK_PLANT=spill|smem`` adds a deliberately spilling default-path kernel or an
over-limit config that the code would pick, to show that the check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Per-block opt-in shared memory (cudaDevAttrMaxSharedMemoryPerBlockOptin), bytes, by compute capability.
SMEM_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448, 120: 101376}
# Targets whose code is the sm_80 code (same Triton lowering, same shared memory use): their limit is
# checked against the sm_80 compile instead of compiling again.
SAME_CODE_AS = {86: 80, 89: 80}
IMGSZ = (320, 416, 640, 1280)
BATCHES = (16, 1, 3)  # the training default, a single image, an odd last batch
KERNEL_MODULES = ("bn_silu", "concat_conv1x1", "assign")


# --------------------------------------------------------------------------------------------------
# Launch records (what the collect step writes and the compile step replays)


def _encode(value):
    """JSON form of one kernel argument: tensors by dtype and data-pointer alignment (what Triton
    specialises on), scalars as they are."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"T": str(value.dtype).removeprefix("torch."), "align": value.data_ptr() % 16}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a kernel argument of type {type(value).__name__}")


def _decode(value):
    import torch

    if isinstance(value, dict) and "T" in value:
        dtype = getattr(torch, value["T"])
        elem = torch.empty((), dtype=dtype).element_size()
        base = torch.empty(64, dtype=dtype, device="meta")
        return base[value["align"] // elem :]
    return value


@dataclass
class Launch:
    kernel: str  # "<module>:<kernel function>"
    args: list
    kwargs: dict
    autotune: bool
    scenario: str
    default: bool

    def key(self) -> str:
        return json.dumps([self.kernel, self.args, self.kwargs], sort_keys=True)


class _Recorder:
    """Replaces JITFunction.run / Autotuner.run while the wrappers run: records, launches nothing."""

    def __init__(self) -> None:
        self.launches: dict[str, Launch] = {}
        self.scenario = ""
        self.default = False

    def record(self, jit_fn, args, kwargs, autotune: bool) -> None:
        name = f"{jit_fn.fn.__module__.rsplit('.', 1)[-1]}:{jit_fn.fn.__name__}"
        kwargs = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
        launch = Launch(
            name, [_encode(a) for a in args], {k: _encode(v) for k, v in kwargs.items()}, autotune,
            self.scenario, self.default,
        )  # fmt: skip
        old = self.launches.get(launch.key())
        if old is None:
            self.launches[launch.key()] = launch
        elif self.default and not old.default:
            old.default, old.scenario = True, self.scenario

    @contextlib.contextmanager
    def active(self):
        from triton.runtime import autotuner, jit

        recorder = self
        saved = jit.JITFunction.run, autotuner.Autotuner.run

        def jit_run(self, *args, grid, warmup, **kwargs):
            recorder.record(self, args, kwargs, autotune=False)

        def tuned_run(self, *args, **kwargs):
            recorder.record(self.fn, args, kwargs, autotune=True)

        jit.JITFunction.run, autotuner.Autotuner.run = jit_run, tuned_run
        try:
            yield self
        finally:
            jit.JITFunction.run, autotuner.Autotuner.run = saved

    @contextlib.contextmanager
    def scene(self, label: str, default: bool) -> Iterator[None]:
        """Launches inside the block belong to scenario ``label`` (a default path or not)."""
        saved = self.scenario, self.default
        self.scenario, self.default = label, default
        try:
            yield
        finally:
            self.scenario, self.default = saved


# --------------------------------------------------------------------------------------------------
# collect: run the wrappers on meta tensors


def _meta_like(shape, stride, offset, dtype):
    """A meta tensor with these sizes, strides and storage offset (the offset sets the alignment)."""
    import torch

    span = 1 + offset + sum((s - 1) * st for s, st in zip(shape, stride) if s > 0)
    return torch.empty(span, dtype=dtype, device="meta").as_strided(shape, stride, offset)


def _rebatch(spec, n):
    """A recorded (shape, stride, offset) at batch 1 rescaled to batch ``n`` (dense layouts only)."""
    shape, stride, offset = spec
    return (n, *shape[1:]), stride, offset


def _model_shapes(name: str) -> tuple[set, set]:
    """(BN inputs, concat-GEMM input lists) of one zoo model at batch 1, every imgsz and layout.

    One meta forward in training (BN inputs) and one fused (the 1x1 Conv + SiLU inputs, a block's
    branch list or a single map) at 640 px in NCHW; the other sizes and channels-last follow by
    :func:`_relayout` (every such map is H / s x W / s for its level's stride s, so it scales with
    imgsz). Items: ((shape, stride, storage offset), imgsz, channels_last) and
    (((input specs), weight shape), imgsz, channels_last).
    """
    import torch

    from yolov9k.models import build_model
    from yolov9k.models.blocks import Conv

    bn_640: set = set()
    concat_640: set = set()

    def spec(t):
        assert t.is_contiguous() or t.stride()[1] == t.shape[2] * t.shape[3], (
            "a dense NCHW map or a channel slice"
        )
        return tuple(t.shape), t.stride(), t.storage_offset()

    def forward_concat(self, inputs):
        concat_640.add((tuple(spec(t) for t in inputs), tuple(self.conv.weight.shape)))
        return original(self, inputs)

    model = build_model(name).to("meta")
    x = torch.empty(1, 3, 640, 640, device="meta")
    hooks = [
        m.conv.register_forward_hook(lambda mod, a, out: bn_640.add(spec(out)))
        for m in model.modules()
        if isinstance(m, Conv) and m.bn is not None
    ]
    model.train()(x)
    for h in hooks:
        h.remove()
    model.eval().fuse()
    original = Conv.forward_concat
    Conv.forward_concat = forward_concat
    try:
        with torch.no_grad():
            model.forward_main(x)  # the maps; decoding needs real anchors, and runs no conv
    finally:
        Conv.forward_concat = original
    bn_inputs, concat_inputs = set(), set()
    for imgsz in IMGSZ:
        for cl in (False, True):
            bn_inputs.update((_relayout(s, imgsz / 640, cl), imgsz, cl) for s in bn_640)
            concat_inputs.update(
                ((tuple(_relayout(s, imgsz / 640, cl) for s in specs), w), imgsz, cl)
                for specs, w in concat_640
            )
    return bn_inputs, concat_inputs


def _relayout(spec, scale: float, channels_last: bool):
    """An NCHW (shape, stride, offset) of a dense map or channel slice (parent with C_total
    channels, from channel c0) at ``scale`` times its H and W, in NCHW or channels-last."""
    (n, c, h, w), (sn, _, _, _), offset = spec
    h2, w2 = round(h * scale), round(w * scale)
    c_total, c0 = sn // (h * w), offset // (h * w)
    if channels_last:
        return (n, c, h2, w2), (h2 * w2 * c_total, 1, w2 * c_total, c_total), c0
    return (n, c, h2, w2), (c_total * h2 * w2, h2 * w2, w2, 1), c0 * h2 * w2


def _bn_calls(impl, spec, dtype, training: bool, grad: bool, wdtype=None) -> None:
    """bn_silu forward (+ backward) on a meta x of ``spec``; parameters in ``wdtype`` (default fp32,
    as a model under autocast has them)."""
    import torch

    shape, stride, offset = spec
    c = shape[1]
    x = _meta_like(shape, stride, offset, dtype)
    w = torch.empty(c, device="meta", dtype=wdtype or torch.float32)
    rm, rv = torch.empty_like(w), torch.empty_like(w)
    y, mean, rstd, _ = impl.bn_silu_forward_impl(x, w, w, rm, rv, training, 1e-3)
    if grad:
        impl.bn_silu_backward_impl(torch.empty_like(y), x, w, w, mean, rstd, training)


def _concat_calls(impl, inputs, weight_shape, dtype) -> None:
    import torch

    xs = [_meta_like(*s, dtype) for s in inputs]
    w = torch.empty(weight_shape, device="meta", dtype=dtype)
    b = torch.empty(weight_shape[0], device="meta", dtype=dtype)
    impl.concat_conv1x1_silu_impl(xs, w, b)


def _assign_call(impl, imgsz: int, bsz: int, m: int, n_cls: int, score_dtype, **kw) -> None:
    import torch

    strides = (8, 16, 32)
    anchors = []
    for s in strides:
        n = imgsz // s
        ys, xs = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
        anchors.append(torch.stack([xs, ys], -1).reshape(-1, 2) * s)
    anc = torch.cat(anchors)  # real CPU tensor: the wrapper reads the grid layout from it
    a = anc.shape[0]
    scores = kw.pop("scores", None)
    if scores is None:
        scores = torch.empty(bsz, a, n_cls, device="meta", dtype=score_dtype)
    meta = dict(device="meta")
    impl.assign_triton(
        scores, torch.empty(bsz, a, 4, **meta), anc, torch.empty(bsz, m, 1, **meta),
        torch.empty(bsz, m, 4, **meta), torch.empty(bsz, m, 1, dtype=torch.bool, **meta), **kw,
    )  # fmt: skip


def collect(out: Path, models: Iterable[str] | None = None) -> int:
    """Record every launch of the default path and the cover set; write them to ``out`` (JSON)."""
    os.environ["TRITON_INTERPRET"] = "0"
    import torch
    from yolov9k.kernels import assign as assign_k
    from yolov9k.kernels import bn_silu as bn_k
    from yolov9k.kernels import concat_conv1x1 as cc_k

    from yolov9k.models import MODELS

    models = list(models or MODELS)
    rec = _Recorder()
    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    bn_specs: dict[tuple, None] = {}
    concat_specs: dict[tuple, None] = {}
    t0 = time.perf_counter()
    for name in models:
        bns, cats = _model_shapes(name)
        bn_specs.update(dict.fromkeys(sorted(bns)))
        concat_specs.update(dict.fromkeys(sorted(cats)))
    print(f"model shapes: {len(bn_specs)} BN inputs, {len(concat_specs)} concat input lists "
          f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    with rec.active():
        # default path: training (batch stats, forward + backward) and unfused eval (running stats)
        for (spec, imgsz, cl), n, dtype in _product(bn_specs, BATCHES, (f32, f16, bf16)):
            layout = "NHWC" if cl else "NCHW"
            label = f"train/eval imgsz {imgsz} {layout} {dtype} batch {n} C {spec[0][1]}"
            with rec.scene(label, True):
                _bn_calls(bn_k, _rebatch(spec, n), dtype, training=True, grad=True)
                _bn_calls(bn_k, _rebatch(spec, n), dtype, training=False, grad=False)
        # default path: fused inference, the concat GEMM over a block's branches (batch 1 and 16)
        # (fp32 maps go to cuDNN inside a model: yolov9k.ops.concat_conv1x1_silu.can_run_concat_gemm)
        for ((inputs, wshape), imgsz, cl), n, dtype in _product(concat_specs, (1, 16), (f16, bf16)):
            with rec.scene(f"fused eval imgsz {imgsz} {'NHWC' if cl else 'NCHW'} {dtype} batch {n}", True):
                _concat_calls(cc_k, [_rebatch(s, n) for s in inputs], wshape, dtype)
        # default path: the assigner as DetectionLoss calls it (float32 scores, topk 10, 0.5 / 6.0)
        for imgsz in IMGSZ:
            for bsz, m in ((16, 1), (16, 7), (16, 16), (16, 100), (3, 33), (1, 5)):
                with rec.scene(f"loss imgsz {imgsz} batch {bsz} max_gt {m}", True):
                    _assign_call(assign_k, imgsz, bsz, m, 80, f32)
        _collect_cover(rec, bn_k, cc_k, assign_k)
        _plant(rec)
    launches = list(rec.launches.values())
    out.write_text(json.dumps([asdict(x) for x in launches]))
    return len(launches)


def _product(*iterables):
    import itertools

    return itertools.product(*iterables)


def _collect_cover(rec: _Recorder, bn_k, cc_k, assign_k) -> None:
    """Everything else the wrappers accept, each at least once: other dtypes, layouts and constexprs."""
    import torch

    dtypes = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    # bn_silu: a channel slice (unaligned start, non-contiguous), W == 1, odd C, fp64, weight in x's dtype
    for dtype in dtypes:
        for shape, stride, offset in (
            ((2, 5, 7, 9), (2 * 5 * 63 // 2, 63, 9, 1), 63),  # channels 1..5 of a 10-channel NCHW map
            ((2, 5, 7, 9), (10 * 63, 1, 90, 10), 5),  # channels 5..9 of a 10-channel NHWC map
            ((3, 8, 13, 1), (104, 13, 1, 1), 0),  # W == 1
            ((2, 3, 5, 5), (75, 25, 5, 1), 0),
        ):
            with rec.scene(f"cover bn {dtype} {shape} {stride}", False):
                for wdtype in {torch.float32, dtype}:  # autocast (fp32 parameters) or a model in dtype
                    _bn_calls(bn_k, (shape, stride, offset), dtype, True, True, wdtype)
                    _bn_calls(bn_k, (shape, stride, offset), dtype, False, True, wdtype)
    # concat: each dtype in both layouts, 1..4 inputs (5: folded into 4) spread over them, a sliced
    # (unaligned) input, and fp32 with TF32 off ("ieee" products)
    plan = [(dtype, layout, k) for dtype in dtypes for layout, k in (("NCHW", 0), ("NHWC", 2))]
    for i, (dtype, layout, k0) in enumerate(plan):
        k = 1 + (i + k0) % 5
        for allow_tf32 in (True, False) if dtype == torch.float32 else (True,):
            torch.backends.cudnn.allow_tf32 = allow_tf32
            with rec.scene(f"cover concat {dtype} {layout} inputs {k} tf32 {allow_tf32}", False):
                _concat_calls(cc_k, *_concat_inputs(k, layout), dtype)
        torch.backends.cudnn.allow_tf32 = True
    # assign: score dtypes and a strided view, every exponent mode, several top-k pads
    for dtype in (torch.float16, torch.bfloat16):
        with rec.scene(f"cover assign scores {dtype}", False):
            _assign_call(assign_k, 320, 2, 5, 80, dtype)
    scores = torch.empty(2, 80, 2100, device="meta").transpose(1, 2)
    with rec.scene("cover assign strided scores", False):
        _assign_call(assign_k, 320, 2, 5, 80, torch.float32, scores=scores)
    for alpha, beta in ((1.0, 0.5), (2.0, 3.0), (3.0, 2.0), (0.7, 1.3)):
        for topk in (1, 3, 13, 32):
            with rec.scene(f"cover assign alpha {alpha} beta {beta} topk {topk}", False):
                _assign_call(assign_k, 320, 2, 5, 80, torch.float32, topk=topk, alpha=alpha, beta=beta)


def _concat_inputs(k: int, layout: str) -> tuple[list, tuple]:
    """``k`` input specs (channel counts 8, 19, 24, ...; every other one a slice starting at
    channel 1, so its data pointer is not 16-byte aligned) and the weight shape."""
    inputs = []
    for i in range(k):
        c = 8 * (i + 1) + (3 if i == 1 else 0)
        c_total, c0 = c + (i % 2), i % 2
        if layout == "NCHW":
            inputs.append(((2, c, 6, 7), (c_total * 42, 42, 7, 1), c0 * 42))
        else:
            inputs.append(((2, c, 6, 7), (c_total * 42, 1, 7 * c_total, c_total), c0))
    return inputs, (24, sum(s[0][1] for s in inputs), 1, 1)


def _plant(rec: _Recorder) -> None:
    """Planted failures (YOLOV9K_TRITON_CHECK_PLANT), to show that the check can fail."""
    plant = os.environ.get("YOLOV9K_TRITON_CHECK_PLANT", "")
    if not plant:
        return
    import torch

    sys.path.insert(0, str(ROOT / ".ci"))
    import triton_build_plant as p  # noqa: PLC0415

    x = torch.empty(1 << 17, device="meta")
    if "spill" in plant:
        with rec.scene("PLANTED spill (default path)", True):
            p.spill_kernel[(1,)](x, x, BLOCK=8192)
    if "smem" in plant:
        with rec.scene("PLANTED shared-memory overflow (a config the code picks)", True):
            p.smem_kernel[(1,)](x, x, BLOCK=128, K=1024)


# --------------------------------------------------------------------------------------------------
# compile: replay through the JIT path of this Triton, for each target


@dataclass
class Row:
    kernel: str
    variant: str
    target: int
    triton: str
    registers: int = -1
    spill_stores: int = 0
    spill_loads: int = 0
    smem: int = 0
    warps: int = 0
    stages: int = 0
    default: bool = False
    can_pick: bool = True  # False: a config the launch-time pruning removes on this target
    error: str = ""
    scenario: str = ""
    seconds: float = 0.0
    also_limits: dict = field(default_factory=dict)  # {cc: can_pick} for targets sharing this code


class _StubDriver:
    """Triton's active driver while compiling: a GPU of compute capability ``cc``, no device."""

    def __init__(self, cc: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.cc = cc
        self.target = GPUTarget("cuda", cc, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return self.cc  # one binder (and kernel cache) per target

    def get_current_stream(self, device=None) -> int:
        return 0

    def set_current_device(self, device) -> None:
        pass


def _load_kernel(name: str):
    import importlib

    module, attr = name.split(":")
    if module.startswith("triton_build_plant"):
        sys.path.insert(0, str(ROOT / ".ci"))
        return getattr(importlib.import_module(module), attr)
    return getattr(importlib.import_module(f"kernels.{module}"), attr)


def _variant(launch: Launch, config) -> str:
    """Short human label of a specialisation: tensor dtypes, constexprs, autotune config."""
    dtypes = []
    for a in launch.args:
        if isinstance(a, dict):
            short = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64"}.get(
                a["T"], a["T"]
            )
            dtypes.append(short)
    seen: list[str] = []
    for d in dtypes:
        if d not in seen and d in ("f32", "f16", "bf16", "f64"):
            seen.append(d)
    parts = ["/".join(seen)]
    consts = {k: v for k, v in launch.kwargs.items() if k.isupper() or k.startswith(("IEEE", "INPUT"))}
    parts += [f"{k}={v}" for k, v in sorted(consts.items()) if not k.startswith("BLOCK")]
    if config is not None:
        kw = config.kwargs
        parts.append(f"cfg {kw['BLOCK_M']}x{kw['BLOCK_N']}x{kw['BLOCK_K']}")
    return " ".join(parts)


_JOBS: list = []  # (launch, config, signature, constexprs, options, attrs, jit_fn, target) for the workers


def _capture_jobs(launches: list[Launch], targets: list[int]) -> list[Row]:
    """Replay every launch through this Triton's binder per target; fill _JOBS with one job per key."""
    import triton
    from triton.runtime import driver

    rows: list[Row] = []
    seen: dict[tuple, int] = {}
    for cc in targets:
        driver.set_active(_StubDriver(cc))
        for launch in launches:
            fn = _load_kernel(launch.kernel)
            args = [_decode(a) for a in launch.args]
            kwargs = {k: _decode(v) for k, v in launch.kwargs.items()}
            if launch.autotune:
                configs = [(c, c.all_kwargs()) for c in fn.configs]
                jit_fn = fn.fn
            else:
                configs = [(None, {})]
                jit_fn = fn
            for config, extra in configs:
                captured = {}

                def capture(key, signature, device, constexprs, options, attrs, warmup, _c=captured):
                    _c.update(
                        key=key, signature=signature, constexprs=constexprs, options=options, attrs=attrs
                    )

                jit_fn._do_compile = capture
                try:
                    jit_fn.run(*args, grid=(1, 1, 1), warmup=True, **kwargs, **extra)
                finally:
                    del jit_fn._do_compile
                ident = (launch.kernel, cc, str(captured["key"]))
                if ident in seen:
                    if launch.default and not rows[seen[ident]].default:
                        rows[seen[ident]].default = True
                        rows[seen[ident]].scenario = launch.scenario
                    continue
                can_pick, also = _can_pick(launch, config, args, cc)
                seen[ident] = len(rows)
                rows.append(
                    Row(
                        launch.kernel.split(":")[1], _variant(launch, config), cc, triton.__version__,
                        default=launch.default, can_pick=can_pick, scenario=launch.scenario, also_limits=also,
                    )
                )  # fmt: skip
                _JOBS.append((captured, jit_fn, cc))
    return rows


def _can_pick(launch: Launch, config, args, cc: int) -> tuple[bool, dict]:
    """Whether the code can launch this config on ``cc`` (and on the targets sharing its code)."""
    if config is None:
        return True, {t: True for t, base in SAME_CODE_AS.items() if base == cc}
    from kernels.concat_conv1x1 import configs_that_fit

    elem = args[0].element_size()
    configs = _load_kernel(launch.kernel).configs
    picks = {c: config in configs_that_fit(configs, elem, SMEM_LIMIT[c]) for c in (cc, *SAME_CODE_AS)}
    return picks[cc], {t: picks[t] for t, base in SAME_CODE_AS.items() if base == cc}


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def _compile_one(i: int) -> dict:
    """Worker: compile job ``i`` to cubin; registers / spills from the ptxas log."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    captured, jit_fn, cc = _JOBS[i]
    knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            src = ASTSource(jit_fn, captured["signature"], captured["constexprs"], captured["attrs"])
            kernel = triton_compile(
                src, target=GPUTarget("cuda", cc, 32), options=captured["options"].__dict__
            )
    except Exception as e:  # a compile error is a result of the check, reported with its message
        return {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"}
    text = log.getvalue()
    regs = [int(r) for r in _PTXAS_REGS.findall(text)]
    spills = [(int(a), int(b)) for a, b in _PTXAS_SPILL.findall(text)]
    md = kernel.metadata
    return {
        "registers": max(regs) if regs else -1,
        "spill_stores": max((s for s, _ in spills), default=0),
        "spill_loads": max((s for _, s in spills), default=0),
        "smem": int(md.shared),
        "warps": int(md.num_warps),
        "stages": int(md.num_stages),
        "seconds": time.perf_counter() - start,
    }


def compile_all(launch_file: Path, targets: list[int], jobs: int, out: Path, only: str = "") -> int:
    """Compile every distinct specialisation of ``launch_file`` for ``targets``; rows to ``out`` (JSON).
    ``only``: a regular expression on the kernel name (a partial run, by hand)."""
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_CACHE_DIR", str(out.parent / "triton-cache"))
    sys.path.insert(0, str(ROOT))
    launches = [Launch(**x) for x in json.loads(launch_file.read_text())]
    launches = [x for x in launches if re.search(only, x.kernel)]
    rows = _capture_jobs(launches, targets)
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_compile_one, range(len(_JOBS)), chunksize=1)
    else:
        results = [_compile_one(i) for i in range(len(_JOBS))]
    for row, res in zip(rows, results):
        for k, v in res.items():
            setattr(row, k, v)
    out.write_text(json.dumps([asdict(r) for r in rows]))
    return len(rows)


# --------------------------------------------------------------------------------------------------
# report


def verdict(rows: list[Row], limits: dict[int, int] = SMEM_LIMIT) -> list[str]:
    """The failures of a set of compiled specialisations (empty: the check passes).

    A compile error; shared memory over a target's per-block limit in a config the code can pick
    there (``can_pick``; ``also_limits`` carries the verdict of the pruning for targets that run the
    same code, e.g. sm_86 / sm_89 for sm_80); a spill in a default-path specialisation.
    """
    failures = []
    for r in rows:
        where = f"{r.kernel} [{r.variant}] sm_{r.target} Triton {r.triton}"
        if r.error:
            failures.append(f"compile error: {where}: {r.error}")
            continue
        checks = [(r.target, r.can_pick)] + [(int(t), pick) for t, pick in r.also_limits.items()]
        for cc, pick in checks:
            if pick and r.smem > limits[cc]:
                failures.append(
                    f"shared memory {r.smem} B > {limits[cc]} B of sm_{cc}: {where} (can be picked)"
                )
        if r.default and r.spill_stores + r.spill_loads > 0:
            failures.append(
                f"spill in a default-path specialisation: {where}: {r.spill_stores} B stores, "
                f"{r.spill_loads} B loads, {r.registers} registers ({r.scenario})"
            )
    return failures


def _summary(rows: list[Row]) -> list[tuple]:
    """One line per (kernel, variant, target, Triton): worst over the integer specialisations."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.kernel, r.variant, r.target, r.triton), []).append(r)
    lines = []
    for (kernel, variant, target, version), rs in sorted(groups.items()):
        ok = [r for r in rs if not r.error]
        regs = sorted({r.registers for r in ok})
        lines.append((
            kernel, variant, f"sm_{target}", version,
            f"{regs[0]}-{regs[-1]}" if len(regs) > 1 else (str(regs[0]) if regs else "-"),
            max((r.spill_stores for r in ok), default=0),
            max((r.smem for r in ok), default=0),
            "/".join(sorted({f"{r.warps}/{r.stages}" for r in ok})),
            len(rs), sum(r.default for r in rs), sum(not r.can_pick for r in rs),
            sum(bool(r.error) for r in rs),
        ))  # fmt: skip
    return lines


HEADER = (
    "kernel", "variant", "target", "Triton", "registers", "spill B", "smem B", "warps/stages",
    "keys", "default", "pruned", "errors",
)  # fmt: skip


def report(row_files: list[Path], markdown: Path | None) -> int:
    rows = [Row(**r) for f in row_files for r in json.loads(f.read_text())]
    lines = _summary(rows)
    widths = [max(len(str(x)) for x in col) for col in zip(HEADER, *lines)]
    for line in (HEADER, *lines):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    n_default = sum(r.default for r in rows)
    print(
        f"\n{len(rows)} specialisations compiled ({n_default} on a default path) over "
        f"{len({(r.target, r.triton) for r in rows})} (target, Triton) pairs; "
        f"compile time {sum(r.seconds for r in rows):.0f} s of CPU"
    )
    spilling = [r for r in rows if r.spill_stores and not r.error]
    for r in spilling:
        tag = "DEFAULT PATH" if r.default else "not a default path"
        print(f"spill ({tag}): {r.kernel} [{r.variant}] sm_{r.target} Triton {r.triton}: {r.spill_stores} B, "
              f"{r.registers} regs ({r.scenario})")  # fmt: skip
    if markdown is not None:
        md = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        md += ["| " + " | ".join(str(x) for x in line) + " |" for line in lines]
        markdown.write_text("\n".join(md) + "\n")
    failures = verdict(rows)
    for f in failures:
        print(f"FAIL: {f}")
    print(f"Triton build check: {'FAILED' if failures else 'OK'} ({len(failures)} failures)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("collect")
    p.add_argument("out", type=Path)
    p.add_argument("--models", nargs="*")
    p = sub.add_parser("compile")
    p.add_argument("launches", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--targets", default="80,90")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", default="", help="regular expression on the kernel names (a partial run)")
    p = sub.add_parser("report")
    p.add_argument("rows", type=Path, nargs="+")
    p.add_argument("--markdown", type=Path)
    a = parser.parse_args(argv)
    start = time.perf_counter()
    if a.step == "collect":
        n = collect(a.out, a.models)
        print(f"collected {n} distinct launches in {time.perf_counter() - start:.0f} s")
    elif a.step == "compile":
        n = compile_all(a.launches, [int(t) for t in a.targets.split(",")], a.jobs, a.out, a.only)
        print(f"compiled {n} specialisations in {time.perf_counter() - start:.0f} s")
    else:
        return report(a.rows, a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
