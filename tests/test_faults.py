"""``synth --faults`` end to end: every planted bad input ends in rejects with its stage, reason, file
and row; the counts reconcile; no good image or annotation is lost on the way.

One faulted corpus and one build are shared by the module; the command-line test writes a second
corpus (same arguments, so it must be byte-identical) and a clean one to compare against.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from builds import FAULTED
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.synth import SOURCE_ROOTS, generate
from pipelines.synth.faults import KINDS
from schemas.config import load_config
from schemas.records import ALL_SOURCES, Box, ImageRef, SourceRecord
from transforms import enrich, geometry_stage
from transforms.geometry import letterbox_for
from transforms.units import ImageUnit

STUDIES = FAULTED.studies  # synth's default seed, 0, is the shared faulted corpus's too


@pytest.fixture(scope="module")
def corpus(faulted_build) -> Path:
    return faulted_build.corpus


@pytest.fixture(scope="module")
def truth(corpus) -> dict:
    return json.loads((corpus / "SYNTHETIC_TRUTH.json").read_text())


@pytest.fixture(scope="module")
def build(faulted_build) -> tuple[Path, dict]:
    return faulted_build.out, json.loads((faulted_build.out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def rejects(build) -> list[dict]:
    return pq.read_table(build[0] / "rejects").to_pylist()


@pytest.fixture(scope="module")
def tables(build) -> dict[str, dict[str, dict]]:
    """images and annotations rows by image_key."""
    out, _ = build
    return {
        name: {row["image_key"]: row for row in pq.read_table(out / name).to_pylist()}
        for name in ("images", "annotations")
    }


def checksums(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_one_fault_of_every_manifest_kind_across_all_six_sources(truth):
    faults = truth["faults"]
    assert [f["kind"] for f in faults] == sorted(KINDS) and len(KINDS) >= 30
    assert {f["source"] for f in faults} == set(ALL_SOURCES)
    for fault in faults:
        spec = KINDS[fault["kind"]]
        assert {k: fault[k] for k in ("source", "stage", "reason", "level", "loses")} == {
            k: spec[k] for k in ("source", "stage", "reason", "level", "loses")
        }
        assert fault["file"].split("/", 1)[0] == SOURCE_ROOTS[fault["source"]]
        assert fault["key"] == fault["keys"][0]
    assert {f["kind"] for f in faults if f["row"] is not None} >= {
        "malformed-rle-siim",
        "malformed-rle-chexmask",
        "csv-missing-columns",
        "duplicate-id",
        "missing-image",
    }
    lost = set(truth["faulted"]["images"])
    assert lost == {f["key"] for f in faults if f["loses"] == "image"} and lost <= set(truth["images"])


def test_every_fault_is_a_reject_naming_its_stage_reason_file_and_row(truth, rejects):
    for fault in truth["faults"]:
        name = fault["file"].split("/", 1)[1]  # readers name files relative to their source's root
        place = re.escape(name) + (rf" row {fault['row']}\b" if fault["row"] is not None else "")
        place += f":? {re.escape(fault['where'])}" if fault["where"] else ""
        for key in fault["keys"]:
            same = [r for r in rejects if r["key"] == key and r["source"] == fault["source"]]
            found = [
                r
                for r in same
                if (r["stage"], r["reason"], r["level"], r["kind"])
                == (fault["stage"], fault["reason"], fault["level"], "rejected")
                and re.search(place, r["detail"])
            ]
            assert found, (fault["kind"], key, place, same)


def test_no_reject_names_where_the_corpus_happens_to_lie(corpus, rejects):
    """Details name files relative to their source's root, so a build's rejects do not depend on the
    folder the inputs were copied to (and do not leak it)."""
    assert not [r["detail"] for r in rejects if str(corpus) in r["detail"]]


def test_counts_reconcile_and_count_the_faults(build, truth):
    _, manifest = build
    assert manifest["checks"] == {"reconciled": True, "leakage_free": True}
    for source in ALL_SOURCES:
        entry = manifest["counts"][source]
        assert entry["read"] == entry["written"] + sum(entry["rejected"].values()) + sum(entry["filtered"].values())
        for fault in truth["faults"]:
            if fault["source"] == source and fault["level"] == "record":
                assert entry["rejected"].get(fault["stage"], 0) >= 1, (fault["kind"], entry)
            elif fault["source"] == source:
                assert entry["item_rejects"].get(f"rejected:{fault['stage']}:{fault['reason']}", 0) >= len(
                    fault["keys"]
                )


def test_no_good_image_or_annotation_is_lost(truth, tables):
    images, annotations = tables["images"], tables["annotations"]
    lost_images = set(truth["faulted"]["images"])
    lost_annotations = set(truth["faulted"]["annotations"])
    good = set(truth["images"]) - lost_images
    assert good <= set(images) and good <= set(annotations)  # every good image and its annotation row
    assert not lost_images & set(images)  # and the faults really cost what the truth says
    chexmask_checked = imagenome_checked = 0
    for key, entry in truth["images"].items():
        if key not in good:
            continue
        sources = annotations[key]["annotation_sources"]
        if (entry.get("chexmask") or {}).get("passes"):
            assert ("chexmask" in sources) == (f"chexmask:{key}" not in lost_annotations), key
            chexmask_checked += 1
        if entry.get("imagenome") and not (entry.get("imagenome_gold") and images[key]["split"] == "train"):
            assert ("imagenome" in sources) == (f"imagenome:{key}" not in lost_annotations), key
            imagenome_checked += 1
    assert chexmask_checked >= 5 and imagenome_checked >= 3


def test_item_faults_cost_the_item_and_keep_the_record(truth, tables):
    annotations = tables["annotations"]
    for fault in truth["faults"]:
        for key in fault["keys"]:
            if fault["loses"] != "item":
                continue
            row = annotations[key]
            if fault["kind"] in ("non-utf8-report", "empty-report", "oversized-report"):
                assert row["report_text"] is None and json.loads(row["provenance"])["report"] == fault["reason"]
            elif fault["kind"] == "conflicting-label-rows":  # neither CheXpert row is picked; NegBio and report stay
                systems = {label["system"] for label in row["raw_labels"]}
                assert "mimic-chexpert" not in systems and "mimic-negbio" in systems, systems
            elif fault["kind"] == "region-name-not-a-string":  # the scene graph's other entries and boxes stay
                assert "imagenome" in row["annotation_sources"] and row["regions"]
            else:  # the bad box is gone, every kept box lies inside the image
                width, height = truth["images"][key]["width"], truth["images"][key]["height"]
                assert row["boxes"] and all(
                    0 <= b["x1"] < b["x2"] <= width and 0 <= b["y1"] < b["y2"] <= height for b in row["boxes"]
                )
                if fault["kind"] == "blank-reader-id":  # the blank row is left out, not read as a consensus reader
                    assert row["split"] == "train" and all(
                        b["readers"] for b in row["boxes"] if b["reader"] == "consensus"
                    )  # fused, never read


def test_geometry_rejects_name_where_an_inverted_box_came_from():
    ref = ImageRef(image_key="vindr/ab", source="vindr", native_id="ab", uri="/ab.dicom", format="dicom")
    boxes = [
        Box(
            label="Nodule/Mass",
            x1=50,
            y1=10,
            x2=20,
            y2=40,
            origin="vindr-annotations",
            reader="R1",
            where="annotations/annotations_train.csv row 7",
        ),
        Box(label="Nodule/Mass", x1=20, y1=10, x2=20, y2=40, origin="vindr-annotations", reader="R2"),
    ]
    unit = ImageUnit(record=SourceRecord(image=ref, boxes=boxes), split="train", split_authority="official")
    decoded = enrich.DecodedUnit(
        unit=unit,
        png=b"",
        letterbox=letterbox_for(100, 80, 512),
        width=100,
        height=80,
        photometric="MONOCHROME2",
        bits_stored=12,
        source_format="dicom",
    )
    _, found = geometry_stage.geometry_unit(decoded)
    assert [(r.reason, r.level, r.stage) for r in found] == [
        ("negative-box", "item", "geometry"),
        ("zero-area-box", "item", "geometry"),
    ]
    assert found[0].detail.startswith("annotations/annotations_train.csv row 7: Nodule/Mass (50.0,10.0,20.0,40.0)")
    assert "negative width" in found[0].detail and "zero width" in found[1].detail


def test_synth_faults_command_writes_config_truth_and_only_the_listed_damage(corpus, truth, tmp_path):
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "cli"), "--studies", str(STUDIES), "--faults"])
    assert result.exit_code == 0, result.output
    made = tmp_path / "cli"
    config = load_config(made / "build.yaml")
    assert sorted(config.enabled_sources()) == sorted(ALL_SOURCES)
    assert json.loads((made / "SYNTHETIC_TRUTH.json").read_text())["faults"] == truth["faults"]
    assert checksums(made) == checksums(corpus)  # same arguments, same bytes
    clean = generate(tmp_path / "clean", studies=STUDIES, seed=0)
    assert "faults" not in json.loads((clean / "SYNTHETIC_TRUTH.json").read_text())
    before, after = checksums(clean), checksums(made)
    assert before.keys() == after.keys()
    changed = {path for path in before if before[path] != after[path]} - {"SYNTHETIC_TRUTH.json"}
    assert changed == {f["file"] for f in truth["faults"]}  # every damaged file is listed, nothing else changed


def test_too_small_a_corpus_is_refused_and_left_empty(tmp_path):
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "tiny"), "--studies", "1", "--faults"])
    assert result.exit_code == 2 and "no victim left" in result.output
    assert not any((tmp_path / "tiny").iterdir())
