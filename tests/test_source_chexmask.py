"""CheXmask reader: rows in the real file layout (written by the synthetic corpus's writer, see
``tests/synthetic_rows.py``; real CheXmask rows are not redistributable), plus crafted bad rows."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from plans import assert_beam_matches_serial
from synthetic_rows import FAILING_ROW, ChexmaskRows, chexmask_rows

from schemas.records import AnnotationRecord, Reject
from transforms.masks import rle_decode
from transforms.sources import chexmask
from transforms.sources.plan import table_rows

ORGAN_COLUMN = {"right lung": "Right Lung", "left lung": "Left Lung", "heart": "Heart"}
ORGAN_KEY = {"right lung": "right_lung", "left lung": "left_lung", "heart": "heart"}
ORIGINAL_SIZES = [(1180, 1420), (1010, 960), (1240, 1300)]  # (width, height) of the three images
PASSING = [0, 1]  # row FAILING_ROW (2) has Dice RCA (Mean) < 0.7


@functools.cache
def rows_of(dataset: str, space: str = "original") -> ChexmaskRows:
    """Three rows of ``dataset`` at the original sizes, or at 1024 x 1024 for the Preprocessed space
    (whose files store Landmarks as flat comma-separated integers)."""
    if space == "original":
        return chexmask_rows(dataset, ORIGINAL_SIZES)
    data = chexmask_rows(dataset, [(1024, 1024)] * 3)
    at = data.column("Landmarks")
    flat = [
        [",".join(map(str, chexmask.parse_landmarks(cell).ravel())) if i == at else cell for i, cell in enumerate(row)]
        for row in data.rows
    ]
    return dataclasses.replace(data, rows=flat)


def install(root: Path, dataset: str, text: str | None = None, gz: bool = False) -> Path:
    """Place a CSV as ``root/OriginalResolution/<dataset>.csv[.gz]`` (the dataset's rows by default)."""
    folder = root / "OriginalResolution"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{dataset}.csv{'.gz' if gz else ''}"
    data = (rows_of(dataset).csv_text() if text is None else text).encode()
    target.write_bytes(gzip.compress(data) if gz else data)
    return target


def read_all(root: Path, image_sources=("mimic", "vindr", "siim", "padchest")) -> list:
    return list(chexmask.read(str(root), image_sources))


def by_key(outputs: list) -> dict:
    """Outputs by key (each key once): ``read`` gives them by key, not in file order."""
    found = {output.key: output for output in outputs}
    assert len(found) == len(outputs)
    return found


@pytest.mark.parametrize("gz", [False, True])
def test_mimic_rows_threshold_and_geometry(tmp_path, gz):
    data = rows_of("MIMIC-CXR-JPG")
    install(tmp_path, "MIMIC-CXR-JPG", gz=gz)
    outputs = read_all(tmp_path)
    assert len(outputs) == 3  # one output per row
    found = by_key(outputs)
    mean_at, max_at = data.column("Dice RCA (Mean)"), data.column("Dice RCA (Max)")

    filtered = found[f"mimic/{data.rows[FAILING_ROW][0]}"]
    assert float(data.rows[FAILING_ROW][mean_at]) < 0.7
    assert isinstance(filtered, Reject)
    assert (filtered.key, filtered.kind, filtered.reason) == (
        f"mimic/{data.rows[FAILING_ROW][0]}",
        "filtered",
        "dice-rca-mean-below-threshold",
    )

    for index in PASSING:
        row, frontal = data.rows[index], data.frontals[index]
        record = found[f"mimic/{row[0]}"]
        width, height = ORIGINAL_SIZES[index]
        assert isinstance(record, AnnotationRecord)
        assert record.target_key == f"mimic/{row[0]}"
        assert record.quality == {"dice_rca_mean": float(row[mean_at]), "dice_rca_max": float(row[max_at])}
        assert (record.declared_height, record.declared_width) == (height, width)
        assert [m.label for m in record.masks] == ["right lung", "left lung", "heart"]
        for mask in record.masks:
            cell = row[data.column(ORGAN_COLUMN[mask.label])]
            assert (mask.convention, mask.height, mask.width) == ("chexmask", height, width)
            assert mask.rle.split()[:2] == cell.split()[:2]
        # the record's masks, decoded (rle_decode matches CheXmask's own decoder: tests/test_masks.py)
        masks = {m.label: rle_decode(m.rle, m.height, m.width, m.convention) for m in record.masks}
        for contour in record.landmarks:
            points = np.array(contour.points)
            # row 0 stores the landmarks as a NumPy repr, row 1 as flat integers: both parse to the truth
            assert np.array_equal(points, frontal.landmarks[ORGAN_KEY[contour.label]])
            # the filled landmark contour is the mask: same extents in both
            mask_rows, mask_cols = np.nonzero(masks[contour.label])
            assert (points[:, 0].min(), points[:, 0].max()) == (mask_cols.min(), mask_cols.max())
            assert (points[:, 1].min(), points[:, 1].max()) == (mask_rows.min(), mask_rows.max())
        rings = {p.label: np.array(p.points) for p in record.landmarks}
        assert [len(rings[label]) for label in ("right lung", "left lung", "heart")] == [44, 50, 26]
        # Right Lung is the patient's right: the image left
        assert rings["right lung"][:, 0].mean() < width / 2 < rings["left lung"][:, 0].mean()


def test_padchest_swapped_columns_read_by_name_and_empty_size_rejected(tmp_path):
    data = rows_of("Padchest")
    assert data.header[1:3] == ["Dice RCA (Max)", "Dice RCA (Mean)"]
    passing = [data.rows[i] for i in PASSING]
    # the physician-study Padchest subset leaves Height/Width empty
    install(tmp_path, "Padchest", data.csv_text([row[:-2] + ["", ""] for row in passing]))
    outputs = read_all(tmp_path)
    assert sorted((o.key, o.reason) for o in outputs) == sorted(
        (f"padchest/{row[0]}", "missing-size") for row in passing
    )
    assert all(o.key.endswith(".png") for o in outputs)

    # the same rows with their size: quality comes from the columns' names, not positions
    install(tmp_path, "Padchest", data.csv_text(passing))
    found = by_key(read_all(tmp_path))
    records = [found[f"padchest/{row[0]}"] for row in passing]
    assert all(isinstance(r, AnnotationRecord) for r in records)
    for record, row in zip(records, passing, strict=True):
        assert record.quality == {"dice_rca_mean": float(row[2]), "dice_rca_max": float(row[1])}
    # as written, Max < Mean in the first row only: never reordered, never assumed
    assert [r.quality["dice_rca_max"] < r.quality["dice_rca_mean"] for r in records] == [True, False]


def test_vindr_id_column_and_source_selection(tmp_path):
    install(tmp_path, "VinDr-CXR")
    install(tmp_path, "MIMIC-CXR-JPG")
    vindr_rows = rows_of("VinDr-CXR").rows
    found = by_key(read_all(tmp_path, image_sources=("vindr",)))
    outputs = [found[f"vindr/{row[0]}"] for row in vindr_rows]
    assert len(found) == len(outputs)
    assert all(o.native_id.startswith("VinDr-CXR/") for o in outputs if isinstance(o, AnnotationRecord))
    assert [isinstance(o, AnnotationRecord) for o in outputs] == [True, True, False]
    assert read_all(tmp_path, image_sources=("siim",)) == []


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
        chexmask.plan(str(tmp_path), ("mimic", "vindr", "siim", "padchest"))  # at plan time


def test_missing_column_is_an_error(tmp_path):
    data = rows_of("MIMIC-CXR-JPG")
    keep = [i for i, name in enumerate(data.header) if name != "Heart"]
    install(
        tmp_path,
        "MIMIC-CXR-JPG",
        data.csv_text([[row[i] for i in keep] for row in data.rows], [data.header[i] for i in keep]),
    )
    with pytest.raises(ValueError, match="Heart"):
        chexmask.plan(str(tmp_path))


def test_bad_rows_are_rejected_one_by_one(tmp_path):
    data = rows_of("MIMIC-CXR-JPG")
    header, good = data.header, data.rows[0]
    width, height = ORIGINAL_SIZES[0]
    column = {name: i for i, name in enumerate(header)}

    def variant(new_id: str, **changes: str) -> list[str]:
        row = list(good)
        row[column["dicom_id"]] = new_id
        for name, value in changes.items():
            row[column[name.replace("_", " ")]] = value
        return row

    assert good[column["Landmarks"]].startswith("[[")  # the good row stores them as a NumPy repr
    flat = ",".join(str(v) for v in chexmask.parse_landmarks(good[column["Landmarks"]]).ravel())
    crafted = [
        variant("a-short-landmarks", Landmarks=",".join(flat.split(",")[:-2])),
        variant("b-odd-rle", Heart=good[column["Heart"]] + " 7"),
        variant("c-rle-outside", Left_Lung=f"{height * width - 5} 10"),
        variant("d-rle-overlap", Left_Lung="10 5 12 3"),
        variant("e-rle-zero-start", Left_Lung="0 5"),
        variant("f-bad-dice", **{"Dice RCA (Max)": "n/a"}),
        variant("g-nan-dice", **{"Dice RCA (Mean)": "nan"}),
        variant("h-bad-size", Height="1024x"),
        variant("i-flat-landmarks", Landmarks=flat),
        variant(""),
        good,
        good,  # the same id again
        good[:4],  # a truncated row
        variant("k-padded", Height=f" {height} ", Width=f"{width}.0"),
    ]
    # header cells carry stray spaces: still selected by name
    install(tmp_path, "MIMIC-CXR-JPG", data.csv_text(crafted, [f" {h} " for h in header]))
    outputs = read_all(tmp_path)
    assert len(outputs) == len(crafted)
    good_key = f"mimic/{good[column['dicom_id']]}"
    # the rows that cannot be keyed (blank id, malformed) first, in file order, then by key
    assert [(o.key, o.reason) for o in outputs[:2]] == [("mimic/", "missing-id"), (good_key, "malformed-row")]
    assert outputs[1].detail == f"OriginalResolution/MIMIC-CXR-JPG.csv row 13: 4 cells for {len(header)} columns"
    keyed = outputs[2:]
    assert [o.key for o in keyed] == sorted(o.key for o in keyed)
    found: dict[str, list] = {}
    for output in keyed:
        found.setdefault(output.key.removeprefix("mimic/"), []).append(output)
    assert {key: [o.reason if isinstance(o, Reject) else "ok" for o in rows] for key, rows in found.items()} == {
        "a-short-landmarks": ["unparseable-landmarks"],
        "b-odd-rle": ["bad-rle"],
        "c-rle-outside": ["bad-rle"],
        "d-rle-overlap": ["bad-rle"],
        "e-rle-zero-start": ["bad-rle"],
        "f-bad-dice": ["bad-dice-value"],
        "g-nan-dice": ["bad-dice-value"],
        "h-bad-size": ["bad-size"],
        "i-flat-landmarks": ["ok"],
        good_key.removeprefix("mimic/"): ["ok", "duplicate-row"],
        "k-padded": ["ok"],
    }
    assert found["b-odd-rle"][0].detail.startswith("OriginalResolution/MIMIC-CXR-JPG.csv row 2: Heart: ")
    assert found[good_key.removeprefix("mimic/")][1].detail == (
        f"OriginalResolution/MIMIC-CXR-JPG.csv row 12: {good[column['dicom_id']]} appears again (first read from row 11)"
    )
    flat_string = found["i-flat-landmarks"][0]
    assert flat_string.landmarks == found[good_key.removeprefix("mimic/")][0].landmarks  # repr and flat parse alike
    padded = found["k-padded"][0]
    assert (padded.declared_height, padded.declared_width) == (height, width)


def test_a_row_that_is_not_utf8_is_rejected_and_reading_goes_on(tmp_path):
    data = rows_of("MIMIC-CXR-JPG")
    id_at = data.column("dicom_id")
    named = [
        [name if i == id_at else cell for i, cell in enumerate(data.rows[0])] for name in ("first", "second", "third")
    ]
    path = install(tmp_path, "MIMIC-CXR-JPG", data.csv_text(named))
    path.write_bytes(path.read_bytes().replace(b"second", b"s\xe9cond"))
    outputs = read_all(tmp_path)
    assert [(o.key, getattr(o, "reason", "ok")) for o in outputs] == [
        ("mimic/", "undecodable-row"),
        ("mimic/first", "ok"),
        ("mimic/third", "ok"),
    ]
    assert outputs[0].detail == "OriginalResolution/MIMIC-CXR-JPG.csv row 2: bytes that are not UTF-8"


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


def test_row_exactly_at_threshold_passes(tmp_path):
    data = rows_of("MIMIC-CXR-JPG")
    mean = data.column("Dice RCA (Mean)")
    at, below = list(data.rows[FAILING_ROW]), list(data.rows[0])
    at[mean], below[mean] = "0.7", "0.6999"
    install(tmp_path, "MIMIC-CXR-JPG", data.csv_text([at, below]))
    found = by_key(read_all(tmp_path))
    assert isinstance(found[f"mimic/{at[0]}"], AnnotationRecord)
    assert found[f"mimic/{below[0]}"].reason == "dice-rca-mean-below-threshold"


# ---- Preprocessed (1024 x 1024) files, read only where OriginalResolution is absent ------------


def install_preprocessed(root: Path, dataset: str, text: str | None = None) -> Path:
    """Place a CSV as ``root/Preprocessed/<dataset>.csv`` (the dataset's 1024 x 1024 rows by default)."""
    folder = root / "Preprocessed"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{dataset}.csv"
    target.write_text(rows_of(dataset, "preprocessed").csv_text() if text is None else text)
    return target


def test_vindr_preprocessed_rows_are_kept_in_their_space_and_marked(tmp_path):
    install_preprocessed(tmp_path, "VinDr-CXR")
    rows = rows_of("VinDr-CXR", "preprocessed").rows
    found = by_key(read_all(tmp_path, image_sources=("vindr",)))
    outputs = [found[f"vindr/{row[0]}"] for row in rows]
    assert len(found) == len(outputs)
    assert outputs[FAILING_ROW].reason == "dice-rca-mean-below-threshold"
    for record in (outputs[i] for i in PASSING):
        assert record.provenance["space"] == "preprocessed-1024"
        assert record.provenance["file"] == "Preprocessed/VinDr-CXR.csv"
        assert (record.declared_width, record.declared_height) == (1024, 1024)
        assert all((m.width, m.height) == (1024, 1024) for m in record.masks)


def test_original_resolution_is_preferred_and_preprocessed_then_never_opened(tmp_path):
    install(tmp_path, "VinDr-CXR")
    (tmp_path / "Preprocessed").mkdir()
    (tmp_path / "Preprocessed" / "VinDr-CXR.csv.gz").write_bytes(b"not gzip at all")  # opening it would raise
    records = [o for o in read_all(tmp_path, image_sources=("vindr",)) if isinstance(o, AnnotationRecord)]
    assert len(records) == len(PASSING)
    assert {o.provenance["space"] for o in records} == {"original"}
    assert {o.provenance["file"] for o in records} == {"OriginalResolution/VinDr-CXR.csv"}


@pytest.mark.parametrize("dataset, source", [("MIMIC-CXR-JPG", "mimic"), ("Padchest", "padchest")])
def test_cropped_datasets_preprocessed_rows_are_rejected_with_the_reason(tmp_path, dataset, source):
    install_preprocessed(tmp_path, dataset)
    rows = rows_of(dataset, "preprocessed").rows
    outputs = read_all(tmp_path)
    assert sorted((o.key, o.reason, o.kind) for o in outputs) == sorted(
        (f"{source}/{row[0]}", "preprocessed-space-not-invertible", "rejected") for row in rows
    )
    assert all("unpublished offsets" in o.detail and "no OriginalResolution row" in o.detail for o in outputs)


def test_cropped_dataset_without_original_beside_an_invertible_one(tmp_path):
    install(tmp_path, "VinDr-CXR")
    install_preprocessed(tmp_path, "MIMIC-CXR-JPG")
    outputs = read_all(tmp_path, image_sources=("mimic", "vindr"))
    by_source = {(o.key.split("/")[0], o.reason if isinstance(o, Reject) else o.provenance["space"]) for o in outputs}
    assert by_source == {
        ("mimic", "preprocessed-space-not-invertible"),
        ("vindr", "original"),
        ("vindr", "dice-rca-mean-below-threshold"),
    }


def test_preprocessed_size_columns_are_optional_but_must_say_1024(tmp_path):
    data = rows_of("VinDr-CXR", "preprocessed")
    header, rows = data.header, [list(row) for row in data.rows]
    rows[FAILING_ROW][data.column("Dice RCA (Mean)")] = "0.9"  # every row passes the threshold here
    keep = [i for i, name in enumerate(header) if name not in ("Height", "Width")]
    install_preprocessed(
        tmp_path, "VinDr-CXR", data.csv_text([[row[i] for i in keep] for row in rows], [header[i] for i in keep])
    )
    assert all(isinstance(o, AnnotationRecord) for o in read_all(tmp_path, image_sources=("vindr",)))

    sized = [rows[0][:-2] + ["", ""], rows[1][:-2] + ["2048", "1024"], rows[2][:-2] + ["1024", "1024.0"]]
    install_preprocessed(tmp_path, "VinDr-CXR", data.csv_text(sized))
    found = by_key(read_all(tmp_path, image_sources=("vindr",)))
    outputs = [found[f"vindr/{row[0]}"] for row in sized]
    assert [o.reason if isinstance(o, Reject) else "ok" for o in outputs] == ["ok", "bad-size", "ok"]
    assert "not 1024" in outputs[1].detail


def test_no_file_in_either_folder_is_an_error(tmp_path):
    (tmp_path / "Preprocessed").mkdir()
    with pytest.raises(FileNotFoundError, match="OriginalResolution,Preprocessed"):
        read_all(tmp_path)


def test_beam_graph_reads_what_the_serial_run_reads(tmp_path):
    data = rows_of("MIMIC-CXR-JPG")
    rows = [*data.rows, data.rows[0], data.rows[1][:3], [""] + data.rows[1][1:]]  # a repeat, a short row, no id
    install(tmp_path, "MIMIC-CXR-JPG", data.csv_text(rows))
    install(tmp_path, "VinDr-CXR")
    outputs = assert_beam_matches_serial(chexmask.plan(str(tmp_path), ("mimic", "vindr")))
    assert len(outputs) == len(rows) + 3


def test_rows_are_keyed_by_target_image_with_only_the_cells_parse_row_reads(tmp_path):
    data = rows_of("Padchest")
    header = [*data.header[:3], "Patient ID", *data.header[3:]]  # a column the reader does not read
    rows = [[*row[:3], "someone", *row[3:]] for row in data.rows]
    path = install(tmp_path, "Padchest", data.csv_text(rows, header))
    plan = chexmask.plan(str(tmp_path), ("padchest",))
    keyed = [item for row in table_rows(str(path)) for item in plan.key_row("Padchest", row)]
    assert [(item.key, item.tag, item.item[0]) for item in keyed] == [
        (f"padchest/{row[0]}", "Padchest", number) for number, row in enumerate(rows, start=1)
    ]
    assert all("someone" not in item.item[1] and len(item.item[1]) == len(data.header) for item in keyed)
