"""Joining annotations onto their images and fixing each image's split.

An ``ImageUnit`` is one image with everything known about it; every row derived from it inherits
its split, so no patient can straddle splits through a derived task.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from schemas.records import AnnotationRecord, Reject, SourceRecord
from transforms.splits import assign_split


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
            yield Reject(key=ann.target_key, source=ann.source, stage="join", kind="filtered",
                         reason="annotated-image-not-in-corpus", detail=f"{ann.native_id}: no image {key} was read")
        return
    record, duplicates = images[0], images[1:]
    for dup in duplicates:
        yield Reject(key=key, source=dup.image.source, stage="join", reason="duplicate-image-key",
                     detail=f"{dup.image.uri} has the same key as {record.image.uri}")
    split, authority = assign_split(record.image)
    kept = []
    for ann in annotations:
        if ann.source == "imagenome" and ann.provenance.get("images_to_avoid") == "true" and split == "train":
            yield Reject(key=ann.target_key, source=ann.source, stage="split", kind="filtered",
                         reason="imagenome-gold-image-in-train",
                         detail=f"{ann.native_id}: gold images (images_to_avoid.csv) never enter training")
        else:
            kept.append(ann)
    yield ImageUnit(record=record, split=split, split_authority=authority, annotations=kept)
