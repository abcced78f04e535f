"""The row audit: every instruction row re-checked against the facts of the images it shows.

A row's answer must follow from its image's annotations and report. :func:`audit_row` reads what a row
claims (its structured ``target`` and its answer text) and checks each claim against :class:`ImageFacts`,
the facts of each image re-derived from its ``annotations`` table row (:func:`facts_from_annotation`):
presence of every finding, the boxes and polygons drawn on the image, its view and split, the sides and
severities its report states, its report sections. Every disagreement is a :class:`Contradiction` of one
of the :data:`KINDS`. ``cxr-instruct audit OUT`` (pipelines/tools/audit.py) runs it over a whole build; the
tests run the same checks against facts built from the synthetic corpus's truth instead.

The facts follow the datasets' documented semantics, not the generators' choices: a null presence is
never a negative; a VinDr label nobody boxed is absent because VinDr readers box every local finding
(``manifests/grounding.yaml``); a multi-reader image's answer must cover its consensus boxes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import cast

from transforms import comparisons, padchest_english
from transforms.geometry import render_box, render_polygon
from transforms.geometry_stage import MIN_RING_AREA
from transforms.labels import NO_FINDING
from transforms.masks import signed_area
from transforms.reports import clean_text, sentence_spans
from transforms.splits import NATIVE_QUESTION_SPLITS
from transforms.tasks import FINDING_PHRASES, Profile, difference_vqa, load_profile, native_vqa, vqa
from transforms.tasks.grounding import CONSENSUS_READER, absent_labels, box_role, is_multi_reader
from transforms.tasks.report import labels_of_text, positive_observations, single_image_text
from transforms.tasks.segmentation import CONFIG as SEGMENTATION
from transforms.tasks.severity_report import severity_document
from transforms.templates import load_template_set
from transforms.views import is_frontal

KINDS: dict[str, str] = {
    "split-mismatch": "the row's split is not the split of an image it shows",
    "held-out-in-train": "a train row shows an image that never enters training (Chest ImaGenome gold set)",
    "positive-for-absent": "the answer says present for a finding the image is labelled absent (0)",
    "positive-for-unannotated": "the answer says present for a finding the image leaves unannotated (null)",
    "positive-for-uncertain": "the answer says present for an uncertain (-1) finding the profile excludes",
    "negative-for-present": "the answer says absent for a finding the image is labelled present (1)",
    "negative-for-uncertain": "the answer says absent for an uncertain (-1) finding the profile excludes",
    "negative-for-unannotated": "the answer says absent for a finding the image leaves unannotated (null)",
    "box-not-annotated": "a box of the answer is not a box of its finding on the image",
    "box-missing": "an answer that gives all boxes of a finding leaves one of the image's boxes out",
    "polygon-not-annotated": "a polygon of the answer is not the image's outline of that structure",
    "degenerate-polygon": "a polygon ring is below the minimum ring area",
    "side-on-lateral": "a side or location is asked or answered on a view without left and right",
    "side-not-stated": "a side the image's report or annotation does not state for that finding",
    "severity-not-stated": "a severity the image's report or measurement does not state",
    "report-drops-finding": "a finding positive in the source text is missing from the report target",
    "findings-list-disagrees": "a chain-of-thought findings list is not the positives of its own report text",
    "no-finding-with-positives": "a 'no finding' answer beside a finding labelled present",
    "comparison-in-single-image": "comparison wording left in a target shown with a single study",
    "triage-below-stated-severity": "the triage bucket is milder than the most severe finding present",
    "answer-text-mismatch": "the answer text does not say what the row's target says",
    "unnormalised-text": "a carriage return in a conversation",
    "taxonomy-name-in-prompt": "a taxonomy category name that is not English (e.g. 'pleural other') in a prompt",
    "severity-score-mismatch": "a severity score that is not the image's MediVLM score of the report shown",
    "reference-not-earlier": "a difference question whose reference study is not strictly earlier than its main",
    "vqa-answer-not-recomputed": "a generated VQA answer that its program, run again on the image's scene graph, "
    "does not give (an open answer leaving out a stated item, a count or choice "
    "not following from its states)",
    "native-question-changed": "a row from a VQA dataset's own files whose question, answer or split is not the "
    "one the dataset states for that image (or that it does not ask of it at all)",
}

Unit = tuple[float, float, float, float]
_TOLERANCE = 1e-6
_SIDE_WORDS = re.compile(r"\b(?:left|right|bilateral(?:ly)?|both (?:lungs|sides|bases|apices))\b", re.IGNORECASE)
_UNENGLISH = tuple(sorted(name.lower() for name, phrase in FINDING_PHRASES.items() if name.lower() not in phrase))
"""Taxonomy names that are category labels, not English (their own phrase does not contain them)."""
_BOX_TEXT = {
    "bins1000": re.compile(r"(?:<bin_\d+>){4}"),
    "percent": re.compile(r"\[\d+, \d+, \d+, \d+\]"),
    "fixed3": re.compile(r"\[\d+\.\d+, \d+\.\d+, \d+\.\d+, \d+\.\d+\]"),
}


@dataclass(frozen=True)
class Contradiction:
    """One claim of one row that its image's facts contradict."""

    kind: str
    row_id: str
    profile: str
    task: str
    source: str
    image_key: str
    detail: str

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "id": self.row_id,
            "profile": self.profile,
            "task": self.task,
            "source": self.source,
            "image_key": self.image_key,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class LesionBox:
    label: str | None  # the source's class label; None when only the finding is known (truth)
    finding: str | None
    unit: Unit


@dataclass
class ImageFacts:
    """What is known about one image, independent of any instruction row."""

    key: str
    source: str
    split: str
    view: str | None
    held_out: bool
    study_id: str | None
    presence: Mapping[str, int | None]  # taxonomy name -> 1 / 0 / -1 / None
    absent_labels: frozenset[str] = frozenset()  # source class labels definitely absent
    lesion_boxes: tuple[LesionBox, ...] = ()
    required_boxes: tuple[LesionBox, ...] = ()  # boxes an "all boxes" answer must cover
    structure_boxes: Mapping[str, tuple[Unit, ...]] = field(default_factory=dict)  # organ / region label
    polygons: Mapping[tuple[str, str], list] = field(default_factory=dict)  # (label, origin) -> unit rings
    polygon_areas: Mapping[tuple[str, str], list[float]] = field(default_factory=dict)  # ring areas, px²
    sides: Mapping[str, frozenset[str]] = field(default_factory=dict)  # finding -> stated sides
    severities: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # finding -> stated ordinal range
    bands: Mapping[str, str | None] = field(default_factory=dict)  # ctr_band, ptx_band, ptx_side
    sections: Mapping[str, str] = field(default_factory=dict)  # English report sections
    region_phrases: frozenset[tuple[str, str]] = frozenset()
    study_datetime: str | None = None
    scene_phrases: tuple = ()  # ImaGenome (region, phrase, attribute strings), difference_vqa.scene_phrases
    relationships: tuple = ()  # ImaGenome comparisons with earlier images, difference_vqa.relationships
    report_english: str | None = None  # PadChest's English statements (view-dependent: no sides on a lateral)
    report_translation: str | None = None  # PadChest's report machine-translated, when the build translates
    padchest_findings: frozenset[str] = frozenset()  # finding labels of its sentence labels this view can show
    english_labels: frozenset[str] = frozenset()  # the PadChest labels report_english states
    severity_document: str | None = None  # the text MediVLM's score reads (transforms.tasks.severity_report)
    severity_tfidf: float | None = None
    questions: Mapping[str, dict] = field(default_factory=dict)  # a VQA dataset's questions on it, by "where"

    @property
    def region_attributes(self) -> frozenset[tuple[str, str]]:
        """(ImaGenome region, attribute string) of the image's scene-graph phrases."""
        return frozenset(
            (region, attribute) for region, _, attributes in self.scene_phrases for attribute in attributes
        )

    def box_supported(self, label: str, finding: str | None, unit: Unit) -> bool:
        """Whether a box drawn for ``label`` is one of the image's boxes of it, or the enclosing box of
        several of them (profiles that merge overlapping boxes)."""
        inside = [b.unit for b in self.lesion_boxes if b.label == label and _contains(unit, b.unit)]
        return bool(inside) and _close(_enclosing(inside), unit)

    def box_covered(self, required: LesionBox, claimed: list[Unit]) -> bool:
        """Whether a required box lies inside one of the claimed boxes."""
        return any(_contains(unit, required.unit) for unit in claimed)

    def report_positives(self, section: str) -> set[str] | None:
        """The findings a report section states as positive (the labeler on its cleaned text); None
        without that section."""
        text = self.sections.get(section)
        return None if text is None else _positives(clean_text(text))


def _close(a: Iterable[float], b: Iterable[float]) -> bool:
    return all(abs(x - y) <= _TOLERANCE for x, y in zip(a, b))


def _contains(outer: Unit, inner: Unit) -> bool:
    return (
        outer[0] <= inner[0] + _TOLERANCE
        and outer[1] <= inner[1] + _TOLERANCE
        and inner[2] <= outer[2] + _TOLERANCE
        and inner[3] <= outer[3] + _TOLERANCE
    )


def _enclosing(boxes: list[Unit]) -> Unit:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


# ---------------------------------------------------------------- facts from the annotations table


def _unit(box: dict) -> Unit:
    return (box["u1"], box["v1"], box["u2"], box["v2"])


def _stated(mentions: list[dict]) -> tuple[dict[str, frozenset[str]], dict[str, tuple[int, int]]]:
    """Sides and severity ranges the positive mentions of a report state, per finding."""
    sides: dict[str, set[str]] = {}
    severities: dict[str, tuple[int, int]] = {}
    for mention in mentions:
        if mention["presence"] != 1:
            continue
        finding = mention["finding"]
        if mention["laterality"]:
            sides.setdefault(finding, set()).add(mention["laterality"])
        if mention["severity_min"] is not None:
            low, high = severities.get(finding, (mention["severity_min"], mention["severity_max"]))
            severities[finding] = (min(low, mention["severity_min"]), max(high, mention["severity_max"]))
    return {k: frozenset(v) for k, v in sides.items()}, severities


def facts_from_annotation(row: dict) -> ImageFacts:
    """The facts of one image from its ``annotations`` table row."""
    lesions = [b for b in row["boxes"] if box_role(b) == "lesion"]
    lesion_boxes = tuple(LesionBox(b["label"], b["finding"], _unit(b)) for b in lesions)
    multi_reader = is_multi_reader(row)  # then an answer owes only the consensus boxes, not each reader's
    required = tuple(
        LesionBox(b["label"], b["finding"], _unit(b))
        for b in lesions
        if not (multi_reader and b["reader"] and b["reader"] != CONSENSUS_READER)
    )
    structures: dict[str, list[Unit]] = {}
    for box in row["boxes"]:
        if box_role(box) != "lesion":
            structures.setdefault(box["label"], []).append(_unit(box))
    sides, severities = _stated(row["mentions"] or [])
    provenance = json.loads(row["provenance"] or "{}")
    sections = {s["name"]: s["text"] for s in row["sections"] or ()} if row["report_language"] == "en" else {}
    return ImageFacts(
        key=row["image_key"],
        source=row["source"],
        split=row["split"],
        view=row["view"],
        held_out=provenance.get("imagenome.images_to_avoid") == "true",
        study_id=row["study_id"],
        presence={f["name"]: f["presence"] for f in row["findings"]},
        absent_labels=frozenset(absent_labels(row)),
        lesion_boxes=lesion_boxes,
        required_boxes=required,
        structure_boxes={k: tuple(v) for k, v in structures.items()},
        polygons={(p["label"], p["origin"]): p["rings_unit"] for p in row["polygons"]},
        polygon_areas={(p["label"], p["origin"]): [abs(signed_area(r)) for r in p["rings"]] for p in row["polygons"]},
        sides=sides,
        severities=severities,
        bands={"ctr_band": row["ctr_band"], "ptx_band": row["ptx_band"], "ptx_side": row["ptx_side"]},
        sections=sections,
        region_phrases=frozenset((r["region"], r["phrase"]) for r in row["regions"] or ()),
        study_datetime=row["study_datetime"],
        scene_phrases=difference_vqa.scene_phrases(row),
        relationships=difference_vqa.relationships(row),
        report_english=row["report_english"],
        report_translation=row["report_translation"],
        **_padchest_labels(row, provenance),
        severity_document=severity_document(row),
        severity_tfidf=row["severity_tfidf"],
        questions={q["where"]: q for q in row.get("questions") or ()},
    )


def _padchest_labels(row: dict, provenance: dict) -> dict[str, frozenset[str]]:
    """A PadChest image's finding labels (those of its sentence labels; side statements left out on a
    view without sides) and the labels its English statements state (re-rendered from them)."""
    by_sentence = provenance.get("labels_localizations_by_sentence")
    if row["source"] != "padchest" or not row["report_english"] or not by_sentence:
        return {}
    sentences = json.loads(by_sentence)
    sides = is_frontal(row["view"])
    rendered = padchest_english.render_report(sentences, sides=sides)
    labels = {
        item
        for sentence in sentences
        if sentence
        for item in sentence
        if not item.startswith(padchest_english.LOCALIZATION_PREFIX)
    }
    return {
        "padchest_findings": padchest_english.stated_findings(labels, sides=sides),
        "english_labels": frozenset(label for stated in rendered.labels for label in stated),
    }


# ---------------------------------------------------------------- checking one row


class _Row:
    """One instruction row being audited: its claims and the facts of its images."""

    def __init__(self, row: dict, facts: Mapping[str, ImageFacts]):
        self.row = row
        self.target = json.loads(row["target"])
        self.profile: Profile = _profile(row["profile"])
        self.facts = facts
        self.images = [facts[key] for key in row["image_keys"]]
        self.first = self.images[0]
        self.found: list[Contradiction] = []
        answers = [turn["value"] for turn in row["conversations"] if turn["from"] == "gpt"]
        self.answer, self.answers = answers[-1], answers
        self.prompts = [turn["value"] for turn in row["conversations"] if turn["from"] == "human"]

    def flag(self, kind: str, detail: str, image: ImageFacts | None = None) -> None:
        self.found.append(
            Contradiction(
                kind,
                self.row["id"],
                self.row["profile"],
                self.row["task"],
                self.row["source"],
                (image or self.first).key,
                detail,
            )
        )

    def present(self, finding: str, image: ImageFacts | None = None, what: str = "") -> None:
        """The row says ``finding`` is present on the image."""
        self._presence_claim(finding, True, image, what)

    def absent(self, finding: str, image: ImageFacts | None = None, what: str = "") -> None:
        """The row says ``finding`` is absent from the image."""
        self._presence_claim(finding, False, image, what)

    def _presence_claim(self, finding: str, present: bool, image: ImageFacts | None, what: str) -> None:
        """A claim agrees with the image's presence: 1 (or 0 for absent), or -1 where the profile's
        ``uncertain`` policy reads it that way; anything else is a contradiction of its kind."""
        image = image or self.first
        presence = image.presence.get(finding)
        agrees = 1 if present else 0
        if presence == agrees or (presence == -1 and self.profile.uncertain == ("positive" if present else "negative")):
            return
        said = "positive" if present else "negative"
        name = {1: "present", 0: "absent", -1: "uncertain", None: "unannotated"}[presence]
        self.flag(
            f"{said}-for-{name}",
            f"{what or finding} said {'present' if present else 'absent'}; {finding} is {presence}",
            image,
        )

    def boxes(self, claimed: list[dict], shown_in: str = "answer") -> None:
        """Each claimed box is a box of its label on the image; the answer (or the prompt) shows exactly them."""
        for box in claimed:
            if not self.first.box_supported(box["label"], box.get("finding"), tuple(box["box"])):
                self.flag("box-not-annotated", f"{box['label']} {box['box']}")
        self.rendered_boxes([tuple(b["box"]) for b in claimed], shown_in)

    def rendered_boxes(self, units: list[Unit], shown_in: str = "answer") -> None:
        """The answer's (or the last prompt's) text shows exactly these boxes in the profile's format."""
        text = self.answer if shown_in == "answer" else self.prompts[-1]
        expected = sorted(set(render_box(unit, self.profile.coordinates) for unit in units))
        shown = sorted(set(_BOX_TEXT[self.profile.coordinates].findall(text)))
        if expected != shown:
            self.flag("answer-text-mismatch", f"{shown_in} shows boxes {shown}, target {expected}")

    def all_boxes_of(self, label: str | None, claimed: list[dict]) -> None:
        """An answer that gives every box of ``label``: each required box of it is covered."""
        units = [tuple(b["box"]) for b in claimed if b["label"] == label]
        for required in self.first.required_boxes:
            if required.label == label and not self.first.box_covered(required, units):
                self.flag("box-missing", f"{label} {list(required.unit)} not in the answer")

    def side(self, finding: str, side: str | None, image: ImageFacts | None = None) -> None:
        """A side the row states for a finding: only on a frontal view, and only one the image states."""
        image = image or self.first
        if side is None:
            return
        if not is_frontal(image.view):
            self.flag("side-on-lateral", f"{finding}: {side} on a {image.view} view", image)
            return
        stated = image.sides.get(finding, frozenset())
        allowed = set(stated) | ({"bilateral"} if {"left", "right"} <= stated else set())
        if side not in allowed:
            self.flag("side-not-stated", f"{finding}: {side}, stated {sorted(stated)}", image)

    def text(self, claimed: str, what: str) -> None:
        if claimed not in self.answers:
            self.flag("answer-text-mismatch", f"{what} {claimed!r} is not an answer of the row")


@cache
def _profile(name: str) -> Profile:
    return load_profile(name)


def _positives(text: str) -> set[str]:
    return {name for name, value in labels_of_text(text) if value == 1.0 and name != NO_FINDING}


# ---------------------------------------------------------------- per task family


def _classification(r: _Row) -> None:
    t = r.target
    if "present" in t:  # yes / no
        (r.present if t["present"] else r.absent)(t["finding"])
        answers = load_template_set(r.profile.tasks[r.row["task"]].template_set).answers
        r.text(answers["yes" if t["present"] else "no"], "yes/no answer")
        return
    for name in t["positives"]:
        r.present(name)
    for name in t["negatives"]:
        r.absent(name)
    if t.get("question") == "open":  # no candidate list: every other finding is implied absent
        for name in r.first.presence:
            if name != NO_FINDING and name not in t["positives"] and name not in t["negatives"]:
                r.absent(name, what=f"{name} (implied by the open answer)")
    phrases = [FINDING_PHRASES[name] for name in t["positives"]]
    if any(phrase not in r.answer for phrase in phrases):
        r.flag("answer-text-mismatch", f"answer {r.answer!r} lacks one of {phrases}")


def _severity(r: _Row) -> None:
    t = r.target
    r.present(t["finding"])
    if t["basis"] == "report":
        stated = r.first.severities.get(t["finding"])
        if stated is None or not (stated[0] <= t["severity_min"] <= t["severity_max"] <= stated[1]):
            r.flag("severity-not-stated", f"{t['finding']}: {t['answer']}, stated {stated}")
    else:
        column = {"ctr": "ctr_band", "mask": "ptx_band"}[t["basis"]]
        if r.first.bands.get(column) != t.get(column):
            r.flag(
                "severity-not-stated", f"{t['finding']}: {column} {t.get(column)}, measured {r.first.bands.get(column)}"
            )


def _location(r: _Row) -> None:
    t = r.target
    r.present(t["finding"])
    for location in t["locations"]:
        if t["basis"] == "mask":
            if location["laterality"] != r.first.bands.get("ptx_side") or not is_frontal(r.first.view):
                r.flag(
                    "side-not-stated", f"{t['finding']}: {location['laterality']}, mask {r.first.bands.get('ptx_side')}"
                )
        else:
            r.side(t["finding"], location["laterality"])
        if location["zones"] and not is_frontal(r.first.view):
            r.flag("side-on-lateral", f"{t['finding']}: zones {location['zones']} on a {r.first.view} view")


def _lesion_localization(r: _Row) -> None:
    t = r.target
    r.present(t["finding"])
    r.boxes(t["boxes"])
    if t["location"]:
        side = next((s for s in ("both", "left", "right") if re.search(rf"\b{s}\b", t["location"])), None)
        r.side(t["finding"], "bilateral" if side == "both" else side)
        if not is_frontal(r.first.view):
            r.flag("side-on-lateral", f"{t['finding']}: {t['location']} on a {r.first.view} view")


def _label_present(r: _Row, label: str, boxes: list[dict]) -> None:
    for box in boxes:
        if box.get("finding"):
            r.present(box["finding"], what=label)


def _label_absent(r: _Row, label: str) -> None:
    if label not in r.first.absent_labels:
        kind = (
            "negative-for-present"
            if any(b.label == label for b in r.first.lesion_boxes)
            else "negative-for-unannotated"
        )
        r.flag(kind, f"{label} said absent; not a definitely absent label of the image")


def _finding_grounding(r: _Row) -> None:
    t = r.target
    if t["present"]:
        _label_present(r, t["label"], t["boxes"])
        r.boxes(t["boxes"])
        r.all_boxes_of(t["label"], t["boxes"])
    else:
        _label_absent(r, t["label"])
        r.text(load_template_set(r.profile.tasks[r.row["task"]].template_set).answers["absent"], "absent answer")


def _grounded_finding(r: _Row) -> None:
    for box in r.target["boxes"]:
        _label_present(r, box["label"], [box])
    r.boxes(r.target["boxes"], shown_in="prompt")
    for label in r.target["labels"]:
        if label not in r.answer:
            r.flag("answer-text-mismatch", f"answer {r.answer!r} does not name {label}")


def _abnormality_detection(r: _Row) -> None:
    t = r.target
    if t["abnormal"]:
        r.boxes(t["boxes"])
        for label in {b.label for b in r.first.required_boxes}:
            r.all_boxes_of(label, t["boxes"])
        return
    if r.first.presence.get(NO_FINDING) != 1:
        r.flag("negative-for-unannotated", f"'no abnormality' but No Finding is {r.first.presence.get(NO_FINDING)}")
    if r.first.required_boxes:
        r.flag("negative-for-present", f"'no abnormality' beside {len(r.first.required_boxes)} lesion box(es)")


def _multi_finding_grounding(r: _Row) -> None:
    t = r.target
    for label in t["present"]:
        boxes = [b for b in t["boxes"] if b["label"] == label]
        _label_present(r, label, boxes)
        r.all_boxes_of(label, t["boxes"])
    for label in t["absent"]:
        _label_absent(r, label)
    r.boxes(t["boxes"])


def _structure(r: _Row) -> None:
    """Organ / region grounding (name -> box) and its reverse (box -> name)."""
    t = r.target
    if not any(_close(t["box"], unit) for unit in r.first.structure_boxes.get(t["label"], ())):
        r.flag("box-not-annotated", f"{t['label']} {t['box']} is not a box of it on the image")
    box_asked = r.row["task"].startswith("grounded_")
    r.rendered_boxes([tuple(t["box"])], "prompt" if box_asked else "answer")
    named = r.answer if box_asked else r.prompts[-1]
    if t["label"] not in named:
        r.flag("answer-text-mismatch", f"{t['label']!r} is not named in {named!r}")


def _phrase_pairs(r: _Row, pairs: list[tuple[str, str]]) -> None:
    stated = {(region, single_image_text(phrase)[0]) for region, phrase in r.first.region_phrases}
    for region, phrase in pairs:
        if (region, phrase) not in stated:
            r.flag("box-not-annotated", f"{region!r} is not linked to {phrase!r} on the image")
        if comparisons.compares(phrase):
            r.flag("comparison-in-single-image", phrase)


def _phrase_grounding(r: _Row) -> None:
    t = r.target
    _phrase_pairs(r, [(b["label"], t["phrase"]) for b in t["boxes"]])
    for box in t["boxes"]:
        if not any(_close(box["box"], unit) for unit in r.first.structure_boxes.get(box["label"], ())):
            r.flag("box-not-annotated", f"{box['label']} {box['box']}")
    r.rendered_boxes([tuple(b["box"]) for b in t["boxes"]])


def _grounded_phrase(r: _Row) -> None:
    t = r.target
    _phrase_pairs(r, [(t["region"], phrase) for phrase in t["phrases"]])
    if not any(_close(t["box"], unit) for unit in r.first.structure_boxes.get(t["region"], ())):
        r.flag("box-not-annotated", f"{t['region']} {t['box']}")
    r.rendered_boxes([tuple(t["box"])], "prompt")


def _segmentation(r: _Row) -> None:
    t = r.target
    parts = SEGMENTATION["structures"][t["structure"]]["parts"]
    rings = [ring for part in parts for ring in r.first.polygons.get((part["label"], part["origin"]), [])]
    if rings != t["rings"]:
        r.flag("polygon-not-annotated", f"{t['structure']}: rings are not the image's outline")
    for part in parts:
        if part["label"] in r.first.presence:
            r.present(part["label"])
        for area in r.first.polygon_areas.get((part["label"], part["origin"]), []):
            if area < MIN_RING_AREA:
                r.flag("degenerate-polygon", f"{t['structure']}: ring of {area:.1f} px²")
    rotated = [ring[start:] + ring[:start] for ring, start in zip(t["rings"], t["start_vertices"])]
    if render_polygon(rotated, r.profile.coordinates, r.profile.polygon_max_vertices) != r.answer:
        r.flag("answer-text-mismatch", f"{t['structure']}: answer is not the target's polygon")


def _report_text_checks(
    r: _Row, target_text: str, source: ImageFacts, section: str, shown: list[ImageFacts], single_study: bool
) -> None:
    """A report target keeps every finding its source section states, has no comparison wording when
    a single study is shown, and names no side when only lateral views are shown."""
    stated = source.report_positives(section)
    if stated is not None:
        for finding in sorted(stated - _positives(target_text)):
            r.flag("report-drops-finding", f"{finding} is positive in the source {section}, not in the target")
    if single_study and any(comparisons.compares(s) for s in _sentences(target_text)):
        r.flag("comparison-in-single-image", target_text[:120])
    if not any(is_frontal(image.view) for image in shown) and _SIDE_WORDS.search(target_text):
        r.flag("side-on-lateral", f"report names a side, shown only {[i.view for i in shown]} views")


def _sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def _findings_list(r: _Row, text: str, listed: list[str], images: list[ImageFacts]) -> None:
    """A chain-of-thought list: the positives of its report text, none of them absent on the images,
    and a 'none' answer only when nothing is present."""
    positives = set(positive_observations(list(labels_of_text(text)), r.profile.uncertain))
    if set(listed) != positives:
        r.flag("findings-list-disagrees", f"listed {sorted(listed)}, text positives {sorted(positives)}")
    for name in listed:
        for image in images:
            if image.presence.get(name) == 0:
                r.flag("positive-for-absent", f"{name} listed; labelled 0", image)
    labelled = {name for image in images for name, p in image.presence.items() if p == 1 and name != NO_FINDING}
    if not listed and labelled:
        r.flag("no-finding-with-positives", f"none listed; images labelled with {sorted(labelled)}")
    if not listed:
        return
    answers = load_template_set(r.profile.tasks[r.row["task"]].template_set).answers
    if r.answers[0] in (answers["none"], answers.get("none_definite")):
        r.flag("no-finding-with-positives", f"{r.answers[0]!r} beside {sorted(listed)}")


def _report(r: _Row) -> None:
    t = r.target
    r.text(t["text"], "target text")
    _report_text_checks(r, t["text"], r.first, t["section"], [r.first], single_study=True)
    if r.row["task"] == "report_generation_cot":
        _findings_list(r, t["text"], t["findings"], [r.first])


def _multi_image(r: _Row) -> None:
    t = r.target
    r.text(t["report"], "report")
    _report_text_checks(r, t["report"], r.first, "findings", r.images, single_study=True)
    _findings_list(r, t["report"], t["findings"], r.images)


def _multi_study(r: _Row) -> None:
    t = r.target
    current = [image for image in r.images if image.study_id == t["study_id"]]
    r.text(t["report"], "report")
    _report_text_checks(r, t["report"], current[0], "findings", current, single_study=False)
    _findings_list(r, t["report"], t["findings"], current)


def _triage(r: _Row) -> None:
    t = r.target
    order = {"none": 0, "mild": 1, "moderate": 2, "severe": 3}
    stated = max((high for _, high in r.first.severities.values()), default=None)
    if stated is not None and order[t["bucket"]] < max(stated, 1):
        r.flag("triage-below-stated-severity", f"bucket {t['bucket']}, a finding present is stated at {stated}")
    if t["bucket"] == "none":
        present = [
            name for name, p in r.first.presence.items() if p == 1 and name not in (NO_FINDING, "Support Devices")
        ]
        if present:
            r.flag("no-finding-with-positives", f"triage none beside {present}")
    r.text(t["bucket"], "bucket")


def _english_statements(r: _Row, text: str, image: ImageFacts) -> None:
    """A text that should be a PadChest image's English statements: it is, and it names every finding
    label of the image's sentences (the label's head words, and among the labels the rendering states)."""
    if text != image.report_english:
        r.flag("answer-text-mismatch", "the report is not the image's English statements")
    lowered = text.lower()
    for label in sorted(image.padchest_findings):
        if label not in image.english_labels or padchest_english.label_head(label).lower() not in lowered:
            r.flag("report-drops-finding", f"PadChest sentence label {label!r} is not stated by the report")


def _padchest_report(r: _Row) -> None:
    """A PadChest study's English report: the image's statements, or its translation (which only the
    checks on any text cover: no side on a lateral view, no comparison)."""
    t = r.target
    r.text(t["text"], "report")
    _report_text_checks(r, t["text"], r.first, "findings", [r.first], single_study=True)
    if t["method"] == "translation":
        if t["text"] != r.first.report_translation:
            r.flag("answer-text-mismatch", "the report is not the image's translation")
    else:
        _english_statements(r, t["text"], r.first)


def _severity_report(r: _Row) -> None:
    """MediVLM: the image's report text, then its severity score as the image's annotation row has it;
    region boxes in the prompt are the image's."""
    t = r.target
    image = r.first
    if t["report"] != image.severity_document:
        r.flag("answer-text-mismatch", "the report is not the image's severity document")
    if (
        image.severity_tfidf is None
        or abs(t["severity_tfidf"] - image.severity_tfidf) > _TOLERANCE
        or t["severity_score"] != f"{image.severity_tfidf:.2f}"
    ):
        r.flag(
            "severity-score-mismatch",
            f"score {t['severity_score']} ({t['severity_tfidf']}), the image's {image.severity_tfidf}",
        )
    r.text(f"{t['report']}\nSeverity Score: {t['severity_score']}", "report and score")
    section = next((name for name in ("findings", "impression") if image.sections.get(name, "").strip()), "findings")
    _report_text_checks(r, t["report"], image, section, [image], single_study=True)
    if image.source == "padchest":
        _english_statements(r, t["report"], image)
    if r.row["task"] == "report_severity_regions":
        for box in t["boxes"]:
            if not any(_close(unit, box["box"]) for unit in image.structure_boxes.get(box["label"], ())):
                r.flag("box-not-annotated", f"region {box['label']} {box['box']}")
        r.rendered_boxes([tuple(box["box"]) for box in t["boxes"]], shown_in="prompt")


def _native_question(r: _Row, image: ImageFacts) -> None:
    """A row from a VQA dataset's own files: the question the target cites is one the dataset asks of
    ``image``, asked and answered as stated, in the dataset's own split, and the row says both."""
    t = r.target
    stated = image.questions.get(t["where"])
    if stated is None or stated["dataset"] != t["origin"]:
        r.flag("native-question-changed", f"{t['origin']} {t['where']}: not a question it asks of {image.key}", image)
        return
    task = r.row["task"]
    if _NATIVE_TASK[stated["dataset"], stated["question_type"] == native_vqa.DIFFERENCE] != task:
        r.flag(
            "native-question-changed",
            f"{t['where']}: a {stated['dataset']} {stated['question_type']} question as {task}",
            image,
        )
    if task == "difference_vqa" and r.images[0].study_id != stated["reference_study_id"]:
        r.flag(
            "native-question-changed",
            f"{t['where']}: reference study {stated['reference_study_id']}, the "
            f"row shows {r.images[0].key} of study {r.images[0].study_id}",
            image,
        )
    if (stated["question"], stated["answers"]) != (t["question"], t["answers"]):
        r.flag(
            "native-question-changed",
            f"{t['where']}: {t['question']!r} {t['answers']} stated as {stated['question']!r} {stated['answers']}",
            image,
        )
    if NATIVE_QUESTION_SPLITS.get(stated["split"]) != r.row["split"]:
        r.flag("native-question-changed", f"{t['where']}: in {stated['split']}, the row in {r.row['split']}", image)
    if not r.prompts[-1].endswith(stated["question"]):
        r.flag("answer-text-mismatch", f"the prompt does not ask {stated['question']!r}")
    said = ", ".join(stated["answers"]) + "." if stated["dataset"] == native_vqa.MIMIC_CXR_VQA else stated["answers"][0]
    r.text(said, "answer")  # M4CXR's rendering, restated


_NATIVE_TASK = {
    (native_vqa.MIMIC_CXR_VQA, False): "vqa",
    (native_vqa.MIMIC_DIFF_VQA, False): "main_image_vqa",
    (native_vqa.MIMIC_DIFF_VQA, True): "difference_vqa",
}
"""(dataset, a difference question) -> the task that asks it."""


def _main_image_vqa(r: _Row) -> None:
    _native_question(r, r.first)


def _vqa(r: _Row) -> None:
    """A VQA dataset's own question (:func:`_native_question`), or generated VQA: each state the answer
    rests on is the one the image's scene graph states (a "no" only from a stated negative), the answer
    follows from those states and is what the family's program gives when run again, no region with a
    side is named on a view without sides, and the row's question and answer text say the target's
    inputs and answer."""
    t = r.target
    if t["origin"] != vqa.ORIGIN:
        _native_question(r, r.first)
        return
    scene = vqa.Scene.of(r.first.region_attributes)
    wrong_states = 0
    for region, attribute, present in t["claims"]:
        stated = scene.state(region, attribute)
        if stated != present:
            said = "positive" if present else "negative"
            name = {True: "present", False: "absent", None: "unannotated"}[stated]
            r.flag(
                f"{said}-for-{name}",
                f"{attribute or 'an abnormality'} in {region or 'the image'} said "
                f"{'present' if present else 'absent'}; the scene graph: {stated}",
            )
            wrong_states += 1
    claims = [tuple(claim) for claim in t["claims"]]
    rerun = vqa.run(t["family"], t["inputs"], scene)
    if not wrong_states and (
        vqa.answer_from_claims(t["family"], claims) != t["answer"] or rerun is None or rerun[0] != t["answer"]
    ):
        r.flag(
            "vqa-answer-not-recomputed",
            f"{t['family']} {t['inputs']}: {t['answer']!r}, rerun {rerun[0] if rerun else None!r}",
        )
    if not is_frontal(r.first.view):
        for region in vqa.named_regions(t["family"], t["inputs"], t["answer"]):
            if vqa.region_side(region):
                r.flag("side-on-lateral", f"{region} named on a {r.first.view} view")
    templates = load_template_set(r.profile.tasks[r.row["task"]].template_set)
    r.text(vqa.answer_text(templates, t["family"], t["answer"]), "answer")
    for name, phrase in vqa.question_fields(t["family"], t["inputs"]).items():
        if phrase not in r.prompts[-1]:
            r.flag("answer-text-mismatch", f"the question does not say {name} {phrase!r}")


def _difference_vqa(r: _Row) -> None:
    """Difference VQA: the row shows the target's reference then main image, the reference study strictly
    earlier than the main (by the images' own times), both frontal; a finding said new (resolved) is
    denied on the reference (main) image, never merely unstated there; and the answer is what the
    family's program gives when run again on the two images' ImaGenome statements and the main image's
    relations (transforms/tasks/difference_vqa.py), said by the row's question and answer text. A
    Medical-Diff-VQA question (any view: the dataset's own pair) is checked as the dataset states it,
    over the reference study it names."""
    t = r.target
    reference, main = r.images
    if [reference.key, main.key] != [t["reference"]["image_key"], t["main"]["image_key"]]:
        r.flag("answer-text-mismatch", "the row's images are not the target's reference then main")
    if not (
        reference.study_datetime
        and main.study_datetime
        and difference_vqa.earlier(reference.study_datetime, main.study_datetime)
    ):
        r.flag("reference-not-earlier", f"reference {reference.study_datetime}, main {main.study_datetime}", main)
    if t["origin"] != difference_vqa.ORIGIN:  # the dataset's own question: its pair, as it states it
        _native_question(r, main)
        return
    for image in (reference, main):
        if not is_frontal(image.view):
            r.flag("side-on-lateral", f"a difference question on a {image.view} view", image)
    family, answer = t["family"], t["answer"]
    claimed = (
        answer
        if family in ("new_findings", "resolved_findings")
        else ([t["inputs"]["finding"]] if family in ("finding_new", "finding_resolved") and answer is True else [])
    )
    before = reference if family in ("new_findings", "finding_new") else main
    denied = {
        attribute.split("|")[-1]
        for _, _, attributes in before.scene_phrases
        for attribute in attributes
        if attribute.split("|")[1:2] == ["no"]
    }
    said, which = ("new", "reference") if before is reference else ("resolved", "main")
    for name in claimed:
        if name not in denied:
            r.flag("negative-for-unannotated", f"{name} said {said}; the {which} image never denies it", before)

    def study_of(key: str) -> str | None:
        return r.facts[key].study_id if key in r.facts else None

    statements = [
        difference_vqa.Statements.of(
            cast(str, image.study_id),  # the images of a difference_vqa row each belong to a study
            image.scene_phrases,
            image.relationships,
            study_of,
        )
        for image in (reference, main)
    ]
    rerun = difference_vqa.run(family, t["inputs"], *statements)
    if rerun != answer:
        r.flag("vqa-answer-not-recomputed", f"{family} {t['inputs']}: {answer!r}, rerun {rerun!r}")
    templates = load_template_set(r.profile.tasks[r.row["task"]].template_set)
    question_id = r.row["template_id"].split("+")[-1]
    gpt = next((q.gpt for q in templates.kinds[family] if q.id == question_id), None)
    if gpt is None:
        r.flag("answer-text-mismatch", f"{question_id!r} is not a {family} template")
    else:
        r.text(difference_vqa.answer_text(templates, family, answer, gpt), "answer")
    for slot, phrase in difference_vqa.question_fields(family, t["inputs"]).items():
        if phrase not in r.prompts[-1]:
            r.flag("answer-text-mismatch", f"the question does not say {slot} {phrase!r}")


def _pretraining(r: _Row) -> None:
    for name, text in r.target.items():
        if clean_text(r.first.sections.get(name, "")) != text:
            r.flag("answer-text-mismatch", f"{name} is not the image's cleaned {name} section")


CHECKS = {
    "disease_classification": _classification,
    "severity_classification": _severity,
    "location_classification": _location,
    "lesion_localization": _lesion_localization,
    "finding_grounding": _finding_grounding,
    "grounded_finding": _grounded_finding,
    "abnormality_detection": _abnormality_detection,
    "multi_finding_grounding": _multi_finding_grounding,
    "organ_grounding": _structure,
    "grounded_organ": _structure,
    "anatomical_region_grounding": _structure,
    "grounded_anatomical_region": _structure,
    "phrase_grounding": _phrase_grounding,
    "grounded_phrase_generation": _grounded_phrase,
    "segmentation": _segmentation,
    "report_generation": _report,
    "report_generation_with_attributes": _report,
    "report_generation_cot": _report,
    "report_generation_multi_image": _multi_image,
    "report_generation_multi_study": _multi_study,
    "triage": _triage,
    "report_pretraining": _pretraining,
    "padchest_report_generation": _padchest_report,
    "report_severity": _severity_report,
    "report_severity_regions": _severity_report,
    "vqa": _vqa,
    "difference_vqa": _difference_vqa,
    "main_image_vqa": _main_image_vqa,
}
"""Task -> its check. Every task of the registry (``transforms.tasks.registry``) has one (tests/test_tasks.py)."""


def audit_row(row: dict, facts: Mapping[str, ImageFacts]) -> list[Contradiction]:
    """The contradictions of one instruction row against the facts of its images (``facts`` by key)."""
    r = _Row(row, facts)
    for image in r.images:
        if image.split != row["split"]:
            r.flag("split-mismatch", f"row {row['split']}, image {image.split}", image)
        if image.held_out and row["split"] == "train":
            r.flag("held-out-in-train", "Chest ImaGenome gold image in a train row", image)
    for turn in row["conversations"]:
        if "\r" in turn["value"]:
            r.flag("unnormalised-text", f"carriage return in a {turn['from']} turn")
    for prompt in r.prompts:
        lowered = prompt.lower()
        for name in _UNENGLISH:
            if re.search(rf"\b{re.escape(name)}\b", lowered):
                r.flag("taxonomy-name-in-prompt", f"{name!r} in {prompt[:80]!r}")
    CHECKS[row["task"]](r)
    return r.found
