"""VinDr-CXR reader on small native trees (PhysioNet and Kaggle layouts) and real Kaggle rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from plans import assert_beam_matches_serial
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from realdata import vindr_kaggle_rows, wheel_csv_text, wheel_member

from schemas.records import Reject, SourceRecord
from transforms import io
from transforms.sources import reader, vindr
from transforms.sources.plan import table_rows

TRAIN_A = "9a5094b2563a1ef3ff50dc5c7ff71345"
TRAIN_B = "50a418190bc3fb1ef1633bf9678929b3"
TRAIN_BARE = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # a DICOM with no label row at all
TRAIN_MISSING = "00000000000000000000000000000abc"  # rows but no DICOM
TRAIN_BAD_BOX = "11111111111111111111111111111111"
TEST_A = "aa11bb22cc33dd44ee55ff6600778899"

# label columns in an order that is neither the documented one nor alphabetical: readers select by name
TRAIN_LABEL_COLUMNS = list(reversed(vindr.IMAGE_LABELS))
TEST_LABEL_COLUMNS = [("Other disease" if n == "Other diseases" else n) for n in vindr.IMAGE_LABELS]


def write_vindr_dicom(path: Path, height: int = 48, width: int = 40, photometric: str = "MONOCHROME2") -> None:
    """A small DICOM carrying only VinDr's de-identification whitelist (no PatientID, no ViewPosition)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.3.4"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.PatientSex, ds.PatientAge = "F", "045Y"
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.PixelData = np.arange(height * width, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_csv(path: Path, header: list[str], rows: list[list[str]], gz: bool = False) -> None:
    text = "\n".join(",".join(f'"{v}"' if "," in v else v for v in line) for line in [header, *rows]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wt", newline="") as handle:
            handle.write(text)
    else:
        path.write_text(text)


def label_row(columns: list[str], positives: set[str]) -> list[str]:
    return [
        "1" if name in positives or (name == "Other disease" and "Other diseases" in positives) else "0"
        for name in columns
    ]


def make_physionet_tree(root: Path, gz: bool = False) -> Path:
    """Train: 3 readers on TRAIN_A with boxes, 3 x No finding on TRAIN_B, a bare image, a missing image,
    a malformed box; test: consensus labels with the ``Other disease`` spelling and no rad_id."""
    for image_id, size in ((TRAIN_A, (48, 40)), (TRAIN_B, (30, 50)), (TRAIN_BARE, (20, 20)), (TRAIN_BAD_BOX, (20, 20))):
        write_vindr_dicom(root / "train" / f"{image_id}.dicom", *size)
    write_vindr_dicom(root / "test" / f"{TEST_A}.dicom", 64, 64, photometric="MONOCHROME1")
    boxes_header = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
    write_csv(
        root / "annotations" / "annotations_train.csv",
        boxes_header,
        [
            [TRAIN_A, "R10", "Cardiomegaly", "6.0", "13.0", "16.5", "18.0"],
            [TRAIN_A, "R9", "Nodule/Mass", "0", "0", "3", "4"],
            [TRAIN_A, "R9", "Cardiomegaly", "7.0", "13.0", "16.0", "17.0"],
            [TRAIN_A, "R8", "Lung Opacity", "1", "2", "3", "4"],
            [TRAIN_B, "R11", "No finding", "", "", "", ""],
            [TRAIN_B, "R15", "No finding", "", "", "", ""],
            [TRAIN_B, "R16", "No finding", "", "", "", ""],
            [TRAIN_MISSING, "R1", "Aortic enlargement", "1", "1", "2", "2"],
            [TRAIN_MISSING, "R2", "Aortic enlargement", "1", "1", "2", "2"],
            [TRAIN_BAD_BOX, "R3", "Atelectasis", "5", "1", "2", "2"],  # x_max < x_min
        ],
        gz=gz,
    )
    train_labels = [
        [TRAIN_A, reader_id, *label_row(TRAIN_LABEL_COLUMNS, positives)]
        for reader_id, positives in (
            ("R10", {"Cardiomegaly"}),
            ("R9", {"Cardiomegaly", "Nodule/Mass"}),
            ("R8", {"Lung Opacity", "Other diseases"}),
        )
    ] + [[TRAIN_B, r, *label_row(TRAIN_LABEL_COLUMNS, {"No finding"})] for r in ("R11", "R15", "R16")]
    train_labels += [[TRAIN_MISSING, "R1", *label_row(TRAIN_LABEL_COLUMNS, {"Aortic enlargement"})]]
    write_csv(
        root / "annotations" / "image_labels_train.csv",
        ["image_id", "rad_id", *TRAIN_LABEL_COLUMNS],
        train_labels,
        gz=gz,
    )
    # test: consensus, no rad_id column, columns in another order
    test_boxes_header = ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
    write_csv(
        root / "annotations" / "annotations_test.csv",
        test_boxes_header,
        [
            [TEST_A, "Pleural effusion", "40.0", "50.0", "63.0", "63.0"],
        ],
        gz=gz,
    )
    write_csv(
        root / "annotations" / "image_labels_test.csv",
        ["image_id", *TEST_LABEL_COLUMNS],
        [[TEST_A, *label_row(TEST_LABEL_COLUMNS, {"Pleural effusion", "Other diseases"})]],
        gz=gz,
    )
    return root


def by_key(outputs):
    return {o.key: o for o in outputs}


def test_physionet_layout_records_and_rejects(tmp_path):
    outputs = list(vindr.read(str(make_physionet_tree(tmp_path))))
    keys = [o.key for o in outputs]
    assert keys == sorted(keys)
    # one output per unit: 5 DICOMs + 1 missing image (two rows, one reject)
    units = (TRAIN_A, TRAIN_B, TRAIN_BARE, TRAIN_MISSING, TRAIN_BAD_BOX, TEST_A)
    assert keys == sorted(f"vindr/{i}" for i in units)
    found = by_key(outputs)

    a = found[f"vindr/{TRAIN_A}"]
    assert isinstance(a, SourceRecord)
    assert a.image.native_id == TRAIN_A and a.image.format == "dicom" and a.image.view == "PA"
    assert a.image.official_split == "train" and a.image.subject_id is None
    assert (a.image.expected_height, a.image.expected_width) == (48, 40)
    assert a.image.uri == str(tmp_path / "train" / f"{TRAIN_A}.dicom")
    assert [(b.reader, b.label) for b in a.boxes] == [
        ("R10", "Cardiomegaly"),
        ("R8", "Lung Opacity"),
        ("R9", "Cardiomegaly"),
        ("R9", "Nodule/Mass"),
    ]
    r10 = a.boxes[0]
    assert (r10.x1, r10.y1, r10.x2, r10.y2, r10.origin) == (6.0, 13.0, 16.5, 18.0, "vindr-annotations")
    nodule = a.boxes[3]
    assert (nodule.x1, nodule.y1, nodule.x2, nodule.y2) == (0.0, 0.0, 3.0, 4.0)  # zero coordinates are valid
    image_labels = [r for r in a.raw_labels if r.system == "vindr-image-labels"]
    assert len(image_labels) == 3 * 28 and {r.reader for r in image_labels} == {"R8", "R9", "R10"}
    positives = {(r.reader, r.name) for r in image_labels if r.value == 1.0}
    assert positives == {
        ("R10", "Cardiomegaly"),
        ("R9", "Cardiomegaly"),
        ("R9", "Nodule/Mass"),
        ("R8", "Lung Opacity"),
        ("R8", "Other diseases"),
    }
    assert all(r.value in (0.0, 1.0) for r in image_labels)

    b = found[f"vindr/{TRAIN_B}"]
    assert b.boxes == []
    no_finding = [r for r in b.raw_labels if r.system == "vindr-annotations"]
    assert [(r.name, r.value, r.reader) for r in no_finding] == [
        ("No finding", 1.0, "R11"),
        ("No finding", 1.0, "R15"),
        ("No finding", 1.0, "R16"),
    ]

    bare = found[f"vindr/{TRAIN_BARE}"]
    assert isinstance(bare, SourceRecord) and bare.raw_labels == [] and bare.provenance["labels"] == "missing"

    missing = found[f"vindr/{TRAIN_MISSING}"]
    assert isinstance(missing, Reject)
    assert (missing.reason, missing.stage, missing.kind) == ("image-not-present", "read", "rejected")
    assert missing.source == "vindr"

    bad = found[f"vindr/{TRAIN_BAD_BOX}"]
    assert isinstance(bad, Reject) and bad.reason == "malformed-annotation" and "R3" in bad.detail
    assert bad.detail.startswith("annotations/annotations_train.csv row 10, reader R3")
    assert missing.detail.startswith(
        "annotations/annotations_train.csv row 8, annotations/image_labels_train.csv row 7:"
    )
    assert a.boxes[0].where == "annotations/annotations_train.csv row 1"

    test = found[f"vindr/{TEST_A}"]
    assert test.image.official_split == "test" and (test.image.expected_height, test.image.expected_width) == (64, 64)
    assert [(b.label, b.reader) for b in test.boxes] == [("Pleural effusion", "consensus")]
    test_labels = {r.name: r for r in test.raw_labels}
    assert len(test.raw_labels) == 28 and "Other disease" not in test_labels
    assert test_labels["Other diseases"].value == 1.0 and test_labels["Other diseases"].reader == "consensus"
    assert test_labels["Pneumothorax"].value == 0.0


def test_gzipped_csvs_read_like_plain(tmp_path):
    plain = list(vindr.read(str(make_physionet_tree(tmp_path / "plain"))))
    gz = list(vindr.read(str(make_physionet_tree(tmp_path / "gz", gz=True))))

    def without_paths(outputs):  # box provenance names the file: .csv or .csv.gz
        return [
            o.model_dump(exclude={"image": {"uri"}, "boxes": {"__all__": {"where"}}})
            if isinstance(o, SourceRecord)
            else o.model_dump(exclude={"detail"})
            for o in outputs
        ]

    assert without_paths(plain) == without_paths(gz)
    assert next(b.where for o in gz if isinstance(o, SourceRecord) for b in o.boxes).startswith(
        "annotations/annotations_train.csv.gz row "
    )


def test_an_unreadable_row_is_an_item_reject_and_its_image_is_read(tmp_path):
    root = make_physionet_tree(tmp_path)
    boxes = root / "annotations" / "annotations_train.csv"
    boxes.write_bytes(
        boxes.read_bytes()
        + f"{TRAIN_A},R11,Nodule/Mass,1,2\n".encode()
        + f"{TRAIN_B},R12,No finding,,,,\n".encode().replace(b"No finding", b"No f\xeending")
    )
    found: dict[str, list] = {}
    for output in vindr.read(str(root)):
        found.setdefault(output.key, []).append(output)
    record, short = found[f"vindr/{TRAIN_A}"]
    assert isinstance(record, SourceRecord) and len(record.boxes) == 4  # the other rows are all read
    assert (short.reason, short.level, short.detail) == (
        "malformed-row",
        "item",
        "annotations/annotations_train.csv row 11: 5 cells for 7 columns",
    )
    _, latin1 = found[f"vindr/{TRAIN_B}"]
    assert (latin1.reason, latin1.detail) == (
        "undecodable-row",
        "annotations/annotations_train.csv row 12: bytes that are not UTF-8",
    )
    plan = vindr.plan(str(root))
    bad = [item for row in table_rows(str(boxes)) for item in plan.key_row(str(boxes), row) if item.tag == "bad"]
    assert [(item.key, item.item) for item in bad] == [
        (TRAIN_A, ((0, 0, 11), "malformed-row", "annotations/annotations_train.csv row 11: 5 cells for 7 columns")),
        (
            TRAIN_B,
            ((0, 0, 12), "undecodable-row", "annotations/annotations_train.csv row 12: bytes that are not UTF-8"),
        ),
    ]


def test_rows_that_name_no_image_or_an_absent_one(tmp_path):
    """A bad row with no readable image_id is a reject of its own (listed first); rows, good or bad, of
    an image absent from their split are one image-not-present reject naming each file's first row."""
    root = make_physionet_tree(tmp_path)
    labels = root / "annotations" / "image_labels_train.csv"
    labels.write_bytes(labels.read_bytes() + f",R1\n{TRAIN_MISSING},R2\n".encode())
    boxes = root / "annotations" / "annotations_test.csv"  # TRAIN_A is in train/, not in test/
    boxes.write_bytes(boxes.read_bytes() + f"{TRAIN_A},Nodule/Mass,1,1,2,2\n".encode())
    outputs = list(vindr.read(str(root)))
    first = outputs[0]
    assert (first.key, first.reason, first.detail) == (
        "vindr/",
        "malformed-row",
        "annotations/image_labels_train.csv row 8: 2 cells for 30 columns",
    )
    assert [o.key for o in outputs[1:]] == sorted(o.key for o in outputs[1:])
    found: dict[str, list] = {}
    for output in outputs:
        found.setdefault(output.key, []).append(output)
    (missing,) = found[f"vindr/{TRAIN_MISSING}"]  # its bad row 9 is named by the reject, not rejected again
    assert missing.detail == (
        f"annotations/annotations_train.csv row 8, annotations/image_labels_train.csv row 7: "
        f"no train/{TRAIN_MISSING}.dicom"
    )
    record, absent = found[f"vindr/{TRAIN_A}"]  # train first, then test
    assert isinstance(record, SourceRecord) and record.image.official_split == "train"
    assert (absent.reason, absent.detail) == (
        "image-not-present",
        f"annotations/annotations_test.csv row 2: no test/{TRAIN_A}.dicom",
    )


def test_read_is_deterministic_and_registered(tmp_path):
    root = str(make_physionet_tree(tmp_path))
    assert [o.model_dump() for o in vindr.read(root)] == [o.model_dump() for o in reader("vindr").read(root)]


def test_beam_graph_reads_what_the_serial_run_reads(tmp_path):
    root = make_physionet_tree(tmp_path)
    write_vindr_dicom(root / "test" / f"{TRAIN_BARE}.dicom")  # in both folders
    boxes = root / "annotations" / "annotations_train.csv"
    boxes.write_bytes(boxes.read_bytes() + f"{TRAIN_A},R11,Nodule/Mass,1,2\n,R1\n".encode())
    outputs = assert_beam_matches_serial(vindr.plan(str(root)))
    assert len(outputs) == 9


def test_every_file_of_the_image_folders_is_in_exactly_one_listing_shard(tmp_path):
    names = [f"{first}{'0' * 31}.dicom" for first in "0123456789abcdef"]
    names += ["ABCDEF.dicom", "Zz.dicom", "_x.dicom", ".dicom", "-.dicom", "0a.dcm", "f.dicom.bak"]
    for split in vindr.SPLITS:
        for name in names:
            (tmp_path / split).mkdir(exist_ok=True)
            (tmp_path / split / name).write_bytes(b"")
    (tmp_path / "train" / "0sub").mkdir()
    (tmp_path / "train" / "0sub" / "0a.dicom").write_bytes(b"")  # not in the folder itself: not listed
    write_csv(tmp_path / "train.csv", KAGGLE_HEADER, [])
    plan = vindr.plan(str(tmp_path))
    listed = [
        (listing.tag, path) for listing in plan.listings for pattern in listing.patterns() for path in io.glob(pattern)
    ]
    assert sorted(listed) == sorted((split, str(tmp_path / split / name)) for split in vindr.SPLITS for name in names)
    keyed = [item for tag, path in listed for item in plan.key_file(tag, path)]
    assert sorted((item.key, item.item[1]) for item in keyed) == sorted(
        (name[: -len(".dicom")], split)
        for split in range(2)
        for name in names
        if name.endswith(".dicom") and name != ".dicom"
    )


KAGGLE_HEADER = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]


def write_kaggle_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """Real Kaggle rows (read from the torchxrayvision wheel at test time) as a ``train.csv``."""
    write_csv(path, KAGGLE_HEADER, [[row[name] for name in KAGGLE_HEADER] for row in rows])


def test_kaggle_layout_with_real_rows(tmp_path):
    """All rows of two real training images: TRAIN_A read by R8, R9 and R10 (overlapping boxes of one
    class from each), TRAIN_B three readers' ``No finding`` rows with empty coordinates."""
    rows = vindr_kaggle_rows({TRAIN_A, TRAIN_B})
    write_kaggle_rows(tmp_path / "train.csv", rows)
    write_vindr_dicom(tmp_path / "train" / f"{TRAIN_A}.dicom", 2000, 2000)
    write_vindr_dicom(tmp_path / "train" / f"{TRAIN_B}.dicom", 30, 30)
    write_vindr_dicom(tmp_path / "test" / f"{TEST_A}.dicom", 30, 30)  # Kaggle test images have no labels
    found = by_key(vindr.read(str(tmp_path)))
    assert vindr.detect_layout(str(tmp_path)).name == "kaggle"
    a = found[f"vindr/{TRAIN_A}"]
    assert {b.origin for b in a.boxes} == {"vindr-kaggle"} and a.provenance["layout"] == "kaggle"
    boxed = [row for row in rows if row["image_id"] == TRAIN_A]
    cardiomegaly = sorted((b.reader, b.x1, b.y1, b.x2, b.y2) for b in a.boxes if b.label == "Cardiomegaly")
    assert [reader_id for reader_id, *_ in cardiomegaly] == ["R10", "R8", "R9"]
    assert cardiomegaly == sorted(
        (row["rad_id"], *(float(row[name]) for name in vindr.COORDINATES))
        for row in boxed
        if row["class_name"] == "Cardiomegaly"
    )
    first, *others = [box[1:] for box in cardiomegaly]  # the three boxes overlap: kept per reader, not fused
    assert all(
        max(first[0], box[0]) < min(first[2], box[2]) and max(first[1], box[1]) < min(first[3], box[3])
        for box in others
    )
    assert len(a.boxes) == len(boxed) == 6 and a.raw_labels == []
    b = found[f"vindr/{TRAIN_B}"]
    assert b.boxes == [] and [(r.name, r.reader, r.system) for r in b.raw_labels] == [
        ("No finding", reader_id, "vindr-kaggle") for reader_id in ("R11", "R15", "R16")
    ]
    test = found[f"vindr/{TEST_A}"]
    assert test.image.official_split == "test" and test.provenance["labels"] == "missing"


def test_kaggle_first40_rows_missing_images_are_rejected_once_each(tmp_path):
    """The header and first 40 rows of the real Kaggle file, byte for byte, with no image present."""
    lines = wheel_csv_text("vinbigdata-train.csv.gz").splitlines(keepends=True)[:41]
    assert lines[0].rstrip() == ",".join(KAGGLE_HEADER)
    (tmp_path / "train.csv").write_text("".join(lines))
    (tmp_path / "train").mkdir()
    image_ids = {line.split(",")[0] for line in lines[1:]}
    outputs = list(vindr.read(str(tmp_path)))
    assert len(outputs) == len(image_ids) > 1
    assert {o.reason for o in outputs} == {"image-not-present"}


def test_layout_detection_refuses_to_guess(tmp_path):
    with pytest.raises(ValueError, match="no VinDr label files"):
        vindr.detect_layout(str(tmp_path))
    make_physionet_tree(tmp_path)
    assert vindr.detect_layout(str(tmp_path)).name == "physionet"
    write_csv(tmp_path / "train.csv", ["image_id", "class_name", "class_id", "rad_id", *vindr.COORDINATES], [])
    with pytest.raises(ValueError, match="both"):
        list(vindr.read(str(tmp_path)))


def test_train_csv_without_class_id_is_not_taken_for_kaggle(tmp_path):
    write_csv(tmp_path / "train.csv", ["image_id", "rad_id", "class_name", *vindr.COORDINATES], [])
    with pytest.raises(ValueError, match="class_id"):
        vindr.detect_layout(str(tmp_path))


def test_incomplete_physionet_layout_is_an_error(tmp_path):
    make_physionet_tree(tmp_path)
    (tmp_path / "annotations" / "image_labels_test.csv").unlink()
    with pytest.raises(ValueError, match="image_labels_test"):
        vindr.detect_layout(str(tmp_path))


def test_missing_label_column_is_an_error(tmp_path):
    make_physionet_tree(tmp_path)
    path = tmp_path / "annotations" / "image_labels_train.csv"
    lines = path.read_text().splitlines()
    drop = lines[0].split(",").index("Lung cyst")
    path.write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in lines) + "\n")
    with pytest.raises(ValueError, match="Lung cyst"):
        vindr.plan(str(tmp_path))  # a whole-input error, before anything is listed or read


def test_header_whitespace_and_bad_label_value(tmp_path):
    make_physionet_tree(tmp_path)
    path = tmp_path / "annotations" / "image_labels_train.csv"
    lines = path.read_text().splitlines()
    lines[0] = ", ".join(lines[0].split(","))  # spaces after commas in the header
    lines[1] = lines[1].rsplit(",", 1)[0] + ",2"  # TRAIN_A, first reader: a value that is not 0/1
    path.write_text("\n".join(lines) + "\n")
    found = by_key(vindr.read(str(tmp_path)))
    assert found[f"vindr/{TRAIN_A}"].reason == "bad-label-value"
    assert isinstance(found[f"vindr/{TRAIN_B}"], SourceRecord)


def test_unreadable_dicom_is_rejected(tmp_path):
    make_physionet_tree(tmp_path)
    (tmp_path / "train" / f"{TRAIN_BARE}.dicom").write_bytes(b"not a dicom file at all" * 4)
    found = by_key(vindr.read(str(tmp_path)))
    assert found[f"vindr/{TRAIN_BARE}"].reason == "unreadable-dicom-header"
    assert isinstance(found[f"vindr/{TRAIN_A}"], SourceRecord)


def test_image_in_both_folders_is_rejected_per_file(tmp_path):
    make_physionet_tree(tmp_path)
    write_vindr_dicom(tmp_path / "test" / f"{TRAIN_BARE}.dicom")
    twins = [o for o in vindr.read(str(tmp_path)) if o.key == f"vindr/{TRAIN_BARE}"]
    assert [o.reason for o in twins] == ["image-in-both-splits", "image-in-both-splits"]


coordinate = st.floats(min_value=0, max_value=4000, allow_nan=False)


@given(coordinate, coordinate, coordinate, coordinate)
def test_box_rows_parse_or_refuse(a, b, c, d):
    row = {
        "image_id": TRAIN_A,
        "rad_id": "R1",
        "class_name": "Nodule/Mass",
        "x_min": repr(a),
        "y_min": repr(b),
        "x_max": repr(c),
        "y_max": repr(d),
    }
    if c >= a and d >= b:
        boxes, labels = vindr.annotation_boxes_and_labels([row], "vindr-annotations")
        assert labels == [] and [(x.x1, x.y1, x.x2, x.y2) for x in boxes] == [(a, b, c, d)]
    else:
        with pytest.raises(ValueError, match="invalid box"):
            vindr.annotation_boxes_and_labels([row], "vindr-annotations")


@pytest.mark.parametrize(
    "coords", [["1", "", "2", "3"], ["1", "x", "2", "3"], ["-1", "0", "2", "3"], ["nan", "0", "2", "3"]]
)
def test_malformed_coordinates_raise(coords):
    row = dict(zip(["image_id", "rad_id", "class_name", *vindr.COORDINATES], [TRAIN_A, "R1", "ILD", *coords]))
    with pytest.raises(ValueError):
        vindr.annotation_boxes_and_labels([row], "vindr-annotations")


def test_no_finding_with_coordinates_raises():
    row = dict(
        zip(["image_id", "rad_id", "class_name", *vindr.COORDINATES], [TRAIN_A, "R1", "No finding", "1", "1", "2", "2"])
    )
    with pytest.raises(ValueError, match="No finding"):
        vindr.annotation_boxes_and_labels([row], "vindr-annotations")


def test_real_kaggle_file_from_the_torchxrayvision_wheel(tmp_path):
    """All 67,914 real rows parse (set TORCHXRAYVISION_WHEEL to the downloaded torchxrayvision-1.5.7 wheel)."""
    target = wheel_member("vinbigdata-train.csv.gz", tmp_path / "train.csv.gz")
    plan = vindr.plan(str(tmp_path))
    assert plan.layout.name == "kaggle"
    keyed = [item for row in table_rows(str(target)) for item in plan.key_row(str(target), row)]
    assert {item.tag for item in keyed} == {"box"}  # no unreadable row
    by_image: dict[str, list[tuple]] = {}
    for item in keyed:
        by_image.setdefault(item.key, []).append(item.item)
    rows = {image_id: plan.row_dicts(items, 0, 0) for image_id, items in by_image.items()}
    parsed = [vindr.annotation_boxes_and_labels(image_rows, "vindr-kaggle") for image_rows in rows.values()]
    assert len(rows) == 15000
    assert sum(len(boxes) + len(labels) for boxes, labels in parsed) == 67914
    assert {label.name for _, labels in parsed for label in labels} == {"No finding"}
    assert {box.reader for boxes, _ in parsed for box in boxes} <= {f"R{n}" for n in range(1, 18)}
