"""The geometry stage of one image: boxes clipped and fused per reader, mask and contour polygons in
the letterboxed frame, cardiothoracic and pneumothorax ratios (pure; see :mod:`transforms.enrich`)."""

from __future__ import annotations

import numpy as np

import manifests
from schemas.records import AnnotationRecord, Box, MaskRLE, Reject
from schemas.rows import BoxCell, PolygonCell
from transforms import boxes, geometry, labels, masks
from transforms.chexmask_space import preprocessed_to_original
from transforms.enrich import DecodedUnit, EnrichedUnit, kebab
from transforms.geometry import Letterbox

CHEXMASK_ORGANS = ("right lung", "left lung", "heart")
FUSION = manifests.load("box_policies.yaml")["fusion"]
MIN_RING_AREA: float = manifests.load("grounding.yaml")["mask_polygons"]["min_ring_area"]
"""Mask polygon rings smaller than this (square pixels of the original image) are noise and dropped."""


class MaskSizeMismatch(ValueError):
    """A mask is declared for a different image size than the decoded image."""


def _clip(box: Box, width: int, height: int) -> Box | None:
    """The box clipped to the image, or None when nothing of it has area inside."""
    clipped = geometry.clip_box(box.x1, box.y1, box.x2, box.y2, width, height)
    if clipped is None:
        return None
    x1, y1, x2, y2 = clipped
    return box.model_copy(update={"x1": x1, "y1": y1, "x2": x2, "y2": y2})


def _box_row(box: Box, lb: Letterbox, readers: tuple[str, ...] = ()) -> BoxCell:
    """A box (already inside the image) in original pixels and canvas units."""
    u1, v1, u2, v2 = lb.box_to_unit(box.x1, box.y1, box.x2, box.y2)
    return BoxCell(
        label=box.label,
        finding=labels.finding_for_box(box.origin, box.label),
        origin=box.origin,
        reader=box.reader,
        readers=list(readers or ([box.reader] if box.reader else [])),
        x1=box.x1,
        y1=box.y1,
        x2=box.x2,
        y2=box.y2,
        u1=u1,
        v1=v1,
        u2=u2,
        v2=v2,
    )


def _polygon_row(label: str, origin: str, rings: list[list[tuple[float, float]]], lb: Letterbox) -> PolygonCell:
    """Polygon vertices are pixel indices (a vertex at a pixel's centre, as OpenCV contours and
    CheXmask landmarks are); the centre of pixel i lies at edge coordinate i + 0.5."""
    return PolygonCell(
        label=label,
        origin=origin,
        rings=[[[float(x), float(y)] for x, y in ring] for ring in rings],
        rings_unit=[[list(lb.to_unit(x + 0.5, y + 0.5)) for x, y in ring] for ring in rings],
    )


def _decode_for_image(mask: MaskRLE, width: int, height: int) -> np.ndarray:
    if (mask.width, mask.height) != (width, height):
        transposed = (mask.width, mask.height) == (height, width)
        raise MaskSizeMismatch(
            f"{mask.origin} mask '{mask.label}' is {mask.width}x{mask.height}"
            f"{' (width and height swapped)' if transposed else ''}, image is {width}x{height}"
        )
    return masks.rle_decode(mask.rle, mask.height, mask.width, mask.convention)


def _mask_geometry(
    label: str, origin: str, mask: np.ndarray, lb: Letterbox, max_vertices: int
) -> tuple[list[BoxCell], list[PolygonCell], int]:
    """Boxes and the polygon of a mask, and how many rings were dropped below ``MIN_RING_AREA``."""
    if not mask.any():
        return [], [], 0
    rows = [
        _box_row(Box(label=label, x1=x1, y1=y1, x2=x2, y2=y2, origin=origin), lb)
        for x1, y1, x2, y2 in masks.mask_to_boxes(mask)
    ]
    rings = masks.mask_to_polygons(mask, max_vertices=max_vertices)
    kept = [ring for ring in rings if abs(masks.signed_area(ring)) >= MIN_RING_AREA]
    return rows, ([_polygon_row(label, origin, kept, lb)] if kept else []), len(rings) - len(kept)


def _inside(points: np.ndarray, width: int, height: int) -> list[tuple[float, float]]:
    """Pixel-index points clipped to the image (mapped-back points can fall in the padding)."""
    clipped = np.clip(points, 0, [width - 1, height - 1])
    return [(float(x), float(y)) for x, y in clipped]


def _chexmask_geometry(ann: AnnotationRecord, lb: Letterbox, width: int, height: int, max_vertices: int):
    """Organ boxes from the masks, organ polygons from the landmark contours, and the CTR.

    Rows from CheXmask's ``Preprocessed`` folder (1024x1024, centre-padded and resized) are mapped
    back to the image's own size first; OriginalResolution rows must match the image size."""
    preprocessed = ann.provenance.get("space") == "preprocessed-1024"
    if preprocessed:
        organ_masks = {
            m.label: preprocessed_to_original(masks.rle_decode(m.rle, m.height, m.width, m.convention), width, height)
            for m in ann.masks
        }
        contours = [
            (c.label, c.origin, _inside(preprocessed_to_original(np.array(c.points), width, height), width, height))
            for c in ann.landmarks
        ]
    else:
        organ_masks = {m.label: _decode_for_image(m, width, height) for m in ann.masks}
        contours = [(c.label, c.origin, c.points) for c in ann.landmarks]
    organ_boxes: list[BoxCell] = []
    polygons: list[PolygonCell] = []
    for organ in CHEXMASK_ORGANS:
        mask = organ_masks.get(organ)
        if mask is not None and mask.any():
            x1, y1, x2, y2 = masks.mask_to_boxes(mask, union=True)[-1]
            organ_boxes.append(_box_row(Box(label=organ, x1=x1, y1=y1, x2=x2, y2=y2, origin="chexmask-mask"), lb))
    for label, origin, points in contours:  # landmark contours are polygons, reduced to the vertex budget
        ring = masks.simplify_ring(np.asarray(points, dtype=np.float64), max_vertices)
        polygons.append(_polygon_row(label, origin, [[(float(x), float(y)) for x, y in ring]], lb))
    ctr = None
    if all(organ in organ_masks for organ in CHEXMASK_ORGANS):
        lungs = organ_masks["right lung"] | organ_masks["left lung"]
        if lungs.any() and organ_masks["heart"].any():
            ctr = float(geometry.cardiothoracic_ratio(organ_masks["heart"], lungs))
    return organ_boxes, polygons, ctr, organ_masks


def _box_problem(box: Box, width: int, height: int) -> tuple[str, str]:
    """Reason and wording for a box with no area inside the image: inverted (``negative-box``),
    degenerate (``zero-area-box``) or wholly outside the image (``box-outside-image``)."""
    if box.x2 < box.x1 or box.y2 < box.y1:
        return "negative-box", f"has a negative {'width' if box.x2 < box.x1 else 'height'}"
    if box.x2 == box.x1 or box.y2 == box.y1:
        return "zero-area-box", f"has zero {'width' if box.x2 == box.x1 else 'height'}"
    return "box-outside-image", f"has no area inside the {width}x{height} image"


def _reader_consensus(read_boxes: list[Box]):
    """Consensus boxes of multi-reader annotations (VinDr train): fused per class by the rule in
    manifests/box_policies.yaml; the per-reader boxes stay beside them."""
    per_reader = [box for box in read_boxes if box.reader and box.reader != FUSION["consensus_reader"]]
    if len({box.reader for box in per_reader}) < 2:
        return [], []
    fusion = boxes.fuse_readers(per_reader, FUSION["iou_threshold"], FUSION["min_readers"], FUSION["consensus_reader"])
    return fusion.consensus, fusion.unsupported


def geometry_unit(decoded: DecodedUnit, max_vertices: int = 30) -> tuple[EnrichedUnit, list[Reject]]:
    """Boxes, polygons and CTR in original pixels and canvas units; clipped, never silently dropped."""
    unit, lb, width, height = decoded.unit, decoded.letterbox, decoded.width, decoded.height
    record = unit.record
    enriched = EnrichedUnit(decoded=decoded)
    rejects: list[Reject] = []

    def add_boxes(stated: list[Box], source: str, key: str) -> list[Box]:
        kept = []
        for box in stated:
            clipped = _clip(box, width, height)
            if clipped is None:
                reason, problem = _box_problem(box, width, height)
                rejects.append(
                    Reject(
                        key=key,
                        source=source,
                        stage="geometry",
                        level="item",
                        reason=reason,
                        detail=f"{box.where + ': ' if box.where else ''}{box.label} "
                        f"({box.x1},{box.y1},{box.x2},{box.y2}) {problem}",
                    )
                )
            else:
                enriched.boxes.append(_box_row(clipped, lb))
                kept.append(clipped)
        return kept

    read_boxes = add_boxes(record.boxes, record.image.source, unit.key)
    consensus, unsupported = _reader_consensus(read_boxes)
    enriched.boxes += [_box_row(c.box, lb, c.readers) for c in consensus]
    for cluster in unsupported:
        rejects.append(
            Reject(
                key=unit.key,
                source=record.image.source,
                stage="geometry",
                kind="filtered",
                level="item",
                reason="no-reader-consensus",
                detail=f"{cluster.box.label}: only {', '.join(cluster.readers)} drew it",
            )
        )
    # Several mask rows of one label (SIIM) are separate masks of one finding: union them.
    by_label: dict[str, np.ndarray] = {}
    for mask in record.masks:
        decoded_mask = _decode_for_image(mask, width, height)
        by_label[mask.label] = by_label.get(mask.label, False) | decoded_mask
    for label in sorted(by_label):
        mask_boxes, mask_polygons, dropped = _mask_geometry(
            label, record.masks[0].origin, by_label[label], lb, max_vertices
        )
        enriched.boxes += mask_boxes
        enriched.polygons += mask_polygons
        if dropped:
            rejects.append(
                Reject(
                    key=unit.key,
                    source=record.image.source,
                    stage="geometry",
                    kind="filtered",
                    level="item",
                    reason="polygon-ring-below-min-area",
                    detail=f"{label}: {dropped} ring(s) under {MIN_RING_AREA} px²",
                )
            )
    for polygon in record.polygons:
        enriched.polygons.append(_polygon_row(polygon.label, polygon.origin, polygon.rings, lb))

    organ_masks: dict[str, np.ndarray] = {}  # CheXmask lungs and heart, when an annotation has them
    for ann in unit.annotations:
        try:
            if ann.source == "chexmask":
                organ_boxes, organ_polygons, ctr, organ_masks = _chexmask_geometry(ann, lb, width, height, max_vertices)
                enriched.boxes += organ_boxes
                enriched.polygons += organ_polygons
                enriched.ctr = ctr if ctr is not None else enriched.ctr
            else:
                add_boxes(ann.boxes, ann.source, ann.target_key)
                for polygon in ann.polygons:
                    enriched.polygons.append(_polygon_row(polygon.label, polygon.origin, polygon.rings, lb))
        except ValueError as exc:
            rejects.append(
                Reject(
                    key=ann.target_key,
                    source=ann.source,
                    stage="geometry",
                    reason=_reason(exc),
                    detail=f"{ann.native_id}: {exc}",
                )
            )
            continue
        enriched.annotations.append(ann)
    ptx = by_label.get("Pneumothorax")
    if ptx is not None and ptx.any() and {"right lung", "left lung"} <= set(organ_masks):
        enriched.ptx_ratio, enriched.ptx_side = geometry.pneumothorax_ratio(
            ptx, organ_masks["right lung"], organ_masks["left lung"]
        )
    return enriched, rejects


def _reason(exc: BaseException) -> str:
    return kebab(type(exc).__name__)
