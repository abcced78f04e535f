"""One typed row per output table: what a producer builds and a consumer reads.

Each table of :mod:`schemas.tables` has a ``TypedDict`` here with exactly its columns, and each
struct column one for its items. ``tests/test_rows.py`` checks keys and value types against the
Arrow schemas in both directions, so a misspelled key fails a unit test, not a shard write.

Producers: :func:`transforms.output_rows.image_row` and :func:`transforms.output_rows.annotation_row`
(the image stage), the task generators (typed where ``pipelines/beam/task_stage.py`` collects them),
:func:`reject_row` (every stage's :class:`schemas.records.Reject`) and the tokenize stage's VQ rows.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import numpy.typing as npt

from schemas.records import Reject

# ---------------------------------------------------------------- images


class ImageCell(TypedDict):
    """A Hugging Face ``Image()`` cell: the PNG bytes and a file name."""

    bytes: bytes
    path: str


class LetterboxCell(TypedDict):
    size: int
    scale: float
    pad_x: float
    pad_y: float


class ImageRow(TypedDict):
    image_key: str
    source: str
    split: str
    split_authority: str
    subject_id: str | None
    study_id: str | None
    view: str | None
    study_datetime: str | None
    image: ImageCell
    orig_width: int
    orig_height: int
    letterbox: LetterboxCell
    photometric: str | None
    bits_stored: int | None
    source_format: str


# ---------------------------------------------------------------- annotations


class FindingCell(TypedDict):
    name: str
    presence: int | None
    systems: list[str]
    raw: list[str]


class RawLabelCell(TypedDict):
    system: str
    name: str
    value: float | None
    reader: str | None


class BoxCell(TypedDict):
    label: str
    finding: str | None
    origin: str
    reader: str | None
    readers: list[str]
    x1: float
    y1: float
    x2: float
    y2: float
    u1: float
    v1: float
    u2: float
    v2: float


class PolygonCell(TypedDict):
    label: str
    origin: str
    rings: list[list[list[float]]]
    rings_unit: list[list[list[float]]]


class RegionCell(TypedDict):
    region: str
    phrase: str
    attributes: list[str]
    comparison_cues: list[str]
    temporal_cues: list[str]
    severity_cues: list[str]


class QuestionCell(TypedDict):
    dataset: str
    where: str
    split: str
    question_type: str
    semantic_type: str | None
    template: str | None
    question: str
    answers: list[str]
    reference_study_id: str | None


class SectionCell(TypedDict):
    name: str
    text: str


class MentionCell(TypedDict):
    finding: str
    presence: int | None
    laterality: str | None
    zones: list[str]
    severity_min: int | None
    severity_max: int | None
    severity_scale: str | None
    temporal: str | None
    sentence: str
    span_start: int
    span_end: int


class FindingLabelCell(TypedDict):
    name: str
    value: float | None


class AnnotationRow(TypedDict):
    image_key: str
    source: str
    split: str
    subject_id: str | None
    study_id: str | None
    view: str | None
    study_datetime: str | None
    annotation_sources: list[str]
    findings: list[FindingCell]
    raw_labels: list[RawLabelCell]
    boxes: list[BoxCell]
    polygons: list[PolygonCell]
    regions: list[RegionCell]
    questions: list[QuestionCell]
    report_text: str | None
    report_language: str | None
    report_english: str | None
    report_translation: str | None
    sections: list[SectionCell]
    mentions: list[MentionCell]
    findings_labels: list[FindingLabelCell] | None
    attribute_prompt: str | None
    severity_ordinal: float | None
    severity_bucket: str | None
    severity_tfidf: float | None  # None until the build has fitted the IDF table
    ctr: float | None
    ctr_band: str | None
    ptx_ratio: float | None
    ptx_side: str | None
    ptx_band: str | None
    provenance: str  # JSON object


# ---------------------------------------------------------------- instructions

# "from" is a Python keyword, hence the functional form.
Turn = TypedDict("Turn", {"from": str, "value": str})


class InstructionRow(TypedDict):
    id: str
    profile: str
    task: str
    source: str
    split: str
    image_keys: list[str]
    conversations: list[Turn]
    target: str  # JSON, the structured answer
    template_id: str


# ---------------------------------------------------------------- rejects and vq


class RejectRow(TypedDict):
    key: str
    source: str
    stage: str
    kind: str
    level: str
    reason: str
    detail: str


def reject_row(reject: Reject) -> RejectRow:
    """A :class:`Reject` as a row of the ``rejects`` table."""
    return RejectRow(
        key=reject.key,
        source=reject.source,
        stage=reject.stage,
        reason=reject.reason,
        detail=reject.detail,
        kind=reject.kind,
        level=reject.level,
    )


class VqRow(TypedDict):
    image_key: str
    codes: npt.NDArray[np.int16]  # CODES_PER_IMAGE codes, row-major over the grid
    lm_ids: npt.NDArray[np.int32]  # the LM vocabulary ids of the codes
    tokenizer: str


ROW_TYPES: dict[str, type] = {
    "images": ImageRow,
    "annotations": AnnotationRow,
    "instructions": InstructionRow,
    "rejects": RejectRow,
    "vq": VqRow,
}
"""The row type of each table of :data:`schemas.tables.TABLES`."""
