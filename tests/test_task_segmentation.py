"""Segmentation polygons on crafted annotation rows: rendered rings read back to the canonical unit
rings under each convention, seeded cyclic start, vertex cap, structures only when complete."""

import json
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.geometry import parse_polygon
from transforms.masks import signed_area
from transforms.tasks import Profile
from transforms.tasks.segmentation import generate
from transforms.templates import load_template_set

IMT = Profile(
    name="imt-cxr",
    coordinates="bins1000",
    polygon_max_vertices=30,
    tasks={"segmentation": {"template_set": "segmentation_imt"}},
)
M4 = Profile(name="m4cxr", coordinates="percent", tasks={"segmentation": {"template_set": "segmentation_imt"}})
HALF_STEP = {"bins1000": 0.5 / 1000, "percent": 0.5 / 100}


def ellipse(cx, cy, rx, ry, n):
    """A counter-clockwise-in-image-coordinates ring of n unit points (positive shoelace area)."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)]).tolist()


def polygon(label, origin, *rings):
    return {"label": label, "origin": origin, "rings": [], "rings_unit": [list(r) for r in rings]}


def row(*polygons, key="mimic/1"):
    return {"image_key": key, "source": key.split("/")[0], "split": "train", "polygons": list(polygons)}


HEART = ellipse(0.5, 0.55, 0.15, 0.1, 12)
RIGHT_LUNG = ellipse(0.3, 0.45, 0.12, 0.3, 44)
LEFT_LUNG = ellipse(0.7, 0.45, 0.12, 0.3, 40)
CHEXMASK = row(
    polygon("heart", "chexmask", HEART),
    polygon("right lung", "chexmask", RIGHT_LUNG),
    polygon("left lung", "chexmask", LEFT_LUNG),
)


def by_structure(rows):
    return {json.loads(r["target"])["structure"]: r for r in rows}


def close(a, b, convention):
    return all(abs(x - y) <= HALF_STEP[convention] + 1e-12 for x, y in zip(a, b))


def test_a_short_ring_reads_back_exactly_from_its_seeded_start_vertex():
    for seed in range(5):
        heart = by_structure(generate(CHEXMASK, IMT, seed))["heart"]
        target = json.loads(heart["target"])
        (start,) = target["start_vertices"]
        (ring,) = parse_polygon(heart["conversations"][1]["value"], "bins1000")
        expected = HEART[start:] + HEART[:start]
        assert len(ring) == len(HEART)
        assert all(close(got, want, "bins1000") for got, want in zip(ring, expected))
        assert target["rings"] == [HEART]


def test_long_rings_are_capped_and_keep_their_vertices_and_orientation():
    lungs = by_structure(generate(CHEXMASK, IMT, seed=2))["lungs"]
    rings = parse_polygon(lungs["conversations"][1]["value"], "bins1000")
    assert len(rings) == 2
    for rendered, canonical in zip(rings, [RIGHT_LUNG, LEFT_LUNG]):
        assert 3 <= len(rendered) <= 30
        canonical_points = np.asarray(canonical)
        for point in rendered:  # simplification keeps a subset of the canonical vertices
            assert np.abs(canonical_points - point).max(axis=1).min() <= HALF_STEP["bins1000"] + 1e-12
        assert signed_area(rendered) > 0


def test_random_start_is_seeded_and_only_for_imt_cxr():
    starts = {
        tuple(json.loads(by_structure(generate(CHEXMASK, IMT, s))["heart"]["target"])["start_vertices"])
        for s in range(20)
    }
    assert len(starts) > 1
    assert generate(CHEXMASK, IMT, 7) == generate(CHEXMASK, IMT, 7)
    m4 = by_structure(generate(CHEXMASK, M4, 7))["heart"]
    assert json.loads(m4["target"])["start_vertices"] == [0]
    (ring,) = parse_polygon(m4["conversations"][1]["value"], "percent")
    assert all(close(got, want, "percent") for got, want in zip(ring, HEART))


def test_structures_are_asked_only_when_all_their_parts_are_present():
    only_heart = row(polygon("heart", "chexmask", HEART), polygon("right lung", "chexmask", RIGHT_LUNG))
    assert set(by_structure(generate(only_heart, IMT, 0))) == {"heart"}
    assert generate(row(polygon("heart", "other-origin", HEART)), IMT, 0) == []


def test_pneumothorax_rings_with_a_hole_keep_the_hole_orientation():
    outer = ellipse(0.75, 0.3, 0.1, 0.15, 20)
    hole = ellipse(0.75, 0.3, 0.03, 0.04, 8)[::-1]
    siim = row(polygon("Pneumothorax", "siim-rle", outer, hole), key="siim/1.2")
    (only,) = generate(siim, IMT, 0)
    assert "pneumothorax" in only["conversations"][0]["value"] and only["conversations"][0]["value"].startswith(
        "<image>\n"
    )
    rendered = parse_polygon(only["conversations"][1]["value"], "bins1000")
    assert [signed_area(r) > 0 for r in rendered] == [True, False]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 60), cx=st.floats(0.3, 0.7), cy=st.floats(0.3, 0.7), seed=st.integers(0, 10_000))
def test_any_ring_renders_within_the_vertex_cap_and_inside_half_a_bin(n, cx, cy, seed):
    ring = ellipse(cx, cy, 0.2, 0.25, n)
    (heart,) = generate(row(polygon("heart", "chexmask", ring)), IMT, seed)
    (rendered,) = parse_polygon(heart["conversations"][1]["value"], "bins1000")
    assert len(rendered) <= 30
    points = np.asarray(ring)
    assert all(np.abs(points - p).max(axis=1).min() <= HALF_STEP["bins1000"] + 1e-12 for p in rendered)


def test_every_template_is_used_and_filled():
    used = {r["template_id"] for s in range(30) for r in generate(CHEXMASK, IMT, s)}
    assert used == {t.id for t in load_template_set("segmentation_imt").kinds["segment"]}
