"""yolov9k.export: ONNX (onnxruntime vs PyTorch) with and without in-graph NMS, TorchScript, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_close_verbose

from yolov9k.api.export import EfficientNMS, export, export_onnx
from yolov9k.api.model_source import to_inference_model
from yolov9k.checkpoint import save_checkpoint
from yolov9k.models import build_model
from yolov9k.ops import postprocess

pytestmark = pytest.mark.usefixtures("one_thread")

ort = pytest.importorskip("onnxruntime")
IMGSZ = 96
NMS_OUTPUTS = ["num_dets", "det_boxes", "det_scores", "det_classes"]


@pytest.fixture(scope="module")
def model(fixtures_dir):
    """gelan-t with the official fixture weights and calibrated BN statistics: varied, tie-free
    outputs (random-init models give near-constant scores, which hides ordering bugs)."""
    sd = dict(torch.load(fixtures_dir / "gelan-t_fixture.pt", weights_only=True)["state_dict"])
    sd.update(torch.load(fixtures_dir / "gelan-t_fixture_evalcal.pt", weights_only=True)["bn_running_stats"])
    m = build_model("gelan-t").eval()
    m.load_state_dict(sd)
    m.names = {i: f"c{i}" for i in range(80)}
    return m


@pytest.fixture(scope="module")
def fused(model):
    return to_inference_model(model)


def _run(path, x: torch.Tensor) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x.numpy()})


def _check_against_postprocess(
    out: list[np.ndarray], y: torch.Tensor, conf: float, iou: float, max_det: int, box_atol: float = 1e-4
) -> int:
    """The fixed-size NMS outputs equal postprocess(y) image by image; returns the detections seen."""
    num, boxes, scores, classes = out
    assert num.shape == (y.shape[0], 1) and num.dtype == np.int32 and classes.dtype == np.int32
    assert boxes.shape == (y.shape[0], max_det, 4) and scores.shape == (y.shape[0], max_det)
    ref = postprocess(y, conf, iou, max_det=max_det)
    total = 0
    for b, r in enumerate(ref):
        n = int(num[b, 0])
        assert n == len(r), f"image {b}: {n} detections in the graph, {len(r)} from postprocess"
        assert_close_verbose(torch.from_numpy(boxes[b, :n]), r[:, :4], atol=box_atol, what=f"boxes[{b}]")
        assert_close_verbose(torch.from_numpy(scores[b, :n]), r[:, 4], atol=1e-5, what=f"scores[{b}]")
        assert (classes[b, :n] == r[:, 5].numpy()).all()
        assert (boxes[b, n:] == 0).all() and (scores[b, n:] == 0).all() and (classes[b, n:] == -1).all()
        total += n
    return total


def test_onnx_matches_pytorch_with_dynamic_batch(model, fused, tmp_path):
    path = export(model, imgsz=IMGSZ, file=tmp_path / "m.onnx")
    for batch in (1, 3):
        x = torch.rand(batch, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(batch))
        (y,) = _run(path, x)
        with torch.no_grad():
            # boxes reach 500 px, where one float32 ulp is 6e-5: 1e-4 px plus 1e-6 relative
            assert_close_verbose(torch.from_numpy(y), fused(x), atol=1e-4, rtol=1e-6, what="onnx vs eager")
            # fusing itself moves this chaotic network's boxes by up to ~1e-3 px
            assert_close_verbose(torch.from_numpy(y), model(x), atol=5e-3, what="onnx vs unfused eager")
    meta = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert json.loads(meta["names"])["7"] == "c7" and meta["nc"] == "80"
    assert json.loads(meta["imgsz"]) == [IMGSZ, IMGSZ] and meta["nms"] == "false"


def test_nms_graph_equals_postprocess_on_official_fixture(fixtures_dir, tmp_path):
    """The NMS stage alone, on the official fixture's realistic clusters: same detections."""
    y = torch.load(fixtures_dir / "nms_fixture.pt", weights_only=True)["synthetic_pred"].float()
    nms = EfficientNMS(conf=0.25, iou=0.45, max_det=100).eval()
    path = export_onnx(nms, y, tmp_path / "nms.onnx", NMS_OUTPUTS)
    assert _check_against_postprocess(_run(path, y), y, 0.25, 0.45, 100) > 20
    # another batch size (dynamic axis), with an image that has no detection at all
    y3 = torch.cat([y, torch.zeros_like(y[:1])])
    assert _check_against_postprocess(_run(path, y3), y3, 0.25, 0.45, 100) > 20
    # eager module = graph
    eager = [t.numpy() for t in nms(y3)]
    for a, b in zip(eager, _run(path, y3)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_nms_max_det_cuts_the_best(fixtures_dir, tmp_path):
    y = torch.load(fixtures_dir / "nms_fixture.pt", weights_only=True)["synthetic_pred"].float()
    path = export_onnx(EfficientNMS(0.25, 0.45, max_det=7), y, tmp_path / "nms7.onnx", NMS_OUTPUTS)
    assert _check_against_postprocess(_run(path, y), y, 0.25, 0.45, 7) == 14


def test_full_model_with_nms(model, fused, tmp_path):
    # scores of this network are ~1e-4 .. 3e-4: a threshold inside that range
    path = export(model, imgsz=IMGSZ, file=tmp_path / "nms.onnx", nms=True, conf=1e-4, iou=0.5, max_det=30)
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = fused(x)
    assert _check_against_postprocess(_run(path, x), y, 1e-4, 0.5, 30, box_atol=1e-3) > 5


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_equals_eager(model, fused, tmp_path):
    path = export(model, format="torchscript", imgsz=IMGSZ, file=tmp_path / "m.torchscript")
    extra = {"config.txt": ""}
    ts = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(json.loads(extra["config.txt"])["names"])["1"] == "c1"
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close_verbose(ts(x), fused(x), atol=1e-6, what="torchscript vs eager")


@pytest.mark.slow
def test_yolov9_is_reparameterized_from_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    dual = build_model("yolov9-t", num_classes=3).eval()
    ckpt = save_checkpoint(tmp_path / "y9.pt", dual)
    path = export(ckpt, imgsz=64)
    assert path == tmp_path / "y9.onnx"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    (y,) = _run(path, x)
    with torch.no_grad():
        assert_close_verbose(torch.from_numpy(y), dual(x), atol=1e-3, what="onnx gelan vs yolov9 main branch")
    assert dual.is_dual  # the caller's model is untouched


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="format"):
        export(model, format="tflite", file=tmp_path / "x")
    with pytest.raises(ValueError, match="format='onnx' only"):
        export(model, format="torchscript", nms=True, file=tmp_path / "x")
    with pytest.raises(ValueError, match="multiple of the model stride"):
        export(model, imgsz=100, file=tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="CUDA"):
        export(model, half=True, file=tmp_path / "x.onnx")
    text = tmp_path / "weights.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        export(text)
    with pytest.raises(FileNotFoundError):
        export(tmp_path / "missing.pt")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp"))
