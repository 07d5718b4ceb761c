"""Params, GFLOPs (official thop recipe), fused params and layer counts of all ten configs vs
model_stats.json. Models are built on the meta device (no weights allocated)."""

from __future__ import annotations

import json

import pytest
import torch

from yolov9k.models import MODELS, build_model, model_info


@pytest.fixture(scope="module")
def stats(fixtures_dir):
    return json.loads((fixtures_dir / "model_stats.json").read_text())["models"]


@pytest.mark.parametrize("name", MODELS)
def test_params_layers_gflops(name, stats):
    ref = stats[name]
    with torch.device("meta"):
        m = build_model(name)
    info = model_info(m, imgsz=640)
    assert info["params"] == ref["params"]
    assert info["layers"] == ref["modules_layers"]
    assert info["yaml_layers"] == ref["yaml_layers"] == len(m.model)
    assert info["gflops"] == pytest.approx(ref["gflops_thop_640"], rel=1e-9)
    assert m.is_dual == (ref["head"] == "DualDDetect")
    m.fuse()
    fused = model_info(m, imgsz=640)
    assert fused["params"] == ref["fused_params"]
    assert fused["layers"] == ref["fused_modules_layers"]
    assert fused["gflops"] == pytest.approx(ref["fused_gflops_thop_640"], rel=1e-9)
