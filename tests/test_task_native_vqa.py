"""VQA rows from the VQA datasets' own questions (transforms/tasks/native_vqa.py, difference_vqa.native_rows):
native questions replace generated ones where present, render in M4CXR's patterns, keep their answers
as written, and every question that cannot be asked is a reject with its reason; the dataset's split
is kept (transforms/units.py)."""

from __future__ import annotations

import json

import pytest

from schemas.records import AnnotationRecord, ImageRef, NativeQuestion, Reject, SourceRecord
from tests.test_task_difference_vqa import EARLY, LATE, NO_PTX, image
from tests.test_task_vqa import CRAFTED
from transforms.tasks import Profile, TaskSpec, generator
from transforms.units import ImageUnit, join_image

PROFILE = Profile(
    name="m4cxr",
    coordinates="percent",
    tasks={
        "vqa": TaskSpec(template_set="vqa_m4cxr"),
        "main_image_vqa": TaskSpec(template_set="vqa_m4cxr"),
        "difference_vqa": TaskSpec(template_set="vqa_difference_m4cxr"),
    },
)
SINGLE = "radiology image: <image>\nAnswer the question. "
"""M4CXR's "vqa" pattern: its image message and "Answer the question. {question}" joined by a newline."""
PAIR = (
    "reference: <image>, main: <image>\nUsing the provided reference and main radiology images, answer the "
    "following question. "
)


def question(
    dataset: str,
    where: str,
    text: str,
    answers,
    question_type: str = "presence",
    split: str = "train",
    reference: str | None = None,
) -> dict:
    return NativeQuestion(
        dataset=dataset,
        where=where,
        split=split,
        question_type=question_type,
        semantic_type="verify" if dataset == "mimic-cxr-vqa" else None,
        template="Is there ${attribute}?" if dataset == "mimic-cxr-vqa" else None,
        question=text,
        answers=list(answers),
        reference_study_id=reference,
    ).model_dump()


def conversation(row: dict) -> tuple[str, str]:
    human, gpt = row["conversations"]
    return human["value"], gpt["value"]


def test_mimic_cxr_vqa_questions_replace_the_generated_ones_on_their_image():
    assert all(
        json.loads(r["target"])["origin"] == "imagenome-scene-graph" for r in generator("vqa")(CRAFTED, PROFILE, seed=0)
    )  # the scene graph alone: generated
    row = {
        **CRAFTED,
        "annotation_sources": ["imagenome", "mimic_cxr_vqa", "mimic_diff_vqa"],
        "questions": [
            question("mimic-cxr-vqa", "dataset/train.json #4", "Is there pleural effusion in the left lung?", ["yes"]),
            question(
                "mimic-cxr-vqa",
                "dataset/train.json #9",
                "List all abnormalities in the right lung.",
                ["atelectasis", "lung opacity"],
                "abnormality",
            ),
            question("mimic-cxr-vqa", "dataset/train.json #12", "List all tubes in the left lung.", []),
            question("mimic-diff-vqa", "mimic_pair_questions.csv row 3", "is there edema?", ["no"], reference="5"),
        ],
    }
    made = generator("vqa")(row, PROFILE, seed=0)
    rows = [r for r in made if isinstance(r, dict)]
    assert [conversation(r) for r in rows] == [
        (SINGLE + "Is there pleural effusion in the left lung?", "yes."),
        (SINGLE + "List all abnormalities in the right lung.", "atelectasis, lung opacity."),
    ]
    first = json.loads(rows[0]["target"])
    assert first == {
        "origin": "mimic-cxr-vqa",
        "where": "dataset/train.json #4",
        "native_split": "train",
        "question_type": "presence",
        "semantic_type": "verify",
        "answers": ["yes"],
        "question": "Is there pleural effusion in the left lung?",
        "reference_study_id": None,
    }
    assert {r["template_id"] for r in rows} == {"m4-vqa-native"} and len({r["id"] for r in rows}) == 2
    (empty,) = [r for r in made if isinstance(r, Reject)]
    assert (empty.reason, empty.stage, empty.level, empty.key) == (
        "empty-answer",
        "tasks",
        "item",
        CRAFTED["image_key"],
    )
    assert "dataset/train.json #12" in empty.detail and empty.source == "mimic_cxr_vqa"
    # an image MIMIC-CXR-VQA asks about only in another split: its questions were filtered, none is generated
    assert generator("vqa")({**row, "questions": []}, PROFILE, seed=0) == []


def test_main_image_vqa_asks_medical_diff_vqa_single_image_questions_as_written():
    row = {
        **CRAFTED,
        "study_datetime": EARLY,
        "questions": [
            question(
                "mimic-diff-vqa",
                "mimic_pair_questions.csv row 1",
                "where is the pleural effusion?",
                ["left side"],
                "location",
                reference="5",
            ),
            question(
                "mimic-diff-vqa",
                "mimic_pair_questions.csv row 2",
                "what has changed compared to the reference image?",
                ["nothing has changed."],
                "difference",
                reference="5",
            ),
            question("mimic-cxr-vqa", "dataset/train.json #1", "Is there pleural effusion?", ["yes"]),
        ],
    }
    (only,) = generator("main_image_vqa")(row, PROFILE, seed=0)
    assert conversation(only) == (SINGLE + "where is the pleural effusion?", "left side")
    assert json.loads(only["target"])["origin"] == "mimic-diff-vqa" and only["image_keys"] == [CRAFTED["image_key"]]
    assert generator("main_image_vqa")({**CRAFTED, "study_datetime": EARLY}, PROFILE, seed=0) == []  # none generated
    # a difference question on an undated main study: no patient group holds it, so it is rejected here
    undated = generator("main_image_vqa")({**row, "study_datetime": None}, PROFILE, seed=0)
    assert [(r.reason, r.source) for r in undated if isinstance(r, Reject)] == [("study-not-dated", "mimic_diff_vqa")]


def diff_image(key: str, study: str, when: str, questions=(), marked: bool = True) -> dict:
    sources = ("imagenome", "mimic_diff_vqa") if marked else ("imagenome",)
    return {**image(key, study, when, NO_PTX, sources=sources), "questions": list(questions)}


def difference(
    where: str,
    reference: str,
    answer: str = "the main image has an additional finding of edema than the reference image.",
) -> dict:
    return question(
        "mimic-diff-vqa",
        where,
        "what has changed compared to the reference image?",
        [answer],
        "difference",
        reference=reference,
    )


def test_difference_questions_pair_the_reference_study_image_first_with_the_main():
    reference = diff_image("r", "s1", EARLY)
    other = diff_image("r2", "s1", EARLY, marked=False)  # same study, not the image the dataset names
    main = diff_image("m", "s2", LATE, [difference("mimic_pair_questions.csv row 7", "s1")])
    (row,) = generator("difference_vqa")([[other, reference], [main]], PROFILE, seed=0)
    assert row["image_keys"] == ["mimic/r", "mimic/m"]
    assert conversation(row) == (
        PAIR + "what has changed compared to the reference image?",
        "the main image has an additional finding of edema than the reference image.",
    )
    target = json.loads(row["target"])
    assert target["origin"] == "mimic-diff-vqa" and target["reference"]["study_id"] == "s1"
    assert target["main"]["study_datetime"] == LATE


def test_a_reversed_or_unbuilt_reference_is_a_reject_and_the_rest_is_asked():
    early_main = diff_image("m1", "s1", EARLY, [difference("mimic_pair_questions.csv row 2", "s2")])  # the 1.0.0 defect
    later = diff_image(
        "m2",
        "s2",
        LATE,
        [difference("mimic_pair_questions.csv row 5", "s1"), difference("mimic_pair_questions.csv row 6", "s9")],
    )
    made = generator("difference_vqa")([[early_main], [later]], PROFILE, seed=0)
    rows = [r for r in made if isinstance(r, dict)]
    rejects = {(r.reason, r.key, r.detail.split(": ")[1]) for r in made if isinstance(r, Reject)}
    assert [r["image_keys"] for r in rows] == [["mimic/m1", "mimic/m2"]]
    assert rejects == {
        ("reference-not-earlier", "mimic/m1", "mimic_pair_questions.csv row 2"),
        ("reference-image-missing", "mimic/m2", "mimic_pair_questions.csv row 6"),
    }
    assert {(r.source, r.kind) for r in made if isinstance(r, Reject)} == {("mimic_diff_vqa", "rejected")}


def test_a_patient_without_native_difference_questions_gets_generated_ones():
    patient = [[diff_image("r", "s1", EARLY, marked=False)], [diff_image("m", "s2", LATE, marked=False)]]
    rows = [r for seed in range(20) for r in generator("difference_vqa")(patient, PROFILE, seed)]
    assert rows and {json.loads(r["target"])["origin"] for r in rows} == {"imagenome-scene-graph"}


def unit_with(questions: list[NativeQuestion], official_split: str) -> list:
    ref = ImageRef(
        image_key="mimic/d1",
        source="mimic",
        native_id="d1",
        uri="/x/d1.dcm",
        format="dicom",
        subject_id="1",
        study_id="2",
        official_split=official_split,
    )
    annotation = AnnotationRecord(target_key="mimic/d1", source="mimic_cxr_vqa", native_id="d1", questions=questions)
    return list(join_image("mimic/d1", [SourceRecord(image=ref)], [annotation]))


@pytest.mark.parametrize(
    ("official", "kept"), [("train", ["train"]), ("validate", ["valid", "val"]), ("test", ["test"])]
)
def test_a_question_stays_in_its_dataset_s_split_or_is_filtered(official, kept):
    questions = [
        NativeQuestion(**question("mimic-cxr-vqa", f"f #{n}", "q?", ["yes"], split=split))
        for n, split in enumerate(["train", "valid", "val", "test"])
    ]
    *rejects, unit = unit_with(questions, official)
    assert isinstance(unit, ImageUnit)
    assert [q.split for q in unit.annotations[0].questions] == kept
    assert all(
        (r.reason, r.stage, r.kind, r.level) == ("vqa-split-differs", "split", "filtered", "item") for r in rejects
    )
    assert len(rejects) == 4 - len(kept)
