"""PadChest reader: one SourceRecord per label-CSV row whose PNG is present (see docs/formats/padchest.md).

The label CSV ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]`` is read as strings and
its columns are found by name, case-insensitively (the real file says ``labelCUIS`` and
``ExposureTime`` where the authors' README says ``LabelCUIS`` and ``ExposureTime_DICOM``). Images
sit at ``<root>/<ImageDir>/<ImageID>`` (one folder per zip) or flat at ``<root>/<ImageID>``; the
tree is listed once, in shards by the first digit of the folder (or flat name). Label lists are
parsed from their syntax tree (never ``eval``), CUI columns (NumPy reprs without commas) with a regex. Reports are stemmed Spanish, kept verbatim.
Missing values are the text ``nan`` in the real file (103 rows have ``Labels`` = ``nan``, also
inside lists: ``"[['unchanged'], nan, ...]"``); blank cells read the same way.

Reject details name the CSV and the data row. A repeated ``ImageID`` keeps its first row in file
order (the repeats are ``duplicate-image-id`` rejects); a row with missing cells or bytes that are not
UTF-8 is a reject and the rest of the file is read; a PNG that no row names is filtered
(``unlabelled-image``).

The read plan (:class:`PadchestPlan`) checks the CSV's header up front, keys each row (the needed
cells only) and each PNG by ImageID and joins them per ImageID; nothing is held for the whole file.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Collection, Iterator
from datetime import datetime

from schemas.records import IMAGE_SOURCES, ImageRef, RawLabel, ReaderOutput, Report, SourceRecord
from transforms import io
from transforms.sources import csvrows
from transforms.sources.plan import Keyed, Listing, ReadPlan, Row, Table, read_reject, run_serially

NAME = "padchest"
LABEL_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19"
LABEL_SYSTEM = "padchest-labels"
LOCALIZATION_SYSTEM = "padchest-localizations"
LOCALIZATION_PREFIX = "loc "

# field -> accepted column spellings (compared case-insensitively)
COLUMNS = {
    "image_id": ("ImageID",),
    "image_dir": ("ImageDir",),
    "study_date": ("StudyDate_DICOM",),
    "study_id": ("StudyID",),
    "patient_id": ("PatientID",),
    "projection": ("Projection",),
    "rows": ("Rows_DICOM",),
    "columns": ("Columns_DICOM",),
    "report_id": ("ReportID",),
    "report": ("Report",),
    "method_label": ("MethodLabel",),
    "labels": ("Labels",),
    "localizations": ("Localizations",),
    "by_sentence": ("LabelsLocalizationsBySentence",),
    "label_cuis": ("labelCUIS", "LabelCUIS"),
    "localization_cuis": ("LocalizationsCUIS",),
}

_CUI_ITEM = re.compile(r"'([^']*)'")
_DATE = re.compile(r"[0-9]{8}")


def find_label_csv(root: str) -> str:
    path = io.csv_file(root, LABEL_CSV)
    if path is None:
        raise ValueError(f"no PadChest label file under {root!r}: expected {LABEL_CSV}.csv or .csv.gz")
    return path


def select_columns(header: Collection[str]) -> dict[str, str]:
    """field -> the header's column name for it; ValueError when a field has no or several matches."""
    by_lower: dict[str, list[str]] = {}
    for name in header:
        by_lower.setdefault(name.strip().lower(), []).append(name)
    selected = {}
    for field, spellings in COLUMNS.items():
        matches = sorted({name for spelling in spellings for name in by_lower.get(spelling.lower(), [])})
        if len(matches) != 1:
            problem = "no column" if not matches else f"several columns {matches}"
            raise ValueError(f"PadChest label CSV: {problem} for {'/'.join(spellings)}; header {list(header)}")
        selected[field] = matches[0]
    return selected


def _image_dir(text: str) -> str:
    """``ImageDir`` as the folder name: ``'7'`` and ``'7.0'`` both give ``'7'``."""
    return text[:-2] if text.endswith(".0") else text


def image_path(row: dict[str, str], present: set[str]) -> str | None:
    """The relative path of the row's image, in its ImageDir folder or flat; None when absent."""
    image_id = row["image_id"]
    for candidate in (f"{_image_dir(row['image_dir'])}/{image_id}", image_id):
        if candidate in present:
            return candidate
    return None


def is_null(text: str) -> bool:
    """A blank cell, or ``nan`` as pandas wrote a missing value."""
    return text.strip() in ("", "nan")


def _literal(node: ast.expr) -> object:
    if isinstance(node, ast.List):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id == "nan":
        return None
    raise ValueError(f"unexpected {type(node).__name__} element")


def parse_list(text: str) -> list:
    """A list literal of strings, nested lists and bare ``nan`` (-> None), parsed without evaluating
    code (``ast.literal_eval`` cannot read ``nan``); ValueError for anything else."""
    try:
        value = _literal(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise ValueError(f"not a list literal: {text[:80]!r} ({error})") from None
    if not isinstance(value, list):
        raise ValueError(f"not a list literal: {text[:80]!r}")
    return value


def _string(item: object) -> str:
    if not isinstance(item, str):
        raise ValueError(f"list item {item!r} is not a string")
    return item


def _normalise(item: object) -> str:
    return " ".join(_string(item).split())


def parse_labels(text: str) -> list[str]:
    """``Labels`` items, stripped, empty items dropped (``"['']"`` gives ``[]``)."""
    return [label for item in parse_list(text) if (label := _string(item).strip())]


def parse_localizations(text: str) -> list[str]:
    """``Localizations`` items with whitespace normalised and the ``loc `` prefix removed."""
    names = []
    for item in parse_list(text):
        name = _normalise(item)
        names.append(name[len(LOCALIZATION_PREFIX) :] if name.startswith(LOCALIZATION_PREFIX) else name)
    return [name for name in names if name]


def parse_by_sentence(text: str) -> list[list[str] | None]:
    """``LabelsLocalizationsBySentence`` as one list per sentence, items whitespace-normalised.

    The real file writes a one-sentence value flat (``"['COPD signs']"``): it becomes one sentence.
    A ``nan`` sentence stays None.
    """
    sentences = parse_list(text)
    if all(isinstance(item, str) for item in sentences):
        sentences = [sentences]
    if not all(sentence is None or isinstance(sentence, list) for sentence in sentences):
        raise ValueError(f"mixes sentences and bare items: {text[:80]!r}")
    return [None if sentence is None else [_normalise(item) for item in sentence] for sentence in sentences]


def parse_cuis(text: str) -> list[str]:
    """A NumPy-repr CUI list such as ``"['C0025552' '' 'C0016542']"``; items may be empty strings."""
    return _CUI_ITEM.findall(text)


def parse_study_date(text: str) -> str:
    """``YYYYMMDD`` (also ``YYYYMMDD.0``) as ISO ``YYYY-MM-DD``; ValueError for anything else."""
    digits = text[:-2] if text.endswith(".0") else text
    try:
        if not _DATE.fullmatch(digits):
            raise ValueError
        return datetime.strptime(digits, "%Y%m%d").date().isoformat()
    except ValueError:
        raise ValueError(f"StudyDate_DICOM {text!r} is not a YYYYMMDD date") from None


def parse_size(text: str, column: str) -> int | None:
    """A positive pixel count (``'2140'`` or ``'2140.0'``); None when blank."""
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer() or value <= 0:
        raise ValueError(f"{column} {text!r} is not a positive integer")
    return int(value)


def _parsed(row: dict[str, str], field: str, parse):
    """``parse(row[field])``; a ValueError names the column it came from."""
    try:
        return parse(row[field])
    except ValueError as error:
        raise ValueError(f"{COLUMNS[field][0]}: {error}") from None


def row_record(row: dict[str, str], uri: str) -> SourceRecord:
    """The record of one CSV row whose image is at ``uri``; ValueError (naming the column) on an
    unparseable field."""
    if not row["patient_id"]:
        raise ValueError("blank PatientID (needed for the patient-wise split)")
    method = row["method_label"] or None
    provenance = {"method_label": row["method_label"], "report_id": row["report_id"], "image_dir": row["image_dir"]}
    if is_null(row["labels"]):
        labels = []
        provenance["labels"] = "missing"
    elif not (labels := _parsed(row, "labels", parse_labels)):
        provenance["labels"] = "empty"
    localizations = [] if is_null(row["localizations"]) else _parsed(row, "localizations", parse_localizations)
    if not is_null(row["by_sentence"]):
        provenance["labels_localizations_by_sentence"] = json.dumps(
            _parsed(row, "by_sentence", parse_by_sentence), ensure_ascii=False
        )
    provenance["label_cuis"] = json.dumps(parse_cuis(row["label_cuis"]))
    provenance["localization_cuis"] = json.dumps(parse_cuis(row["localization_cuis"]))
    report = None
    if not is_null(row["report"]):
        report = Report(text=row["report"], language="es-stemmed", origin="Report")
    else:
        provenance["report"] = "missing"
    return SourceRecord(
        image=ImageRef(
            image_key=f"{NAME}/{row['image_id']}",
            source=NAME,
            native_id=row["image_id"],
            uri=uri,
            format="png",
            subject_id=row["patient_id"],
            study_id=row["study_id"] or None,
            view=row["projection"] or None,
            study_datetime=parse_study_date(row["study_date"]) if row["study_date"] else None,
            expected_height=parse_size(row["rows"], "Rows_DICOM"),
            expected_width=parse_size(row["columns"], "Columns_DICOM"),
        ),
        raw_labels=[RawLabel(system=LABEL_SYSTEM, name=name, value=1.0, reader=method) for name in labels]
        + [RawLabel(system=LOCALIZATION_SYSTEM, name=name, value=1.0, reader=method) for name in localizations],
        report=report,
        provenance=provenance,
    )


FOLDER_SHARDS = (*"0123456789", "[!0-9]")
"""Listing shards of the image tree, by the first character of the path under the root: the image
folders are numbers (``0`` .. ``54``) and the flat image names start with a digit; the last shard
takes every other name, so each file is in exactly one shard."""

_IMAGE_PATH = re.compile(r"[^/\\]*(/[^/\\]*)?\.png")
"""The images, relative to the root: ``*.png`` and ``*/*.png`` (a glob's ``*`` crosses no ``/``)."""


def _key(image_id: str) -> str:
    """The key of an ImageID: its last path component, the file name of any PNG it can be."""
    return image_id.rsplit("/", 1)[-1]


class PadchestPlan(ReadPlan):
    """PNGs and label-CSV rows joined by ImageID (the PNG's file name).

    A PNG is ``("png", (relative path,))``; a good row ``("row", (row, cells))`` with the cells of
    :data:`COLUMNS` (stripped, the report verbatim); a row that cannot be read ``("bad", (row, ImageID,
    reason, where))``. The join reads the first good row of an ImageID in file order, rejects the
    later ones, and filters the PNGs that no row names."""

    source = NAME
    rounds = (frozenset({"png", "row", "bad"}),)

    def __init__(self, root: str):
        path = find_label_csv(root)
        header = next(csvrows.records(path), None)
        if header is None:
            raise ValueError(f"{path}: empty file, no header; download it again")
        columns = select_columns(header[1])
        self.root, self.name, self.width = root, io.relative(path, root), len(header[1])
        self.positions = tuple(header[1].index(columns[field]) for field in COLUMNS)
        self.listings = (Listing("png", root, "**", shards=FOLDER_SHARDS),)
        self.tables = (Table("row", path),)

    def key_file(self, tag: str, path: str) -> Iterator[Keyed]:
        relative = io.relative(path, self.root)
        if _IMAGE_PATH.fullmatch(relative):
            yield Keyed(io.basename(relative), "png", (relative,))

    def key_row(self, tag: str, row: Row) -> Iterator[Keyed]:
        if row.problem is None:
            cells = tuple(
                row.cells[position] if field == "report" else row.cells[position].strip()
                for field, position in zip(COLUMNS, self.positions, strict=True)
            )
            yield Keyed(_key(cells[0]), "row", (row.number, cells))
        else:
            bad = csvrows.bad_row(row.number, row.cells, row.problem, self.width)
            image_id = bad.cell(self.positions[0])
            yield Keyed(_key(image_id), "bad", (row.number, image_id, bad.reason, bad.where(self.name)))

    def join(self, key: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput]:
        present = {relative for (relative,) in items["png"]}
        rows = sorted(
            [*(("row", item) for item in items["row"]), *(("bad", item) for item in items["bad"])],
            key=lambda tagged: tagged[1][0],
        )  # file order
        first_row: dict[str, int] = {}
        named = set()
        for tag, item in rows:
            if tag == "bad":
                _, image_id, reason, where = item
                named.add(image_id)
                yield read_reject(NAME, f"{NAME}/{image_id}", reason, where)
                continue
            number, cells = item
            row = dict(zip(COLUMNS, cells, strict=True))
            image_id = row["image_id"]
            named.add(image_id)
            first = first_row.setdefault(image_id, number)
            if not image_id:
                yield read_reject(
                    NAME, f"{NAME}/{image_id}", "missing-image-id", f"{self.name} row {number}: blank ImageID"
                )
            elif first != number:
                yield read_reject(
                    NAME,
                    f"{NAME}/{image_id}",
                    "duplicate-image-id",
                    f"{self.name} row {number}: ImageID {image_id} is already read from row {first}",
                )
            elif (relative := image_path(row, present)) is None:
                yield read_reject(
                    NAME,
                    f"{NAME}/{image_id}",
                    "image-not-present",
                    f"{self.name} row {number}: no {row['image_dir']}/{image_id} or {image_id} in the PadChest folder",
                    kind="filtered",
                )
            else:
                try:
                    yield row_record(row, io.join(self.root, relative))
                except ValueError as error:
                    yield read_reject(
                        NAME, f"{NAME}/{image_id}", "unparseable-row", f"{self.name} row {number}: {error}"
                    )
        for relative in sorted(present):
            if io.basename(relative) not in named:
                yield read_reject(
                    NAME,
                    f"{NAME}/{io.basename(relative)}",
                    "unlabelled-image",
                    f"{relative}: no row in {self.name}",
                    kind="filtered",
                )


def plan(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> PadchestPlan:
    """The read plan of the PadChest tree under ``root``; ValueError when the label CSV is missing,
    empty or lacks a column. ``image_sources`` is part of the reader contract; PadChest owns its images."""
    return PadchestPlan(root)


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """Every row of the PadChest label CSV as a SourceRecord or Reject, and a filtered Reject for each
    PNG that no row names; by key, rows of one key in file order, its unnamed PNGs after them.

    A repeated ImageID: the first row in file order is read, each later one is a
    ``duplicate-image-id`` reject. A row that is not a row of the header (missing cells, bytes that
    are not UTF-8) is a reject naming its row; the rest of the file is read as usual.
    ``image_sources`` is part of the reader contract; an image source ignores it.
    """
    return run_serially(plan(root, image_sources))
