"""Multi-image and multi-study report generation on crafted study and patient groups."""

from __future__ import annotations

import json

import pytest

from transforms.labels import label_report
from transforms.tasks import Profile, TaskSpec
from transforms.tasks.multi import MULTI_IMAGE, MULTI_STUDY, generate_multi_image, generate_multi_study

PROFILE = Profile(
    name="m4cxr",
    coordinates="percent",
    tasks={
        MULTI_IMAGE: TaskSpec(template_set="report_multi_m4cxr"),
        MULTI_STUDY: TaskSpec(template_set="report_multi_m4cxr"),
    },
)


def row(key: str, study: str, when: str, view: str, findings: str, split: str = "train", labels=None) -> dict:
    """An annotation row of a MIMIC image; its study labels are the labeler's on the findings text (or ``labels``)."""
    stated = labels if labels is not None else label_report(findings)
    return {
        "image_key": f"mimic/{key}",
        "source": "mimic",
        "split": split,
        "subject_id": "10000032",
        "study_id": study,
        "view": view,
        "study_datetime": when,
        "report_language": "en",
        "sections": [{"name": "findings", "text": findings}, {"name": "impression", "text": "See above."}],
        "findings": [{"name": n, "presence": None if v is None else int(v)} for n, v in stated.items()],
    }


EARLY = [
    row("b-lat", "51000000", "2180-05-06T09:00:00", "LATERAL", "Small left pleural effusion."),
    row("a-pa", "51000000", "2180-05-06T09:00:00", "PA", "Small left pleural effusion."),
]
LATER = [
    row(
        "c-ap",
        "50000000",
        "2180-06-01T08:05:56.875000",
        "AP",
        "The left pleural effusion has increased. There is moderate cardiomegaly.",
    )
]


def slots(conversations) -> int:
    return sum(turn["value"].count("<image>") for turn in conversations)


def test_multi_image_shows_frontal_first_and_rewrites_comparisons():
    text = "Compared with the prior study, no change. Small left effusion, unchanged."
    study = [
        row("z-lat", "5", "2180-01-01T00:00:00", "LATERAL", text),
        row("y-pa", "5", "2180-01-01T00:00:00", "PA", text),
    ]
    (only,) = generate_multi_image(study, PROFILE, seed=0)
    assert only["image_keys"] == ["mimic/y-pa", "mimic/z-lat"]
    assert slots(only["conversations"]) == 2 and only["conversations"][0]["value"].startswith("<image>\n<image>\n")
    target = json.loads(only["target"])
    assert target["report"] == "Small left effusion." and len(target["rewritten"]) == 2
    assert target["findings"] == ["Pleural Effusion"] and only["conversations"][1]["value"] == "Pleural Effusion"
    assert [t["from"] for t in only["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert generate_multi_image(study[:1], PROFILE, seed=0) == []  # one image is the single-image task


def test_multi_image_needs_a_frontal_view_and_labels_that_agree_with_the_text():
    laterals = [
        row(key, "5", "2180-01-01T00:00:00", view, "Small left effusion.")
        for key, view in (("a", "LATERAL"), ("b", "LL"))
    ]
    assert generate_multi_image(laterals, PROFILE, seed=0) == []  # the report names a side no view shows
    omitted = {**label_report("Small left effusion."), "Pneumothorax": 1.0}  # stated only in the impression
    disagreeing = [
        row(key, "5", "2180-01-01T00:00:00", view, "Small left effusion.", labels=omitted)
        for key, view in (("a", "PA"), ("b", "LATERAL"))
    ]
    assert generate_multi_image(disagreeing, PROFILE, seed=0) == []


def test_multi_study_pairs_consecutive_studies_in_time_order_not_id_order():
    (only,) = generate_multi_study([LATER, EARLY], PROFILE, seed=0)  # ids run against time
    assert only["image_keys"] == ["mimic/a-pa", "mimic/b-lat", "mimic/c-ap"]  # prior study first
    target = json.loads(only["target"])
    assert (target["prior_study_id"], target["study_id"]) == ("51000000", "50000000")
    assert target["prior_report"] == "Small left pleural effusion."
    assert target["report"] == "The left pleural effusion has increased. There is moderate cardiomegaly."
    assert target["findings"] == ["Cardiomegaly", "Pleural Effusion"]
    assert "Small left pleural effusion." in only["conversations"][0]["value"]  # the prior report is the prompt
    assert target["report"] not in only["conversations"][0]["value"]  # the target never leaks into it
    assert slots(only["conversations"]) == 3


def test_a_patient_mixing_splits_is_refused():
    with pytest.raises(ValueError, match="span splits"):
        generate_multi_study([EARLY, [dict(LATER[0], split="test")]], PROFILE, seed=0)


def test_choices_are_seeded_and_stable():
    first = generate_multi_study([EARLY, LATER], PROFILE, seed=0)
    assert first == generate_multi_study([LATER, EARLY], PROFILE, seed=0)
    assert {r["template_id"] for s in range(20) for r in generate_multi_study([EARLY, LATER], PROFILE, seed=s)} != {
        first[0]["template_id"]
    }
