"""A build as a Hugging Face user meets it: every config of its dataset card loads with real ``datasets``
(``load_dataset(OUT, name=config, split=split)``) with the rows the manifest counts, splits are named
``train`` / ``validation`` / ``test``, no table, file name or document says ``validate``, and no
zero-row Parquet shard is written.

The build is the bad-input corpus (``synth --faults``: rejects at every stage) with tiny shards, so
that hash buckets go empty and images shards lose images to rejects, and with the tiny tokenizer, so
the card has a ``vq`` config too."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from builds import tiny_shard_build, writable_copy

from pipelines.beam.build import run_build
from pipelines.output.manifest import Manifest
from pipelines.synth import generate
from pipelines.tools.card import write_card
from pipelines.tools.verify import verify
from schemas.config import load_config

WORD = re.compile(rb"\bvalidate\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def build(faulted_build, tmp_path_factory) -> Path:
    """The session's faulted build (tiny shards, tokenized) with its card."""
    out = writable_copy(faulted_build.out, tmp_path_factory.mktemp("hub") / "out")
    write_card(out)
    return out


@pytest.fixture
def hf_cache(tmp_path) -> Path:
    """Where ``datasets`` keeps what it prepares: the test's own folder, not the user's cache."""
    return tmp_path / "hf-cache"


def card_configs(out: Path) -> list[dict]:
    text = (out / "README.md").read_text()
    return yaml.safe_load(text[4:].split("\n---\n", 1)[0])["configs"]


def parquet_files(out: Path) -> list[Path]:
    return sorted(out.rglob("*.parquet"))


def test_every_card_config_loads_by_name_with_the_rows_the_manifest_counts(build, hf_cache):
    manifest = Manifest.read(str(build))
    configs = card_configs(build)
    names = [c["config_name"] for c in configs]
    assert len(names) == len(set(names)), names
    assert {"images", "annotations", "rejects", "vq", "m4cxr-disease_classification"} <= set(names)
    loaded = 0
    for config in configs:
        table = {f["path"].rsplit("/", 1)[0] for f in config["data_files"]}.pop()
        assert {f["split"] for f in config["data_files"]} == set(manifest["tables"][table]), config
        for data_file in config["data_files"]:
            split = data_file["split"]
            rows = datasets.load_dataset(
                str(build), name=config["config_name"], split=split, cache_dir=str(hf_cache)
            ).num_rows
            assert rows == manifest["tables"][table][split] > 0, (config["config_name"], split)
            loaded += 1
    assert loaded == sum(len(splits) for splits in manifest["tables"].values())
    # the default config (images) by the split name `datasets` users write
    default = datasets.load_dataset(str(build), split="validation", cache_dir=str(hf_cache))
    assert default.num_rows == manifest["tables"]["images"]["validation"] > 0
    assert set(default["split"]) == {"validation"}


def test_splits_are_train_validation_test_and_validate_is_written_nowhere(build):
    manifest = Manifest.read(str(build))
    for table, splits in manifest["tables"].items():
        expected = {"rejects"} if table == "rejects" else {"train", "validation", "test"}
        assert set(splits) <= expected, (table, splits)
    assert set(manifest["tables"]["images"]) == {"train", "validation", "test"}
    for path in sorted(build.rglob("*")):
        relative = path.relative_to(build).as_posix()
        assert "validate" not in relative.lower(), relative
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            text_columns = [name for name in table.column_names if name != "image"]  # PNG bytes aside
            assert not WORD.search(json.dumps(table.select(text_columns).to_pylist(), default=str).encode()), relative
            if "split" in table.column_names:
                assert set(table["split"].to_pylist()) <= {"train", "validation", "test"}, relative
        elif path.suffix in (".json", ".md", ".html", ".yaml"):
            assert not WORD.search(path.read_bytes()), relative


def test_no_zero_row_shard_and_manifest_verify_and_card_agree(build):
    manifest = Manifest.read(str(build))
    files = parquet_files(build)
    empty = [p.relative_to(build).as_posix() for p in files if pq.ParquetFile(p).metadata.num_rows == 0]
    assert empty == []
    assert sorted(p.relative_to(build).as_posix() for p in files) == sorted(e["path"] for e in manifest["outputs"])
    assert all(entry["rows"] > 0 for entry in manifest["outputs"])
    assert verify(build) == []
    # shards whose rows all went elsewhere are skipped, not written empty: numbers stay within the plan
    by_table: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for entry in manifest["outputs"]:
        name = entry["path"].rsplit("/", 1)[1].removesuffix(".parquet")
        shard, total = re.fullmatch(r"\w+-(\d{5})-of-(\d{5})", name).groups()
        by_table.setdefault((entry["table"], entry["split"]), []).append((int(shard), int(total)))
    for key, shards in by_table.items():
        assert len({total for _, total in shards}) == 1 and all(s < t for s, t in shards), key
    rejects = by_table[("rejects", "rejects")]
    assert len(rejects) < rejects[0][1]  # some hash buckets of the 2-row rejects shards are empty
    # the tokenizer rejected nothing: no vq/_rejects shard at all, and the markers say so
    assert not list((build / "vq" / "_rejects").glob("*.parquet"))
    markers = [json.loads(p.read_text()) for p in sorted((build / "vq" / "_complete").glob("*.json"))]
    assert markers and all(m["outputs"][1] == {**m["outputs"][1], "rows": 0, "sha256": None} for m in markers)
    assert "vq/_rejects" not in manifest["tables"]
    configs = {c["config_name"] for c in card_configs(build)}
    assert "vq-rejects" not in configs and "vq" in configs


def test_a_build_without_rejects_has_no_rejects_file_and_no_rejects_config(tmp_path, hf_cache):
    """MIMIC-CXR, VinDr-CXR and PadChest of the clean corpus reject nothing: the rejects table, empty, is
    not written (it would not load); manifest, verify and card agree, and every config still loads."""
    corpus = generate(tmp_path / "corpus", studies=3, seed=4)
    config = yaml.safe_load((corpus / "build.yaml").read_text())
    for name in ("chexmask", "imagenome", "siim", "mimic_cxr_vqa", "mimic_diff_vqa"):
        config["sources"][name]["enabled"] = False
    (corpus / "build.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    manifest = run_build(load_config(corpus / "build.yaml"), str(out))
    assert not any(
        sum(e["rejected"].values()) + sum(e["filtered"].values()) + sum(e["item_rejects"].values())
        for e in manifest["counts"].values()
    )
    assert not (out / "rejects").exists() and "rejects" not in manifest["tables"]
    assert verify(out) == []
    write_card(out)
    assert "No rejects." in (out / "README.md").read_text()
    configs = card_configs(out)
    assert "rejects" not in {c["config_name"] for c in configs}
    for config in configs:
        for data_file in config["data_files"]:
            assert (
                datasets.load_dataset(
                    str(out), name=config["config_name"], split=data_file["split"], cache_dir=str(hf_cache)
                ).num_rows
                > 0
            )


def test_the_tiny_shard_build_is_byte_identical_on_a_second_run(build, tiny_vqgan, tmp_path_factory):
    _, again = tiny_shard_build(tmp_path_factory.mktemp("hub-again"), tiny_vqgan)
    write_card(again)

    def digests(out: Path) -> dict[str, str]:
        return {
            p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*"))
            if p.is_file()
        }

    first, second = digests(build), digests(again)
    manifest_first = json.loads((build / "manifest.json").read_text())
    manifest_second = json.loads((again / "manifest.json").read_text())
    # input roots differ (two corpus folders): everything else is the same, byte for byte
    for doc in (manifest_first, manifest_second):
        for entry in doc["inputs"].values():
            entry.pop("root")
            entry.pop("sha256")  # size-mtime fingerprints: the two corpora were written at different times
        doc["config"]["sources"] = sorted(doc["config"]["sources"])
        doc["config"]["tokenizer"].pop("model")
    assert manifest_first == manifest_second
    differing = sorted(p for p in set(first) | set(second) if first.get(p) != second.get(p))
    assert differing == ["manifest.json"], differing
