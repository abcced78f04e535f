"""Box policies: multi-reader consensus, merging of overlapping boxes, circles as boxes.

Annotation-level functions take and give :class:`schemas.records.Box` (original pixels,
pixel-edge coordinates, ``x2`` = right edge), because readers, labels and origins must travel with
the coordinates; the purely geometric helpers (:func:`pairwise_iou`, :func:`pairwise_overlap`,
:func:`circle_to_box`) use plain ``(x1, y1, x2, y2)`` tuples or ``(n, 4)`` arrays.

Consensus (:func:`fuse_readers`), per class label:

1. the class's boxes are visited in a fixed order: reader id, then ``x1, y1, x2, y2``;
2. a box joins the cluster whose current consensus box has the highest IoU with it, among the
   clusters with IoU >= ``iou_threshold`` that hold no box of the same reader yet (ties: the
   older cluster); otherwise it opens a new cluster;
3. the consensus box is the coordinate-wise mean of the cluster's boxes (weighted box fusion with
   equal weights, since VinDr readers give no scores), updated after every join;
4. clusters supported by at least ``min_readers`` distinct readers are consensus boxes; the others
   are returned apart as unsupported, so that the caller counts them.

Merging (:func:`merge_overlapping`): same-class boxes whose overlap, the intersection area over the
area of the SMALLER box, is strictly greater than the threshold are replaced by their enclosing box,
until no pair qualifies. Parameters live in ``manifests/box_policies.yaml``. Every output is sorted,
so the result does not depend on the input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

import manifests
from schemas.records import Box


@dataclass(frozen=True)
class ConsensusBox:
    """A fused box and the readers whose boxes formed it (sorted, distinct)."""

    box: Box
    readers: tuple[str, ...]
    member_count: int  # boxes in the cluster (equals len(readers): one box per reader per cluster)


@dataclass(frozen=True)
class Fusion:
    consensus: list[ConsensusBox]  # clusters with >= min_readers readers
    unsupported: list[ConsensusBox]  # clusters with fewer readers: not consensus, to be counted


@dataclass(frozen=True)
class BoxPolicy:
    """What a profile does with boxes (from ``manifests/box_policies.yaml``)."""

    iou_threshold: float
    min_readers: int
    consensus_reader: str
    merge_overlap: float | None  # None: the profile does not merge overlapping boxes


def box_policy(profile: str) -> BoxPolicy:
    """The box policy of a profile name (e.g. ``"m4cxr"``)."""
    data = manifests.load("box_policies.yaml")
    if profile not in data["profiles"]:
        raise ValueError(f"no box policy for profile {profile!r}; known: {sorted(data['profiles'])}")
    fusion = data["fusion"]
    if fusion["rule"] != "iou-cluster-mean":
        raise ValueError(f"unknown fusion rule {fusion['rule']!r} in box_policies.yaml")
    merges = data["profiles"][profile]["merge_overlapping"]
    return BoxPolicy(
        iou_threshold=float(fusion["iou_threshold"]),
        min_readers=int(fusion["min_readers"]),
        consensus_reader=str(fusion["consensus_reader"]),
        merge_overlap=float(data["merge"]["overlap"]) if merges else None,
    )


def _corners(boxes: list[Box]) -> np.ndarray:
    """``(n, 4)`` float array of the boxes' corners; raises for boxes without positive area."""
    corners = np.array([(b.x1, b.y1, b.x2, b.y2) for b in boxes], dtype=float).reshape(-1, 4)
    bad = np.flatnonzero((corners[:, 2] <= corners[:, 0]) | (corners[:, 3] <= corners[:, 1]))
    if bad.size:
        box = boxes[int(bad[0])]
        raise ValueError(f"box {box.label!r} ({box.x1}, {box.y1}, {box.x2}, {box.y2}) has no positive area")
    return corners


def _intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise intersection areas ``(n, m)`` and the areas of ``a`` and ``b``."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    return inter, _areas(a), _areas(b)


def _areas(corners: np.ndarray) -> np.ndarray:
    return (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n, m)`` intersection over union of ``(n, 4)`` and ``(m, 4)`` boxes of positive area."""
    inter, area_a, area_b = _intersections(np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4))
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def pairwise_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n, m)`` intersection over the area of the smaller box of each pair (1.0 when one holds the other)."""
    inter, area_a, area_b = _intersections(np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4))
    return inter / np.minimum(area_a[:, None], area_b[None, :])


def _sort_key(box: Box) -> tuple:
    return (box.label, box.x1, box.y1, box.x2, box.y2, box.origin, box.reader or "")


def _cluster_class(boxes: list[Box], iou_threshold: float) -> list[list[int]]:
    """Clusters (indices into ``boxes``, already in visiting order) of one class, by the module rule."""
    corners = _corners(boxes)
    clusters: list[list[int]] = []
    means = np.empty((0, 4))
    for index, box in enumerate(boxes):
        if clusters:
            ious = pairwise_iou(corners[index], means)[0]
            taken = np.array([any(boxes[m].reader == box.reader for m in members) for members in clusters])
            ious[taken | (ious < iou_threshold)] = -1.0
            best = int(np.argmax(ious))  # first maximum: the older cluster wins ties
            if ious[best] >= 0:
                clusters[best].append(index)
                means[best] = corners[clusters[best]].mean(axis=0)
                continue
        clusters.append([index])
        means = np.vstack([means, corners[index]])
    return clusters


def fuse_readers(
    boxes: list[Box], iou_threshold: float, min_readers: int, consensus_reader: str = "consensus"
) -> Fusion:
    """Consensus boxes of multi-reader boxes by the rule in the module docstring.

    Every box needs a reader. Consensus boxes keep the label and origin of their members, carry
    ``reader=consensus_reader`` and list the supporting readers in :attr:`ConsensusBox.readers`.
    Both lists are sorted by label, then coordinates.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if min_readers < 1:
        raise ValueError(f"min_readers must be at least 1, got {min_readers}")
    unread = [box for box in boxes if not box.reader or box.reader == consensus_reader]
    if unread:
        raise ValueError(
            f"fuse_readers needs an individual reader on every box; {len(unread)} have none or are already "
            f"{consensus_reader!r} (e.g. {unread[0].label!r})"
        )
    origins = {box.origin for box in boxes}
    if len(origins) > 1:
        raise ValueError(f"fuse_readers fuses boxes of one origin, got {sorted(origins)}")
    ordered = sorted(boxes, key=lambda b: (b.label, b.reader, b.x1, b.y1, b.x2, b.y2))
    fused: list[ConsensusBox] = []
    for label in sorted({box.label for box in ordered}):
        members_of_class = [box for box in ordered if box.label == label]
        for members in _cluster_class(members_of_class, iou_threshold):
            cluster = [members_of_class[i] for i in members]
            x1, y1, x2, y2 = (float(v) for v in _corners(cluster).mean(axis=0))
            box = Box(label=label, x1=x1, y1=y1, x2=x2, y2=y2, origin=cluster[0].origin, reader=consensus_reader)
            fused.append(
                ConsensusBox(
                    box=box,
                    readers=tuple(sorted(cast(str, b.reader) for b in cluster)),  # every box has one (checked above)
                    member_count=len(cluster),
                )
            )
    fused.sort(key=lambda c: (_sort_key(c.box), c.readers))
    return Fusion(
        consensus=[c for c in fused if len(c.readers) >= min_readers],
        unsupported=[c for c in fused if len(c.readers) < min_readers],
    )


def _enclosing(boxes: list[Box]) -> tuple[float, float, float, float]:
    corners = _corners(boxes)
    return (corners[:, 0].min(), corners[:, 1].min(), corners[:, 2].max(), corners[:, 3].max())


def _merged_reader(boxes: list[Box]) -> str | None:
    readers = sorted({box.reader for box in boxes if box.reader})
    return "+".join(readers) if readers else None


def merge_overlapping(boxes: list[Box], overlap: float = 0.5) -> list[Box]:
    """Same-class boxes merged into their enclosing box while a pair has overlap > ``overlap``
    (intersection over the smaller box's area, see :func:`pairwise_overlap`).

    Boxes of one class and origin only are merged. A merged box keeps label and origin; its reader
    is the ``"+"``-joined distinct readers of its parts (None when none had one). Sorted output.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    result: list[Box] = []
    for label, origin in sorted({(box.label, box.origin) for box in boxes}):
        groups = [[box] for box in sorted((b for b in boxes if (b.label, b.origin) == (label, origin)), key=_sort_key)]
        while True:
            corners = np.array([_enclosing(group) for group in groups])
            linked = pairwise_overlap(corners, corners) > overlap
            components = _components(linked)
            if len(components) == len(groups):
                break
            groups = [[box for i in component for box in groups[i]] for component in components]
        for group, (x1, y1, x2, y2) in zip(groups, corners):
            result.append(
                Box(
                    label=label,
                    x1=float(x1),
                    y1=float(y1),
                    x2=float(x2),
                    y2=float(y2),
                    origin=origin,
                    reader=_merged_reader(group),
                )
            )
    return sorted(result, key=_sort_key)


Corners = tuple[float, float, float, float]


def merge_overlapping_corners(
    boxes: list[tuple[str, str, Corners]], overlap: float = 0.5
) -> list[tuple[str, str, Corners]]:
    """The enclosing boxes of :func:`merge_overlapping` for plain ``(label, origin, (x1, y1, x2, y2))``
    tuples, without readers or ``Box`` models (the fast path of per-row task generators).

    Same rule and same values as :func:`merge_overlapping`; sorted by label, origin, then corners.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    groups: dict[tuple[str, str], list[Corners]] = {}
    for label, origin, (x1, y1, x2, y2) in boxes:
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box {label!r} ({x1}, {y1}, {x2}, {y2}) has no positive area")
        groups.setdefault((label, origin), []).append((float(x1), float(y1), float(x2), float(y2)))
    result = []
    for (label, origin), members in groups.items():
        if len(members) == 1:
            result.append((label, origin, members[0]))
            continue
        corners = np.array(sorted(members))
        while True:
            components = _components(pairwise_overlap(corners, corners) > overlap)
            if len(components) == len(corners):
                break
            corners = np.array(
                [
                    (corners[c, 0].min(), corners[c, 1].min(), corners[c, 2].max(), corners[c, 3].max())
                    for c in components
                ]
            )
        result += [(label, origin, (float(x1), float(y1), float(x2), float(y2))) for x1, y1, x2, y2 in corners.tolist()]
    return sorted(result)


def _components(linked: np.ndarray) -> list[list[int]]:
    """Connected components of a symmetric boolean adjacency matrix, each sorted, ordered by first index."""
    reach = linked | np.eye(len(linked), dtype=bool)
    while True:  # boolean matrix squaring until the reachability closure is stable (log n rounds)
        grown = (reach.astype(np.int64) @ reach.astype(np.int64)) > 0
        if (grown == reach).all():
            break
        reach = grown
    first_member = reach.argmax(axis=1)  # smallest index each node reaches
    return [np.flatnonzero(first_member == root).tolist() for root in np.unique(first_member)]


def circle_to_box(
    cx: float, cy: float, r: float, centre_is_pixel_index: bool = False
) -> tuple[float, float, float, float]:
    """The box ``(x1, y1, x2, y2)`` around a circle (JSRT nodules: centre and radius in pixels).

    Coordinates are pixel-edge ones; pass ``centre_is_pixel_index=True`` when the centre names a
    pixel (column ``cx``, row ``cy``), whose centre lies at edge coordinate ``cx + 0.5``. The box
    is not clipped (see :func:`transforms.geometry.clip_box`).
    """
    if not (np.isfinite(r) and r > 0):
        raise ValueError(f"circle radius must be positive, got {r}")
    if not (np.isfinite(cx) and np.isfinite(cy)):
        raise ValueError(f"circle centre must be finite, got ({cx}, {cy})")
    shift = 0.5 if centre_is_pixel_index else 0.0
    return (cx + shift - r, cy + shift - r, cx + shift + r, cy + shift + r)


def profile_boxes(boxes: list[Box], profile: str) -> tuple[list[Box], Fusion]:
    """The boxes a profile's localisation targets use, and the fusion behind them.

    Boxes of individual readers are fused per origin into consensus boxes (the per-reader boxes
    stay in the annotations table, not here); boxes without a reader or already marked as
    consensus (VinDr test rows, ``reader="consensus"``) pass through. When the profile asks, the
    result is then merged with :func:`merge_overlapping`. All boxes need positive area.
    """
    policy = box_policy(profile)

    def individual(box: Box) -> bool:
        return bool(box.reader) and box.reader != policy.consensus_reader

    consensus: list[ConsensusBox] = []
    unsupported: list[ConsensusBox] = []
    for origin in sorted({box.origin for box in boxes if individual(box)}):
        fusion = fuse_readers(
            [b for b in boxes if individual(b) and b.origin == origin],
            policy.iou_threshold,
            policy.min_readers,
            policy.consensus_reader,
        )
        consensus += fusion.consensus
        unsupported += fusion.unsupported
    chosen = [c.box for c in consensus] + [box for box in boxes if not individual(box)]
    if policy.merge_overlap is not None:
        chosen = merge_overlapping(chosen, policy.merge_overlap)
    return sorted(chosen, key=_sort_key), Fusion(consensus=consensus, unsupported=unsupported)
