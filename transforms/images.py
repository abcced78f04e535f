"""The pipeline's image: a file decoded, windowed to 8 bits and letterboxed on a square black canvas.

:func:`decode_letterboxed` is what the image stage runs (:mod:`transforms.image_decode` for the pixels,
:mod:`transforms.windowing` for the 8 bits, :func:`transforms.geometry.letterbox_for` for the placement);
:func:`decode_image` and :func:`letterbox` do the same in two steps at full resolution, and
:func:`resize_canvas` brings a finished canvas to another square size. PNG bytes of a canvas are made by
:mod:`transforms.png`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from transforms.geometry import Letterbox, letterbox_for
from transforms.image_decode import ImageDecodeError, ImageFormat, decode_stored
from transforms.windowing import Windowing, apply_window, robust_range, to_uint8


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for the letterbox: 8-bit pixels plus what was done to get them.

    Of a DICOM header only the fields named in :data:`transforms.image_decode.DICOM_FACTS_KEPT` are carried."""

    pixels_uint8: np.ndarray
    width: int
    height: int
    photometric: str  # as read, before inversion: DICOM PhotometricInterpretation; PNG/JPEG "MONOCHROME2" or "RGB"
    bits_stored: int
    source_format: ImageFormat
    windowing: Windowing


def decode_image(path_or_bytes: str | bytes, format: str | None = None) -> DecodedImage:
    """Decode and window to 8 bits: a DICOM's own VOI LUT (first VOILUTSequence item) when present,
    else its WindowCenter/WindowWidth, else :func:`to_uint8`'s robust min-max; 8-bit PNG/JPEG pass
    unchanged (MIMIC JPGs are already equalised, ``docs/formats/mimic-cxr.md`` §2.3)."""
    decoded = decode_stored(path_or_bytes, format)
    pixels, header, fmt = decoded.pixels, decoded.header, decoded.source_format
    windowing: Windowing
    if header.voi_lut is not None:
        windowing = "dicom-voi-lut"
        pixels_uint8 = header.voi_lut.to_uint8(pixels)
    else:
        if header.window is not None:
            windowing = "dicom-window"
        elif pixels.dtype == np.uint8:
            windowing = "none"
        else:
            windowing = "percentile"
        pixels_uint8 = to_uint8(pixels, header.window)
    if pixels_uint8.min() == pixels_uint8.max():
        raise ImageDecodeError(f"image has no contrast after {windowing} windowing")
    height, width = pixels.shape
    return DecodedImage(
        pixels_uint8=pixels_uint8,
        width=width,
        height=height,
        photometric=header.photometric,
        bits_stored=header.bits_stored,
        source_format=fmt,
        windowing=windowing,
    )


def letterbox(image_uint8: np.ndarray, size: int = 512) -> tuple[np.ndarray, Letterbox]:
    """Scale the long side to ``size`` (INTER_AREA when shrinking, INTER_CUBIC when enlarging) and
    centre on a black ``size x size`` canvas; the :class:`Letterbox` maps original coordinates."""
    image = np.asarray(image_uint8)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"letterbox expects a 2-D uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape
    box = letterbox_for(width, height, size)
    interpolation = cv2.INTER_AREA if box.scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (box.content_width, box.content_height), interpolation=interpolation)
    canvas = np.zeros((size, size), dtype=np.uint8)
    x0, y0 = int(box.pad_x), int(box.pad_y)
    canvas[y0 : y0 + box.content_height, x0 : x0 + box.content_width] = resized
    return canvas, box


@dataclass(frozen=True)
class LetterboxedImage:
    """The pipeline's image: the letterboxed 8-bit canvas and what was done to get it."""

    canvas: np.ndarray  # (size, size) uint8
    letterbox: Letterbox
    width: int  # original size
    height: int
    photometric: str
    bits_stored: int
    source_format: ImageFormat
    windowing: Windowing


_RESIZABLE = (np.uint8, np.uint16, np.int16, np.float32)


def decode_letterboxed(path_or_bytes: str | bytes, format: str | None = None, size: int = 512) -> LetterboxedImage:
    """Decode, resize the stored values to the letterbox, then window to 8 bits, then pad.

    The window is chosen exactly as :func:`decode_image` chooses it (the DICOM VOI LUT, else its
    window, else robust percentiles of the full-resolution image), but it is applied after the
    resize: the full-resolution pixels are touched once, by the resize, instead of three times.
    The result differs from ``letterbox(decode_image(...).pixels_uint8)`` only where the window
    clips inside one resampling cell (at most a few grey levels)."""
    decoded = decode_stored(path_or_bytes, format)
    pixels, header, fmt = decoded.pixels, decoded.header, decoded.source_format
    height, width = pixels.shape
    box = letterbox_for(width, height, size)
    stored = pixels if pixels.dtype in _RESIZABLE else pixels.astype(np.float32)
    interpolation = cv2.INTER_AREA if box.scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(stored, (box.content_width, box.content_height), interpolation=interpolation)
    windowing: Windowing
    if header.voi_lut is not None:
        windowing = "dicom-voi-lut"
        content = header.voi_lut.to_uint8(np.clip(resized, pixels.min(), pixels.max()).astype(pixels.dtype))
    elif header.window is not None:
        windowing = "dicom-window"
        content = to_uint8(resized, header.window)
    elif pixels.dtype == np.uint8:
        windowing = "none"
        content = resized
    else:
        windowing = "percentile"
        try:
            content = apply_window(resized, *robust_range(pixels))
        except ValueError as exc:
            raise ImageDecodeError(str(exc)) from exc
    if content.min() == content.max():
        raise ImageDecodeError(f"image has no contrast after {windowing} windowing")
    canvas = np.zeros((size, size), dtype=np.uint8)
    x0, y0 = int(box.pad_x), int(box.pad_y)
    canvas[y0 : y0 + box.content_height, x0 : x0 + box.content_width] = content
    return LetterboxedImage(
        canvas=canvas,
        letterbox=box,
        width=width,
        height=height,
        photometric=header.photometric,
        bits_stored=header.bits_stored,
        source_format=fmt,
        windowing=windowing,
    )


def resize_canvas(canvas: np.ndarray, size: int) -> np.ndarray:
    """A square letterboxed canvas at ``size`` x ``size`` (area averaging when shrinking, bilinear when
    growing): a profile's input size (e.g. 224) from the images table's canvas. Unit coordinates of the
    canvas stay valid, since both are the same square. The canvas itself when it already has that size."""
    height, width = canvas.shape[:2]
    if height != width:
        raise ValueError(f"a letterboxed canvas is square, got {width}x{height}")
    if size == width:
        return canvas
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if size < width else cv2.INTER_LINEAR)
