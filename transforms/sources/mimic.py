"""MIMIC-CXR (DICOM, 2.0.0) and MIMIC-CXR-JPG (2.0.0 / 2.1.0) reader.

``root`` holds ``files/p1X/p1XXXXXXX/s5XXXXXXX/<dicom_id>.dcm|.dcm.gz|.jpg`` (report ``s5XXXXXXX.txt`` beside
the study folder) and the CSVs side by side: ``mimic-cxr-2.0.0-metadata`` and ``-split`` (required),
``-chexpert`` and ``-negbio`` and ``mimic-cxr-2.1.0-test-set-labeled`` (optional), each ``.csv`` or
``.csv.gz`` (not both: ``io.csv_file``). See ``docs/formats/mimic-cxr.md``.

The image files on disk are the authority: one output per image file. Metadata rows without a file
are not images; each is logged at debug level, not rejected. When a study folder holds more than one
file of a ``dicom_id`` (``.dcm``, gzipped ``.dcm.gz``, ``.jpg``), the first of :data:`IMAGE_PREFERENCE`
is read and each other is recorded as filtered (``duplicate-image-file``).

An unreadable metadata or split row (missing cells, not UTF-8) rejects its image (``malformed-row``,
naming the file and row); an unreadable label row is an item reject on each image of its study.
A study repeated in one label CSV is read once when its rows agree; rows that disagree cost the study
that system's labels, an item reject ``conflicting-label-rows`` on each of its images naming the file
and rows (:mod:`transforms.sources.conflicts`). A
report that is not UTF-8, holds no text, cannot be opened or is over :data:`MAX_REPORT_BYTES` costs the
image its report only: an item reject (``undecodable-report`` / ``empty-report`` / ``unreadable-report``
/ ``oversized-report``), ``report`` None and
``provenance["report"]`` the reason.

How it is read (:class:`MimicPlan`): ``files/`` is listed once, in the shards ``files/p10/`` …
``files/p19/`` (subject ids are 10000000-19999999) plus shards for any other ``files/p*/`` folder,
each file in exactly one shard; a listed path is an image or a report by its place and extension.
Round 1, by ``dicom_id``: the image files, metadata rows, split rows and unreadable rows of those
give the image's reject or a candidate; round 2, by ``study_id``: the candidates, the report file,
the label rows of each system and the unreadable label rows. The report is read once per study there
and every image of the study gets its record. Rows too broken to name their image or study are
rejects of their own, key ``mimic/``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Iterator
from datetime import date, datetime, time
from functools import partial
from typing import Literal, NamedTuple, cast

from schemas.records import (
    IMAGE_SOURCES,
    ImageRef,
    OfficialSplit,
    RawLabel,
    ReaderOutput,
    Reject,
    Report,
    SourceRecord,
)
from transforms import io
from transforms.sources import conflicts as conflicts_policy
from transforms.sources import csvrows
from transforms.sources.plan import Keyed, Listing, ReadPlan, Row, Table, read_reject, run_serially

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

METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime")
SPLIT_COLUMNS = ("dicom_id", "split")
IMAGE_FORMATS: dict[str, Literal["dicom", "jpeg"]] = {".dcm": "dicom", ".dcm.gz": "dicom", ".jpg": "jpeg"}
"""Image file extension -> format; ``.dcm.gz`` (gzipped DICOM, an older published layout) is
decompressed when the image stage reads it (``io.read_image_bytes``)."""
IMAGE_PREFERENCE = (".dcm", ".dcm.gz", ".jpg")
"""Which file of a dicom_id is read when a study folder holds several; the others are filtered."""
OFFICIAL_SPLITS = frozenset({"train", "validate", "test"})
ID_COLUMNS = frozenset({"subjectid", "studyid", "dicomid"})
"""Normalised names of identifier columns; every other column of a label CSV is a label."""
GROUP_FOLDERS = tuple(f"p1{digit}/" for digit in range(10))
"""Prefix shards of ``files/``: the group folders p10 … p19, where every MIMIC image and report is."""
OTHER_FOLDERS = ("p/", "p1/", "p[!1/]*/", "p1[!0-9/]*/", "p1[0-9][!/]*/")
"""The other ``files/p*/`` folders (none in MIMIC, read all the same), so that with
:data:`GROUP_FOLDERS` each folder is in exactly one shard. On an object store the last three list
the whole tree (a prefix stops at the first ``[``) and match nothing there, in parallel with the rest."""

_IMAGE_PATH = re.compile(r"^files/p(\d{2})/p(\d{8})/s(\d{8})/([^/]+?)\.(dcm|dcm\.gz|jpg)$")
# What a listed path must look like, relative to root, to be an image or a report: the glob patterns
# files/p*/p*/s*/*.dcm|.dcm.gz|.jpg and files/p*/p*/s*.txt ("*" stops at "/" and "\", as Beam's globs do).
_LISTED_IMAGE = re.compile(r"files/p[^/\\]*/p[^/\\]*/s[^/\\]*/[^/\\]*(\.dcm|\.dcm\.gz|\.jpg)\Z", re.DOTALL)
_LISTED_REPORT = re.compile(r"files/p[^/\\]*/p[^/\\]*/s([^/\\]*)\.txt\Z", re.DOTALL)
_STUDY_DATE = re.compile(r"^(\d{8})(?:\.0*)?$")
_STUDY_TIME = re.compile(r"^(\d{1,6})(?:\.(\d*))?$")
_LABEL_VALUES = {1.0, 0.0, -1.0}
MAX_REPORT_BYTES = 1 << 20
"""A MIMIC report is a few kilobytes; a file over 1 MiB is not one report (a log or a concatenation
pasted in): an item reject ``oversized-report``, not seconds per megabyte of rule matching in the
language stage."""


class MimicInputError(ValueError):
    """A required MIMIC file is missing or lacks a required column."""


def normalise_column(name: str) -> str:
    """Header spelling used for matching: case, surrounding and inner spaces/underscores ignored."""
    return re.sub(r"[\s_]+", "", name.strip().lower())


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


def read_report(root: str, report_path: str) -> tuple[Report | None, tuple[str, str] | None]:
    """The study's report, or None and ``(reason, problem)`` when its file is not UTF-8 text or holds
    no text or cannot be opened (the image is still read; the report is an item reject)."""
    try:
        data = io.read_bytes(io.join(root, report_path))
    except OSError as error:  # no permission, a link to nothing, a read error
        return None, ("unreadable-report", f"cannot be read: {error}")
    if len(data) > MAX_REPORT_BYTES:
        return None, ("oversized-report", f"{len(data)} bytes, more than the {MAX_REPORT_BYTES} a report may hold")
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


class _Columns(NamedTuple):
    """Where a CSV's needed cells are: a good row's values are read at ``values``, the id first (the
    first column of each name); a row that cannot be read names its id at ``bad_id`` (the last column
    of the id's name, as the old table-reading code found it)."""

    name: str  # the file as reject details cite it (relative to the MIMIC root)
    width: int
    values: tuple[int, ...]
    bad_id: int


def _columns(path: str, root: str, header: list[str], wanted: tuple[str, ...]) -> _Columns:
    """The positions of ``wanted`` (canonical names, matched through :func:`normalise_column`; the
    first is the id) in a header; :class:`MimicInputError` when one is missing."""
    canonical = {normalise_column(name): name for name in wanted}
    names = [canonical.get(normalise_column(name), name) for name in header]
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise MimicInputError(f"{path}: missing column(s) {missing}")
    last = {name: index for index, name in enumerate(names)}
    return _Columns(io.relative(path, root), len(header), tuple(names.index(name) for name in wanted), last[wanted[0]])


def _optional_csv(root: str, stem: str) -> str | None:
    return io.csv_file(root, stem)


def _required_csv(root: str, stem: str) -> str:
    path = _optional_csv(root, stem)
    if path is None:
        raise MimicInputError(f"{io.join(root, stem)}.csv(.gz) not found; it is required")
    return path


class _LabelFile(NamedTuple):
    system: str
    columns: _Columns  # values: the study id, then the label columns
    labels: tuple[str, ...]  # label names (each once, in header order)


def _label_file(path: str, root: str, system: str) -> _LabelFile:
    header = csvrows.read_header(path)
    study = next((name for name in header if normalise_column(name) == "studyid"), None)
    if study is None:
        raise MimicInputError(f"{path}: no study_id column")
    labels = tuple(dict.fromkeys(name for name in header if normalise_column(name) not in ID_COLUMNS))
    # a repeated name is read from its first column; a bad row names its study in the last one of that name
    columns = _Columns(
        io.relative(path, root),
        len(header),
        tuple(header.index(name) for name in (study, *labels)),
        max(index for index, name in enumerate(header) if name == study),
    )
    return _LabelFile(system, columns, labels)


class _Candidate(NamedTuple):
    """An image whose files and rows agree, waiting for its study's report and labels."""

    dicom_id: str
    uri: str
    format: Literal["dicom", "jpeg"]
    subject_id: str
    view: str
    height: int | None
    width: int | None
    when: str | None
    split: OfficialSplit  # checked against OFFICIAL_SPLITS
    duplicates: tuple[str, ...]  # other files of this dicom_id (filtered after the record)


class MimicPlan(ReadPlan):
    """Files and rows joined by dicom_id into candidates, then candidates, reports and labels by study.

    Round 1 items: an image file ``("file", ((place in IMAGE_PREFERENCE, uri),))``; a metadata or split row
    ``("metadata" | "split", ((table, row), cells))``; a row that cannot be read ``("bad-row", ((table,
    row), where))``. Round 2: a :class:`_Candidate`; a report ``("report", (path,))``; a label row
    ``("label-row", ((label file, row), cells))``; a label row that cannot be read ``("bad-label-row",
    ((label file, row), where))``."""

    source = NAME
    rounds = (
        frozenset({"file", "metadata", "split", "bad-row"}),
        frozenset({"candidate", "report", "label-row", "bad-label-row"}),
    )

    def __init__(self, root: str):
        self.root = root
        metadata = _required_csv(root, METADATA_FILE)
        self.metadata = _columns(metadata, root, csvrows.read_header(metadata), METADATA_COLUMNS)
        split = _required_csv(root, SPLIT_FILE)
        self.split = _columns(split, root, csvrows.read_header(split), SPLIT_COLUMNS)
        label_files, tables = [], [Table("metadata", metadata), Table("split", split)]
        for system, stem in LABEL_FILES.items():
            path = _optional_csv(root, stem)
            if path is None:
                # the 2.1.0 test-set labels exist only in MIMIC-CXR-JPG 2.1.0; the other two are expected
                report = log.info if system == "mimic-test-labeled" else log.warning
                report("mimic: %s.csv(.gz) not found under %s; no %s labels", stem, root, system)
                continue
            label_files.append(_label_file(path, root, system))
            tables.append(Table(system, path))
        self.label_files = tuple(label_files)
        self.tables = tuple(tables)
        # table tag -> (its number, where its cells are, the tags of its good and its unreadable rows)
        self.row_tables = {
            "metadata": (0, self.metadata, "metadata", "bad-row"),
            "split": (1, self.split, "split", "bad-row"),
        }
        for number, label_file in enumerate(label_files):
            self.row_tables[label_file.system] = (number, label_file.columns, "label-row", "bad-label-row")
        self.listings = (Listing("files", io.join(root, "files"), "**", GROUP_FOLDERS + OTHER_FOLDERS),)

    def key_file(self, tag: str, path: str) -> Iterator[Keyed]:
        relative = io.relative(path, self.root)
        if image := _LISTED_IMAGE.match(relative):
            extension = image.group(1)
            yield Keyed(io.basename(path)[: -len(extension)], "file", ((IMAGE_PREFERENCE.index(extension), path),))
        elif report := _LISTED_REPORT.match(relative):
            yield Keyed(report.group(1), "report", (relative,))

    def key_row(self, tag: str, row: Row) -> Iterator[Keyed | Reject]:
        number, columns, good_tag, bad_tag = self.row_tables[tag]
        if row.problem is None:  # keyed by its id (dicom_id, or study_id in a label file): the other cells
            key, *values = (row.cells[position].strip() for position in columns.values)
            yield Keyed(key, good_tag, ((number, row.number), tuple(values)))
            return
        bad = csvrows.bad_row(row.number, row.cells, row.problem, columns.width)
        key = bad.cell(columns.bad_id)
        if key:
            yield Keyed(key, bad_tag, ((number, row.number), bad.where(columns.name)))
        else:  # a row too broken to name its image or study is a unit of its own
            yield read_reject(NAME, f"{NAME}/", "malformed-row", bad.where(columns.name))

    def join(self, key: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput | Keyed]:
        if "file" in items:
            yield from self._join_image(key, items)
        else:
            yield from self._join_study(key, items)

    def _join_image(self, dicom_id: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput | Keyed]:
        """One dicom_id: its files (in :data:`IMAGE_PREFERENCE` order) and rows -> its reject, or a
        candidate for its study."""
        files = [path for ((_, path),) in items["file"]]
        if not files:
            if items["metadata"]:
                log.debug(
                    "mimic: metadata row for %s but no image file under %s/files (not an image)", dicom_id, self.root
                )
            return
        chosen, *duplicates = files
        checked = self._check_image(dicom_id, chosen, items)
        if isinstance(checked, Reject):
            yield checked
            yield from self._duplicates(dicom_id, chosen, duplicates)
        else:  # the duplicates are filtered after the record, as before
            study_id, candidate = checked
            yield Keyed(study_id, "candidate", candidate._replace(duplicates=tuple(duplicates)))

    def _check_image(self, dicom_id: str, path: str, items: dict[str, list[tuple]]) -> Reject | tuple[str, _Candidate]:
        """The image's reject, or its study id and candidate: its path, rows and values checked in order."""
        key = f"{NAME}/{dicom_id}"

        reject = partial(read_reject, NAME, key)

        relative_path = io.relative(path, self.root)
        path_match = _IMAGE_PATH.match(relative_path)
        if path_match is None or path_match.group(2)[:2] != path_match.group(1):
            return reject(
                "unexpected-path", f"{relative_path} is not files/pXX/pSUBJECT/sSTUDY/<dicom_id>.dcm|.dcm.gz|.jpg"
            )
        _, path_subject, path_study, _, extension = path_match.groups()
        if items["bad-row"]:  # a metadata or split row of this image cannot be read
            return reject("malformed-row", f"{relative_path}: " + "; ".join(where for _, where in items["bad-row"]))
        rows = {}
        for what in ("metadata", "split"):
            found = [values for _, values in items[what]]
            if not found:
                return reject(f"missing-{what}-row", f"{relative_path}: no row for this dicom_id in the {what} CSV")
            if any(values != found[0] for values in found):
                return reject(f"conflicting-{what}-rows", f"{relative_path}: the {what} CSV has disagreeing rows")
            rows[what] = found[0]
        subject_id, study_id, view, rows_text, columns_text, date_text, time_text = rows["metadata"]
        (split_value,) = rows["split"]
        if (subject_id, study_id) != (path_subject, path_study):
            return reject("path-id-mismatch", f"{relative_path}: metadata says subject {subject_id}, study {study_id}")
        if split_value not in OFFICIAL_SPLITS:
            return reject("bad-split-value", f"split {split_value!r} is not one of {sorted(OFFICIAL_SPLITS)}")
        try:
            height, width = _optional_int(rows_text), _optional_int(columns_text)
            when = study_datetime(date_text, time_text)
        except ValueError as error:
            (_, metadata_row), _ = items["metadata"][0]
            return reject("bad-metadata-value", f"{relative_path}: {self.metadata.name} row {metadata_row}: {error}")
        return study_id, _Candidate(
            dicom_id,
            path,
            IMAGE_FORMATS[f".{extension}"],
            subject_id,
            view,
            height,
            width,
            when,
            cast(OfficialSplit, split_value),
            (),
        )

    def _duplicates(self, dicom_id: str, chosen: str, duplicates: Collection[str]) -> Iterator[Reject]:
        for path in duplicates:
            yield read_reject(
                NAME,
                f"{NAME}/{dicom_id}",
                "duplicate-image-file",
                f"{io.relative(path, self.root)}: the same dicom_id is read from "
                f"{io.relative(chosen, self.root)} (.dcm before .dcm.gz before .jpg)",
                kind="filtered",
            )

    def _join_study(self, study_id: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput]:
        """One study: the record of each candidate image, with the report (read once) and the labels."""
        if not items["candidate"]:
            return
        listed_reports = {path for (path,) in items["report"]}
        label_rows: dict[int, list[tuple[int, tuple[str, ...]]]] = {}
        for (number, row), values in items["label-row"]:
            label_rows.setdefault(number, []).append((row, values))
        labels, conflicts = [], []  # repeated rows of a study: merged when identical, else rejected
        for number, label_file in enumerate(self.label_files):
            rows = sorted(label_rows.get(number, []))
            same, values = conflicts_policy.agreed([values for _, values in rows])
            if not same:
                conflicts.append(
                    conflicts_policy.rows_detail(
                        label_file.columns.name,
                        [row for row, _ in rows],
                        f"study {study_id} has disagreeing rows; no {label_file.system} labels are read for it",
                    )
                )
            elif values is not None:
                labels.append((label_file.system, dict(zip(label_file.labels, values))))
        reports: dict[str, tuple[Report | None, tuple[str, str] | None]] = {}
        for candidate in cast(list[_Candidate], items["candidate"]):  # as _join_image keyed them
            key = f"{NAME}/{candidate.dicom_id}"
            subject_id = candidate.subject_id
            report_path = f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}.txt"
            report, report_problem = None, None
            if report_path in listed_reports:
                if report_path not in reports:
                    reports[report_path] = read_report(self.root, report_path)
                report, report_problem = reports[report_path]
            raw_labels, item_rejects = [], []
            if report_problem is not None:
                item_rejects.append(
                    read_reject(NAME, key, report_problem[0], f"{report_path}: {report_problem[1]}", level="item")
                )
            for system, cells in labels:
                for name, text in cells.items():
                    try:
                        raw_labels.append(RawLabel(system=system, name=name, value=label_value(text)))
                    except ValueError as error:
                        item_rejects.append(
                            read_reject(NAME, key, "bad-label-value", f"{system} {name!r}: {error}", level="item")
                        )
            for detail in conflicts:
                item_rejects.append(read_reject(NAME, key, "conflicting-label-rows", detail, level="item"))
            for _, detail in items["bad-label-row"]:
                item_rejects.append(read_reject(NAME, key, "malformed-row", detail, level="item"))
            yield SourceRecord(
                image=ImageRef(
                    image_key=key,
                    source=NAME,
                    native_id=candidate.dicom_id,
                    uri=candidate.uri,
                    format=candidate.format,
                    subject_id=subject_id,
                    study_id=study_id,
                    view=candidate.view or None,
                    study_datetime=candidate.when,
                    official_split=candidate.split,
                    expected_width=candidate.width,
                    expected_height=candidate.height,
                ),
                raw_labels=raw_labels,
                report=report,
                provenance={"report": report_problem[0]} if report_problem else {},
            )
            yield from item_rejects
            yield from self._duplicates(candidate.dicom_id, candidate.uri, candidate.duplicates)


def plan(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> MimicPlan:
    """The read plan of the MIMIC tree under ``root``; :class:`MimicInputError` when a required CSV is
    missing or a CSV lacks a column. ``image_sources`` is part of the reader contract; MIMIC owns its images."""
    return MimicPlan(root)


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """One SourceRecord or Reject per image file under ``root/files`` (plus item rejects after a record):
    rows that name no image first, then images rejected by their files and rows (by dicom_id), then the
    records by study and dicom_id, each followed by its item rejects and duplicate files."""
    return run_serially(plan(root, image_sources))
