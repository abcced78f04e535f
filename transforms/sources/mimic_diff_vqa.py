"""Medical-Diff-VQA (MIMIC-Diff-VQA; PhysioNet ``medical-diff-vqa`` 1.0.0 / 1.0.1):
``mimic_pair_questions.csv`` joined with ``mimic_all.csv``; one AnnotationRecord per MIMIC image that
a question is asked of or compared with.

``root`` is the release folder. A question row names its main study (``study_id``), the reference
study (``ref_id``), the patient, ``question_type``, ``question``, ``answer`` and the dataset's own
``split``; ``mimic_all.csv`` gives each study the ONE image the dataset used for it (``dicom_id``).
Columns are found by name (a leading unnamed index column, as pandas writes one, is ignored). See
``docs/formats/medical-diff-vqa.md``.

Mapping into :class:`AnnotationRecord` (target ``mimic/<dicom_id>`` of the study's mimic_all row):
the study's questions as :class:`NativeQuestion` (``reference_study_id`` = ``ref_id``), in row order.
A study that is only ever a reference gets a record without questions: it marks the image the
difference questions compare with (``provenance["study_id"]``). Which pair is earlier is not judged
here: the difference task checks it against MIMIC's own study times.

Rejects (read stage; a question row is a unit of its own when it cannot be used, keyed
``mimic/s<study_id>``, its detail citing ``mimic_pair_questions.csv row N``): ``bad-row`` (missing
cells, ids that are not integers, an unknown question type or split, an empty question or answer),
``study-not-in-mimic-all`` (its study has no mimic_all row with integer ids and a dicom_id) and
``subject-mismatch`` (its subject is not the one mimic_all gives the study). A second mimic_all row of one study is an item reject
(``duplicate-study``; the first row wins). Without ``mimic`` ingested every record is filtered
(``image-source-not-ingested``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Final

from schemas.records import IMAGE_SOURCES, AnnotationRecord, NativeQuestion, ReaderOutput, Reject
from transforms import io
from transforms.sources import csvrows
from transforms.sources.plan import Keyed, ReadPlan, Row, Table, read_reject, run_serially

NAME = "mimic_diff_vqa"
DATASET: Final = "mimic-diff-vqa"
TARGET_SOURCE = "mimic"
QUESTIONS_FILE = "mimic_pair_questions"
STUDIES_FILE = "mimic_all"
QUESTION_COLUMNS = ("study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split")
STUDY_COLUMNS = ("subject_id", "study_id", "dicom_id")
QUESTION_TYPES = ("abnormality", "presence", "view", "location", "level", "type", "difference")
SPLITS = ("train", "val", "test")


class MimicDiffVqaInputError(ValueError):
    """A required Medical-Diff-VQA file is missing or lacks a column."""


def _columns(root: str, stem: str, wanted: tuple[str, ...]) -> tuple[str, dict[str, int], int]:
    path = io.csv_file(root, stem)
    if path is None:
        raise MimicDiffVqaInputError(f"{io.join(root, stem)}.csv(.gz) not found; it is required")
    header = csvrows.read_header(path)
    positions = {name: header.index(name) for name in wanted if name in header}
    missing = [name for name in wanted if name not in positions]
    if missing:
        raise MimicDiffVqaInputError(f"{path}: no column(s) {', '.join(missing)}")
    return path, positions, len(header)


def _integer_id(text: str, what: str = "study id") -> str:
    """A study or subject id as the MIMIC reader writes it (digits, no ``s``, no leading zeros);
    ValueError otherwise."""
    text = text.strip()
    if not text.isdigit():
        raise ValueError(f"{what} {text!r} is not an integer")
    return str(int(text))


class MimicDiffVqaPlan(ReadPlan):
    """Both CSVs streamed and keyed by study: questions under their main study, a marker under their
    reference study, and mimic_all rows; one join per study."""

    source = NAME
    rounds = (frozenset({"study", "question", "referenced"}),)

    def __init__(self, root: str, mimic_ingested: bool):
        self.root, self.mimic_ingested = root, mimic_ingested
        questions, self.question_columns, self.question_width = _columns(root, QUESTIONS_FILE, QUESTION_COLUMNS)
        studies, self.study_columns, self.study_width = _columns(root, STUDIES_FILE, STUDY_COLUMNS)
        self.names = {"question": io.relative(questions, root), "study": io.relative(studies, root)}
        self.tables = (Table("question", questions), Table("study", studies))

    def key_row(self, tag: str, row: Row) -> Iterator[Keyed | Reject]:
        columns = self.question_columns if tag == "question" else self.study_columns
        width = self.question_width if tag == "question" else self.study_width
        where = f"{self.names[tag]} row {row.number}"
        if row.problem is not None:
            bad = csvrows.bad_row(row.number, row.cells, row.problem, width)
            if tag == "question":
                study = bad.cell(columns["study_id"])
                yield read_reject(NAME, f"{TARGET_SOURCE}/s{study}", "bad-row", bad.where(self.names[tag]))
            return  # a mimic_all row that cannot be read only matters to the questions of its study
        cells = {name: row.cells[position].strip() for name, position in columns.items()}
        if tag == "study":  # a row without a usable study, subject and image is no row: its questions say so
            try:
                study, subject = _integer_id(cells["study_id"]), _integer_id(cells["subject_id"], "subject id")
            except ValueError:
                return
            if cells["dicom_id"]:
                yield Keyed(study, "study", (row.number, cells["dicom_id"], subject))
            return
        try:
            study, reference = _integer_id(cells["study_id"]), _integer_id(cells["ref_id"])
            subject = _integer_id(cells["subject_id"], "subject id")
            problems = [f"question_type {cells['question_type']!r}"] * (cells["question_type"] not in QUESTION_TYPES)
            problems += [f"split {cells['split']!r}"] * (cells["split"] not in SPLITS)
            problems += [f"empty {name}" for name in ("question", "answer") if not cells[name]]
            if problems:
                raise ValueError(", ".join(problems))
        except ValueError as error:
            yield read_reject(NAME, f"{TARGET_SOURCE}/s{cells['study_id']}", "bad-row", f"{where}: {error}")
            return
        question = NativeQuestion(
            dataset=DATASET,
            where=where,
            split=cells["split"],
            question_type=cells["question_type"],
            question=cells["question"],
            answers=[cells["answer"]],
            reference_study_id=reference,
        )
        yield Keyed(study, "question", (row.number, subject, question))
        yield Keyed(reference, "referenced", (row.number,))

    def join(self, study: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput]:
        questions, studies = items["question"], items["study"]
        if not questions and not items["referenced"]:
            return  # a study the dataset does not use
        if not studies:
            for _, _, question in questions:
                yield read_reject(
                    NAME,
                    f"{TARGET_SOURCE}/s{study}",
                    "study-not-in-mimic-all",
                    f"{question.where}: study {study} has no usable row in {self.names['study']}",
                )
            return
        (number, dicom_id, study_subject), duplicates = studies[0], studies[1:]
        key = f"{TARGET_SOURCE}/{dicom_id}"
        kept = []
        for _, subject, question in questions:
            if subject != study_subject:
                yield read_reject(
                    NAME,
                    f"{TARGET_SOURCE}/s{study}",
                    "subject-mismatch",
                    f"{question.where}: subject {subject}, but "
                    f"{self.names['study']} row {number} gives study {study} subject {study_subject}",
                )
            else:
                kept.append(question)
        if not self.mimic_ingested:
            yield read_reject(
                NAME,
                key,
                "image-source-not-ingested",
                f"study {study}: {TARGET_SOURCE} is not among the ingested image sources",
                kind="filtered",
            )
            return
        yield AnnotationRecord(
            target_key=key,
            source=NAME,
            native_id=f"study {study}",
            questions=kept,
            provenance={"study_id": study, "file": f"{self.names['study']} row {number}"},
        )
        for other, other_dicom, _ in duplicates:
            yield read_reject(
                NAME,
                key,
                "duplicate-study",
                f"{self.names['study']} row {other}: study {study} again (image {other_dicom}); row {number} is kept",
                level="item",
            )


def plan(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> MimicDiffVqaPlan:
    """The read plan of a Medical-Diff-VQA folder; :class:`MimicDiffVqaInputError` when either CSV or
    one of the columns read is missing."""
    return MimicDiffVqaPlan(root, TARGET_SOURCE in image_sources)


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """Every record and reject of the folder, in one process."""
    return run_serially(plan(root, image_sources))
