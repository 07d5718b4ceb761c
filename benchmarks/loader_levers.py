"""Single levers of the loader, old and new side by side in one process (rounds alternating).

``hsv``: the HSV jitter's table pass on a 640 x 640 image: split + three 1-channel LUTs + merge (what
``augment_hsv`` does) against one 3-channel LUT (measured slower: not taken, see RESULTS.md); the
colour conversions around it are the same in both and not timed. ``--fused`` also times the whole
jitter (both conversions and the tables) as it ran before against ``yolov9k.ops.hsv_jitter``'s C++
kernel (one AVX2 pass, the same pixels; checked before timing). Example::

    python benchmarks/loader_levers.py --rounds 7 [--fused]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np


def _tables(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from yolov9k.ops.hsv_jitter import gain_tables

    return tuple(gain_tables(rng.uniform(-1, 1, 3) * [0.015, 0.7, 0.4] + 1))


def hsv_split_merge(hsv: np.ndarray, tables) -> np.ndarray:
    hue, sat, val = cv2.split(hsv)
    return cv2.merge([cv2.LUT(c, t) for c, t in zip((hue, sat, val), tables)], dst=hsv)


def hsv_one_lut(hsv: np.ndarray, tables) -> np.ndarray:
    lut = np.stack(tables, 1).reshape(256, 1, 3)
    return cv2.LUT(hsv, lut, dst=hsv)


def hsv_former(img: np.ndarray, tables, planes: list[np.ndarray]) -> np.ndarray:
    """The HSV jitter as ``augment_hsv`` ran it before ``ops.hsv_jitter``: OpenCV, reused buffers."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    views = [p.reshape(hsv.shape[:2]) for p in planes]
    cv2.split(hsv, views)
    for plane, lut in zip(views, tables):
        cv2.LUT(plane, lut, dst=plane)
    cv2.merge(views, dst=hsv)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=img)


def compare_fused(rounds: int, calls: int) -> None:
    """The whole HSV jitter on a 640 x 640 image: the former OpenCV path vs ``ops.hsv_jitter``'s kernel
    (equal pixels: rows of 640 are whole vectors)."""
    import torch

    from yolov9k import ops

    torch.set_num_threads(1)
    if not ops.hsv_jitter_kernel_matches_opencv():
        raise SystemExit("no hsv_jitter kernel here (extension not built, or no AVX2 + FMA)")
    rng = np.random.default_rng(1)
    img = cv2.resize(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), (640, 640))
    tables = _tables(rng)
    planes = [np.empty(640 * 640, np.uint8) for _ in range(3)]
    stacked = torch.from_numpy(np.stack(tables))
    a, b = img.copy(), torch.from_numpy(img.copy())
    assert np.array_equal(hsv_former(a, tables, planes), ops.hsv_jitter(b, stacked).numpy())
    fns = {
        "former: OpenCV 2 conversions + split + 3 LUT + merge": lambda: hsv_former(a, tables, planes),
        "ops.hsv_jitter (C++ AVX2 kernel, same pixels)": lambda: ops.hsv_jitter(b, stacked),
    }
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t0) / calls * 1e3)
    for name, ts in times.items():
        print(f"{name}: {statistics.median(ts):.3f} ms ({min(ts):.3f}-{max(ts):.3f}) per 640 x 640 image")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--fused", action="store_true", help="time the whole jitter too (vs ops.hsv_jitter)")
    args = p.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    img = cv2.cvtColor(rng.integers(0, 256, (640, 640, 3), dtype=np.uint8), cv2.COLOR_RGB2HSV)
    tables = _tables(rng)
    a, b = img.copy(), img.copy()
    assert np.array_equal(hsv_split_merge(a, tables), hsv_one_lut(b, tables))
    times = {"split + 3 LUT + merge": [], "one 3-channel LUT": []}
    for _ in range(args.rounds):
        for name, fn in zip(times, (hsv_split_merge, hsv_one_lut)):
            t0 = time.perf_counter()
            for _ in range(args.calls):
                fn(a, tables)
            times[name].append((time.perf_counter() - t0) / args.calls * 1e3)
    for name, ts in times.items():
        print(f"{name}: {statistics.median(ts):.3f} ms ({min(ts):.3f}-{max(ts):.3f}) per 640 x 640 image")
    if args.fused:
        compare_fused(args.rounds, args.calls // 4)


if __name__ == "__main__":
    main()
