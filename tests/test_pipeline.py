"""End to end: synthetic six-source corpus -> Beam build -> tables that load with `datasets`.

The session's clean corpus and build (conftest.py) are read here; the determinism, multi-process and
corrupt-input builds each run the full pipeline again.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from builds import writable_copy

from pipelines.beam.build import run_build
from schemas.config import load_config


@pytest.fixture(scope="module")
def corpus(clean_build) -> Path:
    return clean_build.corpus


@pytest.fixture(scope="module")
def truth(corpus) -> dict:
    return json.loads((corpus / "SYNTHETIC_TRUTH.json").read_text())


@pytest.fixture(scope="module")
def build(clean_build) -> tuple[Path, dict]:
    return clean_build.out, json.loads((clean_build.out / "manifest.json").read_text())


def parquet_checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))
    }


def load(out: Path, table: str) -> datasets.Dataset:
    files = sorted(str(p) for p in (out / table).glob("*.parquet"))
    return datasets.load_dataset("parquet", data_files=files, split="train")


def rejects_of(out: Path) -> list[dict]:
    return pq.read_table(out / "rejects").to_pylist()


def test_counts_reconcile_for_every_source(build):
    _, manifest = build
    assert manifest["checks"]["reconciled"], manifest["counts"]
    assert manifest["checks"]["leakage_free"] and manifest["leakage"] == {
        "passed": True,
        "patients_in_several_splits": 0,
        "examples": [],
    }
    for source in ("mimic", "vindr", "siim", "padchest", "chexmask", "imagenome"):
        entry = manifest["counts"][source]
        assert entry["read"] > 0 and entry["written"] > 0, (source, entry)
        assert entry["read"] == entry["written"] + sum(entry["rejected"].values()) + sum(entry["filtered"].values())


def test_images_decode_to_512_letterboxed_and_match_the_truth(build, truth):
    out, manifest = build
    images = load(out, "images")
    expected = {k for k, v in truth["images"].items()}
    written = set(images["image_key"])
    rejected = {r["key"] for r in rejects_of(out) if r["level"] == "record"}
    assert written <= expected and expected - written <= rejected  # every truth image is written or rejected
    assert Counter(images["source"]).keys() == {"mimic", "vindr", "siim", "padchest"}
    for row in images.select(range(0, len(images), max(1, len(images) // 12))):
        assert row["image"].size == (512, 512)
        pixels = np.asarray(row["image"])
        assert pixels.std() > 5  # a radiograph, never a blank substitute
        info = truth["images"][row["image_key"]]
        assert (row["orig_width"], row["orig_height"]) == (info["width"], info["height"])
        if row["split_authority"] == "official+carved":  # VinDr validation carved from official train
            assert info["split"] == "train" or row["split"] == info["split"] == "test"
        elif info["split"] is not None:  # MIMIC's split file spells it "validate"; the output says "validation"
            assert row["split"] == {"validate": "validation"}.get(info["split"], info["split"])
    assert manifest["tables"]["images"] == dict(sorted(Counter(images["split"]).items()))


def test_annotations_carry_geometry_findings_and_sections(build, truth):
    out, _ = build
    annotations = {row["image_key"]: row for row in load(out, "annotations")}
    by_source = Counter(row["source"] for row in annotations.values())
    assert set(by_source) == {"mimic", "vindr", "siim", "padchest"}
    labelled = 0
    for key, row in annotations.items():
        assert row["findings"][0]["name"] == "No Finding" and len(row["findings"]) == 14
        for box in row["boxes"]:
            assert 0 <= box["u1"] < box["u2"] <= 1 and 0 <= box["v1"] < box["v2"] <= 1
            assert 0 <= box["x1"] < box["x2"] <= truth["images"][key]["width"]
        info = truth["images"][key]
        if row["source"] == "mimic":
            assert row["report_language"] == "en" and {"findings", "impression"} & {s["name"] for s in row["sections"]}
            stated = {f["name"]: f["presence"] for f in row["findings"] if f["presence"] is not None}
            for name, presence in info["findings"].items():
                assert stated.get(name) == presence, (key, name)
            # the rule-based labeler on the FINDINGS section alone recovers the case's truth too
            labelled += row["findings_labels"] is not None
            from_text = {label["name"]: label["value"] for label in row["findings_labels"] or ()}
            for name, presence in info["findings"].items():
                if name != "No Finding" and row["findings_labels"] is not None:
                    assert from_text[name] == presence, (key, name)
            for mention in row["mentions"]:  # spans index the stored report text
                assert row["report_text"][mention["span_start"] : mention["span_end"]] == mention["sentence"]
        if info.get("chexmask") and info["chexmask"]["passes"] and "chexmask" in row["annotation_sources"]:
            assert row["ctr_band"] == info["ctr_band"], key
            assert {p["label"] for p in row["polygons"]} >= {"right lung", "left lung", "heart"}
        if info.get("imagenome") and not (info.get("imagenome_gold") and row["split"] == "train"):
            assert "imagenome" in row["annotation_sources"], key
    assert labelled >= by_source["mimic"] // 2  # most synthetic MIMIC reports have a FINDINGS section


def test_chexmask_quality_filter_is_recorded_not_silent(build, truth):
    out, manifest = build
    failing = {k for k, v in truth["images"].items() if v.get("chexmask") and not v["chexmask"]["passes"]}
    assert failing, "the synthetic corpus must contain CheXmask rows below the Dice threshold"
    filtered = [r for r in rejects_of(out) if r["source"] == "chexmask" and r["kind"] == "filtered"]
    assert len(filtered) >= len(failing)
    assert manifest["counts"]["chexmask"]["filtered"].get("read", 0) >= len(failing)


def test_instructions_load_and_inherit_the_image_split(build):
    out, _ = build
    images = {row["image_key"]: row["split"] for row in load(out, "images").select_columns(["image_key", "split"])}
    for profile, task in (
        ("imt-cxr", "disease_classification"),
        ("m4cxr", "disease_classification"),
        ("chexmix", "report_pretraining"),
    ):
        rows = load(out, f"instructions/{profile}/{task}")
        assert len(rows) > 0
        for row in rows:
            assert all(images[key] == row["split"] for key in row["image_keys"])
            assert row["conversations"][0]["from"] == "human" and "<image>" in row["conversations"][0]["value"]
            json.loads(row["target"])
        assert len(set(rows["id"])) == len(rows)


def test_multi_study_rows_follow_time_and_never_leak_their_target(build):
    out, _ = build
    images = load(out, "images").select_columns(["image_key", "study_datetime", "study_id"])
    when = {row["image_key"]: (row["study_datetime"], row["study_id"]) for row in images}
    rows = load(out, "instructions/m4cxr/report_generation_multi_study")
    assert len(rows) > 0  # seed 0 has patients with consecutive FINDINGS-bearing studies
    for row in rows:
        target = json.loads(row["target"])
        studies = [when[key] for key in row["image_keys"]]
        assert studies == sorted(studies) and studies[0][1] == target["prior_study_id"] != target["study_id"]
        assert target["report"] not in row["conversations"][0]["value"]
        assert sum(turn["value"].count("<image>") for turn in row["conversations"]) == len(row["image_keys"])


def test_two_builds_are_byte_identical(build, corpus, tmp_path):
    out, manifest = build
    again = run_build(load_config(corpus / "build.yaml"), str(tmp_path))
    assert parquet_checksums(tmp_path) == parquet_checksums(out)
    assert again["outputs"] == manifest["outputs"] and again["counts"] == manifest["counts"]


def test_multi_process_runner_gives_the_same_output(build, corpus, tmp_path):
    out, _ = build
    run_build(
        load_config(corpus / "build.yaml"),
        str(tmp_path),
        ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    )
    assert parquet_checksums(tmp_path) == parquet_checksums(out)


def corrupt_one_file_per_source(root: Path) -> dict[str, str]:
    """Damage one input of each source the way real downloads go bad; returns source -> damaged key."""
    damaged = {}
    dicom = sorted((root / "mimic-cxr" / "files").rglob("*.dcm"))[0]
    dicom.write_bytes(dicom.read_bytes()[:2000])  # truncated transfer
    damaged["mimic"] = f"mimic/{dicom.stem}"
    vindr = sorted((root / "vindr-cxr" / "train").glob("*.dicom"))[0]
    vindr.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)  # header only, no pixel data
    damaged["vindr"] = f"vindr/{vindr.stem}"
    png = sorted((root / "padchest").rglob("*.png"))[0]
    png.write_bytes(png.read_bytes()[:100])
    damaged["padchest"] = f"padchest/{png.name}"
    rle = root / "siim-acr" / "train-rle.csv"
    lines = rle.read_text().splitlines()
    image_id = lines[1].split(",")[0]
    lines[1] = f"{image_id}, 12 34 56"  # odd number of integers
    rle.write_text("\n".join(lines) + "\n")
    damaged["siim"] = f"siim/{image_id}"
    graph = sorted((root / "chest-imagenome").rglob("*_SceneGraph.json"))[0]
    graph.write_text(graph.read_text()[:50])
    damaged["imagenome"] = graph.name.removesuffix("_SceneGraph.json")
    chexmask = root / "chexmask" / "OriginalResolution" / "VinDr-CXR.csv"
    with chexmask.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["Landmarks"] = "[[12 34]\n [56 78]]"  # a landmark cell cut short
    with chexmask.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    damaged["chexmask"] = f"vindr/{rows[0]['image_id']}"
    return damaged


def test_one_corrupt_file_per_source_lands_in_rejects(corpus, tmp_path):
    broken = writable_copy(corpus, tmp_path / "corpus")
    damaged = corrupt_one_file_per_source(broken)
    manifest = run_build(load_config(broken / "build.yaml"), str(tmp_path / "out"))
    assert manifest["checks"]["reconciled"], manifest["counts"]
    rejects = rejects_of(tmp_path / "out")
    expected = {  # source -> (stage, reason) of the reject its damaged file must produce
        "mimic": ("image", "image-decode-error"),
        "vindr": ("read", "unreadable-dicom-header"),
        "padchest": ("image", "image-decode-error"),
        "siim": ("read", "bad-rle"),
        "imagenome": ("read", "unparseable-json"),
        "chexmask": ("read", "unparseable-landmarks"),
    }
    for source, key in damaged.items():
        hits = {
            (r["stage"], r["reason"])
            for r in rejects
            if r["source"] == source and key in r["key"] and r["kind"] == "rejected"
        }
        assert expected[source] in hits, (source, key, hits)
    images = load(tmp_path / "out", "images")
    assert set(images["source"]) == {"mimic", "vindr", "siim", "padchest"}  # the rest of the build succeeded
