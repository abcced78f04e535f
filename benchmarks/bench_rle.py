"""Decode throughput of transforms.masks.rle_decode against a plain Python loop, side by side.

Run: ``python benchmarks/bench_rle.py`` (set TORCHXRAYVISION_WHEEL to add the real SIIM rows).
Prints masks/s of both decoders and the speed-up for each case:

- chexmask: lung-sized masks at 1024 x 1024 (two ellipses, about 25 % foreground);
- siim: pneumothorax-sized masks at 1024 x 1024 (a crescent along the chest wall);
- siim-real: every positive row of the torchxrayvision wheel's SIIM file, when available.

Both decoders are checked to give the same masks before timing.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from transforms.masks import rle_decode, rle_encode

SIZE = 1024


def loop_decode(rle: str, height: int, width: int, convention: str) -> np.ndarray:
    """The textbook decoder: a Python loop over runs and over the pixels of each run."""
    flat = [False] * (height * width)
    values = [int(token) for token in rle.split()]
    position = 0
    for start, length in zip(values[0::2], values[1::2]):
        if convention == "chexmask":
            position = start - 1
        else:
            position += start
        for offset in range(length):
            flat[position + offset] = True
        position += length
    array = np.array(flat, dtype=bool)
    if convention == "chexmask":
        return array.reshape(height, width)
    return array.reshape(width, height).T


def lung_masks(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    masks = []
    for _ in range(count):
        canvas = np.zeros((SIZE, SIZE), np.uint8)
        for centre_x in (300, 724):
            centre = (int(centre_x + rng.integers(-30, 30)), int(520 + rng.integers(-30, 30)))
            axes = (int(rng.integers(140, 180)), int(rng.integers(300, 360)))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(-8, 8)), 0, 360, 1, -1)
        masks.append(canvas.astype(bool))
    return masks


def pneumothorax_masks(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    masks = []
    for _ in range(count):
        outer, inner = np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
        centre = (int(300 + rng.integers(-20, 20)), int(450 + rng.integers(-20, 20)))
        axes = (int(rng.integers(150, 190)), int(rng.integers(280, 340)))
        cv2.ellipse(outer, centre, axes, 0, 180, 300, 1, -1)
        cv2.ellipse(inner, (centre[0] + 25, centre[1] + 25), axes, 0, 0, 360, 1, -1)
        masks.append((outer & ~inner).astype(bool))
    return masks


def real_siim_rows() -> list[str]:
    wheel = os.environ.get("TORCHXRAYVISION_WHEEL")
    if not wheel or not Path(wheel).is_file():
        return []
    with zipfile.ZipFile(wheel) as archive:
        raw = gzip.decompress(archive.read("torchxrayvision/data/siim-pneumothorax-train-rle.csv.gz"))
    rows = list(csv.reader(io.StringIO(raw.decode())))[1:]
    return [row[1] for row in rows if row[1].strip() != "-1"]


def masks_per_second(decode, strings: list[str], convention: str) -> float:
    start = time.perf_counter()
    for text in strings:
        decode(text, SIZE, SIZE, convention)
    return len(strings) / (time.perf_counter() - start)


def main() -> None:
    rng = np.random.default_rng(0)
    cases = [
        ("chexmask lungs 1024^2", "chexmask", [rle_encode(m, "chexmask") for m in lung_masks(40, rng)]),
        ("siim crescent 1024^2", "siim", [rle_encode(m, "siim") for m in pneumothorax_masks(40, rng)]),
    ]
    real = real_siim_rows()
    if real:
        cases.append((f"siim real rows ({len(real)} positive; loop on first 300)", "siim", real))
    else:
        print("TORCHXRAYVISION_WHEEL not set: real SIIM rows skipped")
    print(f"{'case':<48} {'vectorised masks/s':>19} {'loop masks/s':>13} {'speed-up':>9}")
    for name, convention, strings in cases:
        loop_strings = strings[:300]
        for text in loop_strings[:20]:
            assert np.array_equal(rle_decode(text, SIZE, SIZE, convention), loop_decode(text, SIZE, SIZE, convention))
        fast = masks_per_second(rle_decode, strings, convention)
        slow = masks_per_second(loop_decode, loop_strings, convention)
        print(f"{name:<48} {fast:>19.0f} {slow:>13.1f} {fast / slow:>8.0f}x")


if __name__ == "__main__":
    main()
