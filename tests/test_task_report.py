"""Single-image report generation: targets with comparison wording rewritten out, frontal views only,
attribute prompts, M4CXR chain of thought that agrees with its text and with the image's labels."""

import json
import string

import pytest

from transforms.labels import NO_FINDING, label_report
from transforms.output_rows import _mention_row
from transforms.phrases import attribute_prompt, extract_mentions
from transforms.reports import clean_text, section_list
from transforms.tasks import Profile, TaskSpec, generator
from transforms.tasks.report import COT, REPORT, WITH_ATTRIBUTES
from transforms.templates import load_template_set

IMT = Profile(
    name="imt-cxr",
    coordinates="bins1000",
    tasks={REPORT: TaskSpec(template_set="report_imt"), WITH_ATTRIBUTES: TaskSpec(template_set="report_imt")},
)
M4CXR = Profile(name="m4cxr", coordinates="percent", tasks={COT: TaskSpec(template_set="report_cot_m4cxr")})

# MIMIC-CXR style: the blank lines between sections hold one space.
WITH_PRIOR = (
    "FINAL REPORT\n"
    " INDICATION:  Cough.\n"
    " \n"
    " FINDINGS:  Moderate cardiomegaly is unchanged from the prior study.  Small left\n"
    " pleural effusion.  No pneumothorax.\n"
    " \n"
    " IMPRESSION:  Small left effusion.  Stable cardiomegaly.\n"
)
CLEAN = (
    "FINAL REPORT\n"
    " FINDINGS:  Small left pleural effusion.  Possible right basilar\n"
    " atelectasis.  No pneumothorax.\n"
    " \n"
    " IMPRESSION:  Left effusion.\n"
)
IMPRESSION_ONLY = """FINAL REPORT
 IMPRESSION:  No acute cardiopulmonary process.
"""


def annotation_row(report, key="mimic/r1", language="en", view="PA", labels=None):
    """The report columns of an annotation row, derived the way the enrich stage derives them; the
    harmonised findings are the labeler's on FINDINGS + IMPRESSION (as MIMIC's study labels), or ``labels``."""
    sections = [{"name": name, "text": text} for name, text in section_list(report)]
    mentions = [
        m for name, text in section_list(report) if name in ("findings", "impression") for m in extract_mentions(text)
    ]
    findings = next((s["text"] for s in reversed(sections) if s["name"] == "findings"), None)
    stated = (
        labels
        if labels is not None
        else label_report(" ".join(s["text"] for s in sections if s["name"] in ("findings", "impression")))
    )
    return {
        "image_key": key,
        "source": "mimic",
        "split": "test",
        "view": view,
        "report_text": report,
        "report_language": language,
        "sections": sections,
        "mentions": [_mention_row(m) for m in mentions],
        "attribute_prompt": attribute_prompt(mentions) or None,
        "findings": [{"name": n, "presence": None if v is None else int(v)} for n, v in stated.items()],
        "findings_labels": None
        if findings is None
        else [{"name": n, "value": v} for n, v in label_report(clean_text(findings)).items()],
    }


def only(task, row, profile, seed=0):
    (instruction,) = generator(task)(row, profile, seed)
    return instruction, json.loads(instruction["target"])


def test_single_image_target_rewrites_comparisons_and_keeps_their_findings():
    instruction, target = only(REPORT, annotation_row(WITH_PRIOR), IMT)
    assert instruction["conversations"][1]["value"] == (
        "Moderate cardiomegaly. Small left pleural effusion. No pneumothorax."
    )
    assert target["rewritten"] == [
        {
            "original": "Moderate cardiomegaly is unchanged from the prior study.",
            "result": "Moderate cardiomegaly.",
            "residual": False,
        }
    ]
    assert target["section"] == "findings" and "findings" in instruction["conversations"][0]["value"]
    assert "prior" not in instruction["conversations"][0]["value"]


def test_crlf_reports_leave_no_carriage_return_in_targets():
    instruction, target = only(REPORT, annotation_row(WITH_PRIOR.replace("\n", "\r\n")), IMT)
    assert target["text"] == "Moderate cardiomegaly. Small left pleural effusion. No pneumothorax."
    assert not any("\r" in turn["value"] for turn in instruction["conversations"])


def test_impression_is_the_target_without_findings_and_other_reports_give_nothing():
    _, target = only(REPORT, annotation_row(IMPRESSION_ONLY), IMT)
    assert (target["section"], target["text"]) == ("impression", "No acute cardiopulmonary process.")
    assert generator(REPORT)(annotation_row(WITH_PRIOR, language="es-stemmed"), IMT, 0) == []
    only_comparison = annotation_row("FINAL REPORT\n FINDINGS:  No interval change.\n")
    assert all(
        generator(task)(only_comparison, IMT if task != COT else M4CXR, 0) == []
        for task in (REPORT, WITH_ATTRIBUTES, COT)
    )


@pytest.mark.parametrize("view", ["LATERAL", "LL", None])
def test_no_single_image_report_on_a_view_without_left_and_right(view):
    row = annotation_row(CLEAN, view=view)
    assert all(generator(task)(row, IMT if task != COT else M4CXR, 0) == [] for task in (REPORT, WITH_ATTRIBUTES, COT))


def test_attribute_prompt_names_only_what_the_target_says():
    row = annotation_row(WITH_PRIOR)
    instruction, target = only(WITH_ATTRIBUTES, row, IMT)
    assert target["attributes"] == "moderate cardiomegaly, small left pleural effusion"  # the rewritten one too
    assert target["attributes"] in instruction["conversations"][0]["value"]
    assert instruction["conversations"][1]["value"] == target["text"]
    stable_only = annotation_row(
        "FINAL REPORT\n FINDINGS:  Small left effusion.  No interval change in the\n"
        " mediastinum.\n IMPRESSION:  Moderate cardiomegaly.\n"
    )
    assert only(WITH_ATTRIBUTES, stable_only, IMT)[1]["attributes"] == "small left pleural effusion"
    no_positive = annotation_row("FINAL REPORT\n FINDINGS:  No pneumothorax.  No effusion.\n")
    assert generator(WITH_ATTRIBUTES)(no_positive, IMT, 0) == []


def test_chain_of_thought_lists_the_positives_of_its_own_text_then_writes_it():
    row = annotation_row(CLEAN)
    instruction, target = only(COT, row, M4CXR)
    turns = instruction["conversations"]
    assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"]
    assert turns[0]["value"].startswith("<image>\n") and "<image>" not in turns[2]["value"]
    assert turns[1]["value"] == "Pleural Effusion" and target["findings"] == ["Pleural Effusion"]
    assert turns[3]["value"] == "Small left pleural effusion. Possible right basilar atelectasis. No pneumothorax."
    uncertain = Profile(**(M4CXR.model_dump() | {"uncertain": "positive"}))
    assert only(COT, row, uncertain)[1]["findings"] == ["Atelectasis", "Pleural Effusion"]


def test_chain_of_thought_of_a_rewritten_text_lists_every_finding_it_states():
    row = annotation_row(WITH_PRIOR)
    instruction, target = only(COT, row, M4CXR)
    assert instruction["conversations"][1]["value"] == "Cardiomegaly, Pleural Effusion"
    labels = label_report(instruction["conversations"][3]["value"])
    assert target["findings"] == [n for n, v in labels.items() if v == 1.0 and n != NO_FINDING]


def test_chain_of_thought_that_would_contradict_the_images_labels_is_not_written():
    text_omits = annotation_row(CLEAN, labels={**label_report("Small left effusion."), "Edema": 1.0})
    assert generator(COT)(text_omits, M4CXR, 0) == []  # the impression's edema is not in the FINDINGS text
    labelled_absent = annotation_row(CLEAN, labels={**label_report("Small left effusion."), "Pleural Effusion": 0.0})
    assert generator(COT)(labelled_absent, M4CXR, 0) == []


@pytest.mark.parametrize(
    "findings, answer",
    [
        ("No acute process.  No pneumothorax.", "No Finding"),
        ("Possible right basilar atelectasis.", "No definite finding"),
    ],
)
def test_chain_of_thought_without_positives(findings, answer):
    instruction, target = only(COT, annotation_row(f"FINAL REPORT\n FINDINGS:  {findings}\n"), M4CXR)
    assert instruction["conversations"][1]["value"] == answer and target["findings"] == []


def test_templates_are_seeded_stable_filled_and_all_used():
    rows = [annotation_row(report, key=f"mimic/{i}") for i, report in enumerate((WITH_PRIOR, CLEAN) * 10)]
    # pinned: the choice depends on stable hashes only, never on the process or the runner
    assert [generator(COT)(row, M4CXR, 0)[0]["template_id"] for row in rows[:3]] == [
        "m4-cot-list-3+m4-cot-text-3",
        "m4-cot-list-2+m4-cot-text-1",
        "m4-cot-list-2+m4-cot-text-1",
    ]
    used = set()
    for row in rows:
        for task, profile in ((REPORT, IMT), (WITH_ATTRIBUTES, IMT), (COT, M4CXR)):
            instructions = generator(task)(row, profile, 7)
            assert instructions == generator(task)(row, profile, 7)
            for instruction in instructions:
                used.update(instruction["template_id"].split("+"))
                for turn in instruction["conversations"]:
                    assert not [f for _, f, _, _ in string.Formatter().parse(turn["value"]) if f is not None]
    every = {
        t.id
        for name in ("report_imt", "report_cot_m4cxr")
        for kind in load_template_set(name).kinds.values()
        for t in kind
    }
    assert used == every
