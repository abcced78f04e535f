"""PadChest reader: one SourceRecord per label-CSV row whose PNG is present (see docs/formats/padchest.md).

The label CSV ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]`` is read as strings and
its columns are found by name, case-insensitively (the real file says ``labelCUIS`` and
``ExposureTime`` where the authors' README says ``LabelCUIS`` and ``ExposureTime_DICOM``). Images
sit at ``<root>/<ImageDir>/<ImageID>`` (one folder per zip) or flat at ``<root>/<ImageID>``; the
folders are listed once. Label lists are parsed from their syntax tree (never ``eval``), CUI
columns (NumPy reprs without commas) with a regex. Reports are stemmed Spanish, kept verbatim.
Missing values are the text ``nan`` in the real file (103 rows have ``Labels`` = ``nan``, also
inside lists: ``"[['unchanged'], nan, ...]"``); blank cells read the same way.

Reject details name the CSV and the data row. A repeated ``ImageID`` keeps its first row in file
order (the repeats are ``duplicate-image-id`` rejects); a row with missing cells or bytes that are not
UTF-8 is a reject and the rest of the file is read; a PNG that no row names is filtered
(``unlabelled-image``).
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Literal

import pandas as pd

from schemas.records import IMAGE_SOURCES, ImageRef, RawLabel, ReaderOutput, Reject, Report, SourceRecord
from transforms import io
from transforms.sources import csvrows

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
    path = io.first_existing(root, f"{LABEL_CSV}.csv", f"{LABEL_CSV}.csv.gz")
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


def label_rows(path: str) -> tuple[pd.DataFrame, list[csvrows.BadRow], int | None]:
    """The good rows' needed columns as strings (blank = ""), renamed to the fields of :data:`COLUMNS`
    plus ``row`` (the data row number), stripped (except ``report``, kept verbatim) and sorted by
    ``image_id`` then row; the rows that are not rows of the header (wrong cell count, not UTF-8); and
    the ``ImageID`` position, to key a bad row."""
    header = next(csvrows.records(path), None)
    if header is None:
        raise ValueError(f"{path}: empty file, no header")
    columns = select_columns(header[1])
    positions = [header[1].index(columns[field]) for field in COLUMNS]
    table = csvrows.read_table(path, keep=positions)
    verbatim = list(COLUMNS).index("report")
    frame = pd.DataFrame(
        [[cell if i == verbatim else cell.strip() for i, cell in enumerate(cells)] for _, cells in table.rows],
        columns=list(COLUMNS), dtype=object)
    frame["row"] = [number for number, _ in table.rows]
    frame = frame.sort_values(["image_id", "row"], kind="stable", ignore_index=True)
    return frame, table.bad, positions[0]


def list_images(root: str) -> set[str]:
    """Paths relative to ``root`` of the PNGs at ``<root>/*.png`` and ``<root>/*/*.png``."""
    paths = io.glob(io.join(root, "*.png")) + io.glob(io.join(root, "*", "*.png"))
    return {io.relative(path, root) for path in paths}


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
        names.append(name[len(LOCALIZATION_PREFIX):] if name.startswith(LOCALIZATION_PREFIX) else name)
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


def _reject(image_id: str, reason: str, detail: str, kind: Literal["rejected", "filtered"] = "rejected") -> Reject:
    return Reject(key=f"{NAME}/{image_id}", source=NAME, stage="read", reason=reason, detail=detail, kind=kind)


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


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """Every row of the PadChest label CSV as a SourceRecord or Reject, sorted by key then row, then
    a filtered Reject for each PNG that no row names.

    A repeated ImageID: the first row in file order is read, each later one is a
    ``duplicate-image-id`` reject. A row that is not a row of the header (missing cells, bytes that
    are not UTF-8) is a reject naming its row; the rest of the file is read as usual.
    ``image_sources`` is part of the reader contract; an image source ignores it.
    """
    csv_path = find_label_csv(root)
    name = io.relative(csv_path, root)
    table, bad_rows, id_at = label_rows(csv_path)
    present = list_images(root)
    outputs: list[tuple[str, int, ReaderOutput]] = []
    for bad in bad_rows:
        image_id = bad.cell(id_at)
        outputs.append((image_id, bad.number, _reject(image_id, bad.reason, bad.where(name))))
    first_row: dict[str, int] = {}
    fields = [field for field in table.columns if field != "row"]
    for values in zip(table["row"], *(table[field] for field in fields), strict=True):
        number, row = int(values[0]), dict(zip(fields, values[1:], strict=True))
        image_id = row["image_id"]
        first = first_row.setdefault(image_id, number)
        if not image_id:
            output: ReaderOutput = _reject(image_id, "missing-image-id", f"{name} row {number}: blank ImageID")
        elif first != number:
            output = _reject(image_id, "duplicate-image-id",
                             f"{name} row {number}: ImageID {image_id} is already read from row {first}")
        elif (relative := image_path(row, present)) is None:
            output = _reject(image_id, "image-not-present",
                             f"{name} row {number}: no {row['image_dir']}/{image_id} or {image_id} under {root}",
                             kind="filtered")
        else:
            try:
                output = row_record(row, io.join(root, relative))
            except ValueError as error:
                output = _reject(image_id, "unparseable-row", f"{name} row {number}: {error}")
        outputs.append((image_id, number, output))
    outputs.sort(key=lambda item: (item[0], item[1]))
    yield from (output for _, _, output in outputs)
    named = {image_id for image_id, _, _ in outputs}
    for relative in sorted(present):
        if io.basename(relative) not in named:
            yield _reject(io.basename(relative), "unlabelled-image", f"{relative}: no row in {name}", kind="filtered")
