"""VinDr-CXR reader: one SourceRecord per ``train/`` or ``test/`` DICOM (see formats/vindr-cxr.md).

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
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from schemas.records import IMAGE_SOURCES, Box, ImageRef, RawLabel, ReaderOutput, Reject, SourceRecord
from transforms import io

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
    with io.open_text(path) as handle:
        return [name.strip() for name in handle.readline().rstrip("\r\n").split(",")]


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


def _read_table(path: str, required: Collection[str]) -> pd.DataFrame:
    """A CSV as stripped strings, with header names stripped and ``Other disease`` renamed."""
    with io.open_text(path) as handle:
        table = pd.read_csv(handle, dtype=str, keep_default_na=False)
    table.columns = [LABEL_SPELLINGS.get(name.strip(), name.strip()) for name in table.columns]
    duplicated = sorted({name for name in table.columns if list(table.columns).count(name) > 1})
    if duplicated:
        raise ValueError(f"{path}: duplicate columns {duplicated} (after normalising spellings)")
    missing = [name for name in required if name not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    for name in table.columns:
        table[name] = table[name].str.strip()
    return table


def _rows_by_image(table: pd.DataFrame, columns: Collection[str]) -> dict[str, list[dict[str, str]]]:
    present = [name for name in columns if name in table.columns]
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    for values in zip(*(table[name] for name in present), strict=True):
        row = dict(zip(present, values, strict=True))
        rows[row["image_id"]].append(row)
    return dict(rows)


def read_annotations(path: str, layout: LayoutName) -> dict[str, list[dict[str, str]]]:
    """Box rows grouped by image_id; each row maps column name -> stripped string."""
    required = ["image_id", "class_name", *COORDINATES]
    if layout == "kaggle":
        required += ["class_id", "rad_id"]
    table = _read_table(path, required)
    return _rows_by_image(table, [*required, "rad_id"])


def read_image_labels(path: str) -> dict[str, list[dict[str, str]]]:
    """Image-level label rows grouped by image_id; all 28 label columns are required by name."""
    table = _read_table(path, ["image_id", *IMAGE_LABELS])
    unknown = sorted(set(table.columns) - {"image_id", "rad_id", *IMAGE_LABELS})
    if unknown:
        raise ValueError(f"{path}: unknown label column(s) {unknown}")
    return _rows_by_image(table, ["image_id", "rad_id", *IMAGE_LABELS])


def _reader_of(row: dict[str, str]) -> str:
    return row.get("rad_id") or CONSENSUS_READER


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
                raise ValueError(f"reader {reader}, column {name!r}: {error}") from None
            labels.append(RawLabel(system=IMAGE_LABEL_SYSTEM, name=name, value=value, reader=reader))
    return labels


def annotation_boxes_and_labels(rows: list[dict[str, str]], origin: str) -> tuple[list[Box], list[RawLabel]]:
    """Boxes from rows with coordinates; a RawLabel (value 1.0) from rows whose coordinates are all empty.

    Raises ValueError on partial, non-numeric, negative or inverted coordinates, and on a
    ``No finding`` row that has coordinates.
    """
    boxes, labels = [], []
    for row in rows:
        label, reader = row["class_name"], _reader_of(row)
        texts = [row[name] for name in COORDINATES]
        if not label:
            raise ValueError(f"reader {reader}: empty class_name")
        if all(text == "" for text in texts):
            labels.append(RawLabel(system=origin, name=label, value=1.0, reader=reader))
            continue
        if label == "No finding":
            raise ValueError(f"reader {reader}: 'No finding' row with coordinates {texts}")
        try:
            x1, y1, x2, y2 = (float(text) for text in texts)
        except ValueError:
            raise ValueError(f"reader {reader}, {label!r}: non-numeric coordinates {texts}") from None
        if not all(math.isfinite(v) and v >= 0 for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            raise ValueError(f"reader {reader}, {label!r}: invalid box {texts}")
        boxes.append(Box(label=label, x1=x1, y1=y1, x2=x2, y2=y2, origin=origin, reader=reader))
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
) -> SourceRecord | Reject:
    """The record (or the reason there is none) for one DICOM file of ``split``."""
    try:
        boxes, row_labels = annotation_boxes_and_labels(annotation_rows, layout.origin)
    except ValueError as error:
        return _reject(image_id, "malformed-annotation", f"{layout.annotation_files[split]}: {error}")
    try:
        image_labels = image_label_raw_labels(label_rows)
    except ValueError as error:
        return _reject(image_id, "bad-label-value", f"{layout.image_label_files[split]}: {error}")
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
        annotations = read_annotations(boxes_path, layout.name) if boxes_path else {}
        image_labels = read_image_labels(labels_path) if labels_path else {}
        for image_id in sorted(set(images[split]) | set(annotations) | set(image_labels)):
            if image_id not in images[split]:
                files = [path for path, rows in ((boxes_path, annotations), (labels_path, image_labels))
                         if image_id in rows]
                output: ReaderOutput = _reject(
                    image_id, "image-not-present", f"rows in {files} but no {split}/{image_id}{IMAGE_EXTENSION}"
                )
            elif image_id in in_both:
                output = _reject(
                    image_id, "image-in-both-splits", f"{image_id}{IMAGE_EXTENSION} is in train/ and test/"
                )
            else:
                output = image_output(
                    image_id, split, images[split][image_id], layout,
                    annotations.get(image_id, []), image_labels.get(image_id, []),
                )
            outputs.append((image_id, split, output))
    outputs.sort(key=lambda item: (item[0], SPLITS.index(item[1])))
    for _, _, output in outputs:
        yield output
