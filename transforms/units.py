"""Joining annotations onto their images and fixing each image's split.

An ``ImageUnit`` is one image with everything known about it; every row derived from it inherits
its split, so no patient can straddle splits through a derived task. The image's own source decides
its split (MIMIC-CXR's official split for MIMIC images; CheXmask and Chest ImaGenome never move an
image), with one exception: a Chest ImaGenome gold-set image whose split is train is held out
entirely (:func:`held_out`), since gold images are ImaGenome's evaluation set. A VQA dataset's
question stays in the split its dataset gave it: one whose split is not its image's is filtered
(:func:`questions_in_split`), never moved.

After the image stage the units a task consumes (its ``Task``'s ``unit``, transforms/tasks) are annotation
rows grouped by :func:`task_groups`: an image (one row), a study (its rows) or a patient (its studies).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from schemas.records import AnnotationRecord, Reject, SourceRecord
from transforms.splits import NATIVE_QUESTION_SPLITS, assign_split
from transforms.tasks.multi import in_time_order


@dataclass
class ImageUnit:
    record: SourceRecord
    split: str
    split_authority: str
    annotations: list[AnnotationRecord] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.record.image.image_key


def join_image(
    key: str, images: Iterable[SourceRecord], annotations: Iterable[AnnotationRecord]
) -> Iterator[ImageUnit | Reject]:
    """The unit for one image_key, plus a reject for every input that cannot join."""
    images = sorted(images, key=lambda r: r.image.uri)
    annotations = sorted(annotations, key=lambda a: (a.source, a.native_id))
    if not images:
        for ann in annotations:
            yield Reject(
                key=ann.target_key,
                source=ann.source,
                stage="join",
                kind="filtered",
                reason="annotated-image-not-in-corpus",
                detail=f"{ann.native_id}{_asked(ann)}: no image {key} was read",
            )
        return
    record, duplicates = images[0], images[1:]
    for dup in duplicates:
        yield Reject(
            key=key,
            source=dup.image.source,
            stage="join",
            reason="duplicate-image-key",
            detail=f"{dup.image.uri} has the same key as {record.image.uri}",
        )
    split, authority = assign_split(record.image)
    gold = next((ann for ann in annotations if is_gold(ann)), None)
    if gold is not None and split == "train":
        yield from held_out(key, record, annotations, gold)
        return
    in_split = []
    for ann in annotations:
        in_split.append((yield from questions_in_split(ann, split)))
    yield ImageUnit(record=record, split=split, split_authority=authority, annotations=in_split)


def questions_in_split(annotation: AnnotationRecord, split: str):
    """Generator: a filtered item reject for each of the annotation's questions whose dataset puts it in
    another split than the image's; returns the annotation with the others."""
    kept = []
    for question in annotation.questions:
        if NATIVE_QUESTION_SPLITS.get(question.split) == split:
            kept.append(question)
            continue
        yield Reject(
            key=annotation.target_key,
            source=annotation.source,
            stage="split",
            kind="filtered",
            level="item",
            reason="vqa-split-differs",
            detail=f"{question.where}: {question.dataset} puts it in {question.split}, the image is in {split}",
        )
    if len(kept) == len(annotation.questions):
        return annotation
    return annotation.model_copy(update={"questions": kept})


def is_gold(annotation: AnnotationRecord) -> bool:
    """An annotation that marks its image as a Chest ImaGenome gold-set image (``images_to_avoid.csv``)."""
    return annotation.source == "imagenome" and annotation.provenance.get("images_to_avoid") == "true"


def held_out(
    key: str, record: SourceRecord, annotations: list[AnnotationRecord], gold: AnnotationRecord
) -> Iterator[Reject]:
    """A gold-set image whose own split is train never enters training: neither the image nor any of
    its annotations is written anywhere. One filtered reject for the image and one per annotation."""
    why = f"{gold.native_id}: Chest ImaGenome gold images (images_to_avoid.csv) never enter training"
    yield Reject(
        key=key,
        source=record.image.source,
        stage="split",
        kind="filtered",
        reason="imagenome-gold-image-in-train",
        detail=why,
    )
    for ann in annotations:
        yield Reject(
            key=ann.target_key,
            source=ann.source,
            stage="split",
            kind="filtered",
            reason="imagenome-gold-image-in-train",
            detail=f"{ann.native_id}{_asked(ann)}: annotates a held-out image; {why}",
        )


def _asked(annotation: AnnotationRecord) -> str:
    """What an annotation that is lost whole takes with it, when it carries a VQA dataset's questions."""
    if not annotation.questions:
        return ""
    return f" ({len(annotation.questions)} question(s): {', '.join(q.where for q in annotation.questions)})"


def group_rows(group) -> list[dict]:
    """The annotation rows of an image, study or patient group, in group order."""
    if isinstance(group, dict):
        return [group]
    return [row for member in group for row in group_rows(member)]


def task_groups(rows: list[dict]):
    """``(unit, group)`` for every image, study (rows by image key) and patient (studies in time
    order) among one shard's annotation rows."""
    studies = defaultdict(list)
    for row in rows:
        yield "image", row
        if row["study_id"] is not None:
            studies[(row["source"], row["study_id"])].append(row)
    patients = defaultdict(list)
    for key in sorted(studies):
        study = sorted(studies[key], key=lambda a: a["image_key"])
        yield "study", study
        if study[0]["subject_id"] is not None:
            patients[(study[0]["source"], study[0]["subject_id"])].append(study)
    for key in sorted(patients):
        yield "patient", in_time_order(patients[key])
