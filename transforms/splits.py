"""Split assignment: official split first, otherwise a stable patient-wise hash.

Authorities recorded with each image: "official" (the source's own split), "official+carved"
(a validation set carved from an official train split by hash, VinDr-CXR), "patient-hash".
"""

from __future__ import annotations

import manifests
from schemas.records import ImageRef
from transforms.hashing import stable_fraction

SPLIT_ORDER = ("train", "validate", "test")


def patient_key(image: ImageRef) -> str:
    """The unit that must never straddle splits. VinDr has no patient id: each image is its own."""
    if image.subject_id:
        return f"{image.source}/{image.subject_id}"
    return image.image_key


def hashed_split(patient: str, ratios: dict[str, float] | None = None) -> str:
    ratios = ratios or manifests.load("splits.yaml")["ratios"]
    total = sum(ratios[name] for name in SPLIT_ORDER)
    point = stable_fraction("split", patient) * total
    edge = 0.0
    for name in SPLIT_ORDER:
        edge += ratios[name]
        if point < edge:
            return name
    return SPLIT_ORDER[-1]


def assign_split(image: ImageRef) -> tuple[str, str]:
    """(split, authority): the source's official split, else the patient-wise hash."""
    if image.official_split:
        carve = manifests.load("splits.yaml").get("validate_from_train", {}).get(image.source, 0.0)
        if image.official_split == "train" and carve:
            if stable_fraction("validate-from-train", patient_key(image)) < carve:
                return "validate", "official+carved"
            return "train", "official+carved"
        return image.official_split, "official"
    return hashed_split(patient_key(image)), "patient-hash"
