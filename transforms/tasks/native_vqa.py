"""VQA rows from the VQA datasets' own files: MIMIC-CXR-VQA questions and Medical-Diff-VQA questions
(annotations column ``questions``, read by ``transforms/sources/mimic_cxr_vqa.py`` and
``mimic_diff_vqa.py``), rendered as M4CXR renders them.

- ``vqa`` (M4CXR pool ``mimicvqa_vqa``): an image MIMIC-CXR-VQA asks about gets one row per question
  instead of the questions generated from its scene graph (``transforms/tasks/vqa.py``), and none when
  its questions were all in another split (:func:`asks_about`).
  The answer is the answer list joined by ", " with a full stop, as M4CXR's MIMIC-CXR-VQA loader
  writes it; a question whose answer list is empty is not asked (M4CXR skips those too) and becomes
  an ``empty-answer`` reject.
- ``main_image_vqa`` (pool ``mimiccxr_diff_vqa``): Medical-Diff-VQA's single-image questions
  (abnormality, presence, view, location, level, type) asked of the main image, answer as written.
- ``difference_vqa`` (pool ``mimiccxr_diff_vqa_difference``): its ``difference`` questions over the
  reference and the main image (``transforms/tasks/difference_vqa.py`` :func:`native_rows`).

Every row's target records ``origin`` (the dataset), where the question was read, the dataset's
split and question type, and the answers as written. A question is only ever in its dataset's split
(``transforms/units.py`` filtered the others before this).
"""

from __future__ import annotations

from typing import Literal

from schemas.records import Reject
from transforms.tasks import Profile, Task, instruction_row
from transforms.templates import load_template_set, render

TASK = "main_image_vqa"
MIMIC_CXR_VQA = "mimic-cxr-vqa"
MIMIC_DIFF_VQA = "mimic-diff-vqa"
SOURCES = {MIMIC_CXR_VQA: "mimic_cxr_vqa", MIMIC_DIFF_VQA: "mimic_diff_vqa"}
"""Each dataset's source name (``transforms/sources/<name>.py``): its records mark the images it asks
about (Medical-Diff-VQA's also the image it gives a reference study), its rejects are counted under it."""
DIFFERENCE = "difference"
NATIVE_KIND = "native"
"""The template kind (in the task's template set) that renders a dataset's own question and answer."""


def asks_about(row: dict, dataset: str) -> bool:
    """Whether ``dataset`` covers the image (its questions may all have been filtered: the image is still
    the dataset's, so nothing is generated in their place)."""
    return SOURCES[dataset] in (row.get("annotation_sources") or ())


def questions_of(row: dict, dataset: str, difference: bool = False) -> list[dict]:
    """The image's questions from ``dataset``: its difference questions, or the others."""
    return [
        q
        for q in row.get("questions") or ()
        if q["dataset"] == dataset and (q["question_type"] == DIFFERENCE) == difference
    ]


def answer_text(question: dict) -> str:
    """The answer as M4CXR trains on it: MIMIC-CXR-VQA's list joined by ", " with a full stop,
    Medical-Diff-VQA's text as written."""
    if question["dataset"] == MIMIC_CXR_VQA:
        return ", ".join(question["answers"]) + "."
    return question["answers"][0]


def target(question: dict) -> dict:
    return {
        "origin": question["dataset"],
        "where": question["where"],
        "native_split": question["split"],
        "question_type": question["question_type"],
        "semantic_type": question["semantic_type"],
        "question": question["question"],
        "answers": list(question["answers"]),
        "reference_study_id": question["reference_study_id"],
    }


def reject(
    row: dict, task: str, reason: str, question: dict, why: str, kind: Literal["rejected", "filtered"] = "rejected"
) -> Reject:
    """A question ``task`` cannot ask, counted under its dataset's source."""
    return Reject(
        key=row["image_key"],
        source=SOURCES[question["dataset"]],
        stage="tasks",
        level="item",
        kind=kind,
        reason=reason,
        detail=f"{task}: {question['where']}: {why}",
    )


def image_rows(row: dict, profile: Profile, task: str, dataset: str) -> list[dict | Reject]:
    """One row per single-image question of ``dataset`` on this image (and a reject per unusable one)."""
    (template,) = load_template_set(profile.tasks[task].template_set).kinds[NATIVE_KIND]
    made: list[dict | Reject] = []
    for question in questions_of(row, dataset):
        if not question["answers"]:
            made.append(
                reject(
                    row, task, "empty-answer", question, "the answer list is empty (M4CXR skips it)", kind="filtered"
                )
            )
            continue
        conversations = render(template, question=question["question"], answer=answer_text(question))
        made.append(
            instruction_row(
                profile=profile.name,
                task=task,
                row=row,
                variant=f"native:{question['where']}",
                conversations=conversations,
                target=target(question),
                template_id=template.id,
            )
        )
    return made


def generate(row: dict, profile: Profile, seed: int) -> list[dict | Reject]:
    """``main_image_vqa``: Medical-Diff-VQA's single-image questions on their main image (none without).
    Its difference questions on an image without a study time are rejected here (``study-not-dated``):
    the patient groups of ``difference_vqa`` hold only dated studies, so they would never see them."""
    made = image_rows(row, profile, TASK, MIMIC_DIFF_VQA)
    if not row["study_datetime"]:
        made += [
            reject(row, "difference_vqa", "study-not-dated", question, "the main study has no study time")
            for question in questions_of(row, MIMIC_DIFF_VQA, difference=True)
        ]
    return made


TASKS = (Task(name=TASK, unit="image", template_sets=("vqa_m4cxr",), generate=generate),)
