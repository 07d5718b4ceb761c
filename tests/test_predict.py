"""yolov9k.predict: sources, letterbox geometry back to the original image, batching, outputs, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolov9k.api.predict import predict, prepare_image, to_original
from yolov9k.api.sources import collect_sources
from yolov9k.data import generate_demo_dataset, read_image
from yolov9k.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

IMGSZ = 96


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), num_train=8, num_val=4, imgsz=IMGSZ).parent


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("gelan-t", num_classes=5).eval()
    with torch.no_grad():  # class logits ~0: plenty of detections of every class from random weights
        for seq in m.head.cv3:
            seq[-1].bias.zero_()
    m.names = {i: n for i, n in enumerate(("circle", "square", "triangle", "star", "cross"))}
    return m


@pytest.mark.parametrize("hw", [(50, 90), (120, 40), (96, 96), (300, 200), (7, 61)])
def test_letterboxed_box_maps_back_to_the_original(hw):
    """A white box drawn in the original is found in the network image; mapping it back recovers it."""
    h, w = hw
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = int(w * 0.2), int(h * 0.3), int(w * 0.7), int(h * 0.9)
    img[y1:y2, x1:x2] = 255
    chw, ratio_pad = prepare_image(img, IMGSZ)
    assert chw.shape == (3, IMGSZ, IMGSZ) and chw.dtype == np.uint8
    bright = np.argwhere(chw[0] > 128)  # rows, cols of the box in the network image
    net_box = torch.tensor(
        [[bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1, bright[:, 0].max() + 1]],
        dtype=torch.float32,
    )
    back = to_original(net_box, IMGSZ, (h, w), ratio_pad)[0]
    gain = max(h, w) / IMGSZ  # one network pixel in original pixels
    tol = 1.5 * max(gain, 1.0)
    want = torch.tensor([x1, y1, x2, y2], dtype=torch.float32)
    assert torch.allclose(back, want, atol=tol), (back, want)
    # exact inverse of the forward mapping
    (gh, gw), (pw, ph) = ratio_pad
    orig = torch.tensor([[1.5, 2.25, w - 3.0, h - 1.0]])
    fwd = orig * torch.tensor([gw, gh, gw, gh]) + torch.tensor([pw, ph, pw, ph])
    torch.testing.assert_close(to_original(fwd, IMGSZ, (h, w), ratio_pad), orig, atol=1e-4, rtol=0)


def test_prepare_image_is_rgb_and_padded_grey():
    img = np.zeros((40, 80, 3), np.uint8)
    img[..., 2] = 200  # red in BGR
    chw, ((gh, gw), (pw, ph)) = prepare_image(img, IMGSZ)
    assert chw[0, IMGSZ // 2, IMGSZ // 2] == 200 and chw[2, IMGSZ // 2, IMGSZ // 2] == 0  # RGB order
    assert ph == pytest.approx((IMGSZ - 48) / 2) and pw == 0 and gw == pytest.approx(96 / 80)
    assert (chw[:, 0, :] == 114).all()  # letterbox padding


def test_predict_folder_outputs_and_corrupt_file(demo, model, tmp_path):
    src = tmp_path / "images"
    shutil.copytree(demo / "images" / "val", src)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "notes.txt").write_text("not an image")
    res = predict(
        model, src, imgsz=IMGSZ, conf=0.3, max_det=20, device="cpu", save_txt=True, save_json=True,
        project=tmp_path / "runs", name="t", batch=3,
    )  # fmt: skip
    assert len(res) == 4 and len(res.skipped) == 1
    assert res.skipped[0][0].endswith("broken.jpg") and "broken.jpg" in res.skipped[0][1]
    assert res.save_dir == tmp_path / "runs" / "t"
    assert sum(len(r["boxes"]) for r in res) > 0, "the biased model should detect something"
    rows = json.loads((res.save_dir / "predictions.json").read_text())
    for r, row in zip(res, rows):
        h, w = read_image(r["path"]).shape[:2]
        assert r["shape"] == (h, w) and (row["height"], row["width"]) == (h, w)
        b = r["boxes"]
        assert b.dtype == np.float32 and b.shape == (len(r["scores"]), 4)
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        assert (r["scores"] > 0.3).all() and list(r["scores"]) == sorted(r["scores"], reverse=True)
        assert r["labels"] == [model.names[int(c)] for c in r["classes"]]
        # annotated image: same size as the original, and different from it where boxes were drawn
        annotated = cv2.imread(str(res.save_dir / Path(r["path"]).name))
        assert annotated.shape[:2] == (h, w)
        if len(b):
            assert not np.array_equal(annotated, read_image(r["path"]))
        # txt rows: cls cx cy w h conf normalized to the original image
        txt = np.loadtxt(res.save_dir / "labels" / f"{Path(r['path']).stem}.txt", ndmin=2).reshape(-1, 6)
        np.testing.assert_array_equal(txt[:, 0], r["classes"])
        cx, cy, bw, bh = txt[:, 1] * w, txt[:, 2] * h, txt[:, 3] * w, txt[:, 4] * h
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        np.testing.assert_allclose(xyxy, b, atol=2e-3 * max(h, w))
        np.testing.assert_allclose(txt[:, 5], r["scores"], atol=1e-6)
        np.testing.assert_allclose([d["box"] for d in row["detections"]], b.reshape(-1, 4), atol=1e-3)


def test_predict_network_boxes_round_trip(demo, model):
    """Result boxes mapped forward with the image's letterbox equal the model's own NMS output."""
    from yolov9k.ops import postprocess

    path = sorted((demo / "images" / "val").iterdir())[0]
    (res,) = predict(model, path, imgsz=IMGSZ, conf=0.3, save=False, device="cpu")
    img = read_image(path)
    chw, ((gh, gw), (pw, ph)) = prepare_image(img, IMGSZ)
    with torch.no_grad():
        det = postprocess(model(torch.from_numpy(chw)[None].float() / 255), 0.3, 0.45, max_det=300)[0]
    fwd = res["boxes"] * np.array([gw, gh, gw, gh]) + np.array([pw, ph, pw, ph])
    clipped = det[:, :4].clone()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clamp(pw, IMGSZ - pw)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clamp(ph, IMGSZ - ph)
    assert len(det) == len(fwd) > 0
    np.testing.assert_allclose(fwd, clipped.numpy(), atol=1e-3)


def test_batch_size_does_not_change_results(demo, model):
    src = demo / "images" / "val"
    one = predict(model, src, imgsz=IMGSZ, conf=0.3, save=False, batch=1, device="cpu")
    many = predict(model, str(src / "*.*"), imgsz=IMGSZ, conf=0.3, save=False, batch=4, device="cpu")
    assert [r["path"] for r in one] == [r["path"] for r in many]
    for a, b in zip(one, many):
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
        np.testing.assert_array_equal(a["classes"], b["classes"])


def test_video_source_writes_annotated_video(model, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (80, 64))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(5):
        writer.write(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    writer.release()
    res = predict(
        model, video, imgsz=IMGSZ, conf=0.3, project=tmp_path, name="v", save_txt=True, device="cpu"
    )
    assert [r["frame"] for r in res] == list(range(5)) and all(r["shape"] == (64, 80) for r in res)
    cap = cv2.VideoCapture(str(res.save_dir / "clip.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 5
    assert sorted(p.name for p in (res.save_dir / "labels").iterdir()) == [f"clip_{i}.txt" for i in range(5)]


def test_array_and_list_sources_and_class_filter(model, demo):
    img = read_image(sorted((demo / "images" / "val").iterdir())[0])
    res = predict(
        model, [img, img[:, ::-1].copy()], imgsz=IMGSZ, conf=0.2, classes=[1], save=False, device="cpu"
    )
    assert [r["path"] for r in res] == ["array0", "array1"]
    assert all((r["classes"] == 1).all() for r in res)
    bad = predict(model, [np.zeros((4, 4), np.uint8)], imgsz=IMGSZ, save=False, device="cpu")
    assert len(bad) == 0 and "not an (H, W, 3) uint8 BGR image" in bad.skipped[0][1]


def test_bad_sources_and_arguments(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="source not found"):
        predict(model, tmp_path / "missing.jpg", save=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images or videos"):
        collect_sources(tmp_path / "empty")
    with pytest.raises(ValueError, match="conf"):
        predict(model, np.zeros((8, 8, 3), np.uint8), conf=1.5, save=False, device="cpu")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a zoo name"):
        predict(tmp_path / "nope.pt", np.zeros((8, 8, 3), np.uint8), save=False, device="cpu")
    with pytest.raises(ValueError, match="CUDA"):
        predict(model, np.zeros((8, 8, 3), np.uint8), half=True, device="cpu", save=False)
