"""Chest ImaGenome reader on small native trees: scene graphs, split CSVs with their index column, gold list."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from plans import assert_beam_matches_serial
from realdata import DATA

from pipelines.synth import imagenome as synth_imagenome
from pipelines.synth import mimic as synth_mimic
from pipelines.synth.cases import make_mimic_patients
from schemas.records import AnnotationRecord, Reject
from transforms import io
from transforms.sources import imagenome

SCENE_GRAPH_EXAMPLE = DATA / "chest_imagenome" / "scene_graph_example.json"  # ours, see its SOURCES.md

SPLIT_HEADER = ",subject_id,study_id,dicom_id,path,ViewPosition"  # pandas index column first, unnamed


def fake_dicom_id(name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def split_line(index: int | None, dicom_id: str, subject: str = "10000001", study: str = "50000001") -> str:
    path = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.dcm"
    prefix = "" if index is None else f"{index},"
    return f"{prefix}{subject},{study},{dicom_id},{path},AP"


def write_splits(root: Path, splits: dict[str, list[str]], avoid: list[str], avoid_index: bool = False) -> None:
    """The four split CSVs as ImaGenome ships them (``images_to_avoid`` optionally with the index too)."""
    folder = root / "silver_dataset" / "splits"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid", "test"):
        lines = [SPLIT_HEADER] + [split_line(i, d) for i, d in enumerate(splits.get(name, []))]
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    header = SPLIT_HEADER if avoid_index else SPLIT_HEADER[1:]
    lines = [header] + [split_line(i if avoid_index else None, d) for i, d in enumerate(avoid)]
    (folder / "images_to_avoid.csv").write_text("\n".join(lines) + "\n")


def scene_object(dicom_id: str, name: str, box: tuple) -> dict:
    x1, y1, x2, y2 = box
    return {
        "object_id": f"{dicom_id}_{name}",
        "x1": 10,
        "y1": 10,
        "x2": 100,
        "y2": 100,
        "width": 90,
        "height": 90,
        "bbox_name": name,
        "synsets": ["C0000000"],
        "name": name.capitalize(),
        "original_x1": x1,
        "original_y1": y1,
        "original_x2": x2,
        "original_y2": y2,
        "original_width": 100,
        "original_height": 100,
    }


def attribute_entry(
    dicom_id: str,
    name: str,
    phrases: list[str],
    attributes: list[list[str]],
    temporal: list[list[str]] | None = None,
    flag: bool = True,
) -> dict:
    n = len(phrases)
    return {
        name: flag,
        "bbox_name": name,
        "synsets": ["C0000000"],
        "name": name.capitalize(),
        "attributes": attributes,
        "attributes_ids": [["CL0"] * len(a) for a in attributes],
        "phrases": phrases,
        "phrase_IDs": [f"50000001|{i}" for i in range(n)],
        "sections": ["finalreport"] * n,
        "comparison_cues": [[] for _ in range(n)],
        "temporal_cues": temporal or [[] for _ in range(n)],
        "severity_cues": [[] for _ in range(n)],
        "texture_cues": [[] for _ in range(n)],
        "object_id": f"{dicom_id}_{name}",
    }


def scene_graph(dicom_id: str, objects=(), attributes=(), relationships=(), image_id: str | None = None) -> dict:
    return {
        "image_id": image_id if image_id is not None else dicom_id,
        "viewpoint": "AP",
        "patient_id": 10000001,
        "study_id": 50000001,
        "gender": "F",
        "age_decile": "60-70",
        "reason_for_exam": "___F with dyspnea",
        "StudyOrder": 2,
        "StudyDateTime": "2150-01-02 03:04:05",
        "objects": list(objects),
        "attributes": list(attributes),
        "relationships": list(relationships),
    }


def write_graph(root: Path, dicom_id: str, content: dict | str | bytes, nested: bool = False) -> Path:
    folder = root / "silver_dataset" / "scene_graph"
    if nested:
        folder = folder / "scene_graph"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dicom_id}_SceneGraph.json"
    if isinstance(content, dict):
        content = json.dumps(content, indent=2)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def read_all(root: Path, image_sources=("mimic", "vindr", "siim", "padchest")) -> list:
    return list(imagenome.read(str(root), image_sources))


def record_level(outputs: list) -> list:
    return [o for o in outputs if not (isinstance(o, Reject) and o.level == "item")]


CURRENT = fake_dicom_id("current")
PRIOR = fake_dicom_id("prior")


def full_graph() -> dict:
    return scene_graph(
        CURRENT,
        objects=[
            scene_object(CURRENT, "right lung", (520, 401, 1245, 1905)),
            scene_object(CURRENT, "left clavicle", (-12, 30, 400, 3100)),  # negative and past the bottom
            scene_object(CURRENT, "carina", (900, 700, 900, 760)),  # zero width
        ],
        attributes=[
            attribute_entry(
                CURRENT,
                "right lung",
                ["New right lower lobe opacity.", "No pneumothorax."],
                [["anatomicalfinding|yes|lung opacity", "nlp|yes|abnormal"], ["anatomicalfinding|no|pneumothorax"]],
                temporal=[["new"], []],
            ),
        ],
        relationships=[
            {
                "relationship_id": "r1",
                "predicate": "['Worsened']",
                "synsets": ["C1457868"],
                "relationship_names": ["comparison|yes|worsened"],
                "relationship_contexts": [1.0],
                "phrase": "New right lower lobe opacity.",
                "attributes": ["anatomicalfinding|yes|lung opacity"],
                "bbox_name": "right lung",
                "subject_id": f"{CURRENT}_right lung",
                "object_id": f"{PRIOR}_right lung",
            }
        ],
    )


def test_scene_graph_becomes_one_record_with_boxes_kept_as_stated(tmp_path):
    write_splits(tmp_path, {"train": [CURRENT]}, avoid=[])
    write_graph(tmp_path, CURRENT, full_graph())
    (record,) = read_all(tmp_path)
    assert isinstance(record, AnnotationRecord)
    assert (record.target_key, record.source, record.native_id) == (f"mimic/{CURRENT}", "imagenome", CURRENT)
    assert [(b.label, b.x1, b.y1, b.x2, b.y2, b.origin) for b in record.boxes] == [
        ("right lung", 520, 401, 1245, 1905, "imagenome-scene-graph"),
        ("left clavicle", -12, 30, 400, 3100, "imagenome-scene-graph"),
        ("carina", 900, 700, 900, 760, "imagenome-scene-graph"),
    ]
    assert [(r.region, r.phrase, r.attributes, r.temporal_cues) for r in record.regions] == [
        (
            "right lung",
            "New right lower lobe opacity.",
            ["anatomicalfinding|yes|lung opacity", "nlp|yes|abnormal"],
            ["new"],
        ),
        ("right lung", "No pneumothorax.", ["anatomicalfinding|no|pneumothorax"], []),
    ]
    assert record.split_hint == "train"
    assert [b.where for b in record.boxes] == [
        f"silver_dataset/scene_graph/{CURRENT}_SceneGraph.json objects[{i}]" for i in range(3)
    ]
    assert "images_to_avoid" not in record.provenance
    assert record.provenance["file"] == f"silver_dataset/scene_graph/{CURRENT}_SceneGraph.json"
    assert json.loads(record.provenance["relationships"]) == [
        {
            "region": "right lung",
            "relation": ["comparison|yes|worsened"],
            "previous_key": f"mimic/{PRIOR}",
            "phrase": "New right lower lobe opacity.",
        }
    ]


def test_unreadable_split_rows_are_item_rejects_and_an_unnamed_gold_row_is_an_error(tmp_path):
    write_splits(tmp_path, {"train": [CURRENT]}, avoid=[PRIOR])
    train = tmp_path / "silver_dataset" / "splits" / "train.csv"
    train.write_text(train.read_text() + f"1,10000001,50000001,{CURRENT}\n")  # cut short: 4 cells for 6
    write_graph(tmp_path, CURRENT, full_graph())
    write_graph(tmp_path, PRIOR, scene_graph(PRIOR))
    outputs = read_all(tmp_path)
    problem = next(o for o in outputs if isinstance(o, Reject) and o.reason == "malformed-row")
    assert (problem.key, problem.level) == (f"mimic/{CURRENT}", "item")
    assert problem.detail == "silver_dataset/splits/train.csv row 2: 4 cells for 6 columns"
    assert len(record_level(outputs)) == 2
    avoid = tmp_path / "silver_dataset" / "splits" / "images_to_avoid.csv"
    avoid.write_text(avoid.read_text() + "10000001\n")  # a gold row that names no image
    with pytest.raises(imagenome.ImaGenomeInputError, match="gold image could enter training"):
        imagenome.plan(str(tmp_path))  # before anything is listed or joined
    with pytest.raises(imagenome.ImaGenomeInputError, match="gold image could enter training"):
        read_all(tmp_path)


@pytest.mark.parametrize("avoid_index", [False, True])
def test_gold_images_are_marked_to_avoid(tmp_path, avoid_index):
    gold, silver = fake_dicom_id("gold"), fake_dicom_id("silver")
    write_splits(tmp_path, {"test": [silver]}, avoid=[gold], avoid_index=avoid_index)
    for dicom_id in (gold, silver):
        write_graph(tmp_path, dicom_id, scene_graph(dicom_id))
    by_key = {r.target_key: r for r in read_all(tmp_path)}
    assert by_key[f"mimic/{gold}"].provenance["images_to_avoid"] == "true"
    assert by_key[f"mimic/{gold}"].split_hint is None
    assert "images_to_avoid" not in by_key[f"mimic/{silver}"].provenance
    assert by_key[f"mimic/{silver}"].split_hint == "test"


def test_nested_folder_is_searched_and_output_sorted(tmp_path):
    ids = sorted(fake_dicom_id(str(i)) for i in range(4))
    write_splits(tmp_path, {"valid": ids}, avoid=[])
    for i, dicom_id in enumerate(reversed(ids)):
        write_graph(tmp_path, dicom_id, scene_graph(dicom_id), nested=bool(i % 2))
    # the same id in both folders: the top folder's file is the one read
    write_graph(tmp_path, ids[1], scene_graph(ids[1], image_id="wrong-id"), nested=True)
    outputs = read_all(tmp_path)
    assert [o.target_key for o in outputs] == [f"mimic/{d}" for d in ids]
    assert all(isinstance(o, AnnotationRecord) and o.split_hint == "valid" for o in outputs)


def test_bad_files_are_rejects_and_the_rest_still_read(tmp_path):
    names = ["broken", "truncated", "list", "mismatch", "dcm-suffix", "bad-objects", "good"]
    ids = {name: fake_dicom_id(name) for name in names}
    write_splits(tmp_path, {"train": list(ids.values())}, avoid=[])
    write_graph(tmp_path, ids["broken"], b"\xff\xfe not json")
    write_graph(tmp_path, ids["truncated"], json.dumps(full_graph())[:200])
    write_graph(tmp_path, ids["list"], "[1, 2]")
    write_graph(tmp_path, ids["mismatch"], scene_graph(ids["mismatch"], image_id=ids["good"]))
    write_graph(tmp_path, ids["dcm-suffix"], scene_graph(ids["dcm-suffix"], image_id=ids["dcm-suffix"] + ".dcm"))
    write_graph(tmp_path, ids["bad-objects"], scene_graph(ids["bad-objects"], objects="not a list"))
    write_graph(tmp_path, ids["good"], scene_graph(ids["good"]))
    outputs = {o.key: o for o in read_all(tmp_path)}
    reason = {name: getattr(outputs[f"mimic/{i}"], "reason", "ok") for name, i in ids.items()}
    assert reason == {
        "broken": "unparseable-json",
        "truncated": "unparseable-json",
        "list": "unexpected-json-structure",
        "mismatch": "image-id-mismatch",
        "dcm-suffix": "ok",
        "bad-objects": "unexpected-json-structure",
        "good": "ok",
    }


def test_bad_items_are_item_rejects_inside_a_surviving_record(tmp_path):
    graph = scene_graph(
        CURRENT,
        objects=[
            scene_object(CURRENT, "trachea", (1, 2, 3, 4)),
            {k: v for k, v in scene_object(CURRENT, "spine", (1, 2, 3, 4)).items() if k != "original_y2"},
            scene_object(CURRENT, "svc", ("12", 2, "n/a", 4)),
            scene_object(CURRENT, "aortic arch", (True, 2, 3, 4)),
        ],
        attributes=[
            attribute_entry(CURRENT, "left lung", ["Clear."], [["nlp|yes|normal"]]),
            attribute_entry(CURRENT, "right lung", ["One.", "Two."], [["nlp|yes|normal"]]),  # one list short
            attribute_entry(CURRENT, "carina", ["Hidden."], [["nlp|yes|normal"]], flag=False),
            attribute_entry(CURRENT, "spine", ["Bad."], [["nlp|yes|normal", 7]]),
        ],
    )
    write_splits(tmp_path, {}, avoid=[])
    write_graph(tmp_path, CURRENT, graph)
    record, *items = read_all(tmp_path)
    assert [b.label for b in record.boxes] == ["trachea"]
    assert [r.region for r in record.regions] == ["left lung"]
    assert record.split_hint is None and "relationships" not in record.provenance
    assert [(i.reason, i.kind, i.level, i.key) for i in items] == [
        ("bad-box", "rejected", "item", f"mimic/{CURRENT}"),
        ("bad-box", "rejected", "item", f"mimic/{CURRENT}"),
        ("bad-box", "rejected", "item", f"mimic/{CURRENT}"),
        ("bad-attributes", "rejected", "item", f"mimic/{CURRENT}"),
        ("region-flag-false", "filtered", "item", f"mimic/{CURRENT}"),
        ("bad-attributes", "rejected", "item", f"mimic/{CURRENT}"),
    ]


def test_without_mimic_every_file_is_filtered_unopened(tmp_path):
    ids = sorted(fake_dicom_id(str(i)) for i in range(3))
    for dicom_id in ids:
        write_graph(tmp_path, dicom_id, b"{ not even json")  # never parsed; no split files needed either
    outputs = read_all(tmp_path, image_sources=("vindr", "padchest"))
    assert [(o.key, o.kind, o.reason) for o in outputs] == [
        (f"mimic/{d}", "filtered", "image-source-not-ingested") for d in ids
    ]


def test_image_in_two_splits_gets_no_hint(tmp_path):
    write_splits(tmp_path, {"train": [CURRENT], "test": [CURRENT]}, avoid=[])
    write_graph(tmp_path, CURRENT, scene_graph(CURRENT))
    (record,) = read_all(tmp_path)
    assert record.split_hint is None
    assert record.provenance["split_conflict"] == "train,test"


def test_missing_inputs_are_clear_errors(tmp_path):
    write_graph(tmp_path, CURRENT, scene_graph(CURRENT))
    with pytest.raises(imagenome.ImaGenomeInputError, match=r"train.csv"):
        read_all(tmp_path)
    empty = tmp_path / "empty"
    (empty / "silver_dataset").mkdir(parents=True)
    with pytest.raises(imagenome.ImaGenomeInputError, match=r"scene_graph.zip"):
        read_all(empty)


def test_synthetic_corpus_split_file_is_read_by_name(tmp_path):
    """The split CSV as the synthetic corpus writes it in ImaGenome's layout (real split rows are
    credentialed): an unnamed pandas index column first, then the named columns."""
    patients = make_mimic_patients(6, 0)
    _, frontals = synth_mimic.write(tmp_path / "mimic-cxr", patients, 0)
    synth_imagenome.write(tmp_path / "corpus", patients, frontals, 0)
    lines = (tmp_path / "corpus" / "silver_dataset" / "splits" / "valid.csv").read_text().splitlines()
    assert lines[0] == SPLIT_HEADER  # the unnamed index column is really there
    assert len(lines) >= 3 and all(line.split(",")[0] == str(i) for i, line in enumerate(lines[1:]))
    root = tmp_path / "tree"
    write_splits(root, {}, avoid=[])
    (root / "silver_dataset" / "splits" / "valid.csv").write_text("\n".join(lines) + "\n")
    ids = [line.split(",")[3] for line in lines[1:3]]
    for dicom_id in ids:
        write_graph(root, dicom_id, scene_graph(dicom_id))
    assert [(r.target_key, r.split_hint) for r in read_all(root)] == [(f"mimic/{d}", "valid") for d in sorted(ids)]


def test_hand_written_example_scene_graph(tmp_path):
    """Our own example in the documented key layout (tests/data/chest_imagenome): every object, every
    phrase and every relationship comes through, boxes unclipped, the previous image found."""
    example = json.loads(SCENE_GRAPH_EXAMPLE.read_text())
    dicom_id = example["image_id"]
    write_splits(tmp_path, {"test": [dicom_id]}, avoid=[])
    write_graph(tmp_path, dicom_id, example)
    (record,) = read_all(tmp_path)
    assert isinstance(record, AnnotationRecord) and record.split_hint == "test"
    assert len(record.boxes) == len(example["objects"]) == 4
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in record.boxes] == [
        (o["bbox_name"], o["original_x1"], o["original_y1"], o["original_x2"], o["original_y2"])
        for o in example["objects"]
    ]
    assert record.boxes[1].x1 < 0 and record.boxes[3].x1 == record.boxes[3].x2  # kept as stated
    assert len(record.regions) == sum(len(entry["phrases"]) for entry in example["attributes"]) == 4
    assert [(r.region, r.phrase, r.attributes) for r in record.regions][:2] == [
        (
            "left lower lung zone",
            "Patchy opacity in the left lower lobe has increased.",
            ["anatomicalfinding|yes|lung opacity", "nlp|yes|abnormal"],
        ),
        ("left lower lung zone", "Findings may represent pneumonia.", ["disease|yes|pneumonia", "nlp|yes|abnormal"]),
    ]
    relationships = json.loads(record.provenance["relationships"])
    assert len(relationships) == len(example["relationships"]) == 2
    previous = "mimic/aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-00000000"
    assert [(r["region"], r["relation"], r["previous_key"]) for r in relationships] == [
        ("left lower lung zone", ["comparison|yes|worsened"], previous),
        ("cardiac silhouette", ["comparison|yes|no change"], previous),
    ]


def test_beam_graph_matches_serial_run(tmp_path):
    """Graphs in both folders (the top one wins), splits that conflict, gold rows (one cut short but
    naming its image), a split row naming nothing: the same outputs on the Beam graph, with and
    without MIMIC among the image sources."""
    ids = sorted(fake_dicom_id(str(i)) for i in range(5))
    write_splits(tmp_path, {"train": ids[:3], "test": [ids[2], ids[3]]}, avoid=[ids[4]])
    avoid = tmp_path / "silver_dataset" / "splits" / "images_to_avoid.csv"
    avoid.write_text(avoid.read_text() + f"10000001,50000001,{ids[0]}\n")
    train = tmp_path / "silver_dataset" / "splits" / "train.csv"
    train.write_text(train.read_text() + "7,1\n")
    for i, dicom_id in enumerate(ids):
        write_graph(tmp_path, dicom_id, full_graph() | {"image_id": dicom_id}, nested=i % 2 == 1)
    write_graph(tmp_path, ids[0], b"{ not json", nested=True)  # hidden by the top folder's file
    outputs = assert_beam_matches_serial(imagenome.plan(str(tmp_path)))
    records = {o.native_id: o for o in outputs if isinstance(o, AnnotationRecord)}
    assert sorted(records) == ids
    assert records[ids[0]].provenance["images_to_avoid"] == "true" and records[ids[4]].split_hint is None
    assert records[ids[2]].provenance["split_conflict"] == "train,test"
    assert [(o.key, o.level) for o in outputs if isinstance(o, Reject) and o.reason == "malformed-row"] == [
        ("mimic/", "record"),
        (f"mimic/{ids[0]}", "item"),
    ]
    filtered = assert_beam_matches_serial(imagenome.plan(str(tmp_path), ("vindr",)))
    assert [(o.key, o.reason) for o in filtered] == [(f"mimic/{d}", "image-source-not-ingested") for d in ids]


def test_every_scene_graph_is_in_exactly_one_listing_shard(tmp_path):
    """Names starting with each hex digit and with anything else, in both folders: each listed once;
    a file deeper down or without the suffix is not listed (nor was it before)."""
    names = [f"{first}0000000-1_SceneGraph.json" for first in "0123456789abcdef"]
    names += [
        "ABC_SceneGraph.json",
        "z_SceneGraph.json",
        "_SceneGraph.json",
        "-x_SceneGraph.json",
        "scene_SceneGraph.json",
    ]
    base = tmp_path / "silver_dataset" / "scene_graph"
    for folder in (base, base / "scene_graph"):
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_text("{}")
        (folder / "0notes.json").write_text("{}")
    (base / "scene_graph" / "scene_graph").mkdir()
    (base / "scene_graph" / "scene_graph" / names[0]).write_text("{}")
    plan = imagenome.plan(str(tmp_path), ("vindr",))
    listed = [
        (listing.tag, path) for listing in plan.listings for pattern in listing.patterns() for path in io.glob(pattern)
    ]
    assert sorted(path for _, path in listed) == sorted(
        str(folder / name) for folder in (base, base / "scene_graph") for name in [*names, "0notes.json"]
    )
    keyed = [item for tag, path in listed for item in plan.key_file(tag, path)]
    assert sorted(item.item[1] for item in keyed) == sorted(
        str(folder / name) for folder in (base, base / "scene_graph") for name in names
    )
    assert [(o.key, o.reason) for o in read_all(tmp_path, ("vindr",))] == [
        (f"mimic/{dicom_id}", "image-source-not-ingested")
        for dicom_id in sorted(name[: -len("_SceneGraph.json")] for name in names)
    ]
