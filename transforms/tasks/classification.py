"""Disease classification from harmonised findings (presence 1 / 0 / -1 / null).

Only what the source states is used: a finding with null presence is never asked, and never implied
absent. Uncertain findings (-1) follow the profile's ``uncertain`` policy (under ``exclude`` they are
neither asked nor implied). Per image, by the template kinds the profile's set has:

- ``open`` ("What disease does this image have?"): the answer names every positive finding, so it
  also says every other finding is absent. Asked only when the image's source states every finding of
  the taxonomy (no null, no excluded uncertain one): PadChest's full label lists, not a SIIM image
  that is labelled for pneumothorax alone, nor a MIMIC report that leaves findings unmentioned.
- ``open_candidates``: the same question over an explicit candidate list, the findings the source
  states for this image (M4CXR's form), when ``open`` cannot be asked (IMT-CXR) or always (M4CXR).
- ``yes_no``: one yes question per positive finding and as many known negatives (at least one),
  chosen with a seeded generator.

Findings read through :func:`transforms.tasks.finding_phrase` ("Pleural Other" -> "pleural thickening").
"""

from __future__ import annotations

from typing import Any

from transforms.hashing import seeded_rng
from transforms.labels import NO_FINDING
from transforms.tasks import Profile, Task, finding_phrase, instruction_row
from transforms.templates import load_template_set, render

TASK = "disease_classification"


def classes(row: dict, uncertain: str) -> tuple[list[str], list[str], bool]:
    """(positives, known negatives, complete) among the pathologies, in taxonomy order; ``complete``
    when every pathology is one of the two."""
    positives, negatives, complete = [], [], True
    for finding in row["findings"]:
        name, presence = finding["name"], finding["presence"]
        if name == NO_FINDING:
            continue
        if presence == -1:
            presence = {"positive": 1, "negative": 0}.get(uncertain)
        if presence == 1:
            positives.append(name)
        elif presence == 0:
            negatives.append(name)
        else:
            complete = False
    return positives, negatives, complete


def _listed(names: list[str]) -> str:
    return ", ".join(finding_phrase(name) for name in names)


def generate(row: dict, profile: Profile, seed: int) -> list[dict]:
    positives, negatives, complete = classes(row, profile.uncertain)
    if not positives and not negatives:
        return []  # the source annotates no pathology for this image: nothing true to ask
    templates = load_template_set(profile.tasks[TASK].template_set)
    rng = seeded_rng(seed, profile.name, TASK, templates.version, row["image_key"])
    candidates = sorted(positives + negatives, key=_taxonomy_order(row))
    target = {"candidates": candidates, "positives": positives, "negatives": negatives}
    common: dict[str, Any] = {"profile": profile.name, "task": TASK, "row": row}
    rows = []
    if "open" in templates.kinds and complete:
        template = templates.pick("open", rng)
        answer = _listed(positives) if positives else templates.answers["none"]
        rows.append(
            instruction_row(
                **common,
                variant="open",
                conversations=render(template, answer=answer),
                target={**target, "question": "open"},
                template_id=template.id,
            )
        )
    elif "open_candidates" in templates.kinds:
        template = templates.pick("open_candidates", rng)
        answer = _listed(positives) if positives else templates.answers["none_of_candidates"]
        rows.append(
            instruction_row(
                **common,
                variant="open",
                conversations=render(template, answer=answer, candidates=_listed(candidates)),
                target={**target, "question": "candidates"},
                template_id=template.id,
            )
        )
    if "yes_no" in templates.kinds:
        asked_negatives = sorted(
            rng.sample(negatives, min(max(len(positives), 1), len(negatives))), key=_taxonomy_order(row)
        )
        for name, present in [(p, True) for p in positives] + [(n, False) for n in asked_negatives]:
            template = templates.pick("yes_no", rng)
            answer = templates.answers["yes" if present else "no"]
            rows.append(
                instruction_row(
                    **common,
                    variant=f"yes_no:{name}",
                    conversations=render(template, finding=finding_phrase(name), answer=answer),
                    target={"finding": name, "present": present},
                    template_id=template.id,
                )
            )
    return rows


def _taxonomy_order(row: dict):
    order = {f["name"]: i for i, f in enumerate(row["findings"])}
    return order.__getitem__


TASKS = (
    Task(
        name=TASK,
        unit="image",
        template_sets=("disease_classification_imt", "disease_classification_m4cxr"),
        generate=generate,
    ),
)
