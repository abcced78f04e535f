"""Triage: how severe (how urgent) a study is, answered with the bucket of its most severe finding.

The bucket is :func:`transforms.severity.triage_bucket` of the row's mentions (``manifests/severity.yaml``
``triage``: the largest stated ordinal of a finding present, never a mean, so a large pneumothorax is a
severe study whatever else is small); the target carries it beside the weighted ``severity_ordinal``,
MediVLM's ``severity_tfidf`` when the build has fitted it, and the manifest version. The score
describes a report, so only rows with a report are asked: an image without one (VinDr, SIIM) scores 0
because nothing was said, not because nothing is wrong. PadChest rows qualify: their mentions come from
the radiologists' sentence labels.
"""

from __future__ import annotations

import manifests
from schemas.records import AttributeMention
from transforms.hashing import seeded_rng
from transforms.severity import triage_bucket
from transforms.tasks import Profile, Task, instruction_row
from transforms.templates import load_template_set, render

TASK = "triage"
_SEVERITY = manifests.load("severity.yaml")
BUCKETS = tuple(bucket["name"] for bucket in _SEVERITY["ordinal"]["buckets"])


def generate(row: dict, profile: Profile, seed: int) -> list[dict]:
    if row["report_text"] is None:
        return []
    bucket, score = triage_bucket(AttributeMention.from_row(m) for m in row["mentions"] or ()), row["severity_ordinal"]
    if bucket not in BUCKETS or score is None:
        raise ValueError(
            f"{row['image_key']} has a report but severity {score!r} / bucket {bucket!r}; buckets are {BUCKETS}"
        )
    templates = load_template_set(profile.tasks[TASK].template_set)
    template = templates.pick("severity", seeded_rng(seed, profile.name, TASK, templates.version, row["image_key"]))
    target = {
        "bucket": bucket,
        "severity_ordinal": score,
        "severity_tfidf": row["severity_tfidf"],
        "version": _SEVERITY["version"],
    }
    return [
        instruction_row(
            profile=profile.name,
            task=TASK,
            row=row,
            variant="severity",
            conversations=render(template, buckets=", ".join(BUCKETS), answer=bucket),
            target=target,
            template_id=template.id,
        )
    ]


TASKS = (Task(name=TASK, unit="image", template_sets=("triage",), generate=generate),)
