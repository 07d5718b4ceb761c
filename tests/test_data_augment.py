"""Geometry and augmentations: exact expectations for flips, letterbox, scale_boxes, mosaic, perspective."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolov9k.data import HYP_SCRATCH_HIGH, YoloDataset, collate_fn, letterbox, scale_boxes
from yolov9k.data.augment import box_candidates, fliplr, flipud, mosaic4, random_perspective
from yolov9k.data.hyp import resolve_hyp
from yolov9k.data.labels import Sample


def test_hyp_values_and_overrides():
    assert (
        HYP_SCRATCH_HIGH["lr0"] == 0.01 and HYP_SCRATCH_HIGH["mixup"] == 0.15 and len(HYP_SCRATCH_HIGH) == 30
    )
    assert resolve_hyp({"mosaic": 0})["mosaic"] == 0.0 and HYP_SCRATCH_HIGH["mosaic"] == 1.0
    with pytest.raises(KeyError, match="mosiac"):
        resolve_hyp({"mosiac": 1.0})


def test_flips_mirror_known_box():
    img = np.zeros((10, 20, 3), np.uint8)
    img[0, 0] = 255
    lab = np.array([[1, 0.2, 0.3, 0.1, 0.2]], np.float32)
    out, lab2 = fliplr(img, lab)
    assert out[0, 19, 0] == 255 and out[0, 0, 0] == 0
    np.testing.assert_allclose(lab2, [[1, 0.8, 0.3, 0.1, 0.2]])
    out, lab3 = flipud(img, lab)
    assert out[9, 0, 0] == 255
    np.testing.assert_allclose(lab3, [[1, 0.2, 0.7, 0.1, 0.2]])
    np.testing.assert_allclose(lab, [[1, 0.2, 0.3, 0.1, 0.2]])  # input untouched


@pytest.mark.parametrize(("h0", "w0", "shape"), [(300, 500, 640), (480, 200, (320, 256)), (64, 64, 640)])
def test_letterbox_scale_boxes_round_trip(h0, w0, shape):
    img = np.full((h0, w0, 3), 7, np.uint8)
    out, (rw, rh), (dw, dh) = letterbox(img, shape)
    th, tw = (shape, shape) if isinstance(shape, int) else shape
    assert out.shape == (th, tw, 3)
    assert rw == rh == min(th / h0, tw / w0)
    assert abs(dw * 2 + round(w0 * rw) - tw) < 1e-9 and abs(dh * 2 + round(h0 * rh) - th) < 1e-9
    assert (out[int(dh) + 2, int(dw) + 2] == 7).all()  # content starts after the pad
    box = np.array([[10.0, 20.0, 50.0, 60.0]])
    net = box * rw + [dw, dh, dw, dh]
    back = scale_boxes((th, tw), net.copy(), (h0, w0))
    np.testing.assert_allclose(back, box, atol=1e-9)
    back2 = scale_boxes((th, tw), torch.tensor(net), (h0, w0), ratio_pad=((rh, rw), (dw, dh)))
    np.testing.assert_allclose(back2.numpy(), box, atol=1e-9)
    clipped = scale_boxes((th, tw), np.array([[-50.0, -50.0, 5000.0, 5000.0]]), (h0, w0))
    np.testing.assert_allclose(clipped, [[0, 0, w0, h0]])


def test_letterbox_auto_and_no_scaleup():
    img = np.zeros((100, 200, 3), np.uint8)
    out, r, (dw, dh) = letterbox(img, 640, auto=True, stride=32)
    assert out.shape == (320, 640, 3) and r == (3.2, 3.2) and dw == 0
    out, r, _ = letterbox(img, 640, scaleup=False)
    assert out.shape == (640, 640, 3) and r == (1.0, 1.0)


def test_mosaic4_places_tiles_and_labels():
    s = 64
    images = [np.full((s, s, 3), 10 * (k + 1), np.uint8) for k in range(4)]
    labels = [np.array([[k, 0.5, 0.5, 0.5, 0.5]], np.float32) for k in range(4)]
    canvas, lab = mosaic4(images, labels, s, center=(s, s))
    assert canvas.shape == (2 * s, 2 * s, 3)
    for k, (y, x) in enumerate([(0, 0), (0, s), (s, 0), (s, s)]):
        assert (canvas[y : y + s, x : x + s] == 10 * (k + 1)).all()
        np.testing.assert_allclose(lab[k], [k, x + 16, y + 16, x + 48, y + 48])
    canvas, lab = mosaic4(images, labels, s, center=(40, 90))  # off-centre: tiles cropped, labels clipped
    assert (canvas[26:90, 0:40] == 10).all() and (canvas[:26, :40] == 114).all()
    assert (canvas[90:, 40:104] == 40).all() and (canvas[90:, 104:] == 114).all()
    np.testing.assert_allclose(lab[3], [3, 56, 106, 88, 128])  # bottom-right box clipped at 2s
    assert lab[:, 1:].min() >= 0 and lab[:, 1:].max() <= 2 * s


def test_random_perspective_identity_and_border():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    lab = np.array([[2, 10, 12, 40, 50]], np.float32)
    out, lab2 = random_perspective(img, lab, rng, degrees=0, translate=0, scale=0, shear=0, perspective=0)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_allclose(lab2, lab, atol=1e-4)
    # crop a 2s canvas to s: with no other transform the centre s x s window is kept
    big = np.zeros((128, 128, 3), np.uint8)
    lab = np.array([[0, 40, 40, 80, 70], [1, 0, 0, 10, 10]], np.float32)
    out, lab2 = random_perspective(big, lab, rng, 0, 0, 0, 0, 0, border=(-32, -32))
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(lab2, [[0, 8, 8, 48, 38]], atol=1e-4)  # second box left the image: dropped


def test_box_candidates_rules():
    before = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [10, 10, 10, 300], [10, 10, 10, 10]], float).T * 0 + [
        [0], [0], [10], [10]
    ]  # fmt: skip
    after = np.array([[0, 0, 10, 10], [0, 0, 1.5, 10], [0, 0, 10, 0.05], [0, 0, 2.5, 2.5]], float).T
    keep = box_candidates(before, after)
    assert keep.tolist() == [True, False, False, False]  # ok, too thin, too thin/elongated, area < 10%


# ---- YoloDataset ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Sample]:
    import cv2

    d = tmp_path_factory.mktemp("ds") / "images"
    d.mkdir()
    out = []
    for i, (h, w) in enumerate([(100, 200), (200, 100), (150, 150), (90, 160), (160, 90), (120, 120)]):
        img = np.full((h, w, 3), 60 + 20 * i, np.uint8)
        f = d / f"{i}.png"
        cv2.imwrite(str(f), img)
        lab = np.array([[i % 3, 0.5, 0.5, 0.4, 0.3], [1, 0.2, 0.25, 0.2, 0.3]], np.float32)
        out.append(Sample(str(f), (h, w), lab))
    return out


def test_val_item_maps_back_to_original(samples):
    ds = YoloDataset(samples, imgsz=128, augment=False)
    img, lab, f, shapes = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 128, 128) and img.permute(1, 2, 0).is_contiguous()
    assert f == samples[0].im_file and lab[:, 0].eq(0).all()
    (h0, w0), ratio_pad = shapes
    assert (h0, w0) == (100, 200)
    xywh = lab[:, 2:] * 128
    xyxy = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1).double()
    back = scale_boxes((128, 128), xyxy, (h0, w0), ratio_pad)
    l0 = samples[0].labels.astype(np.float64)
    expect = np.stack(((l0[:, 1] - l0[:, 3] / 2) * w0, (l0[:, 2] - l0[:, 4] / 2) * h0,
                       (l0[:, 1] + l0[:, 3] / 2) * w0, (l0[:, 2] + l0[:, 4] / 2) * h0), 1)  # fmt: skip
    np.testing.assert_allclose(back.numpy(), expect, atol=1e-3)
    np.testing.assert_array_equal(lab[:, 1].numpy(), l0[:, 0])
    # RGB order: the grey image has equal channels; padding is 114
    assert img[:, 0, 0].tolist() == [114, 114, 114] and img[:, 64, 64].tolist() == [60, 60, 60]


def test_rect_batches(samples):
    ds = YoloDataset(samples, imgsz=128, rect=True, batch_size=2, stride=32, pad=0.5)
    assert not ds.mosaic
    ars = [s.shape[0] / s.shape[1] for s in ds.samples]
    assert ars == sorted(ars)
    assert (ds.batch_shapes % 32 == 0).all()
    for i in range(len(ds)):
        img, lab, _, _ = ds[i]
        assert tuple(img.shape[1:]) == tuple(ds.batch_shapes[i // 2])
        assert ((lab[:, 2:4] - lab[:, 4:] / 2) >= 0).all() and ((lab[:, 2:4] + lab[:, 4:] / 2) <= 1).all()
    # two landscape images (h/w 0.5, 0.5625): ceil([0.5625, 1] * 128 / 32 + 0.5) * 32
    assert tuple(ds.batch_shapes[0]) == (96, 160)


def test_mosaic_training_items(samples):
    ds = YoloDataset(samples, imgsz=128, augment=True, hyp={"mixup": 1.0, "fliplr": 0.5}, seed=5)
    assert ds.mosaic
    n_boxes = 0
    for i in range(len(ds)):
        img, lab, _, shapes = ds[i]
        assert img.shape == (3, 128, 128) and shapes is None
        assert lab.shape[1] == 6 and (lab[:, 0] == 0).all()
        assert ((lab[:, 1] >= 0) & (lab[:, 1] < 3)).all()
        x1y1, x2y2 = lab[:, 2:4] - lab[:, 4:] / 2, lab[:, 2:4] + lab[:, 4:] / 2
        assert (x1y1 >= -1e-6).all() and (x2y2 <= 1 + 1e-6).all() and (lab[:, 4:] > 0).all()
        n_boxes += len(lab)
    assert n_boxes > 0
    a, b = ds[2], ds[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # deterministic per (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(ds[2][0], a[0])
    ds.close_mosaic()
    assert not ds.mosaic and ds[0][3] is not None


def test_augment_without_mosaic_keeps_boxes_consistent(samples):
    hyp = {"mosaic": 0.0, "fliplr": 1.0, "hsv_h": 0, "hsv_s": 0, "hsv_v": 0, "translate": 0, "scale": 0}
    ds = YoloDataset(samples, imgsz=128, augment=True, hyp=hyp)
    img, lab, _, shapes = ds[2]  # 150x150 -> 128 square, no padding, always mirrored
    assert shapes is not None
    np.testing.assert_allclose(lab[:, 2].numpy(), 1 - samples[2].labels[:, 1], atol=2e-3)
    np.testing.assert_allclose(lab[:, 3:].numpy(), samples[2].labels[:, 2:], atol=2e-3)


def test_collate_sets_image_index(samples):
    ds = YoloDataset(samples, imgsz=64)
    imgs, targets, files, shapes = collate_fn([ds[0], ds[1], ds[2]])
    assert imgs.shape == (3, 3, 64, 64) and imgs.dtype == torch.uint8
    assert targets[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert list(files) == [s.im_file for s in samples[:3]] and len(shapes) == 3
    assert ds[1][1][:, 0].eq(0).all()  # collate did not modify the items in place
