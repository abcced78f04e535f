"""PadChest reader on a hand-written 36-column label CSV (synthetic values, real layout and traps)."""

from __future__ import annotations

import csv
import gzip
import io as stdio
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from plans import assert_beam_matches_serial
from realdata import padchest_missing_image_ids, wheel_member

from schemas.records import Reject, SourceRecord
from transforms import io
from transforms.sources import padchest, reader
from transforms.sources.plan import table_rows

CSV_NAME = f"{padchest.LABEL_CSV}.csv"

# docs/formats/padchest.md §2: the real order, the unnamed index first
HEADER = [
    "",
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
]

IN_DIR = "100000000000000000000000000000000000000000001_00-001-001.png"
FLAT = "20000000000000000000000000000000002_ab12cd.png"
NULL_LABELS = "300000000000000000000000000000003-2_zz99yy.png"
DIR_MISMATCH = "400000000000000000000000000000000000000000004_00-002-002.png"
BAD_LABELS = "500000000000000000000000000000000000000000005_00-003-003.png"
NO_PATIENT = "600000000000000000000000000000000000000000006_00-004-004.png"
DUPLICATE = "700000000000000000000000000000000000000000007_00-005-005.png"
PATIENT = "123456789012345678901234567890123456789012345"  # 45 digits: a float would lose them
STUDY = "98765432109876543210987654321098765432109"
REPORT = " sin hallazg patologic relev . siluet cardiomediastin dentr limit normal ."


def row(image_id: str, **values: str) -> dict[str, str]:
    base = {
        "ImageID": image_id,
        "ImageDir": "0",
        "StudyDate_DICOM": "20140916",
        "StudyID": STUDY,
        "PatientID": PATIENT,
        "PatientBirth": "1950.0",
        "PatientSex_DICOM": "M",
        "ViewPosition_DICOM": "",
        "Projection": "PA",
        "MethodProjection": "Manual review of DICOM fields",
        "Pediatric": "No",
        "Modality_DICOM": "CR",
        "Manufacturer_DICOM": "PhilipsMedicalSystems",
        "PhotometricInterpretation_DICOM": "MONOCHROME2",
        "PixelRepresentation_DICOM": "0",
        "PixelAspectRatio_DICOM": "['1', '1']",
        "SpatialResolution_DICOM": "0.143",
        "BitsStored_DICOM": "12",
        "WindowCenter_DICOM": "2047.0",
        "WindowWidth_DICOM": "4095.0",
        "Rows_DICOM": "1760",
        "Columns_DICOM": "2140",
        "XRayTubeCurrent_DICOM": "250",
        "Exposure_DICOM": "4",
        "ExposureInuAs_DICOM": "4000",
        "ExposureTime": "16",
        "RelativeXRayExposure_DICOM": "",
        "ReportID": "4321",
        "Report": REPORT,
        "MethodLabel": "Physician",
        "Labels": "['normal']",
        "Localizations": "[]",
        "LabelsLocalizationsBySentence": "[['normal']]",
        "labelCUIS": "['C0205307']",
        "LocalizationsCUIS": "[]",
    }
    base.update(values)
    return base


ROWS = [
    row(
        IN_DIR,
        Labels="['pacemaker', ' chronic changes', 'cardiomegaly']",
        Localizations="['loc  cardiac', 'loc left']",
        LabelsLocalizationsBySentence=(
            "[['pacemaker'], ['chronic changes'], ['cardiomegaly', 'loc  cardiac', 'loc left']]"
        ),
        labelCUIS="['C0030163' 'C0742362' ''\n 'C0018800']",
        LocalizationsCUIS="['C1522601' '']",
    ),
    row(
        FLAT,
        ImageDir="54",
        Projection="L",
        MethodLabel="RNN_model",
        Labels="['']",
        LabelsLocalizationsBySentence="['COPD signs']",
        Rows_DICOM="3000",
        Columns_DICOM="2262.0",
        labelCUIS="[]",
        StudyDate_DICOM="20090101",
    ),
    row(
        NULL_LABELS,
        ImageDir="7",
        Labels="nan",
        Localizations="nan",
        LabelsLocalizationsBySentence="nan",
        labelCUIS="",
        LocalizationsCUIS="",
        Report="nan",
        Projection="AP_horizontal",
    ),
    row(DIR_MISMATCH, ImageDir="3"),
    row(BAD_LABELS, Labels="['normal', "),
    row(NO_PATIENT, PatientID=""),
    row(DUPLICATE),
    row(DUPLICATE, ImageDir="1"),
]


def write_label_csv(path: Path, rows: list[dict[str, str]], header: list[str] = HEADER) -> None:
    """As pandas ``to_csv`` writes it: unnamed index column, minimal quoting."""
    buffer = stdio.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for index, values in enumerate(rows):
        writer.writerow([str(index), *(values[HEADER[i]] for i in range(1, len(HEADER)))])
    if path.suffix == ".gz":
        with gzip.open(path, "wt", newline="") as handle:
            handle.write(buffer.getvalue())
    else:
        path.write_text(buffer.getvalue())


def write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.arange(48, dtype=np.uint16).reshape(6, 8) * 1300)  # 16-bit like PadChest


def make_tree(root: Path, csv_name: str = CSV_NAME, rows: list[dict[str, str]] = ROWS) -> Path:
    """Images for the good rows (in ImageDir folders and flat); none for other rows."""
    root.mkdir(parents=True, exist_ok=True)
    write_label_csv(root / csv_name, rows)
    for relative in (
        f"0/{IN_DIR}",
        FLAT,
        f"7/{NULL_LABELS}",
        f"5/{DIR_MISMATCH}",
        f"0/{BAD_LABELS}",
        f"0/{NO_PATIENT}",
        f"0/{DUPLICATE}",
    ):
        write_png(root / relative)
    return root


def test_records_and_rejects(tmp_path):
    outputs = list(padchest.read(str(make_tree(tmp_path))))
    keys = [o.key for o in outputs]
    assert keys == sorted(keys) and len(outputs) == len(ROWS)  # one output per CSV row
    found: dict[str, list] = {}
    for output in outputs:
        found.setdefault(output.key.removeprefix("padchest/"), []).append(output)

    record = found[IN_DIR][0]
    assert isinstance(record, SourceRecord)
    image = record.image
    assert (image.image_key, image.native_id, image.format) == (f"padchest/{IN_DIR}", IN_DIR, "png")
    assert image.uri == str(tmp_path / "0" / IN_DIR)
    assert (image.subject_id, image.study_id, image.view) == (PATIENT, STUDY, "PA")
    assert (image.study_datetime, image.expected_height, image.expected_width) == ("2014-09-16", 1760, 2140)
    assert image.official_split is None
    labels = [(r.system, r.name, r.value, r.reader) for r in record.raw_labels]
    assert labels == [
        ("padchest-labels", "pacemaker", 1.0, "Physician"),
        ("padchest-labels", "chronic changes", 1.0, "Physician"),  # leading space stripped
        ("padchest-labels", "cardiomegaly", 1.0, "Physician"),
        ("padchest-localizations", "cardiac", 1.0, "Physician"),  # 'loc  cardiac': prefix and double space gone
        ("padchest-localizations", "left", 1.0, "Physician"),
    ]
    assert record.report.text == REPORT and (record.report.language, record.report.origin) == ("es-stemmed", "Report")
    assert record.provenance["method_label"] == "Physician" and "labels" not in record.provenance
    assert json.loads(record.provenance["labels_localizations_by_sentence"]) == [
        ["pacemaker"],
        ["chronic changes"],
        ["cardiomegaly", "loc cardiac", "loc left"],
    ]
    assert json.loads(record.provenance["label_cuis"]) == ["C0030163", "C0742362", "", "C0018800"]  # wrapped repr
    assert json.loads(record.provenance["localization_cuis"]) == ["C1522601", ""]

    flat = found[FLAT][0]
    assert flat.image.uri == str(tmp_path / FLAT) and flat.image.view == "L"
    assert (flat.image.expected_height, flat.image.expected_width) == (3000, 2262)
    assert flat.raw_labels == [] and flat.provenance["labels"] == "empty"
    assert flat.provenance["method_label"] == "RNN_model"
    assert json.loads(flat.provenance["labels_localizations_by_sentence"]) == [["COPD signs"]]  # flat = one sentence

    null = found[NULL_LABELS][0]
    assert null.raw_labels == [] and null.provenance["labels"] == "missing" and null.report is None
    assert "labels_localizations_by_sentence" not in null.provenance and null.provenance["label_cuis"] == "[]"

    absent = found[DIR_MISMATCH][0]  # its PNG sits in folder 5, the CSV says 3
    assert isinstance(absent, Reject) and (absent.reason, absent.kind) == ("image-not-present", "filtered")
    assert found[BAD_LABELS][0].reason == "unparseable-row" and "not a list literal" in found[BAD_LABELS][0].detail
    bad_row = next(i for i, values in enumerate(ROWS, start=1) if values["ImageID"] == BAD_LABELS)
    assert found[BAD_LABELS][0].detail.startswith(f"{CSV_NAME} row {bad_row}: Labels: not a list literal")
    assert found[NO_PATIENT][0].reason == "unparseable-row" and "PatientID" in found[NO_PATIENT][0].detail
    first, again = found[DUPLICATE]  # the first row in file order is read, the repeat is a reject naming both rows
    assert isinstance(first, SourceRecord) and first.image.uri == str(tmp_path / "0" / DUPLICATE)
    assert isinstance(again, Reject) and again.reason == "duplicate-image-id"
    duplicate_rows = [number for number, values in enumerate(ROWS, start=1) if values["ImageID"] == DUPLICATE]
    assert f"row {duplicate_rows[1]}: ImageID {DUPLICATE} is already read from row {duplicate_rows[0]}" in again.detail


def test_known_broken_images_listed_but_absent_are_filtered_one_by_one(tmp_path):
    """The ImageIDs torchxrayvision drops as missing or broken PNGs (read from the wheel at test time):
    rows for them whose PNG is absent are filtered, each with its reason; the other rows are read."""
    broken = padchest_missing_image_ids()
    assert len(broken) == 21 and all(image_id.endswith(".png") for image_id in broken)
    root = make_tree(tmp_path, rows=[*ROWS, *(row(image_id, ImageDir="12") for image_id in broken)])
    found: dict[str, list] = {}
    for output in padchest.read(str(root)):
        found.setdefault(output.key.removeprefix("padchest/"), []).append(output)
    for image_id in broken:
        assert [(o.reason, o.kind, o.stage, o.source) for o in found[image_id]] == [
            ("image-not-present", "filtered", "read", "padchest")
        ]
    assert isinstance(found[IN_DIR][0], SourceRecord) and len(found) == len({r["ImageID"] for r in ROWS}) + 21


def test_unreadable_rows_and_unnamed_pngs_are_rejects_and_the_rest_is_read(tmp_path):
    root = make_tree(tmp_path)
    table = root / CSV_NAME
    cells = [[str(i), *(values[name] for name in HEADER[1:])] for i, values in enumerate(ROWS)]
    cells[0] = cells[0][:6]  # the IN_DIR row loses its last columns
    cells[1][HEADER.index("Report")] = "@@"
    buffer = stdio.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([HEADER, *cells])
    table.write_bytes(buffer.getvalue().encode().replace(b"@@", b"caf\xe9"))  # the FLAT row: not UTF-8
    write_png(root / "9" / "unnamed.png")
    outputs = list(padchest.read(str(root)))
    found = {(o.key.removeprefix("padchest/"), getattr(o, "reason", "record")): o for o in outputs}
    short = found[(IN_DIR, "malformed-row")]
    assert short.detail == f"{CSV_NAME} row 1: 6 cells for {len(HEADER)} columns" and short.level == "record"
    assert found[(FLAT, "undecodable-row")].detail == f"{CSV_NAME} row 2: bytes that are not UTF-8"
    assert (NULL_LABELS, "record") in found  # the rows after them are read
    orphan = found[("unnamed.png", "unlabelled-image")]
    assert orphan.kind == "filtered" and orphan.detail == f"9/unnamed.png: no row in {CSV_NAME}"
    assert len(outputs) == len(ROWS) + 1
    plan = padchest.plan(str(root))
    keyed = [item for row in table_rows(str(table)) for item in plan.key_row("row", row)]
    assert [(item.tag, item.key, item.item[0]) for item in keyed if item.tag == "bad"] == [
        ("bad", IN_DIR, 1),
        ("bad", FLAT, 2),
    ]
    assert {item.item[0] for item in keyed if item.tag == "row"} == set(range(3, len(ROWS) + 1))


def test_beam_graph_reads_what_the_serial_run_reads(tmp_path):
    root = make_tree(tmp_path, rows=[*ROWS, row(""), row("sub/deep.png", ImageDir="x")])
    for relative in ("9/unnamed.png", f"3/{IN_DIR}", "sub/deep.png"):
        write_png(root / relative)
    outputs = assert_beam_matches_serial(padchest.plan(str(root)))
    assert len(outputs) == len(ROWS) + 2 + 2  # two rows more, two PNGs no row names (9/unnamed.png, deep.png)


def test_every_png_of_the_tree_is_in_exactly_one_listing_shard(tmp_path):
    """Flat PNGs and PNGs one folder down, whatever their first character; nothing deeper, nothing else."""
    images = [f"{digit}{i}/{digit}x.png" for i, digit in enumerate("0123456789")]
    images += [f"{digit}y.png" for digit in "0123456789"]
    images += ["images/a.png", "_/b.png", "Z.png", ".png", "0/.png", f"54/{IN_DIR}"]
    others = ["1/2/deep.png", "0/x.jpg", "x.PNG", CSV_NAME]
    for relative in [*images, *others]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    write_label_csv(tmp_path / CSV_NAME, [])
    plan = padchest.plan(str(tmp_path))
    listed = [path for listing in plan.listings for pattern in listing.patterns() for path in io.glob(pattern)]
    assert sorted(listed) == sorted(str(tmp_path / relative) for relative in [*images, *others])
    keyed = [item for path in listed for item in plan.key_file("png", path)]
    assert sorted(item.item[0] for item in keyed) == sorted(images)
    assert all(item.key == relative.rsplit("/", 1)[-1] for item in keyed for relative in item.item)


def test_gzipped_csv_and_registry(tmp_path):
    plain = [o.model_dump() for o in padchest.read(str(make_tree(tmp_path / "a")))]
    gz_root = make_tree(tmp_path / "b", csv_name=f"{CSV_NAME}.gz")
    gz = [o.model_dump() for o in reader("padchest").read(str(gz_root))]
    assert [o.get("image", {}).get("native_id") for o in plain] == [o.get("image", {}).get("native_id") for o in gz]
    assert len(plain) == len(gz) == len(ROWS)


def test_missing_csv_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no PadChest label file"):
        padchest.plan(str(tmp_path))


def test_columns_are_found_case_insensitively():
    readme_spelling = [{"labelCUIS": "LabelCUIS", "ExposureTime": "ExposureTime_DICOM"}.get(n, n) for n in HEADER]
    selected = padchest.select_columns(
        [f" {name.upper()} " if name == "Projection" else name for name in readme_spelling]
    )
    assert selected["label_cuis"] == "LabelCUIS" and selected["projection"] == " PROJECTION "
    with pytest.raises(ValueError, match="several columns"):
        padchest.select_columns([*HEADER, "LabelCUIS"])
    with pytest.raises(ValueError, match="no column for Rows_DICOM"):
        padchest.select_columns([name for name in HEADER if name != "Rows_DICOM"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("['infiltrates', ' pneumonia']", ["infiltrates", "pneumonia"]),
        ("['']", []),
        ("[]", []),
        ('["normal"]', ["normal"]),
    ],
)
def test_parse_labels(text, expected):
    assert padchest.parse_labels(text) == expected


@pytest.mark.parametrize("text", ["['a',", "['a'] + ['b']", "__import__('os')", "[1]", "{'a'}", "'normal'", "[['a']]"])
def test_parse_labels_refuses_non_lists_and_code(text):
    with pytest.raises(ValueError):
        padchest.parse_labels(text)


def test_parse_by_sentence_keeps_nan_sentences():
    assert padchest.parse_by_sentence("[['unchanged'], nan, [], ['loc  basal', 'x']]") == [
        ["unchanged"],
        None,
        [],
        ["loc basal", "x"],
    ]
    with pytest.raises(ValueError, match="mixes"):
        padchest.parse_by_sentence("[['a'], 'b']")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("['C0025552' 'C4273001' '' 'C0016542']", ["C0025552", "C4273001", "", "C0016542"]),
        ("[]", []),
        ("", []),
    ],
)
def test_parse_cuis(text, expected):
    assert padchest.parse_cuis(text) == expected


@pytest.mark.parametrize("text", ["2014-09-16", "20141332", "2014091", "x"])
def test_bad_study_dates_raise(text):
    with pytest.raises(ValueError, match="StudyDate_DICOM"):
        padchest.parse_study_date(text)


@pytest.mark.parametrize("text", ["0", "-5", "12.5", "abc", "nan"])
def test_bad_sizes_raise(text):
    with pytest.raises(ValueError, match="Rows_DICOM"):
        padchest.parse_size(text, "Rows_DICOM")


def test_real_label_csv_from_the_torchxrayvision_wheel(tmp_path):
    """Every real row parses (set TORCHXRAYVISION_WHEEL to the downloaded torchxrayvision-1.5.7 wheel)."""
    target = wheel_member(f"{CSV_NAME}.gz", tmp_path / f"{CSV_NAME}.gz")
    plan = padchest.plan(str(tmp_path))
    keyed = [item for row in table_rows(str(target)) for item in plan.key_row("row", row)]
    assert {item.tag for item in keyed} == {"row"}  # no unreadable row
    table = [dict(zip(padchest.COLUMNS, item.item[1], strict=True)) for item in keyed]
    assert len(table) == 160861 and len({row["image_id"] for row in table}) == len(table)
    assert min(len(row["patient_id"]) for row in table) > 10
    assert all(item.key == row["image_id"] for item, row in zip(keyed, table))
    assert len({row["report_id"] for row in table}) == 107783
    # every row's list and CUI cells parse; whole records for a stable tenth of the rows
    for column, parse in (
        ("labels", padchest.parse_labels),
        ("localizations", padchest.parse_localizations),
        ("by_sentence", padchest.parse_by_sentence),
    ):
        for row in table:
            if not padchest.is_null(row[column]):
                parse(row[column])
    assert sum(padchest.is_null(row["labels"]) for row in table) == 103
    assert all(padchest.parse_cuis(row["label_cuis"]) or row["label_cuis"] in ("", "[]") for row in table)
    records = [padchest.row_record(row, "unused") for row in table[::10]]
    assert {r.image.view for r in records} >= {"PA", "L", "AP", "AP_horizontal"}
    assert {label.reader for r in records for label in r.raw_labels} == {"Physician", "RNN_model"}
