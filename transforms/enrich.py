"""The per-image stages after the join: image, geometry, language, and the output rows.

Each stage is a pure function of one unit. A stage raises when the image's own record cannot go
on (the Beam layer turns that into a reject with the stage name); problems confined to one
annotation or one box come back as rejects beside the unit, and the unit goes on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np

import manifests
from schemas.records import AnnotationRecord, AttributeMention, Box, MaskRLE, NativeQuestion, RegionAttributes, Reject
from schemas.rows import (
    AnnotationRow,
    BoxCell,
    FindingCell,
    FindingLabelCell,
    ImageRow,
    MentionCell,
    PolygonCell,
    QuestionCell,
    RawLabelCell,
    RegionCell,
    SectionCell,
)
from transforms import boxes, deid, geometry, images, io, labels, masks, padchest_english, phrases, reports, severity
from transforms.chexmask_space import preprocessed_to_original
from transforms.geometry import Letterbox
from transforms.png import encode_png
from transforms.tasks.severity_report import severity_document
from transforms.units import ImageUnit
from transforms.views import is_frontal

CHEXMASK_ORGANS = ("right lung", "left lung", "heart")
FUSION = manifests.load("box_policies.yaml")["fusion"]
MIN_RING_AREA: float = manifests.load("grounding.yaml")["mask_polygons"]["min_ring_area"]
"""Mask polygon rings smaller than this (square pixels of the original image) are noise and dropped."""


class ImageSizeMismatch(ValueError):
    """The decoded image does not have the size its metadata states."""


class MaskSizeMismatch(ValueError):
    """A mask is declared for a different image size than the decoded image."""


@dataclass
class DecodedUnit:
    unit: ImageUnit
    png: bytes
    letterbox: Letterbox
    width: int
    height: int
    photometric: str | None
    bits_stored: int | None
    source_format: str


@dataclass
class EnrichedUnit:
    decoded: DecodedUnit
    boxes: list[BoxCell] = field(default_factory=list)
    polygons: list[PolygonCell] = field(default_factory=list)
    ctr: float | None = None
    ptx_ratio: float | None = None
    ptx_side: str | None = None
    annotations: list[AnnotationRecord] = field(default_factory=list)  # those that survived geometry
    findings: list[FindingCell] = field(default_factory=list)
    sections: list[SectionCell] = field(default_factory=list)
    mentions: list[AttributeMention] = field(default_factory=list)
    findings_labels: dict[str, float | None] | None = None
    report_english: str | None = None
    report_translation: str | None = None


# ---------------------------------------------------------------- image stage


def decode_unit(unit: ImageUnit, size: int, png_compression: int) -> DecodedUnit:
    """Decode the image bytes, letterbox to ``size``, window to 8-bit and encode as PNG at zlib level
    ``png_compression``."""
    ref = unit.record.image
    image = images.decode_letterboxed(io.read_image_bytes(ref.uri), ref.format, size)
    expected = (ref.expected_width, ref.expected_height)
    if None not in expected and expected != (image.width, image.height):
        raise ImageSizeMismatch(
            f"{ref.image_key}: metadata says {expected[0]}x{expected[1]}, file is {image.width}x{image.height}"
        )
    return DecodedUnit(
        unit=unit,
        png=encode_png(image.canvas, png_compression),
        letterbox=image.letterbox,
        width=image.width,
        height=image.height,
        photometric=image.photometric,
        bits_stored=image.bits_stored,
        source_format=image.source_format,
    )


# ------------------------------------------------------------- geometry stage


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


# ------------------------------------------------------------- language stage


MENTION_SECTIONS = ("findings", "impression")


def report_mentions(record) -> list[AttributeMention]:
    """Attribute mentions of a record's report: English rules on the findings and impression
    sections (spans into the full report text); PadChest's sentence labels, never its stemmed text."""
    report = record.report
    if report is not None and report.language == "en":
        mentions = []
        for section in reports.section_spans(report.text):
            if section.name in MENTION_SECTIONS:
                for mention in phrases.extract_mentions(section.text):
                    start, end = mention.span
                    mentions.append(mention.model_copy(update={"span": (start + section.start, end + section.start)}))
        return mentions
    by_sentence = record.provenance.get("labels_localizations_by_sentence")
    if record.image.source == "padchest" and by_sentence:
        return phrases.padchest_mentions(json.loads(by_sentence), report.text if report is not None else None)
    return []


def english_statements(record) -> str | None:
    """PadChest's report in English: its sentence labels and localizations rendered as statements
    (:mod:`transforms.padchest_english`), without side words on a view where left and right cannot be
    told apart. None for other sources and for rows without sentence labels."""
    by_sentence = record.provenance.get("labels_localizations_by_sentence")
    if record.image.source != "padchest" or not by_sentence:
        return None
    rendered = padchest_english.render_report(json.loads(by_sentence), sides=is_frontal(record.image.view))
    return rendered.text or None


def _scrub_report(decoded: DecodedUnit) -> DecodedUnit:
    """The unit with its English report's line endings normalised (CR LF and CR -> LF) and the report
    de-identified (new objects; the input is left as it was)."""
    record = decoded.unit.record
    report = record.report
    if report is None or report.language != "en":
        return decoded
    text = deid.scrub(reports.normalise_line_endings(report.text))
    if text == report.text:
        return decoded
    record = record.model_copy(update={"report": report.model_copy(update={"text": text})})
    return replace(decoded, unit=replace(decoded.unit, record=record))


def language_unit(enriched: EnrichedUnit) -> EnrichedUnit:
    """De-identified report, its sections and attribute mentions, and the harmonised findings.

    The English report's line endings are normalised and the report is scrubbed first
    (``transforms/deid.py``); the result replaces the record's report, so sections, mention spans and the
    annotation row's ``report_text`` all refer to that text, and no carriage return reaches a target."""
    enriched.decoded = _scrub_report(enriched.decoded)
    record = enriched.decoded.unit.record
    if record.report is not None and record.report.language == "en":
        enriched.sections = [
            SectionCell(name=name, text=text) for name, text in reports.section_list(record.report.text)
        ]
    enriched.mentions = report_mentions(record)
    findings_text = next((s["text"] for s in reversed(enriched.sections) if s["name"] == "findings"), None)
    if findings_text:  # the cleaned FINDINGS text's labels, for chain-of-thought targets (study labels stay official)
        enriched.findings_labels = labels.label_report(reports.clean_text(findings_text))
    raw = (
        list(record.raw_labels)
        + labels.box_labels(record.boxes)
        + [label for ann in enriched.annotations for label in ann.raw_labels]
    )
    enriched.findings = [
        FindingCell(name=f.name, presence=f.presence, systems=list(f.systems), raw=list(f.raw))
        for f in labels.harmonize(raw)
    ]
    return enriched


def english_unit(enriched: EnrichedUnit, translations: Mapping[str, str] | None = None) -> EnrichedUnit:
    """PadChest's report in English: its statements (:func:`english_statements`) and, from
    ``translations`` (report text -> English, when the build translates), its translation.
    :class:`transforms.padchest_english.UnknownPhrase` for a sentence label the manifest lacks."""
    record = enriched.decoded.unit.record
    enriched.report_english = english_statements(record)
    if translations and record.report is not None and record.image.source == "padchest":
        enriched.report_translation = translations.get(record.report.text) or None
    return enriched


def without_report(enriched: EnrichedUnit, reason: str) -> EnrichedUnit:
    """The unit as geometry left it, its report dropped (``provenance["report"]`` = ``reason``) with
    PadChest's sentence labels, which annotate the report's sentences, and nothing of the language
    stage kept: what a report the language stage cannot handle costs."""
    record = enriched.decoded.unit.record
    provenance = {key: value for key, value in record.provenance.items() if key != "labels_localizations_by_sentence"}
    record = record.model_copy(update={"report": None, "provenance": {**provenance, "report": reason}})
    decoded = replace(enriched.decoded, unit=replace(enriched.decoded.unit, record=record))
    return replace(
        enriched,
        decoded=decoded,
        findings=[],
        sections=[],
        mentions=[],
        findings_labels=None,
        report_english=None,
        report_translation=None,
    )


# ---------------------------------------------------------------- output rows


def image_row(enriched: EnrichedUnit) -> ImageRow:
    """The unit's row of the ``images`` table: the letterboxed PNG and what it came from."""
    decoded = enriched.decoded
    ref = decoded.unit.record.image
    lb = decoded.letterbox
    return ImageRow(
        image_key=ref.image_key,
        source=ref.source,
        split=decoded.unit.split,
        split_authority=decoded.unit.split_authority,
        subject_id=ref.subject_id,
        study_id=ref.study_id,
        view=ref.view,
        study_datetime=ref.study_datetime,
        image={"bytes": decoded.png, "path": f"{ref.image_key}.png"},
        orig_width=decoded.width,
        orig_height=decoded.height,
        letterbox={"size": lb.size, "scale": lb.scale, "pad_x": lb.pad_x, "pad_y": lb.pad_y},
        photometric=decoded.photometric,
        bits_stored=decoded.bits_stored,
        source_format=decoded.source_format,
    )


def annotation_row(enriched: EnrichedUnit) -> AnnotationRow:
    """The unit's row of the ``annotations`` table (``severity_tfidf`` filled later: :func:`add_severity_tfidf`)."""
    unit = enriched.decoded.unit
    record = unit.record
    report = record.report
    provenance = dict(record.provenance)
    for ann in enriched.annotations:
        provenance.update({f"{ann.source}.{k}": v for k, v in ann.provenance.items()})
        provenance.update({f"{ann.source}.{k}": str(v) for k, v in ann.quality.items()})
        if ann.split_hint:
            provenance[f"{ann.source}.split"] = ann.split_hint
    raw_labels = list(record.raw_labels) + [label for ann in enriched.annotations for label in ann.raw_labels]
    score = severity.severity_ordinal(enriched.mentions)
    return AnnotationRow(
        image_key=unit.key,
        source=record.image.source,
        split=unit.split,
        subject_id=record.image.subject_id,
        study_id=record.image.study_id,
        view=record.image.view,
        study_datetime=record.image.study_datetime,
        annotation_sources=sorted({ann.source for ann in enriched.annotations}),
        findings=enriched.findings,
        raw_labels=[
            RawLabelCell(system=label.system, name=label.name, value=label.value, reader=label.reader)
            for label in raw_labels
        ],
        boxes=sorted(enriched.boxes, key=_box_sort_key),
        polygons=enriched.polygons,
        regions=[_region_cell(region) for ann in enriched.annotations for region in ann.regions],
        questions=[_question_cell(question) for ann in enriched.annotations for question in ann.questions],
        report_text=report.text if report else None,  # scrubbed by language_unit
        report_language=report.language if report else None,
        report_english=enriched.report_english,
        report_translation=enriched.report_translation,
        sections=enriched.sections,
        mentions=[_mention_row(m) for m in enriched.mentions],
        findings_labels=None
        if enriched.findings_labels is None
        else [FindingLabelCell(name=name, value=value) for name, value in enriched.findings_labels.items()],
        attribute_prompt=phrases.attribute_prompt(enriched.mentions) or None,
        severity_ordinal=score,
        severity_bucket=severity.severity_bucket(score),
        severity_tfidf=None,  # filled once the build has fitted the IDF table (add_severity_tfidf)
        ctr=enriched.ctr,
        ctr_band=geometry.ctr_band(enriched.ctr) if enriched.ctr is not None else None,
        ptx_ratio=enriched.ptx_ratio,
        ptx_side=enriched.ptx_side,
        ptx_band=geometry.ptx_band(enriched.ptx_ratio) if enriched.ptx_ratio is not None else None,
        provenance=json.dumps(provenance, sort_keys=True),
    )


def _region_cell(region: RegionAttributes) -> RegionCell:
    return RegionCell(
        region=region.region,
        phrase=region.phrase,
        attributes=list(region.attributes),
        comparison_cues=list(region.comparison_cues),
        temporal_cues=list(region.temporal_cues),
        severity_cues=list(region.severity_cues),
    )


def _question_cell(question: NativeQuestion) -> QuestionCell:
    return QuestionCell(
        dataset=question.dataset,
        where=question.where,
        split=question.split,
        question_type=question.question_type,
        semantic_type=question.semantic_type,
        template=question.template,
        question=question.question,
        answers=list(question.answers),
        reference_study_id=question.reference_study_id,
    )


def _mention_row(mention: AttributeMention) -> MentionCell:
    low, high = mention.severity if mention.severity is not None else (None, None)
    return MentionCell(
        finding=mention.finding,
        presence=mention.presence,
        laterality=mention.laterality,
        zones=list(mention.zones),
        severity_min=low,
        severity_max=high,
        severity_scale=mention.severity_scale,
        temporal=mention.temporal,
        sentence=mention.sentence,
        span_start=mention.span[0],
        span_end=mention.span[1],
    )


def train_severity_documents(rows: list[AnnotationRow]) -> list[list[str]]:
    """The severity terms of each training document among one shard's annotation rows, what MediVLM's
    IDF table is fitted on: a train row's :func:`severity_document`, once per study (its images share
    one report; a study's lateral PadChest images read differently, so they count apart); rows without
    a document are not documents. A shard holds whole studies, so shards never share a document."""
    seen, documents = set(), []
    for row in rows:
        document = severity_document(cast(dict, row)) if row["split"] == "train" else None
        key = (row["source"], row["study_id"] or row["image_key"], document)
        if document and key not in seen:
            seen.add(key)
            documents.append(severity.severity_terms(document))
    return documents


def add_severity_tfidf(row: AnnotationRow, idf_table: dict) -> AnnotationRow:
    """The row with MediVLM's severity of its :func:`severity_document` ("" without one), from the table
    fitted on this build's train split."""
    document = severity_document(cast(dict, row))  # the task modules read rows as plain dicts
    return {**row, "severity_tfidf": severity.severity_tfidf(document or "", idf_table)}


def _box_sort_key(box: BoxCell) -> tuple:
    return (box["origin"], box["label"], box["reader"] or "", box["x1"], box["y1"], box["x2"], box["y2"])


def _reason(exc: BaseException) -> str:
    return kebab(type(exc).__name__)


def kebab(name: str) -> str:
    """``ImageDecodeError`` -> ``image-decode-error``: reject reasons from exception classes."""
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("-")
        out.append(ch.lower())
    return "".join(out)
