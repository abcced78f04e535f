"""MIMIC-CXR reader on small native trees (real DICOM/JPG files, gzipped CSVs, reports beside study folders)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io as stdio
import logging
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plans import assert_beam_matches_serial
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from realdata import DATA

from schemas.records import Reject, SourceRecord
from transforms import io
from transforms.sources import mimic

OFFICIAL_EXAMPLE_REPORT = DATA / "mimic_cxr" / "official_example_report.txt"

METADATA_HEADER = [
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
]
LABELS = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]
REPORT = (
    "                                 FINAL REPORT\n"
    " EXAMINATION:  CHEST (PORTABLE AP)\n \n INDICATION:  ___ with dyspnea\n \n"
    " FINDINGS: \n \n No focal consolidation.  No pneumothorax.\n \n IMPRESSION: \n \n No acute process.\n"
)


@dataclass(frozen=True)
class Image:
    """One image as the metadata and split CSVs describe it."""

    dicom_id: str
    subject: str
    study: str
    view: str = "PA"
    rows: str = "64"
    columns: str = "48"
    study_date: str = "21500101"
    study_time: str = "120000.000"
    split: str = "train"

    def metadata_row(self) -> list[str]:
        return [
            self.dicom_id,
            self.subject,
            self.study,
            "CHEST (PA AND LAT)",
            self.view,
            self.rows,
            self.columns,
            self.study_date,
            self.study_time,
            "CHEST (PA AND LAT)",
            "postero-anterior",
            "Erect",
        ]

    def folder(self) -> str:
        return f"files/p{self.subject[:2]}/p{self.subject}/s{self.study}"


def fake_dicom_id(name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def write_dicom(path: Path, rows: int, columns: int) -> None:
    """A small real DICOM file (uncompressed 16-bit MONOCHROME2)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", "anonymous"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(rows * columns, dtype=np.uint16) % 4096).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_jpg(path: Path, rows: int, columns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", np.zeros((rows, columns), np.uint8))
    assert ok
    path.write_bytes(data.tobytes())


def write_csv(path: Path, header: list[str], rows: list[list[str]], gz: bool = True) -> None:
    buffer = stdio.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    data = buffer.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)


def build_tree(
    root: Path,
    images: list[Image],
    extension: str = ".dcm",
    without_file: tuple[Image, ...] = (),
    reports: dict[str, str] | None = None,
    chexpert: dict[str, dict[str, str]] | None = None,
    negbio: dict[str, dict[str, str]] | None = None,
    test_labeled: dict[str, dict[str, str]] | None = None,
    metadata_header: list[str] | None = None,
    gz: bool = True,
) -> None:
    """A MIMIC-CXR(-JPG) root: image files, per-image CSV rows, per-study label CSVs and reports."""
    root.mkdir(parents=True, exist_ok=True)
    for image in images:
        path = root / image.folder() / f"{image.dicom_id}{extension}"
        (write_dicom if extension == ".dcm" else write_jpg)(path, 64, 48)
    listed = images + list(without_file)
    suffix = ".csv.gz" if gz else ".csv"
    write_csv(
        root / f"mimic-cxr-2.0.0-metadata{suffix}",
        metadata_header or METADATA_HEADER,
        [image.metadata_row() for image in listed],
        gz,
    )
    write_csv(
        root / f"mimic-cxr-2.0.0-split{suffix}",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[i.dicom_id, i.study, i.subject, i.split] for i in listed],
        gz,
    )
    subject_of = {image.study: image.subject for image in listed}
    for stem, table in (("mimic-cxr-2.0.0-chexpert", chexpert), ("mimic-cxr-2.0.0-negbio", negbio)):
        if table is not None:
            order = list(reversed(LABELS))  # not alphabetical: columns must be found by name
            write_csv(
                root / f"{stem}{suffix}",
                ["subject_id", "study_id", *order],
                [[subject_of[study], study, *(cells.get(n, "") for n in order)] for study, cells in table.items()],
                gz,
            )
    if test_labeled is not None:
        write_csv(
            root / "mimic-cxr-2.1.0-test-set-labeled.csv",
            ["study_id", *LABELS],
            [[study, *(cells.get(n, "") for n in LABELS)] for study, cells in test_labeled.items()],
            gz=False,
        )
    for study, text in (reports or {}).items():
        folder = next(i.folder() for i in listed if i.study == study)
        (root / f"{folder}.txt").write_bytes(text.encode())


def read_all(root: Path) -> list:
    return list(mimic.read(str(root)))


def records_by_id(outputs: list) -> dict[str, SourceRecord]:
    return {o.image.native_id: o for o in outputs if isinstance(o, SourceRecord)}


def labels_of(record: SourceRecord, system: str) -> dict[str, float | None]:
    return {label.name: label.value for label in record.raw_labels if label.system == system}


# --------------------------------------------------------------------------------------------------------------


# Rows in the published metadata layout (docs/formats/mimic-cxr.md §3), with invented ids but the value
# shapes of the real file: two-view PA + LATERAL studies of 3056 x 2544, a portable AP study of 2705 x 2539
# with an empty PatientOrientationCodeSequence_CodeMeaning, and StudyTime written as a number that has lost
# its leading zero (71502.25 is 07:15:02.25).
PUBLISHED_LAYOUT_ROWS = """\
dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning
0a1b2c3d-11111111-22222222-33333333-44444401,10000099,50000011,CHEST (PA AND LAT),PA,3056,2544,21760311,194507.125,CHEST (PA AND LAT),postero-anterior,Erect
0a1b2c3d-11111111-22222222-33333333-44444402,10000099,50000011,CHEST (PA AND LAT),LATERAL,3056,2544,21760311,194507.125,CHEST (PA AND LAT),lateral,Erect
0a1b2c3d-11111111-22222222-33333333-44444403,10000099,50000022,CHEST (PA AND LAT),PA,3056,2544,21760402,121530.5,CHEST (PA AND LAT),postero-anterior,Erect
0a1b2c3d-11111111-22222222-33333333-44444404,10000099,50000022,CHEST (PA AND LAT),LATERAL,3056,2544,21760402,121530.5,CHEST (PA AND LAT),lateral,Erect
0a1b2c3d-11111111-22222222-33333333-44444405,10000099,50000033,CHEST (PORTABLE AP),AP,2705,2539,21760519,71502.25,CHEST (PORTABLE AP),antero-posterior,
"""


def test_published_metadata_layout_and_official_example_report(tmp_path):
    """Rows in the published 12-column layout drive a tree of matching files; the report beside the
    first study is the MIMIC-CXR authors' official example (tests/data/mimic_cxr/SOURCES.md)."""
    rows = list(csv.DictReader(stdio.StringIO(PUBLISHED_LAYOUT_ROWS)))
    assert list(rows[0]) == METADATA_HEADER and rows[-1]["PatientOrientationCodeSequence_CodeMeaning"] == ""
    images = [
        Image(
            r["dicom_id"],
            r["subject_id"],
            r["study_id"],
            r["ViewPosition"],
            r["Rows"],
            r["Columns"],
            r["StudyDate"],
            r["StudyTime"],
            "train",
        )
        for r in rows
    ]
    build_tree(tmp_path, images)
    metadata = tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz"
    metadata.write_bytes(gzip.compress(PUBLISHED_LAYOUT_ROWS.encode()))  # the rows verbatim, empty cell kept
    report_text = OFFICIAL_EXAMPLE_REPORT.read_bytes().decode()
    first = images[0]
    (tmp_path / f"{first.folder()}.txt").write_text(report_text, newline="")

    outputs = read_all(tmp_path)
    assert all(isinstance(o, SourceRecord) for o in outputs)
    assert [o.key for o in outputs] == sorted(f"mimic/{r['dicom_id']}" for r in rows)
    by_id = records_by_id(outputs)
    for row in rows:
        image = by_id[row["dicom_id"]].image
        assert (image.subject_id, image.study_id, image.view) == (
            row["subject_id"],
            row["study_id"],
            row["ViewPosition"],
        )
        assert (image.expected_width, image.expected_height) == (int(row["Columns"]), int(row["Rows"]))
        assert image.format == "dicom" and image.official_split == "train"
        subject, study = row["subject_id"], row["study_id"]
        assert image.uri == str(tmp_path / f"files/p{subject[:2]}/p{subject}/s{study}/{row['dicom_id']}.dcm")
    portable = next(r for r in rows if r["StudyTime"] == "71502.25")
    assert by_id[portable["dicom_id"]].image.study_datetime == "2176-05-19T07:15:02.250000"
    report = by_id[first.dicom_id].report
    assert report.text == report_text and report.language == "en"
    assert report.origin == f"{first.folder()}.txt"
    assert "\n EXAMINATION:" in report.text  # the one leading space per line survives
    same_study = [r for r in rows if r["study_id"] == first.study]
    assert all(by_id[r["dicom_id"]].report == report for r in same_study)
    assert all(by_id[r["dicom_id"]].report is None for r in rows if r["study_id"] != first.study)


def test_study_order_comes_from_datetime_not_ids(tmp_path):
    subject = "12345678"
    # ids run against time, and StudyTime lost its leading zeros (93000.5 is 09:30:00.5, before 10:15:00)
    studies = [
        Image(fake_dicom_id("a"), subject, "51000000", study_date="21500312", study_time="101500"),
        Image(fake_dicom_id("b"), subject, "52000000", study_date="21500312", study_time="93000.5"),
        Image(fake_dicom_id("c"), subject, "53000000", study_date="21491230", study_time="235959.999999"),
        Image(fake_dicom_id("d"), subject, "50000000", study_date="21500313", study_time="5"),
    ]
    build_tree(tmp_path, studies)
    records = [o for o in read_all(tmp_path) if isinstance(o, SourceRecord)]
    ordered = sorted(records, key=lambda r: r.image.study_datetime)
    assert [r.image.study_id for r in ordered] == ["53000000", "52000000", "51000000", "50000000"]
    assert [r.image.study_datetime for r in ordered] == [
        "2149-12-30T23:59:59.999999",
        "2150-03-12T09:30:00.500000",
        "2150-03-12T10:15:00",
        "2150-03-13T00:00:05",
    ]


def test_labels_by_name_per_study_on_every_image(tmp_path):
    pa, lateral = fake_dicom_id("pa"), fake_dicom_id("lat")
    other = fake_dicom_id("other")
    images = [
        Image(pa, "10000001", "50000001", split="test"),
        Image(lateral, "10000001", "50000001", view="LATERAL", split="test"),
        Image(other, "10000002", "50000002", split="validate"),
    ]
    chexpert = {"50000001": {"Cardiomegaly": "1.0", "Edema": "-1.0", "Pneumothorax": "0.0"}}
    negbio = {"50000001": {"Cardiomegaly": "1.0"}, "50000002": {"No Finding": "1.0"}}
    test_labeled = {"50000001": {"Edema": "0.0", "Support Devices": "1.0"}}
    build_tree(
        tmp_path, images, chexpert=chexpert, negbio=negbio, test_labeled=test_labeled, reports={"50000002": REPORT}
    )
    by_id = records_by_id(read_all(tmp_path))

    for dicom_id in (pa, lateral):
        record = by_id[dicom_id]
        cx = labels_of(record, "mimic-chexpert")
        assert set(cx) == set(LABELS)
        assert (cx["Cardiomegaly"], cx["Edema"], cx["Pneumothorax"], cx["No Finding"]) == (1.0, -1.0, 0.0, None)
        assert labels_of(record, "mimic-negbio")["Cardiomegaly"] == 1.0
        tl = labels_of(record, "mimic-test-labeled")
        assert (tl["Edema"], tl["Support Devices"], tl["Atelectasis"]) == (0.0, 1.0, None)
        assert record.image.official_split == "test"
    third = by_id[other]
    assert labels_of(third, "mimic-chexpert") == {}  # a study the labeler did not cover
    assert labels_of(third, "mimic-negbio")["No Finding"] == 1.0
    assert third.image.official_split == "validate"
    assert (third.report.text, third.report.origin) == (REPORT, "files/p10/p10000002/s50000002.txt")
    assert by_id[pa].report is None


def test_missing_rows_are_rejects_and_metadata_without_file_is_only_logged(tmp_path, caplog):
    complete = Image(fake_dicom_id("complete"), "10000001", "50000001")
    no_split = Image(fake_dicom_id("no-split"), "10000001", "50000001")
    no_meta = Image(fake_dicom_id("no-meta"), "10000001", "50000001")
    ghosts = (
        Image(fake_dicom_id("ghost1"), "10000003", "50000003"),
        Image(fake_dicom_id("ghost2"), "10000003", "50000003"),
    )
    build_tree(tmp_path, [complete, no_split, no_meta], without_file=ghosts)
    for stem, absent in (("mimic-cxr-2.0.0-split", no_split), ("mimic-cxr-2.0.0-metadata", no_meta)):
        path = tmp_path / f"{stem}.csv.gz"
        lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
        path.write_bytes(gzip.compress("".join(line for line in lines if absent.dicom_id not in line).encode()))

    with caplog.at_level(logging.DEBUG, logger=mimic.__name__):
        outputs = read_all(tmp_path)
    assert len(outputs) == 3  # one output per image file; the ghosts are not images
    reasons = {o.key: getattr(o, "reason", "ok") for o in outputs}
    assert reasons == {
        f"mimic/{complete.dicom_id}": "ok",
        f"mimic/{no_split.dicom_id}": "missing-split-row",
        f"mimic/{no_meta.dicom_id}": "missing-metadata-row",
    }
    without_file = [r.getMessage() for r in caplog.records if "but no image file" in r.getMessage()]
    assert len(without_file) == 2 and all(
        r.levelno == logging.DEBUG for r in caplog.records if "but no image file" in r.getMessage()
    )
    assert all(any(ghost.dicom_id in message for message in without_file) for ghost in ghosts)


def test_bad_values_are_rejected_one_by_one(tmp_path):
    def image(name: str, **changes: str) -> Image:
        return replace(Image(fake_dicom_id(name), "10000001", "50000001"), **changes)

    images = [
        image("bad-split", split="val"),
        image("bad-time", study_time="256000"),
        image("bad-date", study_date="2150-01-01"),
        image("bad-size", rows="tall"),
        image("wrong-subject", subject="10000009"),
        image("fine", view="", rows="", columns=""),
    ]
    build_tree(tmp_path, images, chexpert={"50000001": {"Edema": "2.0", "Fracture": "1.0"}})
    # the wrong-subject image lies in the folder of subject 10000001 while its metadata says 10000009
    wrong = next(i for i in images if i.subject == "10000009")
    moved = tmp_path / replace(wrong, subject="10000001").folder() / f"{wrong.dicom_id}.dcm"
    moved.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / wrong.folder() / f"{wrong.dicom_id}.dcm").rename(moved)

    outputs = read_all(tmp_path)
    record_level = [o for o in outputs if not (isinstance(o, Reject) and o.level == "item")]
    assert len(record_level) == len(images)
    reasons = {o.key.split("/")[1]: getattr(o, "reason", "ok") for o in record_level}
    assert reasons == {
        fake_dicom_id("bad-split"): "bad-split-value",
        fake_dicom_id("bad-time"): "bad-metadata-value",
        fake_dicom_id("bad-date"): "bad-metadata-value",
        fake_dicom_id("bad-size"): "bad-metadata-value",
        fake_dicom_id("wrong-subject"): "path-id-mismatch",
        fake_dicom_id("fine"): "ok",
    }
    fine = records_by_id(outputs)[fake_dicom_id("fine")]
    assert (fine.image.view, fine.image.expected_width, fine.image.expected_height) == (None, None, None)
    assert labels_of(fine, "mimic-chexpert")["Fracture"] == 1.0
    assert "Edema" not in labels_of(fine, "mimic-chexpert")
    (item,) = [o for o in outputs if isinstance(o, Reject) and o.level == "item"]
    assert (item.key, item.reason) == (f"mimic/{fake_dicom_id('fine')}", "bad-label-value")


def test_unreadable_report_or_row_costs_that_item_or_image_and_the_rest_is_read(tmp_path):
    subject = "10000001"
    empty, latin1, short, labelled = (Image(fake_dicom_id(n), subject, f"5000000{i}") for i, n in enumerate("abcd"))
    build_tree(
        tmp_path,
        [empty, latin1, short, labelled],
        reports={empty.study: "", labelled.study: REPORT},
        chexpert={labelled.study: {"Edema": "1.0"}, latin1.study: {"Edema": "0.0"}},
    )
    (tmp_path / f"{latin1.folder()}.txt").write_bytes(REPORT.encode() + " Réévalué.".encode("latin-1"))
    metadata = tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz"
    lines = gzip.decompress(metadata.read_bytes()).decode().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:4])  # the third data row loses its last eight cells
    metadata.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    chexpert = tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz"
    chexpert.write_bytes(gzip.compress(gzip.decompress(chexpert.read_bytes()) + f"{subject},{latin1.study}\n".encode()))
    outputs = read_all(tmp_path)
    by_id = records_by_id(outputs)
    problems = {(o.key.removeprefix("mimic/"), o.reason): o for o in outputs if isinstance(o, Reject)}
    assert set(by_id) == {empty.dicom_id, latin1.dicom_id, labelled.dicom_id}
    assert by_id[labelled.dicom_id].report.text == REPORT and labels_of(by_id[labelled.dicom_id], "mimic-chexpert")
    for image, reason, detail in (
        (empty, "empty-report", f"{empty.folder()}.txt: 0 bytes and no text"),
        (latin1, "undecodable-report", f"{latin1.folder()}.txt: not UTF-8 text: byte 0xe9 at offset {len(REPORT) + 2}"),
    ):
        reject = problems[(image.dicom_id, reason)]
        assert (reject.level, reject.stage, reject.detail) == ("item", "read", detail)
        assert by_id[image.dicom_id].report is None and by_id[image.dicom_id].provenance == {"report": reason}
    row = problems[(short.dicom_id, "malformed-row")]
    assert row.level == "record" and row.detail.endswith(
        "mimic-cxr-2.0.0-metadata.csv.gz row 3: 4 cells for 12 columns"
    )
    label_row = problems[(latin1.dicom_id, "malformed-row")]  # a second, cut-short label row of its study: an item
    assert (
        label_row.level == "item"
        and label_row.detail == "mimic-cxr-2.0.0-chexpert.csv.gz row 3: 2 cells for 16 columns"
    )


def test_jpg_tree_plain_csvs_and_spaced_headers(tmp_path):
    images = [Image(fake_dicom_id(str(i)), "19999999", "59999999", view="AP") for i in range(3)]
    build_tree(tmp_path, images, extension=".jpg", gz=False, metadata_header=[f" {name} " for name in METADATA_HEADER])
    outputs = read_all(tmp_path)
    assert [o.key for o in outputs] == sorted(f"mimic/{i.dicom_id}" for i in images)
    assert all(o.image.format == "jpeg" and o.image.uri.endswith(".jpg") for o in outputs)
    assert all(o.image.view == "AP" for o in outputs)


def test_dicom_wins_over_jpg_of_the_same_image(tmp_path):
    image = Image(fake_dicom_id("both"), "10000001", "50000001")
    build_tree(tmp_path, [image])
    write_jpg(tmp_path / image.folder() / f"{image.dicom_id}.jpg", 64, 48)
    record, duplicate = read_all(tmp_path)
    assert record.image.format == "dicom"
    assert (duplicate.key, duplicate.kind, duplicate.reason) == (record.key, "filtered", "duplicate-image-file")


def test_required_tables_missing_is_an_error(tmp_path):
    build_tree(tmp_path, [Image(fake_dicom_id("x"), "10000001", "50000001")])
    (tmp_path / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(mimic.MimicInputError, match="split"):
        read_all(tmp_path)


def test_the_report_is_read_once_per_study_and_beam_agrees(tmp_path, monkeypatch):
    """Three images of one study share its report, read once; a study without a report, a duplicate
    JPG, a bad row naming no image and a label row cut short all come out the same on the Beam graph."""
    subject = "10000001"
    study = [
        Image(fake_dicom_id(f"s1-{i}"), subject, "50000001", view=view)
        for i, view in enumerate(("PA", "LATERAL", "AP"))
    ]
    other = [
        Image(fake_dicom_id("s2"), "11000002", "50000002", split="test"),
        Image(fake_dicom_id("bad"), "11000002", "50000002", split="val"),
    ]
    build_tree(
        tmp_path,
        study + other,
        reports={"50000001": REPORT},
        chexpert={"50000001": {"Edema": "1.0", "Fracture": "2.0"}, "50000002": {"No Finding": "1.0"}},
    )
    write_jpg(tmp_path / study[0].folder() / f"{study[0].dicom_id}.jpg", 64, 48)
    chexpert = tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz"
    chexpert.write_bytes(gzip.compress(gzip.decompress(chexpert.read_bytes()) + b"11000002,50000002\n,\n"))
    reads = []
    monkeypatch.setattr(
        mimic,
        "read_report",
        lambda root, path: reads.append(path) or (mimic.Report(text=REPORT, language="en", origin=path), None),
    )

    outputs = list(mimic.read(str(tmp_path)))
    assert reads == [f"{study[0].folder()}.txt"]
    by_id = records_by_id(outputs)
    assert all(by_id[image.dicom_id].report.text == REPORT for image in study)
    assert {(o.key, o.reason, o.level) for o in outputs if isinstance(o, Reject)} == {
        ("mimic/", "malformed-row", "record"),
        (f"mimic/{study[0].dicom_id}", "duplicate-image-file", "record"),
        (f"mimic/{other[1].dicom_id}", "bad-split-value", "record"),
        (f"mimic/{other[0].dicom_id}", "malformed-row", "item"),
        *((f"mimic/{image.dicom_id}", "bad-label-value", "item") for image in study),
    }
    monkeypatch.undo()  # the Beam workers read the real report
    serial = assert_beam_matches_serial(mimic.plan(str(tmp_path)))
    assert sorted(repr(o.model_dump()) for o in serial) == sorted(repr(o.model_dump()) for o in outputs)


def test_every_file_under_files_is_in_exactly_one_listing_shard(tmp_path):
    """The group folders p10 … p19 and any other files/p* folder: each file is listed by one shard,
    and every file the layout's patterns name is listed."""
    paths = [f"files/p1{d}/p1{d}000001/s5000000{d}/{d}a.dcm" for d in range(10)]
    paths += [f"files/p1{d}/p1{d}000001/s5000000{d}.txt" for d in range(10)]
    paths += [
        "files/p10/p10000001/s50000001/deep/x.dcm",
        "files/p10/p10000001/s50000001/x.png",
        "files/p10/x.txt",
        "files/p/p1/s5/a.dcm",
        "files/p1/p1/s5/b.jpg",
        "files/p2/p2/s5.txt",
        "files/p20/p20000001/s5/c.dcm",
        "files/p1a/p1/s5/d.dcm",
        "files/p100/p10000001/s50000001/e.dcm",
        "files/p10x/p1/s5.txt",
        "files/px/p1/s5/f.jpg",
        "files/index.html",
        "files/q10/p10000001/s5/g.dcm",
    ]
    for path in paths:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    build_tree(tmp_path, [])
    plan = mimic.plan(str(tmp_path))
    listed = [path for listing in plan.listings for pattern in listing.patterns() for path in io.glob(pattern)]
    assert len(listed) == len(set(listed))
    layout = [
        path
        for pattern in ("files/p*/p*/s*/*.dcm", "files/p*/p*/s*/*.jpg", "files/p*/p*/s*.txt")
        for path in io.glob(str(tmp_path / pattern))
    ]
    assert len(layout) == 28 and set(layout) <= set(listed)
    keyed = [item for path in listed for item in plan.key_file("files", path)]
    assert sorted(
        io.join(str(tmp_path), item.item[0]) if item.tag == "report" else item.item[0][1] for item in keyed
    ) == sorted(layout)


@settings(max_examples=200, deadline=None)
@given(st.dates(date(2100, 1, 1), date(2200, 12, 31)), st.times(), st.booleans())
def test_study_datetime_restores_lost_leading_zeros(day, moment, gz_float):
    """Write StudyDate/StudyTime the way the published CSV has them (a number), read ISO back."""
    number = moment.hour * 10000 + moment.minute * 100 + moment.second
    time_text = str(number) + (f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else "")
    if gz_float and not moment.microsecond:
        time_text += ".0"
    expected = datetime.combine(day, moment.replace(tzinfo=None)).isoformat()
    assert mimic.study_datetime(day.strftime("%Y%m%d"), time_text) == expected


def test_study_datetime_edge_cases():
    assert mimic.study_datetime("21800506", "") == "2180-05-06"
    assert mimic.study_datetime("", "") is None
    assert mimic.study_datetime("21800506.0", "0") == "2180-05-06T00:00:00"
    for bad_date, bad_time in (("21801306", "1"), ("2180056", "1"), ("21800506", "1261"), ("21800506", "-5")):
        with pytest.raises(ValueError):
            mimic.study_datetime(bad_date, bad_time)
    assert time(8, 5, 56, 875000).isoformat() in mimic.study_datetime("21800723", "80556.875")


def test_label_value():
    assert [mimic.label_value(t) for t in ("1.0", "0.0", "-1.0", "", "1", "-1")] == [1.0, 0.0, -1.0, None, 1.0, -1.0]
    for bad in ("2.0", "yes", "0.5", "nan"):
        with pytest.raises(ValueError):
            mimic.label_value(bad)
