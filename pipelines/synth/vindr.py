"""VinDr-CXR (PhysioNet 1.0.0) writer (``docs/formats/vindr-cxr.md``).

``train/`` images are read by 3 of the 17 radiologists (``rad_id`` R1..R17): two always mark every
true finding, the third misses some and sometimes marks a one-reader false positive; boxes jitter
between readers. ``test/`` images carry one consensus row set without ``rad_id``. Traps
reproduced: ``.dicom`` files named by the MD5 of an original SOP Instance UID, a whitelisted header
without any patient/study/SOP identifiers or view, MONOCHROME1 on every third image, JPEG 2000 lossless on
every fourth, ``Other diseases`` (train) vs ``Other disease`` (test), ``No finding`` rows with
empty coordinates, ``PatientAge`` sometimes without its unit letter.

Beyond the whitelist, each header also carries fake PHI the real de-identification deletes
(``phi.py``: patient name, birth date, MRN, accession, institution, staff, study and series dates),
listed per image in the truth as ``planted_phi``; no reader may pass it on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless

from pipelines.synth import anatomy, output, phi
from pipelines.synth.cases import ImageCase, finding_details, rng_for

LOCAL_LABELS = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Clavicle fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged PA",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Lung cavity",
    "Lung cyst",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Other lesion",
)
GLOBAL_LABELS = ("COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")
TEST_SPELLING = {"Other diseases": "Other disease"}

BOX_CLASSES = {
    "Cardiomegaly": "Cardiomegaly",
    "Pleural Effusion": "Pleural effusion",
    "Pneumothorax": "Pneumothorax",
    "Lung Lesion": "Nodule/Mass",
    "Consolidation": "Consolidation",
    "Lung Opacity": "Lung Opacity",
    "Atelectasis": "Atelectasis",
    "Edema": "Edema",
    "Enlarged Cardiomediastinum": "Aortic enlargement",
    "Pleural Other": "Pleural thickening",
    "Fracture": "Rib fracture",
}
"""Case finding -> VinDr local label drawn as a box from the finding's lesion mask."""

TRUTH_NAMES = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Pneumothorax": "Pneumothorax",
    "Pleural effusion": "Pleural Effusion",
    "Lung Opacity": "Lung Opacity",
    "Nodule/Mass": "Lung Lesion",
    "Pleural thickening": "Pleural Other",
    "Aortic enlargement": "Enlarged Cardiomediastinum",
    "Pneumonia": "Pneumonia",
    "Edema": "Edema",
    "Rib fracture": "Fracture",
}
"""VinDr label -> the CheXpert-14 name the truth file states (docs/language.md §8.4 plus its extensions)."""

_READERS = tuple(f"R{n}" for n in range(1, 18))


def image_id(seed: int, index: int) -> str:
    """32 lower-case hex characters: the MD5 of a (synthetic) original SOP Instance UID."""
    return hashlib.md5(output.dicom_uid(seed, "vindr-original-sop", index).encode()).hexdigest()


def split_of(index: int) -> str:
    return "test" if index % 5 == 4 else "train"


def _jitter(box: tuple[int, int, int, int], rng: np.random.Generator, width: int, height: int) -> list[float]:
    """A reader's version of a box: each edge moved by a few percent of the box size, whole pixels."""
    x1, y1, x2, y2 = box
    sx, sy = 0.03 * (x2 - x1), 0.03 * (y2 - y1)
    moved = [x1 + rng.normal(0, sx), y1 + rng.normal(0, sy), x2 + rng.normal(0, sx), y2 + rng.normal(0, sy)]
    u1, v1, u2, v2 = (float(round(v)) for v in moved)
    u1, u2 = float(np.clip(u1, 0, width - 2)), float(np.clip(u2, u1 + 1, width - 1))
    v1, v2 = float(np.clip(v1, 0, height - 2)), float(np.clip(v2, v1 + 1, height - 1))
    return [u1, v1, u2, v2]


def planted_fields(case: ImageCase, key: str, seed: int) -> dict[str, str]:
    """The fake PHI of one image's header (VinDr has no patient ids: the identity is per image)."""
    exam_date = phi.fake_date(seed, "vindr", key, 2018, 3)
    person = phi.patient(seed, "vindr", key, case.sex, int(exam_date[:4]) - case.age)  # agrees with PatientAge
    return {**phi.dicom_fields(person, phi.visit(seed, "vindr", key)), "StudyDate": exam_date, "SeriesDate": exam_date}


def _dicom(
    case: ImageCase,
    pixels: np.ndarray,
    bits: int,
    monochrome1: bool,
    compressed: bool,
    key: str,
    planted: dict[str, str],
) -> Dataset:
    """The de-identification whitelist plus the planted PHI; the file meta keeps the MD5 as instance UID."""
    dataset = output.new_dataset(output.DX_FOR_PRESENTATION, key, implementation_uid="1.2.3.4")
    age = f"{case.age:03d}Y" if case.index % 6 != 3 else f"{case.age:03d}"  # the unit letter is sometimes missing
    dataset.PatientSex = case.sex
    dataset.PatientAge = age
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    dataset.Rows, dataset.Columns = case.height, case.width
    dataset.PixelSpacing = [0.168, 0.168]
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, bits, bits - 1
    dataset.PixelRepresentation = 0
    dataset.WindowCenter, dataset.WindowWidth = str(1 << (bits - 1)), str(1 << bits)
    dataset.RescaleIntercept, dataset.RescaleSlope = "0", "1"
    dataset.LossyImageCompression = "00"
    dataset.PixelData = pixels.tobytes()
    phi.plant_dicom(dataset, planted)
    if compressed:
        dataset.compress(JPEG2000Lossless, pixels, generate_instance_uid=False)
    return dataset


def _reader_marks(case: ImageCase, boxes: dict[str, list], rng: np.random.Generator) -> tuple[list[str], list[list]]:
    """Three readers and their rows ``[rad_id, class, box or None]``.

    The one-reader false positive is ``Other lesion``, a label outside the CheXpert mapping, so
    the truth stays the same under any reader aggregation.
    """
    readers = [_READERS[i] for i in sorted(rng.choice(len(_READERS), size=3, replace=False).tolist())]
    has_global = "Pneumonia" in case.findings
    rows: list[list] = []
    for position, rad_id in enumerate(readers):
        marked = 0
        for label, label_boxes in boxes.items():
            if position == 2 and len(boxes) > 1 and rng.random() < 0.3:
                continue  # the third reader misses this finding
            rows += [[rad_id, label, _jitter(box, rng, case.width, case.height)] for box in label_boxes]
            marked += 1
        if position == 2 and rng.random() < 0.15:
            corner = (int(0.3 * case.width), int(0.2 * case.height), int(0.36 * case.width), int(0.26 * case.height))
            rows.append([rad_id, "Other lesion", _jitter(corner, rng, case.width, case.height)])
            marked += 1
        if not marked and not has_global:
            rows.append([rad_id, "No finding", None])
    return readers, rows


def _label_row(labels: set[str], spelling: dict[str, str]) -> dict[str, int]:
    names = LOCAL_LABELS + GLOBAL_LABELS
    return {spelling.get(name, name): int(name in labels) for name in names}


def write(root: Path, cases: list[ImageCase], seed: int) -> tuple[dict[str, dict], dict[str, anatomy.FrontalSummary]]:
    """Write the VinDr tree under ``root``; returns truth entries by image key and frontal summaries by image_id."""
    truth: dict[str, dict] = {}
    frontals: dict[str, anatomy.FrontalSummary] = {}
    boxes_rows: dict[str, list[list]] = {"train": [], "test": []}
    label_rows: dict[str, list[dict]] = {"train": [], "test": []}
    for case in cases:
        key = image_id(seed, case.index)
        split = split_of(case.index)
        rng = rng_for(seed, "vindr-image", key)
        frontal = anatomy.build_frontal(case.findings, case.ctr_target, case.width, case.height, rng)
        summary = frontals[key] = anatomy.summarize(frontal)
        image = anatomy.render_frontal(frontal, rng)
        monochrome1 = case.index % 3 == 1
        bits = 14 if case.index % 2 == 0 else 12
        pixels = anatomy.to_unsigned(1.0 - image if monochrome1 else image, bits)
        compressed = case.index % 4 == 2
        planted = planted_fields(case, key, seed)
        with output.deliberate_invalid_values():
            output.save_dicom(
                _dicom(case, pixels, bits, monochrome1, compressed, key, planted), root / split / f"{key}.dicom"
            )
        boxes = {
            BOX_CLASSES[name]: [box for _, box in parts]
            for name, parts in summary.lesion_boxes.items()
            if name in BOX_CLASSES and parts
        }
        true_labels = set(boxes) | ({"Pneumonia"} if "Pneumonia" in case.findings else set())
        if not true_labels:
            true_labels = {"No finding"}
        if split == "train":
            readers, marks = _reader_marks(case, boxes, rng)
            for rad_id, label, box in marks:
                boxes_rows["train"].append([key, rad_id, label, *(box or [None] * 4)])
            for rad_id in readers:
                reader_labels = {label for reader, label, _ in marks if reader == rad_id}
                if "Pneumonia" in case.findings:
                    reader_labels.add("Pneumonia")
                label_rows["train"].append({"image_id": key, "rad_id": rad_id, **_label_row(reader_labels, {})})
        else:
            for label, label_boxes in boxes.items():
                for box in label_boxes:
                    boxes_rows["test"].append([key, label, *(float(v) for v in box)])
            if true_labels == {"No finding"}:
                boxes_rows["test"].append([key, "No finding", None, None, None, None])
            label_rows["test"].append({"image_id": key, **_label_row(true_labels, TEST_SPELLING)})
        findings = {TRUTH_NAMES[label]: 1 for label in true_labels if label in TRUTH_NAMES}
        for label, name in TRUTH_NAMES.items():
            if label not in true_labels and name not in findings and name not in ("Edema", "Fracture"):
                findings[name] = 0
        if true_labels == {"No finding"}:
            findings["No Finding"] = 1
        truth[f"vindr/{key}"] = {
            "source": "vindr",
            "subject_id": None,
            "study_id": None,
            "view": "PA",
            "width": case.width,
            "height": case.height,
            "split": split,
            "findings": dict(sorted(findings.items())),
            "finding_details": finding_details(case.findings, {n for n, v in findings.items() if v == 1}),
            "ctr": round(summary.ctr, 4),
            "ctr_band": summary.ctr_band,
            "chexmask": None,
            "imagenome": False,
            "imagenome_gold": False,
            "photometric": "MONOCHROME1" if monochrome1 else "MONOCHROME2",
            "transfer_syntax": str(JPEG2000Lossless) if compressed else "1.2.840.10008.1.2.1",
            "lesion_boxes": anatomy.lesion_boxes_json(summary),
            "planted_phi": phi.plant_entries(planted),
        }
    coordinates = ["x_min", "y_min", "x_max", "y_max"]
    output.write_csv(
        root / "annotations" / "annotations_train.csv",
        pd.DataFrame(boxes_rows["train"], columns=["image_id", "rad_id", "class_name", *coordinates]),
    )
    output.write_csv(
        root / "annotations" / "annotations_test.csv",
        pd.DataFrame(boxes_rows["test"], columns=["image_id", "class_name", *coordinates]),
    )
    train_columns = ["image_id", "rad_id", *LOCAL_LABELS, *GLOBAL_LABELS]
    test_columns = ["image_id", *LOCAL_LABELS, *(TEST_SPELLING.get(n, n) for n in GLOBAL_LABELS)]
    output.write_csv(
        root / "annotations" / "image_labels_train.csv", pd.DataFrame(label_rows["train"], columns=train_columns)
    )
    output.write_csv(
        root / "annotations" / "image_labels_test.csv", pd.DataFrame(label_rows["test"], columns=test_columns)
    )
    return truth, frontals
