"""PNG bytes of a letterboxed canvas: deterministic encoding at a chosen zlib level, and resizing a stored canvas.

The images table stores each canvas as PNG; every level is lossless, so the level only trades encoding
time for size (``BuildConfig.png_compression``). Broken PNG inputs are diagnosed on the decoding side
(:func:`transforms.image_decode.png_header_problem`).
"""

from __future__ import annotations

import cv2
import numpy as np

from transforms.images import resize_canvas

PNG_LEVELS = range(10)
"""zlib compression levels :func:`encode_png` accepts: 0 stores, 1 is fastest, 9 is smallest. The build's level is
``BuildConfig.png_compression`` (schemas/config.py, where the default's measurements are)."""


def encode_png(image_uint8: np.ndarray, level: int) -> bytes:
    """Deterministic PNG bytes of a 2-D uint8 image at zlib compression ``level`` (one of
    :data:`PNG_LEVELS`), no metadata. Every level is lossless: only size and encoding time differ."""
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level not in PNG_LEVELS:
        raise ValueError(f"PNG compression level must be an integer from 0 to 9, got {level!r}")
    image = np.asarray(image_uint8)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"encode_png expects a 2-D uint8 image, got {image.dtype} {image.shape}")
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(level)])
    if not ok:
        raise ValueError("OpenCV failed to encode the PNG")
    return encoded.tobytes()


def resize_png(png: bytes, size: int, level: int = 1) -> bytes:
    """PNG bytes of a grayscale canvas resized by :func:`resize_canvas` (the same bytes when the size matches)."""
    canvas = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if canvas is None or canvas.ndim != 2:
        raise ValueError("not a grayscale PNG canvas")
    if canvas.shape[0] == size and canvas.shape[1] == size:
        return png
    return encode_png(resize_canvas(canvas, size), level)
