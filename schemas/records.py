"""Canonical records that flow between pipeline stages.

Readers (``transforms.sources.*``) emit :class:`SourceRecord` (one per image a source owns),
:class:`AnnotationRecord` (one per annotation row that lands on another source's image) and
:class:`Reject`. All geometry here is in ORIGINAL image pixels, x = column, y = row.
Letterbox-space and normalised coordinates are added later by the geometry stage.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Presence = Literal[1, 0, -1] | None
"""1 positive, 0 negative, -1 uncertain, None not annotated (never silently 0)."""

OfficialSplit = Literal["train", "validate", "test"]
"""A source's own split as read (MIMIC-CXR's split file says ``validate``); never an output value."""
RleConvention = Literal["chexmask", "siim"]

IMAGE_SOURCES = ("mimic", "vindr", "siim", "padchest")
ANNOTATION_SOURCES = ("chexmask", "imagenome", "mimic_cxr_vqa", "mimic_diff_vqa")
ALL_SOURCES = IMAGE_SOURCES + ANNOTATION_SOURCES


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class RawLabel(Record):
    """A label exactly as the source states it (spelling normalised only where the format says)."""

    system: str  # e.g. "mimic-chexpert", "mimic-negbio", "vindr-image-labels", "padchest-labels", "siim-rle"
    name: str
    value: float | None  # 1.0 / 0.0 / -1.0, None when the source leaves it blank
    reader: str | None = None  # VinDr rad_id, PadChest MethodLabel, ...


class Box(Record):
    label: str  # source spelling, e.g. VinDr "Nodule/Mass", ImaGenome "right lung"
    x1: float
    y1: float
    x2: float
    y2: float
    origin: str  # e.g. "vindr-annotations", "imagenome-scene-graph"
    reader: str | None = None  # kept per reader, never fused silently
    where: str | None = None  # provenance for reject details, e.g. "annotations/annotations_train.csv row 17"


class MaskRLE(Record):
    label: str  # "Pneumothorax" (SIIM), "right lung", "left lung", "heart" (CheXmask)
    rle: str  # as in the file, without surrounding whitespace; "" means an empty mask
    convention: RleConvention
    height: int
    width: int
    origin: str


class Polygon(Record):
    label: str
    rings: list[list[tuple[float, float]]]  # each ring a closed contour of (x, y) points
    origin: str


class RegionAttributes(Record):
    """One phrase about one anatomical region (Chest ImaGenome ``attributes`` entries)."""

    region: str
    phrase: str
    attributes: list[str]  # "<category>|<yes|no>|<name>"
    comparison_cues: list[str] = Field(default_factory=list)
    temporal_cues: list[str] = Field(default_factory=list)
    severity_cues: list[str] = Field(default_factory=list)


class NativeQuestion(Record):
    """One question with its answer as a VQA dataset states it about the image it lands on (MIMIC-CXR-VQA,
    Medical-Diff-VQA: ``docs/formats/mimic-cxr-vqa.md``, ``docs/formats/medical-diff-vqa.md``)."""

    dataset: Literal["mimic-cxr-vqa", "mimic-diff-vqa"]
    where: str  # file and row: "dataset/train.json #13280", "mimic_pair_questions.csv row 17"
    split: str  # the dataset's own split as written ("valid", "val", ...); rows never move out of it
    question_type: str  # MIMIC-CXR-VQA content_type, Medical-Diff-VQA question_type
    semantic_type: str | None = None  # MIMIC-CXR-VQA verify / choose / query
    template: str | None = None  # MIMIC-CXR-VQA template ("Is there ${attribute} in the ${object}?")
    question: str
    answers: list[str]  # MIMIC-CXR-VQA's answer list; Medical-Diff-VQA's one answer
    reference_study_id: str | None = None  # Medical-Diff-VQA ref_id: the study the main image is compared with


class Landmarks(Record):
    """Ordered contour points of one organ (CheXmask: 44 right lung, 50 left lung, 26 heart)."""

    label: str
    points: list[tuple[float, float]]  # (x, y) pixel indices in the original image
    origin: str

    def as_polygon(self) -> Polygon:
        return Polygon(label=self.label, rings=[list(self.points)], origin=self.origin)


class Finding(Record):
    """One harmonised (CheXpert-14) observation of one image, with what it was derived from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    presence: Presence
    systems: list[str] = Field(default_factory=list)  # systems that gave this observation a value
    raw: list[str] = Field(default_factory=list)  # "system:name=value", plus "@reader" when known


class AttributeMention(Record):
    """A finding mentioned in report text with its attributes, and where it was said."""

    finding: str
    presence: Presence
    laterality: Literal["left", "right", "bilateral"] | None = None
    zones: list[str] = Field(default_factory=list)  # e.g. "lower", "apical", "retrocardiac"
    severity: tuple[int, int] | None = None  # ordinal range 0 trace .. 3 large/severe
    severity_scale: Literal["size", "severity"] | None = None
    temporal: str | None = None  # "new", "worsened", "improved", "no change", "resolved", "chronic"
    sentence: str
    span: tuple[int, int]  # character offsets into the report text

    @classmethod
    def from_row(cls, row: dict) -> AttributeMention:
        """A ``mentions`` item of an annotations-table row, unvalidated (it was validated when made)."""
        return cls.model_construct(
            finding=row["finding"],
            presence=row["presence"],
            laterality=row["laterality"],
            zones=row["zones"],
            severity=None if row["severity_min"] is None else (row["severity_min"], row["severity_max"]),
            severity_scale=row["severity_scale"],
            temporal=row["temporal"],
            sentence=row["sentence"],
            span=(row["span_start"], row["span_end"]),
        )


class Report(Record):
    text: str  # verbatim file text
    language: Literal["en", "es-stemmed"]
    origin: str  # relative path or column the text came from


class ImageRef(Record):
    image_key: str  # "<source>/<native id>"
    source: str
    native_id: str
    uri: str  # local path or gs:// URI of the image bytes
    format: Literal["dicom", "png", "jpeg"]
    subject_id: str | None = None  # patient; None where the source has none (VinDr)
    study_id: str | None = None
    view: str | None = None  # e.g. "PA", "AP", "LATERAL", "LL"
    study_datetime: str | None = None  # ISO 8601, from the source's own date/time fields
    official_split: OfficialSplit | None = None  # source spelling; see transforms/splits.py
    expected_width: int | None = None  # what the metadata claims; checked against the decoded image
    expected_height: int | None = None


class SourceRecord(Record):
    image: ImageRef
    raw_labels: list[RawLabel] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)
    masks: list[MaskRLE] = Field(default_factory=list)
    polygons: list[Polygon] = Field(default_factory=list)
    report: Report | None = None
    provenance: dict[str, str] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.image.image_key


class AnnotationRecord(Record):
    """An annotation that belongs to an image owned by another source (CheXmask, ImaGenome)."""

    target_key: str  # image_key of the annotated image, e.g. "mimic/<dicom_id>"
    source: str  # one of ANNOTATION_SOURCES
    native_id: str  # row/file identity inside the annotation source
    declared_width: int | None = None  # size the annotation claims for its image
    declared_height: int | None = None
    raw_labels: list[RawLabel] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)
    masks: list[MaskRLE] = Field(default_factory=list)
    polygons: list[Polygon] = Field(default_factory=list)
    landmarks: list[Landmarks] = Field(default_factory=list)
    regions: list[RegionAttributes] = Field(default_factory=list)
    questions: list[NativeQuestion] = Field(default_factory=list)
    quality: dict[str, float] = Field(default_factory=dict)  # e.g. {"dice_rca_mean": .9, "dice_rca_max": .93}
    split_hint: str | None = None  # the annotation source's own split, recorded, not authoritative
    provenance: dict[str, str] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.target_key


class Reject(Record):
    """A unit of input that did not become output, with the stage and reason. Never silent."""

    key: str
    source: str
    stage: str  # "read", "join", "split", "image", "geometry", "language", "tasks"
    reason: str  # short machine-friendly reason, e.g. "unreadable-dicom", "dice-below-threshold"
    detail: str = ""
    kind: Literal["rejected", "filtered"] = "rejected"  # filtered = a recorded, deliberate rule
    level: Literal["record", "item"] = "record"  # item = one box/mask/label inside a record that survives


ReaderOutput = SourceRecord | AnnotationRecord | Reject
