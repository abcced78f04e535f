"""CheXmask reader: real physician-study rows used as OriginalResolution files, plus crafted bad rows."""

from __future__ import annotations

import csv
import gzip
import io as stdio
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from realdata import REFERENCE as SHARED_REFERENCE
from schemas.records import AnnotationRecord, Reject
from transforms.sources import chexmask

REFERENCE = SHARED_REFERENCE / "chexmask"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/reference/chexmask not present")

ORGAN_COLUMN = {"right lung": "Right Lung", "left lung": "Left Lung", "heart": "Heart"}


def subset(dataset: str) -> Path:
    return REFERENCE / f"DataSubsets_{dataset}_first3rows.csv"


def install(root: Path, dataset: str, source: Path | None = None, gz: bool = False) -> Path:
    """Place a CSV as ``root/OriginalResolution/<dataset>.csv[.gz]``."""
    folder = root / "OriginalResolution"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{dataset}.csv{'.gz' if gz else ''}"
    data = (source or subset(dataset)).read_bytes()
    target.write_bytes(gzip.compress(data) if gz else data)
    return target


def reference_rows(dataset: str) -> tuple[list[str], list[list[str]]]:
    with open(subset(dataset), newline="") as stream:
        header, *rows = list(csv.reader(stream))
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = stdio.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    path.write_text(buffer.getvalue())
    return path


def read_all(root: Path, image_sources=("mimic", "vindr", "siim", "padchest")) -> list:
    return list(chexmask.read(str(root), image_sources))


@needs_reference
@pytest.mark.parametrize("gz", [False, True])
def test_mimic_rows_threshold_and_geometry(tmp_path, gz):
    install(tmp_path, "MIMIC-CXR-JPG", gz=gz)
    outputs = read_all(tmp_path)
    facts = json.loads((REFERENCE / "DataSubsets_first3rows_DECODED_FACTS.json").read_text())
    expected = facts["DataSubsets_MIMIC-CXR-JPG_first3rows.csv"]["rows"]
    assert len(outputs) == 3  # one output per row

    filtered = outputs[1]
    assert isinstance(filtered, Reject)
    assert (filtered.key, filtered.kind, filtered.reason) == (
        f"mimic/{expected[1]['dicom_id']}", "filtered", "dice-rca-mean-below-threshold")

    for record, fact in ((outputs[0], expected[0]), (outputs[2], expected[2])):
        assert isinstance(record, AnnotationRecord)
        assert record.target_key == f"mimic/{fact['dicom_id']}"
        assert record.quality == {"dice_rca_mean": fact["Dice RCA (Mean)"], "dice_rca_max": fact["Dice RCA (Max)"]}
        assert (record.declared_height, record.declared_width) == (1024, 1024)
        assert [m.label for m in record.masks] == ["right lung", "left lung", "heart"]
        for mask in record.masks:
            organ = fact[ORGAN_COLUMN[mask.label]]
            assert (mask.convention, mask.height, mask.width) == ("chexmask", 1024, 1024)
            assert mask.rle.split()[:2] == organ["first_run"]
        for contour in record.landmarks:
            points = np.array(contour.points)
            organ = fact[ORGAN_COLUMN[contour.label]]
            # the filled landmark contour is the mask: same extents in both
            assert (points[:, 0].min(), points[:, 0].max()) == (organ["col_min"], organ["col_max"])
            assert (points[:, 1].min(), points[:, 1].max()) == (organ["row_min"], organ["row_max"])
        rings = {p.label: np.array(p.points) for p in record.landmarks}
        assert [len(rings[label]) for label in ("right lung", "left lung", "heart")] == [44, 50, 26]
        # Right Lung is the patient's right: the image left
        assert rings["right lung"][:, 0].mean() < 512 < rings["left lung"][:, 0].mean()


@needs_reference
def test_padchest_swapped_columns_read_by_name_and_empty_size_rejected(tmp_path):
    install(tmp_path, "Padchest")
    outputs = read_all(tmp_path)
    header, rows = reference_rows("Padchest")
    assert header[1:3] == ["Dice RCA (Max)", "Dice RCA (Mean)"]
    assert [(o.key, o.reason) for o in outputs] == [(f"padchest/{row[0]}", "missing-size") for row in rows]
    assert all(o.key.endswith(".png") for o in outputs)

    # the same rows with the size filled in: quality comes from the columns' names, not positions
    sized = [row[:-2] + ["1024", "1024"] for row in rows]
    install(tmp_path, "Padchest", write_csv(tmp_path / "sized.csv", header, sized))
    records = read_all(tmp_path)
    assert all(isinstance(r, AnnotationRecord) for r in records)
    for record, row in zip(records, rows):
        assert record.quality == {"dice_rca_mean": float(row[2]), "dice_rca_max": float(row[1])}
        assert record.quality["dice_rca_max"] < record.quality["dice_rca_mean"]  # as published: never assumed


@needs_reference
def test_vindr_id_column_and_source_selection(tmp_path):
    install(tmp_path, "VinDr-CXR")
    install(tmp_path, "MIMIC-CXR-JPG")
    _, vindr_rows = reference_rows("VinDr-CXR")
    outputs = read_all(tmp_path, image_sources=("vindr",))
    assert [o.target_key for o in outputs] == [f"vindr/{row[0]}" for row in vindr_rows]
    assert all(o.native_id.startswith("VinDr-CXR/") for o in outputs)
    assert read_all(tmp_path, image_sources=("siim",)) == []


@needs_reference
def test_files_of_datasets_not_ingested_are_never_opened(tmp_path):
    install(tmp_path, "MIMIC-CXR-JPG")
    folder = tmp_path / "OriginalResolution"
    for stem in ("CheXpert", "ChestX-Ray8", "CANDID-PTX", "VinDr-CXR", "Padchest"):
        (folder / f"{stem}.csv.gz").write_bytes(b"not gzip at all")  # opening any of them would raise
    outputs = read_all(tmp_path, image_sources=("mimic", "siim"))
    assert [o.key.split("/")[0] for o in outputs] == ["mimic"] * 3


def test_no_file_for_any_ingested_source_is_an_error(tmp_path):
    (tmp_path / "OriginalResolution").mkdir()
    with pytest.raises(FileNotFoundError, match="MIMIC-CXR-JPG"):
        read_all(tmp_path)


@needs_reference
def test_missing_column_is_an_error(tmp_path):
    header, rows = reference_rows("MIMIC-CXR-JPG")
    keep = [i for i, name in enumerate(header) if name != "Heart"]
    install(tmp_path, "MIMIC-CXR-JPG", write_csv(tmp_path / "x.csv", [header[i] for i in keep],
                                                 [[row[i] for i in keep] for row in rows]))
    with pytest.raises(ValueError, match="Heart"):
        read_all(tmp_path)


@needs_reference
def test_bad_rows_are_rejected_one_by_one(tmp_path):
    header, rows = reference_rows("MIMIC-CXR-JPG")
    good = rows[0]
    column = {name: i for i, name in enumerate(header)}

    def variant(new_id: str, **changes: str) -> list[str]:
        row = list(good)
        row[column["dicom_id"]] = new_id
        for name, value in changes.items():
            row[column[name.replace("_", " ")]] = value
        return row

    landmarks = chexmask.parse_landmarks(good[column["Landmarks"]])
    crafted = [
        variant("a-short-landmarks", Landmarks=",".join(good[column["Landmarks"]].split(",")[:-2])),
        variant("b-odd-rle", Heart=good[column["Heart"]] + " 7"),
        variant("c-rle-outside", Left_Lung="1048570 10"),
        variant("d-rle-overlap", Left_Lung="10 5 12 3"),
        variant("e-rle-zero-start", Left_Lung="0 5"),
        variant("f-bad-dice", **{"Dice RCA (Max)": "n/a"}),
        variant("g-nan-dice", **{"Dice RCA (Mean)": "nan"}),
        variant("h-bad-size", Height="1024x"),
        variant("i-numpy-landmarks", Landmarks=str(landmarks)),
        variant(""),
        good,
        good,  # the same id again
        good[:4],  # a truncated row
        variant("k-padded", Height=" 1024 ", Width="1024.0"),
    ]
    # header cells carry stray spaces: still selected by name
    install(tmp_path, "MIMIC-CXR-JPG", write_csv(tmp_path / "x.csv", [f" {h} " for h in header], crafted))
    outputs = read_all(tmp_path)
    assert len(outputs) == len(crafted)
    reasons = [o.reason if isinstance(o, Reject) else "ok" for o in outputs]
    assert reasons == [
        "unparseable-landmarks", "bad-rle", "bad-rle", "bad-rle", "bad-rle", "bad-dice-value", "bad-dice-value",
        "bad-size", "ok", "missing-id", "ok", "duplicate-row", "malformed-row", "ok",
    ]
    assert outputs[1].detail.startswith("OriginalResolution/MIMIC-CXR-JPG.csv row 2: Heart: ")
    assert outputs[11].detail == f"OriginalResolution/MIMIC-CXR-JPG.csv row 12: {good[column['dicom_id']]} appears again (first read from row 11)"
    assert outputs[12].detail == f"OriginalResolution/MIMIC-CXR-JPG.csv row 13: 4 cells for {len(header)} columns"
    numpy_repr = outputs[8]
    assert numpy_repr.landmarks == outputs[10].landmarks  # NumPy repr and flat string parse alike
    assert (outputs[13].declared_height, outputs[13].declared_width) == (1024, 1024)


@needs_reference
def test_a_row_that_is_not_utf8_is_rejected_and_reading_goes_on(tmp_path):
    header, rows = reference_rows("MIMIC-CXR-JPG")
    id_at = header.index("dicom_id")
    named = [[name if i == id_at else cell for i, cell in enumerate(rows[0])] for name in ("first", "second", "third")]
    path = write_csv(tmp_path / "x.csv", header, named)
    path.write_bytes(path.read_bytes().replace(b"second", b"s\xe9cond"))
    install(tmp_path, "MIMIC-CXR-JPG", path)
    outputs = read_all(tmp_path)
    assert [getattr(o, "reason", "ok") for o in outputs] == ["ok", "undecodable-row", "ok"]
    assert outputs[1].detail == "OriginalResolution/MIMIC-CXR-JPG.csv row 2: bytes that are not UTF-8"
    assert outputs[1].key == "mimic/" and outputs[2].target_key == "mimic/third"


def runs_of(mask: np.ndarray) -> str:
    """Test-side CheXmask encoder: 1-based absolute starts over the row-major flattened mask."""
    flat = np.concatenate([[0], mask.ravel().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2] + 1, edges[1::2] + 1
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_rle_check_accepts_every_encoded_mask(mask):
    height, width = mask.shape
    chexmask.check_chexmask_rle(runs_of(mask), height, width)
    if mask.any():
        with pytest.raises(ValueError):  # the same runs do not fit one pixel smaller
            chexmask.check_chexmask_rle(runs_of(mask), 1, int(np.flatnonzero(mask.ravel()).max()))


points_strategy = arrays(np.int64, (120, 2), elements=st.integers(-50, 5000))


@settings(max_examples=60, deadline=None)
@given(points_strategy)
def test_landmarks_parse_flat_and_numpy_repr(points):
    flat = ",".join(str(v) for v in points.ravel())
    assert np.array_equal(chexmask.parse_landmarks(flat), points)
    assert np.array_equal(chexmask.parse_landmarks(str(points)), points)
    assert np.array_equal(chexmask.parse_landmarks(json.dumps(points.tolist())), points)


@settings(max_examples=30, deadline=None)
@given(points_strategy, st.integers(1, 239))
def test_landmarks_with_wrong_count_are_refused(points, keep):
    with pytest.raises(ValueError, match="240"):
        chexmask.parse_landmarks(",".join(str(v) for v in points.ravel()[:keep]))


@needs_reference
def test_row_exactly_at_threshold_passes(tmp_path):
    header, rows = reference_rows("MIMIC-CXR-JPG")
    mean = header.index("Dice RCA (Mean)")
    at, below = list(rows[0]), list(rows[2])
    at[mean], below[mean] = "0.7", "0.6999"
    install(tmp_path, "MIMIC-CXR-JPG", write_csv(tmp_path / "x.csv", header, [at, below]))
    first, second = read_all(tmp_path)
    assert isinstance(first, AnnotationRecord)
    assert second.reason == "dice-rca-mean-below-threshold"


# ---- Preprocessed (1024 x 1024) files, read only where OriginalResolution is absent ------------


def install_preprocessed(root: Path, dataset: str, source: Path | None = None) -> Path:
    """Place a CSV as ``root/Preprocessed/<dataset>.csv`` (the DataSubsets rows are in that space)."""
    folder = root / "Preprocessed"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{dataset}.csv"
    target.write_bytes((source or subset(dataset)).read_bytes())
    return target


@needs_reference
def test_vindr_preprocessed_rows_are_kept_in_their_space_and_marked(tmp_path):
    install_preprocessed(tmp_path, "VinDr-CXR")
    _, rows = reference_rows("VinDr-CXR")
    outputs = read_all(tmp_path, image_sources=("vindr",))
    assert [o.target_key for o in outputs] == [f"vindr/{row[0]}" for row in rows]
    for record in outputs:
        assert record.provenance["space"] == "preprocessed-1024"
        assert record.provenance["file"] == "Preprocessed/VinDr-CXR.csv"
        assert (record.declared_width, record.declared_height) == (1024, 1024)
        assert all((m.width, m.height) == (1024, 1024) for m in record.masks)


@needs_reference
def test_original_resolution_is_preferred_and_preprocessed_then_never_opened(tmp_path):
    install(tmp_path, "VinDr-CXR")
    (tmp_path / "Preprocessed").mkdir()
    (tmp_path / "Preprocessed" / "VinDr-CXR.csv.gz").write_bytes(b"not gzip at all")  # opening it would raise
    outputs = read_all(tmp_path, image_sources=("vindr",))
    assert {o.provenance["space"] for o in outputs} == {"original"}
    assert {o.provenance["file"] for o in outputs} == {"OriginalResolution/VinDr-CXR.csv"}


@needs_reference
@pytest.mark.parametrize("dataset, source", [("MIMIC-CXR-JPG", "mimic"), ("Padchest", "padchest")])
def test_cropped_datasets_preprocessed_rows_are_rejected_with_the_reason(tmp_path, dataset, source):
    install_preprocessed(tmp_path, dataset)
    _, rows = reference_rows(dataset)
    outputs = read_all(tmp_path)
    assert [(o.key, o.reason, o.kind) for o in outputs] == [
        (f"{source}/{row[0]}", "preprocessed-space-not-invertible", "rejected") for row in rows]
    assert all("unpublished offsets" in o.detail and "no OriginalResolution row" in o.detail for o in outputs)


@needs_reference
def test_cropped_dataset_without_original_beside_an_invertible_one(tmp_path):
    install(tmp_path, "VinDr-CXR")
    install_preprocessed(tmp_path, "MIMIC-CXR-JPG")
    outputs = read_all(tmp_path, image_sources=("mimic", "vindr"))
    by_source = {(o.key.split("/")[0], o.reason if isinstance(o, Reject) else o.provenance["space"]) for o in outputs}
    assert by_source == {("mimic", "preprocessed-space-not-invertible"), ("vindr", "original")}


@needs_reference
def test_preprocessed_size_columns_are_optional_but_must_say_1024(tmp_path):
    header, rows = reference_rows("VinDr-CXR")
    keep = [i for i, name in enumerate(header) if name not in ("Height", "Width")]
    install_preprocessed(tmp_path, "VinDr-CXR", write_csv(tmp_path / "x.csv", [header[i] for i in keep],
                                                          [[row[i] for i in keep] for row in rows]))
    assert all(isinstance(o, AnnotationRecord) for o in read_all(tmp_path, image_sources=("vindr",)))

    sized = [rows[0][:-2] + ["", ""], rows[1][:-2] + ["2048", "1024"], rows[2][:-2] + ["1024", "1024.0"]]
    install_preprocessed(tmp_path, "VinDr-CXR", write_csv(tmp_path / "y.csv", header, sized))
    outputs = read_all(tmp_path, image_sources=("vindr",))
    assert [o.reason if isinstance(o, Reject) else "ok" for o in outputs] == ["ok", "bad-size", "ok"]
    assert "not 1024" in outputs[1].detail


def test_no_file_in_either_folder_is_an_error(tmp_path):
    (tmp_path / "Preprocessed").mkdir()
    with pytest.raises(FileNotFoundError, match="OriginalResolution,Preprocessed"):
        read_all(tmp_path)
