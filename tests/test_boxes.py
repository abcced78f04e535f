"""Box policies: multi-reader consensus, merging of overlapping boxes, circles, profile policies."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from realdata import vindr_kaggle_rows

from schemas.records import Box
from transforms.boxes import (
    box_policy,
    circle_to_box,
    fuse_readers,
    merge_overlapping,
    merge_overlapping_corners,
    pairwise_iou,
    pairwise_overlap,
    profile_boxes,
)
from transforms.sources import vindr

ORIGIN = "vindr-annotations"


def _box(x1, y1, x2, y2, reader=None, label="Nodule/Mass", origin=ORIGIN) -> Box:
    return Box(label=label, x1=x1, y1=y1, x2=x2, y2=y2, origin=origin, reader=reader)


def _corners(box: Box) -> tuple[float, float, float, float]:
    return (box.x1, box.y1, box.x2, box.y2)


def test_pairwise_iou_and_overlap_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [2, 2, 4, 4], [20, 20, 30, 30]])
    np.testing.assert_allclose(pairwise_iou(a, b), [[50 / 150, 4 / 100, 0.0]])
    np.testing.assert_allclose(pairwise_overlap(a, b), [[50 / 100, 1.0, 0.0]])  # over the SMALLER box


# ---- fusion ----------------------------------------------------------------------------------


def test_three_readers_agreeing_give_one_mean_box_and_a_lone_box_is_unsupported():
    boxes = [
        _box(10, 10, 50, 50, "R8"),
        _box(12, 8, 52, 48, "R9"),
        _box(8, 12, 48, 52, "R10"),
        _box(300, 300, 320, 330, "R9"),  # only one reader saw it
    ]
    fusion = fuse_readers(boxes, iou_threshold=0.4, min_readers=2)
    assert len(fusion.consensus) == 1
    (kept,) = fusion.consensus
    assert kept.readers == ("R10", "R8", "R9") and kept.member_count == 3
    assert _corners(kept.box) == pytest.approx((10, 10, 50, 50))
    assert (kept.box.reader, kept.box.origin, kept.box.label) == ("consensus", ORIGIN, "Nodule/Mass")
    (lone,) = fusion.unsupported
    assert lone.readers == ("R9",) and _corners(lone.box) == (300, 300, 320, 330)


def test_one_box_per_reader_per_cluster_and_classes_never_mix():
    boxes = [
        _box(0, 0, 100, 100, "R8"),
        _box(2, 2, 100, 100, "R8"),  # same reader, same place: a second R8 finding, not agreement
        _box(0, 0, 100, 100, "R9", label="Pleural effusion"),
    ]
    fusion = fuse_readers(boxes, iou_threshold=0.4, min_readers=2)
    assert fusion.consensus == []
    assert sorted((c.box.label, c.readers) for c in fusion.unsupported) == [
        ("Nodule/Mass", ("R8",)),
        ("Nodule/Mass", ("R8",)),
        ("Pleural effusion", ("R9",)),
    ]


def test_iou_threshold_is_inclusive_and_min_readers_counts_distinct_readers():
    # IoU of these two is exactly 50 / 150 = 1/3
    pair = [_box(0, 0, 10, 10, "R1"), _box(5, 0, 15, 10, "R2")]
    assert len(fuse_readers(pair, iou_threshold=1 / 3, min_readers=2).consensus) == 1
    assert len(fuse_readers(pair, iou_threshold=0.34, min_readers=2).consensus) == 0
    assert len(fuse_readers(pair + [_box(1, 0, 11, 10, "R3")], 0.3, min_readers=3).consensus) == 1


def test_a_box_joins_the_cluster_it_overlaps_most():
    boxes = [
        _box(0, 0, 100, 100, "R1"),
        _box(60, 0, 160, 100, "R1"),
        _box(50, 0, 150, 100, "R2"),  # IoU 1/3 with the first, 0.82 with the second
    ]
    fusion = fuse_readers(boxes, iou_threshold=0.3, min_readers=2)
    (kept,) = fusion.consensus
    assert _corners(kept.box) == pytest.approx((55, 0, 155, 100))


def test_fusion_of_the_real_vindr_multi_reader_image():
    """Real Kaggle rows of one image read by three radiologists (from the torchxrayvision wheel)."""
    rows = vindr_kaggle_rows({"9a5094b2563a1ef3ff50dc5c7ff71345"})
    boxes, _ = vindr.annotation_boxes_and_labels(rows, "vindr-kaggle")
    fusion = fuse_readers(boxes, iou_threshold=0.4, min_readers=2)
    # the three readers' Cardiomegaly boxes agree; every other class was drawn by one reader only
    (cardiomegaly,) = fusion.consensus
    assert cardiomegaly.box.label == "Cardiomegaly" and cardiomegaly.readers == ("R10", "R8", "R9")
    members = [b for b in boxes if b.label == "Cardiomegaly"]
    assert cardiomegaly.box.x1 == pytest.approx(np.mean([b.x1 for b in members]))
    assert sorted(c.box.label for c in fusion.unsupported) == [
        "Aortic enlargement",
        "Pleural effusion",
        "Pleural thickening",
    ]
    assert len(fusion.consensus) + len(fusion.unsupported) <= len(boxes)


reader_boxes = st.lists(
    st.tuples(
        st.sampled_from(["R1", "R2", "R3"]),
        st.sampled_from(["Nodule/Mass", "Cardiomegaly"]),
        st.integers(0, 200),
        st.integers(0, 200),
        st.integers(1, 120),
        st.integers(1, 120),
    ),
    max_size=12,
).map(lambda items: [_box(x, y, x + w, y + h, reader, label) for reader, label, x, y, w, h in items])


@settings(max_examples=150, deadline=None)
@given(boxes=reader_boxes, seed=st.integers(0, 2**16), threshold=st.sampled_from([0.1, 0.4, 0.7]))
def test_fusion_is_order_free_accounts_for_every_box_and_averages_within_its_members(boxes, seed, threshold):
    fusion = fuse_readers(boxes, threshold, min_readers=2)
    shuffled = list(np.random.default_rng(seed).permutation(len(boxes))) if boxes else []
    assert fuse_readers([boxes[i] for i in shuffled], threshold, min_readers=2) == fusion
    clusters = fusion.consensus + fusion.unsupported
    assert sum(c.member_count for c in clusters) == len(boxes)
    assert all(len(c.readers) >= 2 for c in fusion.consensus) and all(len(c.readers) < 2 for c in fusion.unsupported)
    for cluster in clusters:
        assert len(set(cluster.readers)) == len(cluster.readers) == cluster.member_count
        same_class = [b for b in boxes if b.label == cluster.box.label and b.reader in cluster.readers]
        low = np.min([_corners(b) for b in same_class], axis=0) - 1e-9
        high = np.max([_corners(b) for b in same_class], axis=0) + 1e-9
        assert (low <= _corners(cluster.box)).all() and (np.array(_corners(cluster.box)) <= high).all()


def test_fusion_rejects_bad_input():
    with pytest.raises(ValueError, match="individual reader"):
        fuse_readers([_box(0, 0, 1, 1, None)], 0.4, 2)
    with pytest.raises(ValueError, match="individual reader"):
        fuse_readers([_box(0, 0, 1, 1, "consensus")], 0.4, 2)
    with pytest.raises(ValueError, match="positive area"):
        fuse_readers([_box(5, 0, 5, 10, "R1")], 0.4, 2)
    with pytest.raises(ValueError, match="one origin"):
        fuse_readers([_box(0, 0, 1, 1, "R1"), _box(0, 0, 1, 1, "R2", origin="vindr-kaggle")], 0.4, 2)
    with pytest.raises(ValueError, match="iou_threshold"):
        fuse_readers([], 0.0, 2)
    with pytest.raises(ValueError, match="min_readers"):
        fuse_readers([], 0.4, 0)


# ---- merging ---------------------------------------------------------------------------------


def test_merge_uses_intersection_over_the_smaller_box_strictly_above_the_threshold():
    big, half_in = _box(0, 0, 10, 10), _box(5, 0, 100, 100)  # overlap = 50 / 100 = 0.5 exactly
    assert merge_overlapping([big, half_in], 0.5) == sorted([big, half_in], key=lambda b: b.x1)
    inside = _box(90, 90, 95, 95, "R1")  # overlap 1.0 with half_in although IoU is tiny
    merged = merge_overlapping([big, half_in, inside], 0.5)
    assert [_corners(b) for b in merged] == [(0, 0, 10, 10), (5, 0, 100, 100)]
    assert merged[1].reader == "R1"


def test_merge_is_transitive_through_grown_boxes_and_keeps_classes_apart():
    boxes = [
        _box(0, 0, 10, 10, "R1"),
        _box(4, 0, 14, 10, "R2"),  # overlap 0.6 with the first: merged to (0, 0, 14, 10)
        _box(9, 0, 19, 10, "R3"),  # overlap 0.5 with the second alone, 0.5 with the merged box: stays
        _box(2, 0, 12, 10, "R4", label="Cardiomegaly"),
    ]
    merged = merge_overlapping(boxes, 0.5)
    assert [(b.label, _corners(b), b.reader) for b in merged] == [
        ("Cardiomegaly", (2, 0, 12, 10), "R4"),
        ("Nodule/Mass", (0, 0, 14, 10), "R1+R2"),
        ("Nodule/Mass", (9, 0, 19, 10), "R3"),
    ]
    chain = merge_overlapping(boxes[:3], 0.45)  # now the third joins the grown box too
    assert [_corners(b) for b in chain] == [(0, 0, 19, 10)] and chain[0].reader == "R1+R2+R3"


@settings(max_examples=150, deadline=None)
@given(boxes=reader_boxes, seed=st.integers(0, 2**16), overlap=st.sampled_from([0.0, 0.3, 0.5, 0.9]))
def test_merged_boxes_no_longer_overlap_and_cover_every_input(boxes, seed, overlap):
    merged = merge_overlapping(boxes, overlap)
    order = np.random.default_rng(seed).permutation(len(boxes)) if boxes else []
    assert merge_overlapping([boxes[i] for i in order], overlap) == merged
    for a, b in itertools.combinations(merged, 2):
        if a.label == b.label:
            assert pairwise_overlap(np.array([_corners(a)]), np.array([_corners(b)]))[0, 0] <= overlap
    for box in boxes:
        assert any(
            m.label == box.label and m.x1 <= box.x1 and m.y1 <= box.y1 and m.x2 >= box.x2 and m.y2 >= box.y2
            for m in merged
        )


@settings(max_examples=150, deadline=None)
@given(boxes=reader_boxes, seed=st.integers(0, 2**16), overlap=st.sampled_from([0.0, 0.3, 0.5, 0.9]))
def test_corner_tuple_merge_gives_the_box_merge_values(boxes, seed, overlap):
    order = np.random.default_rng(seed).permutation(len(boxes)) if boxes else []
    tuples = [(boxes[i].label, boxes[i].origin, _corners(boxes[i])) for i in order]
    expected = sorted({(m.label, m.origin, _corners(m)) for m in merge_overlapping(boxes, overlap)})
    assert merge_overlapping_corners(tuples, overlap) == expected


def test_corner_tuple_merge_rejects_boxes_without_area():
    with pytest.raises(ValueError, match="no positive area"):
        merge_overlapping_corners([("Nodule/Mass", "vindr-annotations", (0.2, 0.1, 0.2, 0.3))])
    with pytest.raises(ValueError, match="overlap"):
        merge_overlapping_corners([], 1.0)


def test_merge_rejects_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        merge_overlapping([], 1.0)


# ---- circles and profile policies ------------------------------------------------------------


def test_circle_to_box():
    assert circle_to_box(100, 200, 15) == (85, 185, 115, 215)
    assert circle_to_box(100, 200, 15, centre_is_pixel_index=True) == (85.5, 185.5, 115.5, 215.5)
    with pytest.raises(ValueError, match="radius"):
        circle_to_box(1, 1, 0)
    with pytest.raises(ValueError, match="finite"):
        circle_to_box(float("nan"), 1, 2)


def test_box_policies_per_profile():
    assert box_policy("m4cxr").merge_overlap == 0.5
    assert box_policy("imt-cxr").merge_overlap is None
    assert (box_policy("imt-cxr").iou_threshold, box_policy("imt-cxr").min_readers) == (0.4, 2)
    with pytest.raises(ValueError, match="no box policy"):
        box_policy("llava")


def test_profile_boxes_fuse_readers_pass_consensus_through_and_merge_when_asked():
    boxes = [
        _box(0, 0, 100, 100, "R8"),
        _box(0, 0, 100, 100, "R9"),
        _box(300, 300, 400, 400, "R9"),  # unsupported
        _box(10, 10, 50, 50, "consensus"),  # VinDr test row: already a consensus
        _box(500, 500, 600, 600, None, label="right lung", origin="chexmask-mask"),
    ]
    imt, fusion = profile_boxes(boxes, "imt-cxr")
    assert [(b.label, _corners(b), b.reader) for b in imt] == [
        ("Nodule/Mass", (0, 0, 100, 100), "consensus"),
        ("Nodule/Mass", (10, 10, 50, 50), "consensus"),
        ("right lung", (500, 500, 600, 600), None),
    ]
    assert [c.readers for c in fusion.unsupported] == [("R9",)]
    m4cxr, _ = profile_boxes(boxes, "m4cxr")  # the small consensus box lies inside the big one
    assert [(b.label, _corners(b)) for b in m4cxr] == [
        ("Nodule/Mass", (0, 0, 100, 100)),
        ("right lung", (500, 500, 600, 600)),
    ]
