"""M4CXR VQA over one image, generated from its Chest ImaGenome scene graph in the question families of
MIMIC-CXR-VQA (Bae et al., NeurIPS 2023; families, phrases and balance in ``manifests/vqa.yaml``).

A family is a program over what the scene graph states (:class:`Scene`): its inputs (a region, an
attribute, a category, two regions, ...) give the states the answer rests on, its ``claims``
``[region or None, attribute or None, present]``, and the answer follows from them
(:func:`answer_from_claims`). :func:`run` is the program; the generator asks only inputs it answers,
and the row audit runs it again.

Truth rules:

- A state is what the phrases say: a (region, attribute) is present when a phrase states it ``yes``,
  absent when one states it ``no`` and none ``yes``, unknown otherwise. A region is abnormal when it
  states an attribute of the asked categories ``yes`` or carries ImaGenome's ``nlp|yes|abnormal`` flag,
  normal when it carries ``nlp|yes|normal`` and is not abnormal. An attribute is present in the image
  when a region states it ``yes``; absent when none does and it is denied in a region without a side,
  or on both sides (a denial on one side says nothing of the other).
- Nothing unknown is asked: no "no" without an explicit negative; an open answer lists only what is
  stated present; choice and count questions only over regions/attributes whose state is stated.
- A region with a side (``manifests/labels.yaml`` anatomy) is named only on a frontal view; an open
  answer that would name one on another view is not asked.
- Each yes/no question draws the answer it wants (``yes_share``) before choosing what to ask, and the
  target records that draw (``wanted``), the family, its inputs, claims, answer and answer type.

Rows inherit the image's split (a Chest ImaGenome gold image is already kept out of train by the build).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import manifests
from schemas.records import Reject
from transforms.hashing import seeded_rng
from transforms.labels import anatomy
from transforms.tasks import Profile, Task, instruction_row, native_vqa
from transforms.templates import TemplateSet, load_template_set, render
from transforms.views import is_frontal

TASK = "vqa"
ORIGIN = "imagenome-scene-graph"
CONFIG = manifests.load("vqa.yaml")
FAMILIES: dict[str, dict] = CONFIG["families"]
CATEGORIES: dict[str, str] = CONFIG["categories"]
REGIONS = anatomy("imagenome-regions")
_FLAG_CATEGORY = "nlp"

Claim = tuple
"""(region | None, attribute | None, present): a None region is the whole image, a None attribute any abnormality."""


def region_side(region: str) -> str | None:
    """The patient's side a region name carries (None for an unsided or unlisted region)."""
    return REGIONS[region].laterality if region in REGIONS else None


def nameable(region: str, frontal: bool) -> bool:
    """Whether a question or answer may name the region: listed, not excluded, and sided only on a frontal view."""
    return region in REGIONS and region not in CONFIG["excluded_regions"] and (frontal or region_side(region) is None)


def region_phrase(region: str) -> str:
    return CONFIG["region_phrases"].get(region, region)


def attribute_phrase(attribute: str) -> str:
    return CONFIG["attribute_phrases"].get(attribute, attribute)


def parse_attribute(text: str) -> tuple[str, bool, str] | None:
    """``"<category>|<yes|no>|<name>"`` -> (category, yes, name); None for any other string."""
    parts = text.split("|")
    if len(parts) != 3 or parts[1] not in ("yes", "no") or not parts[2]:
        return None
    return parts[0], parts[1] == "yes", parts[2]


@dataclass(frozen=True)
class Scene:
    """What one image's scene graph states, from its (region, attribute string) pairs."""

    attributes: Mapping[tuple[str, str], bool]  # (region, attribute) -> present (a "yes" wins over a "no")
    categories: Mapping[str, str]  # attribute -> its category
    flags: Mapping[str, frozenset[str]]  # region -> ImaGenome's nlp flags stated "yes" ("normal", "abnormal")

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Scene:
        attributes: dict[tuple[str, str], bool] = {}
        categories: dict[str, str] = {}
        flags: dict[str, set[str]] = {}
        for region, text in pairs:
            parsed = parse_attribute(text)
            if parsed is None:
                continue
            category, yes, name = parsed
            if category == _FLAG_CATEGORY:
                if yes:
                    flags.setdefault(region, set()).add(name)
            elif category in CATEGORIES:
                attributes[(region, name)] = attributes.get((region, name), False) or yes
                categories.setdefault(name, category)
        return cls(attributes, categories, {region: frozenset(names) for region, names in flags.items()})

    @classmethod
    def of_row(cls, row: dict) -> Scene:
        return cls.of((entry["region"], text) for entry in row.get("regions") or () for text in entry["attributes"])

    def present(self, attribute: str | None = None) -> dict[str, list[str]]:
        """Region -> the attributes it states present (of one attribute only when given), sorted."""
        found: dict[str, list[str]] = {}
        for (region, name), yes in sorted(self.attributes.items()):
            if yes and attribute in (None, name):
                found.setdefault(region, []).append(name)
        return found

    def state(self, region: str | None, attribute: str | None) -> bool | None:
        """True / False as the scene graph states it, None when it does not (see the module docstring)."""
        if region is not None and attribute is not None:
            return self.attributes.get((region, attribute))
        if region is not None:
            flags = self.flags.get(region, frozenset())
            if region in self.present() or "abnormal" in flags:
                return True
            return False if "normal" in flags else None
        if attribute is None:
            raise ValueError("a claim names a region, an attribute or both")
        if self.present(attribute):
            return True
        denied = [
            r
            for (r, name), yes in self.attributes.items()
            if name == attribute and not yes and r in REGIONS and r not in CONFIG["excluded_regions"]
        ]
        sides = {region_side(r) for r in denied}
        return False if None in sides or {"left", "right"} <= sides else None

    def regions(self) -> list[str]:
        return sorted({region for region, _ in self.attributes} | set(self.flags))


# ---------------------------------------------------------------- programs


def _claims(family: str, inputs: dict, scene: Scene) -> list[Claim]:
    """The states an answer of ``family`` on ``inputs`` rests on (the present items for open answers)."""
    region, attribute = inputs.get("region"), inputs.get("attribute")
    if family in ("region_attribute", "region_abnormality", "image_attribute"):
        return [(region, attribute, scene.state(region, attribute))]
    if family == "two_regions" or family == "count_regions":
        return [(r, attribute, scene.state(r, attribute)) for r in inputs["regions"]]
    if family == "two_attributes":
        return [(region, a, scene.state(region, a)) for a in inputs["attributes"]]
    if family == "attribute_regions":
        return [(r, attribute, True) for r in scene.present(attribute)]
    if family == "image_abnormalities":
        return [(None, a, True) for a in sorted({a for names in scene.present().values() for a in names})]
    names = scene.present().get(region, []) if region is not None else []
    if family == "region_category":
        names = [a for a in names if scene.categories[a] == inputs["category"]]
    elif family != "region_abnormalities":
        raise ValueError(f"unknown VQA family {family!r}")
    return [(region, a, True) for a in names]


def answer_from_claims(family: str, claims: list[Claim]) -> bool | int | str | list[str]:
    """The answer the claims give: yes/no a bool, a count an int, a choice the one candidate present (or
    "both" / "neither"), an open answer the sorted names of the present items."""
    answer_type = FAMILIES[family]["answer_type"]
    if answer_type == "yes/no":
        return bool(claims[0][2])
    if answer_type == "count":
        return sum(bool(present) for _, _, present in claims)
    item = 0 if family in ("attribute_regions", "two_regions") else 1  # regions are the answer, else attributes
    named = [claim[item] for claim in claims if claim[2]]
    if answer_type == "open":
        return sorted(named)
    return {0: "neither", 2: "both"}.get(len(named)) or named[0]


def run(family: str, inputs: dict, scene: Scene) -> tuple[bool | int | str | list[str], list[Claim]] | None:
    """The family's program: (answer, claims), or None when the scene graph leaves a state it needs unknown."""
    claims = _claims(family, inputs, scene)
    if any(present is None for _, _, present in claims):
        return None
    return answer_from_claims(family, claims), claims


def answered(family: str, inputs: dict, scene: Scene) -> tuple[bool | int | str | list[str], list[Claim]]:
    """:func:`run` on inputs that :func:`_inputs` offered: the scene graph states everything they rest on."""
    return cast(tuple[bool | int | str | list[str], list[Claim]], run(family, inputs, scene))


def named_regions(family: str, inputs: dict, answer: object) -> list[str]:
    """The regions a row names, in its question or its answer."""
    named = [inputs["region"]] if "region" in inputs else list(inputs.get("regions", ()))
    if family == "attribute_regions":
        named += cast(list[str], answer)  # the regions that state the attribute
    return named


def question_fields(family: str, inputs: dict) -> dict[str, str]:
    """The template fields of a question: the phrases of its inputs."""
    fields = {}
    if "region" in inputs:
        fields["region"] = region_phrase(inputs["region"])
    if "attribute" in inputs:
        fields["attribute"] = attribute_phrase(inputs["attribute"])
    if "category" in inputs:
        fields["category"] = CATEGORIES[inputs["category"]]
    if "attributes" in inputs:
        fields["attribute_a"], fields["attribute_b"] = (attribute_phrase(a) for a in inputs["attributes"])
    if family == "two_regions":
        fields["region_a"], fields["region_b"] = (region_phrase(r) for r in inputs["regions"])
    if family == "count_regions":
        fields["candidates"] = ", ".join(f"the {region_phrase(r)}" for r in inputs["regions"])
    return fields


def answer_text(templates: TemplateSet, family: str, answer: bool | int | str | list[str]) -> str:
    """How a row says its answer (the first letter upper case)."""
    answers = templates.answers
    answer_type = FAMILIES[family]["answer_type"]
    phrase = region_phrase if family in ("attribute_regions", "two_regions") else attribute_phrase
    if answer_type == "yes/no":
        text = answers["yes" if answer else "no"]
    elif answer_type == "count":
        text = answers["count"].format(count=answer)
    elif answer_type == "open":
        items = cast(list[str], answer)
        text = answers["list"].format(items=answers["separator"].join(phrase(item) for item in items))
    else:
        item = cast(str, answer)  # one of the two inputs, "both" or "neither"
        text = answers[item] if item in ("both", "neither") else answers["one"].format(item=phrase(item))
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------- what an image can be asked


def _inputs(family: str, scene: Scene, frontal: bool) -> list[dict]:
    """Every input of ``family`` the image's scene graph answers (open answers: non-empty, nameable), in a
    stable order. count_regions inputs list every region whose state is stated; the row asks a subset."""
    present = scene.present()
    if family == "region_attribute":
        return [{"region": r, "attribute": a} for r, a in sorted(scene.attributes) if nameable(r, frontal)]
    if family == "region_abnormality":
        return [{"region": r} for r in scene.regions() if nameable(r, frontal) and scene.state(r, None) is not None]
    if family == "image_attribute":
        return [{"attribute": a} for a in sorted(scene.categories) if scene.state(None, a) is not None]
    if family == "region_category":
        return [
            {"region": r, "category": c}
            for r, names in present.items()
            if nameable(r, frontal)
            for c in sorted({scene.categories[a] for a in names})
        ]
    if family == "region_abnormalities":
        return [{"region": r} for r in present if nameable(r, frontal)]
    if family == "image_abnormalities":
        return [{}] if present else []
    if family == "attribute_regions":
        return [
            {"attribute": a}
            for a in sorted(scene.categories)
            if scene.present(a) and all(nameable(r, frontal) for r in scene.present(a))
        ]
    stated: dict[str, list[str]] = {}  # attribute -> nameable regions stating it
    for r, a in sorted(scene.attributes):
        if nameable(r, frontal):
            stated.setdefault(a, []).append(r)
    if family == "two_regions":
        return [
            {"attribute": a, "regions": list(pair)}
            for a, regions in stated.items()
            for pair in itertools.combinations(regions, 2)
        ]
    if family == "count_regions":
        return [{"attribute": a, "regions": regions} for a, regions in stated.items() if len(regions) >= 2]
    if family == "two_attributes":
        by_region: dict[str, list[str]] = {}
        for a, regions in stated.items():
            for r in regions:
                by_region.setdefault(r, []).append(a)
        return [
            {"region": r, "attributes": list(pair)}
            for r, names in sorted(by_region.items())
            for pair in itertools.combinations(sorted(names), 2)
        ]
    raise ValueError(f"unknown VQA family {family!r}")


def _chosen(family: str, candidates: list[dict], scene: Scene, rng: random.Random) -> list[tuple[dict, str | None]]:
    """Up to the family's ``per_image`` inputs, each with the answer drawn for it (yes/no families)."""
    limit = FAMILIES[family]["per_image"]
    if FAMILIES[family]["answer_type"] != "yes/no":
        picked = [candidates[i] for i in sorted(rng.sample(range(len(candidates)), min(limit, len(candidates))))]
        if family == "count_regions":
            picked = [
                {
                    **inputs,
                    "regions": sorted(
                        rng.sample(
                            inputs["regions"], rng.randint(2, min(len(inputs["regions"]), CONFIG["count_max_regions"]))
                        )
                    ),
                }
                for inputs in picked
            ]
        return [(inputs, None) for inputs in picked]
    remaining = list(candidates)
    chosen: list[tuple[dict, str | None]] = []
    while remaining and len(chosen) < limit:
        wanted = "yes" if rng.random() < CONFIG["yes_share"] else "no"
        matching = [c for c in remaining if answered(family, c, scene)[0] == (wanted == "yes")] or remaining
        inputs = matching[rng.randrange(len(matching))]
        remaining.remove(inputs)
        chosen.append((inputs, wanted))
    return chosen


def generate(row: dict, profile: Profile, seed: int) -> list[dict | Reject]:
    """MIMIC-CXR-VQA's own questions on an image it asks about (:mod:`transforms.tasks.native_vqa`; none
    when they are all in another split), else rows of every family the image's scene graph answers
    (none without ImaGenome regions)."""
    if native_vqa.asks_about(row, native_vqa.MIMIC_CXR_VQA):
        return native_vqa.image_rows(row, profile, TASK, native_vqa.MIMIC_CXR_VQA)
    scene = Scene.of_row(row)
    if not scene.attributes and not scene.flags:
        return []
    templates = load_template_set(profile.tasks[TASK].template_set)
    rng = seeded_rng(seed, profile.name, TASK, templates.version, CONFIG["version"], row["image_key"])
    frontal = is_frontal(row["view"])
    rows: list[dict | Reject] = []
    for family, spec in FAMILIES.items():
        for inputs, wanted in _chosen(family, _inputs(family, scene, frontal), scene, rng):
            answer, claims = answered(family, inputs, scene)
            target = {
                "origin": ORIGIN,
                "family": family,
                "answer_type": spec["answer_type"],
                "inputs": inputs,
                "answer": answer,
                "claims": [list(claim) for claim in claims],
            }
            if wanted is not None:
                target["wanted"] = wanted
            template = templates.pick(family, rng)
            conversations = render(
                template, **question_fields(family, inputs), answer=answer_text(templates, family, answer)
            )
            rows.append(
                instruction_row(
                    profile=profile.name,
                    task=TASK,
                    row=row,
                    variant=f"{family}:{json.dumps(inputs, sort_keys=True)}",
                    conversations=conversations,
                    target=target,
                    template_id=template.id,
                )
            )
    return rows


TASKS = (Task(name=TASK, unit="image", template_sets=("vqa_m4cxr",), generate=generate),)
