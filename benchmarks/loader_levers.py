"""Single levers of the loader, old and new side by side in one process (rounds alternating).

``hsv``: the HSV jitter's table pass on a 640 x 640 image: split + three 1-channel LUTs + merge (what
``augment_hsv`` does) against one 3-channel LUT (measured slower: not taken, see RESULTS.md); the
colour conversions around it are the same in both and not timed. Example::

    python benchmarks/loader_levers.py --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np


def _tables(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = rng.uniform(-1, 1, 3) * [0.015, 0.7, 0.4] + 1
    x = np.arange(0, 256, dtype=r.dtype)
    return (
        ((x * r[0]) % 180).astype(np.uint8),
        np.clip(x * r[1], 0, 255).astype(np.uint8),
        np.clip(x * r[2], 0, 255).astype(np.uint8),
    )


def hsv_split_merge(hsv: np.ndarray, tables) -> np.ndarray:
    hue, sat, val = cv2.split(hsv)
    return cv2.merge([cv2.LUT(c, t) for c, t in zip((hue, sat, val), tables)], dst=hsv)


def hsv_one_lut(hsv: np.ndarray, tables) -> np.ndarray:
    lut = np.stack(tables, 1).reshape(256, 1, 3)
    return cv2.LUT(hsv, lut, dst=hsv)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=200)
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


if __name__ == "__main__":
    main()
