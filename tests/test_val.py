"""yolov9k.val: metrics through the full path vs pycocotools on the saved COCO json, table, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from yolov9k.api.val import val
from yolov9k.checkpoint import save_checkpoint
from yolov9k.data import generate_demo_dataset
from yolov9k.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

IMGSZ = 96


@pytest.fixture(scope="module")
def demo_yaml(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), num_train=8, num_val=4, imgsz=IMGSZ)


class BlobDetector(nn.Module):
    """A stand-in detector with a real, imperfect mAP on the demo set: the demo shapes are saturated
    colours on muted backgrounds, so saturated connected components give boxes; every box gets a
    random score for every class (validation's multi-label NMS then keeps one row per class)."""

    def __init__(self, nc: int = 5, max_boxes: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.nc, self.names, self.max_boxes = nc, {i: str(i) for i in range(nc)}, max_boxes
        self.register_buffer("stride", torch.tensor([8.0, 16.0, 32.0]))
        self.scores = torch.rand(nc, max_boxes, generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.05
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 4 + self.nc, self.max_boxes)
        for b, img in enumerate(x):
            rgb = (img.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
            sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
            n, _, stats, _ = cv2.connectedComponentsWithStats((sat > 140).astype(np.uint8))
            boxes = [s for s in stats[1:] if s[4] >= 12][: self.max_boxes]  # (x, y, w, h, area)
            for k, (x0, y0, w, h, _) in enumerate(boxes):
                out[b, :4, k] = torch.tensor([x0 + w / 2, y0 + h / 2, w, h], dtype=torch.float32)
                out[b, 4:, k] = self.scores[:, k]
        return out


def test_val_map_equals_pycocotools_on_saved_json(demo_yaml, tmp_path, capsys):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    m = val(BlobDetector(), demo_yaml, imgsz=IMGSZ, batch=3, save_json=True, project=tmp_path, plots=False,
            workers=0, device="cpu")  # fmt: skip
    assert 0.05 < m["map50"] < 0.99, "the test needs a real, imperfect mAP to mean anything"
    rows = json.loads(Path(m["json"]).read_text())
    gt_file = demo_yaml.parent / "annotations" / "instances_val.json"
    gt = COCO(str(gt_file))
    assert {r["image_id"] for r in rows} <= set(gt.getImgIds())
    assert {r["category_id"] for r in rows} <= set(gt.getCatIds())
    ev = COCOeval(gt, gt.loadRes(str(m["json"])), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    # the json rounds boxes to 1e-3 px and scores to 1e-5: identical up to such rounding
    assert m["map50_95"] == pytest.approx(ev.stats[0], abs=2e-3)
    assert m["map50"] == pytest.approx(ev.stats[1], abs=2e-3)
    out = capsys.readouterr().out
    assert "mAP50-95" in out and "Speed:" in out and "all" in out


def test_val_checkpoint_table_and_speed(demo_yaml, tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("gelan-t", num_classes=5)
    model.names = {i: n for i, n in enumerate(("circle", "square", "triangle", "star", "cross"))}
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    m = val(
        ckpt,
        demo_yaml,
        imgsz=IMGSZ,
        batch=4,
        project=tmp_path,
        name="ck",
        plots=False,
        workers=0,
        device="cpu",
    )
    assert m["save_dir"] == tmp_path / "ck"
    assert m["num_images"] == 4 and m["num_targets"] > 0
    assert set(m["speed"]) == {"preprocess", "inference", "postprocess"}
    assert all(v >= 0 for v in m["speed"].values())
    targets = sum(pc["targets"] for pc in m["per_class"].values())
    assert targets == m["num_targets"]
    out = capsys.readouterr().out
    present = [name for name, pc in m["per_class"].items() if pc["targets"]]
    assert present and all(name in out for name in present)


def test_val_matches_direct_evaluation_of_the_same_detections(demo_yaml, tmp_path):
    """Our path (dataset, loader, validate, box mapping) vs DetectionEvaluator fed by hand: labels read
    from the txt files, detections from prepare_image -> model -> postprocess -> to_original."""
    from yolov9k.api.predict import prepare_image, to_original
    from yolov9k.data import load_dataset_config, read_image
    from yolov9k.metrics import DetectionEvaluator
    from yolov9k.ops import postprocess
    from yolov9k.ops.boxes import xywh2xyxy

    model = BlobDetector()
    m = val(model, demo_yaml, imgsz=IMGSZ, batch=2, rect=False, plots=False, workers=0, project=tmp_path,
            device="cpu")  # fmt: skip
    ev = DetectionEvaluator(5)
    for f in load_dataset_config(demo_yaml).val:
        img = read_image(f)
        h, w = img.shape[:2]
        lab = torch.tensor(np.loadtxt(Path(f).parents[2] / "labels" / "val" / f"{Path(f).stem}.txt", ndmin=2))
        gt = torch.cat([lab[:, :1], xywh2xyxy(lab[:, 1:] * torch.tensor([w, h, w, h]))], 1).float()
        chw, ratio_pad = prepare_image(img, IMGSZ)
        y = model(torch.from_numpy(chw)[None].float() / 255)
        det = postprocess(y, 0.001, 0.7, max_det=300, multi_label=True)[0]
        det[:, :4] = to_original(det[:, :4], IMGSZ, (h, w), ratio_pad)
        ev.update([det], [gt])
    ref = ev.compute()
    assert 0.05 < ref["map50"] < 0.99
    assert m["map50_95"] == pytest.approx(ref["map50_95"], abs=1e-6)
    assert m["map50"] == pytest.approx(ref["map50"], abs=1e-6)


def test_val_bad_inputs(demo_yaml, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a zoo name"):
        val(tmp_path / "missing.pt", demo_yaml, imgsz=IMGSZ, project=tmp_path)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        val(text, demo_yaml, imgsz=IMGSZ, project=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="classes"):
        val(BlobDetector(nc=3), demo_yaml, imgsz=IMGSZ, project=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="no images"):
        val(BlobDetector(), demo_yaml, imgsz=IMGSZ, split="test", project=tmp_path, device="cpu")
    with pytest.raises(FileNotFoundError):
        val(BlobDetector(), tmp_path / "nope.yaml", imgsz=IMGSZ, project=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="iou"):
        val(BlobDetector(), demo_yaml, iou=2.0)


def test_val_with_image_cache_gives_the_same_metrics(tmp_path, monkeypatch):
    """``cache=ram|disk`` on validation: the same metrics as without; the disk cache is then what a
    second run reads (no decode at all); a value outside the schema is refused before any work."""
    import yolov9k.data.dataset as dataset_mod
    from yolov9k.errors import OptionError

    yaml = generate_demo_dataset(tmp_path / "demo", num_train=4, num_val=5, imgsz=IMGSZ)
    kw = dict(imgsz=IMGSZ, batch=2, plots=False, workers=0, device="cpu", verbose=False, project=tmp_path)
    decodes, modes = [], []
    real_read, real_cache = dataset_mod.read_image, dataset_mod.YoloDataset.cache_images
    monkeypatch.setattr(dataset_mod, "read_image", lambda f, **k: decodes.append(f) or real_read(f, **k))
    monkeypatch.setattr(
        dataset_mod.YoloDataset,
        "cache_images",
        lambda self, mode="ram": modes.append(mode) or real_cache(self, mode),
    )
    ref = val(BlobDetector(), yaml, name="plain", **kw)
    assert modes == [] and len(decodes) == 5
    results = {c: val(BlobDetector(), yaml, name=c, cache=c, **kw) for c in ("ram", "disk")}
    assert modes == ["ram", "disk"]
    assert len(list((tmp_path / "demo").rglob("*.npy"))) == 5  # one file per validation image
    decodes.clear()
    results["disk again"] = val(BlobDetector(), yaml, name="again", cache="disk", **kw)
    assert decodes == []  # read back from the .npy files
    assert 0.05 < ref["map50"] < 0.99
    for name, m in results.items():
        for key in ("map50_95", "map50", "map75", "precision", "recall"):
            assert m[key] == ref[key], (name, key)
        assert json.dumps(m["per_class"], sort_keys=True) == json.dumps(ref["per_class"], sort_keys=True), (
            name
        )
    with pytest.raises(OptionError) as e:
        val(BlobDetector(), yaml, name="bad", cache="gpu", **kw)
    assert e.value.option == "cache" and "gpu" in str(e.value)
