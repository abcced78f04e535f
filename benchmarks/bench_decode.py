"""Per-image cost of the image stage (decode -> window/invert -> letterbox -> PNG) on real chest
radiographs and on synthetic ones, side by side with a bare pydicom + cv2.resize floor, on one core.

    .venv/bin/python benchmarks/bench_decode.py [--repeats 5] [--level N] [--no-real] [--others]

Inputs, each a DICOM file timed from its path (so every timing includes reading the file from the
page cache and pydicom's parse of the header and pixel data):

    RG1_*       the RG1 computed radiography files of the pydicom-data wheel: one chest radiograph,
                1955 x 1841, 15 bits stored, MONOCHROME1, with a WindowCenter/WindowWidth, as UNCR
                (uncompressed), UNCI (uncompressed copy of the lossy version), J2KR (JPEG 2000
                lossless) and J2KI (JPEG 2000 lossy). The wheel is read from build/cache/; when it is
                not there the script runs ``pip download --no-deps pydicom-data==1.0.0 -d build/cache``
                (offline, only the synthetic rows are printed). The files are read from the wheel,
                written to a temporary folder and deleted after the run.
    synthetic   3000 x 2500, 12 bits stored, a smooth radiograph-like image with noise written by the
                script: MONOCHROME2 without a window (the percentile path) and MONOCHROME1 with one.

Table 1, one row per input. The paths are timed round-robin (one of each in turn) and each is
reported as its best run of the repeats, as timeit does: on a shared machine the fastest run is the
one least disturbed by other processes, and the ratios are between equally undisturbed runs.

    floor       pydicom.dcmread(path).pixel_array -> cv2.resize(INTER_AREA) of the stored values to
                the letterbox content size (long side 512): no inversion, no window, no padding
    stage       images.decode_letterboxed: the checks, Modality LUT, MONOCHROME1 inversion, window
                chosen on the full image, resize of the stored values, window applied to the result,
                padded to 512 x 512 (the pipeline's image stage before encoding); target <= 1.5 x floor
    png         png.encode_png of that canvas at the configured level (BuildConfig.png_compression
                unless --level is given)
    full        stage + png, timed as one call (what the pipeline's image stage does per image)

Table 2, per input: png.encode_png of its canvas at several levels, with milliseconds and bytes
relative to level 1, and zlib's Z_RLE strategy (through cv2 directly) as a reference point.

With --others two older comparison paths are timed on the synthetic inputs too: ``window first``
(images.decode_image + images.letterbox, windowing the full image) and ``pydicom+Pillow`` (min-max
scale in numpy, PIL thumbnail, paste on a canvas).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from schemas.config import BuildConfig
from transforms import images, png

ROWS, COLUMNS, BITS_STORED, SIZE = 3000, 2500, 12, 512
REPO = Path(__file__).resolve().parent.parent
WHEEL_CACHE = REPO / "build" / "cache"
PYDICOM_DATA = "pydicom-data==1.0.0"
RG1_FILES = ("RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm")
TABLE_LEVELS = (0, 1, 3, 6, 9)


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


def write_dicom(path: Path, pixels: np.ndarray, photometric: str, window: bool) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, BITS_STORED, BITS_STORED - 1
    dataset.PixelRepresentation = 0
    if window:
        dataset.WindowCenter, dataset.WindowWidth = 2048, 3000
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)


def pydicom_data_wheel() -> Path | None:
    """The pydicom-data wheel in build/cache/, downloaded there first when missing; None when offline."""
    found = sorted(WHEEL_CACHE.glob("pydicom_data-1.0.0-*.whl"))
    if not found:
        print(f"downloading {PYDICOM_DATA} into {WHEEL_CACHE.relative_to(REPO)}/ ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PYDICOM_DATA, "-d", str(WHEEL_CACHE)],
            check=False,
        )
        found = sorted(WHEEL_CACHE.glob("pydicom_data-1.0.0-*.whl"))
    return found[0] if found else None


def real_inputs(folder: Path) -> dict[str, Path]:
    wheel = pydicom_data_wheel()
    if wheel is None:
        print(f"{PYDICOM_DATA} is not downloadable: real radiographs skipped")
        return {}
    inputs = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in RG1_FILES:
            path = folder / name
            path.write_bytes(archive.read(f"data_store/data/{name}"))
            inputs[name.removesuffix(".dcm")] = path
    return inputs


def synthetic_inputs(folder: Path) -> dict[str, Path]:
    pixels = radiograph(ROWS, COLUMNS)
    inputs = {"synthetic M2": folder / "synthetic-m2.dcm", "synthetic M1+win": folder / "synthetic-m1.dcm"}
    write_dicom(inputs["synthetic M2"], pixels, "MONOCHROME2", window=False)
    write_dicom(inputs["synthetic M1+win"], (2**BITS_STORED - 1) - pixels, "MONOCHROME1", window=True)
    return inputs


def floor(path: str) -> np.ndarray:
    pixels = pydicom.dcmread(path).pixel_array
    height, width = pixels.shape
    scale = SIZE / max(height, width)
    return cv2.resize(pixels, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


def stage(path: str) -> np.ndarray:
    return images.decode_letterboxed(path, size=SIZE).canvas


def window_first(path: str) -> np.ndarray:
    return images.letterbox(images.decode_image(path).pixels_uint8, SIZE)[0]


def pydicom_pillow(path: str) -> Image.Image:
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    eight = ((pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255).astype(np.uint8)
    image = Image.fromarray(eight)
    image.thumbnail((SIZE, SIZE))
    canvas = Image.new("L", (SIZE, SIZE))
    canvas.paste(image, ((SIZE - image.width) // 2, (SIZE - image.height) // 2))
    return canvas


def rle_png(canvas: np.ndarray) -> bytes:
    """Level 1 with zlib's Z_RLE strategy (run lengths only, no string matching): a reference point."""
    ok, encoded = cv2.imencode(
        ".png", canvas, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    )
    assert ok
    return encoded.tobytes()


def timed(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best milliseconds per call of each function, called round-robin after one warm-up each."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: min(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--level",
        type=int,
        choices=png.PNG_LEVELS,
        default=BuildConfig.model_fields["png_compression"].default,
        help="PNG compression level of the png and full columns (default: the build config's)",
    )
    parser.add_argument("--no-real", action="store_true", help="synthetic inputs only (no pydicom-data wheel)")
    parser.add_argument("--others", action="store_true", help="also time window-first and pydicom+Pillow")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as one Beam worker thread
    levels = sorted({*TABLE_LEVELS, args.level})

    rows, encodings = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {} if args.no_real else real_inputs(Path(tmp))
        inputs |= synthetic_inputs(Path(tmp))
        for name, path in inputs.items():
            where = str(path)
            decoded = images.decode_letterboxed(where, size=SIZE)
            paths = {
                "floor": lambda where=where: floor(where),
                "stage": lambda where=where: stage(where),
                "full": lambda where=where: png.encode_png(stage(where), args.level),
            }
            if args.others and name.startswith("synthetic"):
                paths["window first"] = lambda where=where: window_first(where)
                paths["pydicom+Pillow"] = lambda where=where: pydicom_pillow(where)
            rows[name] = (decoded, timed(paths, args.repeats))
            canvas = decoded.canvas
            coders = {level: (lambda level=level, canvas=canvas: png.encode_png(canvas, level)) for level in levels}
            coders["rle"] = lambda canvas=canvas: rle_png(canvas)
            milliseconds = timed(coders, args.repeats)
            sizes = {key: len(coder()) for key, coder in coders.items()}
            encodings[name] = {key: (milliseconds[key], sizes[key]) for key in coders}

    print(f"image stage per image, one core, best of {args.repeats}; letterbox {SIZE} x {SIZE}, PNG level {args.level}")
    print(
        f"{'input':<17} {'pixels':>11} {'windowing':<13} {'floor ms':>8} {'stage ms':>8} {'x floor':>7} "
        f"{'png ms':>7} {'full ms':>8} {'x floor':>7}" + ("   others (x floor)" if args.others else "")
    )
    for name, (decoded, ms) in rows.items():
        others = "  ".join(
            f"{key} {ms[key]:.1f} ({ms[key] / ms['floor']:.2f})"
            for key in ("window first", "pydicom+Pillow")
            if key in ms
        )
        print(
            f"{name:<17} {decoded.width:>5}x{decoded.height:<5} {decoded.windowing:<13} {ms['floor']:8.1f} "
            f"{ms['stage']:8.1f} {ms['stage'] / ms['floor']:7.2f} {encodings[name][args.level][0]:7.1f} "
            f"{ms['full']:8.1f} {ms['full'] / ms['floor']:7.2f}   {others}".rstrip()
        )

    print(
        f"\nPNG encoding of the {SIZE} x {SIZE} canvas (png.encode_png; rle = level 1 with zlib's Z_RLE "
        "strategy, not a config option)"
    )
    print(f"{'input':<17} {'level':>5} {'ms':>7} {'bytes':>8} {'ms / L1':>8} {'bytes / L1':>10}")
    for name, by_level in encodings.items():
        base_ms, base_bytes = by_level[1]
        for key, (ms, size) in by_level.items():
            mark = " *" if key == args.level else ""
            print(f"{name:<17} {key!s:>5} {ms:7.2f} {size:8d} {ms / base_ms:8.2f} {size / base_bytes:10.3f}{mark}")
    print("* the configured level")


if __name__ == "__main__":
    main()
