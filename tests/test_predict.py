"""yolov9k.predict: sources, letterbox geometry back to the original image, batching, outputs, bad files."""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import shutil
import tracemalloc
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from yolov9k.api.model_source import OneDNNConv2d, inference_copies, use_onednn_1x1
from yolov9k.api.predict import (
    Plan,
    PredictStream,
    _prepare,
    letterbox_image,
    plan_for,
    predict,
    prepare_image,
    to_original,
)
from yolov9k.api.sources import collect_sources
from yolov9k.data import generate_demo_dataset, read_image
from yolov9k.models import build_model
from yolov9k.ops import postprocess

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


# ---- issue 21: stride padding, plans, stream, vid-stride, progress -------------------------------------


class BrightBoxDetector(nn.Module):
    """Stand-in detector: one box around the pixels brighter than 0.9 (any letterbox grey is darker),
    class 0, score 0.9, in network pixels. Exact in geometry, so the padding cannot change its boxes
    in original pixels beyond float rounding."""

    def __init__(self, nc: int = 2) -> None:
        super().__init__()
        self.nc, self.names = nc, {i: f"c{i}" for i in range(nc)}
        self.register_buffer("stride", torch.tensor([8.0, 16.0, 32.0]))
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        out = torch.zeros(x.shape[0], 4 + self.nc, 2)
        for b, img in enumerate(x):
            ys, xs = torch.nonzero(img.float().mean(0) > 0.9, as_tuple=True)
            if len(xs):
                x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                out[b, :4, 0] = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]).float()
                out[b, 4, 0] = 0.9
        return out


def _box_image(h: int, w: int, box: tuple[float, float, float, float]) -> np.ndarray:
    img = np.full((h, w, 3), 60, np.uint8)
    x1, y1, x2, y2 = (int(v * s) for v, s in zip(box, (w, h, w, h)))
    img[y1:y2, x1:x2] = 255
    return img


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (360, 640), (75, 200), (333, 97)])
def test_stride_padding_gives_the_boxes_of_the_square_letterbox(hw):
    """Issue 21: padding to the stride instead of the square changes nothing in original pixels."""
    img = _box_image(*hw, (0.21, 0.33, 0.67, 0.9))
    square, pad_sq = letterbox_image(img, 128)
    rect, pad_rect = letterbox_image(img, 128, stride=32)
    assert square.shape[:2] == (128, 128)
    assert rect.shape[0] % 32 == 0 and rect.shape[1] % 32 == 0 and rect.shape[0] * rect.shape[1] <= 128 * 128
    assert max(rect.shape[:2]) == 128 and min(rect.shape[:2]) - min(hw) * 128 / max(hw) < 32
    det = BrightBoxDetector()
    boxes = []
    for boxed, ratio_pad in ((square, pad_sq), (rect, pad_rect)):
        x = torch.from_numpy(boxed[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        d = postprocess(det(x), 0.25, 0.45)[0]
        assert len(d) == 1
        boxes.append(to_original(d, boxed.shape[:2], hw, ratio_pad))
    torch.testing.assert_close(boxes[0], boxes[1], rtol=0, atol=1e-4)
    # and predict itself (stride padding) returns that same box
    (res,) = predict(det, img, imgsz=128, save=False, device="cpu")
    np.testing.assert_allclose(res["boxes"], boxes[0].numpy(), atol=1e-4)
    assert det.calls[-1] == (1, 3, *rect.shape[:2])


def _run(model, source, plan, **kw):
    """predict() under an explicit execution plan (workers, threads, batch, ...)."""
    args = dict(
        imgsz=IMGSZ,
        conf=0.3,
        iou=0.45,
        classes=None,
        max_det=300,
        device="cpu",
        half=None,
        save=False,
        save_txt=False,
        save_json=False,
        project=None,
        name=None,
        batch=None,
        agnostic=False,
        vid_stride=1,
    )
    args.update(kw)  # fmt: skip
    return list(PredictStream(_prepare(model, source, plan=plan, **args)))


def test_plans_give_the_same_results_in_source_order(demo, model, tmp_path):
    """One worker or two, batches of 1 or 3 over mixed shapes, channels_last or not: equal results."""
    src = demo / "images" / "val"
    paths = sorted(src.iterdir())
    odd = tmp_path / "odd.png"  # another shape in the middle of the list
    cv2.imwrite(str(odd), cv2.resize(read_image(paths[0]), (96, 40)))
    source = [paths[0], odd, *paths[1:]]
    ref = _run(model, source, Plan(1, 1, 1))
    assert [r["path"] for r in ref] == [str(p) for p in source]
    assert sum(len(r["boxes"]) for r in ref) > 0
    for plan in (Plan(2, 1, 1, channels_last=True), Plan(2, 1, 3), Plan(1, 1, 4, channels_last=True)):
        got = _run(model, source, plan)
        assert [r["path"] for r in got] == [r["path"] for r in ref], plan
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a["classes"], b["classes"])
            np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
            np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)


def test_default_plans():
    cpu = plan_for(torch.device("cpu"))
    assert cpu.batch == 1 and cpu.channels_last and cpu.dtype == torch.float32 and not cpu.square
    assert cpu.onednn_1x1
    assert cpu.workers * cpu.threads <= max(torch.get_num_threads(), 1)
    cuda = plan_for(torch.device("cuda"))
    assert cuda.dtype == torch.float16 and cuda.batch == 8
    assert plan_for(torch.device("cuda"), half=False).dtype == torch.float32


def _video(path: Path, frames: int, hw: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (hw[1], hw[0]))
    assert writer.isOpened()
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
    for i in range(frames):
        writer.write(np.roll(base, i, axis=1))
    writer.release()
    return path


def test_vid_stride_progress_and_speed_line(model, tmp_path, caplog):
    video = _video(tmp_path / "clip.mp4", 10)
    with caplog.at_level(logging.INFO, logger="yolov9k"):
        res = predict(
            model, video, imgsz=IMGSZ, conf=0.3, vid_stride=3, project=tmp_path, name="v", device="cpu"
        )
    assert [r["frame"] for r in res] == [0, 3, 6, 9]
    cap = cv2.VideoCapture(str(res.save_dir / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10 / 3, rel=0.01)
    cap.release()
    lines = caplog.messages
    assert any(m.startswith(f"video 1/1 (frame 4/10) {video}: ") for m in lines), lines
    speed = [m for m in lines if m.startswith("Speed: ")]
    assert len(speed) == 1 and "per image at shape (1, 3, " in speed[0] and "4 image(s)/frame(s)" in speed[0]
    assert set(res.speed) == {"preprocess", "inference", "postprocess", "save"}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class ManyBoxes(BrightBoxDetector):
    """20 fixed boxes of 2 classes per image, cheaply."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 4 + self.nc, 20)
        out[:, 0] = torch.arange(20) * 3 + 4.0
        out[:, 1], out[:, 2:4], out[:, 4] = 20.0, 2.0, 0.8
        return out


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS read from /proc (Linux)")
def test_stream_memory_is_flat_over_10000_frames(tmp_path):
    """Issue 21: stream=True keeps nothing. Over 10,000 frames the process RSS stays flat; in a traced
    window (tracemalloc: live Python and numpy allocations made since its start) 1,000 streamed frames
    leave almost nothing alive, while the caller keeping the next 1,000 results shows (the check can
    fail)."""
    video = _video(tmp_path / "long.mp4", 10_000, hw=(32, 48))
    stream = predict(ManyBoxes(), video, imgsz=64, save=False, stream=True, device="cpu")
    kept, rss, traced = [], {}, {}
    try:
        for i, r in enumerate(stream):
            assert len(r["boxes"]) == 20
            if i % 1000 == 0:
                rss[i] = _rss_mb()
            if i == 8000:
                tracemalloc.start()
            elif i == 9000:
                traced["streamed"] = tracemalloc.get_traced_memory()[0]
            if i >= 9000:
                kept.append(r)
        traced["kept"] = tracemalloc.get_traced_memory()[0] - traced["streamed"]
    finally:
        tracemalloc.stop()
    assert i == 9999 and not stream.skipped
    assert max(rss.values()) - rss[1000] < 4.0, f"RSS (MB) by frame: {rss}"
    assert traced["streamed"] < 100_000, traced
    assert traced["kept"] > 500_000, traced


# ---- issue 22: outputs that collide, names OpenCV cannot take, atomic files, special files ---------------


def _write_jpg(path: Path, img: np.ndarray, ext: str = ".jpg") -> Path:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    path.write_bytes(buf.tobytes())  # bytes: the name may be one that OpenCV could not take
    return path


def test_every_input_gets_its_own_outputs(demo, model, tmp_path, caplog):
    """Item 8: a.jpg + a.png (+ A.jpg) with labels, a.mpo + a.png, a video clip.mp4 and an image clip_3."""
    img = read_image(sorted((demo / "images" / "val").iterdir())[0])
    src, other = tmp_path / "src", tmp_path / "other"
    src.mkdir()
    other.mkdir()
    a_jpg = _write_jpg(src / "a.jpg", img)
    a_png = _write_jpg(src / "a.png", img[:, ::-1], ".png")
    a_mpo = _write_jpg(src / "b.mpo", img[::-1])
    b_png = _write_jpg(src / "b.png", img)
    upper = _write_jpg(other / "A.jpg", img[::-1, ::-1])
    clip = _video(src / "clip.mp4", 5, hw=(64, 80))
    clip3 = _write_jpg(src / "clip_3.jpg", img)
    source = [a_jpg, a_png, a_mpo, b_png, upper, clip, clip3]
    with caplog.at_level(logging.INFO, logger="yolov9k"):
        res = predict(
            model, source, imgsz=IMGSZ, conf=0.2, save_txt=True, project=tmp_path, name="o", device="cpu"
        )
    out = res.save_dir
    images = {p.name for p in out.iterdir() if p.is_file()}
    assert images == {"a.jpg", "a_2.png", "A_3.jpg", "b.png", "b_2.png", "clip.mp4", "clip_3_2.jpg"}, images
    labels = {p.name for p in (out / "labels").iterdir()}
    frame_labels = {f"clip_{i}.txt" for i in range(5)}
    assert labels == {"a.txt", "a_2.txt", "A_3.txt", "b.txt", "b_2.txt", "clip_3_2.txt"} | frame_labels
    # each output holds its own input's detections
    by_path = {r["path"]: r for r in res if r["frame"] is None}
    for name, path in (("a_2", a_png), ("b", a_mpo), ("b_2", b_png), ("A_3", upper)):
        rows = np.loadtxt(out / "labels" / f"{name}.txt", ndmin=2).reshape(-1, 6)
        np.testing.assert_array_equal(rows[:, 0], by_path[str(path)]["classes"])
    assert cv2.imread(str(out / "b.png")).shape[:2] == img.shape[:2]
    assert any("outputs named a_2 (a is taken" in m for m in caplog.messages)


def test_names_opencv_cannot_take_do_not_crash(model, demo, tmp_path):
    """Item 1: a source and a run folder whose names are not UTF-8, and a class name with a lone
    surrogate: images and videos are saved, labels drawn (OpenCV itself segfaults on such strings)."""
    weird = os.fsdecode(b"w\xff")
    folder = tmp_path / weird
    folder.mkdir()
    img = read_image(sorted((demo / "images" / "val").iterdir())[0])
    _write_jpg(folder / f"{weird}.jpg", img)
    clip = _video(tmp_path / "clip.mp4", 3, hw=(64, 80))
    os.rename(clip, folder / f"v{weird}.mp4")
    m = copy.deepcopy(model)
    m.names = {i: f"name\ud800{i}" for i in range(5)}
    res = predict(m, folder, imgsz=IMGSZ, conf=0.2, save_json=True, project=tmp_path / weird, name=weird,
                  device="cpu")  # fmt: skip
    assert len(res) == 4 and not res.skipped and sum(len(r["boxes"]) for r in res) > 0
    files = sorted(os.listdir(os.fsencode(res.save_dir)))
    assert files == sorted([b"w\xff.jpg", b"vw\xff.mp4", b"predictions.json"]), files
    cap = cv2.VideoCapture(str(_ascii_link(res.save_dir / f"v{weird}.mp4", tmp_path / "v.mp4")))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    rows = json.loads((res.save_dir / "predictions.json").read_text())
    assert {r["path"] for r in rows} == {str(folder / f"{weird}.jpg"), str(folder / f"v{weird}.mp4")}
    assert all(d["name"].startswith("name") for r in rows for d in r["detections"])


def _ascii_link(target: Path, link: Path) -> Path:
    os.symlink(target, link)
    return link


def test_outputs_are_atomic_and_a_full_disk_names_the_file(demo, model, tmp_path, monkeypatch):
    """Item 9: every output goes through the atomic writer (no partial file under its name after a
    failure mid-write); a full disk is a one-line OSError naming the file."""
    import yolov9k.api.outputs as outputs

    src = demo / "images" / "val"
    written: list[Path] = []
    real = outputs.atomic_output

    def recording(path):
        written.append(Path(path))
        return real(path)

    monkeypatch.setattr(outputs, "atomic_output", recording)
    clip = _video(tmp_path / "clip.mp4", 3, hw=(64, 80))
    res = predict(model, [src, clip], imgsz=IMGSZ, conf=0.2, save_txt=True, save_json=True, project=tmp_path,
                  name="a", device="cpu")  # fmt: skip
    on_disk = {p for p in res.save_dir.rglob("*") if p.is_file()}
    assert on_disk == set(written) and len(on_disk) == 4 + 1 + 4 + 3 + 1  # images, video, labels, json

    def broken_encode(ext, img):  # an encoder that dies half-way: the bytes never reach the final name
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(outputs.cv2, "imencode", broken_encode)
    with pytest.raises(RuntimeError, match="killed mid-save"):
        predict(model, src, imgsz=IMGSZ, project=tmp_path, name="b", device="cpu")
    assert [p.name for p in (tmp_path / "b").iterdir()] == []
    monkeypatch.undo()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    for kw, name in ((dict(save=True), "c"), (dict(save=False, save_json=True), "d")):
        with pytest.raises(OSError, match=f"no space left on device writing {tmp_path / name}/"):
            predict(model, src, imgsz=IMGSZ, project=tmp_path, name=name, device="cpu", **kw)
        assert [p for p in (tmp_path / name).rglob("*") if p.is_file()] == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
@pytest.mark.timeout(120)  # a regression that opens the FIFO would block forever: fail instead
def test_special_files_are_counted_skips_not_hangs(model, demo, tmp_path):
    """Item 2: a FIFO named like a video or an image, and a link to /dev/zero, are skipped in seconds."""
    folder = tmp_path / "src"
    shutil.copytree(demo / "images" / "val", folder)
    os.mkfifo(folder / "pipe.mp4")
    os.mkfifo(folder / "pipe.jpg")
    os.symlink("/dev/zero", folder / "zero.jpg")
    os.symlink("/dev/zero", folder / "zero.avi")
    res = predict(model, folder, imgsz=IMGSZ, save=False, device="cpu")
    assert len(res) == 4
    reasons = dict(res.skipped)
    assert set(reasons) == {str(folder / n) for n in ("pipe.mp4", "pipe.jpg", "zero.jpg", "zero.avi")}
    assert all("not a regular file" in why for why in reasons.values()), reasons


def test_cli_stream_prints_json_lines(model, demo, tmp_path, capsys):
    from yolov9k.checkpoint import save_checkpoint
    from yolov9k.cli import main

    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    src = demo / "images" / "val"
    argv = ["predict", "--model", str(ckpt), "--source", str(src), "--imgsz", str(IMGSZ), "--conf", "0.2"]
    assert main([*argv, "--device", "cpu", "--save", "false", "--stream"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in sorted(src.iterdir())]
    assert all(set(r) == {"path", "frame", "height", "width", "detections"} for r in rows)
    assert "4 image(s) done" in err


@pytest.mark.parametrize(
    ("inputs", "want"),
    [
        ([("zero.avi", "video"), ("zero.jpg", "image")], ["zero", "zero"]),  # .mp4 and .jpg: no collision
        ([("clip.mp4", "video"), ("clip_3.jpg", "image")], ["clip", "clip_3_2"]),  # clip_3.txt is a frame's
        (
            [("clip.mp4", "video"), ("clip_3.mp4", "video"), ("clip_3.jpg", "image")]
            + [("CLIP_3.png", "image")],
            ["clip", "clip_3", "clip_3-2", "CLIP_3-3"],  # every clip_3_<n> is a frame label of clip_3.mp4
        ),
        ([("a_1.jpg", "image"), ("a.mp4", "video"), ("a_1.png", "image")], ["a_1", "a_2", "a_1_2"]),
    ],
)
def test_output_names_never_collide_and_always_end(inputs, want):
    """Item 8: stems by the naming rule of yolov9k.api.outputs, found in a few steps (an image named
    like a video once looped forever: every ``<stem>_<n>`` was one of the video's frame labels)."""
    from yolov9k.api.outputs import OutputNames
    from yolov9k.api.sources import Frame

    names = OutputNames()
    got = [names.stem(Frame(p, None, item=i, items=len(inputs), kind=k)) for i, (p, k) in enumerate(inputs)]
    assert got == want
    images = [s.casefold() for s, (_, k) in zip(got, inputs) if k == "image"]
    assert len(set(images)) == len(images)


def _before(model, img: np.ndarray, stride: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """predict as it was before issue 21, step by step: one image, NCHW float model, ops.postprocess,
    boxes mapped back one image at a time (square letterbox; ``stride``: the same with stride padding)."""
    chw, ratio_pad = prepare_image(img, IMGSZ, stride)
    with torch.inference_mode():
        det = postprocess(model(torch.from_numpy(chw)[None].float() / 255), 0.3, 0.45, max_det=300)[0]
    boxes = to_original(det[:, :4], chw.shape[1:], img.shape[:2], ratio_pad)
    return boxes.numpy(), det[:, 4].numpy(), det[:, 5].numpy().astype(np.int64)


def test_detections_equal_those_of_the_pipeline_before(demo, model):
    """Issue 21: the new pipeline (two workers, channels_last, batched fixed-size NMS and box mapping)
    gives the old step-by-step pipeline's detections on a real network, on non-square images: with
    the square letterbox as before, and with stride padding against the old steps at that shape."""
    base = read_image(sorted((demo / "images" / "val").iterdir())[0])
    images = [cv2.resize(base, wh) for wh in ((96, 60), (40, 96), (150, 100), (96, 96))]
    for square in (True, False):
        plan = replace(plan_for(torch.device("cpu")), square=square, workers=2, threads=1)
        got = _run(model, images, plan)
        assert len(got) == len(images)
        n = 0
        for img, r in zip(images, got):
            boxes, scores, classes = _before(model, img, None if square else 32)
            n += len(boxes)
            np.testing.assert_array_equal(r["classes"], classes)
            np.testing.assert_allclose(r["boxes"], boxes, atol=1e-3)
            np.testing.assert_allclose(r["scores"], scores, atol=1e-5)
        assert n > 0


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("channels_last", [False, True])
def test_onednn_1x1_convs_give_the_same_maps(model, channels_last, monkeypatch):
    """Issue 21: the inference copies' 1x1 convs run oneDNN's convolution (counted), with the maps
    of ATen's own path to float rounding; the state dict is unchanged."""
    ref_net, net = inference_copies(model, 2, channels_last=channels_last)
    assert use_onednn_1x1(net) > 10
    assert net.state_dict().keys() == ref_net.state_dict().keys()
    calls = []
    real = torch.mkldnn_convolution

    def counting(*args):
        calls.append(args[1].shape)
        return real(*args)

    monkeypatch.setattr(torch, "mkldnn_convolution", counting)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = ref_net.forward_main(x), net.forward_main(x)
        y_want, y_got = ref_net(x), net(x)
    assert calls and all(tuple(w[2:]) == (1, 1) for w in calls)
    assert not isinstance(ref_net.model[0].conv, OneDNNConv2d)
    for a, b in zip(want, got):
        assert a.abs().max() > 0.1
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y_got, y_want, rtol=1e-4, atol=1e-3)
