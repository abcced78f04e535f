"""SIIM-ACR Pneumothorax (Kaggle 2019, stage 1) writer (``docs/formats/siim-acr.md``).

``dicom-images-train/<Study>/<Series>/<SOP>.dcm``: 1024 x 1024, 8-bit MONOCHROME2, JPEG baseline,
Secondary Capture, ``PatientID`` = ``PatientName`` = a UUID, ``PatientAge`` a bare number, the
1901-01-01 placeholder date. ``train-rle.csv`` in the stage-1 spelling: header
``ImageId, EncodedPixels``, values with a leading space, `` -1`` for negatives, and one row per
pneumothorax component (relative, column-major, 0-based RLE) so multi-row images must be unioned.
Every seventh image belongs to the previous image's patient, as NIH patients have several images.

Each header also carries fake PHI (``phi.py``: birth date, MRN, accession, institution, staff and an
acquisition date; PatientName stays the UUID, as in the real files), listed per image in the truth as
``planted_phi``; no reader may pass it on.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from pipelines.synth import anatomy, output, phi
from pipelines.synth.cases import ImageCase, finding_details, rng_for, stable_int
from transforms.masks import rle_encode

UID_STEM = "1.2.276.0.7230010.3.1"


def instance_uids(seed: int, index: int) -> tuple[str, str, str]:
    """(study, series, instance) UIDs sharing one stem, as the SIIM files do (…3.1.2 / 3.1.3 / 3.1.4)."""
    process = 1000 + stable_int(seed, "siim-process", index) % 30000
    stamp = 1517875000 + stable_int(seed, "siim-stamp", index) % 1000
    instance = 100002 + stable_int(seed, "siim-instance", index) % 899990
    stem = f"8323329.{process}.{stamp}"
    return (
        f"{UID_STEM}.2.{stem}.{instance - 1}",
        f"{UID_STEM}.3.{stem}.{instance - 2}",
        f"{UID_STEM}.4.{stem}.{instance}",
    )


def patient_uuid(seed: int, index: int) -> str:
    owner = index - 1 if index % 7 == 6 else index
    return str(
        uuid.UUID(
            hex=f"{stable_int(seed, 'siim-patient', owner):016x}{stable_int(seed, 'siim-patient-low', owner):016x}",
            version=4,
        )
    )


def planted_fields(case: ImageCase, patient: str, study_uid: str, seed: int) -> dict[str, str]:
    """The fake PHI of one image's header; a patient keeps one identity across images."""
    person = phi.patient(seed, "siim", patient, case.sex)
    return {
        **phi.dicom_fields(person, phi.visit(seed, "siim", study_uid), with_name=False),
        "AcquisitionDate": phi.fake_date(seed, "siim", study_uid, 2010, 8),
    }


def _dicom(
    case: ImageCase, uids: tuple[str, str, str], patient: str, view: str, jpeg: bytes, planted: dict[str, str]
) -> Dataset:
    study, series, instance = uids
    dataset = output.new_dataset(output.SECONDARY_CAPTURE, instance, JPEGBaseline8Bit)
    dataset.file_meta.ImplementationVersionName = "OFFIS_DCMTK_360"
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.SOPClassUID = output.SECONDARY_CAPTURE
    dataset.SOPInstanceUID = instance
    dataset.StudyDate, dataset.StudyTime = "19010101", "000000.00"
    dataset.Modality, dataset.ConversionType = "CR", "WSD"
    dataset.PatientName = dataset.PatientID = patient
    dataset.PatientSex = case.sex
    dataset.PatientAge = str(case.age)  # a bare number, not a DICOM AS string
    dataset.BodyPartExamined = "CHEST"
    dataset.ViewPosition = view
    dataset.SeriesDescription = f"view: {view}"
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = case.height, case.width
    dataset.PixelSpacing = [0.168, 0.168]
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    dataset.LossyImageCompression = "01"
    dataset.PixelData = encapsulate([jpeg])
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    phi.plant_dicom(dataset, planted)
    return dataset


def write(root: Path, cases: list[ImageCase], seed: int) -> dict[str, dict]:
    """Write the SIIM tree under ``root``; returns truth entries by image key."""
    truth: dict[str, dict] = {}
    lines = ["ImageId, EncodedPixels"]
    for case in cases:
        uids = instance_uids(seed, case.index)
        image_id = uids[2]
        patient = patient_uuid(seed, case.index)
        view = "AP" if case.index % 4 == 3 else "PA"
        rng = rng_for(seed, "siim-image", image_id)
        frontal = anatomy.build_frontal(
            case.findings, case.ctr_target, case.width, case.height, rng, pneumothorax_pockets=case.extra["pockets"]
        )
        image = anatomy.to_unsigned(anatomy.render_frontal(frontal, rng), 8)
        encoded, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not encoded:
            raise RuntimeError(f"OpenCV could not JPEG-encode SIIM image {image_id}")
        planted = planted_fields(case, patient, uids[0], seed)
        with output.deliberate_invalid_values():
            output.save_dicom(
                _dicom(case, uids, patient, view, jpeg.tobytes(), planted),
                root / "dicom-images-train" / uids[0] / uids[1] / f"{image_id}.dcm",
            )
        components = [mask for _, mask in frontal.lesions.get("Pneumothorax", [])]
        lines += [f"{image_id}, {rle_encode(mask, 'siim')}" for mask in components] or [f"{image_id}, -1"]
        truth[f"siim/{image_id}"] = {
            "source": "siim",
            "subject_id": patient,
            "study_id": uids[0],
            "view": view,
            "width": case.width,
            "height": case.height,
            "split": None,
            "findings": {"Pneumothorax": int(bool(components))},
            "finding_details": finding_details(case.findings),
            "ctr": round(frontal.ctr, 4),
            "ctr_band": frontal.ctr_band,
            "chexmask": None,
            "imagenome": False,
            "imagenome_gold": False,
            "pneumothorax_components": len(components),
            "pneumothorax_area": int(np.sum([mask.sum() for mask in components])),
            "lesion_boxes": {"Pneumothorax": [list(anatomy.box_of(mask)) for mask in components]} if components else {},
            "planted_phi": phi.plant_entries(planted),
        }
    output.write_text(root / "train-rle.csv", "\n".join(lines) + "\n")
    return truth
