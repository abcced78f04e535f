"""One taxonomy: every real source label string is mapped to CheXpert-14 or listed as unmapped with a
reason (manifests/labels.yaml), and every region / organ name of the annotation sources is placed."""

from __future__ import annotations

import copy
import csv
import gzip
import io

import pytest
import realdata

import manifests
from transforms.labels import anatomy, label_rules, parse_label_rules
from transforms.phrases import padchest_mentions
from transforms.sources import chexmask, padchest, vindr

PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"

# docs/formats/chest-imagenome.md §4 (36 bbox names) and §5 (attribute names per category).
IMAGENOME_BBOX_NAMES = (
    "right lung",
    "right upper lung zone",
    "right mid lung zone",
    "right lower lung zone",
    "right hilar structures",
    "right apical zone",
    "right costophrenic angle",
    "right cardiophrenic angle",
    "right hemidiaphragm",
    "left lung",
    "left upper lung zone",
    "left mid lung zone",
    "left lower lung zone",
    "left hilar structures",
    "left apical zone",
    "left costophrenic angle",
    "left hemidiaphragm",
    "trachea",
    "spine",
    "right clavicle",
    "left clavicle",
    "aortic arch",
    "mediastinum",
    "upper mediastinum",
    "svc",
    "cardiac silhouette",
    "left cardiac silhouette",
    "right cardiac silhouette",
    "cavoatrial junction",
    "right atrium",
    "descending aorta",
    "carina",
    "left upper abdomen",
    "right upper abdomen",
    "abdomen",
    "left cardiophrenic angle",
)
IMAGENOME_ATTRIBUTES = {
    "anatomicalfinding": (
        "lung opacity",
        "airspace opacity",
        "consolidation",
        "infiltration",
        "atelectasis",
        "linear/patchy atelectasis",
        "lobar/segmental collapse",
        "pulmonary edema/hazy opacity",
        "vascular congestion",
        "vascular redistribution",
        "increased reticular markings/ild pattern",
        "pleural effusion",
        "costophrenic angle blunting",
        "pleural/parenchymal scarring",
        "bronchiectasis",
        "enlarged cardiac silhouette",
        "mediastinal displacement",
        "mediastinal widening",
        "enlarged hilum",
        "tortuous aorta",
        "vascular calcification",
        "pneumomediastinum",
        "pneumothorax",
        "hydropneumothorax",
        "lung lesion",
        "mass/nodule (not otherwise specified)",
        "multiple masses/nodules",
        "calcified nodule",
        "superior mediastinal mass/enlargement",
        "rib fracture",
        "clavicle fracture",
        "spinal fracture",
        "hyperaeration",
        "cyst/bullae",
        "elevated hemidiaphragm",
        "diaphragmatic eventration (benign)",
        "sub-diaphragmatic air",
        "subcutaneous air",
        "hernia",
        "scoliosis",
        "spinal degenerative changes",
        "shoulder osteoarthritis",
        "bone lesion",
    ),
    "disease": (
        "pneumonia",
        "fluid overload/heart failure",
        "copd/emphysema",
        "granulomatous disease",
        "interstitial lung disease",
        "goiter",
        "lung cancer",
        "aspiration",
        "alveolar hemorrhage",
        "pericardial effusion",
    ),
    "technicalassessment": ("low lung volumes", "rotated", "artifact", "breast/nipple shadows", "skin fold"),
    "tubesandlines": (
        "chest tube",
        "mediastinal drain",
        "pigtail catheter",
        "endotracheal tube",
        "tracheostomy tube",
        "picc",
        "ij line",
        "chest port",
        "subclavian line",
        "swan-ganz catheter",
        "intra-aortic balloon pump",
        "enteric tube",
    ),
    "device": ("sternotomy wires", "cabg grafts", "aortic graft/repair", "prosthetic valve", "cardiac pacer and wires"),
    "texture": ("opacity", "alveolar", "interstitial", "calcified", "lucency"),
    "nlp": ("abnormal", "normal"),
}


def undecided(system: str, names) -> list[str]:
    """Names the system neither maps nor lists (not_mapped with a reason, or no_information)."""
    rules = label_rules().systems[system]
    known = set(rules.targets) | set(rules.not_mapped) | rules.no_information
    return sorted(set(names) - known)


@pytest.fixture(scope="module")
def padchest_rows(tmp_path_factory):
    path = realdata.wheel_member(PADCHEST_CSV, tmp_path_factory.mktemp("padchest") / PADCHEST_CSV)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return [
            (row["Labels"], row["LabelsLocalizationsBySentence"]) for row in csv.DictReader(io.StringIO(handle.read()))
        ]


def test_every_real_padchest_label_is_mapped_or_listed(padchest_rows):
    labels = {label for cell, _ in padchest_rows if not padchest.is_null(cell) for label in padchest.parse_labels(cell)}
    assert len(labels) == 193  # the 194 distinct strings of docs/language.md §7 less the empty one
    assert undecided("padchest-labels", labels) == []


def test_every_real_padchest_sentence_gives_mentions_without_error(padchest_rows):
    """Sentence-level labels (with side suffixes) and every localization are known to padchest_mentions."""
    mentions = 0
    for _, cell in padchest_rows:
        if not padchest.is_null(cell):
            mentions += len(padchest_mentions(padchest.parse_by_sentence(cell)))
    assert mentions > 100_000


def test_all_28_vindr_labels_are_mapped_or_listed():
    assert len(vindr.IMAGE_LABELS) == 28
    spellings = set(vindr.IMAGE_LABELS) | set(vindr.LABEL_SPELLINGS)
    assert undecided("vindr-image-labels", spellings) == []
    assert undecided("vindr-annotations", [*vindr.LOCAL_LABELS, "No finding"]) == []


def test_imagenome_attributes_are_mapped_or_listed():
    names = [name for names in IMAGENOME_ATTRIBUTES.values() for name in names]
    assert undecided("imagenome-attributes", names) == []
    targets = label_rules().systems["imagenome-attributes"].targets
    assert all(targets[name] == (("Support Devices", 1),) for name in IMAGENOME_ATTRIBUTES["tubesandlines"])


def test_not_mapped_needs_a_reason():
    document = copy.deepcopy(manifests.load("labels.yaml"))
    document["systems"]["padchest-labels"]["not_mapped"]["scoliosis"] = ""
    with pytest.raises(ValueError, match=r"padchest-labels.not_mapped: no reason given for \['scoliosis'\]"):
        parse_label_rules(document)
    document["systems"]["padchest-labels"]["not_mapped"] = ["scoliosis"]
    with pytest.raises(ValueError, match="expected a mapping of raw name -> reason"):
        parse_label_rules(document)


def test_every_region_and_organ_is_placed():
    regions = anatomy("imagenome-regions")
    assert set(IMAGENOME_BBOX_NAMES) <= set(regions)
    assert all(
        region.laterality == region.name.split()[0]
        for region in regions.values()
        if region.name.split()[0] in ("left", "right")
    )
    assert set(anatomy("chexmask-organs")) == set(chexmask.ORGAN_COLUMNS.values())
    with pytest.raises(KeyError, match="known"):
        anatomy("vindr-regions")
