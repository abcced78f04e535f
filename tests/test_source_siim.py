"""SIIM-ACR reader on real RLE rows (read from the torchxrayvision wheel at test time) with small DICOMs
written to match their ImageIds."""

from __future__ import annotations

import functools
import gzip
import uuid
from pathlib import Path

import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from plans import assert_beam_matches_serial
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit
from realdata import siim_rle_lines, wheel_member

from schemas.records import Reject, SourceRecord
from transforms.sources import reader, siim
from transforms.sources.plan import table_rows

# SIIM headers carry PatientAge as a bare number ("62"), not a DICOM AS string; the fixtures copy that
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR AS")

FOUR_MASKS = "1.2.276.0.7230010.3.1.4.8323329.32579.1517875161.299312"
ONE_MASK = "1.2.276.0.7230010.3.1.4.8323329.4904.1517875185.355709"
NEGATIVE = "1.2.276.0.7230010.3.1.4.8323329.5597.1517875188.959090"
NOT_PRESENT = "1.2.276.0.7230010.3.1.4.8323329.10206.1517875222.624433"  # no DICOM written for it
UNLABELLED = "1.2.276.0.7230010.3.1.4.8323329.99999.1517879999.999999"  # a DICOM with no RLE row
NAMED = (FOUR_MASKS, ONE_MASK, NEGATIVE, NOT_PRESENT)


def csv_rows(path: Path) -> list[tuple[str, str]]:
    """(ImageId, EncodedPixels) exactly as in the file, spaces kept."""
    lines = path.read_text().splitlines()[1:]
    return [tuple(line.split(",", 1)) for line in lines if line]


@functools.cache
def stage1_records() -> tuple[tuple[str, str], ...]:
    """Real rows for a stage-1 style file: every row of the first ten images of the wheel's copy and of
    the four named images, in the copy's order (FOUR_MASKS has four rows, one per separate mask)."""
    _, lines = siim_rle_lines()
    first = list(dict.fromkeys(image_id for image_id, _ in lines))[:10]
    wanted = set(first) | set(NAMED)
    return tuple(line for line in lines if line[0] in wanted)


def stage1_text() -> str:
    """The rows spelled as the original stage-1 ``train-rle.csv`` (the copy in the wheel was re-saved):
    a space after the header's comma, so pandas names the column ``' EncodedPixels'``, and one space
    before every value (docs/formats/siim-acr.md §3)."""
    return "ImageId, EncodedPixels\n" + "".join(f"{image_id}, {rle}\n" for image_id, rle in stage1_records())


def stage1_ids() -> list[str]:
    return list(dict.fromkeys(image_id for image_id, _ in stage1_records()))


def patient_of(image_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, image_id))


def write_siim_dicom(
    root: Path,
    image_id: str,
    folder: str = "dicom-images-train",
    size: int = 1024,
    view: str = "PA",
    patient_id: str | None = None,
) -> Path:
    """A SIIM-like DICOM (JPEG Baseline transfer syntax, 1024x1024 in the header) at
    ``<folder>/<Study>/<Series>/<SOP>.dcm``; the pixel data is a stub, the reader never decodes it."""
    prefix, instance_part = image_id.split(".1.4.", 1)
    study_uid, series_uid = f"{prefix}.1.2.{instance_part}", f"{prefix}.1.3.{instance_part}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    meta.MediaStorageSOPInstanceUID = image_id
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, image_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID = patient_of(image_id) if patient_id is None else patient_id
    ds.PatientName = ds.PatientID
    ds.PatientSex, ds.PatientAge = "M", "62"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", view
    ds.SeriesDescription = f"view: {view}"
    ds.StudyDate, ds.StudyTime = "19010101", "000000.00"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([b"\xff\xd8stub\xff\xd9"])
    path = root / folder / study_uid / series_uid / f"{image_id}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_stage1_tree(root: Path) -> Path:
    """The stage-1 file, a DICOM for every id but NOT_PRESENT, one test-folder image, one unlabelled."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train-rle.csv").write_text(stage1_text())
    for image_id in stage1_ids():
        if image_id != NOT_PRESENT:
            folder = "dicom-images-test" if image_id == ONE_MASK else "dicom-images-train"
            write_siim_dicom(root, image_id, folder=folder, view="AP" if image_id == NEGATIVE else "PA")
    write_siim_dicom(root, UNLABELLED)
    return root


def write_rle_file(path: Path, rows: list[tuple[str, str]], header: str = "ImageId,EncodedPixels") -> None:
    path.write_text("\n".join([header, *(f"{i},{r}" for i, r in rows)]) + "\n")


def test_stage1_real_rows(tmp_path):
    outputs = list(siim.read(str(make_stage1_tree(tmp_path))))
    written = csv_rows(tmp_path / "train-rle.csv")
    assert all(rle.startswith(" ") for _, rle in written)  # stage-1 spelling
    keys = [o.key for o in outputs]
    assert keys == sorted(keys) and len(keys) == len(set(keys)) == len(stage1_ids()) + 1 == 15
    found = {o.key: o for o in outputs}

    four = found[f"siim/{FOUR_MASKS}"]
    assert isinstance(four, SourceRecord)
    expected_rles = [rle.strip() for image_id, rle in written if image_id == FOUR_MASKS]
    assert len(expected_rles) == 4
    assert [m.rle for m in four.masks] == expected_rles  # kept apart, in file order, stripped
    assert {(m.label, m.convention, m.height, m.width, m.origin) for m in four.masks} == {
        ("Pneumothorax", "siim", 1024, 1024, "siim-rle")
    }
    assert [(r.system, r.name, r.value) for r in four.raw_labels] == [("siim-rle", "Pneumothorax", 1.0)]
    image = four.image
    assert (image.native_id, image.format, image.view) == (FOUR_MASKS, "dicom", "PA")
    assert image.subject_id == patient_of(FOUR_MASKS)
    assert image.study_id == FOUR_MASKS.replace(".1.4.", ".1.2.", 1)
    assert (image.expected_height, image.expected_width) == (1024, 1024)
    assert image.official_split is None and image.study_datetime is None
    assert four.provenance == {"rle_file": "train-rle.csv", "image_folder": "dicom-images-train"}

    one = found[f"siim/{ONE_MASK}"]
    assert len(one.masks) == 1 and one.masks[0].rle.startswith("175349 7 1013 12")
    assert one.provenance["image_folder"] == "dicom-images-test"

    negative = found[f"siim/{NEGATIVE}"]
    assert negative.masks == [] and negative.raw_labels[0].value == 0.0 and negative.image.view == "AP"

    missing = found[f"siim/{NOT_PRESENT}"]
    assert isinstance(missing, Reject) and (missing.reason, missing.kind) == ("image-not-present", "rejected")
    unlabelled = found[f"siim/{UNLABELLED}"]
    assert isinstance(unlabelled, Reject) and (unlabelled.reason, unlabelled.kind) == ("unlabelled-image", "filtered")

    positives = {o.key for o in outputs if isinstance(o, SourceRecord) and o.raw_labels[0].value == 1.0}
    assert len(positives) == len({i for i, r in written if r.strip() != "-1" and i != NOT_PRESENT})


def test_stage2_spelling_reads_the_same(tmp_path):
    stage1 = list(siim.read(str(make_stage1_tree(tmp_path / "s1"))))
    root2 = make_stage1_tree(tmp_path / "s2")
    stage1_rows = csv_rows(root2 / "train-rle.csv")
    (root2 / "train-rle.csv").unlink()
    write_rle_file(root2 / "stage_2_train.csv", [(i, r.strip()) for i, r in stage1_rows])
    stage2 = list(siim.read(str(root2)))

    def comparable(outputs):
        return [
            o.model_dump(exclude={"image": {"uri"}, "provenance": True})
            if isinstance(o, SourceRecord)
            else (o.key, o.reason)
            for o in outputs
        ]

    assert comparable(stage1) == comparable(stage2)
    assert {o.provenance["rle_file"] for o in stage2 if isinstance(o, SourceRecord)} == {"stage_2_train.csv"}


def test_torchxrayvision_copy_gzipped(tmp_path):
    """The first 30 rows of torchxrayvision's re-saved copy as it spells them (header with the space,
    values without); read from .csv.gz."""
    header, lines = siim_rle_lines()
    rows = lines[:30]
    assert header == "ImageId, EncodedPixels" and not any(r.startswith(" ") for _, r in rows)
    with gzip.open(tmp_path / "train-rle.csv.gz", "wt") as dst:
        dst.write("".join(f"{line}\n" for line in [header, *(f"{i},{r}" for i, r in rows)]))
    for image_id in dict.fromkeys(i for i, _ in rows):
        write_siim_dicom(tmp_path, image_id)
    records = list(siim.read(str(tmp_path)))
    assert all(isinstance(o, SourceRecord) for o in records) and len(records) == len({i for i, _ in rows})
    assert sum(len(o.masks) for o in records) == sum(r != "-1" for _, r in rows)


def test_label_file_must_be_unambiguous(tmp_path):
    with pytest.raises(ValueError, match="no SIIM label file"):
        list(siim.read(str(tmp_path)))
    write_rle_file(tmp_path / "train-rle.csv", [(NEGATIVE, " -1")], header="ImageId, EncodedPixels")
    write_rle_file(tmp_path / "stage_2_train.csv", [])
    with pytest.raises(ValueError, match="both"):
        list(siim.read(str(tmp_path)))


def test_bad_rows_are_rejected_per_image(tmp_path):
    ids = [f"1.2.276.0.7230010.3.1.4.8323329.{n}.1517875100.100000" for n in range(1, 8)]
    rows = [
        (ids[0], "-1"),
        (ids[0], " 10 5"),  # contradictory
        (ids[1], " 10 5 3"),  # odd count
        (ids[2], "10 x"),  # not an integer
        (ids[3], " "),  # blank
        (ids[4], "10 0"),  # zero-length run
        (ids[5], " -1"),
        (ids[5], "-1"),  # two empty rows: a negative image
        (ids[6], "1000 100 1 1"),  # past the end of a 32x32 image
    ]
    write_rle_file(tmp_path / "train-rle.csv", rows, header="ImageId, EncodedPixels")
    for image_id in ids[:6]:
        write_siim_dicom(tmp_path, image_id)
    write_siim_dicom(tmp_path, ids[6], size=32)
    found = {o.key.split("/", 1)[1]: o for o in siim.read(str(tmp_path))}
    assert [getattr(found[i], "reason", None) for i in ids] == [
        "contradictory-rle-rows",
        "bad-rle",
        "bad-rle",
        "bad-rle",
        "bad-rle",
        None,
        "rle-out-of-bounds",
    ]
    assert found[ids[5]].masks == [] and found[ids[5]].raw_labels[0].value == 0.0


def test_unreadable_rows_reject_their_image_by_row_and_the_rest_is_read(tmp_path):
    ids = [f"1.2.276.0.7230010.3.1.4.8323329.{n}.1517875100.100000" for n in range(1, 5)]
    lines = ["ImageId,EncodedPixels", f"{ids[0]},-1", ids[1], f"{ids[2]},10 5,7", f"{ids[3]},-1"]
    data = "\n".join(lines).encode() + b"\n" + f"{ids[2]},3 4".encode() + b"\xe9\n"
    (tmp_path / "train-rle.csv").write_bytes(data)
    for image_id in ids:
        write_siim_dicom(tmp_path, image_id)
    found = {o.key.split("/", 1)[1]: o for o in siim.read(str(tmp_path))}
    assert isinstance(found[ids[0]], SourceRecord) and isinstance(found[ids[3]], SourceRecord)
    assert (found[ids[1]].reason, found[ids[1]].detail) == (
        "malformed-row",
        "train-rle.csv row 2: 1 cells for 2 columns",
    )
    assert found[ids[2]].reason == "malformed-row"  # both of its rows are broken: one too long, one not UTF-8
    assert found[ids[2]].detail == (
        "train-rle.csv row 3: 3 cells for 2 columns; train-rle.csv row 5: bytes that are not UTF-8"
    )


def test_rle_rejects_name_their_row(tmp_path):
    ids = [f"1.2.276.0.7230010.3.1.4.8323329.{n}.1517875100.100000" for n in range(1, 3)]
    write_rle_file(tmp_path / "train-rle.csv", [(ids[0], " 10 5"), (ids[0], " 10 x"), (ids[1], " 1000 100")])
    write_siim_dicom(tmp_path, ids[0])
    write_siim_dicom(tmp_path, ids[1], size=32)
    found = {o.key.split("/", 1)[1]: o for o in siim.read(str(tmp_path))}
    assert found[ids[0]].detail == "train-rle.csv row 2: RLE token 'x' is not a non-negative integer"
    assert found[ids[1]].detail.startswith("train-rle.csv row 3: the RLE spans 1100 pixels > 32x32")


def test_header_problems_are_rejected(tmp_path):
    ids = [f"1.2.276.0.7230010.3.1.4.8323329.{n}.1517875100.100000" for n in range(1, 4)]
    write_rle_file(tmp_path / "train-rle.csv", [(i, "-1") for i in ids])
    write_siim_dicom(tmp_path, ids[0], patient_id="")
    broken = write_siim_dicom(tmp_path, ids[1])
    broken.write_bytes(b"\x00garbage" * 8)
    write_siim_dicom(tmp_path, ids[2], view="")
    found = {o.key.split("/", 1)[1]: o for o in siim.read(str(tmp_path))}
    assert found[ids[0]].reason == "missing-patient-id"
    assert found[ids[1]].reason == "unreadable-dicom-header"
    assert isinstance(found[ids[2]], SourceRecord) and found[ids[2]].image.view is None


def test_same_image_in_train_and_test_folders(tmp_path):
    write_rle_file(tmp_path / "train-rle.csv", [(NEGATIVE, "-1")])
    write_siim_dicom(tmp_path, NEGATIVE)
    write_siim_dicom(tmp_path, NEGATIVE, folder="dicom-images-test")
    assert [o.reason for o in siim.read(str(tmp_path))] == ["duplicate-image-id", "duplicate-image-id"]


def test_deterministic_and_registered(tmp_path):
    root = str(make_stage1_tree(tmp_path))
    assert [o.model_dump() for o in siim.read(root)] == [o.model_dump() for o in reader("siim").read(root)]


runs = st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 500)), min_size=1, max_size=40)


@given(runs, st.sampled_from([" ", "  ", "\t"]))
def test_rle_extent_is_the_sum_of_gaps_and_runs(pairs, separator):
    text = separator.join(f"{gap}{separator}{length}" for gap, length in pairs)
    assert siim.rle_extent(text) == sum(g + n for g, n in pairs)
    with pytest.raises(ValueError, match="odd"):
        siim.rle_extent(f"{text} 7")


def test_real_rle_file_from_the_torchxrayvision_wheel(tmp_path):
    """All 12,954 real rows validate (set TORCHXRAYVISION_WHEEL to the downloaded torchxrayvision-1.5.7 wheel)."""
    target = wheel_member("siim-pneumothorax-train-rle.csv.gz", tmp_path / "train-rle.csv.gz")
    plan = siim.plan(str(tmp_path))
    keyed = [item for row in table_rows(str(target)) for item in plan.key_row("rle", row)]
    assert {item.tag for item in keyed} == {"rle"}  # no unreadable row
    rows: dict[str, list[str]] = {}
    for item in keyed:
        rows.setdefault(item.key, []).append(item.item[1])
    masks = {image_id: [r for r in rles if r != siim.EMPTY_RLE] for image_id, rles in rows.items()}
    assert len(rows) == 12047 and sum(map(len, rows.values())) == 12954
    assert sum(1 for m in masks.values() if m) == 2669 and sum(map(len, masks.values())) == 3576
    assert all(not m or len(m) == len(rows[i]) for i, m in masks.items())  # no image mixes -1 and masks
    assert max(siim.rle_extent(rle) for m in masks.values() for rle in m) <= 1024 * 1024


def test_the_beam_graph_reads_what_the_serial_run_reads(tmp_path):
    root = make_stage1_tree(tmp_path)
    write_siim_dicom(root, NEGATIVE, folder="dicom-images-test")  # a duplicate id across the two folders
    outputs = assert_beam_matches_serial(siim.plan(str(root)))
    assert [o.reason for o in outputs if o.key == f"siim/{NEGATIVE}"] == ["duplicate-image-id"] * 2
