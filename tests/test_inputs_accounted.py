"""Every input accounted for: trees behind links, link cycles, broken links, folders and files that
cannot be opened, gzipped MIMIC DICOM, and a CSV present both plain and gzipped (issue 18).

Each is read through the serial executor and the Beam graph, which must agree."""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from plans import assert_beam_matches_serial
from test_source_imagenome import full_graph, write_graph, write_splits
from test_source_mimic import REPORT, Image, build_tree, fake_dicom_id

from schemas.records import AnnotationRecord, Reject, SourceRecord
from transforms import images, io
from transforms.sources import chexmask, imagenome, mimic, padchest, siim, vindr

A = Image(fake_dicom_id("a"), "10000032", "50000001")
B = Image(fake_dicom_id("b"), "10000032", "50000001", view="LATERAL")
C = Image(fake_dicom_id("c"), "10000032", "50000002")
D = Image(fake_dicom_id("d"), "11000045", "50000003")
IMAGES = [A, B, C, D]


def mimic_tree(root: Path) -> Path:
    build_tree(root, IMAGES, reports={"50000001": REPORT, "50000002": REPORT, "50000003": REPORT})
    return root


def read(root: Path) -> list:
    """The outputs of the MIMIC plan under ``root``, the Beam graph checked against the serial run."""
    return assert_beam_matches_serial(mimic.plan(str(root)))


def described(outputs: list) -> list:
    """Records without their path-dependent parts, sorted, for comparing two trees."""
    return sorted(
        (
            o.image.native_id,
            o.image.study_id,
            o.image.format,
            o.image.view,
            o.image.official_split,
            o.report.text if o.report else None,
        )
        for o in outputs
        if isinstance(o, SourceRecord)
    )


def record_rejects(outputs: list) -> list[Reject]:
    return [o for o in outputs if isinstance(o, Reject) and o.level == "record"]


def test_a_study_folder_behind_a_link_is_read_like_the_real_one(tmp_path):
    plain = read(mimic_tree(tmp_path / "plain"))
    root = mimic_tree(tmp_path / "linked")
    study = root / A.folder()
    shutil.move(study, tmp_path / "elsewhere")
    study.symlink_to(tmp_path / "elsewhere")  # e.g. a study on another disk
    shutil.move(root / "files" / "p11", tmp_path / "p11-elsewhere")
    (root / "files" / "p11").symlink_to(tmp_path / "p11-elsewhere")  # a whole group folder
    outputs = read(root)
    assert described(outputs) == described(plain) and len(described(outputs)) == 4
    assert not [o for o in outputs if isinstance(o, Reject)]
    assert {o.image.uri for o in outputs if isinstance(o, SourceRecord)} >= {str(study / f"{A.dicom_id}.dcm")}


def test_a_link_cycle_is_read_once(tmp_path, caplog):
    plain = read(mimic_tree(tmp_path / "plain"))
    root = mimic_tree(tmp_path / "cycle")
    (root / A.folder() / "again").symlink_to(root / "files" / "p10")  # p10/.../s50000001/again/p10000032/...
    with caplog.at_level(logging.WARNING, logger="transforms.io"):
        outputs = read(root)
    assert described(outputs) == described(plain)
    assert not [o for o in outputs if isinstance(o, Reject)]
    assert "again is the folder" in caplog.text


def test_a_broken_link_is_a_reject_naming_it(tmp_path):
    root = mimic_tree(tmp_path / "mimic")
    gone = root / A.folder() / f"{fake_dicom_id('gone')}.dcm"
    gone.symlink_to(tmp_path / "unmounted" / "x.dcm")
    outputs = read(root)
    (reject,) = record_rejects(outputs)
    relative = gone.relative_to(root / "files")
    assert (reject.key, reject.reason, reject.stage) == (f"mimic/{relative}", "broken-link", "read")
    assert (
        reject.detail == f"{gone.relative_to(root)}: a link to {tmp_path / 'unmounted' / 'x.dcm'}, which does not exist"
    )
    assert len(described(outputs)) == 4


def test_an_unreadable_study_folder_is_a_reject_and_counts_reconcile(tmp_path, unreadable_folder):
    root = mimic_tree(tmp_path / "mimic")
    unreadable_folder(root / A.folder())
    outputs = read(root)
    (reject,) = record_rejects(outputs)
    assert (reject.key, reject.reason) == ("mimic/p10/p10000032/s50000001", "unreadable-folder")
    assert reject.detail == f"{(root / A.folder()).relative_to(root)}: cannot be listed: Permission denied"
    # the other two studies are read; the folder's two images are one reject: nothing vanishes unseen
    assert [record[0] for record in described(outputs)] == sorted([C.dicom_id, D.dicom_id])
    emitted = sum(isinstance(o, SourceRecord) for o in outputs)
    assert emitted + len(record_rejects(outputs)) == 3


def test_an_unreadable_report_costs_the_image_its_report_only(tmp_path, monkeypatch):
    root = mimic_tree(tmp_path / "mimic")
    report = str(root / f"{C.folder()}.txt")
    read_bytes = io.read_bytes

    def guarded(path):
        if path == report:
            raise PermissionError(13, "Permission denied", path)
        return read_bytes(path)

    monkeypatch.setattr(io, "read_bytes", guarded)
    outputs = list(mimic.read(str(root)))
    record = next(o for o in outputs if isinstance(o, SourceRecord) and o.image.native_id == C.dicom_id)
    assert record.report is None and record.provenance == {"report": "unreadable-report"}
    (reject,) = [o for o in outputs if isinstance(o, Reject)]
    assert (reject.key, reject.reason, reject.level) == (f"mimic/{C.dicom_id}", "unreadable-report", "item")
    assert reject.detail.startswith(f"{C.folder()}.txt: cannot be read: ")
    assert len(described(outputs)) == 4


def test_an_unreadable_scene_graph_is_a_reject(tmp_path, monkeypatch):
    graph = full_graph()
    path = write_graph(tmp_path, graph["image_id"], graph)
    write_splits(tmp_path, {"train": [graph["image_id"]]}, [])
    read_bytes = io.read_bytes
    monkeypatch.setattr(
        io,
        "read_bytes",
        lambda name: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
        if name == str(path)
        else read_bytes(name),
    )
    (reject,) = list(imagenome.read(str(tmp_path)))
    assert (reject.key, reject.reason, reject.kind) == (f"mimic/{graph['image_id']}", "unreadable-file", "rejected")
    assert reject.detail.startswith("silver_dataset/scene_graph/") and "Permission denied" in reject.detail
    monkeypatch.undo()
    outputs = list(imagenome.read(str(tmp_path)))
    assert type(outputs[0]) is AnnotationRecord


def gzip_images(root: Path, keep_plain: bool = False) -> None:
    for path in sorted((root / "files").rglob("*.dcm")):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        if not keep_plain:
            path.unlink()


def test_a_gzipped_dicom_tree_reads_the_same_records_and_pixels(tmp_path):
    plain = read(mimic_tree(tmp_path / "plain"))
    root = mimic_tree(tmp_path / "gz")
    gzip_images(root)
    outputs = read(root)
    assert described(outputs) == described(plain) and len(described(outputs)) == 4
    assert not [o for o in outputs if isinstance(o, Reject)]
    for record in (o for o in outputs if isinstance(o, SourceRecord)):
        assert record.image.uri.endswith(".dcm.gz")
        twin = str(tmp_path / "plain" / Path(record.image.uri).relative_to(root)).removesuffix(".gz")
        decoded = images.decode_letterboxed(io.read_image_bytes(record.image.uri), record.image.format, 32)
        expected = images.decode_letterboxed(io.read_image_bytes(twin), "dicom", 32)
        assert np.array_equal(decoded.canvas, expected.canvas)


def test_plain_dicom_is_read_before_gzipped_and_the_other_filtered(tmp_path):
    root = mimic_tree(tmp_path / "both")
    gzip_images(root, keep_plain=True)
    outputs = read(root)
    assert {o.image.uri for o in outputs if isinstance(o, SourceRecord)} == {
        str(root / i.folder() / f"{i.dicom_id}.dcm") for i in IMAGES
    }
    filtered = [o for o in outputs if isinstance(o, Reject)]
    assert sorted((o.key, o.reason, o.kind) for o in filtered) == sorted(
        (f"mimic/{i.dicom_id}", "duplicate-image-file", "filtered") for i in IMAGES
    )
    assert all(o.detail.endswith(".dcm (.dcm before .dcm.gz before .jpg)") for o in filtered)


def test_a_gzip_file_that_is_not_gzip_is_an_error_when_read(tmp_path):
    path = tmp_path / "x.dcm.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(OSError):
        io.read_image_bytes(str(path))


# Every reader that reads CSVs finds them through io.csv_file: both x.csv and x.csv.gz is refused at plan
# time (one of them is probably partial), naming both, whichever reader it is.
CSV_READERS = [
    (mimic, "mimic-cxr-2.0.0-metadata", ()),
    (imagenome, "silver_dataset/splits/train", ("mimic",)),
    (padchest, padchest.LABEL_CSV, ("padchest",)),
    (siim, "train-rle", ("siim",)),
    (vindr, "train", ("vindr",)),
    (vindr, "annotations/annotations_train", ("vindr",)),
    (chexmask, "Preprocessed/VinDr-CXR", ("vindr",)),
]


@pytest.mark.parametrize(
    ("reader", "stem", "image_sources"), CSV_READERS, ids=[f"{reader.NAME}:{stem}" for reader, stem, _ in CSV_READERS]
)
def test_a_csv_beside_its_gzipped_copy_is_refused_naming_both(tmp_path, caplog, reader, stem, image_sources):
    if reader is imagenome:
        write_graph(tmp_path, fake_dicom_id("g"), full_graph())
    plain, packed = tmp_path / f"{stem}.csv", tmp_path / f"{stem}.csv.gz"
    plain.parent.mkdir(parents=True, exist_ok=True)
    plain.write_text("a,b\n1,2\n")  # partial: the gzipped copy has a row more
    packed.write_bytes(gzip.compress(b"a,b\n1,2\n3,4\n"))
    with caplog.at_level(logging.WARNING, logger="transforms.io"), pytest.raises(io.AmbiguousInputError) as error:
        reader.plan(str(tmp_path), image_sources or ("mimic", "vindr", "siim", "padchest"))
    assert str(error.value).startswith(f"{plain} and {packed} both exist")
    assert f"both {plain} and {packed} exist" in caplog.text


def test_either_csv_alone_is_read(tmp_path):
    root = mimic_tree(tmp_path / "mimic")
    plain = read(root)
    for stem in ("mimic-cxr-2.0.0-metadata", "mimic-cxr-2.0.0-split"):
        packed = root / f"{stem}.csv.gz"
        (root / f"{stem}.csv").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    assert described(read(root)) == described(plain)
