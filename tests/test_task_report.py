"""Single-image report generation: prior-filtered targets, attribute prompts, M4CXR chain of thought."""

import json
import string

import pytest

from transforms.enrich import _mention_row
from transforms.labels import NO_FINDING, label_report
from transforms.phrases import attribute_prompt, extract_mentions
from transforms.reports import section_list
from transforms.tasks import Profile, TaskSpec
from transforms.tasks.report import COT, GENERATORS, REPORT, WITH_ATTRIBUTES
from transforms.templates import load_template_set

IMT = Profile(name="imt-cxr", coordinates="bins1000", tasks={
    REPORT: TaskSpec(template_set="report_imt"), WITH_ATTRIBUTES: TaskSpec(template_set="report_imt")})
M4CXR = Profile(name="m4cxr", coordinates="percent", tasks={COT: TaskSpec(template_set="report_cot_m4cxr")})

WITH_PRIOR = """FINAL REPORT
 INDICATION:  Cough.
 
 FINDINGS:  Moderate cardiomegaly is unchanged from the prior study.  Small left
 pleural effusion.  No pneumothorax.
 
 IMPRESSION:  Small left effusion.  Stable cardiomegaly.
"""
CLEAN = """FINAL REPORT
 FINDINGS:  Small left pleural effusion.  Possible right basilar
 atelectasis.  No pneumothorax.
 
 IMPRESSION:  Left effusion.
"""
IMPRESSION_ONLY = """FINAL REPORT
 IMPRESSION:  No acute cardiopulmonary process.
"""


def annotation_row(report, key="mimic/r1", language="en"):
    """The report columns of an annotation row, derived the way the enrich stage derives them."""
    sections = [{"name": name, "text": text} for name, text in section_list(report)]
    mentions = [m for name, text in section_list(report) if name in ("findings", "impression")
                for m in extract_mentions(text)]
    findings = next((s["text"] for s in reversed(sections) if s["name"] == "findings"), None)
    return {"image_key": key, "source": "mimic", "split": "test", "report_text": report, "report_language": language,
            "sections": sections, "mentions": [_mention_row(m) for m in mentions],
            "attribute_prompt": attribute_prompt(mentions) or None,
            "findings_labels": None if findings is None else [
                {"name": n, "value": v} for n, v in label_report(findings).items()]}


def only(task, row, profile, seed=0):
    (instruction,) = GENERATORS[task](row, profile, seed)
    return instruction, json.loads(instruction["target"])


def test_single_image_target_drops_prior_references_and_keeps_them_in_the_target():
    instruction, target = only(REPORT, annotation_row(WITH_PRIOR), IMT)
    assert instruction["conversations"][1]["value"] == "Small left pleural effusion. No pneumothorax."
    assert target["removed"] == ["Moderate cardiomegaly is unchanged from the prior study."]
    assert target["section"] == "findings" and "findings" in instruction["conversations"][0]["value"]
    assert "prior" not in instruction["conversations"][0]["value"]


def test_impression_is_the_target_without_findings_and_other_reports_give_nothing():
    instruction, target = only(REPORT, annotation_row(IMPRESSION_ONLY), IMT)
    assert (target["section"], target["text"]) == ("impression", "No acute cardiopulmonary process.")
    assert GENERATORS[REPORT](annotation_row(WITH_PRIOR, language="es-stemmed"), IMT, 0) == []
    only_prior = annotation_row("FINAL REPORT\n FINDINGS:  Stable cardiomegaly.\n")
    assert all(GENERATORS[task](only_prior, IMT if task != COT else M4CXR, 0) == [] for task in GENERATORS)


def test_attribute_prompt_names_only_what_the_target_says():
    row = annotation_row(WITH_PRIOR)
    assert "moderate cardiomegaly" in row["attribute_prompt"]  # from the removed sentence
    instruction, target = only(WITH_ATTRIBUTES, row, IMT)
    assert target["attributes"] == "small left pleural effusion"
    assert target["attributes"] in instruction["conversations"][0]["value"]
    assert instruction["conversations"][1]["value"] == target["text"]
    no_positive = annotation_row("FINAL REPORT\n FINDINGS:  No pneumothorax.  No effusion.\n")
    assert GENERATORS[WITH_ATTRIBUTES](no_positive, IMT, 0) == []


def test_chain_of_thought_lists_the_findings_labels_then_writes_the_findings():
    row = annotation_row(CLEAN)
    instruction, target = only(COT, row, M4CXR)
    turns = instruction["conversations"]
    assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"]
    assert turns[0]["value"].startswith("<image>\n") and "<image>" not in turns[2]["value"]
    positives = [f["name"] for f in row["findings_labels"] if f["value"] == 1.0 and f["name"] != NO_FINDING]
    assert positives == ["Pleural Effusion"] and turns[1]["value"] == "Pleural Effusion"
    assert target["labels_basis"] == "findings_labels" and target["findings"] == positives
    assert turns[3]["value"] == "Small left pleural effusion. Possible right basilar atelectasis. No pneumothorax."
    uncertain = Profile(**(M4CXR.model_dump() | {"uncertain": "positive"}))
    assert only(COT, row, uncertain)[1]["findings"] == ["Atelectasis", "Pleural Effusion"]


def test_chain_of_thought_relabels_the_text_left_after_the_prior_filter():
    row = annotation_row(WITH_PRIOR)
    assert {f["name"]: f["value"] for f in row["findings_labels"]}["Cardiomegaly"] == 1.0
    instruction, target = only(COT, row, M4CXR)
    assert target["labels_basis"] == "relabelled_after_prior_filter"
    assert instruction["conversations"][1]["value"] == "Pleural Effusion"  # the cardiomegaly sentence went
    labels = label_report(instruction["conversations"][3]["value"])
    assert target["findings"] == [n for n, v in labels.items() if v == 1.0 and n != NO_FINDING]


@pytest.mark.parametrize("findings, answer", [("No acute process.  No pneumothorax.", "No Finding"),
                                              ("Possible right basilar atelectasis.", "No definite finding")])
def test_chain_of_thought_without_positives(findings, answer):
    instruction, target = only(COT, annotation_row(f"FINAL REPORT\n FINDINGS:  {findings}\n"), M4CXR)
    assert instruction["conversations"][1]["value"] == answer and target["findings"] == []


def test_templates_are_seeded_stable_filled_and_all_used():
    rows = [annotation_row(report, key=f"mimic/{i}") for i, report in enumerate((WITH_PRIOR, CLEAN) * 10)]
    # pinned: the choice depends on stable hashes only, never on the process or the runner
    assert [GENERATORS[COT](row, M4CXR, 0)[0]["template_id"] for row in rows[:3]] == [
        "m4-cot-list-3+m4-cot-text-3", "m4-cot-list-2+m4-cot-text-1", "m4-cot-list-2+m4-cot-text-1"]
    used = set()
    for row in rows:
        for task, profile in ((REPORT, IMT), (WITH_ATTRIBUTES, IMT), (COT, M4CXR)):
            instructions = GENERATORS[task](row, profile, 7)
            assert instructions == GENERATORS[task](row, profile, 7)
            for instruction in instructions:
                used.update(instruction["template_id"].split("+"))
                for turn in instruction["conversations"]:
                    assert not [f for _, f, _, _ in string.Formatter().parse(turn["value"]) if f is not None]
    every = {t.id for name in ("report_imt", "report_cot_m4cxr")
             for kind in load_template_set(name).kinds.values() for t in kind}
    assert used == every
