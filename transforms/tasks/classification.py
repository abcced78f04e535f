"""Disease classification from harmonised findings (presence 1 / 0 / -1 / null).

Only what the source states is used: a finding with null presence is never asked as a negative.
Uncertain findings (-1) follow the profile's ``uncertain`` policy. Per image this yields one open
question (template kind ``open``) and, when the template set has ``yes_no``, one yes question per
positive finding plus as many known negatives (at least one), chosen with a seeded generator.
"""

from __future__ import annotations

from transforms.hashing import seeded_rng
from transforms.tasks import Profile, instruction_row
from transforms.templates import load_template_set, render

TASK = "disease_classification"
NO_FINDING = "No Finding"


def phrase(name: str) -> str:
    """How a finding name reads inside a sentence."""
    return name.lower()


def classes(row: dict, uncertain: str) -> tuple[list[str], list[str]]:
    """(positives, known negatives) among the pathologies, in taxonomy order."""
    positives, negatives = [], []
    for finding in row["findings"]:
        name, presence = finding["name"], finding["presence"]
        if name == NO_FINDING or presence is None:
            continue
        if presence == -1:
            presence = {"positive": 1, "negative": 0}.get(uncertain)
        if presence == 1:
            positives.append(name)
        elif presence == 0:
            negatives.append(name)
    return positives, negatives


def generate(row: dict, profile: Profile, seed: int) -> list[dict]:
    positives, negatives = classes(row, profile.uncertain)
    if not positives and not negatives:
        return []  # the source annotates no pathology for this image: nothing true to ask
    templates = load_template_set(profile.tasks[TASK].template_set)
    rng = seeded_rng(seed, profile.name, TASK, templates.version, row["image_key"])
    fields = {
        "answer": ", ".join(phrase(p) for p in positives) if positives else templates.answers["none"],
        # the candidate list is what this image's dataset annotates, in taxonomy order
        "candidates": ", ".join(phrase(p) for p in sorted(positives + negatives, key=_taxonomy_order(row))),
    }
    common = dict(profile=profile.name, task=TASK, row=row)
    rows = []
    if "open" in templates.kinds:
        template = templates.pick("open", rng)
        rows.append(instruction_row(
            **common, variant="open", conversations=render(template, **fields),
            target={"positives": positives, "negatives": negatives}, template_id=template.id))
    if "yes_no" in templates.kinds:
        asked_negatives = sorted(rng.sample(negatives, min(max(len(positives), 1), len(negatives))),
                                 key=_taxonomy_order(row))
        for name, present in [(p, True) for p in positives] + [(n, False) for n in asked_negatives]:
            template = templates.pick("yes_no", rng)
            answer = templates.answers["yes" if present else "no"]
            rows.append(instruction_row(
                **common, variant=f"yes_no:{name}",
                conversations=render(template, finding=phrase(name), answer=answer),
                target={"finding": name, "present": present}, template_id=template.id))
    return rows


def _taxonomy_order(row: dict):
    order = {f["name"]: i for i, f in enumerate(row["findings"])}
    return order.__getitem__
