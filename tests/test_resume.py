"""A build killed midway (SIGKILL) and run again finishes with output byte-identical to an
uninterrupted build, and reuses the images shards it had finished (verified by checksum)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from builds import completion_markers, kill_build_when

from pipelines.beam.build import run_build
from pipelines.output.paths import WORK_DIR
from pipelines.synth import generate
from schemas.config import load_config

STUDIES = 8
IMAGES_PER_SHARD = 5  # many small shards, so a kill lands between two of them


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    corpus = generate(tmp_path_factory.mktemp("corpus"), studies=STUDIES, seed=3)
    config = yaml.safe_load((corpus / "build.yaml").read_text())
    config["rows_per_shard"] = {"images": IMAGES_PER_SHARD}
    path = corpus / "build-small-shards.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def uninterrupted(config_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_build(load_config(config_path), str(out))
    return out


def all_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def kill_after_markers(config_path: Path, out: Path, wanted: int) -> None:
    """SIGKILL a build in a child process once ``wanted`` images shards are complete."""
    kill_build_when(config_path, out, lambda: len(completion_markers(out)) >= wanted, f"{wanted} complete shards")


def test_killed_build_resumes_to_identical_output(config_path, uninterrupted, tmp_path):
    expected = all_files(uninterrupted)
    shards = sorted(p for p in expected if p.startswith("images/"))
    assert len(shards) >= 6, "the corpus must span several images shards for the kill to land midway"

    out = tmp_path / "out"
    kill_after_markers(config_path, out, wanted=2)
    assert not (out / "manifest.json").exists(), "the kill must land before the build finished"
    finished = {json.loads(m.read_text())["outputs"][0]["path"] for m in completion_markers(out)}
    assert 2 <= len(finished) < len(shards)
    before = {path: (out / path).stat().st_mtime_ns for path in finished}
    # one finished shard is damaged while the build is down: its marker must no longer be trusted
    damaged = sorted(finished)[0]
    (out / damaged).write_bytes((out / damaged).read_bytes()[:-16])

    run_build(load_config(config_path), str(out))

    assert all_files(out) == expected, "resumed output differs from the uninterrupted build"
    assert not (out / WORK_DIR).exists(), "checkpoints are removed once manifest.json is written"
    reused = {path for path in finished if (out / path).stat().st_mtime_ns == before[path]}
    assert reused == finished - {damaged}, "finished shards with matching checksums are not redone"


def test_a_checkpoint_is_not_reused_when_its_inputs_change(config_path, tmp_path):
    """A marker records a digest of its shard's input units: a changed source annotation redoes the shard."""
    out = tmp_path / "out"
    kill_after_markers(config_path, out, wanted=1)
    marker = completion_markers(out)[0]
    doc = json.loads(marker.read_text())
    doc["inputs_sha256"] = "0" * 64  # as if the shard's records had changed since
    marker.write_text(json.dumps(doc))
    shard = out / doc["outputs"][0]["path"]
    before = shard.stat().st_mtime_ns

    run_build(load_config(config_path), str(out))

    assert shard.stat().st_mtime_ns != before
    assert json.loads((out / "manifest.json").read_text())["checks"]["reconciled"]
