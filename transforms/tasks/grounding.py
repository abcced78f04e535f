"""Box grounding tasks: IMT-CXR lesion localisation and the M4CXR grounding family (Table I).

Boxes come from the annotation row's ``boxes`` (canonical unit coordinates ``u1..v2`` of the canvas)
and are rendered with the profile's coordinate convention; every ``target`` carries the unit boxes.
The role of a box (lesion, organ, region) follows its origin (``manifests/grounding.yaml``).

Lesion boxes a target uses (:func:`localisation_boxes`): on an image read by several readers (VinDr
train) only the consensus boxes, never one reader's box; elsewhere the boxes as they are. Profiles
whose box policy merges (``manifests/box_policies.yaml``, M4CXR) then merge overlapping same-class
boxes. The letterbox scales x and y alike, so overlap ratios are the same on the canvas as in the
original pixels and merging runs on the unit coordinates directly.

IMT-CXR asks by harmonised finding (a box whose label maps to none is not asked there; the finding
read through :func:`transforms.tasks.finding_phrase`); M4CXR asks by the dataset's own class label, as
it trains on each dataset's label set. A location ("in the lower left lung") is added only on a
frontal view (:mod:`transforms.views`).

Finding grounding and multi-finding grounding also ask about definitely absent class labels
(:func:`absent_labels`, ratio and rules in ``manifests/grounding.yaml`` ``negatives``), answered as
M4CXR's templates answer them; a label that is only unannotated is never asked as absent.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cache

import manifests
from transforms.boxes import box_policy, merge_overlapping_corners
from transforms.geometry import render_box
from transforms.hashing import seeded_rng
from transforms.labels import NO_FINDING, label_rules
from transforms.tasks import Profile, Task, finding_phrase, instruction_row
from transforms.tasks.report import single_image_text
from transforms.templates import TemplateSet, load_template_set, render
from transforms.views import is_frontal

CONFIG = manifests.load("grounding.yaml")
ROLE_OF_ORIGIN = {origin: role for role, origins in CONFIG["box_roles"].items() for origin in origins}
ZONE_ORDER = {zone: i for i, zone in enumerate(manifests.load("attributes.yaml")["zone_order"])}
CONSENSUS_READER = manifests.load("box_policies.yaml")["fusion"]["consensus_reader"]
NEGATIVES = CONFIG["negatives"]

Unit = tuple[float, float, float, float]


def box_role(box: dict) -> str:
    """``"lesion"``, ``"organ"`` or ``"region"`` by the box's origin; ValueError for an unlisted origin."""
    try:
        return ROLE_OF_ORIGIN[box["origin"]]
    except KeyError:
        raise ValueError(f"box origin {box['origin']!r} has no role in manifests/grounding.yaml box_roles") from None


def unit_box(box: dict) -> Unit:
    return (box["u1"], box["v1"], box["u2"], box["v2"])


def _individual(reader: str | None) -> bool:
    return bool(reader) and reader != CONSENSUS_READER


def is_multi_reader(row: dict) -> bool:
    """Whether at least two individual readers labelled or boxed the image (VinDr train)."""
    readers = {label["reader"] for label in row.get("raw_labels") or [] if _individual(label["reader"])}
    readers |= {box["reader"] for box in row["boxes"] if _individual(box["reader"])}
    return len(readers) >= 2


@cache
def _merge_overlap(profile: str) -> float | None:
    return box_policy(profile).merge_overlap


def localisation_boxes(row: dict, profile: str) -> list[dict]:
    """The lesion boxes a profile's targets use, as ``{label, finding, origin, unit}`` sorted by
    label then coordinates (see the module docstring for the reader and merge rules)."""
    lesions = [box for box in row["boxes"] if box_role(box) == "lesion"]
    if is_multi_reader(row):
        lesions = [box for box in lesions if not _individual(box["reader"])]
    finding_of = {box["label"]: box["finding"] for box in lesions}
    chosen = [(box["label"], box["origin"], unit_box(box)) for box in lesions]
    merge_overlap = _merge_overlap(profile)
    if merge_overlap is not None and chosen:
        chosen = merge_overlapping_corners(chosen, merge_overlap)
    return [
        {"label": label, "finding": finding_of[label], "origin": origin, "unit": unit}
        for label, origin, unit in sorted(set(chosen), key=lambda c: (c[0], c[2], c[1]))
    ]


@cache
def _box_system_labels(system: str) -> tuple[str, ...]:
    """The class labels readers of a box system can draw (its map and not_mapped keys, less No finding)."""
    rules = label_rules().systems[system]
    return tuple(sorted(label for label in {*rules.targets, *rules.not_mapped} if label.lower() != NO_FINDING.lower()))


def absent_labels(row: dict) -> list[str]:
    """The class labels of the row's box source that are definitely absent, sorted: no box of the label
    on the image, no raw label of it at 1 or -1 from any reader, and either the source boxes
    exhaustively (``exhaustive_box_sources``: its readers saw the whole image) or it states the label 0."""
    raw = row.get("raw_labels") or []
    systems = ({box["origin"] for box in row["boxes"]} | {label["system"] for label in raw}) & set(
        NEGATIVES["box_systems"]
    )
    boxed = {box["label"] for box in row["boxes"] if box_role(box) == "lesion"}
    stated: dict[str, set] = {}
    for label in raw:
        stated.setdefault(label["name"], set()).add(label["value"])
    exhaustive = row["source"] in CONFIG["exhaustive_box_sources"]
    absent = []
    for label in sorted({name for system in systems for name in _box_system_labels(system)}):
        values = stated.get(label, set())
        if label in boxed or values & {1.0, -1.0}:
            continue
        if exhaustive or values == {0.0}:
            absent.append(label)
    return absent


def location_phrase(mentions: list[dict] | None, finding: str) -> str | None:
    """Where the image's own first positive mention of ``finding`` with a side or zone puts it
    ("in the lower left lung"); None when no mention says."""
    location = CONFIG["location"]
    for mention in mentions or []:
        if mention["finding"] != finding or mention["presence"] != 1:
            continue
        side, zones = mention["laterality"], sorted(mention["zones"] or [], key=ZONE_ORDER.__getitem__)
        if zones:
            return location["with_zone"][side or "none"].format(zone=location["zone_words"][zones[0]])
        if side:
            return location["without_zone"][side]
    return None


def _grouped(boxes: list[dict], key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for box in boxes:
        groups.setdefault(box[key], []).append(box)
    return groups


def _target_box(box: dict) -> dict:
    return {"label": box["label"], "finding": box.get("finding"), "box": list(box["unit"])}


class _Task:
    """What every generator of this module needs for one row: templates, seeded generator, renderers."""

    def __init__(self, task: str, row: dict, profile: Profile, seed: int):
        self.task, self.row, self.profile = task, row, profile
        self.templates: TemplateSet = load_template_set(profile.tasks[task].template_set)
        self.rng: random.Random = seeded_rng(seed, profile.name, task, self.templates.version, row["image_key"])

    def box(self, unit: Unit) -> str:
        return render_box(unit, self.profile.coordinates)

    def boxes(self, boxes: list[dict]) -> str:
        return self.templates.answers["box_separator"].join(self.box(b["unit"]) for b in boxes)

    def labelled(self, groups: dict[str, list[dict]]) -> str:
        answers = self.templates.answers
        return answers["item_separator"].join(
            answers["labelled_boxes"].format(label=label, boxes=self.boxes(boxes)) for label, boxes in groups.items()
        )

    def capped(self, items: list) -> list:
        """A seeded sample of at most the task's ``max_rows_per_image`` items, in their given order."""
        cap = CONFIG["max_rows_per_image"].get(self.task)
        if cap is None or len(items) <= cap:
            return items
        return [items[i] for i in sorted(self.rng.sample(range(len(items)), cap))]

    def row_of(self, kind: str, variant: str, target: dict, **fields: str) -> dict:
        template = self.templates.pick(kind, self.rng)
        return instruction_row(
            profile=self.profile.name,
            task=self.task,
            row=self.row,
            variant=variant,
            conversations=render(template, **fields),
            target=target,
            template_id=template.id,
        )


def lesion_localization(row: dict, profile: Profile, seed: int) -> list[dict]:
    """IMT-CXR: one row per harmonised finding with boxes; on a frontal view the referring expression
    carries the location from the image's own mention when there is one."""
    task = _Task("lesion_localization", row, profile, seed)
    mapped = [box for box in localisation_boxes(row, profile.name) if box["finding"]]
    rows = []
    for finding, boxes in sorted(_grouped(mapped, "finding").items()):
        location = location_phrase(row.get("mentions"), finding) if is_frontal(row["view"]) else None
        target = {"finding": finding, "location": location, "boxes": [_target_box(b) for b in boxes]}
        fields = {"finding": finding_phrase(finding), "boxes": task.boxes(boxes)}
        if location:
            rows.append(task.row_of("located", finding, target, location=location, **fields))
        else:
            rows.append(task.row_of("unlocated", finding, target, **fields))
    return rows


def finding_grounding(row: dict, profile: Profile, seed: int) -> list[dict]:
    """M4CXR: one row per class label with boxes (label -> its boxes), and a seeded sample of
    definitely absent labels (label -> answers.absent), ``negatives_per_positive`` per label with boxes
    and at least ``min_negatives``."""
    task = _Task("finding_grounding", row, profile, seed)
    groups = _grouped(localisation_boxes(row, profile.name), "label")
    rows = [
        task.row_of(
            "finding_grounding",
            label,
            {"label": label, "present": True, "boxes": [_target_box(b) for b in boxes]},
            finding=label,
            boxes=task.boxes(boxes),
        )
        for label, boxes in groups.items()
    ]
    absent = absent_labels(row)
    wanted = max(NEGATIVES["negatives_per_positive"] * len(groups), NEGATIVES["min_negatives"])
    for label in sorted(task.rng.sample(absent, min(wanted, len(absent)))):
        rows.append(
            task.row_of(
                "finding_grounding",
                f"absent:{label}",
                {"label": label, "present": False, "boxes": []},
                finding=label,
                boxes=task.templates.answers["absent"],
            )
        )
    return rows


def grounded_finding(row: dict, profile: Profile, seed: int) -> list[dict]:
    """M4CXR: box -> the class label(s) boxed there (boxes identical once rendered are asked once)."""
    task = _Task("grounded_finding", row, profile, seed)
    by_rendering = _grouped(
        [{**b, "rendered": task.box(b["unit"])} for b in localisation_boxes(row, profile.name)], "rendered"
    )
    rows = []
    for rendered, boxes in task.capped(list(by_rendering.items())):
        labels = sorted({b["label"] for b in boxes})
        rows.append(
            task.row_of(
                "grounded_finding",
                rendered,
                {"labels": labels, "boxes": [_target_box(b) for b in boxes]},
                box=rendered,
                finding=", ".join(labels),
            )
        )
    return rows


def abnormality_detection(row: dict, profile: Profile, seed: int) -> list[dict]:
    """M4CXR: every class with its boxes, or "no abnormality" when the source says No Finding (presence
    1) and boxes nothing; only for sources whose readers box every local abnormality."""
    if row["source"] not in CONFIG["exhaustive_box_sources"]:
        return []
    task = _Task("abnormality_detection", row, profile, seed)
    boxes = localisation_boxes(row, profile.name)
    if boxes:
        groups = _grouped(boxes, "label")
        return [
            task.row_of(
                "abnormality_detection",
                "all",
                {"abnormal": True, "boxes": [_target_box(b) for b in boxes]},
                findings=task.labelled(groups),
            )
        ]
    no_finding = next((f["presence"] for f in row["findings"] if f["name"] == NO_FINDING), None)
    if no_finding != 1:
        return []
    return [
        task.row_of(
            "abnormality_detection",
            "none",
            {"abnormal": False, "boxes": []},
            findings=task.templates.answers["no_abnormality"],
        )
    ]


def multi_finding_grounding(row: dict, profile: Profile, seed: int) -> list[dict]:
    """M4CXR: a seeded subset of 2..multi_finding_max class labels, drawn from those with boxes and the
    definitely absent ones -> the boxes of each present one, or answers.none_found."""
    task = _Task("multi_finding_grounding", row, profile, seed)
    groups = _grouped(localisation_boxes(row, profile.name), "label")
    candidates = sorted(set(groups) | set(absent_labels(row)))
    if len(candidates) < 2:
        return []
    count = task.rng.randint(2, min(len(candidates), CONFIG["multi_finding_max"]))
    asked = sorted(task.rng.sample(candidates, count))
    present = {label: groups[label] for label in asked if label in groups}
    target = {
        "labels": asked,
        "present": list(present),
        "absent": [label for label in asked if label not in groups],
        "boxes": [_target_box(b) for boxes in present.values() for b in boxes],
    }
    answer = task.labelled(present) if present else task.templates.answers["none_found"]
    return [
        task.row_of("multi_finding_grounding", "|".join(asked), target, finding_list=", ".join(asked), findings=answer)
    ]


def _role_boxes(row: dict, role: str) -> list[dict]:
    """The row's boxes of one role as ``{label, unit}``, sorted by label."""
    return sorted(
        ({"label": b["label"], "unit": unit_box(b)} for b in row["boxes"] if box_role(b) == role),
        key=lambda b: (b["label"], b["unit"]),
    )


def _structure_grounding(
    task_name: str, role: str, name_field: str, doc: str
) -> Callable[[dict, Profile, int], list[dict]]:
    """A generator of one row per box of ``role`` (capped), filling ``{name_field}`` and ``{box}``:
    the task's templates decide which of the two is asked and which answered."""

    def generate(row: dict, profile: Profile, seed: int) -> list[dict]:
        task = _Task(task_name, row, profile, seed)
        rows = []
        for box in task.capped(_role_boxes(row, role)):
            fields = {name_field: box["label"], "box": task.box(box["unit"])}
            rows.append(task.row_of(task_name, box["label"], _target_box(box), **fields))
        return rows

    generate.__name__ = task_name
    generate.__doc__ = doc
    return generate


def _region_phrases(row: dict) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """Region boxes by name, and the (region, phrase) pairs of the row whose region has a box (a
    phrase of a region without a box cannot be grounded). Phrases are cleaned and have their
    comparison wording rewritten out (a single image is shown); a phrase with nothing else is left out."""
    boxes = {b["label"]: b for b in _role_boxes(row, "region")}
    pairs = [(entry["region"], single_image_text(entry["phrase"])[0]) for entry in row.get("regions") or []]
    return boxes, [(region, text) for region, text in pairs if region in boxes and text]


def phrase_grounding(row: dict, profile: Profile, seed: int) -> list[dict]:
    """M4CXR: an ImaGenome report phrase -> the boxes of every region it is linked to."""
    task = _Task("phrase_grounding", row, profile, seed)
    boxes, pairs = _region_phrases(row)
    regions_of: dict[str, list[str]] = {}
    for region, text in pairs:
        regions_of.setdefault(text, [])
        if region not in regions_of[text]:
            regions_of[text].append(region)
    rows = []
    for text, regions in task.capped(sorted(regions_of.items())):
        linked = [boxes[r] for r in sorted(regions)]
        rows.append(
            task.row_of(
                "phrase_grounding",
                text,
                {"phrase": text, "boxes": [_target_box(b) for b in linked]},
                phrase=text,
                boxes=task.boxes(linked),
            )
        )
    return rows


def grounded_phrase_generation(row: dict, profile: Profile, seed: int) -> list[dict]:
    """M4CXR: an ImaGenome region box -> the report phrases linked to it, in report order."""
    task = _Task("grounded_phrase_generation", row, profile, seed)
    boxes, pairs = _region_phrases(row)
    phrases_of: dict[str, list[str]] = {}
    for region, text in pairs:
        phrases_of.setdefault(region, [])
        if text not in phrases_of[region]:
            phrases_of[region].append(text)
    rows = []
    for region, texts in task.capped(sorted(phrases_of.items())):
        box = boxes[region]
        rows.append(
            task.row_of(
                "grounded_phrase_generation",
                region,
                {"region": region, "phrases": texts, "box": list(box["unit"])},
                box=task.box(box["unit"]),
                phrase=" ".join(texts),
            )
        )
    return rows


M4CXR_GROUNDING = {
    "finding_grounding": finding_grounding,
    "grounded_finding": grounded_finding,
    "abnormality_detection": abnormality_detection,
    "multi_finding_grounding": multi_finding_grounding,
    "organ_grounding": _structure_grounding(
        "organ_grounding", "organ", "organ", "M4CXR: a CheXmask organ name -> its box."
    ),
    "grounded_organ": _structure_grounding(
        "grounded_organ", "organ", "organ", "M4CXR: a CheXmask organ box -> the organ's name."
    ),
    "anatomical_region_grounding": _structure_grounding(
        "anatomical_region_grounding", "region", "region", "M4CXR: an ImaGenome region name -> its box."
    ),
    "grounded_anatomical_region": _structure_grounding(
        "grounded_anatomical_region", "region", "region", "M4CXR: an ImaGenome region box -> the region's name."
    ),
    "phrase_grounding": phrase_grounding,
    "grounded_phrase_generation": grounded_phrase_generation,
}
TASKS = (
    Task(name="lesion_localization", unit="image", template_sets=("grounding_imt",), generate=lesion_localization),
    *(
        Task(name=name, unit="image", template_sets=("grounding_m4cxr",), generate=generate)
        for name, generate in M4CXR_GROUNDING.items()
    ),
)
