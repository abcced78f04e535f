"""Radixpert report generation: one row per PadChest study, its report in English.

The group is one study's annotation rows (the task's unit, ``TASKS`` below). The image shown is the
study's first frontal view (by image key); a study without a frontal view keeps its first image of
another view (Radixpert does not exclude lateral views), whose ``report_english`` the language stage
renders without side words, since left and right cannot be told apart there.

The target is the study's English report:

- ``report_english``: PadChest's sentence labels and localizations rendered as English statements
  (:mod:`transforms.padchest_english`), method ``padchest-structure``; the default, needing no model;
- ``report_translation``: the Spanish report translated by the local model the build configures
  (:mod:`transforms.translation`), method ``translation``, used on frontal views when present (a
  translation names sides, so a lateral view keeps the rendered statements).

The target JSON records the method, so a consumer can keep or drop translated rows. A study whose
chosen image has no English text gets no row.
"""

from __future__ import annotations

from transforms.hashing import seeded_rng
from transforms.tasks import Profile, Task, instruction_row
from transforms.templates import load_template_set, render
from transforms.views import is_frontal

TASK = "padchest_report_generation"
STRUCTURE, TRANSLATION = "padchest-structure", "translation"


def shown_image(study: list[dict]) -> dict:
    """The row whose image a study's row shows: the first frontal view by key, else the first image."""
    return min(study, key=lambda row: (not is_frontal(row["view"]), row["image_key"]))


def english_target(row: dict) -> dict | None:
    """{text, method} of the image's English report; None when it has none."""
    if row["report_translation"] and is_frontal(row["view"]):
        return {"text": row["report_translation"], "method": TRANSLATION}
    if row["report_english"]:
        return {"text": row["report_english"], "method": STRUCTURE}
    return None


def generate(study: list[dict], profile: Profile, seed: int) -> list[dict]:
    row = shown_image(study)
    if row["source"] != "padchest" or (target := english_target(row)) is None:
        return []
    templates = load_template_set(profile.tasks[TASK].template_set)
    template = templates.pick("report", seeded_rng(seed, profile.name, TASK, templates.version, row["study_id"]))
    target = {**target, "study_id": row["study_id"], "view": row["view"], "frontal": is_frontal(row["view"])}
    return [
        instruction_row(
            profile=profile.name,
            task=TASK,
            row=row,
            variant="study-report",
            conversations=render(template, report=target["text"]),
            target=target,
            template_id=template.id,
        )
    ]


TASKS = (Task(name=TASK, unit="study", template_sets=("report_radixpert",), generate=generate),)
