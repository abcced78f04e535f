"""MIMIC-CXR-VQA (v1.0.0 of its builder): ``dataset/{train,valid,test}.json`` as its builder writes them
once the answers are generated; one AnnotationRecord per MIMIC image that has questions.

``root`` is the ``mimiccxrvqa`` folder. Each file is a JSON array of question objects (``split``, ``idx``,
``image_id``, ``question``, ``content_type``, ``semantic_type``, ``template``, ``answer``, ...; see
``docs/formats/mimic-cxr-vqa.md``); the answer-less skeletons (``_train.json`` ...) and
``ans2idx.json`` are never read. The files are streamed element by element (:func:`json_array`), so
a 300 MB ``train.json`` is never held whole.

Mapping into :class:`AnnotationRecord` (target ``mimic/<image_id>``): one :class:`NativeQuestion`
per question, in file order (train, valid, test, then position in the file), with the file's split as the question's
own split; ``where`` cites the file and the question's position in its array (``idx`` is checked,
not used). A question is a unit of its own when it cannot be used: an element that is not an object
with the keys and types above (``bad-question``), or whose ``split`` is not its file's
(``split-mismatch``), is a read reject keyed by the image it names (``mimic/`` when it names none),
its detail citing file and position. A file that stops being a JSON array part way is one
``not-json`` reject for the rest of it. Without ``mimic`` among the ingested image sources every image's
questions are filtered (``image-source-not-ingested``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from typing import Final

from schemas.records import IMAGE_SOURCES, AnnotationRecord, NativeQuestion, ReaderOutput, Reject
from transforms import io
from transforms.sources.plan import Keyed, Listing, ReadPlan, read_reject, run_serially

NAME = "mimic_cxr_vqa"
DATASET: Final = "mimic-cxr-vqa"
TARGET_SOURCE = "mimic"
SPLIT_FILES = ("train", "valid", "test")
"""The answered files, ``dataset/<name>.json``, in the order their questions are kept."""
CHUNK = 1 << 20
MAX_ELEMENT = 16 << 20
"""Largest question object read (characters): a longer one is an error, not a reason to buffer the file."""
_TEXT_FIELDS = ("split", "image_id", "question", "content_type", "semantic_type", "template")


class MimicCxrVqaInputError(ValueError):
    """The MIMIC-CXR-VQA folder as a whole cannot be read."""


def json_array(handle, chunk: int = CHUNK) -> Iterator[object]:
    """The elements of the JSON array in the text stream ``handle``, one by one; ValueError (with the
    element's position) where the text stops being a JSON array."""
    decoder = json.JSONDecoder()
    buffer, at, ended, position = "", 0, False, 0

    def more() -> bool:
        nonlocal buffer, at, ended
        if ended:
            return False
        text = handle.read(chunk)
        if not text:
            ended = True
            return False
        buffer, at = buffer[at:] + text, 0  # the text before the element being read is dropped
        return True

    def next_char() -> str:
        nonlocal at
        while True:
            while at < len(buffer) and buffer[at].isspace():
                at += 1
            if at < len(buffer):
                return buffer[at]
            if not more():
                return ""

    def close() -> None:  # past the closing "]": only white space may follow
        nonlocal at
        at += 1
        if next_char():
            raise ValueError(f"text after the array's closing ']': {buffer[at : at + 20]!r}")

    if next_char() != "[":
        raise ValueError("does not start with '['")
    at += 1
    if next_char() == "]":
        close()
        return
    while True:
        if not next_char():
            raise ValueError(f"element {position}: the file ends inside the array")
        while True:
            try:
                value, end = decoder.raw_decode(buffer, at)
            except json.JSONDecodeError as error:
                # read on only when the element may just be cut by the chunk's end, and only so far
                cut = error.pos >= len(buffer) - 9 or error.msg.startswith("Unterminated string")  # "-Infinity"
                if cut and len(buffer) - at < MAX_ELEMENT and more():
                    continue
                raise ValueError(f"element {position}: {error.msg}") from None
            if (end < len(buffer) and (buffer[end].isspace() or buffer[end] in ",]")) or not more():
                break  # else a number may go on in the next chunk ("0" of "0.5"): decode again with it
        at = end
        yield value
        position += 1
        separator = next_char()
        if separator == "]":
            close()
            return
        at += 1
        if separator != ",":
            raise ValueError(f"after element {position - 1}: expected ',' or ']', found {separator or 'the end'!r}")


def question_of(element: object, file_split: str, where: str) -> NativeQuestion:
    """The question an array element states; ValueError naming what is wrong."""
    if not isinstance(element, dict):
        raise ValueError(f"a {type(element).__name__}, not an object")
    missing = [name for name in (*_TEXT_FIELDS, "idx", "answer") if name not in element]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    wrong = [name for name in _TEXT_FIELDS if not isinstance(element[name], str) or not element[name]]
    answer = element["answer"]
    if not isinstance(answer, list) or not all(isinstance(item, str) and item.strip() for item in answer):
        wrong.append("answer (not a list of non-empty strings)")
    if isinstance(element["idx"], bool) or not isinstance(element["idx"], int):
        wrong.append("idx (not an integer)")
    if wrong:
        raise ValueError(f"bad {', '.join(wrong)}")
    return NativeQuestion(
        dataset=DATASET,
        where=where,
        split=file_split,
        question_type=element["content_type"],
        semantic_type=element["semantic_type"],
        template=element["template"],
        question=element["question"],
        answers=list(answer),
    )


class MimicCxrVqaPlan(ReadPlan):
    """The three answered files, listed (one worker each), streamed and keyed by image_id."""

    source = NAME
    rounds = (frozenset({"question"}),)

    def __init__(self, root: str, mimic_ingested: bool):
        self.root, self.mimic_ingested = root, mimic_ingested
        folder = io.join(root, "dataset")
        present = [name for name in SPLIT_FILES if io.any_match(io.join(folder, f"{name}.json"))]
        if not present:
            skeletons = io.any_match(io.join(folder, "_*.json"))  # _train_part1.json, _valid.json, ...
            hint = (
                " (only the answer-less _*.json skeletons are there: run the dataset's build_dataset.sh "
                "with your PhysioNet credentials to make them)"
                if skeletons
                else ""
            )
            raise MimicCxrVqaInputError(f"{folder}: none of {', '.join(f'{n}.json' for n in SPLIT_FILES)}{hint}")
        self.listings = (Listing("split-file", folder, ".json", tuple(present)),)

    def key_file(self, tag: str, path: str) -> Iterator[Keyed | Reject]:
        split = io.basename(path)[: -len(".json")]
        number, name = SPLIT_FILES.index(split), io.relative(path, self.root)
        position = 0
        try:
            with io.open_text(path) as handle:
                for element in json_array(handle):
                    yield from self._keyed(element, split, number, position, name)
                    position += 1
        except (ValueError, UnicodeDecodeError, OSError) as error:
            yield read_reject(
                NAME,
                f"{TARGET_SOURCE}/",
                "not-json",
                f"{name}: {error}; {position} element(s) read, nothing after them",
            )

    def _keyed(self, element, split: str, number: int, position: int, name: str) -> Iterator[Keyed | Reject]:
        image_id = element.get("image_id") if isinstance(element, dict) else None
        key = image_id if isinstance(image_id, str) else ""
        where = f"{name} #{position}"
        try:
            question = question_of(element, split, where)
        except ValueError as error:
            yield read_reject(NAME, f"{TARGET_SOURCE}/{key}", "bad-question", f"{where}: {error}")
            return
        if element["split"] != split:
            yield read_reject(
                NAME, f"{TARGET_SOURCE}/{key}", "split-mismatch", f"{where}: split {element['split']!r} in {split}.json"
            )
            return
        yield Keyed(key, "question", ((number, position), question))

    def join(self, image_id: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput]:
        key = f"{TARGET_SOURCE}/{image_id}"
        if not self.mimic_ingested:
            yield read_reject(
                NAME,
                key,
                "image-source-not-ingested",
                f"{len(items['question'])} question(s): {TARGET_SOURCE} is not among the ingested image sources",
                kind="filtered",
            )
            return
        questions = [question for _, question in items["question"]]
        yield AnnotationRecord(
            target_key=key,
            source=NAME,
            native_id=image_id,
            questions=questions,
            provenance={"questions": str(len(questions))},
        )


def plan(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> MimicCxrVqaPlan:
    """The read plan of a MIMIC-CXR-VQA folder; :class:`MimicCxrVqaInputError` when ``dataset/`` holds
    none of the answered files."""
    return MimicCxrVqaPlan(root, TARGET_SOURCE in image_sources)


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """Every record and reject of the folder, in one process."""
    return run_serially(plan(root, image_sources))
