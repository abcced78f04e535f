"""Letterbox arithmetic, box clipping, coordinate renderers, cardiothoracic ratio and its bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic_rows import chexmask_rows

import manifests
from transforms.geometry import (
    COORDINATE_CONVENTIONS,
    bin_center,
    cardiothoracic_ratio,
    clip_box,
    ctr_band,
    find_coordinates,
    letterbox_for,
    parse_box,
    parse_polygon,
    pneumothorax_ratio,
    ptx_band,
    render_box,
    render_polygon,
    to_bins,
    to_fixed,
    to_percent,
)
from transforms.images import letterbox
from transforms.masks import rle_decode, signed_area

unit = st.floats(0.0, 1.0, allow_nan=False)


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
    assert box.pad_x >= 0 and box.pad_x + box.content_width <= size
    assert box.pad_y >= 0 and box.pad_y + box.content_height <= size
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


def test_ctr_on_chexmask_rows_matches_the_ratio_the_images_were_drawn_with():
    """CheXmask rows in the real layout (tests/synthetic_rows.py), one image per CTR band: the ratio
    measured on the decoded masks is the one the synthetic anatomy was built to, band included."""
    targets = [0.45, 0.53, 0.575, 0.635]
    data = chexmask_rows(
        "VinDr-CXR", [(1000, 1100), (1200, 1000), (1024, 1024), (1100, 1250)], seed=5, ctr_targets=targets
    )
    bands = []
    for cells, frontal in zip(data.rows, data.frontals, strict=True):
        row = dict(zip(data.header, cells, strict=True))
        size = (int(row["Height"]), int(row["Width"]))
        heart = rle_decode(row["Heart"], *size, "chexmask")
        lungs = rle_decode(row["Right Lung"], *size, "chexmask") | rle_decode(row["Left Lung"], *size, "chexmask")
        ratio = cardiothoracic_ratio(heart, lungs)
        assert 0.3 < ratio < 0.8
        assert ratio == pytest.approx(frontal.ctr, abs=1e-3)
        bands.append(ctr_band(ratio))
    assert bands == ["normal", "mild", "moderate", "severe"]


def test_ctr_band_edges_come_from_the_manifest():
    names = [band["name"] for band in manifests.load("ctr_bands.yaml")["bands"]]
    assert names == ["normal", "mild", "moderate", "severe"]
    assert [ctr_band(v) for v in (0.42, 0.5099, 0.51, 0.5499, 0.55, 0.5999, 0.60, 0.75)] == [
        "normal",
        "normal",
        "mild",
        "mild",
        "moderate",
        "moderate",
        "severe",
        "severe",
    ]
    with pytest.raises(ValueError, match="positive"):
        ctr_band(-0.1)


# ---- letterbox inverse -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1, 5000), height=st.integers(1, 5000), size=st.sampled_from([224, 512, 1024]), fx=unit, fy=unit
)
def test_letterbox_transforms_invert(width, height, size, fx, fy):
    box = letterbox_for(width, height, size)
    x, y = fx * width, fy * height
    back = box.unit_to_original(*box.to_unit(x, y))
    assert back == pytest.approx((x, y), abs=1e-6 * max(width, height))
    # a canvas pixel's centre maps back to within half a canvas pixel (0.5 / scale original pixels)
    # of the original point it was drawn from; the drawn content edge lies within that bound too
    far = box.to_original(box.pad_x + box.content_width, box.pad_y + box.content_height)
    if width * box.scale >= 0.5 and height * box.scale >= 0.5:
        assert abs(far[0] - width) <= 0.5 / box.scale + 1e-9
        assert abs(far[1] - height) <= 0.5 / box.scale + 1e-9


# ---- rendering per convention ----------------------------------------------------------------

HALF_STEP = {"bins1000": 0.0005, "percent": 0.005, "fixed3": 0.0005}
sorted_pair = st.tuples(unit, unit).map(sorted)


@settings(max_examples=300, deadline=None)
@given(xs=sorted_pair, ys=sorted_pair, convention=st.sampled_from(COORDINATE_CONVENTIONS))
def test_render_box_parses_back_within_half_a_step(xs, ys, convention):
    unit_box = (xs[0], ys[0], xs[1], ys[1])
    parsed = parse_box(render_box(unit_box, convention), convention)
    assert np.abs(np.subtract(parsed, unit_box)).max() <= HALF_STEP[convention] + 1e-12


rings = st.lists(st.lists(st.tuples(unit, unit), min_size=3, max_size=12), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(rings_unit=rings, convention=st.sampled_from(COORDINATE_CONVENTIONS))
def test_render_polygon_parses_back_within_half_a_step(rings_unit, convention):
    text = render_polygon(rings_unit, convention, max_vertices=30)
    parsed = parse_polygon(text, convention)
    assert [len(r) for r in parsed] == [len(r) for r in rings_unit]
    for ring, back in zip(rings_unit, parsed):
        assert np.abs(np.subtract(back, ring)).max() <= HALF_STEP[convention] + 1e-12


def test_rendered_strings_look_as_documented():
    unit_box = (0.12, 0.24, 0.5, 0.8)
    assert render_box(unit_box, "bins1000") == "<bin_121><bin_241><bin_501><bin_801>"
    assert render_box(unit_box, "percent") == "[12, 24, 50, 80]"
    assert render_box(unit_box, "fixed3") == "[0.120, 0.240, 0.500, 0.800]"
    two = [[(0.1, 0.1), (0.5, 0.1), (0.5, 0.5)], [(0.6, 0.6), (0.9, 0.6), (0.9, 0.9)]]
    assert render_polygon(two, "bins1000") == (
        "<bin_101><bin_101><bin_501><bin_101><bin_501><bin_501> <bin_601><bin_601><bin_901><bin_601><bin_901><bin_901>"
    )
    assert render_polygon(two, "percent") == "[[10, 10, 50, 10, 50, 50], [60, 60, 90, 60, 90, 90]]"
    assert render_polygon(two[:1], "fixed3") == "[[0.100, 0.100, 0.500, 0.100, 0.500, 0.500]]"


def test_render_polygon_simplifies_long_rings_and_keeps_orientation():
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    circle = list(zip(0.5 + 0.3 * np.cos(angles), 0.5 + 0.3 * np.sin(angles)))
    for ring in (circle, circle[::-1]):
        (parsed,) = parse_polygon(render_polygon([ring], "fixed3", max_vertices=30), "fixed3")
        assert 3 <= len(parsed) <= 30
        assert np.sign(signed_area(parsed)) == np.sign(signed_area(ring))
        assert abs(signed_area(parsed)) == pytest.approx(abs(signed_area(ring)), rel=0.05)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: render_box((0.1, 0.1, 0.2, 0.2), "pixels"), "unknown coordinate convention"),
        (lambda: render_box((0.5, 0.1, 0.2, 0.2), "percent"), "inverted"),
        (lambda: render_box((0.1, 0.1, 0.2, 1.2), "fixed3"), r"\[0, 1\]"),
        (lambda: render_polygon([], "percent"), "at least one ring"),
        (lambda: render_polygon([[(0.1, 0.1), (0.2, 0.2)]], "bins1000"), "at least 3 vertices"),
        (lambda: parse_box("<bin_1><bin_2>x<bin_3><bin_4>", "bins1000"), "between bin tokens"),
        (lambda: parse_box("[1, 2, 3]", "percent"), "4 coordinates"),
        (lambda: parse_box("1, 2, 3, 4", "fixed3"), "bracketed"),
        (lambda: parse_polygon("[[1, 2, 3, 4]]", "percent"), "at least 3"),
    ],
)
def test_rendering_and_parsing_reject_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- pneumothorax ratio ----------------------------------------------------------------------


def _lungs(shape=(100, 200)):
    right, left = np.zeros(shape, bool), np.zeros(shape, bool)
    right[10:90, 10:90] = True  # patient's right lung is on the image left: 6400 px
    left[10:90, 110:170] = True  # 4800 px
    return right, left


def test_pneumothorax_ratio_uses_the_lung_on_its_side():
    right, left = _lungs()
    ptx = np.zeros_like(right)
    ptx[10:30, 5:40] = True  # reaches outside the lung mask: the whole 700 px count
    assert pneumothorax_ratio(ptx, right, left) == (pytest.approx(700 / 6400), "right")
    ptx = np.zeros_like(right)
    ptx[10:90, 150:170] = True
    assert pneumothorax_ratio(ptx, right, left) == (pytest.approx(1600 / 4800), "left")


def test_pneumothorax_ratio_uses_both_lungs_when_it_touches_both_or_neither():
    right, left = _lungs()
    both = np.zeros_like(right)
    both[50:60, 80:120] = True
    assert pneumothorax_ratio(both, right, left) == (pytest.approx(400 / 11200), "both")
    neither = np.zeros_like(right)
    neither[92:98, 0:50] = True
    assert pneumothorax_ratio(neither, right, left) == (pytest.approx(300 / 11200), "both")


def test_pneumothorax_ratio_rejects_empty_or_mismatched_masks():
    right, left = _lungs()
    with pytest.raises(ValueError, match="pneumothorax mask is empty"):
        pneumothorax_ratio(np.zeros_like(right), right, left)
    with pytest.raises(ValueError, match="left lung mask is empty"):
        pneumothorax_ratio(right, right, np.zeros_like(left))
    with pytest.raises(ValueError, match="shape"):
        pneumothorax_ratio(right, right, left[:, :100])


def test_ptx_band_edges_come_from_the_manifest():
    names = [band["name"] for band in manifests.load("ptx_bands.yaml")["bands"]]
    assert names == ["small", "moderate", "large"]
    assert [ptx_band(v) for v in (0.01, 0.1999, 0.2, 0.4999, 0.5, 1.3)] == [
        "small",
        "small",
        "moderate",
        "moderate",
        "large",
        "large",
    ]
    with pytest.raises(ValueError, match="positive"):
        ptx_band(0.0)


# ---- coordinates inside free text (what the preview decodes answers with) ---------------------

unit_box = st.tuples(sorted_pair, sorted_pair).map(lambda p: (p[0][0], p[1][0], p[0][1], p[1][1]))
label = (
    st.text(st.characters(whitelist_categories=("Lu", "Ll"), whitelist_characters=" -"), min_size=1, max_size=12)
    .map(str.strip)
    .filter(bool)
)
shape = st.one_of(st.tuples(st.just("box"), unit_box), st.tuples(st.just("polygon"), rings))


@settings(max_examples=300, deadline=None)
@given(
    shapes=st.lists(st.tuples(shape, st.none() | label), min_size=0, max_size=5),
    separators=st.lists(st.sampled_from([" ", ", ", "; ", "\n", " and "]), min_size=5, max_size=5),
    prefix=st.sampled_from(["", "Answer: ", "<image>\nWhat is at "]),
    convention=st.sampled_from(COORDINATE_CONVENTIONS),
)
def test_find_coordinates_reads_back_every_rendered_shape_in_order(shapes, separators, prefix, convention):
    pieces, expected, text = [], [], prefix
    for i, ((kind, value), name) in enumerate(shapes):
        rendered = render_box(value, convention) if kind == "box" else render_polygon(value, convention, 30)
        separator = separators[i] if i else ""
        if (
            convention == "bins1000"
            and kind == "polygon"
            and expected
            and expected[-1][0] == "polygon"
            and separator == " "
            and not name
        ):
            separator = "; "  # two bin polygons one space apart read as one polygon (documented)
        text += separator + (f"{name}: " if name else "")
        pieces.append((len(text), len(text) + len(rendered)))
        expected.append((kind, value, rendered))
        text += rendered
    text += "."
    found = find_coordinates(text, convention)
    assert [(s.kind, s.start, s.end) for s in found] == [(k, a, b) for (k, _, _), (a, b) in zip(expected, pieces)]
    for span, (kind, value, rendered) in zip(found, expected):
        if kind == "box":
            assert span.box == parse_box(rendered, convention)
            assert np.abs(np.subtract(span.box, value)).max() <= HALF_STEP[convention] + 1e-12
        else:
            assert [list(r) for r in span.rings] == parse_polygon(rendered, convention)
            assert len(span.rings) == len(value)


def test_find_coordinates_on_answers_as_the_templates_write_them():
    text = "Aortic enlargement: [51, 22, 59, 31]; Cardiomegaly: [31, 46, 74, 68], [10, 10, 20, 20]"
    found = find_coordinates(text, "percent")
    assert [text[s.start : s.end] for s in found] == ["[51, 22, 59, 31]", "[31, 46, 74, 68]", "[10, 10, 20, 20]"]
    assert found[0].box == (0.51, 0.22, 0.59, 0.31)
    two_boxes = "<bin_167><bin_541><bin_283><bin_690> <bin_705><bin_490><bin_879><bin_684>"
    assert [s.kind for s in find_coordinates(two_boxes, "bins1000")] == ["box", "box"]
    two_rings = (
        "<bin_101><bin_101><bin_501><bin_101><bin_501><bin_501> <bin_601><bin_601><bin_901><bin_601><bin_901><bin_901>"
    )
    (polygon,) = find_coordinates(two_rings, "bins1000")
    assert polygon.kind == "polygon" and len(polygon.rings) == 2 and polygon.rings[1][0] == (0.6005, 0.6005)
    assert find_coordinates("No abnormality.", "percent") == find_coordinates("Not present.", "bins1000") == []
    assert find_coordinates("see [1], [2, 3] and [0.1, 0.2, 0.3]", "percent") == []  # not 4 numbers: not a box


@pytest.mark.parametrize(
    ("text", "convention", "message"),
    [
        ("<bin_1><bin_2><bin_3>", "bins1000", "neither a box"),
        ("<bin_1><bin_2><bin_3><bin_4><bin_5><bin_6><bin_7>", "bins1000", "neither a box"),
        ("[12, 24, 150, 80]", "percent", "outside the canvas"),
        ("[12, 24, 50, 80]", "fixed3", "outside the canvas"),
        ("heart: [-5, 24, 50, 80]", "percent", "outside the canvas"),
        ("[-0.050, 0.240, 0.500, 0.800]", "fixed3", "outside the canvas"),
        ("[[-0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]", "fixed3", "outside the canvas"),
        ("[50, 24, 12, 80]", "percent", "inverted"),
        ("[[1, 2, 3, 4]]", "percent", "at least 3"),
    ],
)
def test_find_coordinates_rejects_malformed_coordinates(text, convention, message):
    with pytest.raises(ValueError, match=message):
        find_coordinates(text, convention)
