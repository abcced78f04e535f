"""CheXmask Preprocessed (1024 x 1024) masks and landmarks mapped onto the original image.

The forward preprocessing is simulated here as ``DataPreparation/vindr-cxr.py`` does it (centre-pad
to a square, resize to 1024); VinDr-CXR rows in the Preprocessed layout (1024 x 1024, masks the filled
landmark contours, written by the synthetic corpus's writer: ``tests/synthetic_rows.py``) check that a
mapped mask and the contour CheXmask's ``back_vin.py`` draws from the mapped landmarks agree."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from synthetic_rows import chexmask_rows

from transforms.chexmask_space import (
    PREPROCESSED_SIZE,
    mask_to_original,
    pad_resize_for,
    points_to_original,
    preprocessed_to_original,
)
from transforms.masks import rle_decode
from transforms.sources.chexmask import LANDMARK_SLICES, parse_landmarks

ORGAN_COLUMN = {"right lung": "Right Lung", "left lung": "Left Lung", "heart": "Heart"}

sizes = st.integers(40, 3200)


def preprocess(mask: np.ndarray) -> np.ndarray:
    """The forward step on a mask: centre-pad to a square, resize to 1024 (nearest, pixel centres)."""
    height, width = mask.shape
    box = pad_resize_for(width, height)
    square = np.zeros((box.side, box.side), np.uint8)
    square[box.pad_top : box.pad_top + height, box.pad_left : box.pad_left + width] = mask
    resized = cv2.resize(square, (PREPROCESSED_SIZE, PREPROCESSED_SIZE), interpolation=cv2.INTER_NEAREST_EXACT)
    return resized.astype(bool)


def ellipse(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return ((xx - 0.45 * width) / (0.3 * width)) ** 2 + ((yy - 0.55 * height) / (0.35 * height)) ** 2 < 1


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_pad_of_a_portrait_and_a_landscape_image():
    assert pad_resize_for(2500, 3000) == pad_resize_for(2500, 3000)
    portrait, landscape = pad_resize_for(2500, 3000), pad_resize_for(3001, 2000)
    assert (portrait.side, portrait.pad_left, portrait.pad_top) == (3000, 250, 0)
    assert (landscape.side, landscape.pad_left, landscape.pad_top) == (3001, 0, 500)  # (3001 - 2000) // 2


def test_points_follow_the_published_reverse_formula():
    points = np.array([[0, 0], [512, 512], [1023, 100], [341, 777]])
    mapped = preprocessed_to_original(points, 2500, 3000)
    side, pad_left = 3000, 250
    expected = np.rint(np.column_stack([points[:, 0] / 1024 * side - pad_left, points[:, 1] / 1024 * side]))
    np.testing.assert_array_equal(mapped, expected)
    assert mapped.dtype == np.int64 and mapped[0, 0] == -250  # a point in the padding lands left of the image


@settings(max_examples=40, deadline=None)
@given(width=sizes, height=sizes)
def test_mask_round_trip_keeps_the_shape(width, height):
    assume(max(width, height) <= 2 * min(width, height))  # radiograph proportions: a 40 x 2608 strip
    original = ellipse(width, height)  # is ~16 px wide at 1024, too few to bound IoU
    mapped = mask_to_original(preprocess(original), width, height)
    assert mapped.shape == (height, width) and mapped.dtype == np.bool_
    # detail lost going down to 1024 when the image is larger is at most a pixel ring of the small grid
    assert iou(mapped, original) > 0.93


@settings(max_examples=40, deadline=None)
@given(width=sizes, height=sizes)
def test_areas_scale_with_the_square_of_the_resize(width, height):
    small = np.zeros((PREPROCESSED_SIZE, PREPROCESSED_SIZE), bool)
    small[300:700, 380:640] = True  # 260 wide, 400 high
    box = pad_resize_for(width, height)
    scale = box.side / PREPROCESSED_SIZE
    if box.pad_left / scale > 379 or box.pad_top / scale > 299:
        return  # the rectangle reaches into the padding for this aspect ratio
    mapped = mask_to_original(small, width, height)
    rows, columns = np.flatnonzero(mapped.any(axis=1)), np.flatnonzero(mapped.any(axis=0))
    assert mapped.sum() == len(rows) * len(columns)  # still a solid rectangle
    assert abs(len(columns) - 260 * scale) <= 1 and abs(len(rows) - 400 * scale) <= 1
    assert abs(columns[0] - (379.5 * scale - box.pad_left)) <= 1 and abs(rows[0] - (299.5 * scale - box.pad_top)) <= 1


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1024, 3200), height=st.integers(1024, 3200), x=st.integers(0, 1023), y=st.integers(0, 1023))
def test_a_landmark_falls_inside_the_block_its_pixel_maps_to(width, height, x, y):
    pixel = np.zeros((PREPROCESSED_SIZE, PREPROCESSED_SIZE), bool)
    pixel[y, x] = True
    point_x, point_y = points_to_original(np.array([[x, y]]), width, height)[0]
    if not (0 <= point_x < width and 0 <= point_y < height):
        return  # the pixel lies in the padding
    assert mask_to_original(pixel, width, height)[point_y, point_x]


@pytest.mark.parametrize("width, height", [(2500, 3000), (3072, 2560), (1024, 1024)])
def test_preprocessed_rows_mask_and_landmark_contour_agree_after_mapping(width, height):
    data = chexmask_rows("VinDr-CXR", [(PREPROCESSED_SIZE, PREPROCESSED_SIZE)] * 3, seed=11)
    rows = [dict(zip(data.header, cells, strict=True)) for cells in data.rows]
    assert all((row["Height"], row["Width"]) == ("1024", "1024") for row in rows)
    for row in rows:
        landmarks = preprocessed_to_original(parse_landmarks(row["Landmarks"]), width, height)
        for organ, rows_of_organ in LANDMARK_SLICES.items():
            mask = rle_decode(row[ORGAN_COLUMN[organ]], PREPROCESSED_SIZE, PREPROCESSED_SIZE, "chexmask")
            mapped = preprocessed_to_original(mask, width, height)
            drawn = np.zeros((height, width), np.uint8)  # what back_vin.py writes to OriginalResolution
            cv2.drawContours(drawn, [landmarks[rows_of_organ].reshape(-1, 1, 2).astype(np.int32)], -1, 1, -1)
            assert iou(mapped, drawn.astype(bool)) > 0.97, (row["image_id"], organ)


@pytest.mark.parametrize(
    "array, size, match",
    [
        (np.zeros((512, 512), bool), (100, 100), "boolean 1024x1024"),
        (np.zeros((1024, 1024), bool), (0, 100), "orig_width must be a positive integer"),
        (np.zeros((1024, 1024), bool), (100, 2.5), "orig_height must be a positive integer"),
        (np.zeros((3, 3)), (100, 100), r"\(N, 2\)"),
        (np.array([[1.0, np.nan]]), (100, 100), "finite"),
        (np.array(["1", "2"]).reshape(1, 2), (100, 100), "numeric"),
    ],
)
def test_bad_input_is_refused(array, size, match):
    with pytest.raises(ValueError, match=match):
        preprocessed_to_original(array, *size)
