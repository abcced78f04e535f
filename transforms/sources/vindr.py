"""VinDr-CXR reader: one SourceRecord per ``train/`` or ``test/`` DICOM (see docs/formats/vindr-cxr.md).

Two native layouts are accepted, detected from the files present and never guessed:

- ``physionet``: ``annotations/annotations_{train,test}.csv`` (boxes, one row per reader and box) and
  ``annotations/image_labels_{train,test}.csv`` (28 image-level 0/1 columns, one row per reader in
  train, one consensus row per image in test);
- ``kaggle``: the VinBigData competition ``train.csv`` (``class_id`` column, boxes and ``No finding``
  rows, no image-level label file).

VinDr has no patient or study id: ``subject_id`` stays None and the pipeline treats every image as
its own patient; the official split is the folder. Each DICOM header is read (its first bytes, no
pixels) for the image size. Images with no annotation or label row still become records, with
``provenance["labels"] = "missing"``.

The read plan (:class:`VindrPlan`) detects the layout and checks the label files' headers up front,
lists ``train/`` and ``test/`` once each in shards by the first hex digit of the name, keys every
DICOM and every label row by image_id and joins them per image_id: the header read and the rules
below run there, one image at a time.

Details and each box's ``where`` name the label file and data row. A box row that is invalid on its
face (inverted, negative, non-numeric) rejects its image (``malformed-annotation``); a row that cannot
be read at all (missing cells, not UTF-8) is an item reject and the image is read without it, or a
reject of its own when not even its image_id can be read. Rows that name an image absent from their
split's folder are one ``image-not-present`` reject naming the first row of each file; an image in
both folders is an ``image-in-both-splits`` reject per folder. A blank ``rad_id`` is the consensus
reader only in ``test/`` with no named reader beside it; in train, or beside named readers of the
same image, the row is an item reject ``blank-reader-id`` (:func:`blank_readers`,
:mod:`transforms.sources.conflicts`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal, cast

from schemas.records import IMAGE_SOURCES, Box, ImageRef, OfficialSplit, RawLabel, ReaderOutput, Reject, SourceRecord
from transforms import io
from transforms.sources import csvrows, dicomheader
from transforms.sources.plan import HEX, Keyed, Listing, ReadPlan, Row, Table, read_reject, run_serially

NAME = "vindr"
SPLITS = ("train", "test")
IMAGE_EXTENSION = ".dicom"

LOCAL_LABELS = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Clavicle fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged PA",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Lung cavity",
    "Lung cyst",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Other lesion",
)
GLOBAL_LABELS = ("COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")
IMAGE_LABELS = LOCAL_LABELS + GLOBAL_LABELS
LABEL_SPELLINGS = {"Other disease": "Other diseases"}  # test-file spelling -> train-file spelling

COORDINATES = ("x_min", "y_min", "x_max", "y_max")
CONSENSUS_READER = "consensus"  # test rows carry no rad_id: they are the consensus of 5 readers
IMAGE_LABEL_SYSTEM = "vindr-image-labels"

LayoutName = Literal["physionet", "kaggle"]


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
    return io.csv_file(base, stem)


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
            f"VinDr root {root!r} holds both the Kaggle train.csv and PhysioNet annotations/*.csv; keep only one layout"
        )
    if kaggle_train:
        if "class_id" not in _header(kaggle_train):
            raise ValueError(f"{kaggle_train} has no class_id column, so it is not the Kaggle VinBigData train.csv")
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
"""Key of the data row number (as text) in every row dict the joins rebuild from keyed items."""


@dataclass(frozen=True)
class LabelFile:
    """One label CSV as the plan keys its rows: the split, which file of the split it is (0 boxes,
    1 image labels), its name as details cite it, the header's width and the kept columns' positions."""

    split: int  # index in SPLITS
    kind: int  # 0: annotations (boxes), 1: image labels
    name: str
    width: int
    id_at: int
    columns: tuple[tuple[str, int], ...]  # (name, position) of the cells a row item keeps, in order


def _checked_columns(path: str, required: Collection[str], columns: Collection[str]) -> tuple[list[str], list]:
    """The header (``Other disease`` renamed) and the (name, position) of ``columns`` present in it;
    ValueError on a duplicate column (after renaming) or a missing required one."""
    header = [LABEL_SPELLINGS.get(name, name) for name in csvrows.read_header(path)]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ValueError(f"{path}: duplicate columns {duplicated} (after normalising spellings)")
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {header}")
    return header, list(dict.fromkeys((name, header.index(name)) for name in columns if name in header))


def annotation_columns(path: str, layout: LayoutName) -> tuple[list[str], list]:
    """A boxes CSV's header and kept columns; the coordinates, class and image id are required."""
    required = ["image_id", "class_name", *COORDINATES]
    if layout == "kaggle":
        required += ["class_id", "rad_id"]
    return _checked_columns(path, required, [*required, "rad_id"])


def image_label_columns(path: str) -> tuple[list[str], list]:
    """An image-level label CSV's header and kept columns; all 28 label columns are required by name."""
    header = [LABEL_SPELLINGS.get(name, name) for name in csvrows.read_header(path)]
    unknown = sorted(set(header) - {"image_id", "rad_id", *IMAGE_LABELS})
    if unknown:
        raise ValueError(f"{path}: unknown label column(s) {unknown}")
    return _checked_columns(path, ["image_id", *IMAGE_LABELS], ["image_id", "rad_id", *IMAGE_LABELS])


def _reader_of(row: dict[str, str]) -> str:
    return row.get("rad_id") or CONSENSUS_READER


def _row_prefix(row: dict[str, str]) -> str:
    """``"row 17, "`` for a row read with its number, "" otherwise."""
    return f"row {row[ROW]}, " if ROW in row else ""


def blank_readers(rows: list[dict[str, str]], split: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``(kept, left out)``: a blank ``rad_id`` means the consensus reader (which overrides the named
    readers when labels are harmonised) only in the test split and only when no row of the image in
    that file names a reader; anywhere else a blank-reader row is left out, never read as consensus."""
    if split == "test" and not any(row.get("rad_id") for row in rows):
        return rows, []
    return [row for row in rows if row.get("rad_id")], [row for row in rows if not row.get("rad_id")]


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


def annotation_boxes_and_labels(
    rows: list[dict[str, str]], origin: str, source_file: str | None = None
) -> tuple[list[Box], list[RawLabel]]:
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
        return read_reject(NAME, f"{NAME}/{image_id}", "malformed-annotation", f"{boxes_file} {error}")
    try:
        image_labels = image_label_raw_labels(label_rows)
    except ValueError as error:
        return read_reject(
            NAME,
            f"{NAME}/{image_id}",
            "bad-label-value",
            f"{io.relative(layout.image_label_files[split], root)} {error}",
        )
    try:
        height, width, _ = dicomheader.read_fields(uri)
    except ValueError as error:
        return read_reject(NAME, f"{NAME}/{image_id}", "unreadable-dicom-header", f"{io.relative(uri, root)}: {error}")
    provenance: dict[str, str] = {"layout": layout.name}
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
            official_split=cast(OfficialSplit, split),  # a VinDr folder: train or test
            expected_height=height,
            expected_width=width,
        ),
        raw_labels=image_labels + row_labels,
        boxes=boxes,
        provenance=provenance,
    )


OTHER_NAMES = "[!0-9a-f]"
"""The listing shard of file names that do not start with a lowercase hex digit (not VinDr ids, but
read all the same): with :data:`plan.HEX` every name is in exactly one shard."""


class VindrPlan(ReadPlan):
    """DICOMs of ``train/`` and ``test/`` and the label CSVs' rows joined by image_id.

    A file is ``("image", (uri, split))``; a good row ``("box" | "label", ((split, row), cells))``;
    a row that cannot be read ``("bad", ((split, file, row), reason, where))``, or a reject of its own
    when it does not even name an image. The join makes each split's output for the image (a record,
    ``image-not-present`` naming the first rows, ``image-in-both-splits``), then an item reject per
    bad row of a present image."""

    source = NAME
    rounds = (frozenset({"image", "box", "label", "bad"}),)

    def __init__(self, root: str):
        self.root = root
        self.layout = layout = detect_layout(root)
        files: dict[str, LabelFile] = {}
        for split_index, split in enumerate(SPLITS):
            for kind, path in enumerate((layout.annotation_files.get(split), layout.image_label_files.get(split))):
                if path is None:
                    continue
                header, columns = annotation_columns(path, layout.name) if kind == 0 else image_label_columns(path)
                kept = tuple(column for column in columns if column[0] != "image_id")  # the key says it
                files[path] = LabelFile(
                    split_index, kind, io.relative(path, root), len(header), header.index("image_id"), kept
                )
        self.files = files
        self.listings = tuple(Listing(split, io.join(root, split), "*", shards=(*HEX, OTHER_NAMES)) for split in SPLITS)
        self.tables = tuple(Table(path, path) for path in files)

    def key_file(self, tag: str, path: str) -> Iterator[Keyed]:
        name = io.basename(path)
        if name.endswith(IMAGE_EXTENSION) and (image_id := name[: -len(IMAGE_EXTENSION)]):
            yield Keyed(image_id, "image", (path, SPLITS.index(tag)))

    def key_row(self, tag: str, row: Row) -> Iterator[Keyed | Reject]:
        file = self.files[tag]
        if row.problem is None:
            cells = tuple(row.cells[position].strip() for _, position in file.columns)
            image_id = row.cells[file.id_at].strip()
            if image_id:  # a good row with a blank image_id names no unit: it is skipped
                yield Keyed(image_id, ("box", "label")[file.kind], ((file.split, row.number), cells))
            return
        bad = csvrows.bad_row(row.number, row.cells, row.problem, file.width)
        image_id = bad.cell(file.id_at)
        if image_id:
            yield Keyed(image_id, "bad", ((file.split, file.kind, row.number), bad.reason, bad.where(file.name)))
        else:  # a row too broken to name its image is a unit of its own
            yield read_reject(NAME, f"{NAME}/", bad.reason, bad.where(file.name))

    def _file(self, split: int, kind: int) -> LabelFile:
        return next(file for file in self.files.values() if (file.split, file.kind) == (split, kind))

    def row_dicts(self, items: list[tuple], split: int, kind: int) -> list[dict[str, str]]:
        """The row dicts (column name -> stripped cell, plus :data:`ROW`) of one split's file."""
        mine = [(number, cells) for (row_split, number), cells in items if row_split == split]
        if not mine:
            return []
        names = [name for name, _ in self._file(split, kind).columns]
        return [{**dict(zip(names, cells, strict=True)), ROW: str(number)} for number, cells in mine]

    def join(self, image_id: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput]:
        uris = {split: uri for uri, split in items["image"]}
        for split_index, split in enumerate(SPLITS):
            boxes = self.row_dicts(items["box"], split_index, 0)
            labels = self.row_dicts(items["label"], split_index, 1)
            bad = [item for item in items["bad"] if item[0][0] == split_index]
            uri = uris.get(split_index)
            if uri is None and not (boxes or labels or bad):
                continue
            if uri is None:
                first_rows = []
                for kind, rows in enumerate((boxes, labels)):
                    numbers = [int(row[ROW]) for row in rows] + [n for (_, k, n), _, _ in bad if k == kind]
                    if numbers:
                        first_rows.append(f"{self._file(split_index, kind).name} row {min(numbers)}")
                yield read_reject(
                    NAME,
                    f"{NAME}/{image_id}",
                    "image-not-present",
                    f"{', '.join(first_rows)}: no {split}/{image_id}{IMAGE_EXTENSION}",
                )
                continue
            if len(uris) > 1:
                yield read_reject(
                    NAME,
                    f"{NAME}/{image_id}",
                    "image-in-both-splits",
                    f"{image_id}{IMAGE_EXTENSION} is in train/ and test/",
                )
                blank = []
            else:
                (boxes, blank_boxes), (labels, blank_labels) = (blank_readers(rows, split) for rows in (boxes, labels))
                yield image_output(image_id, split, uri, self.layout, boxes, labels, self.root)
                blank = [(self._file(split_index, 0).name, row) for row in blank_boxes] + [
                    (self._file(split_index, 1).name, row) for row in blank_labels
                ]
            for name, row in blank:  # rule 4 of transforms.sources.conflicts: never a silent consensus
                yield read_reject(
                    NAME,
                    f"{NAME}/{image_id}",
                    "blank-reader-id",
                    f"{name} row {row[ROW]}: blank rad_id in {split}, where "
                    "every row is one named reader's; the row is left out",
                    level="item",
                )
            for _, reason, where in bad:  # a bad row of a present image loses that row, not the image
                yield read_reject(NAME, f"{NAME}/{image_id}", reason, where, level="item")


def plan(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> VindrPlan:
    """The read plan of the VinDr tree under ``root``; ValueError when its layout is missing, mixed or
    incomplete, or a label file lacks a column. ``image_sources`` is part of the reader contract;
    VinDr owns its images."""
    return VindrPlan(root)


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """Every VinDr image under ``root`` as a SourceRecord or Reject: the rejects of rows that name no
    image first, then by key (train before test within one image)."""
    return run_serially(plan(root, image_sources))
