"""Coordinate frames: every frame reads back what it wrote within its tolerance, the Qwen resize rule
equals the one in transformers' Qwen2-VL image processor, and rewriting a text keeps the geometry."""

from __future__ import annotations

import importlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.coordinate_frames import (
    FRAMES,
    CoordinateFrame,
    find_in_frame,
    qwen_resized,
    reframe_text,
    target_geometry,
)
from transforms.geometry import render_box, render_polygon, simplified_rings

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def unit_boxes(draw):
    x1, x2 = sorted((draw(unit), draw(unit)))
    y1, y2 = sorted((draw(unit), draw(unit)))
    return (x1, y1, x2, y2)


@st.composite
def frames(draw):
    kind = draw(st.sampled_from(FRAMES))
    if kind == "pixels":
        return CoordinateFrame("pixels", draw(st.integers(28, 4000)), draw(st.integers(28, 4000)))
    return CoordinateFrame(kind)


@st.composite
def star_ring(draw):
    """A simple ring as masks give them: vertices around a centre at increasing angles."""
    count = draw(st.integers(3, 60))
    cx, cy = draw(st.floats(0.2, 0.8)), draw(st.floats(0.2, 0.8))
    radius = draw(st.floats(0.02, 0.2))
    scales = draw(st.lists(st.floats(0.5, 1.0), min_size=count, max_size=count))
    return [
        (cx + radius * s * math.cos(2 * math.pi * i / count), cy + radius * s * math.sin(2 * math.pi * i / count))
        for i, s in enumerate(scales)
    ]


rings = st.lists(star_ring(), min_size=1, max_size=3)


@given(frames(), unit_boxes())
def test_a_box_reads_back_within_the_frames_tolerance(frame, box):
    read = frame.parse_box(frame.render_box(box))
    tx, ty = frame.tolerance()
    assert all(abs(a - b) <= t + 1e-12 for a, b, t in zip(read, box, (tx, ty, tx, ty)))


@given(frames(), rings, st.integers(3, 40))
def test_a_polygon_reads_back_vertex_by_vertex(frame, polygon, max_vertices):
    expected = simplified_rings(polygon, max_vertices)
    read = frame.parse_polygon(frame.render_polygon(polygon, max_vertices))
    tx, ty = frame.tolerance()
    assert [len(ring) for ring in read] == [len(ring) for ring in expected]
    for ring, want in zip(read, expected):
        for (x, y), (wx, wy) in zip(ring, want.tolist()):
            assert abs(x - wx) <= tx + 1e-12 and abs(y - wy) <= ty + 1e-12


def test_integer_frames_write_what_their_models_read():
    box = (0.1, 0.2, 0.5, 0.9)
    assert CoordinateFrame("pixels", 504, 504).render_box(box) == "[50, 101, 252, 454]"
    assert CoordinateFrame("pixels", 600, 300).render_box(box) == "[60, 60, 300, 270]"  # x by width, y by height
    assert CoordinateFrame("norm1000").render_box(box) == "[100, 200, 500, 900]"
    assert CoordinateFrame("norm1000").render_box((0, 0, 1, 1)) == "[0, 0, 1000, 1000]"
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        CoordinateFrame("norm1000").render_box((0.1, 0.2, 1.5, 0.9))
    with pytest.raises(ValueError):
        CoordinateFrame("pixels")
    with pytest.raises(ValueError):
        CoordinateFrame("percent", 10, 10)


def test_qwen_resize_rule_is_the_processors():
    # the rule as the installed transformers writes it (its PIL-backend module needs no torchvision),
    # imported before hypothesis times the examples
    smart_resize = importlib.import_module("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl").smart_resize

    @given(
        st.integers(28, 6000),
        st.integers(28, 6000),
        st.sampled_from([28, 32]),
        st.sampled_from([(56 * 56, 16384 * 28 * 28), (3136, 28 * 28 * 1280), (256 * 28 * 28, 512 * 28 * 28)]),
    )
    def same_size(height, width, factor, bounds):
        if max(height, width) / min(height, width) <= 200:
            assert qwen_resized(height, width, factor, *bounds) == smart_resize(height, width, factor, *bounds)

    same_size()


def test_qwen_sizes_of_the_exported_canvases():
    assert qwen_resized(512, 512) == (504, 504)  # the build's canvas
    assert qwen_resized(224, 224) == (224, 224)  # Radixpert, MediVLM
    assert qwen_resized(512, 512, factor=32) == (512, 512)  # Qwen3-VL's patches


def test_reframing_takes_exact_values_from_the_target_and_counts_the_rest():
    target = {
        "boxes": [{"box": [0.14126, 0.13531, 0.43499, 0.69637], "label": "right lung"}],
        "rings": [[[0.2, 0.2], [0.6, 0.2], [0.6, 0.7]]],
        "start_vertices": [1],
    }
    rotated = [[(0.6, 0.2), (0.6, 0.7), (0.2, 0.2)]]
    text = (
        f"lung {render_box((0.14126, 0.13531, 0.43499, 0.69637), 'percent')}, "
        f"heart {render_polygon(rotated, 'percent')}, other [50, 50, 60, 60]."
    )
    exact = target_geometry(target, "percent", 30)
    frame = CoordinateFrame("pixels", 504, 504)
    rewritten, count, from_text = reframe_text(text, "percent", frame, exact, 30)
    assert rewritten == ("lung [71, 68, 219, 351], heart [[302, 101, 302, 353, 101, 101]], other [252, 252, 302, 302].")
    assert (count, from_text) == (3, 1)  # the last box is in no target: read from the text
    spans = find_in_frame(rewritten, frame)
    assert [s.kind for s in spans] == ["box", "polygon", "box"]
    assert spans[0].box == pytest.approx((0.14126, 0.13531, 0.43499, 0.69637), abs=0.5 / 504)
    assert reframe_text(text, "percent", CoordinateFrame("percent"), exact, 30) == (text, 0, 0)


@given(unit_boxes(), st.sampled_from(["bins1000", "percent", "fixed3"]), frames())
def test_reframed_boxes_land_on_the_canonical_box(box, convention, frame):
    text = f"The finding is at {render_box(box, convention)}."
    exact = target_geometry({"box": list(box)}, convention, 30)
    rewritten, count, from_text = reframe_text(text, convention, frame, exact, 30)
    assert count == (0 if frame.kind == convention else 1) and from_text == 0
    (span,) = find_in_frame(rewritten, frame)
    tx, ty = frame.tolerance() if frame.kind != convention else CoordinateFrame(convention).tolerance()
    assert all(abs(a - b) <= t + 1e-12 for a, b, t in zip(span.box, box, (tx, ty, tx, ty)))
