"""SIIM-ACR Pneumothorax reader: one SourceRecord per labelled DICOM (see docs/formats/siim-acr.md).

Labels come from ``train-rle.csv`` (stage 1: header ``ImageId, EncodedPixels`` and values with a
leading space) or ``stage_2_train.csv`` (no spaces); names and values are stripped, so both read the
same. Images are ``dicom-images-{train,test}/<Study>/<Series>/<SOPInstanceUID>.dcm``; the header
(read without pixels) gives the patient id the split needs, the view and the mask size.

Each non-``-1`` row is kept as its own MaskRLE (the geometry stage unions them). The RLE strings
are checked for syntax and extent here but decoded by ``transforms.masks`` (SIIM convention:
0-based, relative starts, column-major). There is no official split (``official_split`` None) and
no usable date: every SIIM header says 1901-01-01, so ``study_datetime`` stays None.

Reject details name the label file and its data row (``"train-rle.csv row 17: ..."``). A row that
cannot be read (missing cells, not UTF-8) rejects the image it names: its masks cannot be trusted.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator

from schemas.records import IMAGE_SOURCES, ImageRef, MaskRLE, RawLabel, ReaderOutput, Reject, SourceRecord
from transforms import io
from transforms.sources import csvrows, dicomheader
from transforms.sources.plan import Keyed, Listing, ReadPlan, Row, Table, read_reject, run_serially

NAME = "siim"
RLE_FILES = {"stage-1": "train-rle", "stage-2": "stage_2_train"}  # stems; .csv or .csv.gz
IMAGE_FOLDERS = ("dicom-images-train", "dicom-images-test")
EMPTY_RLE = "-1"
MASK_LABEL = "Pneumothorax"  # the same spelling as the raw label, so mask boxes map to the finding
RLE_ORIGIN = "siim-rle"
LABEL_SYSTEM = "siim-rle"
LABEL_NAME = "Pneumothorax"

_INTEGER = re.compile(r"[0-9]+")


def find_rle_file(root: str) -> str:
    """The one RLE label file under ``root``; ValueError when there is none or both stages are present."""
    found = {stage: path for stage, stem in RLE_FILES.items() if (path := io.csv_file(root, stem))}
    if not found:
        raise ValueError(f"no SIIM label file under {root!r}: expected train-rle.csv or stage_2_train.csv (or .gz)")
    if len(found) > 1:
        raise ValueError(
            f"SIIM root {root!r} holds both {found['stage-1']} and {found['stage-2']}; "
            "stage 2 contains stage 1, keep only one"
        )
    return next(iter(found.values()))


def rle_extent(rle: str) -> int:
    """Pixels an RLE string spans (sum of its gaps and run lengths); ValueError on bad syntax.

    Syntax: a non-empty, even-length list of non-negative integers whose run lengths are positive.
    """
    tokens = rle.split()
    if not tokens:
        raise ValueError("empty RLE string (an empty mask is written -1)")
    bad = [token for token in tokens if not _INTEGER.fullmatch(token)]
    if bad:
        raise ValueError(f"RLE token {bad[0]!r} is not a non-negative integer")
    if len(tokens) % 2:
        raise ValueError(f"RLE has an odd number of integers ({len(tokens)})")
    values = [int(token) for token in tokens]
    if any(length == 0 for length in values[1::2]):
        raise ValueError("RLE has a run of length 0")
    return sum(values)


HEADER_KEYWORDS = ("PatientID", "StudyInstanceUID", "ViewPosition")
"""The allow-listed DICOM header fields this reader keeps, besides the size: patient, study, view."""


def image_output(
    image_id: str, uri: str, rows: list[tuple[int, str]], rle_file: str, root: str = ""
) -> SourceRecord | Reject:
    """The record (or the reason there is none) for one labelled DICOM and its numbered RLE rows.

    ``rle_file`` is the label file's name as reject details cite it (``"train-rle.csv row 3: ..."``);
    details name the DICOM relative to ``root``."""
    where = io.relative(uri, root) if root else uri
    empty = [number for number, rle in rows if rle == EMPTY_RLE]
    masks = [(number, rle) for number, rle in rows if rle != EMPTY_RLE]
    if empty and masks:
        return read_reject(
            NAME,
            f"{NAME}/{image_id}",
            "contradictory-rle-rows",
            f"{rle_file} rows {', '.join(str(number) for number, _ in rows)}: "
            f"{len(empty)} '-1' row(s) and {len(masks)} mask row(s)",
        )
    extents = []
    for number, rle in masks:
        try:
            extents.append((number, rle_extent(rle)))
        except ValueError as error:
            return read_reject(NAME, f"{NAME}/{image_id}", "bad-rle", f"{rle_file} row {number}: {error}")
    try:
        header = dicomheader.read_fields(uri, HEADER_KEYWORDS)
    except ValueError as error:
        return read_reject(NAME, f"{NAME}/{image_id}", "unreadable-dicom-header", f"{where}: {error}")
    patient_id, study_id, view = (header.text[keyword] for keyword in HEADER_KEYWORDS)
    if patient_id is None:
        return read_reject(
            NAME,
            f"{NAME}/{image_id}",
            "missing-patient-id",
            f"{where}: no PatientID, needed for the patient-wise split",
        )
    height, width = header.height, header.width
    for number, extent in extents:
        if extent > height * width:
            return read_reject(
                NAME,
                f"{NAME}/{image_id}",
                "rle-out-of-bounds",
                f"{rle_file} row {number}: the RLE spans {extent} pixels > {height}x{width} of {io.basename(uri)}",
            )
    return SourceRecord(
        image=ImageRef(
            image_key=f"{NAME}/{image_id}",
            source=NAME,
            native_id=image_id,
            uri=uri,
            format="dicom",
            subject_id=patient_id,
            study_id=study_id,
            view=view,
            expected_height=height,
            expected_width=width,
        ),
        raw_labels=[RawLabel(system=LABEL_SYSTEM, name=LABEL_NAME, value=1.0 if masks else 0.0)],
        masks=[
            MaskRLE(label=MASK_LABEL, rle=rle, convention="siim", height=height, width=width, origin=RLE_ORIGIN)
            for _, rle in masks
        ],
        # <root>/<dicom-images-*>/<Study>/<Series>/<SOP>.dcm: the image folder is 4th from the end
        provenance={"rle_file": io.basename(rle_file), "image_folder": uri.rstrip("/").split("/")[-4]},
    )


class SiimPlan(ReadPlan):
    """DICOMs and RLE rows joined by ImageId (SOPInstanceUID); a row that cannot be read keys its image."""

    source = NAME
    rounds = (frozenset({"image", "rle", "bad-row"}),)

    def __init__(self, root: str):
        rle_file = find_rle_file(root)
        header = csvrows.read_header(rle_file)
        missing = [name for name in ("ImageId", "EncodedPixels") if name not in header]
        if missing:
            raise ValueError(f"{rle_file}: missing column(s) {missing}; found {header}")
        self.root, self.rle_name = root, io.relative(rle_file, root)
        self.width = len(header)
        self.id_at, self.rle_at = header.index("ImageId"), header.index("EncodedPixels")
        self.listings = tuple(Listing("image", io.join(root, folder), "*/*/*.dcm") for folder in IMAGE_FOLDERS)
        self.tables = (Table("rle", rle_file),)

    def key_file(self, tag: str, path: str) -> Iterator[Keyed]:
        yield Keyed(io.basename(path)[: -len(".dcm")], "image", (path,))

    def key_row(self, tag: str, row: Row) -> Iterator[Keyed]:
        if row.problem is None:
            yield Keyed(row.cells[self.id_at].strip(), "rle", (row.number, row.cells[self.rle_at].strip()))
        else:
            bad = csvrows.bad_row(row.number, row.cells, row.problem, self.width)
            yield Keyed(bad.cell(self.id_at), "bad-row", (row.number, bad.reason, bad.where(self.rle_name)))

    def join(self, image_id: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput]:
        images, rle_rows, bad = items["image"], items["rle"], items["bad-row"]
        if bad:  # its masks cannot be trusted when one of its rows is unreadable
            yield read_reject(NAME, f"{NAME}/{image_id}", bad[0][1], "; ".join(where for _, _, where in bad))
        elif not image_id:
            yield read_reject(
                NAME,
                f"{NAME}/{image_id}",
                "missing-image-id",
                f"{self.rle_name} rows {', '.join(str(n) for n, _ in rle_rows)}: blank ImageId",
            )
        elif len(images) > 1:
            uris = [uri for (uri,) in images]
            for uri in uris:
                yield read_reject(
                    NAME,
                    f"{NAME}/{image_id}",
                    "duplicate-image-id",
                    f"{io.relative(uri, self.root)}: this SOPInstanceUID is also in "
                    f"{[io.relative(other, self.root) for other in uris if other != uri]}",
                )
        elif not images:
            yield read_reject(
                NAME,
                f"{NAME}/{image_id}",
                "image-not-present",
                f"{self.rle_name} row {rle_rows[0][0]}: no DICOM named {image_id}.dcm",
            )
        elif not rle_rows:
            yield read_reject(
                NAME,
                f"{NAME}/{image_id}",
                "unlabelled-image",
                f"{io.relative(images[0][0], self.root)} has no row in {self.rle_name}",
                kind="filtered",
            )
        else:
            yield image_output(image_id, images[0][0], rle_rows, self.rle_name, self.root)


def plan(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> SiimPlan:
    """The read plan of the SIIM tree under ``root``; ValueError when its label file is missing,
    ambiguous or lacks a column. ``image_sources`` is part of the reader contract; SIIM owns its images."""
    return SiimPlan(root)


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """Every SIIM DICOM and every RLE ImageId under ``root`` as a SourceRecord or Reject, sorted by key."""
    return run_serially(plan(root, image_sources))
