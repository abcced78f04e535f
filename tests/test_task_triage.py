"""Triage rows: the severity bucket of a report, with its score in the target."""

import json
import string

import pytest

from transforms.phrases import extract_mentions
from transforms.severity import severity_bucket, severity_ordinal
from transforms.tasks import Profile, TaskSpec
from transforms.tasks.triage import BUCKETS, TASK, generate
from transforms.templates import load_template_set

PROFILE = Profile(name="m4cxr", coordinates="percent", tasks={TASK: TaskSpec(template_set="triage")})
REPORTS = {
    "none": "Heart size is normal. No pneumothorax. No pleural effusion.",
    "mild": "Mild left basilar atelectasis.",
    "moderate": "Moderate cardiomegaly. Moderate right pleural effusion.",
    "severe": "Large right pneumothorax. Severe pulmonary edema.",
}


def annotation_row(report, key="mimic/t1", source="mimic"):
    score = severity_ordinal(extract_mentions(report)) if report is not None else 0.0
    return {"image_key": key, "source": source, "split": "validate", "report_text": report,
            "severity_ordinal": score, "severity_bucket": severity_bucket(score), "severity_tfidf": 0.5}


@pytest.mark.parametrize("bucket", BUCKETS)
def test_the_answer_is_the_bucket_of_the_reports_score(bucket):
    row = annotation_row(REPORTS[bucket])
    (instruction,) = generate(row, PROFILE, seed=0)
    target = json.loads(instruction["target"])
    assert instruction["conversations"][1]["value"] == bucket == target["bucket"]
    assert target["severity_ordinal"] == row["severity_ordinal"] and target["version"] == "severity-v1"
    assert instruction["conversations"][0]["value"].startswith("<image>\n")
    assert ", ".join(BUCKETS) in instruction["conversations"][0]["value"]


def test_an_image_without_a_report_is_not_triaged():
    assert generate(annotation_row(None, key="vindr/abc", source="vindr"), PROFILE, seed=0) == []


def test_a_report_without_a_valid_severity_is_an_error():
    with pytest.raises(ValueError, match="bucket"):
        generate(annotation_row(REPORTS["mild"]) | {"severity_bucket": None}, PROFILE, seed=0)


def test_templates_are_seeded_stable_filled_and_all_used():
    rows = [annotation_row(REPORTS["mild"], key=f"mimic/{i}") for i in range(12)]
    # pinned: the choice depends on stable hashes only, never on the process or the runner
    assert [generate(row, PROFILE, 0)[0]["template_id"] for row in rows[:4]] == [
        "triage-2", "triage-1", "triage-3", "triage-2"]
    used = set()
    for row in rows:
        (instruction,) = generate(row, PROFILE, 3)
        assert generate(row, PROFILE, 3) == [instruction]
        used.add(instruction["template_id"])
        for turn in instruction["conversations"]:
            assert not [f for _, f, _, _ in string.Formatter().parse(turn["value"]) if f is not None]
    assert used == {t.id for kind in load_template_set("triage").kinds.values() for t in kind}
