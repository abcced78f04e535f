"""MIMIC-CXR 2.0.0 writer (``docs/formats/mimic-cxr.md``): DICOMs, reports beside the study folders, and
the JPG release's CSVs (metadata with its 12 columns, split, chexpert, negbio) next to the lists.

Traps reproduced: numeric ``StudyTime`` that lost its leading zeros (a third of the studies happen
before 10:00), ``No Finding`` only ``1.0`` or blank, empty orientation for portable AP studies,
one leading space on every report line after ``FINAL REPORT``, MONOCHROME1 on every fifth image.

Not de-identified on purpose (``phi.py``): each DICOM header also names the patient, birth date,
hospital MRN, accession, institution and staff, and each report opens with an administrative header
block; the truth lists every planted value per image (``planted_phi``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydicom.dataset import Dataset

from pipelines.synth import anatomy, output, phi, text
from pipelines.synth.cases import CHEXPERT_14, Patient, Study, View, finding_details, rng_for, stated_labels

METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
LABEL_COLUMNS = tuple(sorted(CHEXPERT_14))
_VIEW_CODES = {
    "PA": ("R-10214", "postero-anterior"),
    "AP": ("R-10206", "antero-posterior"),
    "LATERAL": ("R-10232", "lateral"),
}
_PROCEDURES = {"CHEST (PA AND LAT)": "C11", "CHEST (PORTABLE AP)": "C12", "CHEST (PA)": "C10"}
_BITS = 12


def study_folder(study: Study) -> str:
    return f"files/p{study.subject_id[:2]}/p{study.subject_id}/s{study.study_id}"


def procedure(study: Study) -> str:
    frontal = [v.position for v in study.views if v.frontal]
    if frontal and frontal[0] == "AP":
        return "CHEST (PORTABLE AP)"
    return "CHEST (PA AND LAT)" if len(study.views) > 1 else "CHEST (PA)"


def numeric_study_time(hhmmss: str) -> str:
    """``"080556.875"`` -> ``"80556.875"``: the value as the CSV stores it, a float without leading zeros."""
    return repr(float(hhmmss))


def label_cell(value: int | None) -> str:
    return "" if value is None else f"{float(value):.1f}"


def _dicom(
    patient: Patient, study: Study, view: View, pixels, monochrome1: bool, seed: int, planted: dict[str, str]
) -> Dataset:
    sop_uid = output.dicom_uid(seed, "mimic-sop", view.image_id)
    dataset = output.new_dataset(output.DX_FOR_PRESENTATION, sop_uid)
    exam = procedure(study)
    code, meaning = _VIEW_CODES[view.position]
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.ImageType = ["DERIVED", "PRIMARY"]
    dataset.SOPClassUID = output.DX_FOR_PRESENTATION
    dataset.SOPInstanceUID = sop_uid
    dataset.StudyDate = dataset.SeriesDate = dataset.AcquisitionDate = study.date
    dataset.StudyTime = study.time
    dataset.Modality = "DX"
    dataset.PatientID = patient.subject_id
    dataset.PatientSex = patient.sex
    dataset.StudyInstanceUID = output.dicom_uid(seed, "mimic-study", study.study_id)
    dataset.SeriesInstanceUID = output.dicom_uid(seed, "mimic-series", study.study_id, view.position)
    dataset.ViewPosition = view.position
    dataset.ProcedureCodeSequence = output.code_sequence(_PROCEDURES[exam], "CLP", exam)
    dataset.AnatomicRegionSequence = output.code_sequence("T-D3000", "SNM3", "Chest")
    dataset.ViewCodeSequence = output.code_sequence(code, "SNM3", meaning)
    if view.position != "AP":
        dataset.PatientOrientationCodeSequence = output.code_sequence("F-10440", "SNM3", "Erect")
    dataset.Rows, dataset.Columns = view.height, view.width
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, _BITS, _BITS - 1
    dataset.PixelRepresentation = 0
    dataset.RescaleIntercept, dataset.RescaleSlope = "0", "1"
    dataset.PixelData = pixels.tobytes()
    phi.plant_dicom(dataset, planted)
    return dataset


def write(root: Path, patients: list[Patient], seed: int) -> tuple[dict[str, dict], dict[str, anatomy.FrontalSummary]]:
    """Write the MIMIC tree under ``root``; returns truth entries by image key and frontal summaries by dicom_id."""
    truth: dict[str, dict] = {}
    frontals: dict[str, anatomy.FrontalSummary] = {}
    records, study_rows, metadata, splits, labels = [], [], [], [], []
    image_number = 0
    for patient in patients:
        for study in patient.studies:
            folder = study_folder(study)
            report, report_phi = text.mimic_report_with_phi(patient, study, seed)
            output.write_text(root / f"{folder}.txt", report)
            person = phi.mimic_patient(seed, patient)
            dicom_phi = phi.dicom_fields(person, phi.visit(seed, "mimic", study.study_id))
            study_rows.append((patient.subject_id, study.study_id, f"{folder}.txt"))
            stated = stated_labels(study.findings)
            labels.append(
                {
                    "subject_id": patient.subject_id,
                    "study_id": study.study_id,
                    **{name: label_cell(stated.get(name)) for name in LABEL_COLUMNS},
                }
            )
            exam = procedure(study)
            for view in study.views:
                rng = rng_for(seed, "mimic-image", view.image_id)
                burned = "PORTABLE" if view.position == "AP" else None
                summary = None
                if view.frontal:
                    frontal = anatomy.build_frontal(study.findings, study.ctr_target, view.width, view.height, rng)
                    image = anatomy.render_frontal(frontal, rng, burned)
                    summary = frontals[view.image_id] = anatomy.summarize(frontal)
                else:
                    image = anatomy.render_lateral(view.width, view.height, study.findings, rng, burned)
                monochrome1 = image_number % 5 == 4
                pixels = anatomy.to_unsigned(1.0 - image if monochrome1 else image, _BITS)
                output.save_dicom(
                    _dicom(patient, study, view, pixels, monochrome1, seed, dicom_phi),
                    root / folder / f"{view.image_id}.dcm",
                )
                image_number += 1
                records.append((patient.subject_id, study.study_id, view.image_id, f"{folder}/{view.image_id}.dcm"))
                metadata.append(
                    (
                        view.image_id,
                        patient.subject_id,
                        study.study_id,
                        exam,
                        view.position,
                        view.height,
                        view.width,
                        study.date,
                        numeric_study_time(study.time),
                        exam,
                        _VIEW_CODES[view.position][1],
                        "" if view.position == "AP" else "Erect",
                    )
                )
                splits.append((view.image_id, study.study_id, patient.subject_id, patient.split))
                truth[f"mimic/{view.image_id}"] = {
                    "source": "mimic",
                    "subject_id": patient.subject_id,
                    "study_id": study.study_id,
                    "view": view.position,
                    "width": view.width,
                    "height": view.height,
                    "split": patient.split,
                    "findings": stated,
                    "finding_details": finding_details(study.findings),
                    "ctr": round(summary.ctr, 4) if summary else None,
                    "ctr_band": summary.ctr_band if summary else None,
                    "chexmask": None,
                    "imagenome": False,
                    "imagenome_gold": False,
                    "study_date": study.date,
                    "study_time": study.time,
                    "study_order": study.order,
                    "photometric": "MONOCHROME1" if monochrome1 else "MONOCHROME2",
                    "lesion_boxes": anatomy.lesion_boxes_json(summary),
                    "planted_phi": phi.plant_entries(dicom_phi) + report_phi,
                }
    output.write_csv(
        root / "cxr-record-list.csv.gz", pd.DataFrame(records, columns=["subject_id", "study_id", "dicom_id", "path"])
    )
    output.write_csv(
        root / "cxr-study-list.csv.gz", pd.DataFrame(study_rows, columns=["subject_id", "study_id", "path"])
    )
    output.write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", pd.DataFrame(metadata, columns=list(METADATA_COLUMNS)))
    output.write_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        pd.DataFrame(splits, columns=["dicom_id", "study_id", "subject_id", "split"]),
    )
    label_frame = pd.DataFrame(labels, columns=["subject_id", "study_id", *LABEL_COLUMNS])
    output.write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", label_frame)
    output.write_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", label_frame)
    return truth, frontals
