"""M4CXR difference VQA (MIMIC-Diff-VQA style), generated from Chest ImaGenome scene graphs.

``generate(patient, profile, seed)`` gets one patient's studies (lists of annotation rows) and pairs
each study with the one just before it (``study_datetime`` order; equal or missing times make no pair),
when both have a frontal image carrying ImaGenome data (the first such image by key). The reference
(earlier) study's image is shown first, then the main study's, in M4CXR's template
(``manifests/templates/vqa_difference_m4cxr.yaml``). Every row's reference is strictly earlier than its
main: a pair whose order by the text of the times is not their order in time raises (a published
difference VQA set has pairs the other way round).

What an image states (:class:`Statements`), by the same rules as the single-image VQA
(:mod:`transforms.tasks.vqa`): ImaGenome's attribute strings ``<category>|<yes|no>|<name>`` of the
categories in ``manifests/difference_vqa.yaml``, per (region, finding), in the regions of
``manifests/labels.yaml`` (``imagenome-regions``, which gives their sides) bar the excluded ones. A region
states a finding present when a phrase says yes, absent when phrases say only no. A finding is present on
the image when a region states it present; absent when none does and the regions denying it cover both
sides (a region without a side covers both). Anything else is unknown. Comparison relations
(``comparison|yes|<name>``) come from the main image's ``relationships`` to an image of the reference
study. Both images are frontal, so regions with a side may be named.

A pair asks at most one question per family (:data:`FAMILIES`); :func:`run` is a family's program (its
answer to given inputs, or None when the statements do not decide it), which the row audit runs again:

- ``new_findings`` (open): the findings present on main that the reference states nowhere present and
  denies on every side where main has them; never from a missing statement. Asked only when the list is
  complete: every finding present on main is new or present on the reference too, and no phrase of main
  flagged abnormal leaves its abnormality unnamed (no finding of ours present).
- ``resolved_findings`` (open): the same with the two images swapped.
- ``finding_new`` / ``finding_resolved`` (yes/no): one finding. New: yes as above; no when absent on
  main, or present on both. Resolved: yes when new read backwards; no when present on both.
- ``region_change`` (yes/no): yes when a relation says the region improved or worsened, or the region
  states a finding present on one image and absent on the other; no only from a "no change" relation and
  no sign of change.
- ``finding_change`` (yes/no): "has F in region R improved / worsened / stayed the same": from
  relations alone, on a main phrase of R that states exactly one finding present.

A closed family is asked on a pair that has questions with both answers: a seeded coin picks yes or no,
then one question with that answer, so yes and no are equally likely. ``finding_change`` asks the stated
relation or, as the coin says, another one. An open list is asked whenever it is complete, empty or not.
The target records the family, both images with their studies and times, the inputs and the answer.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import manifests
from schemas.records import Reject
from transforms.hashing import seeded_rng
from transforms.labels import anatomy
from transforms.tasks import Profile, Task, native_vqa
from transforms.tasks.multi import group_row, in_time_order
from transforms.tasks.vqa import CATEGORIES, ORIGIN, parse_attribute
from transforms.tasks.vqa import CONFIG as SCENE_RULES
from transforms.templates import TemplateSet, load_template_set, render
from transforms.views import is_frontal

TASK = "difference_vqa"
CONFIG = manifests.load("difference_vqa.yaml")["difference"]
RELATIONS: dict[str, str] = CONFIG["relations"]
CHANGED = frozenset(CONFIG["changed"])
if unknown := sorted(CHANGED - set(RELATIONS)):
    raise ValueError(f"manifests/difference_vqa.yaml: changed names relation(s) {unknown} not in relations")
REGIONS = {
    name: region for name, region in anatomy("imagenome-regions").items() if name not in SCENE_RULES["excluded_regions"]
}
"""The regions whose statements are read, with their sides."""
BOTH_SIDES = frozenset({"left", "right"})
FAMILIES = ("new_findings", "resolved_findings", "finding_new", "finding_resolved", "region_change", "finding_change")


def scene_phrases(row: dict) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(region, phrase, attribute strings) of each ImaGenome phrase of an annotation row."""
    return tuple((entry["region"], entry["phrase"], tuple(entry["attributes"])) for entry in row["regions"] or ())


def relationships(row: dict) -> tuple[tuple[str | None, tuple[str, ...], str | None, str | None], ...]:
    """(region, relation strings, previous image key, phrase) of each ImaGenome comparison of an
    annotation row with a previous image (``provenance["imagenome.relationships"]``)."""
    stated = json.loads(json.loads(row["provenance"] or "{}").get("imagenome.relationships", "[]"))
    return tuple((rel["region"], tuple(rel["relation"] or ()), rel["previous_key"], rel["phrase"]) for rel in stated)


@dataclass(frozen=True)
class Statements:
    """What one image's ImaGenome data states (module doc)."""

    study_id: str
    stated: dict[tuple[str, str], bool]  # (region, finding) -> present (a "yes" wins over a "no")
    phrase_findings: dict[tuple[str, str], frozenset[str]]  # (region, phrase) -> findings it states present
    unnamed_abnormal: bool  # a phrase flagged abnormal that states no finding present (in a region read)
    comparisons: tuple[tuple[str, str, str | None, str | None], ...]  # (region, relation, previous study, phrase)

    @classmethod
    def of(
        cls,
        study_id: str,
        phrases: Iterable[tuple[str, str, Sequence[str]]],
        relations: Iterable[tuple[str | None, Sequence[str], str | None, str | None]],
        study_of: Callable[[str], str | None],
    ) -> Statements:
        """From :func:`scene_phrases` and :func:`relationships`; ``study_of`` gives the study of an image
        key (None for an image it does not know)."""
        stated: dict[tuple[str, str], bool] = {}
        phrase_findings: dict[tuple[str, str], set[str]] = defaultdict(set)
        unnamed_abnormal = False
        for region, phrase, attributes in phrases:
            present = set()
            for attribute in attributes:
                parsed = parse_attribute(attribute)
                if parsed is not None and parsed[0] in CATEGORIES and region in REGIONS:
                    stated[(region, parsed[2])] = stated.get((region, parsed[2]), False) or parsed[1]
                    if parsed[1]:
                        present.add(parsed[2])
            phrase_findings[(region, phrase)] |= present
            unnamed_abnormal |= CONFIG["abnormal_flag"] in attributes and not present
        comparisons = []
        for related_region, names, previous, related_phrase in relations:
            for name in names:
                parsed = parse_attribute(name)
                if (
                    parsed is not None
                    and parsed[:2] == ("comparison", True)
                    and parsed[2] in RELATIONS
                    and related_region is not None
                    and related_region in REGIONS
                    and previous is not None
                ):
                    comparisons.append((related_region, parsed[2], study_of(previous), related_phrase))
        return cls(
            study_id,
            stated,
            {key: frozenset(values) for key, values in phrase_findings.items()},
            unnamed_abnormal,
            tuple(comparisons),
        )

    def sides(self, finding: str, present: bool) -> frozenset[str]:
        """The sides where a region states the finding present (or absent); a region without a side
        covers both."""
        return frozenset(
            side
            for (region, name), value in self.stated.items()
            if name == finding and value == present
            for side in region_sides(region)
        )

    def status(self, finding: str) -> bool | None:
        """Present (True), absent (False: no region states it present and denials cover both sides) or
        unknown (None) on the image."""
        if self.sides(finding, True):
            return True
        return False if self.sides(finding, False) == BOTH_SIDES else None

    def findings(self) -> list[str]:
        return sorted({name for _, name in self.stated})


# ---------------------------------------------------------------- the programs


def appeared(before: Statements, after: Statements) -> list[str]:
    """Findings present on ``after`` and not on ``before``, which denies them on every side where ``after``
    has them (new read forwards, resolved backwards)."""
    return [
        name
        for name in after.findings()
        if after.status(name) is True
        and not before.sides(name, True)
        and after.sides(name, True) <= before.sides(name, False)
    ]


def persisting(reference: Statements, main: Statements) -> list[str]:
    return [name for name in main.findings() if main.status(name) is True and reference.status(name) is True]


def complete(before: Statements, after: Statements) -> bool:
    """Whether every finding present on ``after`` is decided (appeared, or present on ``before`` too) and
    ``after`` has no abnormality it cannot name: then the list of what appeared is the whole answer."""
    decided = set(appeared(before, after)) | set(persisting(before, after))
    return (
        bool(after.stated)
        and not after.unnamed_abnormal
        and all(name in decided for name in after.findings() if after.status(name) is True)
    )


def comparisons(reference: Statements, main: Statements) -> list[tuple[str, str, str | None]]:
    """(region, relation, phrase) of the main image's relations to an image of the reference study."""
    return [
        (region, relation, phrase)
        for region, relation, previous, phrase in main.comparisons
        if previous == reference.study_id
    ]


def region_sides(region: str) -> Iterable[str]:
    """The side a region lies on; both for a region without one."""
    laterality = REGIONS[region].laterality
    return (laterality,) if laterality else BOTH_SIDES


def region_changes(reference: Statements, main: Statements) -> dict[str, bool]:
    """Region -> True (changed) / False (a "no change" relation and no sign of change)."""
    changed = {region for region, relation, _ in comparisons(reference, main) if relation in CHANGED}
    changed |= {
        region
        for (region, finding), now in main.stated.items()  # stated one way before, the other now
        if reference.stated.get((region, finding), now) != now
    }
    unchanged = {region for region, relation, _ in comparisons(reference, main) if relation not in CHANGED}
    return {region: region in changed for region in sorted(changed | unchanged)}


def finding_changes(reference: Statements, main: Statements) -> dict[tuple[str, str], str]:
    """(region, finding) -> its relation, from relations on main phrases stating exactly one finding
    present; a (region, finding) given different relations is left out."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for region, relation, phrase in comparisons(reference, main):
        named = main.phrase_findings.get((region, phrase), frozenset()) if phrase is not None else frozenset()
        if len(named) == 1:
            found[(region, next(iter(named)))].add(relation)
    return {key: relations.pop() for key, relations in sorted(found.items()) if len(relations) == 1}


def run(family: str, inputs: dict, reference: Statements, main: Statements) -> bool | list[str] | None:
    """The answer of ``family`` asked with ``inputs`` about a pair; None when the statements do not decide it."""
    if family in ("new_findings", "resolved_findings"):
        before, after = (reference, main) if family == "new_findings" else (main, reference)
        return appeared(before, after) if complete(before, after) else None
    if family == "region_change":
        return region_changes(reference, main).get(inputs["region"])
    if family == "finding_change":
        stated = finding_changes(reference, main).get((inputs["region"], inputs["finding"]))
        return None if stated is None else stated == inputs["relation"]
    name = inputs["finding"]
    before, after = (reference, main) if family == "finding_new" else (main, reference)
    if name in appeared(before, after):
        return True
    if name in persisting(reference, main) or (family == "finding_new" and main.status(name) is False):
        return False
    return None


# ---------------------------------------------------------------- questions


def _closed(rng, family: str, options: list[dict], reference: Statements, main: Statements) -> list[tuple[dict, bool]]:
    """One of the ``options`` (inputs) with the answer a seeded coin picks, when the options have both
    answers (so which questions a pair has never tells the answer, and yes and no are equally likely)."""
    answered = [(inputs, run(family, inputs, reference, main)) for inputs in options]
    sides = {answer: [(inputs, answer) for inputs, a in answered if a is answer] for answer in (True, False)}
    if not (sides[True] and sides[False]):
        return []
    side = sides[rng.random() < 0.5]
    return [side[rng.randrange(len(side))]]


def questions(reference: Statements, main: Statements, rng_for) -> list[tuple[str, dict, bool | list[str]]]:
    """(family, inputs, answer): at most one per family, in :data:`FAMILIES` order; ``rng_for(family)``
    gives each family its own seeded generator."""
    asked: list[tuple[str, dict, bool | list[str]]] = [
        (family, {}, answer)
        for family in ("new_findings", "resolved_findings")
        if (answer := run(family, {}, reference, main)) is not None
    ]
    findings = sorted(set(reference.findings()) | set(main.findings()))
    for family in ("finding_new", "finding_resolved"):
        asked += [
            (family, *chosen)
            for chosen in _closed(rng_for(family), family, [{"finding": name} for name in findings], reference, main)
        ]
    asked += [
        ("region_change", *chosen)
        for chosen in _closed(
            rng_for("region_change"),
            "region_change",
            [{"region": r} for r in region_changes(reference, main)],
            reference,
            main,
        )
    ]
    changes = finding_changes(reference, main)
    if changes:
        rng = rng_for("finding_change")
        (region, name), relation = sorted(changes.items())[rng.randrange(len(changes))]
        asked_relation = relation if rng.random() < 0.5 else rng.choice(sorted(set(RELATIONS) - {relation}))
        inputs = {"region": region, "finding": name, "relation": asked_relation, "stated_relation": relation}
        asked.append(("finding_change", inputs, asked_relation == relation))
    return asked


def question_fields(family: str, inputs: dict) -> dict[str, str]:
    """The template fields a question of ``family`` says its ``inputs`` with."""
    fields = {key: inputs[key] for key in ("finding", "region") if key in inputs}
    return fields | ({"change": RELATIONS[inputs["relation"]]} if family == "finding_change" else {})


def answer_text(templates: TemplateSet, family: str, answer: bool | list[str], gpt: str) -> str:
    """The answer's words: yes / no, or the list in the question template's answer (``gpt``)."""
    if isinstance(answer, bool):
        return templates.answers["yes" if answer else "no"]
    if not answer:
        return templates.answers["nothing_new" if family == "new_findings" else "nothing_resolved"]
    return gpt.format(findings=", ".join(answer))


# ---------------------------------------------------------------- pairs and rows


def shown_image(study: list[dict]) -> dict | None:
    """The study's first frontal image (by key) carrying ImaGenome data; None without one."""
    return min(
        (row for row in study if is_frontal(row["view"]) and "imagenome" in (row["annotation_sources"] or ())),
        key=lambda row: row["image_key"],
        default=None,
    )


def pairs(patient: list[list[dict]]) -> list[tuple[dict, dict]]:
    """(reference, main) images of consecutive studies in :func:`in_time_order` (by the text of
    ``study_datetime``); studies at the same time make no pair."""
    studies = in_time_order(patient)
    found = []
    for before, after in itertools.pairwise(studies):
        reference, main = shown_image(before), shown_image(after)
        if reference and main and not same_time(reference["study_datetime"], main["study_datetime"]):
            found.append((reference, main))
    return found


def earlier(reference_datetime: str, main_datetime: str) -> bool:
    """Whether the reference study is strictly earlier than the main (times as ``study_datetime`` has them)."""
    return datetime.fromisoformat(reference_datetime) < datetime.fromisoformat(main_datetime)


def same_time(first: str, second: str) -> bool:
    return datetime.fromisoformat(first) == datetime.fromisoformat(second)


def _image(row: dict) -> dict:
    return {"image_key": row["image_key"], "study_id": row["study_id"], "study_datetime": row["study_datetime"]}


def native_rows(patient: list[list[dict]], profile: Profile) -> list[dict | Reject]:
    """One row per Medical-Diff-VQA ``difference`` question among the patient's images, over the image
    the dataset gives the reference study (the one a ``mimic_diff_vqa`` record marks) and the main
    image; a reject for a question whose reference image is not in the build or not strictly earlier."""
    rows = [row for study in patient for row in study]
    marked: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: r["image_key"]):
        if native_vqa.asks_about(row, native_vqa.MIMIC_DIFF_VQA):
            marked.setdefault(row["study_id"], row)
    (prompt,) = load_template_set(profile.tasks[TASK].template_set).kinds["prompt"]
    made: list[dict | Reject] = []
    for main in rows:
        for question in native_vqa.questions_of(main, native_vqa.MIMIC_DIFF_VQA, difference=True):
            reference = marked.get(question["reference_study_id"])
            if reference is None:
                made.append(
                    native_vqa.reject(
                        main,
                        TASK,
                        "reference-image-missing",
                        question,
                        f"no dated image the dataset gives reference study "
                        f"{question['reference_study_id']} is in the build",
                    )
                )
            elif not earlier(reference["study_datetime"], main["study_datetime"]):
                made.append(
                    native_vqa.reject(
                        main,
                        TASK,
                        "reference-not-earlier",
                        question,
                        f"reference study {reference['study_id']} ({reference['study_datetime']}) is not earlier than "
                        f"main study {main['study_id']} ({main['study_datetime']})",
                    )
                )
            else:
                conversations = render(prompt, question=question["question"], answer=native_vqa.answer_text(question))
                target = {**native_vqa.target(question), "reference": _image(reference), "main": _image(main)}
                made.append(
                    group_row(
                        profile,
                        TASK,
                        [reference, main],
                        f"native:{question['where']}",
                        conversations,
                        target,
                        prompt.id,
                    )
                )
    return made


def generate(patient: list[list[dict]], profile: Profile, seed: int) -> list[dict | Reject]:
    """Medical-Diff-VQA's own difference questions for a patient it asks about (:func:`native_rows`; none
    when they are all in another split), else the questions generated from the scene graphs of consecutive studies."""
    if any(native_vqa.asks_about(row, native_vqa.MIMIC_DIFF_VQA) for study in patient for row in study):
        return native_rows(patient, profile)
    templates = load_template_set(profile.tasks[TASK].template_set)
    (prompt,) = templates.kinds["prompt"]
    studies = {row["image_key"]: row["study_id"] for study in patient for row in study}
    result: list[dict | Reject] = []
    for reference_row, main_row in pairs(patient):
        if not earlier(reference_row["study_datetime"], main_row["study_datetime"]):  # text order is not time order
            raise ValueError(
                f"{TASK}: reference {reference_row['image_key']} is not earlier than main {main_row['image_key']}"
            )
        reference, main = (
            Statements.of(row["study_id"], scene_phrases(row), relationships(row), studies.get)
            for row in (reference_row, main_row)
        )
        # rng_for(family): the seeded generator of one question family on this main image
        rng_for = partial(seeded_rng, seed, profile.name, TASK, templates.version, main_row["image_key"])
        for family, inputs, answer in questions(reference, main, rng_for):
            template = templates.pick(family, rng_for(f"{family}-template"))
            target = {
                "origin": ORIGIN,
                "family": family,
                "reference": _image(reference_row),
                "main": _image(main_row),
                "inputs": inputs,
                "answer": answer,
            }
            conversations = render(
                prompt,
                question=template.human.format(**question_fields(family, inputs)),
                answer=answer_text(templates, family, answer, template.gpt),
            )
            result.append(
                group_row(
                    profile,
                    TASK,
                    [reference_row, main_row],
                    family,
                    conversations,
                    target,
                    f"{prompt.id}+{template.id}",
                )
            )
    return result


TASKS = (Task(name=TASK, unit="patient", template_sets=("vqa_difference_m4cxr",), generate=generate),)
