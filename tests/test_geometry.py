"""Letterbox arithmetic, box clipping, coordinate renderers, cardiothoracic ratio and its bands."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import manifests
from transforms.geometry import (
    bin_center,
    cardiothoracic_ratio,
    clip_box,
    ctr_band,
    letterbox_for,
    to_bins,
    to_fixed,
    to_percent,
)
from transforms.images import letterbox
from transforms.masks import rle_decode

CHEXMASK = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "chexmask"
unit = st.floats(0.0, 1.0, allow_nan=False)

csv.field_size_limit(1 << 30)


def test_letterbox_for_landscape_portrait_and_square():
    landscape = letterbox_for(1000, 600, 512)
    assert (landscape.scale, landscape.pad_x, landscape.pad_y) == (0.512, 0.0, 102.0)
    assert (landscape.content_width, landscape.content_height) == (512, 307)
    portrait = letterbox_for(600, 1000, 512)
    assert (portrait.pad_x, portrait.pad_y) == (102.0, 0.0)
    square = letterbox_for(2048, 2048, 512)
    assert (square.scale, square.pad_x, square.pad_y) == (0.25, 0.0, 0.0)


def test_to_canvas_to_unit_and_box_to_unit():
    box = letterbox_for(1000, 600, 512)
    assert box.to_canvas(0, 0) == (0.0, 102.0)
    assert box.to_canvas(500, 300) == pytest.approx((256.0, 255.6))
    assert box.to_unit(1000, 0) == pytest.approx((1.0, 102 / 512))
    assert box.box_to_unit(250, 150, 750, 450) == pytest.approx((0.25, (76.8 + 102) / 512, 0.75, (230.4 + 102) / 512))


def test_letterbox_for_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        letterbox_for(0, 10, 512)


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 5000), height=st.integers(1, 5000), size=st.sampled_from([224, 256, 512, 1024]))
def test_letterbox_geometry_places_the_image_inside_the_canvas(width, height, size):
    box = letterbox_for(width, height, size)
    assert max(box.content_width, box.content_height) == size
    assert 0 <= box.pad_x and box.pad_x + box.content_width <= size
    assert 0 <= box.pad_y and box.pad_y + box.content_height <= size
    # the image's far corner lands on the content's far corner within half a canvas pixel
    # (a side shorter than half a canvas pixel is still drawn one pixel wide)
    far_x, far_y = box.to_canvas(width, height)
    assert abs(far_x - (box.pad_x + box.content_width)) <= (0.5 if width * box.scale >= 0.5 else 1.0) + 1e-9
    assert abs(far_y - (box.pad_y + box.content_height)) <= (0.5 if height * box.scale >= 0.5 else 1.0) + 1e-9
    # centred: the padding on both sides differs by at most one pixel
    assert abs(size - box.content_width - 2 * box.pad_x) <= 1
    x1, y1, x2, y2 = box.box_to_unit(0, 0, width, height)
    assert -1e-9 <= x1 <= x2 <= 1 + 1e-9 and -1e-9 <= y1 <= y2 <= 1 + 1e-9


@settings(max_examples=25, deadline=None)
@given(width=st.integers(8, 900), height=st.integers(8, 900))
def test_images_letterbox_uses_the_same_numbers(width, height):
    image = np.full((height, width), 255, np.uint8)
    canvas, box = letterbox(image, 128)
    assert box == letterbox_for(width, height, 128)
    rows, cols = np.nonzero(canvas)
    assert (cols.min(), cols.max() + 1) == (box.pad_x, box.pad_x + box.content_width)
    assert (rows.min(), rows.max() + 1) == (box.pad_y, box.pad_y + box.content_height)


def test_clip_box():
    assert clip_box(-10, 5, 50, 500, 100, 200) == (0, 5, 50, 200)
    assert clip_box(10.5, 20.25, 30, 40, 100, 200) == (10.5, 20.25, 30, 40)
    assert clip_box(120, 5, 150, 50, 100, 200) is None  # entirely outside
    assert clip_box(10, 10, 10, 50, 100, 200) is None  # zero width
    assert clip_box(30, 10, 20, 50, 100, 200) is None  # inverted


@settings(max_examples=300, deadline=None)
@given(v=unit, bins=st.sampled_from([100, 224, 1000]))
def test_to_bins_range_and_quantisation_error(v, bins):
    b = to_bins(v, bins)
    assert 1 <= b <= bins
    assert abs(bin_center(b, bins) - v) <= 0.5 / bins + 1e-12


def test_to_bins_edges():
    assert to_bins(0.0) == 1
    assert to_bins(0.0009) == 1
    assert to_bins(0.001) == 2
    assert to_bins(0.5) == 501
    assert to_bins(1.0) == 1000
    assert bin_center(1) == 0.0005
    with pytest.raises(ValueError, match="bin"):
        bin_center(0)


@settings(max_examples=300, deadline=None)
@given(v=unit)
def test_to_percent_and_to_fixed_error_bounds(v):
    percent = to_percent(v)
    assert 0 <= percent <= 100
    assert abs(percent / 100 - v) <= 0.005 + 1e-12
    text = to_fixed(v, 3)
    assert len(text.split(".")[1]) == 3
    assert abs(float(text) - v) <= 0.0005 + 1e-12


def test_renderer_examples_and_rounding_rule():
    assert to_percent(0.125) == 13  # half up
    assert to_percent(0.0) == 0 and to_percent(1.0) == 100
    assert to_fixed(0.5) == "0.500" and to_fixed(1.0, 2) == "1.00" and to_fixed(0.12345, 4) == "0.1235"


@pytest.mark.parametrize("render", [to_bins, to_percent, to_fixed])
@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan])
def test_renderers_reject_values_outside_the_unit_range(render, bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        render(bad)


# ---- cardiothoracic ratio --------------------------------------------------------------------


def test_ctr_uses_heart_extent_over_widest_lung_row_span():
    heart = np.zeros((100, 400), bool)
    heart[50:70, 180:260] = True  # cols 180..259
    heart[70:80, 150:200] = True  # lower left lobe: extent 150..259 = 110 px over two rows
    lungs = np.zeros((100, 400), bool)
    lungs[10:90, 50:170] = True  # image-left lung, cols 50..169
    lungs[10:60, 230:350] = True  # image-right lung, cols 230..349: widest row span 50..349 = 300
    lungs[85:90, 30:40] = True  # an island low on the left: bounding extent would give 320
    assert cardiothoracic_ratio(heart, lungs) == pytest.approx(110 / 300)


def test_ctr_rejects_empty_or_mismatched_masks():
    full = np.ones((10, 10), bool)
    with pytest.raises(ValueError, match="heart mask is empty"):
        cardiothoracic_ratio(np.zeros((10, 10), bool), full)
    with pytest.raises(ValueError, match="lung mask is empty"):
        cardiothoracic_ratio(full, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        cardiothoracic_ratio(full, np.ones((10, 12), bool))


def test_ctr_on_real_chexmask_rows_is_clinically_plausible():
    path = CHEXMASK / "DataSubsets_CheXpert_first3rows.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        size = (int(row["Height"]), int(row["Width"]))
        heart = rle_decode(row["Heart"], *size, "chexmask")
        lungs = rle_decode(row["Right Lung"], *size, "chexmask") | rle_decode(row["Left Lung"], *size, "chexmask")
        ratio = cardiothoracic_ratio(heart, lungs)
        assert 0.3 < ratio < 0.8
        assert ctr_band(ratio) in ("normal", "mild", "moderate", "severe")


def test_ctr_band_edges_come_from_the_manifest():
    names = [band["name"] for band in manifests.load("ctr_bands.yaml")["bands"]]
    assert names == ["normal", "mild", "moderate", "severe"]
    assert [ctr_band(v) for v in (0.42, 0.5099, 0.51, 0.5499, 0.55, 0.5999, 0.60, 0.75)] == [
        "normal", "normal", "mild", "mild", "moderate", "moderate", "severe", "severe",
    ]
    with pytest.raises(ValueError, match="positive"):
        ctr_band(-0.1)
