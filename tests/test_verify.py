"""``cxr-instruct verify``: a clean build verifies; each kind of damage is named and exits non-zero."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from builds import writable_copy
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.tools.verify import verify


@pytest.fixture(scope="module")
def build(clean_build) -> Path:
    return clean_build.out


@pytest.fixture
def copy(build, tmp_path) -> Path:
    return writable_copy(build, tmp_path / "out")


def edit_manifest(out: Path, change) -> None:
    path = out / "manifest.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def run_verify(out: Path):
    return CliRunner().invoke(main, ["verify", str(out)])


def test_clean_build_verifies(build):
    assert verify(build) == []
    result = run_verify(build)
    assert result.exit_code == 0, result.output
    assert "every output matches" in result.output


def test_one_flipped_byte_in_a_shard_fails_with_its_path(copy):
    shard = copy / "annotations" / "train-00000-of-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    result = run_verify(copy)
    assert result.exit_code == 1
    assert "annotations/train-00000-of-00001.parquet: sha256" in result.output
    assert "1 problem" in result.output


def test_missing_and_unlisted_shards_are_named(copy):
    (copy / "images" / "test-00000-of-00001.parquet").unlink()
    shutil.copy(copy / "images" / "train-00000-of-00001.parquet", copy / "images" / "train-00000-of-00002.parquet")
    problems = verify(copy)
    assert "images/test-00000-of-00001.parquet: missing" in problems
    assert "images/train-00000-of-00002.parquet: not listed in manifest.json outputs" in problems


def test_row_counts_that_disagree_with_the_shards_are_named(copy):
    def inflate(doc):
        doc["tables"]["images"]["train"] += 1
        first = next(o for o in doc["outputs"] if o["table"] == "rejects")
        first["rows"] += 1

    edit_manifest(copy, inflate)
    problems = verify(copy)
    assert any(p.startswith("tables['images']") for p in problems), problems
    assert any(p.startswith("rejects/rejects-00000-of-00001.parquet:") and "rows" in p for p in problems), problems


def test_unreconciled_counts_and_failed_checks_are_named(copy):
    def break_counts(doc):
        source = sorted(doc["counts"])[0]
        doc["counts"][source]["read"] += 2
        doc["checks"]["leakage_free"] = False

    edit_manifest(copy, break_counts)
    problems = verify(copy)
    assert any("read" in p and "!= written" in p for p in problems), problems
    assert "checks['leakage_free'] is false" in problems


def test_instruction_counts_must_add_up_to_their_table(copy):
    def drop_instruction(doc):
        profile = sorted(doc["instructions"])[0]
        task = sorted(doc["instructions"][profile])[0]
        source = sorted(doc["instructions"][profile][task])[0]
        split = sorted(doc["instructions"][profile][task][source])[0]
        doc["instructions"][profile][task][source][split] -= 1

    edit_manifest(copy, drop_instruction)
    assert any(p.startswith("instructions[") for p in verify(copy))


def test_a_folder_without_manifest_is_refused(tmp_path):
    result = run_verify(tmp_path)
    assert result.exit_code == 1 and "manifest.json: missing" in result.output


def test_a_listed_zero_row_shard_is_named(copy):
    """A zero-row shard does not load with `datasets`: even when the manifest lists it faithfully
    (size, checksum, rows), verify names it."""
    import hashlib

    import pyarrow.parquet as pq

    shard = copy / "images" / "test-00000-of-00001.parquet"
    pq.write_table(pq.read_table(shard).slice(0, 0), shard)
    data = shard.read_bytes()

    def list_it(doc):
        entry = next(o for o in doc["outputs"] if o["path"] == "images/test-00000-of-00001.parquet")
        entry.update(rows=0, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        doc["tables"]["images"]["test"] = 0

    edit_manifest(copy, list_it)
    problems = verify(copy)
    assert "images/test-00000-of-00001.parquet: zero rows (`datasets` cannot load a zero-row Parquet file)" in problems
    assert not any(
        p.startswith("images/test-00000-of-00001.parquet: ") and "rows, manifest says" in p for p in problems
    )


def test_what_card_preview_and_audit_write_into_out_is_listed_and_verified(copy):
    from pipelines.tools.audit import audit
    from pipelines.tools.card import write_card
    from pipelines.tools.preview import write_preview

    write_card(copy)
    write_preview(copy)
    audit(copy)
    listed = {entry["path"] for entry in json.loads((copy / "manifest.json").read_text())["files"]}
    assert {"README.md", "audit.json", "preview/index.html"} <= listed
    assert any(path.startswith("card/") and path.endswith(".png") for path in listed)
    assert verify(copy) == []
    write_card(copy)  # a later card replaces its own entries, nobody else's
    assert (
        verify(copy) == [] and {e["path"] for e in json.loads((copy / "manifest.json").read_text())["files"]} == listed
    )

    (copy / "README.md").write_text((copy / "README.md").read_text() + "\nedited by hand\n")
    (copy / "preview" / "index.html").unlink()
    problems = verify(copy)
    assert any(p.startswith("README.md:") for p in problems) and "preview/index.html: missing" in problems
