"""PadChest writer (``docs/formats/padchest.md``): 16-bit PNGs under ``<ImageDir>/`` and the 36-column
label CSV (``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz``).

Traps reproduced: an unnamed index column, ``ExposureTime`` without ``_DICOM``, lower-case
``labelCUIS``, 30-45-digit ``PatientID``/``StudyID`` strings, list strings with leading-space items
and double-spaced ``loc`` names (every third report), NumPy-repr CUI columns with ``''`` for terms
without a CUI, stemmed Spanish reports, ``MethodLabel`` Physician / RNN_model, ``ImageDir`` 54,
a missing ``PatientBirth`` now and then, and one report (case 5) whose label columns are null.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipelines.synth import anatomy, output, text
from pipelines.synth.cases import ImageCase, finding_details, rng_for, stable_int

LABEL_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
COLUMNS = (
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
)
"""The 35 named columns in file order; the file's first column is the unnamed index."""
LABEL_COLUMNS = ("Labels", "Localizations", "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS")
NULL_LABELS_CASE = 5
_DICOM_VIEW = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LATERAL"}


def long_decimal(digits: int, *key: object) -> str:
    """A decimal string of ``digits`` digits (no leading zero) from a stable hash."""
    value = "".join(str(stable_int(*key, part)) for part in range(4))
    return str(1 + int(value[0]) % 9) + value[1:digits]


def image_name(seed: int, case: int, view: int) -> str:
    """An ``ImageID`` in one of the three real shapes (``..._00-123-456.png``, ``..._3r162a.png``, ``...-2_...``)."""
    stem = long_decimal(45 if case % 3 == 0 else 38, seed, "padchest-image", case, view)
    tail = stable_int(seed, "padchest-tail", case, view)
    letters = "".join("abcdefghijklmnopqrstuvwxyz0123456789"[(tail >> (6 * i)) % 36] for i in range(6))
    if case % 3 == 0:
        return f"{stem}_{tail % 5:02d}-{tail % 197:03d}-{tail % 211:03d}.png"
    if case % 3 == 1:
        return f"{stem}_{letters}.png"
    return f"{stem}-2_{letters}.png"


def image_dir(seed: int, case: int) -> int:
    return 54 if case % 6 == 5 else stable_int(seed, "padchest-dir", case) % 51


def _projection(case: int) -> str:
    return "AP" if case % 7 == 2 else ("AP_horizontal" if case % 11 == 8 else "PA")


def write(root: Path, cases: list[ImageCase], seed: int) -> tuple[dict[str, dict], dict[str, anatomy.FrontalSummary]]:
    """Write the PadChest tree under ``root``; returns truth entries by image key and frontal summaries by ImageID."""
    truth: dict[str, dict] = {}
    frontals: dict[str, anatomy.FrontalSummary] = {}
    rows = []
    for case in cases:
        rng = rng_for(seed, "padchest-study", case.index)
        patient = long_decimal(int(rng.integers(30, 46)), seed, "padchest-patient", case.index)
        study = long_decimal(int(rng.integers(30, 40)), seed, "padchest-study", case.index)
        date = f"{int(rng.integers(2009, 2018))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        labels = text.padchest_report(case.findings, case.index)
        if case.index == NULL_LABELS_CASE:
            labels.update({column: None for column in LABEL_COLUMNS})  # type: ignore[misc]  # empty cells in the CSV
        present = {name: 1 for name, f in case.findings.items() if f.presence == 1}
        findings = {} if case.index == NULL_LABELS_CASE else (present or {"No Finding": 1})
        projections = [_projection(case.index)] + (["L"] if case.extra["lateral"] else [])
        folder = image_dir(seed, case.index)
        for view_number, projection in enumerate(projections):
            name = image_name(seed, case.index, view_number)
            image_rng = rng_for(seed, "padchest-image", name)
            summary = None
            if projection == "L":
                image = anatomy.render_lateral(case.width, case.height, case.findings, image_rng)
            else:
                frontal = anatomy.build_frontal(case.findings, case.ctr_target, case.width, case.height, image_rng)
                image = anatomy.render_frontal(frontal, image_rng)
                summary = frontals[name] = anatomy.summarize(frontal)
            path = root / str(folder) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), anatomy.to_unsigned(image, 16)):
                raise RuntimeError(f"OpenCV could not write the PadChest PNG {path}")
            rows.append(
                {
                    "ImageID": name,
                    "ImageDir": folder,
                    "StudyDate_DICOM": int(date),
                    "StudyID": study,
                    "PatientID": patient,
                    "PatientBirth": np.nan if case.index % 9 == 4 else float(int(date[:4]) - case.age),
                    "PatientSex_DICOM": case.sex,
                    "ViewPosition_DICOM": "" if case.index % 2 else _DICOM_VIEW[projection],
                    "Projection": projection,
                    "MethodProjection": "resnet-50.t7" if case.index % 4 == 1 else "Manual review of DICOM fields",
                    "Pediatric": "No",
                    "Modality_DICOM": "CR" if case.index % 3 else "DX",
                    "Manufacturer_DICOM": "PhilipsMedicalSystems"
                    if case.index % 2
                    else "Imaging Dynamics Company Ltd.",
                    "PhotometricInterpretation_DICOM": "MONOCHROME2",
                    "PixelRepresentation_DICOM": 0,
                    "PixelAspectRatio_DICOM": "['1', '1']" if case.index % 3 else "",
                    "SpatialResolution_DICOM": 0.143 if case.index % 2 else 0.2,
                    "BitsStored_DICOM": 12,
                    "WindowCenter_DICOM": 2047.0,
                    "WindowWidth_DICOM": 4095.0,
                    "Rows_DICOM": case.height,
                    "Columns_DICOM": case.width,
                    "XRayTubeCurrent_DICOM": int(rng.integers(200, 500)),
                    "Exposure_DICOM": int(rng.integers(2, 20)),
                    "ExposureInuAs_DICOM": float(int(rng.integers(2000, 20000))),
                    "ExposureTime": int(rng.integers(5, 40)),
                    "RelativeXRayExposure_DICOM": "" if case.index % 2 else float(int(rng.integers(100, 2000))),
                    "ReportID": 100000 + case.index,
                    "Report": labels["Report"],
                    "MethodLabel": "Physician" if case.index % 4 == 0 else "RNN_model",
                    **{column: labels[column] for column in LABEL_COLUMNS},
                }
            )
            truth[f"padchest/{name}"] = {
                "source": "padchest",
                "subject_id": patient,
                "study_id": study,
                "view": "LATERAL" if projection == "L" else projection[:2],
                "width": case.width,
                "height": case.height,
                "split": None,
                "findings": findings,
                "finding_details": finding_details(case.findings, set(findings)),
                "ctr": round(summary.ctr, 4) if summary else None,
                "ctr_band": summary.ctr_band if summary else None,
                "chexmask": None,
                "imagenome": False,
                "imagenome_gold": False,
                "image_dir": folder,
                "labels_missing": case.index == NULL_LABELS_CASE,
                "lesion_boxes": anatomy.lesion_boxes_json(summary),
                "planted_phi": [],  # PNGs carry no header, and the CSV holds only the dataset's own fields
            }
    output.write_csv(root / LABEL_FILE, pd.DataFrame(rows, columns=list(COLUMNS)), index=True)
    return truth, frontals
