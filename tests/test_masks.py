"""RLE codecs on CheXmask rows in the real layout (synthetic values) and on real SIIM rows (from the
torchxrayvision wheel), each checked against the dataset's own decoding logic; property round-trips,
boxes and polygons from masks."""

from __future__ import annotations

import csv
import functools
import gzip

import cv2
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from realdata import siim_rle_lines, wheel_member
from synthetic_rows import chexmask_rows

from transforms.masks import (
    mask_to_boxes,
    mask_to_polygons,
    polygon_mask_iou,
    polygons_to_mask,
    ring_is_hole,
    rle_decode,
    rle_encode,
    signed_area,
)
from transforms.sources.chexmask import LANDMARK_SLICES, parse_landmarks

ORGANS = {"Right Lung": "right lung", "Left Lung": "left lung", "Heart": "heart"}  # column -> landmark slice
CHEXMASK_FILES = ("MIMIC-CXR-JPG", "VinDr-CXR", "Padchest")
CHEXMASK_SIZES = [(1024, 1024), (980, 1130), (1300, 1090)]  # (width, height): square, portrait, landscape

csv.field_size_limit(1 << 30)


@functools.cache
def chexmask_file(stem: str):
    return chexmask_rows(stem, CHEXMASK_SIZES, seed=3)


def chexmask_official_decode(rle: str, height: int, width: int) -> np.ndarray:
    """CheXmask's ``get_mask_from_RLE`` logic: 1-based absolute starts, row-major (no transpose)."""
    runs = [int(token) for token in rle.split()]
    flat = np.zeros(height * width, bool)
    for start, length in zip(runs[0::2], runs[1::2]):
        flat[start - 1 : start - 1 + length] = True
    return flat.reshape(height, width)


def siim_competition_decode(rle: str, height: int = 1024, width: int = 1024) -> np.ndarray:
    """The competition's ``mask_functions.rle2mask`` logic: the first start is a 0-based index, every
    later one the gap since the previous run's end; column-major, so the result is transposed."""
    values = [int(token) for token in rle.split()]
    flat = np.zeros(width * height, bool)
    position = 0
    for start, length in zip(values[0::2], values[1::2]):
        position += start
        flat[position : position + length] = True
        position += length
    return flat.reshape(width, height).T


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("index", range(len(CHEXMASK_SIZES)))
@pytest.mark.parametrize("stem", CHEXMASK_FILES)
def test_chexmask_rows_decode_like_the_official_decoder_and_reencode_identically(stem, index, organ):
    data = chexmask_file(stem)
    row = dict(zip(data.header, data.rows[index], strict=True))
    height, width = int(row["Height"]), int(row["Width"])
    assert (width, height) == CHEXMASK_SIZES[index]
    mask = rle_decode(row[organ], height, width, "chexmask")
    assert mask.dtype == bool and mask.shape == (height, width)
    np.testing.assert_array_equal(mask, chexmask_official_decode(row[organ], height, width))
    # the mask is exactly the filled contour of the organ's landmark slice, as in the real files
    points = parse_landmarks(row["Landmarks"])[LANDMARK_SLICES[ORGANS[organ]]]
    drawn = np.zeros((height, width), np.uint8)
    cv2.drawContours(drawn, [points.reshape(-1, 1, 2).astype(np.int32)], -1, 1, thickness=cv2.FILLED)
    np.testing.assert_array_equal(mask, drawn.astype(bool))
    # the first run's 1-based start is the row-major index of the first foreground pixel, plus one
    assert int(np.flatnonzero(mask.ravel())[0]) + 1 == int(row[organ].split()[0])
    assert rle_encode(mask, "chexmask") == row[organ]


def test_siim_real_rows_decode_like_the_competition_code_and_reencode_identically():
    """The first 120 rows of the real file; each value is also given a leading space, as the original
    stage-1 file writes it."""
    _, lines = siim_rle_lines()
    positives = 0
    for number, (_, encoded) in enumerate(lines[:120], start=1):
        mask = rle_decode(f" {encoded}", 1024, 1024, "siim")
        if encoded.strip() == "-1":  # no pneumothorax
            assert not mask.any(), number
        else:
            positives += 1
            np.testing.assert_array_equal(mask, siim_competition_decode(encoded), err_msg=f"row {number}")
            values = [int(token) for token in encoded.split()]
            assert int(mask.sum()) == sum(values[1::2]), number
            first_flat = int(np.flatnonzero(mask.T.ravel())[0])  # column-major order
            assert first_flat == values[0], number  # the first start is absolute
        assert rle_encode(mask, "siim") == encoded.strip(), number
    assert positives >= 20


def test_every_real_siim_row_in_the_torchxrayvision_wheel_round_trips(tmp_path):
    path = wheel_member("siim-pneumothorax-train-rle.csv.gz", tmp_path / "siim.csv.gz")
    with gzip.open(path, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["ImageId", " EncodedPixels"]
    encoded = [row[1] for row in rows[1:]]
    assert len(encoded) == 12_954
    positive = [text for text in encoded if text.strip() != "-1"]
    assert len(positive) == 3_576
    last_pixel_runs = 0
    for text in positive:
        mask = rle_decode(text, 1024, 1024, "siim")
        assert rle_encode(mask, "siim") == text
        last_pixel_runs += bool(mask[-1, -1])
    # The original mask2rle silently drops a run that reaches the last pixel. No real row has a run
    # there; whether a source mask lost one cannot be told from the strings. rle_encode writes it.
    assert last_pixel_runs == 0
    assert all(not rle_decode(text, 1024, 1024, "siim").any() for text in encoded if text.strip() == "-1")


def test_conventions_differ_on_the_same_string():
    chexmask = rle_decode("2 3", 3, 4, "chexmask")  # 1-based absolute, row-major
    assert np.argwhere(chexmask).tolist() == [[0, 1], [0, 2], [0, 3]]
    siim = rle_decode("1 3 2 1", 3, 4, "siim")  # 0-based, gap, column-major
    assert np.argwhere(siim.T).tolist() == [[0, 1], [0, 2], [1, 0], [2, 0]]


@pytest.mark.parametrize("empty", ["", "-1", " -1", "  "])
@pytest.mark.parametrize("convention", ["chexmask", "siim"])
def test_empty_markers_decode_to_all_false(empty, convention):
    mask = rle_decode(empty, 4, 5, convention)
    assert mask.shape == (4, 5) and not mask.any()


def test_empty_masks_encode_as_the_files_write_them():
    empty = np.zeros((4, 5), dtype=bool)
    assert rle_encode(empty, "chexmask") == ""
    assert rle_encode(empty, "siim") == "-1"


@pytest.mark.parametrize(
    ("rle", "convention", "message"),
    [
        ("1 2 3", "chexmask", "odd number"),
        ("1 2.5", "chexmask", "non-integer"),
        ("1 x", "siim", "non-integer"),
        ("1 0", "chexmask", "positive"),
        ("1 -2", "siim", "positive"),
        ("0 2", "chexmask", "1-based"),
        ("-3 2", "siim", ">= 0"),
        ("5 2 1 2", "chexmask", "unsorted or overlap"),
        ("1 4 3 2", "chexmask", "unsorted or overlap"),
        ("19 3", "chexmask", "past the"),
        ("0 5 15 2", "siim", "past the"),
    ],
)
def test_malformed_rle_raises_clear_value_error(rle, convention, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, 4, 5, convention)


def test_unknown_convention_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="unknown RLE convention"):
        rle_decode("1 2", 4, 4, "kaggle")
    with pytest.raises(ValueError, match="unknown RLE convention"):
        rle_encode(np.ones((2, 2), bool), "kaggle")
    with pytest.raises(ValueError, match="positive"):
        rle_decode("1 2", 0, 4, "chexmask")
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.ones(4, bool), "siim")


masks_strategy = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(
    lambda shape: arrays(bool, shape, elements=st.booleans())
)


@settings(max_examples=300, deadline=None)
@given(mask=masks_strategy, convention=st.sampled_from(["chexmask", "siim"]))
def test_round_trip_is_exact_on_random_masks(mask, convention):
    encoded = rle_encode(mask, convention)
    decoded = rle_decode(encoded, *mask.shape, convention)
    np.testing.assert_array_equal(decoded, mask)
    assert rle_encode(decoded, convention) == encoded


@settings(max_examples=100, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    convention=st.sampled_from(["chexmask", "siim"]),
    fill=st.sampled_from(["full", "first", "last", "first_and_last"]),
)
def test_round_trip_keeps_first_and_last_pixels_and_full_masks(shape, convention, fill):
    mask = np.zeros(shape, dtype=bool)
    if fill == "full":
        mask[:] = True
    if fill in ("first", "first_and_last"):
        mask[0, 0] = True
    if fill in ("last", "first_and_last"):
        mask[-1, -1] = True
    encoded = rle_encode(mask, convention)
    np.testing.assert_array_equal(rle_decode(encoded, *shape, convention), mask)
    if fill == "full":
        expected = "1" if convention == "chexmask" else "0"
        assert encoded == f"{expected} {shape[0] * shape[1]}"


def test_encode_treats_any_nonzero_as_foreground():
    mask = np.array([[0, 255], [7, 0]], dtype=np.uint8)
    assert rle_encode(mask, "chexmask") == "2 2"
    assert rle_encode(mask, "siim") == "1 2"


# ---- boxes -----------------------------------------------------------------------------------


def test_mask_to_boxes_one_box_per_8_connected_component_in_edge_coordinates():
    mask = np.zeros((20, 30), dtype=bool)
    mask[12:15, 20:26] = True  # rows 12..14, cols 20..25
    mask[2:5, 3:6] = True
    mask[5, 6] = True  # touches the previous block diagonally: same 8-connected component
    assert mask_to_boxes(mask) == [(3, 2, 7, 6), (20, 12, 26, 15)]
    assert mask_to_boxes(mask, union=True) == [(3, 2, 7, 6), (20, 12, 26, 15), (3, 2, 26, 15)]


def test_mask_to_boxes_empty_and_full():
    assert mask_to_boxes(np.zeros((5, 5), bool), union=True) == []
    assert mask_to_boxes(np.ones((5, 7), bool)) == [(0, 0, 7, 5)]


@settings(max_examples=100, deadline=None)
@given(mask=masks_strategy)
def test_boxes_cover_every_foreground_pixel_tightly(mask):
    boxes = mask_to_boxes(mask)
    assert boxes == sorted(boxes)
    covered = np.zeros_like(mask)
    for x1, y1, x2, y2 in boxes:
        assert 0 <= x1 < x2 <= mask.shape[1] and 0 <= y1 < y2 <= mask.shape[0]
        inside = mask[y1:y2, x1:x2]
        # tight: every edge row/column of the box holds a foreground pixel
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        covered[y1:y2, x1:x2] = True
    assert not (mask & ~covered).any()


@settings(max_examples=100, deadline=None)
@given(mask=masks_strategy)
def test_each_component_gets_exactly_its_own_bounding_box(mask):
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    expected = []
    for component in range(1, count):
        rows, cols = np.nonzero(labels == component)
        expected.append((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1))
    assert mask_to_boxes(mask) == sorted(expected)


# ---- polygons --------------------------------------------------------------------------------


def _ellipse(shape, centre, axes, angle=0.0):
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def _assert_valid_rings(rings, max_vertices):
    for ring in rings:
        assert 3 <= len(ring) <= max_vertices
        assert ring[0] != ring[-1]  # unclosed
        assert shapely.Polygon(ring).is_valid


def test_lung_sized_ellipses_keep_both_components_with_high_iou():
    mask = _ellipse((512, 512), (150, 260), (80, 170), 5) | _ellipse((512, 512), (360, 250), (75, 160), -5)
    rings = mask_to_polygons(mask, max_vertices=30)
    assert len(rings) == 2
    assert not any(ring_is_hole(ring) for ring in rings)
    _assert_valid_rings(rings, 30)
    assert polygon_mask_iou(rings, mask) >= 0.95
    centres = sorted(float(np.mean(np.asarray(ring)[:, 0])) for ring in rings)
    assert centres[0] == pytest.approx(150, abs=5) and centres[1] == pytest.approx(360, abs=5)


def test_holes_and_islands_in_holes_survive_with_orientation():
    mask = _ellipse((512, 512), (256, 256), (200, 180))
    mask &= ~_ellipse((512, 512), (256, 256), (90, 70))  # hole
    mask |= _ellipse((512, 512), (256, 256), (30, 25))  # island inside the hole
    mask |= _ellipse((512, 512), (480, 40), (12, 10))  # small separate blob
    rings = mask_to_polygons(mask, max_vertices=30)
    holes = [ring for ring in rings if ring_is_hole(ring)]
    exteriors = [ring for ring in rings if not ring_is_hole(ring)]
    assert len(holes) == 1 and len(exteriors) == 3
    assert all(shapely.LinearRing(ring).is_ccw for ring in exteriors)
    assert not any(shapely.LinearRing(ring).is_ccw for ring in holes)
    assert rings[: len(exteriors)] == exteriors  # exteriors first
    _assert_valid_rings(rings, 30)
    assert polygon_mask_iou(rings, mask) >= 0.9
    drawn = polygons_to_mask(rings, 512, 512)
    assert not drawn[256, 256 + 60] and drawn[256, 256] and drawn[256, 256 + 150]


def test_unsimplified_rings_rasterise_back_exactly():
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:30, 5:35] = True
    mask[12:20, 12:20] = False
    mask[15, 15] = True  # one-pixel island in the hole
    mask[35, 2:20] = True  # one-pixel-wide line
    mask[38, 45] = True  # single pixel
    mask[30:35, 35] = True  # a one-pixel spike on the block
    rings = mask_to_polygons(mask, max_vertices=10_000)
    _assert_valid_rings(rings, 10_000)
    np.testing.assert_array_equal(polygons_to_mask(rings, 40, 50), mask)


@settings(max_examples=60, deadline=None)
@given(mask=st.tuples(st.integers(1, 20), st.integers(1, 20)).flatmap(lambda s: arrays(bool, s)))
def test_random_masks_give_valid_bounded_rings_covering_every_component(mask):
    rings = mask_to_polygons(mask, max_vertices=8)
    _assert_valid_rings(rings, 8)
    vertices = np.array([vertex for ring in rings for vertex in ring]).reshape(-1, 2)
    assert (vertices >= 0).all() and (vertices <= np.array(mask.shape[::-1]) - 0.75).all()
    exteriors = [ring for ring in rings if not ring_is_hole(ring)]
    count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    assert len(exteriors) >= count - 1
    unsimplified = mask_to_polygons(mask, max_vertices=10_000)
    np.testing.assert_array_equal(polygons_to_mask(unsimplified, *mask.shape), mask)


discs = st.lists(
    st.tuples(
        st.integers(40, 216), st.integers(40, 216), st.integers(10, 40), st.integers(10, 40), st.integers(0, 179)
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(blobs=discs)
def test_blob_polygons_reach_iou_09_at_30_vertices(blobs):
    mask = np.zeros((256, 256), dtype=bool)
    for cx, cy, ax, ay, angle in blobs:  # union of ellipses: one blob or several, overlapping or not
        mask |= _ellipse((256, 256), (cx, cy), (ax, ay), angle)
    rings = mask_to_polygons(mask, max_vertices=30)
    _assert_valid_rings(rings, 30)
    assert polygon_mask_iou(rings, mask) >= 0.9


def test_polygons_are_deterministic_and_empty_mask_gives_none():
    mask = _ellipse((128, 128), (60, 64), (40, 30), 20)
    assert mask_to_polygons(mask, 12) == mask_to_polygons(mask.copy(), 12)
    assert mask_to_polygons(np.zeros((8, 8), bool)) == []
    assert polygon_mask_iou([], np.zeros((8, 8), bool)) == 1.0


def test_signed_area_and_bad_arguments():
    square = [(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (0.0, 4.0)]
    assert signed_area(square) == 16.0
    assert signed_area(square[::-1]) == -16.0
    with pytest.raises(ValueError, match="at least 3"):
        mask_to_polygons(np.ones((3, 3), bool), max_vertices=2)
    with pytest.raises(ValueError, match="at least 3 vertices"):
        polygons_to_mask([[(0.0, 0.0), (1.0, 1.0)]], 4, 4)
