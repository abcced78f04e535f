"""An enriched image as its output rows: the ``images`` row and the ``annotations`` row (the contract every
task reads, typed in :mod:`schemas.rows`), and MediVLM's severity score added once the IDF is fitted
(pure; see :mod:`transforms.enrich`)."""

from __future__ import annotations

import json
from typing import cast

from schemas.records import AttributeMention, NativeQuestion, RegionAttributes
from schemas.rows import (
    AnnotationRow,
    BoxCell,
    FindingLabelCell,
    ImageRow,
    MentionCell,
    QuestionCell,
    RawLabelCell,
    RegionCell,
)
from transforms import geometry, phrases, severity
from transforms.enrich import EnrichedUnit
from transforms.tasks.severity_report import severity_document


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
