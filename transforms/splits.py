"""Split assignment: official split first, otherwise a stable patient-wise hash.

Output splits are named as Hugging Face ``datasets`` names them: ``train``, ``validation``, ``test``
(:data:`SPLIT_ORDER`). Sources keep their own spelling up to here (MIMIC-CXR's split file says
``validate``, and ``ImageRef.official_split`` holds it as read); :func:`assign_split` is the one
place where a source's split becomes an output split (:data:`OFFICIAL_TO_OUTPUT`).

Authorities recorded with each image: "official" (the source's own split), "official+carved"
(a validation set carved from an official train split by hash, VinDr-CXR), "patient-hash".
"""

from __future__ import annotations

import manifests
from schemas.records import ImageRef
from transforms.hashing import stable_fraction

SPLIT_ORDER = ("train", "validation", "test")
"""Output split names, in display order: the names ``datasets`` expects (``split="validation"``)."""

OFFICIAL_TO_OUTPUT = {"train": "train", "validate": "validation", "test": "test"}
"""A source's official split (as ``ImageRef.official_split`` holds it) -> the output split."""

NATIVE_QUESTION_SPLITS = {"train": "train", "valid": "validation", "val": "validation", "test": "test"}
"""A VQA dataset's own split as written (MIMIC-CXR-VQA ``valid``, Medical-Diff-VQA ``val``) -> the output split."""

CARVE_SALT = "validate-from-train"
"""Hash salt of the VinDr-CXR validation carve; kept as first spelled so the same images are carved."""


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
    """(output split, authority): the source's official split mapped to its output name (MIMIC-CXR's
    ``validate`` -> ``validation``), with VinDr-CXR's validation carved from its official train, else
    the patient-wise hash."""
    if image.official_split:
        split = OFFICIAL_TO_OUTPUT[image.official_split]
        carve = manifests.load("splits.yaml").get("validation_from_train", {}).get(image.source, 0.0)
        if split == "train" and carve:
            if stable_fraction(CARVE_SALT, patient_key(image)) < carve:
                return "validation", "official+carved"
            return "train", "official+carved"
        return split, "official"
    return hashed_split(patient_key(image)), "patient-hash"
