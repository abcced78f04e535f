"""Radixpert's study-level PadChest report rows and MediVLM's report + severity rows, on crafted rows."""

import json

import pytest

from transforms.audit import audit_row, facts_from_annotation
from transforms.geometry import render_box
from transforms.reports import section_list
from transforms.tasks import generator, load_profile
from transforms.tasks.padchest_report import TASK as PADCHEST_REPORT
from transforms.tasks.padchest_report import generate as padchest_report
from transforms.tasks.severity_report import REGIONS, REPORT, region_boxes

RADIXPERT, MEDIVLM = load_profile("radixpert"), load_profile("medivlm")
MIMIC_REPORT = """FINAL REPORT
 FINDINGS:  Large right pleural effusion, increased since the prior study.  Severe cardiomegaly.

 IMPRESSION:  Large right effusion.
"""


def padchest_row(key, view, english, translation=None, study="s1", split="train"):
    return {
        "image_key": f"padchest/{key}",
        "source": "padchest",
        "split": split,
        "subject_id": "p1",
        "study_id": study,
        "view": view,
        "study_datetime": "2015-01-02",
        "report_language": "es-stemmed",
        "report_english": english,
        "report_translation": translation,
    }


def box(label, origin, unit):
    u1, v1, u2, v2 = unit
    return {
        "label": label,
        "finding": None,
        "origin": origin,
        "reader": None,
        "readers": [],
        "x1": u1 * 100,
        "y1": v1 * 100,
        "x2": u2 * 100,
        "y2": v2 * 100,
        "u1": u1,
        "v1": v1,
        "u2": u2,
        "v2": v2,
    }


def mimic_row(view="PA", score=0.4321, boxes=()):
    return {
        "image_key": "mimic/d1",
        "source": "mimic",
        "split": "train",
        "subject_id": "10",
        "study_id": "50",
        "view": view,
        "study_datetime": "2150-01-01",
        "report_text": MIMIC_REPORT,
        "report_language": "en",
        "report_english": None,
        "report_translation": None,
        "sections": [{"name": n, "text": t} for n, t in section_list(MIMIC_REPORT)],
        "severity_tfidf": score,
        "boxes": list(boxes),
    }


def only(rows):
    (row,) = rows
    return row, json.loads(row["target"])


# ---------------------------------------------------------------- Radixpert


def test_a_study_shows_its_frontal_image_with_the_english_statements():
    study = [
        padchest_row("b_lat.png", "L", "Pleural effusion in the costophrenic angle."),
        padchest_row("a_pa.png", "PA", "Left pleural effusion in the costophrenic angle."),
        padchest_row("c_ap.png", "AP", "Left pleural effusion in the costophrenic angle."),
    ]
    row, target = only(padchest_report(study, RADIXPERT, seed=0))
    assert row["image_keys"] == ["padchest/a_pa.png"] and row["task"] == PADCHEST_REPORT
    assert row["conversations"][0]["value"].startswith("<image>\n")
    assert row["conversations"][1]["value"] == "Left pleural effusion in the costophrenic angle."
    assert target["method"] == "padchest-structure" and target["frontal"] is True
    assert padchest_report(list(reversed(study)), RADIXPERT, seed=0) == [row]  # group order does not matter


def test_a_study_without_a_frontal_view_keeps_its_lateral_image_and_sideless_statements():
    study = [padchest_row("b_lat.png", "L", "Pleural effusion in the costophrenic angle.")]
    row, target = only(padchest_report(study, RADIXPERT, seed=0))
    assert row["image_keys"] == ["padchest/b_lat.png"] and target["frontal"] is False
    assert "left" not in row["conversations"][1]["value"].lower()


def test_a_translation_is_the_target_on_a_frontal_view_and_says_so():
    pa = padchest_row("a.png", "PA", "Cardiomegaly.", translation="Cardiomegaly and a left effusion.")
    _, target = only(padchest_report([pa], RADIXPERT, seed=0))
    assert (target["method"], target["text"]) == ("translation", "Cardiomegaly and a left effusion.")
    lateral = padchest_row("b.png", "L", "Cardiomegaly.", translation="Cardiomegaly and a left effusion.")
    _, target = only(padchest_report([lateral], RADIXPERT, seed=0))
    assert (target["method"], target["text"]) == ("padchest-structure", "Cardiomegaly.")  # sides cannot be seen


def test_no_row_without_english_text_or_for_other_sources():
    assert padchest_report([padchest_row("a.png", "PA", None)], RADIXPERT, seed=0) == []
    other = {**padchest_row("a.png", "PA", "Cardiomegaly."), "source": "mimic"}
    assert padchest_report([other], RADIXPERT, seed=0) == []


def test_templates_are_chosen_per_study_and_seed():
    study = [padchest_row("a.png", "PA", "Cardiomegaly.")]
    chosen = {padchest_report(study, RADIXPERT, seed)[0]["template_id"] for seed in range(40)}
    assert len(chosen) == 4
    assert padchest_report(study, RADIXPERT, 3) == padchest_report(study, RADIXPERT, 3)


# ---------------------------------------------------------------- MediVLM


def test_the_answer_is_the_report_then_its_score_with_two_decimals():
    row, target = only(generator(REPORT)(mimic_row(), MEDIVLM, seed=0))
    report = "Large right pleural effusion. Severe cardiomegaly."  # comparison wording rewritten out
    assert row["conversations"][1]["value"] == f"{report}\nSeverity Score: 0.43"
    assert target == {"report": report, "severity_tfidf": 0.4321, "severity_score": "0.43"}


def test_no_report_row_on_a_lateral_view_or_without_a_score():
    assert generator(REPORT)(mimic_row(view="LATERAL"), MEDIVLM, seed=0) == []
    assert generator(REPORT)(mimic_row(score=None), MEDIVLM, seed=0) == []


def test_padchest_rows_use_the_english_statements():
    row = {
        **padchest_row("a.png", "PA", "Left pleural effusion."),
        "sections": [],
        "severity_tfidf": 0.125,
        "boxes": [],
    }
    instruction, _ = only(generator(REPORT)(row, MEDIVLM, seed=0))
    assert instruction["conversations"][1]["value"] == "Left pleural effusion.\nSeverity Score: 0.12"


def test_region_rows_list_one_box_per_region_imagenome_first():
    boxes = [
        box("right lung", "chexmask-mask", (0.1, 0.1, 0.45, 0.8)),
        box("right lung", "imagenome-scene-graph", (0.12, 0.1, 0.46, 0.82)),
        box("heart", "chexmask-mask", (0.4, 0.4, 0.7, 0.8)),
        box("Cardiomegaly", "vindr-annotations", (0.3, 0.3, 0.7, 0.8)),
    ]  # a lesion box is no region
    regions = region_boxes(mimic_row(boxes=boxes))
    assert [(r["label"], r["origin"]) for r in regions] == [
        ("heart", "chexmask-mask"),
        ("right lung", "imagenome-scene-graph"),
    ]
    row, target = only(generator(REGIONS)(mimic_row(boxes=boxes), MEDIVLM, seed=0))
    prompt = row["conversations"][0]["value"]
    assert f"heart: {render_box((0.4, 0.4, 0.7, 0.8), 'fixed3')}; right lung: " in prompt
    assert [b["label"] for b in target["boxes"]] == ["heart", "right lung"]
    assert generator(REGIONS)(mimic_row(boxes=boxes[-1:]), MEDIVLM, seed=0) == []  # no region box: no row


@pytest.mark.parametrize("task", [REPORT, REGIONS])
def test_the_audit_catches_a_wrong_score_and_a_moved_region(task):
    """The audit's MediVLM checks on crafted facts: the row as made is clean, a tampered one is not."""
    boxes = [box("heart", "chexmask-mask", (0.4, 0.4, 0.7, 0.8))]
    annotation = {
        **mimic_row(boxes=boxes),
        "findings": [],
        "raw_labels": [],
        "polygons": [],
        "mentions": [],
        "regions": [],
        "provenance": "{}",
        "ctr_band": None,
        "ptx_band": None,
        "ptx_side": None,
    }
    facts = {annotation["image_key"]: facts_from_annotation(annotation)}
    (row,) = generator(task)(annotation, MEDIVLM, seed=0)
    assert audit_row(row, facts) == []
    wrong = {**row, "target": json.dumps({**json.loads(row["target"]), "severity_score": "0.99"})}
    assert "severity-score-mismatch" in {c.kind for c in audit_row(wrong, facts)}
    if task == REGIONS:
        target = json.loads(row["target"])
        target["boxes"][0]["box"] = [0.1, 0.1, 0.2, 0.2]
        assert "box-not-annotated" in {c.kind for c in audit_row({**row, "target": json.dumps(target)}, facts)}
