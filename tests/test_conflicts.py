"""Repeated and conflicting rows are rejects, never a silent last-wins (transforms/sources/conflicts.py):
MIMIC label rows repeated for a study, VinDr rows with a blank rad_id beside named readers."""

from __future__ import annotations

from pathlib import Path

from test_source_mimic import LABELS, REPORT, Image, build_tree, fake_dicom_id, labels_of, write_csv
from test_source_vindr import (
    TEST_A,
    TRAIN_A,
    TRAIN_LABEL_COLUMNS,
    label_row,
    make_physionet_tree,
)
from test_source_vindr import write_csv as write_vindr_csv

from schemas.records import Reject, SourceRecord
from transforms import labels
from transforms.sources import conflicts, mimic, vindr


def test_agreed_merges_identical_repeats_and_refuses_to_pick_between_different_ones():
    assert conflicts.agreed([]) == (True, None)
    assert conflicts.agreed([("1.0", ""), ("1.0", "")]) == (True, ("1.0", ""))
    assert conflicts.agreed([("1.0",), ("0.0",), ("1.0",)]) == (False, None)
    assert conflicts.rows_detail("x.csv", [9, 3], "disagree") == "x.csv row 3, row 9: disagree"


def mimic_tree(root: Path, chexpert_rows: list[list[str]]) -> tuple[str, str, str]:
    """Two images of one study and one of another; the CheXpert CSV written with the given rows."""
    pa, lateral, other = fake_dicom_id("c-pa"), fake_dicom_id("c-lat"), fake_dicom_id("c-other")
    images = [
        Image(pa, "10000001", "50000001"),
        Image(lateral, "10000001", "50000001", view="LATERAL"),
        Image(other, "10000002", "50000002"),
    ]
    build_tree(root, images, reports={"50000001": REPORT}, negbio={"50000001": {"Edema": "1.0"}})
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *LABELS], chexpert_rows)
    return pa, lateral, other


def chexpert_row(subject: str, study: str, **values: str) -> list[str]:
    return [subject, study, *(values.get(name, "") for name in LABELS)]


def test_mimic_conflicting_label_rows_cost_that_systems_labels_of_the_study_only(tmp_path):
    pa, lateral, other = mimic_tree(
        tmp_path,
        [
            chexpert_row("10000001", "50000001", Edema="1.0"),
            chexpert_row("10000002", "50000002", Edema="0.0"),
            chexpert_row("10000002", "50000002", Edema="0.0"),  # an identical repeat: merged
            chexpert_row("10000001", "50000001", Edema="0.0"),  # disagrees with row 1
        ],
    )
    outputs = list(mimic.read(str(tmp_path)))
    records = {o.image.native_id: o for o in outputs if isinstance(o, SourceRecord)}
    assert set(records) == {pa, lateral, other}  # every image is written
    for dicom_id in (pa, lateral):
        assert labels_of(records[dicom_id], "mimic-chexpert") == {}  # neither row is picked
        assert labels_of(records[dicom_id], "mimic-negbio")["Edema"] == 1.0  # the other system is kept
        assert records[dicom_id].report is not None
    assert labels_of(records[other], "mimic-chexpert")["Edema"] == 0.0
    rejects = [o for o in outputs if isinstance(o, Reject)]
    assert sorted(r.key for r in rejects) == sorted(f"mimic/{d}" for d in (pa, lateral))
    for reject in rejects:
        assert (reject.stage, reject.reason, reject.level, reject.kind) == (
            "read",
            "conflicting-label-rows",
            "item",
            "rejected",
        )
        assert reject.detail.startswith("mimic-cxr-2.0.0-chexpert.csv.gz row 1, row 4: study 50000001")


def test_mimic_label_rows_that_agree_are_read_once_without_a_reject(tmp_path):
    pa, _, _ = mimic_tree(tmp_path, [chexpert_row("10000001", "50000001", Edema="-1.0")] * 3)
    outputs = list(mimic.read(str(tmp_path)))
    assert not [o for o in outputs if isinstance(o, Reject)]
    record = next(o for o in outputs if isinstance(o, SourceRecord) and o.image.native_id == pa)
    assert [(r.name, r.value) for r in record.raw_labels if r.system == "mimic-chexpert" and r.value is not None] == [
        ("Edema", -1.0)
    ]


def add_train_rows(root: Path, boxes: list[list[str]], image_labels: list[list[str]]) -> None:
    """Append rows to the PhysioNet tree's train files (rewritten whole, header first)."""
    boxes_path = root / "annotations" / "annotations_train.csv"
    labels_path = root / "annotations" / "image_labels_train.csv"
    for path, extra in ((boxes_path, boxes), (labels_path, image_labels)):
        header, *rows = [line.split(",") for line in path.read_text().splitlines()]
        write_vindr_csv(path, header, rows + extra)


def test_vindr_blank_rad_id_in_train_is_an_item_reject_not_a_consensus_reader(tmp_path):
    root = make_physionet_tree(tmp_path)
    add_train_rows(
        root,
        [[TRAIN_A, "", "Pneumothorax", "1", "1", "9", "9"]],
        [[TRAIN_A, "", *label_row(TRAIN_LABEL_COLUMNS, {"Pneumothorax"})]],
    )
    outputs = list(vindr.read(str(root)))
    record = next(o for o in outputs if isinstance(o, SourceRecord) and o.key == f"vindr/{TRAIN_A}")
    assert {b.reader for b in record.boxes} == {"R8", "R9", "R10"}
    assert {r.reader for r in record.raw_labels} == {"R8", "R9", "R10"}
    # harmonised, the named readers decide (a consensus row would have overridden them with Pneumothorax)
    found = {f.name: f.presence for f in labels.harmonize(record.raw_labels)}
    assert found.get("Pneumothorax") in (None, 0)
    item = sorted(r.detail for r in outputs if isinstance(r, Reject) and r.reason == "blank-reader-id")
    assert item == [
        "annotations/annotations_train.csv row 11: blank rad_id in train, where every row is one named "
        "reader's; the row is left out",
        "annotations/image_labels_train.csv row 8: blank rad_id in train, where every row is one named "
        "reader's; the row is left out",
    ]
    assert all(
        r.level == "item" and r.key == f"vindr/{TRAIN_A}"
        for r in outputs
        if isinstance(r, Reject) and r.reason == "blank-reader-id"
    )


def test_vindr_test_split_rows_without_rad_id_stay_the_consensus(tmp_path):
    outputs = list(vindr.read(str(make_physionet_tree(tmp_path))))
    record = next(o for o in outputs if isinstance(o, SourceRecord) and o.key == f"vindr/{TEST_A}")
    assert {b.reader for b in record.boxes} == {vindr.CONSENSUS_READER}
    assert not [o for o in outputs if isinstance(o, Reject) and o.reason == "blank-reader-id"]
    assert vindr.blank_readers([{"rad_id": "R1"}, {"rad_id": ""}], "test") == ([{"rad_id": "R1"}], [{"rad_id": ""}])
