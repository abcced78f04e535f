"""The synthetic MIMIC-CXR-VQA and Medical-Diff-VQA files (pipelines/synth/vqa_datasets.py): they parse
in the documented layouts (docs/formats/mimic-cxr-vqa.md, medical-diff-vqa.md), come out byte-identical
for the same (studies, seed), every answer is true to the case truth, and the planted traps (a
patient in another split, a reversed pair) are there and recorded.

The answers are checked against what the corpus itself states: the scene graph files for MIMIC-CXR-VQA,
the truth file's findings for Medical-Diff-VQA, with this module's own readings of both.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from string import Template

import pandas as pd
import pytest

from pipelines.synth import generate

STUDIES, SEED = 16, 0
VQA_KEYS = [
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
]
SKELETON_KEYS = [
    "split",
    "idx",
    "image_id",
    "question",
    "content_type",
    "semantic_type",
    "template",
    "template_program",
    "template_arguments",
]
ARGUMENT_KINDS = ["object", "attribute", "category", "viewpos", "gender"]
ABNORMALITY = {"anatomicalfinding", "disease", "device", "tubesandlines"}
CONTENT = {
    "program_2": ("attribute", "verify"),
    "program_3": ("abnormality", "verify"),
    "program_8": ("abnormality", "query"),
    "program_31": ("anatomy", "query"),
    "program_41": ("plane", "verify"),
    "program_42": ("plane", "choose"),
}
IMAGENOME_FINDING = {
    "pleural effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "lung opacity": "Lung Opacity",
    "pneumonia": "Pneumonia",
    "mass/nodule (not otherwise specified)": "Lung Lesion",
    "atelectasis": "Atelectasis",
    "pulmonary edema/hazy opacity": "Edema",
    "enlarged cardiac silhouette": "Cardiomegaly",
    "mediastinal widening": "Enlarged Cardiomediastinum",
    "pleural/parenchymal scarring": "Pleural Other",
    "rib fracture": "Fracture",
    "endotracheal tube": "Support Devices",
    "enteric tube": "Support Devices",
    "ij line": "Support Devices",
    "cardiac pacer and wires": "Support Devices",
}
"""An ImaGenome attribute of the synthetic scene graphs -> the CheXpert finding it states."""

PAIR_HEADER = "study_id,subject_id,ref_id,question_type,question,answer,split"
MIMIC_ALL_HEADER = (
    "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,"
    "Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
    "Pneumothorax,Support Devices,dicom_id,view,split,study_date,study_order"
)
DIFF_FINDING = {
    "pleural effusion": "Pleural Effusion",
    "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "edema": "Edema",
    "pneumothorax": "Pneumothorax",
    "lung opacity": "Lung Opacity",
    "pneumonia": "Pneumonia",
    "consolidation": "Consolidation",
    "fracture": "Fracture",
    "pleural thickening": "Pleural Other",
}
LEVEL = {
    "Pleural Effusion": "small moderate large",
    "Pneumothorax": "small moderate large",
    "Cardiomegaly": "mild moderate severe",
    "Atelectasis": "mild moderate severe",
    "Edema": "mild moderate severe",
}
ABNORMAL = {
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("vqa"), studies=STUDIES, seed=SEED)


@pytest.fixture(scope="module")
def truth(corpus) -> dict:
    return json.loads((corpus / "SYNTHETIC_TRUTH.json").read_text())


@pytest.fixture(scope="module")
def vqa_files(corpus) -> dict[str, list[dict]]:
    folder = corpus / "mimic-cxr-vqa" / "dataset"
    return {name: json.loads((folder / f"{name}.json").read_text()) for name in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def pair_rows(corpus) -> list[dict]:
    return pd.read_csv(
        corpus / "medical-diff-vqa" / "mimic_pair_questions.csv", dtype=str, keep_default_na=False
    ).to_dict("records")


def checksums(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def mimic_images(truth: dict) -> dict[str, dict]:
    return {key: entry for key, entry in truth["images"].items() if entry["source"] == "mimic"}


# ------------------------------------------------------------------------------------ both


def test_same_studies_and_seed_give_the_same_bytes(corpus, truth, tmp_path):
    again = generate(tmp_path / "again", studies=STUDIES, seed=SEED)
    for folder in ("mimic-cxr-vqa", "medical-diff-vqa"):
        assert checksums(corpus / folder) == checksums(again / folder)
    assert (corpus / "SYNTHETIC_TRUTH.json").read_bytes() == (again / "SYNTHETIC_TRUTH.json").read_bytes()


def test_build_yaml_enables_both_datasets(corpus):
    text = (corpus / "build.yaml").read_text()
    assert "mimic_cxr_vqa:\n    root: mimic-cxr-vqa" in text and "mimic_diff_vqa:\n    root: medical-diff-vqa" in text


# ------------------------------------------------------------------------------------ MIMIC-CXR-VQA


def test_vqa_files_are_json_arrays_in_the_builder_layout(corpus, vqa_files):
    folder = corpus / "mimic-cxr-vqa" / "dataset"
    assert sorted(p.name for p in folder.iterdir()) == [
        "_test.json",
        "_train_part1.json",
        "_train_part2.json",
        "_valid.json",
        "ans2idx.json",
        "test.json",
        "train.json",
        "valid.json",
    ]
    answers = set()
    for name, rows in vqa_files.items():
        assert (folder / f"{name}.json").read_text() == json.dumps(rows, indent=4)  # the builder's indent=4
        for position, row in enumerate(rows):
            assert list(row) == VQA_KEYS and row["split"] == name and row["idx"] == position
            assert row["subject_id"].isdigit() and row["study_id"].isdigit()
            assert row["image_path"] == (
                f"p{row['subject_id'][:2]}/p{row['subject_id']}/s{row['study_id']}/{row['image_id']}.jpg"
            )
            assert (row["content_type"], row["semantic_type"]) == CONTENT[row["template_program"]]
            arguments = row["template_arguments"]
            assert list(arguments) == ARGUMENT_KINDS
            assert all(list(values) == [str(i) for i in range(len(values))] for values in arguments.values())
            single = {kind: values["0"] for kind, values in arguments.items() if len(values) == 1}
            assert Template(row["template"]).substitute(single) == row["question"]
            assert row["answer"] == sorted(row["answer"]) and all(a == a.lower() for a in row["answer"])
            answers.update(row["answer"])
    assert sum(map(len, vqa_files.values())) >= 20
    assert json.loads((folder / "ans2idx.json").read_text()) == {a: i for i, a in enumerate(sorted(answers))}
    skeleton = [
        *json.loads((folder / "_train_part1.json").read_text()),
        *json.loads((folder / "_train_part2.json").read_text()),
    ]
    assert skeleton == [{key: row[key] for key in SKELETON_KEYS} for row in vqa_files["train"]]
    assert json.loads((folder / "_valid.json").read_text()) == [
        {key: row[key] for key in SKELETON_KEYS} for row in vqa_files["valid"]
    ]


def test_vqa_cohort_is_one_frontal_scene_graph_image_per_study(truth, vqa_files):
    images = mimic_images(truth)
    by_study: dict[str, set[str]] = defaultdict(set)
    for row in (row for rows in vqa_files.values() for row in rows):
        entry = images[f"mimic/{row['image_id']}"]
        assert (entry["subject_id"], entry["study_id"]) == (row["subject_id"], row["study_id"])
        assert entry["view"] in ("PA", "AP") and entry["imagenome"]
        frontal = sorted(
            k.split("/")[1] for k, e in images.items() if e["study_id"] == row["study_id"] and e["view"] in ("PA", "AP")
        )
        assert row["image_id"] == frontal[0]  # the study's first frontal image by dicom_id
        by_study[row["study_id"]].add(row["image_id"])
    assert all(len(ids) == 1 for ids in by_study.values())
    questioned = {row["subject_id"] for rows in vqa_files.values() for row in rows}
    assert questioned < {e["subject_id"] for e in images.values()}  # only part of the patients
    asked = {f"mimic/{row['image_id']}" for rows in vqa_files.values() for row in rows}
    assert {key for key, e in images.items() if e["imagenome"]} - asked  # scene-graph images without questions


def scene_graph_statements(corpus: Path, image_id: str) -> dict[tuple[str, str], set[str]]:
    """(region, attribute) -> the polarities the image's scene graph states, with categories kept apart."""
    path = corpus / "chest-imagenome" / "silver_dataset" / "scene_graph" / f"{image_id}_SceneGraph.json"
    stated: dict[tuple[str, str], set[str]] = defaultdict(set)
    for entry in json.loads(path.read_text())["attributes"]:
        for attributes in entry["attributes"]:
            for text in attributes:
                category, polarity, name = text.split("|", 2)
                if category in ABNORMALITY:
                    stated[(entry["bbox_name"], name)].add(polarity)
    return stated


def certain(entry: dict, attribute: str) -> bool:
    """The finding behind an attribute is stated present (1) or absent (0), not uncertain."""
    return entry["findings"].get(IMAGENOME_FINDING[attribute]) in (0, 1)


def expected_vqa_answer(row: dict, stated: dict, entry: dict) -> list[str] | None:
    """The answer the scene graph gives the row's program; None when it cannot say."""
    arguments = {kind: list(values.values()) for kind, values in row["template_arguments"].items()}
    program = row["template_program"]
    if program in ("program_41", "program_42"):
        if program == "program_42":
            return [entry["view"].lower()]
        return ["yes" if arguments["viewpos"] == [entry["view"]] else "no"]
    if program == "program_2":
        (region,), (attribute,) = arguments["object"], arguments["attribute"]
        polarities = stated.get((region, attribute), set())
        if polarities == {"yes"} and entry["findings"][IMAGENOME_FINDING[attribute]] == 1:
            return ["yes"]
        return ["no"] if polarities == {"no"} else None
    if program in ("program_3", "program_8"):
        (region,) = arguments["object"]
        own = {name: polarities for (where, name), polarities in stated.items() if where == region}
        present = sorted(name for name, polarities in own.items() if "yes" in polarities)
        if program == "program_8":
            return present if own and all(certain(entry, name) for name in own) else None
        if any(entry["findings"][IMAGENOME_FINDING[name]] == 1 for name in present):
            return ["yes"]
        return ["no"] if own and all(polarities == {"no"} for polarities in own.values()) else None
    if program == "program_31":
        (attribute,) = arguments["attribute"]
        if entry["findings"].get(IMAGENOME_FINDING[attribute]) != 1:
            return None
        return sorted(
            region for (region, name), polarities in stated.items() if name == attribute and "yes" in polarities
        )
    raise AssertionError(f"unexpected program {program}")


def test_every_vqa_answer_is_what_the_scene_graph_states(corpus, truth, vqa_files):
    images = mimic_images(truth)
    seen = Counter()
    for row in (row for rows in vqa_files.values() for row in rows):
        stated = scene_graph_statements(corpus, row["image_id"])
        assert row["answer"] == expected_vqa_answer(row, stated, images[f"mimic/{row['image_id']}"]), row
        seen[(row["template_program"], "empty" if not row["answer"] else row["answer"][0])] += 1
    assert seen[("program_2", "yes")] and seen[("program_2", "no")] and seen[("program_8", "empty")]


def test_vqa_truth_lists_every_question_and_its_expected_filter(truth, vqa_files):
    questions = truth["mimic_cxr_vqa"]["questions"]
    rows = {(f"dataset/{name}.json", row["idx"]): row for name, rows in vqa_files.items() for row in rows}
    assert sorted(rows) == sorted((q["file"], q["idx"]) for q in questions)
    moved = set(truth["mimic_cxr_vqa"]["split_differs"])
    agreed = {"train": "train", "validate": "valid", "test": "test"}
    for question in questions:
        row = rows[(question["file"], question["idx"])]
        assert question["image"] == f"mimic/{row['image_id']}" and question["answer"] == row["answer"]
        assert question["split"] == row["split"] and question["template_program"] == row["template_program"]
        mimic_split = truth["images"][question["image"]]["split"]
        assert question["mimic_split"] == mimic_split
        assert (row["split"] != agreed[mimic_split]) == (row["subject_id"] in moved)
        expected = question["expected"]
        if row["subject_id"] in moved:
            assert expected == {"stage": "split", "reason": "vqa-split-differs"}
        elif not row["answer"]:
            assert expected == {"stage": "tasks", "reason": "empty-answer"}
        else:
            assert expected is None
    assert len(moved) == 1 and sum(q["expected"] is None for q in questions) >= 10


# ------------------------------------------------------------------------------------ Medical-Diff-VQA


def test_diff_files_have_the_release_headers_and_one_mimic_all_row_per_study(corpus, truth):
    folder = corpus / "medical-diff-vqa"
    assert sorted(p.name for p in folder.iterdir()) == ["mimic_all.csv", "mimic_pair_questions.csv"]
    assert (folder / "mimic_pair_questions.csv").read_text().split("\n")[0] == PAIR_HEADER
    assert (folder / "mimic_all.csv").read_text().split("\n")[0] == MIMIC_ALL_HEADER
    studies = pd.read_csv(folder / "mimic_all.csv", dtype=str, keep_default_na=False)
    images = mimic_images(truth)
    assert studies["study_id"].is_unique and set(studies["study_id"]) == {e["study_id"] for e in images.values()}
    with gzip.open(corpus / "mimic-cxr" / "mimic-cxr-2.0.0-metadata.csv.gz", "rt") as stream:
        metadata = pd.read_csv(stream, dtype=str, keep_default_na=False)
    with gzip.open(corpus / "mimic-cxr" / "mimic-cxr-2.0.0-chexpert.csv.gz", "rt") as stream:
        labels = pd.read_csv(stream, dtype=str, keep_default_na=False).set_index("study_id")
    meanings = {"PA": "postero-anterior", "AP": "antero-posterior"}
    for row in studies.to_dict("records"):
        frontal = metadata[(metadata["study_id"] == row["study_id"]) & metadata["ViewPosition"].isin(["PA", "AP"])]
        assert row["dicom_id"] == frontal["dicom_id"].iloc[0]  # the first frontal row, in metadata order
        entry = images[f"mimic/{row['dicom_id']}"]
        assert row["view"] == meanings[entry["view"]] and row["split"] == entry["split"]
        assert (row["subject_id"], row["study_date"], row["study_order"]) == (
            entry["subject_id"],
            entry["study_date"],
            str(entry["study_order"]),
        )
        assert {k: row[k] for k in labels.columns if k != "subject_id"} == {
            k: v for k, v in labels.loc[row["study_id"]].items() if k != "subject_id"
        }


def study_entries(truth: dict) -> dict[str, dict]:
    """study_id -> the truth entry of the image mimic_all gives it."""
    return {study: truth["images"][key] for study, key in truth["mimic_diff_vqa"]["studies"].items()}


def state(entry: dict, name: str) -> str:
    presence = entry["findings"].get(name)
    return {1: "present", -1: "uncertain"}.get(presence, "absent")


def detail(entry: dict, name: str) -> dict:
    return entry["finding_details"][name]


def check_single_image_answer(row: dict, entry: dict) -> None:
    """The row's answer follows from the main study's stated findings (or its view)."""
    question, answer, kind = row["question"], row["answer"], row["question_type"]
    named = [name for word, name in DIFF_FINDING.items() if re.search(rf"\b{word}\b", question)]
    if kind == "view":
        view = entry["view"]
        expected = {
            "which view is this image taken?": f"{view} view",
            "is this PA view?": "yes" if view == "PA" else "no",
            "is this AP view?": "yes" if view == "AP" else "no",
        }[question]
        assert answer == expected
    elif kind == "presence":
        (name,) = named
        assert entry["findings"][name] == {"yes": 1, "no": 0}[answer]
    elif kind == "location":
        (name,) = named
        assert entry["findings"][name] == 1 and answer == f"{detail(entry, name)['laterality']} side"
    elif kind == "level":
        (name,) = named
        assert entry["findings"][name] == 1 and answer == LEVEL[name].split()[detail(entry, name)["severity"] - 1]
    elif question == "is there evidence of any abnormalities in this image?":
        present = any(entry["findings"].get(name) == 1 for name in ABNORMAL)
        assert answer == ("yes" if present else "no") and (present or entry["findings"].get("No Finding") == 1)
    else:
        assert kind == "abnormality" and question == "what abnormalities are seen in this image?"
        mentioned = {name for name in ABNORMAL if entry["findings"].get(name, 0) != 0}
        listed = {DIFF_FINDING[word] for word in answer.split(", ")}
        assert listed == mentioned and all(entry["findings"][name] == 1 for name in listed)


DIFFERENCE = re.compile(
    r"the level of (?P<level>[a-z ]+) has changed from (?P<old>\w+) to (?P<new>\w+)\. "
    r"|the main image has (?:an additional finding|additional findings) of (?P<added>[a-z ,]+)"
    r" than the reference image\. "
    r"|the main image is missing the findings? of (?P<missing>[a-z ,]+) than the reference image\. "
)


def words(listing: str) -> list[str]:
    return [word.strip() for word in re.split(r",? and |, ", listing)]


def check_difference_answer(answer: str, main: dict, reference: dict) -> None:
    """Every stated change holds, and every change in Diff-VQA's vocabulary is stated."""
    if answer == "nothing has changed.":
        found = {"added": [], "missing": [], "levels": []}
    else:
        parts = list(DIFFERENCE.finditer(answer))
        assert "".join(part.group(0) for part in parts) == answer, answer
        found = {
            "added": [w for p in parts if p["added"] for w in words(p["added"])],
            "missing": [w for p in parts if p["missing"] for w in words(p["missing"])],
            "levels": [(p["level"], p["old"], p["new"]) for p in parts if p["level"]],
        }
    for word, name in DIFF_FINDING.items():
        now, before = state(main, name), state(reference, name)
        if now != before:
            assert "uncertain" not in (now, before)
            assert word in (found["added"] if now == "present" else found["missing"]), (word, answer)
        else:
            assert word not in found["added"] + found["missing"]
        if now == before == "present" and name in LEVEL:
            scale = LEVEL[name].split()
            old, new = scale[detail(reference, name)["severity"] - 1], scale[detail(main, name)["severity"] - 1]
            assert ((word, old, new) in found["levels"]) == (old != new)


def test_every_diff_answer_is_true_to_the_stated_findings(truth, pair_rows):
    entries = study_entries(truth)
    kinds = Counter()
    for row in pair_rows:
        main, reference = entries[row["study_id"]], entries[row["ref_id"]]
        assert main["subject_id"] == reference["subject_id"] == row["subject_id"]
        if row["question_type"] == "difference":
            check_difference_answer(row["answer"], main, reference)
        else:
            check_single_image_answer(row, main)
        kinds[row["question_type"]] += 1
    assert set(kinds) >= {"abnormality", "presence", "view", "location", "level", "difference"}


def test_diff_pairs_compare_with_an_earlier_study_except_the_reversed_one(truth, pair_rows):
    entries = study_entries(truth)
    pairs: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for row in pair_rows:
        pairs[(row["study_id"], row["ref_id"])][row["question_type"]] += 1
    reversed_pairs = [pair for pair in pairs if entries[pair[0]]["study_order"] < entries[pair[1]]["study_order"]]
    assert reversed_pairs == [(p["study_id"], p["ref_id"]) for p in truth["mimic_diff_vqa"]["reversed_pairs"]]
    assert len(reversed_pairs) == 1 and len(pairs) >= 3
    for kinds in pairs.values():
        assert kinds["difference"] == 1 and 1 <= sum(kinds.values()) - 1 <= 5
        assert all(count == 1 for count in kinds.values())  # at most one question of each type per pair
    studies = {row["study_id"] for row in pair_rows}
    assert len({e["subject_id"] for e in entries.values()}) > len({entries[s]["subject_id"] for s in studies})


def test_diff_truth_lists_every_row_and_its_expected_filter(truth, pair_rows):
    section = truth["mimic_diff_vqa"]
    questions = section["questions"]
    assert [q["row"] for q in questions] == list(range(1, len(pair_rows) + 1))
    moved = set(section["split_differs"])
    reversed_pairs = {(p["study_id"], p["ref_id"]) for p in section["reversed_pairs"]}
    agreed = {"train": "train", "validate": "val", "test": "test"}
    for question, row in zip(questions, pair_rows):
        assert (question["study_id"], question["ref_id"], question["split"]) == (
            row["study_id"],
            row["ref_id"],
            row["split"],
        )
        assert (question["question_type"], question["question"], question["answer"]) == (
            row["question_type"],
            row["question"],
            row["answer"],
        )
        assert question["image"] == section["studies"][row["study_id"]]
        assert question["reference_image"] == section["studies"][row["ref_id"]]
        assert (row["split"] != agreed[question["mimic_split"]]) == (row["subject_id"] in moved)
        if row["subject_id"] in moved:
            assert question["expected"] == {"stage": "split", "reason": "vqa-split-differs"}
        elif (row["study_id"], row["ref_id"]) in reversed_pairs and row["question_type"] == "difference":
            assert question["expected"] == {"stage": "tasks", "reason": "reference-not-earlier"}
        else:
            assert question["expected"] is None
    assert len(moved) == 1 and not moved & {
        row["subject_id"] for row in pair_rows if (row["study_id"], row["ref_id"]) in reversed_pairs
    }
