"""MIMIC-CXR-VQA and Medical-Diff-VQA writers (``docs/formats/mimic-cxr-vqa.md``,
``docs/formats/medical-diff-vqa.md``): question files about the synthetic MIMIC images, every answer
true to the case truth.

MIMIC-CXR-VQA (``mimic-cxr-vqa/dataset/``): the answered ``train.json``, ``valid.json``, ``test.json``
as its builder writes them, ``ans2idx.json`` and the answer-less skeletons ``_train_part1.json``,
``_train_part2.json``, ``_valid.json``, ``_test.json``. Cohort: every other patient (even patient
index, so never an ImaGenome gold patient), one image per study (its first frontal image by
dicom_id) when that image has a scene graph. Questions (3 to 5 per image) follow the builder's
programs over the scene graph's statements (:func:`statements`): a ``yes`` only from a region where
the scene graph states the attribute ``yes``, a ``no`` only where it states ``no``, a list only from
a region or attribute none of whose statements comes from an uncertain finding.

Medical-Diff-VQA (``medical-diff-vqa/``): ``mimic_all.csv`` (one row per study, the study's first
frontal image in metadata order, as the release's ``get_mimic_all.py`` picks it) and
``mimic_pair_questions.csv``. Pairs: each later study of every other patient who has two studies or
more and is not an ImaGenome gold patient (the build holds out a gold patient's train images; the
patients left out keep generated difference questions) with an earlier study of the same patient;
3 to 5 single-image questions about the main study (at most one per question type; no ``type`` questions) plus one ``difference`` question. Answers use the dataset's vocabulary
(:data:`DIFF_NAMES`); a ``no`` only for a stated negative, a side only from a stated side, and a
difference only where no changed finding is uncertain.

Planted on purpose, and recorded in the truth: one patient per dataset whose questions sit in
another split than MIMIC's (the build filters them, ``vqa-split-differs``), and one Diff-VQA pair
written in reversed order (``ref_id`` later than ``study_id``; the v1.0.0 defect), whose difference
question the build rejects (``reference-not-earlier``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import cast

import pandas as pd

from pipelines.synth import imagenome, output
from pipelines.synth.cases import ABNORMAL, Finding, Patient, Study, View, stable_int, stated_labels
from pipelines.synth.mimic import LABEL_COLUMNS, label_cell

VQA_SPLIT_FILES = ("train", "valid", "test")
VQA_SPLIT = {"train": "train", "validate": "valid", "test": "test"}
"""MIMIC's official split -> the MIMIC-CXR-VQA file a patient's questions agree with."""
DIFF_SPLIT = {"train": "train", "validate": "val", "test": "test"}
"""MIMIC's official split -> Medical-Diff-VQA's ``split`` value."""
VQA_FIELDS = (
    "split",
    "idx",
    "subject_id",
    "study_id",
    "image_id",
    "image_path",
    "question",
    "semantic_type",
    "content_type",
    "template",
    "template_program",
    "template_arguments",
    "answer",
)
SKELETON_FIELDS = (
    "split",
    "idx",
    "image_id",
    "question",
    "content_type",
    "semantic_type",
    "template",
    "template_program",
    "template_arguments",
)
ARGUMENT_KINDS = ("object", "attribute", "category", "viewpos", "gender")
ABNORMALITY_CATEGORIES = ("anatomicalfinding", "disease", "device", "tubesandlines")
"""The categories MIMIC-CXR-VQA's programs count as an abnormality."""

QUESTIONS_FILE = "mimic_pair_questions.csv"
STUDIES_FILE = "mimic_all.csv"
QUESTION_COLUMNS = ["study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split"]
STUDY_COLUMNS = ["subject_id", "study_id", *LABEL_COLUMNS, "dicom_id", "view", "split", "study_date", "study_order"]
VIEW_MEANINGS = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}
DIFF_NAMES = {
    "Pleural Effusion": "pleural effusion",
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Edema": "edema",
    "Pneumothorax": "pneumothorax",
    "Lung Opacity": "lung opacity",
    "Pneumonia": "pneumonia",
    "Consolidation": "consolidation",
    "Fracture": "fracture",
    "Pleural Other": "pleural thickening",
}
"""CheXpert name -> the name Medical-Diff-VQA's disease list gives the finding; findings not listed
(a lung lesion, a widened mediastinum, a device) are outside its vocabulary and never asked about."""
SIZE_WORDS = {1: "small", 2: "moderate", 3: "large"}
DEGREE_WORDS = {1: "mild", 2: "moderate", 3: "severe"}
LEVEL_WORDS = {
    "Pleural Effusion": SIZE_WORDS,
    "Pneumothorax": SIZE_WORDS,
    "Cardiomegaly": DEGREE_WORDS,
    "Atelectasis": DEGREE_WORDS,
    "Edema": DEGREE_WORDS,
}
"""The level word the synthetic report gives a present finding of each severity."""


# ------------------------------------------------------------------------------ shared helpers


def choose(seed: int, items: list, *key: object):
    """One item picked by a stable hash of the key."""
    return items[stable_int(seed, *key) % len(items)]


def ranked(seed: int, items: list, *key: object) -> list:
    """The items in the order of a stable hash of (key, item)."""
    return sorted(items, key=lambda item: stable_int(seed, *key, json.dumps(item, sort_keys=True, default=str)))


def dump_questions(rows: list[dict]) -> str:
    """A question file as MIMIC-CXR-VQA's builder writes it (``json.dump(..., indent=4)``)."""
    return json.dumps(rows, indent=4)


def dump_skeleton(rows: list[dict]) -> str:
    """An answer-less skeleton as the repository ships it (``indent=2``)."""
    return json.dumps(rows, indent=2)


def split_differs_subject(patients: list[Patient]) -> str | None:
    """The subject whose questions go to another split than MIMIC's: the last patient MIMIC puts in
    train, else the last one; none among no patients."""
    trained = [p for p in patients if p.split == "train"]
    return (trained or patients)[-1].subject_id if patients else None


def dataset_split(patient: Patient, names: dict[str, str], moved: str | None) -> str:
    """The split the dataset gives the patient's questions: MIMIC's, spelled by ``names``; for the
    ``moved`` subject another one (train -> validation, any other -> train)."""
    agreed = names[patient.split]
    if patient.subject_id != moved:
        return agreed
    return names["validate"] if agreed == names["train"] else names["train"]


# ------------------------------------------------------------------------------ MIMIC-CXR-VQA


@dataclass(frozen=True)
class Statement:
    """One (region, attribute) the synthetic scene graph states, and the finding behind it."""

    region: str
    attribute: str  # ImaGenome's name, e.g. "pleural effusion"
    category: str  # e.g. "anatomicalfinding"
    stated: str  # "yes" | "no"
    certain: bool  # False for an uncertain finding, which the scene graph still states "yes"

    def fact(self) -> dict:
        return {"region": self.region, "attribute": self.attribute, "stated": self.stated}


def statements(study: Study) -> list[Statement]:
    """What the study's scene graph states, region by region (``imagenome.write`` writes the same)."""
    found = []
    for finding in study.findings.values():
        category, stated, attribute = imagenome.finding_attribute(finding).split("|", 2)
        for region in imagenome.finding_regions(finding):
            found.append(Statement(region, attribute, category, stated, finding.presence != -1))
    return sorted(found, key=lambda s: (s.region, s.attribute))


def vqa_image(study: Study) -> View | None:
    """The study's first frontal image by dicom_id (MIMIC-CXR-VQA keeps one image per study)."""
    frontal = sorted((v for v in study.views if v.frontal), key=lambda v: v.image_id)
    return frontal[0] if frontal else None


@dataclass
class Draft:
    """One question before it gets its file and idx."""

    program: str
    arguments: dict[str, list[str]]
    answer: list[str]
    facts: list[dict]
    content_type: str = ""
    semantic_type: str = ""
    template: str = ""
    question: str = ""


PROGRAMS = {
    "program_2": (
        "attribute",
        "verify",
        (
            "Is there ${attribute} in the ${object}?",
            "Are there signs of ${attribute} in the ${object}?",
            "Does the ${object} show ${attribute}?",
        ),
    ),
    "program_3": (
        "abnormality",
        "verify",
        ("Is the ${object} abnormal?", "Is there anything abnormal about the ${object}?"),
    ),
    "program_8": (
        "abnormality",
        "query",
        ("List all abnormalities in the ${object}.", "Which abnormalities does the ${object} show?"),
    ),
    "program_31": (
        "anatomy",
        "query",
        ("List all anatomical locations related to ${attribute}.", "Where in the image is ${attribute} seen?"),
    ),
    "program_41": ("plane", "verify", ("Is this an ${viewpos} view?",)),
    "program_42": (
        "plane",
        "choose",
        ("Which view is in this image, AP or PA?", "Was this image taken in AP or PA view?"),
    ),
}
"""MIMIC-CXR-VQA template program -> (content_type, semantic_type, template wordings). The first
wording of each is the dataset's base template; the others stand in for its paraphrases."""


def _attribute_drafts(found: list[Statement]) -> list[Draft]:
    """Is A in R? (program 2), from each certain statement: yes or no as stated."""
    return [
        Draft("program_2", {"object": [s.region], "attribute": [s.attribute]}, [s.stated], [s.fact()])
        for s in found
        if s.certain
    ]


def _abnormal_drafts(found: list[Statement]) -> list[Draft]:
    """Is R abnormal? (program 3): yes from a certain abnormality stated yes; no where every
    statement of the region says no."""
    drafts = []
    for region in sorted({s.region for s in found}):
        own = [s for s in found if s.region == region]
        yes = [s for s in own if s.stated == "yes" and s.certain and s.category in ABNORMALITY_CATEGORIES]
        if yes:
            drafts.append(Draft("program_3", {"object": [region]}, ["yes"], [yes[0].fact()]))
        elif all(s.stated == "no" for s in own):
            drafts.append(Draft("program_3", {"object": [region]}, ["no"], [s.fact() for s in own]))
    return drafts


def _region_list_drafts(found: list[Statement]) -> list[Draft]:
    """Abnormalities of R (program 8), for regions with no uncertain statement; may be empty."""
    drafts = []
    for region in sorted({s.region for s in found}):
        own = [s for s in found if s.region == region]
        if all(s.certain for s in own):
            answer = sorted({s.attribute for s in own if s.stated == "yes" and s.category in ABNORMALITY_CATEGORIES})
            drafts.append(Draft("program_8", {"object": [region]}, answer, [s.fact() for s in own]))
    return drafts


def _location_drafts(found: list[Statement]) -> list[Draft]:
    """Regions of A (program 31), for attributes stated yes by a certain finding."""
    drafts = []
    for attribute in sorted({s.attribute for s in found if s.stated == "yes" and s.certain}):
        own = [s for s in found if s.attribute == attribute]
        regions = sorted({s.region for s in own if s.stated == "yes"})
        drafts.append(Draft("program_31", {"attribute": [attribute]}, regions, [s.fact() for s in own]))
    return drafts


def _plane_drafts(seed: int, view: View) -> list[Draft]:
    """AP or PA? (program 42) and Is this an X view? (program 41) from the image's ViewPosition."""
    asked = choose(seed, ["AP", "PA"], "vqa-viewpos", view.image_id)
    fact = [{"view": view.position}]
    return [
        Draft("program_42", {}, [view.position.lower()], fact),
        Draft("program_41", {"viewpos": [asked]}, ["yes" if asked == view.position else "no"], fact),
    ]


def _families(seed: int, study: Study, view: View) -> list[list[Draft]]:
    found = statements(study)
    attribute = _attribute_drafts(found)
    return [
        [d for d in attribute if d.answer == ["yes"]],
        [d for d in attribute if d.answer == ["no"]],
        _abnormal_drafts(found),
        _region_list_drafts(found),
        _location_drafts(found),
        _plane_drafts(seed, view),
    ]


def _pick_drafts(seed: int, families: list[list[Draft]], count: int, image_id: str) -> list[Draft]:
    """Up to ``count`` drafts: one per family in a hashed family order, then second ones, and so on."""
    queues = [ranked(seed, [_draft_key(d) for d in family], "vqa-draft", image_id) for family in families]
    by_key = {_draft_key(d): d for family in families for d in family}
    order = ranked(seed, list(range(len(families))), "vqa-family", image_id)
    chosen: list[Draft] = []
    while len(chosen) < count and any(queues):
        for number in order:
            if queues[number] and len(chosen) < count:
                chosen.append(by_key[queues[number].pop(0)])
    return chosen


def _draft_key(draft: Draft) -> str:
    return json.dumps([draft.program, draft.arguments], sort_keys=True)


def _worded(seed: int, draft: Draft, image_id: str) -> Draft:
    """The draft with its content and semantic type, template wording and question text."""
    content_type, semantic_type, wordings = PROGRAMS[draft.program]
    template = choose(seed, list(wordings), "vqa-wording", image_id, _draft_key(draft))
    values = {kind: values[0] for kind, values in draft.arguments.items() if len(values) == 1}
    draft.content_type, draft.semantic_type, draft.template = content_type, semantic_type, template
    draft.question = Template(template).substitute(values)
    return draft


def vqa_row(draft: Draft, split: str, idx: int, study: Study, view: View) -> dict:
    """The builder's output object, keys in its order."""
    arguments = {
        kind: {str(i): value for i, value in enumerate(draft.arguments.get(kind, []))} for kind in ARGUMENT_KINDS
    }
    subject = study.subject_id
    row = {
        "split": split,
        "idx": idx,
        "subject_id": subject,
        "study_id": study.study_id,
        "image_id": view.image_id,
        "image_path": f"p{subject[:2]}/p{subject}/s{study.study_id}/{view.image_id}.jpg",
        "question": draft.question,
        "semantic_type": draft.semantic_type,
        "content_type": draft.content_type,
        "template": draft.template,
        "template_program": draft.program,
        "template_arguments": arguments,
        "answer": list(draft.answer),
    }
    return {name: row[name] for name in VQA_FIELDS}


def vqa_cohort(patients: list[Patient], images: dict[str, dict]) -> list[tuple[Patient, Study, View]]:
    """(patient, study, image) of every study MIMIC-CXR-VQA asks about."""
    chosen = []
    for index, patient in enumerate(patients):
        if index % 2:
            continue
        for study in patient.studies:
            view = vqa_image(study)
            if view is not None and images[f"mimic/{view.image_id}"].get("imagenome"):
                chosen.append((patient, study, view))
    return chosen


def write_mimic_cxr_vqa(root: Path, patients: list[Patient], images: dict[str, dict], seed: int) -> dict:
    """Write the MIMIC-CXR-VQA folder; returns its truth section."""
    cohort = vqa_cohort(patients, images)
    patients_asked = list({patient.subject_id: patient for patient, _, _ in cohort}.values())
    moved = split_differs_subject(patients_asked) if len(patients_asked) > 1 else None  # a lone one keeps its rows
    files: dict[str, list[dict]] = {name: [] for name in VQA_SPLIT_FILES}
    truth_rows = []
    for patient, study, view in cohort:
        split = dataset_split(patient, VQA_SPLIT, moved)
        count = 3 + stable_int(seed, "vqa-count", view.image_id) % 3
        for draft in _pick_drafts(seed, _families(seed, study, view), count, view.image_id):
            draft = _worded(seed, draft, view.image_id)
            row = vqa_row(draft, split, len(files[split]), study, view)
            files[split].append(row)
            truth_rows.append(_vqa_truth(row, draft, patient, patient.subject_id == moved))
    dataset = root / "dataset"
    for name, rows in files.items():
        output.write_text(dataset / f"{name}.json", dump_questions(rows))
    _write_skeletons(dataset, files)
    answers = sorted({answer for rows in files.values() for row in rows for answer in row["answer"]})
    output.write_text(dataset / "ans2idx.json", json.dumps({answer: i for i, answer in enumerate(answers)}))
    return {"questions": truth_rows, "split_differs": [moved] if moved else []}


def _vqa_truth(row: dict, draft: Draft, patient: Patient, moved: bool) -> dict:
    expected = None
    if moved:
        expected = {"stage": "split", "reason": "vqa-split-differs"}
    elif not row["answer"]:
        expected = {"stage": "tasks", "reason": "empty-answer"}
    return {
        "file": f"dataset/{row['split']}.json",
        "idx": row["idx"],
        "image": f"mimic/{row['image_id']}",
        "subject_id": row["subject_id"],
        "study_id": row["study_id"],
        "split": row["split"],
        "mimic_split": patient.split,
        "content_type": row["content_type"],
        "semantic_type": row["semantic_type"],
        "template_program": row["template_program"],
        "question": row["question"],
        "answer": row["answer"],
        "facts": draft.facts,
        "expected": expected,
    }


def _write_skeletons(dataset: Path, files: dict[str, list[dict]]) -> None:
    """The answer-less files the public repository ships (train in two halves, as there)."""
    bare = {name: [{key: row[key] for key in SKELETON_FIELDS} for row in rows] for name, rows in files.items()}
    half = len(bare["train"]) // 2
    parts = {
        "_train_part1": bare["train"][:half],
        "_train_part2": bare["train"][half:],
        "_valid": bare["valid"],
        "_test": bare["test"],
    }
    for name, rows in parts.items():
        output.write_text(dataset / f"{name}.json", dump_skeleton(rows))


# ------------------------------------------------------------------------------ Medical-Diff-VQA


def diff_image(study: Study) -> View | None:
    """The study's first frontal image in metadata order (``get_mimic_all.py`` keeps that one)."""
    return next((v for v in study.views if v.frontal), None)


def paired_image(study: Study) -> View:
    """:func:`diff_image` of a study in a pair (:func:`pairs_of` pairs only studies that have one)."""
    image = diff_image(study)
    assert image is not None
    return image


def mimic_all_frame(patients: list[Patient]) -> pd.DataFrame:
    """One row per study with a frontal image, in the CheXpert file's order."""
    rows = []
    for patient in patients:
        for study in patient.studies:
            view = diff_image(study)
            if view is None:
                continue
            labels = stated_labels(study.findings)
            rows.append(
                [
                    int(patient.subject_id),
                    int(study.study_id),
                    *[label_cell(labels.get(name)) for name in LABEL_COLUMNS],
                    view.image_id,
                    VIEW_MEANINGS[view.position],
                    patient.split,
                    int(study.date),
                    study.order,
                ]
            )
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def finding_state(study: Study, name: str) -> str:
    """``present``, ``uncertain`` or ``absent`` (stated negative, or not mentioned: the case model lists
    every finding a patient has)."""
    finding = study.findings.get(name)
    if finding is None or finding.presence == 0:
        return "absent"
    return "present" if finding.presence == 1 else "uncertain"


def difference(main: Study, reference: Study) -> dict | None:
    """What changed from the reference to the main study in Diff-VQA's vocabulary: ``added``,
    ``missing`` (present on one side only), ``levels`` (present on both, another level word) and
    ``changes`` (each changed finding's presence on both sides, None where unmentioned); None when a
    finding that differs is uncertain on one side."""
    added: list[str] = []
    missing: list[str] = []
    levels: list[list[str]] = []
    changes: list[dict] = []
    for name, word in DIFF_NAMES.items():
        now, before = finding_state(main, name), finding_state(reference, name)
        if now != before:
            if "uncertain" in (now, before):
                return None
            (added if now == "present" else missing).append(word)
            changes.append({"finding": name, "main": _presence(main, name), "reference": _presence(reference, name)})
        elif now == "present" and name in LEVEL_WORDS:
            old, new = _level(reference.findings[name]), _level(main.findings[name])
            if old != new:
                levels.append([word, old, new])
                changes.append(
                    {
                        "finding": name,
                        "main_severity": main.findings[name].severity,
                        "reference_severity": reference.findings[name].severity,
                    }
                )
    return {"added": added, "missing": missing, "levels": levels, "changes": changes}


def _presence(study: Study, name: str) -> int | None:
    finding = study.findings.get(name)
    return None if finding is None else finding.presence


def _level(finding: Finding) -> str:
    return LEVEL_WORDS[finding.name][finding.severity or 1]


def _listed(words: list[str]) -> str:
    """``a``; ``a, and b``; ``a, b, and c``: the release's way of joining a finding list."""
    if len(words) == 1:
        return words[0]
    return " ".join(f"{word}," for word in words[:-1]) + f" and {words[-1]}"


def difference_answer(change: dict) -> str:
    """The difference answer in the release's sentences (each ends with ". ")."""
    text = "".join(f"the level of {name} has changed from {old} to {new}. " for name, old, new in change["levels"])
    if change["added"]:
        noun = "an additional finding" if len(change["added"]) == 1 else "additional findings"
        text += f"the main image has {noun} of {_listed(change['added'])} than the reference image. "
    if change["missing"]:
        noun = "finding" if len(change["missing"]) == 1 else "findings"
        text += f"the main image is missing the {noun} of {_listed(change['missing'])} than the reference image. "
    return text or "nothing has changed."


@dataclass
class DiffQuestion:
    question_type: str
    question: str
    answer: str
    facts: list[dict] = field(default_factory=list)


def _finding_fact(finding: Finding) -> dict:
    return {
        "finding": finding.name,
        "presence": finding.presence,
        "laterality": finding.laterality,
        "severity": finding.severity,
    }


def _abnormality_questions(study: Study) -> list[DiffQuestion]:
    """What abnormalities are seen? (when every mentioned abnormality is in the vocabulary and
    certain) and Is there evidence of any abnormalities? (yes from a present one, no from No Finding)."""
    questions = []
    mentioned = [f for f in study.findings.values() if f.name in ABNORMAL and f.presence != 0]
    if mentioned and all(f.name in DIFF_NAMES and f.presence == 1 for f in mentioned):
        names = [DIFF_NAMES[n] for n in DIFF_NAMES if n in study.findings and study.findings[n].presence == 1]
        questions.append(
            DiffQuestion(
                "abnormality",
                "what abnormalities are seen in this image?",
                ", ".join(names),
                [_finding_fact(f) for f in mentioned],
            )
        )
    present = [f for f in mentioned if f.presence == 1]
    if present:
        questions.append(
            DiffQuestion(
                "abnormality",
                "is there evidence of any abnormalities in this image?",
                "yes",
                [_finding_fact(present[0])],
            )
        )
    elif stated_labels(study.findings).get("No Finding") == 1:
        questions.append(
            DiffQuestion(
                "abnormality",
                "is there evidence of any abnormalities in this image?",
                "no",
                [{"finding": "No Finding", "presence": 1}],
            )
        )
    return questions


def _presence_questions(seed: int, study: Study) -> list[DiffQuestion]:
    """Is there X? yes for a present finding, no for a stated negative."""
    questions = []
    for name, word in DIFF_NAMES.items():
        finding = study.findings.get(name)
        if finding is None or finding.presence == -1:
            continue
        wording = choose(
            seed, ["is there evidence of {} in this image?", "is there {}?"], "diff-presence", study.study_id, name
        )
        questions.append(
            DiffQuestion(
                "presence", wording.format(word), "yes" if finding.presence else "no", [_finding_fact(finding)]
            )
        )
    return questions


def _view_questions(view: View) -> list[DiffQuestion]:
    fact = [{"view": view.position}]
    return [
        DiffQuestion("view", "which view is this image taken?", f"{view.position} view", fact),
        DiffQuestion("view", "is this PA view?", "yes" if view.position == "PA" else "no", fact),
        DiffQuestion("view", "is this AP view?", "yes" if view.position == "AP" else "no", fact),
    ]


def _location_questions(study: Study) -> list[DiffQuestion]:
    """Left or right? for a present finding on one stated side."""
    return [
        DiffQuestion(
            "location",
            f"is the {word} located on the left side or right side?",
            f"{study.findings[name].laterality} side",
            [_finding_fact(study.findings[name])],
        )
        for name, word in DIFF_NAMES.items()
        if name in study.findings
        and study.findings[name].presence == 1
        and study.findings[name].laterality in ("left", "right")
    ]


def _level_questions(study: Study) -> list[DiffQuestion]:
    """What level is X? for a present finding the report gives a level word."""
    return [
        DiffQuestion(
            "level",
            f"what level is the {DIFF_NAMES[name]}?",
            _level(study.findings[name]),
            [_finding_fact(study.findings[name])],
        )
        for name in LEVEL_WORDS
        if name in study.findings and study.findings[name].presence == 1
    ]


def main_questions(seed: int, study: Study, view: View) -> list[DiffQuestion]:
    """3 to 5 single-image questions about the main study (fewer when it offers fewer), at most one
    per question type, in the release's type order."""
    families = [
        _abnormality_questions(study),
        _presence_questions(seed, study),
        _view_questions(view),
        _location_questions(study),
        _level_questions(study),
    ]
    count = 3 + stable_int(seed, "diff-count", study.study_id) % 3
    available = [number for number, family in enumerate(families) if family]
    kept = set(ranked(seed, available, "diff-family", study.study_id)[:count])
    return [choose(seed, families[number], "diff-question", study.study_id, number) for number in sorted(kept)]


def diff_cohort(patients: list[Patient]) -> list[Patient]:
    """Patients with pairs: of those with two or more studies that are not ImaGenome gold patients (the
    build holds out a gold patient's train images with everything on them), every other one (the first,
    third, ...; the others keep generated difference questions, so a build has both)."""
    return [
        p
        for i, p in enumerate(patients)
        if not imagenome.is_gold(i) and sum(diff_image(s) is not None for s in p.studies) > 1
    ][::2]


def pairs_of(seed: int, patient: Patient) -> list[tuple[Study, Study, dict]]:
    """(main, reference, difference) for each later study: a hashed pick among the earlier studies
    whose difference is unambiguous (a main study without one gets no pair)."""
    studies = [s for s in patient.studies if diff_image(s) is not None]
    pairs = []
    for position, main in enumerate(studies[1:], start=1):
        for reference in ranked(seed, [s.study_id for s in studies[:position]], "diff-reference", main.study_id):
            reference_study = next(s for s in studies if s.study_id == reference)
            change = difference(main, reference_study)
            if change is not None:
                pairs.append((main, reference_study, change))
                break
    return pairs


def write_medical_diff_vqa(root: Path, patients: list[Patient], seed: int) -> dict:
    """Write the Medical-Diff-VQA folder; returns its truth section."""
    output.write_csv(root / STUDIES_FILE, mimic_all_frame(patients))
    cohort = [(patient, pairs) for patient in diff_cohort(patients) if (pairs := pairs_of(seed, patient))]
    if cohort:  # the first patient's first pair is written reversed (the v1.0.0 defect): the earlier
        first, pairs = cohort[0]  # study becomes the main one, and the difference is read that way round
        later, earlier, _ = pairs[0]
        reversed_change = cast(dict, difference(earlier, later))  # unambiguous both ways round, as the pair was
        cohort[0] = (first, [(earlier, later, reversed_change), *pairs[1:]])
    moved = split_differs_subject([patient for patient, _ in cohort[1:]])  # not the reversed pair's patient
    rows, truth_rows = [], []
    for patient, pairs in cohort:
        split = dataset_split(patient, DIFF_SPLIT, moved)
        for main, reference, change in pairs:
            for question in [*main_questions(seed, main, paired_image(main)), _difference_question(change)]:
                rows.append(
                    [
                        int(main.study_id),
                        int(patient.subject_id),
                        int(reference.study_id),
                        question.question_type,
                        question.question,
                        question.answer,
                        split,
                    ]
                )
                truth_rows.append(
                    _diff_truth(len(rows), patient, main, reference, question, split, patient.subject_id == moved)
                )
    output.write_csv(root / QUESTIONS_FILE, pd.DataFrame(rows, columns=QUESTION_COLUMNS))
    studies = {s.study_id: f"mimic/{image.image_id}" for p in patients for s in p.studies if (image := diff_image(s))}
    reversed_pairs = [_pair_truth(main, reference) for _, pairs in cohort[:1] for main, reference, _ in pairs[:1]]
    return {
        "questions": truth_rows,
        "reversed_pairs": reversed_pairs,
        "split_differs": [moved] if moved else [],
        "studies": studies,
    }


def _difference_question(change: dict) -> DiffQuestion:
    return DiffQuestion(
        "difference", "what has changed compared to the reference image?", difference_answer(change), [change]
    )


def _pair_truth(main: Study, reference: Study) -> dict:
    return {
        "study_id": main.study_id,
        "ref_id": reference.study_id,
        "image": f"mimic/{paired_image(main).image_id}",
        "reference_image": f"mimic/{paired_image(reference).image_id}",
    }


def _diff_truth(
    row: int, patient: Patient, main: Study, reference: Study, question: DiffQuestion, split: str, moved: bool
) -> dict:
    expected = None
    if moved:
        expected = {"stage": "split", "reason": "vqa-split-differs"}
    elif question.question_type == "difference" and main.order < reference.order:
        expected = {"stage": "tasks", "reason": "reference-not-earlier"}
    return {
        "file": QUESTIONS_FILE,
        "row": row,
        **_pair_truth(main, reference),
        "subject_id": patient.subject_id,
        "split": split,
        "mimic_split": patient.split,
        "question_type": question.question_type,
        "question": question.question,
        "answer": question.answer,
        "facts": question.facts,
        "expected": expected,
    }


# ------------------------------------------------------------------------------ both


def write(out: Path, roots: dict[str, str], patients: list[Patient], images: dict[str, dict], seed: int) -> dict:
    """Write both datasets under their roots; returns their truth sections keyed by source name."""
    return {
        "mimic_cxr_vqa": write_mimic_cxr_vqa(out / roots["mimic_cxr_vqa"], patients, images, seed),
        "mimic_diff_vqa": write_medical_diff_vqa(out / roots["mimic_diff_vqa"], patients, seed),
    }
