"""CheXmask lung and heart segmentations, ``OriginalResolution/<Dataset>.csv[.gz]`` rows, and
``Preprocessed/<Dataset>.csv[.gz]`` rows for a dataset whose OriginalResolution file is absent.

Only the files whose image source is ingested are opened: ``MIMIC-CXR-JPG`` (-> ``mimic/<dicom_id>``),
``VinDr-CXR`` (-> ``vindr/<image_id>``) and ``Padchest`` (-> ``padchest/<ImageID>``). The files of
CheXpert, ChestX-Ray8 and CANDID-PTX are never read. See ``docs/formats/chexmask.md``.

A Preprocessed file is opened only when the dataset's OriginalResolution file is missing. Its rows live
in a 1024 x 1024 space: for VinDr-CXR (centre-pad and resize) they are kept as they are, declared
1024 x 1024 and marked ``provenance["space"] = "preprocessed-1024"`` for the geometry stage to map
with :func:`transforms.chexmask_space.preprocessed_to_original` once the image size is known. MIMIC-CXR-JPG
and PadChest were cropped before padding with unpublished offsets, so each of their Preprocessed rows
is rejected (``preprocessed-space-not-invertible``).

Each row becomes one :class:`AnnotationRecord` (three RLE masks, three landmark polygons, both Dice
RCA values, the declared size) or one :class:`Reject`. The first row of an image in file order is
read; a repeat is a ``duplicate-row`` reject.

The read plan (:class:`ChexmaskPlan`) picks the files and checks their headers up front, streams
each file's rows keyed by their target image key (only the cells :func:`parse_row` reads: the RLE
strings, landmarks, Dice values, size and id) and parses them in the join, per key, in parallel.
A row that cannot be read or has a blank id is a reject of its own, at keying.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from schemas.records import (
    IMAGE_SOURCES,
    AnnotationRecord,
    Landmarks,
    MaskRLE,
    ReaderOutput,
    Reject,
)
from transforms import io
from transforms.chexmask_space import PREPROCESSED_SIZE
from transforms.sources import csvrows
from transforms.sources.plan import Keyed, ReadPlan, Row, Table, read_reject, run_serially

NAME = "chexmask"
ORIGIN = "chexmask"

DICE_RCA_MEAN_THRESHOLD = 0.7
"""Rows with ``Dice RCA (Mean)`` below this are filtered: the CheXmask PhysioNet usage guideline
(README "Usage Guidelines" and DATA_DICTIONARY) is to use only masks with mean RCA Dice >= 0.7."""


Space = Literal["original", "preprocessed-1024"]
SPACE_FOLDERS: dict[Space, str] = {"original": "OriginalResolution", "preprocessed-1024": "Preprocessed"}
"""Folder of each coordinate space, in order of preference."""


@dataclass(frozen=True)
class DatasetFile:
    stem: str  # file name without .csv[.gz]
    image_source: str  # the source that owns the images
    id_column: str  # the column holding that source's native id
    preprocessing: Literal["pad-resize", "crop-pad-resize"]  # how CheXmask made its 1024 x 1024 input

    @property
    def preprocessed_invertible(self) -> bool:
        """Whether Preprocessed rows map back to the image: only without the unpublished crop."""
        return self.preprocessing == "pad-resize"


DATASET_FILES = (
    DatasetFile("MIMIC-CXR-JPG", "mimic", "dicom_id", "crop-pad-resize"),
    DatasetFile("Padchest", "padchest", "ImageID", "crop-pad-resize"),
    DatasetFile("VinDr-CXR", "vindr", "image_id", "pad-resize"),
)
"""The CheXmask files for images this project ingests (``docs/formats/chexmask.md`` §5 for the
preprocessing); the other datasets' files are not read."""

ORGAN_COLUMNS = {"Right Lung": "right lung", "Left Lung": "left lung", "Heart": "heart"}
"""RLE column -> mask label. ``Right Lung`` is the patient's right, i.e. the image left."""

LANDMARK_SLICES = {"right lung": slice(0, 44), "left lung": slice(44, 94), "heart": slice(94, 120)}
"""Rows of the (120, 2) landmark array per organ, each one closed contour."""
LANDMARK_POINTS = 120

QUALITY_COLUMNS = {"Dice RCA (Mean)": "dice_rca_mean", "Dice RCA (Max)": "dice_rca_max"}
SIZE_COLUMNS = ("Height", "Width")
_INTEGER = re.compile(r"-?\d+")
_SIZE = re.compile(r"^(\d+)(?:\.0*)?$")


def parse_landmarks(text: str) -> np.ndarray:
    """The 120 (x, y) landmark points of a ``Landmarks`` cell as an int array of shape (120, 2).

    Reads both serialisations (flat ``"439,276,410,..."`` and a NumPy repr ``"[[ 431  221]\\n ..."``) by
    extracting the integers; never evaluates the cell. Raises ValueError unless there are exactly 240.
    """
    numbers = _INTEGER.findall(text)
    if len(numbers) != 2 * LANDMARK_POINTS:
        raise ValueError(f"expected {2 * LANDMARK_POINTS} integers in Landmarks, found {len(numbers)}")
    return np.array(numbers, dtype=np.int64).reshape(LANDMARK_POINTS, 2)


_RLE_SYNTAX = re.compile(r"[0-9]+(?:\s+[0-9]+)*")
"""Whitespace-separated decimal integers (checked on the whole string at once: ~2x faster than per token)."""


def check_chexmask_rle(rle: str, height: int, width: int) -> None:
    """Raise ValueError unless ``rle`` is a CheXmask run-length string for a ``height x width`` mask.

    CheXmask runs are ``start length`` pairs with 1-based absolute starts over the row-major flattened
    mask; runs must be in order, not overlap, and stay inside the image. ``""`` is an empty mask.
    """
    if rle.strip() and not _RLE_SYNTAX.fullmatch(rle.strip()):
        raise ValueError("RLE holds something other than non-negative integers")
    tokens = rle.split()
    if len(tokens) % 2:
        raise ValueError(f"RLE has an odd number of integers ({len(tokens)})")
    runs = np.array(tokens, dtype=np.int64).reshape(-1, 2)
    starts, lengths = runs[:, 0], runs[:, 1]
    if runs.size == 0:
        return
    if starts.min() < 1 or lengths.min() < 1:
        raise ValueError("RLE starts are 1-based and lengths positive")
    ends = starts + lengths - 1
    if ends.max() > height * width:
        raise ValueError(f"RLE run ends at pixel {ends.max()} beyond {height}x{width}")
    if np.any(starts[1:] <= ends[:-1]):
        raise ValueError("RLE runs are out of order or overlap")


def _quality_value(text: str, column: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{column} is {text!r}, not a number in [0, 1]")
    return value


def _size_value(text: str, column: str) -> int:
    match = _SIZE.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{column} is {text!r}, not a positive integer")
    return int(match.group(1))


def _column_positions(header: list[str], dataset: DatasetFile, space: Space, path: str) -> dict[str, int]:
    """Canonical column name -> its position in the file, matched on whitespace-stripped header names.
    Height and Width are required in OriginalResolution files only: Preprocessed rows are 1024 x 1024."""
    wanted = [dataset.id_column, *QUALITY_COLUMNS, "Landmarks", *ORGAN_COLUMNS]
    positions = {name.strip(): index for index, name in enumerate(header)}
    missing = [name for name in wanted + list(SIZE_COLUMNS) if name not in positions]
    if space == "preprocessed-1024":
        missing = [name for name in missing if name not in SIZE_COLUMNS]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return {name: positions[name] for name in wanted + list(SIZE_COLUMNS) if name in positions}


class _SizeError(ValueError):
    """A row's Height/Width cannot be used; ``reason`` is the reject reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _declared_size(row: Mapping[str, str], space: Space) -> tuple[int, int]:
    """(height, width) a row's masks are encoded at.

    OriginalResolution rows carry their own size. Preprocessed rows are 1024 x 1024 whatever the
    columns say, so empty or absent cells are fine there and any other size is an error."""
    cells = [row.get(column, "").strip() for column in SIZE_COLUMNS]
    if space == "original" and not all(cells):
        raise _SizeError("missing-size", "Height/Width empty; the mask size is unknown")
    try:
        sizes = [_size_value(cell, column) for cell, column in zip(cells, SIZE_COLUMNS) if cell]
    except ValueError as error:
        raise _SizeError("bad-size", str(error)) from error
    if space == "original":
        return sizes[0], sizes[1]
    if any(size != PREPROCESSED_SIZE for size in sizes):
        raise _SizeError("bad-size", f"Preprocessed row declares Height/Width {cells}, not {PREPROCESSED_SIZE}")
    return PREPROCESSED_SIZE, PREPROCESSED_SIZE


def parse_row(
    row: Mapping[str, str], dataset: DatasetFile, origin: str, space: Space = "original", number: int | None = None
) -> AnnotationRecord | Reject:
    """One CheXmask row (canonical column name -> cell text) as a record, or the reason it is not one;
    reject details name ``origin`` and, when given, the data row ``number``."""
    native = row[dataset.id_column].strip()
    key = f"{dataset.image_source}/{native}"
    where = origin if number is None else f"{origin} row {number}"
    reject = partial(read_reject, NAME, key)

    if not native:
        return reject("missing-id", f"{where}: empty {dataset.id_column}")
    if space == "preprocessed-1024" and not dataset.preprocessed_invertible:
        return reject(
            "preprocessed-space-not-invertible",
            f"{where}: no OriginalResolution row; {dataset.stem} Preprocessed rows were cropped before padding "
            "with unpublished offsets, so they cannot be mapped onto the image",
        )
    try:
        quality = {name: _quality_value(row[column].strip(), column) for column, name in QUALITY_COLUMNS.items()}
    except ValueError as error:
        return reject("bad-dice-value", f"{where}: {error}")
    if quality["dice_rca_mean"] < DICE_RCA_MEAN_THRESHOLD:
        return reject(
            "dice-rca-mean-below-threshold",
            f"{where}: Dice RCA (Mean) {quality['dice_rca_mean']:.3f} < {DICE_RCA_MEAN_THRESHOLD}",
            kind="filtered",
        )
    try:
        height, width = _declared_size(row, space)
    except _SizeError as error:
        return reject(error.reason, f"{where}: {error}")
    try:
        landmarks = parse_landmarks(row["Landmarks"])
    except ValueError as error:
        return reject("unparseable-landmarks", f"{where}: {error}")
    masks = []
    for column, label in ORGAN_COLUMNS.items():
        rle = row[column].strip()
        try:
            check_chexmask_rle(rle, height, width)
        except ValueError as error:
            return reject("bad-rle", f"{where}: {column}: {error}")
        masks.append(MaskRLE(label=label, rle=rle, convention="chexmask", height=height, width=width, origin=ORIGIN))
    contours = [
        Landmarks(label=label, points=[(float(x), float(y)) for x, y in landmarks[rows].tolist()], origin=ORIGIN)
        for label, rows in LANDMARK_SLICES.items()
    ]
    return AnnotationRecord(
        target_key=key,
        source=NAME,
        native_id=f"{dataset.stem}/{native}",
        declared_width=width,
        declared_height=height,
        masks=masks,
        landmarks=contours,
        quality=quality,
        provenance={"dataset": dataset.stem, "file": origin, "space": space},
    )


def _dataset_file(folder: str, dataset: DatasetFile) -> str | None:
    return io.csv_file(folder, dataset.stem)


@dataclass(frozen=True)
class IngestedFile:
    """One dataset file the plan reads: where it is (``origin``, relative to the root, as details and
    provenance cite it), its space, the header's width and the (name, position) of the kept columns."""

    dataset: DatasetFile
    origin: str
    space: Space
    width: int
    id_at: int
    columns: tuple[tuple[str, int], ...]


class ChexmaskPlan(ReadPlan):
    """Rows of each ingested dataset's file keyed by their target image key, parsed in the join.

    A good row is ``(<dataset stem>, (row, cells))`` with the cells of the columns :func:`parse_row`
    reads; a row that cannot be read, or has a blank id, is a reject of its own. The join reads the
    first row of a key in file order and rejects the repeats (``duplicate-row``)."""

    source = NAME

    def __init__(self, root: str, image_sources: Collection[str]):
        wanted = [dataset for dataset in DATASET_FILES if dataset.image_source in image_sources]
        found: list[tuple[DatasetFile, str, Space]] = []
        for dataset in wanted:
            for space, folder in SPACE_FOLDERS.items():
                path = _dataset_file(io.join(root, folder), dataset)
                if path is not None:
                    found.append((dataset, path, space))
                    break
        if wanted and not found:
            stems = [dataset.stem for dataset in wanted]
            raise FileNotFoundError(
                f"none of {stems} (.csv or .csv.gz) found in {root}/{{{','.join(SPACE_FOLDERS.values())}}}"
            )
        self.files: dict[str, IngestedFile] = {}
        tables = []
        for dataset, path, space in sorted(found, key=lambda entry: entry[0].stem):
            header = csvrows.read_header(path)
            positions = _column_positions(header, dataset, space, path)
            self.files[dataset.stem] = IngestedFile(
                dataset,
                io.relative(path, root),
                space,
                len(header),
                positions[dataset.id_column],
                tuple(positions.items()),
            )
            tables.append(Table(dataset.stem, path))
        self.tables = tuple(tables)
        self.rounds = (frozenset(self.files),) if self.files else ()

    def key_row(self, tag: str, row: Row) -> Iterator[Keyed | ReaderOutput]:
        file = self.files[tag]
        dataset = file.dataset
        if row.problem is not None:
            bad = csvrows.bad_row(row.number, row.cells, row.problem, file.width)
            yield read_reject(
                NAME, f"{dataset.image_source}/{bad.cell(file.id_at)}", bad.reason, bad.where(file.origin)
            )
            return
        cells = tuple(row.cells[position] for _, position in file.columns)
        native = row.cells[file.id_at].strip()
        if native:
            yield Keyed(f"{dataset.image_source}/{native}", tag, (row.number, cells))
        else:  # every row with a blank id is its own missing-id reject
            yield self.parsed(file, row.number, cells)

    @staticmethod
    def parsed(file: IngestedFile, number: int, cells: tuple[str, ...]) -> AnnotationRecord | Reject:
        row = {name: cell for (name, _), cell in zip(file.columns, cells, strict=True)}
        return parse_row(row, file.dataset, file.origin, file.space, number)

    def join(self, key: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput]:
        for tag in sorted(items):
            if not items[tag]:
                continue
            file = self.files[tag]
            (first, cells), *repeats = items[tag]
            yield self.parsed(file, first, cells)
            native = key.split("/", 1)[1]
            for number, _ in repeats:
                yield read_reject(
                    NAME,
                    key,
                    "duplicate-row",
                    f"{file.origin} row {number}: {native} appears again (first read from row {first})",
                )


def plan(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> ChexmaskPlan:
    """The read plan of the CheXmask files under ``root`` for the ingested ``image_sources``: each
    dataset's OriginalResolution file when it exists, else its Preprocessed one. FileNotFoundError when
    none of the wanted files exists; ValueError when one is empty or lacks a column."""
    return ChexmaskPlan(root, image_sources)


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """The rows of each ingested dataset's file: OriginalResolution when it exists, else Preprocessed.
    Rows that cannot be keyed (unreadable, blank id) come first, then the rows by target key."""
    return run_serially(plan(root, image_sources))
