"""Per-image cost of decode + 8-bit windowing + letterbox for a 3000 x 2500 16-bit DICOM, side by side
with a bare pydicom + cv2.resize floor and a plain pydicom + Pillow loop, on one core.

    .venv/bin/python benchmarks/bench_decode.py [--repeats 15] [--window]

The script writes the DICOM itself (pydicom, explicit VR little endian, uncompressed, 3000 rows x 2500
columns, BitsAllocated 16, BitsStored 12, MONOCHROME2, a smooth radiograph-like image with noise) to a
temporary folder. Every timing starts from the file path, so each one includes reading the file
(from the page cache) and pydicom's parse of the header and pixel data. What each row adds on top:

    floor            pixel_array -> cv2.resize(INTER_AREA) of the 16-bit array to 427 x 512
                     (long side 512): no windowing, no 8-bit conversion, no padding
    ours, no PNG     images.decode_letterboxed: the window chosen on the full image (header window, or
                     percentiles on a subgrid), INTER_AREA resize of the stored values, window applied
                     to the 512-side result, centred on a black 512 x 512 canvas (the pipeline's path)
    ours + PNG       the same + images.encode_png (what the pipeline's image stage does)
    window first     images.decode_image (window the full image to uint8) + images.letterbox: the
                     order before decode_letterboxed, kept for comparison
    pydicom+Pillow   pixel_array -> min-max scale to uint8 in numpy -> PIL Image -> thumbnail
                     (512, 512) -> paste on a black 512 x 512 canvas

Rows are timed round-robin (one of each in turn) and the median over the repeats is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from transforms import images  # noqa: E402

ROWS, COLUMNS, BITS_STORED, SIZE = 3000, 2500, 12, 512


def radiograph(rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """A 12-bit chest-like image: smooth body and lung fields, a brighter mediastinum, sensor noise."""
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    x, y = xx / columns - 0.5, yy / rows - 0.5
    body = np.exp(-(x**2 / 0.18 + y**2 / 0.3))
    lungs = np.exp(-(((np.abs(x) - 0.18) / 0.12) ** 2 + ((y + 0.02) / 0.25) ** 2))
    mediastinum = np.exp(-((x / 0.07) ** 2 + ((y - 0.05) / 0.3) ** 2))
    noise = np.random.default_rng(seed).normal(0, 0.01, (rows, columns)).astype(np.float32)
    image = 0.55 * body - 0.3 * lungs + 0.25 * mediastinum + 0.1 + noise
    return np.clip(image * 4095, 0, 4095).astype(np.uint16)


def write_dicom(path: Path, pixels: np.ndarray, window: bool) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, BITS_STORED, BITS_STORED - 1
    dataset.PixelRepresentation = 0
    if window:
        dataset.WindowCenter, dataset.WindowWidth = 2048, 3000
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)


def floor(path: str) -> np.ndarray:
    pixels = pydicom.dcmread(path).pixel_array
    height, width = pixels.shape
    scale = SIZE / max(height, width)
    return cv2.resize(pixels, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


def ours_without_png(path: str) -> np.ndarray:
    return images.decode_letterboxed(path, size=SIZE).canvas


def window_first(path: str) -> np.ndarray:
    return images.letterbox(images.decode_image(path).pixels_uint8, SIZE)[0]


def ours_with_png(path: str) -> bytes:
    return images.encode_png(ours_without_png(path))


def pydicom_pillow(path: str) -> Image.Image:
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    eight = ((pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255).astype(np.uint8)
    image = Image.fromarray(eight)
    image.thumbnail((SIZE, SIZE))
    canvas = Image.new("L", (SIZE, SIZE))
    canvas.paste(image, ((SIZE - image.width) // 2, (SIZE - image.height) // 2))
    return canvas


def timed(functions: dict[str, Callable[[str], object]], path: str, repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each function, called round-robin after one warm-up each."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function(path)
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function(path)
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--window", action="store_true", help="give the file a WindowCenter/WindowWidth")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as one Beam worker thread
    functions = {"floor": floor, "ours, no PNG": ours_without_png, "ours + PNG": ours_with_png,
                 "window first": window_first, "pydicom+Pillow": pydicom_pillow}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.dcm"
        write_dicom(path, radiograph(ROWS, COLUMNS), args.window)
        windowing = images.decode_image(str(path)).windowing
        milliseconds = timed(functions, str(path), args.repeats)
    print(f"{ROWS} x {COLUMNS} 16-bit DICOM ({BITS_STORED} bits stored, windowing: {windowing}) -> {SIZE} x {SIZE}; "
          f"one core, median of {args.repeats}")
    print(f"{'path':<16} {'ms/image':>9} {'x floor':>8} {'x Pillow':>9}")
    for name, value in milliseconds.items():
        print(f"{name:<16} {value:9.1f} {value / milliseconds['floor']:8.2f} {value / milliseconds['pydicom+Pillow']:9.2f}")


if __name__ == "__main__":
    main()
