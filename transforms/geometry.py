"""Letterbox arithmetic, box clipping, coordinate renderers and the cardiothoracic ratio.

Coordinates are continuous pixel-edge coordinates: x = 0 is the left edge of column 0 and
x = width its right edge (a box ``(x1, y1, x2, y2)`` covers columns ``x1 .. x2 - 1``). A point
given in pixel-index coordinates (a pixel centre, e.g. a polygon vertex from
:func:`transforms.masks.mask_to_polygons`) is the edge coordinate minus 0.5; the difference
is at most half an original pixel, i.e. ``0.5 * scale`` canvas pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

import manifests

CtrBand = Literal["normal", "mild", "moderate", "severe"]


def _content_side(side: int, scale: float) -> int:
    """Whole canvas pixels a side of the original becomes (at least one)."""
    return max(1, round(side * scale))


@dataclass(frozen=True)
class Letterbox:
    """How an ``orig_width x orig_height`` image sits on a ``size x size`` canvas.

    ``canvas = original * scale + pad``. The long side fills the canvas exactly; the short side
    is resized to ``round(side * scale)`` whole pixels and centred with ``pad`` (whole pixels),
    so along it the content may end up to half a canvas pixel away from ``side * scale + pad``
    (one pixel for a side shorter than half a canvas pixel, which is still drawn one pixel wide).
    """

    size: int
    scale: float
    pad_x: float
    pad_y: float
    orig_width: int
    orig_height: int

    @property
    def content_width(self) -> int:
        """Width in canvas pixels of the resized image."""
        return _content_side(self.orig_width, self.scale)

    @property
    def content_height(self) -> int:
        return _content_side(self.orig_height, self.scale)

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        """Original pixel-edge coordinates -> canvas pixel coordinates."""
        return x * self.scale + self.pad_x, y * self.scale + self.pad_y

    def to_unit(self, x: float, y: float) -> tuple[float, float]:
        """Original pixel-edge coordinates -> floats in [0, 1] of the canvas (for points inside the image)."""
        canvas_x, canvas_y = self.to_canvas(x, y)
        return canvas_x / self.size, canvas_y / self.size

    def box_to_unit(self, x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float]:
        """An original-pixel box -> ``(x1, y1, x2, y2)`` in [0, 1] of the canvas."""
        return (*self.to_unit(x1, y1), *self.to_unit(x2, y2))


def letterbox_for(width: int, height: int, size: int = 512) -> Letterbox:
    """The letterbox of a ``width x height`` image on a ``size`` canvas (what ``images.letterbox`` does)."""
    if width <= 0 or height <= 0 or size <= 0:
        raise ValueError(f"sizes must be positive, got width={width} height={height} size={size}")
    scale = size / max(width, height)
    return Letterbox(
        size=size,
        scale=scale,
        pad_x=float((size - _content_side(width, scale)) // 2),
        pad_y=float((size - _content_side(height, scale)) // 2),
        orig_width=width,
        orig_height=height,
    )


def clip_box(
    x1: float, y1: float, x2: float, y2: float, width: float, height: float
) -> tuple[float, float, float, float] | None:
    """The box clipped to ``[0, width] x [0, height]``; None when nothing of positive area is left
    (also for an inverted box, ``x2 <= x1`` or ``y2 <= y1``)."""
    clipped = (min(max(x1, 0), width), min(max(y1, 0), height), min(max(x2, 0), width), min(max(y2, 0), height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None
    return clipped


def _check_unit(v: float) -> None:
    if not (0.0 <= v <= 1.0) or math.isnan(v):
        raise ValueError(f"unit coordinate must be in [0, 1], got {v}")


def to_bins(v: float, bins: int = 1000) -> int:
    """Bin number 1..bins of a unit float (IMT-CXR / Pix2seq): ``floor(v * bins) + 1``, and
    ``v = 1.0`` goes to the last bin. Bin ``b`` covers ``[(b - 1) / bins, b / bins)``."""
    _check_unit(v)
    return min(math.floor(v * bins) + 1, bins)


def bin_center(b: int, bins: int = 1000) -> float:
    """The unit float at the centre of bin ``b`` (1-based), the inverse used to read bins back."""
    if not 1 <= b <= bins:
        raise ValueError(f"bin must be in 1..{bins}, got {b}")
    return (b - 0.5) / bins


def to_percent(v: float) -> int:
    """Integer 0..100 of a unit float (M4CXR), rounded half up: ``floor(v * 100 + 0.5)``."""
    _check_unit(v)
    return math.floor(v * 100 + 0.5)


def to_fixed(v: float, decimals: int = 3) -> str:
    """A unit float as a fixed-point string, e.g. ``"0.125"``; rounded to nearest by Python's
    formatting of the exact binary value (so within ``0.5 * 10**-decimals``)."""
    _check_unit(v)
    return f"{v:.{decimals}f}"


def _columns_with(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} mask must be 2-D, got shape {mask.shape}")
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        raise ValueError(f"{what} mask is empty")
    return columns


def cardiothoracic_ratio(heart_mask: np.ndarray, lung_mask: np.ndarray) -> float:
    """Maximal transverse heart diameter over maximal inner thoracic diameter.

    Heart: its horizontal bounding extent (leftmost to rightmost heart pixel, possibly on
    different rows, as the clinical MRD + MLD measure). Thorax: the widest row span of the
    lungs' union (leftmost pixel of the image-left lung to rightmost of the other, on one row).
    Widths count pixels (``last - first + 1``). Pass both lungs in ``lung_mask``.
    """
    heart_columns = _columns_with(heart_mask, "heart")
    _columns_with(lung_mask, "lung")
    lungs = np.asarray(lung_mask) != 0
    if np.shape(heart_mask) != lungs.shape:
        raise ValueError(f"heart and lung masks differ in shape: {np.shape(heart_mask)} vs {lungs.shape}")
    rows = lungs.any(axis=1)
    first = np.argmax(lungs[rows], axis=1)
    last = lungs.shape[1] - 1 - np.argmax(lungs[rows][:, ::-1], axis=1)
    thorax_width = int((last - first).max()) + 1
    heart_width = int(heart_columns[-1] - heart_columns[0]) + 1
    return heart_width / thorax_width


def ctr_band(ctr: float) -> CtrBand:
    """Severity band of a cardiothoracic ratio; band edges from ``manifests/ctr_bands.yaml``
    (each band includes its lower edge)."""
    if not math.isfinite(ctr) or ctr <= 0:
        raise ValueError(f"cardiothoracic ratio must be a positive number, got {ctr}")
    bands = manifests.load("ctr_bands.yaml")["bands"]
    chosen = bands[0]["name"]
    for band in bands[1:]:
        if ctr >= band["from"]:
            chosen = band["name"]
    return chosen
