"""CheXmask ``Preprocessed`` rows (1024 x 1024) mapped back onto the image they annotate.

CheXmask segmented VinDr-CXR and CheXpert images after two steps (``docs/formats/chexmask.md`` §5,
``DataPreparation/vindr-cxr.py``): centre-pad to a square of side ``L = max(height, width)`` with
``pad_left = (L - width) // 2`` and ``pad_top = (L - height) // 2``, then resize to 1024 x 1024.
Knowing the original size is enough to undo that. CheXmask's own reverse (``back_vin.py``) maps a
landmark at pixel index ``x`` to ``round(x / 1024 * L - pad_left)`` (``y`` likewise with ``pad_top``);
:func:`preprocessed_to_original` uses exactly that for points, and the same correspondence for masks,
so a mask and the landmark contour drawn from it stay aligned.

MIMIC-CXR-JPG and PadChest were first cropped to the bounding box of pixels > 1 with offsets that
were never published: their Preprocessed rows cannot be mapped, and nothing here tries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PREPROCESSED_SIZE = 1024
"""Side of the square CheXmask's Preprocessed masks and landmarks live in."""


@dataclass(frozen=True)
class PadResize:
    """Where an ``width x height`` image sat in the 1024 x 1024 space: padded to ``side`` squared."""

    width: int
    height: int
    side: int  # max(width, height), the padded square
    pad_left: int
    pad_top: int


def pad_resize_for(orig_width: int, orig_height: int) -> PadResize:
    """The centre-pad of CheXmask's preprocessing for an image of this size."""
    for name, value in (("orig_width", orig_width), ("orig_height", orig_height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    width, height = int(orig_width), int(orig_height)
    side = max(width, height)
    return PadResize(width, height, side, (side - width) // 2, (side - height) // 2)


def _source_indices(count: int, pad: int, side: int) -> np.ndarray:
    """For original pixels ``0 .. count-1`` along one axis, the nearest 1024-space pixel: the inverse
    of ``x -> x * side / 1024 - pad``, i.e. ``round((X + pad) * 1024 / side)``, in integers."""
    scaled = (np.arange(count, dtype=np.int64) + pad) * (2 * PREPROCESSED_SIZE) + side
    return np.minimum(scaled // (2 * side), PREPROCESSED_SIZE - 1)


def mask_to_original(mask: np.ndarray, orig_width: int, orig_height: int) -> np.ndarray:
    """A boolean 1024 x 1024 Preprocessed mask as a boolean ``(orig_height, orig_width)`` mask.

    Each original pixel takes the value of the 1024-space pixel nearest to where it lands (the
    inverse of the landmark formula), so each 1024-space pixel covers about ``(L/1024)**2``
    original pixels and areas scale by that factor; the padding is cut away."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != (PREPROCESSED_SIZE, PREPROCESSED_SIZE):
        raise ValueError(
            f"expected a boolean {PREPROCESSED_SIZE}x{PREPROCESSED_SIZE} mask, got {mask.dtype} {mask.shape}"
        )
    box = pad_resize_for(orig_width, orig_height)
    rows = _source_indices(box.height, box.pad_top, box.side)
    columns = _source_indices(box.width, box.pad_left, box.side)
    return mask[rows][:, columns]


def points_to_original(points: np.ndarray, orig_width: int, orig_height: int) -> np.ndarray:
    """``(N, 2)`` Preprocessed ``(x, y)`` pixel indices -> original pixel indices (int64), as
    CheXmask's ``back_*.py`` computes them. Points that the model put in the padding land outside
    the image; they are returned as they are, for the geometry stage to clip."""
    array = np.asarray(points)
    if array.ndim != 2 or array.shape[1] != 2 or array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"expected (N, 2) numeric (x, y) points, got {array.dtype} {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("points must be finite")
    box = pad_resize_for(orig_width, orig_height)
    scaled = array.astype(np.float64) / PREPROCESSED_SIZE * box.side - np.array([box.pad_left, box.pad_top], np.float64)
    return np.rint(scaled).astype(np.int64)


def preprocessed_to_original(mask_or_points: np.ndarray, orig_width: int, orig_height: int) -> np.ndarray:
    """A Preprocessed (1024 x 1024) mask or landmark array in the original image's pixels.

    A boolean 1024 x 1024 array is a mask (:func:`mask_to_original`); a numeric ``(N, 2)`` array
    holds ``(x, y)`` points (:func:`points_to_original`). Only valid for datasets CheXmask did not
    crop (VinDr-CXR, CheXpert). Raises ValueError for anything else or a non-positive size."""
    array = np.asarray(mask_or_points)
    if array.dtype == np.bool_:
        return mask_to_original(array, orig_width, orig_height)
    return points_to_original(array, orig_width, orig_height)
