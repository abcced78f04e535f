"""Chest ImaGenome (silver dataset) writer (``docs/formats/chest-imagenome.md`` §1–5).

One ``scene_graph/<dicom_id>_SceneGraph.json`` per frontal MIMIC image, except every ninth one (the
real set also misses a few images); objects carry boxes in the 224 x 224 letterbox space and in
original pixels (``original_*``), attributes are parallel per phrase (phrases quote the report's
FINDINGS sentences), and relationships compare regions with the previous study's first frontal
image. ``splits/{train,valid,test}.csv`` start with an unnamed index column and follow
ImaGenome's own patient-wise partition (not MIMIC's); the gold patients (every fourth, starting
with patient 1) are listed in ``images_to_avoid.csv`` (no index column) and stay in their split
file too. Every third scene graph holds the real data's bad boxes: a negative ``original_x1``,
an ``original_y2`` beyond the image, a zero-width box. ``synsets`` and ids are synthetic codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipelines.synth import output, text
from pipelines.synth.anatomy import Box, FrontalSummary
from pipelines.synth.cases import Finding, Patient, Study, stable_int

SPLIT_CYCLE = ("train", "valid", "train", "test", "train", "train", "valid", "train", "train", "test")
SPLIT_COLUMNS = ["subject_id", "study_id", "dicom_id", "path", "ViewPosition"]
_ZONE_WORD = {"upper": "upper", "middle": "mid", "lower": "lower"}
_ATTRIBUTES = {
    "Pleural Effusion": "anatomicalfinding|{}|pleural effusion",
    "Pneumothorax": "anatomicalfinding|{}|pneumothorax",
    "Consolidation": "anatomicalfinding|{}|consolidation",
    "Lung Opacity": "anatomicalfinding|{}|lung opacity",
    "Pneumonia": "disease|{}|pneumonia",
    "Lung Lesion": "anatomicalfinding|{}|mass/nodule (not otherwise specified)",
    "Atelectasis": "anatomicalfinding|{}|atelectasis",
    "Edema": "anatomicalfinding|{}|pulmonary edema/hazy opacity",
    "Cardiomegaly": "anatomicalfinding|{}|enlarged cardiac silhouette",
    "Enlarged Cardiomediastinum": "anatomicalfinding|{}|mediastinal widening",
    "Pleural Other": "anatomicalfinding|{}|pleural/parenchymal scarring",
    "Fracture": "anatomicalfinding|{}|rib fracture",
}
_DEVICE_ATTRIBUTES = {
    "endotracheal tube": ("trachea", "tubesandlines|{}|endotracheal tube"),
    "nasogastric tube": ("abdomen", "tubesandlines|{}|enteric tube"),
    "right internal jugular line": ("svc", "tubesandlines|{}|ij line"),
    "pacemaker": ("cardiac silhouette", "device|{}|cardiac pacer and wires"),
}
_RELATIONS = {
    "worsened": ("Worsened", "worsened"),
    "new": ("Worsened", "worsened"),
    "improved": ("Improved", "improved"),
    "resolved": ("Improved", "improved"),
    "unchanged": ("No status change", "no change"),
}


def has_scene_graph(position: int) -> bool:
    """Whether the ``position``-th frontal MIMIC image (generation order) gets a scene graph."""
    return position % 9 != 8


def is_gold(patient_index: int) -> bool:
    return patient_index % 4 == 1


def synset(name: str) -> str:
    return f"C{stable_int('imagenome-synset', name) % 10_000_000:07d}"


def finding_regions(finding: Finding) -> list[str]:
    """The ImaGenome regions a finding is attributed to (the patient's sides)."""
    sides = (
        ["right", "left"] if finding.laterality is None or finding.laterality == "bilateral" else [finding.laterality]
    )
    zone = _ZONE_WORD.get(finding.zone or "lower", "lower")
    by_name = {
        "Pleural Effusion": [f"{s} costophrenic angle" for s in sides] + [f"{s} lower lung zone" for s in sides],
        "Pneumothorax": [f"{s} apical zone" for s in sides] + [f"{s} lung" for s in sides],
        "Consolidation": [f"{s} {zone} lung zone" for s in sides[:1]],
        "Lung Opacity": [f"{s} {zone} lung zone" for s in sides[:1]],
        "Pneumonia": [f"{s} {zone} lung zone" for s in sides[:1]],
        "Lung Lesion": [f"{s} {zone} lung zone" for s in sides[:1]],
        "Atelectasis": [f"{s} lower lung zone" for s in sides],
        "Edema": ["right lung", "left lung"],
        "Cardiomegaly": ["cardiac silhouette"],
        "Enlarged Cardiomediastinum": ["mediastinum", "upper mediastinum"],
        "Pleural Other": [f"{s} apical zone" for s in sides[:1]],
        "Fracture": [f"{s} lung" for s in sides[:1]],
    }
    if finding.name == "Support Devices":
        return [_DEVICE_ATTRIBUTES[finding.detail or "endotracheal tube"][0]]
    return by_name[finding.name]


def finding_attribute(finding: Finding) -> str:
    """The finding's attribute string, ``no`` when the case denies it (a removed device too)."""
    if finding.name == "Support Devices":
        template = _DEVICE_ATTRIBUTES[finding.detail or "endotracheal tube"][1]
    else:
        template = _ATTRIBUTES[finding.name]
    return template.format("no" if finding.presence == 0 else "yes")


def to_224(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """A box in the 224 x 224 space: centre-pad to a square, then scale."""
    side = max(width, height)
    scale = 224 / side
    pad_x, pad_y = (side - width) / 2, (side - height) / 2
    x1, y1, x2, y2 = box
    return (
        round((x1 + pad_x) * scale),
        round((y1 + pad_y) * scale),
        round((x2 + pad_x) * scale),
        round((y2 + pad_y) * scale),
    )


def _objects(dicom_id: str, summary: FrontalSummary, bad_boxes: bool) -> list[dict]:
    objects = []
    for name, box in summary.regions.items():
        x1, y1, x2, y2 = box
        if bad_boxes and name == "right clavicle":
            x1 = -1 - stable_int(dicom_id, name) % 20
        if bad_boxes and name == "abdomen":
            y2 = summary.height + 5 + stable_int(dicom_id, name) % 25
        if bad_boxes and name == "cavoatrial junction":
            x2 = x1
        a1, b1, a2, b2 = to_224((x1, y1, x2, y2), summary.width, summary.height)
        objects.append(
            {
                "object_id": f"{dicom_id}_{name}",
                "x1": a1,
                "y1": b1,
                "x2": a2,
                "y2": b2,
                "width": a2 - a1,
                "height": b2 - b1,
                "bbox_name": name,
                "synsets": [synset(name)],
                "name": name.capitalize(),
                "original_x1": x1,
                "original_y1": y1,
                "original_x2": x2,
                "original_y2": y2,
                "original_width": x2 - x1,
                "original_height": y2 - y1,
            }
        )
    return objects


def _cues(finding: Finding) -> tuple[list[str], list[str]]:
    """(comparison cues, temporal cues) of a finding's change."""
    if finding.change in ("worsened", "improved"):
        return [finding.change], []
    if finding.change == "unchanged":
        return ["no change"], ["unchanged"]
    if finding.change in ("new", "resolved"):
        return [], [finding.change]
    return [], []


def _attributes(dicom_id: str, study: Study, sentences: dict[str, str]) -> list[dict]:
    """One entry per region; ``attributes[i]`` and the cue lists belong to ``phrases[i]``."""
    by_region: dict[str, dict] = {}
    for number, (name, sentence) in enumerate(sentences.items()):
        finding = study.findings[name]
        attribute = finding_attribute(finding)
        flag = "nlp|yes|normal" if finding.presence == 0 else "nlp|yes|abnormal"
        comparison, temporal = _cues(finding)
        severity = (
            [{1: "mild", 2: "moderate", 3: "severe"}[finding.severity]] if finding.severity and finding.presence else []
        )
        for region in finding_regions(finding):
            entry = by_region.setdefault(
                region,
                {
                    region: True,
                    "bbox_name": region,
                    "synsets": [synset(region)],
                    "name": region.capitalize(),
                    "attributes": [],
                    "attributes_ids": [],
                    "phrases": [],
                    "phrase_IDs": [],
                    "sections": [],
                    "comparison_cues": [],
                    "temporal_cues": [],
                    "severity_cues": [],
                    "texture_cues": [],
                    "object_id": f"{dicom_id}_{region}",
                },
            )
            entry["attributes"].append([attribute, flag])
            entry["attributes_ids"].append(
                [f"CL{stable_int(attribute) % 1_000_000:06d}", f"CL{stable_int(flag) % 1_000_000:06d}"]
            )
            entry["phrases"].append(sentence)
            entry["phrase_IDs"].append(f"{study.study_id}|{number}")
            entry["sections"].append("finalreport")
            entry["comparison_cues"].append(comparison)
            entry["temporal_cues"].append(temporal)
            entry["severity_cues"].append(severity)
            entry["texture_cues"].append(["opacity"] if name in ("Consolidation", "Lung Opacity") else [])
    return [by_region[region] for region in sorted(by_region)]


def _relationships(dicom_id: str, previous: str | None, study: Study, sentences: dict[str, str]) -> list[dict]:
    if previous is None:
        return []
    relations = []
    for number, (name, sentence) in enumerate(sentences.items()):
        finding = study.findings[name]
        if finding.change not in _RELATIONS:
            continue
        predicate, relation = _RELATIONS[finding.change]
        for region in finding_regions(finding):
            relations.append(
                {
                    "relationship_id": f"{study.study_id}|{number}_{previous}_{dicom_id}_{region}",
                    "predicate": f"['{predicate}']",
                    "synsets": [synset(relation)],
                    "relationship_names": [f"comparison|yes|{relation}"],
                    "relationship_contexts": [1.0],
                    "phrase": sentence,
                    "attributes": [finding_attribute(finding)],
                    "bbox_name": region,
                    "subject_id": f"{dicom_id}_{region}",
                    "object_id": f"{previous}_{region}",
                }
            )
    return relations


def write(root: Path, patients: list[Patient], frontals: dict[str, FrontalSummary], seed: int) -> dict[str, dict]:
    """Write scene graphs and split files under ``root``; returns image key -> ImaGenome truth."""
    truth: dict[str, dict] = {}
    split_rows: dict[str, list] = {"train": [], "valid": [], "test": []}
    avoid_rows: list = []
    position = 0
    for patient_index, patient in enumerate(patients):
        split = SPLIT_CYCLE[patient_index % len(SPLIT_CYCLE)]
        gold = is_gold(patient_index)
        previous_image: str | None = None
        for study in patient.studies:
            sentences = text.findings_sentences(study, seed)
            first_frontal: str | None = None
            for view in study.views:
                if not view.frontal:
                    continue
                key = f"mimic/{view.image_id}"
                present = has_scene_graph(position)
                truth[key] = {
                    "imagenome": present,
                    "imagenome_gold": present and gold,
                    "imagenome_split": split if present else None,
                }
                if present:
                    first_frontal = first_frontal or view.image_id
                    summary = frontals[view.image_id]
                    date, time = study.date, study.time
                    graph = {
                        "image_id": view.image_id,
                        "viewpoint": view.position,
                        "patient_id": int(patient.subject_id),
                        "study_id": int(study.study_id),
                        "gender": patient.sex,
                        "age_decile": f"{patient.age // 10 * 10}-{patient.age // 10 * 10 + 10}",
                        "reason_for_exam": study.indication,
                        "StudyOrder": study.order,
                        "StudyDateTime": f"{date[:4]}-{date[4:6]}-{date[6:]} {time[:2]}:{time[2:4]}:{time[4:6]}",
                        "objects": _objects(view.image_id, summary, bad_boxes=position % 3 == 0),
                        "attributes": _attributes(view.image_id, study, sentences),
                        "relationships": _relationships(view.image_id, previous_image, study, sentences),
                    }
                    output.write_text(
                        root / "silver_dataset" / "scene_graph" / f"{view.image_id}_SceneGraph.json",
                        json.dumps(graph, indent=1),
                    )
                    path = (
                        f"files/p{patient.subject_id[:2]}/p{patient.subject_id}/s{study.study_id}/{view.image_id}.dcm"
                    )
                    row = [patient.subject_id, study.study_id, view.image_id, path, view.position]
                    split_rows[split].append(row)
                    if gold:
                        avoid_rows.append(row)
                position += 1
            previous_image = first_frontal or previous_image
    splits = root / "silver_dataset" / "splits"
    for split, rows in split_rows.items():
        output.write_csv(splits / f"{split}.csv", pd.DataFrame(rows, columns=SPLIT_COLUMNS), index=True)
    output.write_csv(splits / "images_to_avoid.csv", pd.DataFrame(avoid_rows, columns=SPLIT_COLUMNS))
    return truth
