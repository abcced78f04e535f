"""Triage: how severe (how urgent) a study is, answered with the severity bucket of its report.

The bucket is ``severity_bucket`` of the row's ``severity_ordinal`` (``manifests/severity.yaml``: the
weighted stated ordinals of the report's positive mentions); the target carries the score, the
MediVLM-style ``severity_tfidf`` when the build has fitted it, and the manifest version. The score
describes a report, so only rows with a report are asked: an image without one (VinDr, SIIM) scores 0
because nothing was said, not because nothing is wrong. PadChest rows qualify: their mentions come from
the radiologists' sentence labels.
"""

from __future__ import annotations

import manifests
from transforms.hashing import seeded_rng
from transforms.tasks import Profile, instruction_row
from transforms.templates import load_template_set, render

TASK = "triage"
_SEVERITY = manifests.load("severity.yaml")
BUCKETS = tuple(bucket["name"] for bucket in _SEVERITY["ordinal"]["buckets"])


def generate(row: dict, profile: Profile, seed: int) -> list[dict]:
    if row["report_text"] is None:
        return []
    bucket, score = row["severity_bucket"], row["severity_ordinal"]
    if bucket not in BUCKETS or score is None:
        raise ValueError(f"{row['image_key']} has a report but severity {score!r} / bucket {bucket!r}; "
                         f"buckets are {BUCKETS}")
    templates = load_template_set(profile.tasks[TASK].template_set)
    template = templates.pick("severity", seeded_rng(seed, profile.name, TASK, templates.version, row["image_key"]))
    target = {"bucket": bucket, "severity_ordinal": score, "severity_tfidf": row["severity_tfidf"],
              "version": _SEVERITY["version"]}
    return [instruction_row(profile=profile.name, task=TASK, row=row, variant="severity",
                            conversations=render(template, buckets=", ".join(BUCKETS), answer=bucket),
                            target=target, template_id=template.id)]
