"""Severity and location classification from an image's own attribute mentions and measured bands."""

import json
import string

import pytest

from transforms.labels import TAXONOMY
from transforms.output_rows import _mention_row
from transforms.phrases import attribute_phrase, extract_mentions
from transforms.tasks import Profile, TaskSpec, generator
from transforms.tasks.attributes import LOCATION, SEVERITY
from transforms.templates import load_template_set

PROFILE = Profile(
    name="imt-cxr",
    coordinates="bins1000",
    tasks={SEVERITY: TaskSpec(template_set="attributes_imt"), LOCATION: TaskSpec(template_set="attributes_imt")},
)


def mention(finding, presence=1, laterality=None, zones=(), severity=None, scale=None, sentence="s."):
    low, high = severity or (None, None)
    return {
        "finding": finding,
        "presence": presence,
        "laterality": laterality,
        "zones": list(zones),
        "severity_min": low,
        "severity_max": high,
        "severity_scale": scale,
        "temporal": None,
        "sentence": sentence,
        "span_start": 0,
        "span_end": len(sentence),
    }


def annotation_row(mentions=(), presence=None, key="mimic/a1", source="mimic", view="PA", **columns):
    presence = presence or {}
    row = {
        "image_key": key,
        "source": source,
        "split": "train",
        "view": view,
        "mentions": list(mentions),
        "findings": [{"name": n, "presence": presence.get(n), "systems": [], "raw": []} for n in TAXONOMY],
        "ctr": None,
        "ctr_band": None,
        "ptx_ratio": None,
        "ptx_side": None,
        "ptx_band": None,
    }
    return row | columns


def asked(task, row, seed=0):
    return [(json.loads(r["target"]), r) for r in generator(task)(row, PROFILE, seed)]


def test_a_stated_range_stays_a_range():
    row = annotation_row([mention("Edema", severity=(1, 2), scale="severity")])
    ((target, instruction),) = asked(SEVERITY, row)
    assert instruction["conversations"][1]["value"] == "mild to moderate"
    assert (target["severity_min"], target["severity_max"], target["basis"]) == (1, 2, "report")
    assert "pulmonary edema" in instruction["conversations"][0]["value"]
    assert instruction["conversations"][0]["value"].startswith("<image>\n")


def test_several_mentions_of_one_finding_give_their_combined_range():
    row = annotation_row(
        [
            mention("Pleural Effusion", severity=(1, 1), scale="size"),
            mention("Pleural Effusion", severity=(2, 2), scale="size"),
        ]
    )
    ((_, instruction),) = asked(SEVERITY, row)
    assert instruction["conversations"][1]["value"] == "small to moderate"


@pytest.mark.parametrize("presence", [0, -1])
def test_negated_or_uncertain_mentions_are_never_asked(presence):
    row = annotation_row([mention("Pneumothorax", presence, "left", ["apical"], (1, 1), "size")])
    assert asked(SEVERITY, row) == [] and asked(LOCATION, row) == []


@pytest.mark.parametrize("view", ["LATERAL", "L", None])
def test_no_location_is_asked_on_a_view_without_left_and_right(view):
    row = annotation_row([mention("Pneumothorax", 1, "left", ["apical"], (1, 1), "size")], view=view)
    assert asked(LOCATION, row) == [] and len(asked(SEVERITY, row)) == 1  # severity has no side


def test_the_report_wins_over_the_ctr_band_which_only_fills_in():
    stated = annotation_row([mention("Cardiomegaly", severity=(1, 1), scale="severity")], ctr=0.63, ctr_band="severe")
    ((target, instruction),) = asked(SEVERITY, stated)
    assert instruction["conversations"][1]["value"] == "mild"
    assert target["basis"] == "report" and target["ctr_band"] == "severe"  # the measurement travels along

    unstated = annotation_row(
        presence={"Cardiomegaly": 1}, key="vindr/b2", source="vindr", ctr=0.57, ctr_band="moderate"
    )
    ((target, instruction),) = asked(SEVERITY, unstated)
    assert instruction["conversations"][1]["value"] == "moderate" and target["basis"] == "ctr"
    assert (target["severity_min"], target["severity_max"]) == (2, 2)


@pytest.mark.parametrize(
    "presence, band", [({"Cardiomegaly": 0}, "moderate"), ({}, "severe"), ({"Cardiomegaly": 1}, "normal")]
)
def test_a_ctr_band_alone_never_makes_a_positive(presence, band):
    assert asked(SEVERITY, annotation_row(presence=presence, ctr_band=band)) == []


def test_pneumothorax_size_and_side_from_its_mask_when_the_report_is_silent():
    row = annotation_row(
        presence={"Pneumothorax": 1},
        key="siim/1.2.3",
        source="siim",
        ptx_ratio=0.3,
        ptx_side="left",
        ptx_band="moderate",
    )
    ((severity, _),) = asked(SEVERITY, row)
    ((location, instruction),) = asked(LOCATION, row)
    assert (severity["answer"], severity["scale"], severity["basis"]) == ("moderate", "size", "mask")
    assert (instruction["conversations"][1]["value"], location["basis"]) == ("left", "mask")
    # "both" also means the mask touched neither lung: not a side
    assert asked(LOCATION, row | {"ptx_side": "both"}) == []


def test_locations_list_every_stated_place_and_skip_findings_without_a_side():
    row = annotation_row(
        [
            mention("Lung Lesion", laterality="left", zones=["upper", "apical"]),
            mention("Lung Lesion", laterality="right", zones=["lower"]),
            mention("Lung Lesion", laterality="left", zones=["upper", "apical"]),
            mention("Cardiomegaly", severity=(2, 2), scale="severity"),
            mention("Edema"),
        ]
    )
    ((target, instruction),) = asked(LOCATION, row)
    assert instruction["conversations"][1]["value"] == "left apical and right lower zone"
    assert target["locations"] == [
        {"laterality": "left", "zones": ["upper", "apical"]},
        {"laterality": "right", "zones": ["lower"]},
    ]


REPORT = (
    "Small left apical pneumothorax. Mild to moderate bibasilar atelectasis. Moderate cardiomegaly. "
    "Large right pleural effusion. Severe pulmonary edema."
)


def test_answers_use_the_words_of_the_attribute_prompt():
    mentions = extract_mentions(REPORT)
    row = annotation_row([_mention_row(m) for m in mentions])
    phrases = {m.finding: attribute_phrase(m) for m in mentions}
    severities = {t["finding"]: t["answer"] for t, _ in asked(SEVERITY, row)}
    locations = {t["finding"]: t["answer"] for t, _ in asked(LOCATION, row)}
    assert set(severities) == set(phrases) and set(locations) == set(phrases) - {"Cardiomegaly", "Edema"}
    for finding, phrase in phrases.items():
        assert phrase.startswith(severities[finding] + " ")
        if finding in locations:
            assert f" {locations[finding]} " in f" {phrase} "
    assert severities["Atelectasis"] == "mild to moderate" and locations["Pneumothorax"] == "left apical"


def test_template_choice_is_seeded_stable_and_covers_every_template():
    templates = load_template_set("attributes_imt")
    row = annotation_row([_mention_row(m) for m in extract_mentions(REPORT)])
    assert asked(SEVERITY, row, seed=5) == asked(SEVERITY, row, seed=5)
    # pinned: the choice depends on stable hashes only, never on the process or the runner
    assert [r["template_id"] for _, r in asked(SEVERITY, row, seed=0)] == [
        "imt-sev-2",
        "imt-sev-1",
        "imt-sev-2",
        "imt-sev-3",
        "imt-sev-3",
    ]
    used = set()
    for seed in range(30):
        for task in (SEVERITY, LOCATION):
            for _, instruction in asked(task, row, seed):
                used.add(instruction["template_id"])
                for turn in instruction["conversations"]:
                    assert not [f for _, f, _, _ in string.Formatter().parse(turn["value"]) if f is not None]
    assert used == {t.id for kind in templates.kinds.values() for t in kind}
    ids = [r["id"] for task in (SEVERITY, LOCATION) for _, r in asked(task, row)]
    assert len(ids) == len(set(ids))
