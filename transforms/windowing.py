"""Stored pixel values -> 8 bits: explicit linear windowing, and the robust range used when no window is given.

Windowing is done in float32 and rounded half to even, so the same input always gives the same bytes; a
DICOM VOI LUT is applied by :meth:`transforms.image_decode.VoiLut.to_uint8`. Which window an image gets
(its VOI LUT, its WindowCenter/WindowWidth, or :func:`robust_range`) is decided in :mod:`transforms.images`.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

ROBUST_PERCENTILES = (0.5, 99.5)
"""Percentiles taken as black and white when no window is given, for data wider than 8 bits."""
_PERCENTILE_SAMPLE_PIXELS = 1 << 20  # percentiles are estimated on a regular subgrid of at most this many pixels

Windowing = Literal["dicom-voi-lut", "dicom-window", "percentile", "none"]
"""How an image was brought to 8 bits: its DICOM VOI LUT, its DICOM window, robust percentiles, or not at all."""


def to_uint8(array: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Explicit linear windowing to uint8.

    With ``window = (center, width)``: ``center - width/2`` -> 0, ``center + width/2`` -> 255,
    clipped. Without: uint8 input is returned unchanged; anything else is stretched between
    its 0.5 and 99.5 percentiles (min and max when those coincide). Raises ``ValueError`` for a
    constant image or a non-positive window width.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {array.shape}")
    if window is None and array.dtype == np.uint8:
        return array
    if window is not None:
        center, width = window
        if not width > 0:
            raise ValueError(f"window width must be positive, got {width}")
        low, high = center - width / 2, center + width / 2
    else:
        low, high = robust_range(array)
    return apply_window(array, low, high)


def robust_range(array: np.ndarray) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles (estimated on a regular subgrid), or min and max when those coincide."""
    step = max(1, math.ceil(math.sqrt(array.size / _PERCENTILE_SAMPLE_PIXELS)))
    low, high = np.percentile(array[::step, ::step], ROBUST_PERCENTILES)
    if high <= low:
        low, high = float(array.min()), float(array.max())
    if high <= low:
        raise ValueError(f"image has no contrast: every pixel is {low}")
    return float(low), float(high)


def apply_window(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low`` -> 0, ``high`` -> 255, linear between, clipped: uint8."""
    # the same float32 operations as (x - low) * k, clipped and rounded half to even, done in place
    scaled = array.astype(np.float32)
    scaled -= np.float32(low)
    scaled *= np.float32(255.0 / (high - low))
    np.clip(scaled, 0, 255, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)
