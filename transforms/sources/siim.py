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
import struct
from collections import defaultdict
from collections.abc import Collection, Iterator
from typing import Literal, NamedTuple

import pydicom
from pydicom.errors import InvalidDicomError

from schemas.records import IMAGE_SOURCES, ImageRef, MaskRLE, RawLabel, ReaderOutput, Reject, SourceRecord
from transforms import io
from transforms.sources import csvrows

NAME = "siim"
RLE_FILES = {"stage-1": "train-rle", "stage-2": "stage_2_train"}  # stems; .csv or .csv.gz
IMAGE_FOLDERS = ("dicom-images-train", "dicom-images-test")
EMPTY_RLE = "-1"
MASK_LABEL = "Pneumothorax"  # the same spelling as the raw label, so mask boxes map to the finding
RLE_ORIGIN = "siim-rle"
LABEL_SYSTEM = "siim-rle"
LABEL_NAME = "Pneumothorax"

_INTEGER = re.compile(r"[0-9]+")
_HEADER_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, struct.error)


def find_rle_file(root: str) -> str:
    """The one RLE label file under ``root``; ValueError when there is none or both stages are present."""
    found = {
        stage: path
        for stage, stem in RLE_FILES.items()
        if (path := io.first_existing(root, f"{stem}.csv", f"{stem}.csv.gz"))
    }
    if not found:
        raise ValueError(f"no SIIM label file under {root!r}: expected train-rle.csv or stage_2_train.csv (or .gz)")
    if len(found) > 1:
        raise ValueError(
            f"SIIM root {root!r} holds both {found['stage-1']} and {found['stage-2']}; "
            "stage 2 contains stage 1, keep only one"
        )
    return next(iter(found.values()))


RleRows = dict[str, list[tuple[int, str]]]
"""ImageId -> its ``(row number, stripped EncodedPixels)`` in file order."""


def rle_table(path: str) -> tuple[RleRows, list[csvrows.BadRow], int | None]:
    """The RLE rows by ImageId, the rows that are not CSV rows of the header (wrong cell count, not
    UTF-8), and the ImageId position (to key a bad row); both header spellings accepted."""
    table = csvrows.read_table(path)
    missing = [name for name in ("ImageId", "EncodedPixels") if name not in table.header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {table.header}")
    id_at, rle_at = table.position("ImageId"), table.position("EncodedPixels")
    rows: RleRows = defaultdict(list)
    for number, cells in table.rows:
        rows[cells[id_at].strip()].append((number, cells[rle_at].strip()))
    return dict(rows), table.bad, id_at


def read_rle_rows(path: str) -> dict[str, list[str]]:
    """ImageId -> its stripped EncodedPixels values in file order; ValueError on any bad row."""
    rows, bad, _ = rle_table(path)
    if bad:
        raise ValueError(bad[0].where(path))
    return {image_id: [rle for _, rle in entries] for image_id, entries in rows.items()}


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


class Header(NamedTuple):
    """The allow-listed DICOM header fields this reader keeps."""

    patient_id: str | None
    study_id: str | None
    view: str | None
    height: int
    width: int


def _text(header: pydicom.Dataset, keyword: str) -> str | None:
    return str(header.get(keyword, "") or "").strip() or None


def read_header(uri: str) -> Header:
    """Ids, view and size from the DICOM header, pixels not read; ValueError when the header is unusable."""
    try:
        with io.open_binary(uri) as handle:
            header = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
        fields = Header(
            patient_id=_text(header, "PatientID"),
            study_id=_text(header, "StudyInstanceUID"),
            view=_text(header, "ViewPosition"),
            height=int(header.Rows),
            width=int(header.Columns),
        )
    except AttributeError:
        raise ValueError("header has no Rows/Columns") from None
    except _HEADER_ERRORS as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None
    if fields.height <= 0 or fields.width <= 0:
        raise ValueError(f"header size {fields.height}x{fields.width} is not positive")
    return fields


def _reject(image_id: str, reason: str, detail: str, kind: Literal["rejected", "filtered"] = "rejected") -> Reject:
    return Reject(key=f"{NAME}/{image_id}", source=NAME, stage="read", reason=reason, detail=detail, kind=kind)


def image_output(image_id: str, uri: str, rows: list[tuple[int, str]], rle_file: str) -> SourceRecord | Reject:
    """The record (or the reason there is none) for one labelled DICOM and its numbered RLE rows.

    ``rle_file`` is the label file's name as reject details cite it (``"train-rle.csv row 3: ..."``)."""
    empty = [number for number, rle in rows if rle == EMPTY_RLE]
    masks = [(number, rle) for number, rle in rows if rle != EMPTY_RLE]
    if empty and masks:
        return _reject(
            image_id, "contradictory-rle-rows",
            f"{rle_file} rows {', '.join(str(number) for number, _ in rows)}: "
            f"{len(empty)} '-1' row(s) and {len(masks)} mask row(s)",
        )
    extents = []
    for number, rle in masks:
        try:
            extents.append((number, rle_extent(rle)))
        except ValueError as error:
            return _reject(image_id, "bad-rle", f"{rle_file} row {number}: {error}")
    try:
        header = read_header(uri)
    except ValueError as error:
        return _reject(image_id, "unreadable-dicom-header", f"{uri}: {error}")
    if header.patient_id is None:
        return _reject(image_id, "missing-patient-id", f"{uri}: no PatientID, needed for the patient-wise split")
    height, width = header.height, header.width
    for number, extent in extents:
        if extent > height * width:
            return _reject(
                image_id, "rle-out-of-bounds",
                f"{rle_file} row {number}: the RLE spans {extent} pixels > {height}x{width} of {io.basename(uri)}",
            )
    return SourceRecord(
        image=ImageRef(
            image_key=f"{NAME}/{image_id}",
            source=NAME,
            native_id=image_id,
            uri=uri,
            format="dicom",
            subject_id=header.patient_id,
            study_id=header.study_id,
            view=header.view,
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


def list_images(root: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """({SOPInstanceUID: uri} for unique file stems, {SOPInstanceUID: uris} for stems found more than once)."""
    found: dict[str, list[str]] = defaultdict(list)
    for folder in IMAGE_FOLDERS:
        for uri in io.glob(io.join(root, folder, "*", "*", "*.dcm")):
            found[io.basename(uri)[: -len(".dcm")]].append(uri)
    unique = {image_id: uris[0] for image_id, uris in found.items() if len(uris) == 1}
    repeated = {image_id: uris for image_id, uris in found.items() if len(uris) > 1}
    return unique, repeated


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """Every SIIM DICOM and every RLE ImageId under ``root`` as a SourceRecord or Reject, sorted by key.

    ``image_sources`` is part of the reader contract; an image source ignores it.
    """
    rle_file = find_rle_file(root)
    name = io.relative(rle_file, root)
    rle_rows, bad_rows, id_at = rle_table(rle_file)
    bad_by_id: dict[str, list[csvrows.BadRow]] = defaultdict(list)
    for bad in bad_rows:
        bad_by_id[bad.cell(id_at)].append(bad)
    images, repeated = list_images(root)
    for image_id in sorted(set(rle_rows) | set(images) | set(repeated) | set(bad_by_id)):
        if image_id in bad_by_id:  # its masks cannot be trusted when one of its rows is unreadable
            bad = bad_by_id[image_id]
            yield _reject(image_id, bad[0].reason, "; ".join(row.where(name) for row in bad))
        elif not image_id:
            yield _reject(image_id, "missing-image-id",
                          f"{name} rows {', '.join(str(n) for n, _ in rle_rows[image_id])}: blank ImageId")
        elif image_id in repeated:
            for uri in repeated[image_id]:
                yield _reject(image_id, "duplicate-image-id", f"{uri}: this SOPInstanceUID is in {repeated[image_id]}")
        elif image_id not in images:
            first = rle_rows[image_id][0][0]
            yield _reject(image_id, "image-not-present", f"{name} row {first}: no DICOM named {image_id}.dcm")
        elif image_id not in rle_rows:
            yield _reject(image_id, "unlabelled-image", f"{images[image_id]} has no row in {name}", kind="filtered")
        else:
            yield image_output(image_id, images[image_id], rle_rows[image_id], name)
