"""MIMIC-CXR (DICOM, 2.0.0) and MIMIC-CXR-JPG (2.0.0 / 2.1.0) reader.

``root`` holds ``files/p1X/p1XXXXXXX/s5XXXXXXX/<dicom_id>.dcm|.jpg`` (report ``s5XXXXXXX.txt`` beside
the study folder) and the CSVs side by side: ``mimic-cxr-2.0.0-metadata`` and ``-split`` (required),
``-chexpert`` and ``-negbio`` and ``mimic-cxr-2.1.0-test-set-labeled`` (optional), each ``.csv`` or
``.csv.gz``. See ``docs/formats/mimic-cxr.md``.

The image files on disk are the authority: one output per image file. Metadata rows without a file
are not images; their number is logged, not rejected. When a study folder holds both the DICOM and
the JPG of one ``dicom_id`` the DICOM is read and the JPG is recorded as filtered
(``duplicate-image-file``).

An unreadable metadata or split row (missing cells, not UTF-8) rejects its image (``malformed-row``,
naming the file and row); an unreadable label row is an item reject on each image of its study. A
report that is not UTF-8 or holds no text costs the image its report only: an item reject
(``undecodable-report`` / ``empty-report``), ``report`` None and ``provenance["report"]`` the reason.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time


from schemas.records import (
    IMAGE_SOURCES,
    ImageRef,
    RawLabel,
    ReaderOutput,
    Reject,
    Report,
    SourceRecord,
)
from transforms import io
from transforms.sources import csvrows

NAME = "mimic"

log = logging.getLogger(__name__)

METADATA_FILE = "mimic-cxr-2.0.0-metadata"
SPLIT_FILE = "mimic-cxr-2.0.0-split"
LABEL_FILES = {
    "mimic-chexpert": "mimic-cxr-2.0.0-chexpert",
    "mimic-negbio": "mimic-cxr-2.0.0-negbio",
    "mimic-test-labeled": "mimic-cxr-2.1.0-test-set-labeled",
}
"""RawLabel system -> file stem of the per-study label CSVs."""

IMAGE_FORMATS = {".dcm": "dicom", ".jpg": "jpeg"}
OFFICIAL_SPLITS = frozenset({"train", "validate", "test"})
ID_COLUMNS = frozenset({"subjectid", "studyid", "dicomid"})
"""Normalised names of identifier columns; every other column of a label CSV is a label."""

_IMAGE_PATH = re.compile(r"^files/p(\d{2})/p(\d{8})/s(\d{8})/([^/]+)\.(dcm|jpg)$")
_STUDY_DATE = re.compile(r"^(\d{8})(?:\.0*)?$")
_STUDY_TIME = re.compile(r"^(\d{1,6})(?:\.(\d*))?$")
_LABEL_VALUES = {1.0, 0.0, -1.0}


class MimicInputError(ValueError):
    """A required MIMIC file is missing or lacks a required column."""


@dataclass(frozen=True)
class StudyTables:
    """The CSV side of MIMIC, indexed for per-image lookups."""

    metadata: Mapping[str, tuple]  # dicom_id -> (subject_id, study_id, ViewPosition, Rows, Columns, StudyDate, StudyTime)
    metadata_conflicts: set[str]  # dicom_ids whose repeated metadata rows disagree
    split: Mapping[str, tuple]  # dicom_id -> (split,)
    split_conflicts: set[str]
    labels: Mapping[str, Mapping[str, Mapping[str, str]]]  # system -> study_id -> {label name: cell}
    reports: set[str]  # report paths relative to root
    bad_rows: Mapping[str, list[str]] = field(default_factory=dict)  # dicom_id -> "<file> row N: ..." (metadata, split)
    bad_label_rows: Mapping[str, list[str]] = field(default_factory=dict)  # study_id -> "<file> row N: ..."
    unattributed: list[str] = field(default_factory=list)  # bad rows that name no readable id


@dataclass(frozen=True)
class CsvRows:
    """One CSV: canonical column names, good rows (number, stripped cells in column order), bad rows."""

    name: str  # the file as reject details cite it (relative to the MIMIC root)
    columns: list[str]
    rows: list[tuple[int, list[str]]]
    bad: list[csvrows.BadRow]
    positions: dict[str, int]  # canonical column name -> position in the file, to read a bad row's ids

    def column(self, name: str) -> list[str]:
        index = self.columns.index(name)
        return [cells[index] for _, cells in self.rows]


def normalise_column(name: str) -> str:
    """Header spelling used for matching: case, surrounding and inner spaces/underscores ignored."""
    return re.sub(r"[\s_]+", "", name.strip().lower())


def read_csv_rows(path: str, wanted: Collection[str] | None = None, root: str = "") -> CsvRows:
    """All cells as stripped strings (blank stays ""), headers stripped; ``wanted`` keeps only those columns.

    ``wanted`` names are canonical spellings, matched through :func:`normalise_column`, and the result
    uses the canonical spelling. Raises :class:`MimicInputError` if one is missing. A row with the
    wrong number of cells or bytes that are not UTF-8 is kept apart in ``bad``; the others are read.
    """
    canonical = {normalise_column(name): name for name in wanted or ()}
    table = csvrows.read_table(path)
    header = [canonical.get(normalise_column(name), name) for name in table.header]
    missing = sorted(set(canonical.values()) - set(header))
    if missing:
        raise MimicInputError(f"{path}: missing column(s) {missing}")
    keep = [index for index, name in enumerate(header) if not wanted or name in canonical.values()]
    rows = [(number, [cells[index].strip() for index in keep]) for number, cells in table.rows]
    return CsvRows(io.relative(path, root) if root else io.basename(path), [header[index] for index in keep],
                   rows, table.bad, {name: index for index, name in enumerate(header)})


def study_datetime(study_date: str, study_time: str) -> str | None:
    """ISO 8601 from ``StudyDate`` (YYYYMMDD) and the numeric ``StudyTime`` that lost its leading zeros.

    ``("21800723", "80556.875")`` -> ``"2180-07-23T08:05:56.875000"``; no time -> the date alone;
    no date -> None. Raises ValueError for values that are not a real date/time.
    """
    if not study_date:
        return None
    date_match = _STUDY_DATE.match(study_date)
    if not date_match:
        raise ValueError(f"StudyDate {study_date!r} is not YYYYMMDD")
    digits = date_match.group(1)
    day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    if not study_time:
        return day.isoformat()
    time_match = _STUDY_TIME.match(study_time)
    if not time_match:
        raise ValueError(f"StudyTime {study_time!r} is not numeric HHMMSS.ffffff")
    hhmmss = time_match.group(1).zfill(6)
    fraction = (time_match.group(2) or "")[:6].ljust(6, "0")
    moment = time(int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:]), int(fraction))
    return datetime.combine(day, moment).isoformat()


def label_value(text: str) -> float | None:
    """``"1.0"``/``"0.0"``/``"-1.0"`` (or ``1``/``0``/``-1``) -> float; blank -> None; else ValueError."""
    if text == "":
        return None
    value = float(text)
    if value not in _LABEL_VALUES:
        raise ValueError(f"label value {text!r} is not one of 1.0, 0.0, -1.0 or blank")
    return value


def _required_csv(root: str, stem: str) -> str:
    path = io.first_existing(root, f"{stem}.csv.gz", f"{stem}.csv")
    if path is None:
        raise MimicInputError(f"{io.join(root, stem)}.csv(.gz) not found; it is required")
    return path


def _unique_rows(table: CsvRows, key: str, columns: list[str]) -> tuple[dict[str, tuple], set[str]]:
    """``key value -> row tuple`` of ``columns``, plus the keys whose repeated rows disagree."""
    rows: dict[str, tuple] = {}
    conflicting: set[str] = set()
    for key_value, *values in zip(table.column(key), *(table.column(c) for c in columns)):
        values_tuple = tuple(values)
        if rows.setdefault(key_value, values_tuple) != values_tuple:
            conflicting.add(key_value)
    return rows, conflicting


def _bad_rows_by(table: CsvRows, id_column: str, found: dict[str, list[str]], unattributed: list[str]) -> None:
    """File each bad row of ``table`` under the id it names, or as unattributed when it names none."""
    position = table.positions.get(id_column)
    for bad in table.bad:
        value = bad.cell(position)
        (found.setdefault(value, []) if value else unattributed).append(bad.where(table.name))


def _study_labels(root: str, bad_label_rows: dict[str, list[str]],
                  unattributed: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """system -> study_id -> {label column name: cell text}; absent optional files give no entry.
    Rows that cannot be read are filed in ``bad_label_rows`` by study (or ``unattributed``)."""
    tables: dict[str, dict[str, dict[str, str]]] = {}
    for system, stem in LABEL_FILES.items():
        path = io.first_existing(root, f"{stem}.csv.gz", f"{stem}.csv")
        if path is None:
            # the 2.1.0 test-set labels exist only in MIMIC-CXR-JPG 2.1.0; the other two are expected
            report = log.info if system == "mimic-test-labeled" else log.warning
            report("mimic: %s.csv(.gz) not found under %s; no %s labels", stem, root, system)
            continue
        table = read_csv_rows(path, root=root)
        study_column = next((c for c in table.columns if normalise_column(c) == "studyid"), None)
        if study_column is None:
            raise MimicInputError(f"{path}: no study_id column")
        label_columns = [c for c in table.columns if normalise_column(c) not in ID_COLUMNS]
        tables[system] = {
            study: dict(zip(label_columns, cells))
            for study, *cells in zip(table.column(study_column), *(table.column(c) for c in label_columns))
        }
        _bad_rows_by(table, study_column, bad_label_rows, unattributed)
    return tables


def _raw_labels(
    key: str, study_id: str, labels: Mapping[str, Mapping[str, Mapping[str, str]]]
) -> tuple[list[RawLabel], list[Reject]]:
    """The study's labels of every system, and item rejects for cells that are not a label value."""
    raw: list[RawLabel] = []
    bad: list[Reject] = []
    for system, by_study in labels.items():
        for name, text in by_study.get(study_id, {}).items():
            try:
                raw.append(RawLabel(system=system, name=name, value=label_value(text)))
            except ValueError as error:
                bad.append(Reject(key=key, source=NAME, stage="read", reason="bad-label-value",
                                  detail=f"{system} {name!r}: {error}", level="item"))
    return raw, bad


def read_report(root: str, report_path: str) -> tuple[Report | None, tuple[str, str] | None]:
    """The study's report, or None and ``(reason, problem)`` when its file is not UTF-8 text or holds
    no text (the image is still read; the report is an item reject)."""
    data = io.read_bytes(io.join(root, report_path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, ("undecodable-report", f"not UTF-8 text: byte {data[error.start]:#04x} at offset {error.start}")
    if not text.strip():
        return None, ("empty-report", f"{len(data)} bytes and no text")
    return Report(text=text, language="en", origin=report_path), None


def _optional_int(text: str) -> int | None:
    """An integer cell (``"3056"`` or ``"3056.0"``); blank -> None; otherwise ValueError."""
    if text == "":
        return None
    value = float(text)
    if not math.isfinite(value) or value != int(value) or value <= 0:
        raise ValueError(f"{text!r} is not a positive integer")
    return int(value)


def load_tables(root: str) -> StudyTables:
    """Read the metadata, split and label CSVs and list the reports under ``root``."""
    metadata = read_csv_rows(
        _required_csv(root, METADATA_FILE),
        ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime"],
        root,
    )
    split = read_csv_rows(_required_csv(root, SPLIT_FILE), ["dicom_id", "split"], root)
    meta_columns = ["subject_id", "study_id", "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime"]
    meta_rows, meta_conflicts = _unique_rows(metadata, "dicom_id", meta_columns)
    split_rows, split_conflicts = _unique_rows(split, "dicom_id", ["split"])
    bad_rows: dict[str, list[str]] = {}
    bad_label_rows: dict[str, list[str]] = {}
    unattributed: list[str] = []
    for table in (metadata, split):
        _bad_rows_by(table, "dicom_id", bad_rows, unattributed)
    labels = _study_labels(root, bad_label_rows, unattributed)
    reports = {io.relative(path, root) for path in io.glob(io.join(root, "files", "p*", "p*", "s*.txt"))}
    return StudyTables(meta_rows, meta_conflicts, split_rows, split_conflicts, labels, reports,
                       bad_rows, bad_label_rows, unattributed)


def _image_files(root: str) -> dict[str, list[str]]:
    """dicom_id -> paths of its image files (DICOM first), from the tree under ``files/``."""
    by_id: dict[str, list[str]] = {}
    for extension in IMAGE_FORMATS:  # .dcm before .jpg
        for path in io.glob(io.join(root, "files", "p*", "p*", "s*", f"*{extension}")):
            dicom_id = io.basename(path)[: -len(extension)]
            by_id.setdefault(dicom_id, []).append(path)
    return by_id


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """One SourceRecord or Reject per image file under ``root/files``, sorted by image key.

    ``image_sources`` is part of the reader contract and unused here: MIMIC owns its images.
    """
    tables = load_tables(root)
    files = _image_files(root)
    without_file = len(tables.metadata.keys() - files.keys())
    if without_file:
        log.info("mimic: %d metadata rows have no image file under %s/files (not images, not rejects)",
                 without_file, root)

    for detail in tables.unattributed:  # a row too broken to name its image or study is a unit of its own
        yield Reject(key=f"{NAME}/", source=NAME, stage="read", reason="malformed-row", detail=detail)
    for dicom_id in sorted(files):
        key = f"{NAME}/{dicom_id}"
        chosen, *duplicates = files[dicom_id]
        yield from _read_image(root, key, dicom_id, chosen, tables)
        for path in duplicates:
            yield Reject(key=key, source=NAME, stage="read", reason="duplicate-image-file",
                         detail=f"{io.relative(path, root)}: the same dicom_id is read from "
                                f"{io.relative(chosen, root)} (DICOM before JPG)", kind="filtered")


def _read_image(
    root: str,
    key: str,
    dicom_id: str,
    path: str,
    tables: StudyTables,
) -> Iterator[ReaderOutput]:
    """The record of one image file (plus item rejects for bad label cells), or one Reject."""

    def reject(reason: str, detail: str) -> Reject:
        return Reject(key=key, source=NAME, stage="read", reason=reason, detail=detail)

    relative_path = io.relative(path, root)
    path_match = _IMAGE_PATH.match(relative_path)
    if path_match is None or path_match.group(2)[:2] != path_match.group(1):
        yield reject("unexpected-path", f"{relative_path} is not files/pXX/pSUBJECT/sSTUDY/<dicom_id>.dcm|.jpg")
        return
    _, path_subject, path_study, _, extension = path_match.groups()
    if dicom_id in tables.bad_rows:  # a metadata or split row of this image cannot be read
        yield reject("malformed-row", f"{relative_path}: " + "; ".join(tables.bad_rows[dicom_id]))
        return
    for rows, conflicts, what in (
        (tables.metadata, tables.metadata_conflicts, "metadata"),
        (tables.split, tables.split_conflicts, "split"),
    ):
        if dicom_id not in rows:
            yield reject(f"missing-{what}-row", f"{relative_path}: no row for this dicom_id in the {what} CSV")
            return
        if dicom_id in conflicts:
            yield reject(f"conflicting-{what}-rows", f"{relative_path}: the {what} CSV has disagreeing rows")
            return
    subject_id, study_id, view, rows_text, columns_text, date_text, time_text = tables.metadata[dicom_id]
    (split_value,) = tables.split[dicom_id]
    if (subject_id, study_id) != (path_subject, path_study):
        yield reject("path-id-mismatch", f"{relative_path}: metadata says subject {subject_id}, study {study_id}")
        return
    if split_value not in OFFICIAL_SPLITS:
        yield reject("bad-split-value", f"split {split_value!r} is not one of {sorted(OFFICIAL_SPLITS)}")
        return
    try:
        height, width = _optional_int(rows_text), _optional_int(columns_text)
        when = study_datetime(date_text, time_text)
    except ValueError as error:
        yield reject("bad-metadata-value", f"{relative_path}: {error}")
        return

    report_path = f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}.txt"
    report, report_problem = None, None
    if report_path in tables.reports:
        report, report_problem = read_report(root, report_path)
    raw_labels, bad_labels = _raw_labels(key, study_id, tables.labels)
    if report_problem is not None:
        bad_labels.insert(0, Reject(key=key, source=NAME, stage="read", level="item", reason=report_problem[0],
                                    detail=f"{report_path}: {report_problem[1]}"))
    for detail in tables.bad_label_rows.get(study_id, []):
        bad_labels.append(Reject(key=key, source=NAME, stage="read", level="item", reason="malformed-row",
                                 detail=detail))
    yield SourceRecord(
        image=ImageRef(
            image_key=key,
            source=NAME,
            native_id=dicom_id,
            uri=path,
            format=IMAGE_FORMATS[f".{extension}"],
            subject_id=subject_id,
            study_id=study_id,
            view=view or None,
            study_datetime=when,
            official_split=split_value,
            expected_width=width,
            expected_height=height,
        ),
        raw_labels=raw_labels,
        report=report,
        provenance={"report": report_problem[0]} if report_problem else {},
    )
    yield from bad_labels
