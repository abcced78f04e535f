"""VinDr-CXR reader: one SourceRecord per ``train/`` or ``test/`` DICOM (see docs/formats/vindr-cxr.md).

Two native layouts are accepted, detected from the files present and never guessed:

- ``physionet``: ``annotations/annotations_{train,test}.csv`` (boxes, one row per reader and box) and
  ``annotations/image_labels_{train,test}.csv`` (28 image-level 0/1 columns, one row per reader in
  train, one consensus row per image in test);
- ``kaggle``: the VinBigData competition ``train.csv`` (``class_id`` column, boxes and ``No finding``
  rows, no image-level label file).

VinDr has no patient or study id: ``subject_id`` stays None and the pipeline treats every image as
its own patient; the official split is the folder. Each DICOM header is read (without pixels) for
the image size. Images with no annotation or label row still become records, with
``provenance["labels"] = "missing"``.

Details and each box's ``where`` name the label file and data row. A box row that is invalid on its
face (inverted, negative, non-numeric) rejects its image (``malformed-annotation``); a row that cannot
be read at all (missing cells, not UTF-8) is an item reject and the image is read without it.
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal

import pydicom
from pydicom.errors import InvalidDicomError

from schemas.records import IMAGE_SOURCES, Box, ImageRef, RawLabel, ReaderOutput, Reject, SourceRecord
from transforms import io
from transforms.sources import csvrows

NAME = "vindr"
SPLITS = ("train", "test")
IMAGE_EXTENSION = ".dicom"

LOCAL_LABELS = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
    "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion",
)
GLOBAL_LABELS = ("COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")
IMAGE_LABELS = LOCAL_LABELS + GLOBAL_LABELS
LABEL_SPELLINGS = {"Other disease": "Other diseases"}  # test-file spelling -> train-file spelling

COORDINATES = ("x_min", "y_min", "x_max", "y_max")
CONSENSUS_READER = "consensus"  # test rows carry no rad_id: they are the consensus of 5 readers
IMAGE_LABEL_SYSTEM = "vindr-image-labels"

LayoutName = Literal["physionet", "kaggle"]
_HEADER_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, struct.error)


@dataclass(frozen=True)
class Layout:
    """Which native layout ``root`` holds, and its label files per split."""

    name: LayoutName
    annotation_files: dict[str, str]  # split -> boxes CSV
    image_label_files: dict[str, str]  # split -> image-level label CSV (physionet only)

    @property
    def origin(self) -> str:
        return "vindr-annotations" if self.name == "physionet" else "vindr-kaggle"


def _csv(base: str, stem: str) -> str | None:
    return io.first_existing(base, f"{stem}.csv", f"{stem}.csv.gz")


def _header(path: str) -> list[str]:
    first = next(csvrows.records(path), None)
    return [name.strip() for name in first[1]] if first else []


def detect_layout(root: str) -> Layout:
    """The layout of ``root``; raises ValueError when neither or both layouts are present."""
    annotations_dir = io.join(root, "annotations")
    physionet_boxes = {s: p for s in SPLITS if (p := _csv(annotations_dir, f"annotations_{s}"))}
    physionet_labels = {s: p for s in SPLITS if (p := _csv(annotations_dir, f"image_labels_{s}"))}
    kaggle_train = _csv(root, "train")
    if kaggle_train and (physionet_boxes or physionet_labels):
        raise ValueError(
            f"VinDr root {root!r} holds both the Kaggle train.csv and PhysioNet annotations/*.csv; "
            "keep only one layout"
        )
    if kaggle_train:
        if "class_id" not in _header(kaggle_train):
            raise ValueError(
                f"{kaggle_train} has no class_id column, so it is not the Kaggle VinBigData train.csv"
            )
        return Layout("kaggle", {"train": kaggle_train}, {})
    if physionet_boxes or physionet_labels:
        for split in SPLITS:
            if (split in physionet_boxes) != (split in physionet_labels):
                present = physionet_boxes.get(split) or physionet_labels.get(split)
                raise ValueError(
                    f"VinDr PhysioNet layout is incomplete: {present} exists but its companion "
                    f"{'image_labels' if split in physionet_boxes else 'annotations'}_{split}.csv does not"
                )
        return Layout("physionet", physionet_boxes, physionet_labels)
    raise ValueError(
        f"no VinDr label files under {root!r}: expected annotations/annotations_{{train,test}}.csv and "
        "annotations/image_labels_{train,test}.csv (PhysioNet) or train.csv with class_id (Kaggle)"
    )


ROW = "_row"
"""Key of the data row number (as text) in every row dict the table readers return."""


@dataclass
class Rows:
    """One label file's good rows grouped by image_id (each row a dict with :data:`ROW`), and its bad
    rows (wrong cell count, not UTF-8) grouped by the image_id they name ("" when unreadable)."""

    by_image: dict[str, list[dict[str, str]]]
    bad: dict[str, list[csvrows.BadRow]]

    def first_row(self, image_id: str) -> int:
        """The number of the first row, good or bad, that names ``image_id``."""
        numbers = [int(row[ROW]) for row in self.by_image.get(image_id, [])]
        return min(numbers + [row.number for row in self.bad.get(image_id, [])])


def _read_rows(path: str, required: Collection[str], columns: Collection[str]) -> Rows:
    """A CSV's ``columns`` (those present) as stripped strings by name, ``Other disease`` renamed."""
    table = csvrows.read_table(path)
    header = [LABEL_SPELLINGS.get(name, name) for name in table.header]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ValueError(f"{path}: duplicate columns {duplicated} (after normalising spellings)")
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {header}")
    present = [(name, header.index(name)) for name in columns if name in header]
    by_image: dict[str, list[dict[str, str]]] = defaultdict(list)
    for number, cells in table.rows:
        row = {name: cells[position].strip() for name, position in present}
        row[ROW] = str(number)
        by_image[row["image_id"]].append(row)
    bad: dict[str, list[csvrows.BadRow]] = defaultdict(list)
    for row in table.bad:
        bad[row.cell(header.index("image_id"))].append(row)
    return Rows(dict(by_image), dict(bad))


def annotation_rows(path: str, layout: LayoutName) -> Rows:
    """Box rows grouped by image_id (column name -> stripped string, plus :data:`ROW`), and bad rows."""
    required = ["image_id", "class_name", *COORDINATES]
    if layout == "kaggle":
        required += ["class_id", "rad_id"]
    return _read_rows(path, required, [*required, "rad_id"])


def image_label_rows(path: str) -> Rows:
    """Image-level label rows grouped by image_id; all 28 label columns are required by name."""
    header = [LABEL_SPELLINGS.get(name, name) for name in
              (name.strip() for name in next(csvrows.records(path), (0, [], None))[1])]
    unknown = sorted(set(header) - {"image_id", "rad_id", *IMAGE_LABELS})
    if unknown:
        raise ValueError(f"{path}: unknown label column(s) {unknown}")
    return _read_rows(path, ["image_id", *IMAGE_LABELS], ["image_id", "rad_id", *IMAGE_LABELS])


def _reader_of(row: dict[str, str]) -> str:
    return row.get("rad_id") or CONSENSUS_READER


def _row_prefix(row: dict[str, str]) -> str:
    """``"row 17, "`` for a row read with its number, "" otherwise."""
    return f"row {row[ROW]}, " if ROW in row else ""


def _label_value(text: str) -> float | None:
    if text == "":
        return None
    value = float(text)
    if value not in (0.0, 1.0):
        raise ValueError(f"label value {text!r} is neither 0 nor 1")
    return value


def image_label_raw_labels(rows: list[dict[str, str]]) -> list[RawLabel]:
    """One RawLabel per (reader, label column); ValueError on a value other than 0, 1 or blank."""
    labels = []
    for row in sorted(rows, key=_reader_of):
        reader = _reader_of(row)
        for name in IMAGE_LABELS:
            try:
                value = _label_value(row[name])
            except ValueError as error:
                raise ValueError(f"{_row_prefix(row)}reader {reader}, column {name!r}: {error}") from None
            labels.append(RawLabel(system=IMAGE_LABEL_SYSTEM, name=name, value=value, reader=reader))
    return labels


def annotation_boxes_and_labels(rows: list[dict[str, str]], origin: str,
                                source_file: str | None = None) -> tuple[list[Box], list[RawLabel]]:
    """Boxes from rows with coordinates; a RawLabel (value 1.0) from rows whose coordinates are all empty.

    Raises ValueError on partial, non-numeric, negative or inverted coordinates, and on a
    ``No finding`` row that has coordinates; the message names the row when it was read with its
    number. With ``source_file`` each box records ``where`` = ``"<source_file> row N"``.
    """
    boxes, labels = [], []
    for row in rows:
        label, reader = row["class_name"], _reader_of(row)
        texts = [row[name] for name in COORDINATES]
        at = _row_prefix(row)
        if not label:
            raise ValueError(f"{at}reader {reader}: empty class_name")
        if all(text == "" for text in texts):
            labels.append(RawLabel(system=origin, name=label, value=1.0, reader=reader))
            continue
        if label == "No finding":
            raise ValueError(f"{at}reader {reader}: 'No finding' row with coordinates {texts}")
        try:
            x1, y1, x2, y2 = (float(text) for text in texts)
        except ValueError:
            raise ValueError(f"{at}reader {reader}, {label!r}: non-numeric coordinates {texts}") from None
        if not all(math.isfinite(v) and v >= 0 for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            raise ValueError(f"{at}reader {reader}, {label!r}: invalid box {texts}")
        where = f"{source_file} row {row[ROW]}" if source_file and ROW in row else None
        boxes.append(Box(label=label, x1=x1, y1=y1, x2=x2, y2=y2, origin=origin, reader=reader, where=where))
    boxes.sort(key=lambda b: (b.reader or "", b.label, b.x1, b.y1, b.x2, b.y2))
    labels.sort(key=lambda r: (r.reader or "", r.name))
    return boxes, labels


def read_image_size(uri: str) -> tuple[int, int]:
    """(height, width) from the DICOM header, pixels not read; ValueError when the header is unusable."""
    try:
        with io.open_binary(uri) as handle:
            header = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
        height, width = int(header.Rows), int(header.Columns)
    except AttributeError:
        raise ValueError("header has no Rows/Columns") from None
    except _HEADER_ERRORS as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"header size {height}x{width} is not positive")
    return height, width


def _reject(image_id: str, reason: str, detail: str, kind: Literal["rejected", "filtered"] = "rejected") -> Reject:
    return Reject(key=f"{NAME}/{image_id}", source=NAME, stage="read", reason=reason, detail=detail, kind=kind)


def image_output(
    image_id: str,
    split: str,
    uri: str,
    layout: Layout,
    annotation_rows: list[dict[str, str]],
    label_rows: list[dict[str, str]],
    root: str = "",
) -> SourceRecord | Reject:
    """The record (or the reason there is none) for one DICOM file of ``split``; details and box
    ``where`` name the label files relative to ``root`` and the row."""
    boxes_file = io.relative(layout.annotation_files[split], root) if split in layout.annotation_files else None
    try:
        boxes, row_labels = annotation_boxes_and_labels(annotation_rows, layout.origin, boxes_file)
    except ValueError as error:
        return _reject(image_id, "malformed-annotation", f"{boxes_file} {error}")
    try:
        image_labels = image_label_raw_labels(label_rows)
    except ValueError as error:
        return _reject(image_id, "bad-label-value",
                       f"{io.relative(layout.image_label_files[split], root)} {error}")
    try:
        height, width = read_image_size(uri)
    except ValueError as error:
        return _reject(image_id, "unreadable-dicom-header", f"{uri}: {error}")
    provenance = {"layout": layout.name}
    if not annotation_rows and not label_rows:
        provenance["labels"] = "missing"
    return SourceRecord(
        image=ImageRef(
            image_key=f"{NAME}/{image_id}",
            source=NAME,
            native_id=image_id,
            uri=uri,
            format="dicom",
            view="PA",
            official_split=split,
            expected_height=height,
            expected_width=width,
        ),
        raw_labels=image_labels + row_labels,
        boxes=boxes,
        provenance=provenance,
    )


def list_images(root: str) -> dict[str, dict[str, str]]:
    """split -> {image_id: uri} for the ``.dicom`` files in ``train/`` and ``test/``."""
    return {
        split: {
            io.basename(path)[: -len(IMAGE_EXTENSION)]: path
            for path in io.glob(io.join(root, split, f"*{IMAGE_EXTENSION}"))
        }
        for split in SPLITS
    }


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """Every VinDr image under ``root`` as a SourceRecord or Reject, sorted by key then split.

    ``image_sources`` is part of the reader contract; an image source ignores it.
    """
    layout = detect_layout(root)
    images = list_images(root)
    in_both = set(images["train"]) & set(images["test"])
    outputs: list[tuple[str, str, ReaderOutput]] = []
    for split in SPLITS:
        boxes_path, labels_path = layout.annotation_files.get(split), layout.image_label_files.get(split)
        box_rows = annotation_rows(boxes_path, layout.name) if boxes_path else Rows({}, {})
        label_rows = image_label_rows(labels_path) if labels_path else Rows({}, {})
        tables = [(io.relative(path, root), rows) for path, rows in ((boxes_path, box_rows), (labels_path, label_rows))
                  if path]  # (file as details cite it, its rows)
        annotations, image_labels = box_rows.by_image, label_rows.by_image
        named = {image_id for _, rows in tables for image_id in (*rows.by_image, *rows.bad)}
        for bad_name, rows in tables:  # a row too broken to name its image is a unit of its own
            for bad in rows.bad.get("", []):
                outputs.append(("", split, _reject("", bad.reason, bad.where(bad_name))))
        for image_id in sorted((set(images[split]) | named) - {""}):
            if image_id not in images[split]:
                first_rows = [f"{name} row {rows.first_row(image_id)}" for name, rows in tables
                              if image_id in rows.by_image or image_id in rows.bad]
                output: ReaderOutput = _reject(
                    image_id, "image-not-present", f"{', '.join(first_rows)}: no {split}/{image_id}{IMAGE_EXTENSION}"
                )
            elif image_id in in_both:
                output = _reject(
                    image_id, "image-in-both-splits", f"{image_id}{IMAGE_EXTENSION} is in train/ and test/"
                )
            else:
                output = image_output(
                    image_id, split, images[split][image_id], layout,
                    annotations.get(image_id, []), image_labels.get(image_id, []), root,
                )
            outputs.append((image_id, split, output))
            if image_id in images[split]:  # a bad row of a present image loses that row, not the image
                for name, rows in tables:
                    for bad in rows.bad.get(image_id, []):
                        outputs.append((image_id, split, Reject(
                            key=f"{NAME}/{image_id}", source=NAME, stage="read", reason=bad.reason,
                            detail=bad.where(name), level="item")))
    outputs.sort(key=lambda item: (item[0], SPLITS.index(item[1])))
    for _, _, output in outputs:
        yield output
