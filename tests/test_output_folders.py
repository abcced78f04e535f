"""Outputs that cannot be stale or torn: one build at a time per output folder (a lock naming its
holder; a killed build's lock taken over), an older build in the folder cleared by its manifest or
refused, resume that re-reads an image file fixed under the same name, manifest.json written
atomically and last, and ``verify`` checking weights.json and a truncated manifest."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.io.filesystems import FileSystems
from builds import completion_markers, kill_build_when

from pipelines.beam.build import run_build
from pipelines.output import manifest as manifest_module
from pipelines.output import out_lock
from pipelines.output.manifest import finished_build, input_fingerprints
from pipelines.output.paths import WORK_DIR
from pipelines.synth import generate
from pipelines.tools.verify import verify
from schemas.config import load_config
from transforms.sources import read_plans

STUDIES = 4


def with_images_per_shard(corpus: Path, images: int, name: str) -> Path:
    config = yaml.safe_load((corpus / "build.yaml").read_text())
    config["rows_per_shard"] = {"images": images}
    path = corpus / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("corpus"), studies=STUDIES, seed=5)


@pytest.fixture(scope="module")
def small_shards(corpus) -> Path:
    return with_images_per_shard(corpus, 3, "build-small-shards.yaml")


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built")
    run_build(load_config(corpus / "build.yaml"), str(out))
    assert verify(out) == []
    return out


@pytest.fixture
def built_copy(built, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(built, out)
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, timeout=300)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ------------------------------------------------------------------ the lock


def test_a_second_build_into_a_locked_output_refuses_naming_the_holder(corpus, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pipelines.output.out_lock import acquire; "
            "acquire(sys.argv[1], 'build'); print('held', flush=True); time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = cli("build", "--config", str(corpus / "build.yaml"), "--out", str(out))
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2, second.stdout + second.stderr
    said = [line for line in (second.stdout + second.stderr).splitlines() if "in use by" in line]
    assert len(said) == 1, second.stdout + second.stderr
    assert f"pid {holder.pid}" in said[0] and socket.gethostname() in said[0] and "started 20" in said[0]
    assert not (out / "manifest.json").exists() and not (out / "images").exists(), "the refused build wrote nothing"


def test_a_lock_left_by_a_killed_build_is_taken_over(corpus, tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    stale = {
        "command": "build",
        "host": socket.gethostname(),
        "pid": dead_pid(),
        "started_s": time.time(),
        "started": "2020-01-01T00:00:00+00:00",
    }
    (out / out_lock.FILE).write_text(json.dumps(stale))

    run_build(load_config(corpus / "build.yaml"), str(out))

    assert verify(out) == []
    assert not (out / out_lock.FILE).exists(), "the build releases its lock"
    assert any(
        "stale lock" in record.getMessage() and str(stale["pid"]) in record.getMessage() for record in caplog.records
    )


def test_stale_rules_for_other_hosts_and_object_stores(tmp_path, monkeypatch):
    path = str(tmp_path / out_lock.FILE)
    now = time.time()
    elsewhere = {"host": "another-host", "pid": 1, "started_s": now - 60}
    assert not out_lock.is_stale(elsewhere, path, now)  # a pid on another host says nothing: age decides
    assert out_lock.is_stale({**elsewhere, "started_s": now - out_lock.STALE_AFTER_S - 1}, path, now)
    mine_alive = {"host": socket.gethostname(), "pid": os.getpid(), "started_s": now - 10 * out_lock.STALE_AFTER_S}
    assert not out_lock.is_stale(mine_alive, path, now), "a live pid on this host holds the lock at any age"
    assert out_lock.is_stale(mine_alive, "gs://bucket/out/.cxr-instruct.lock", now), "on gs:// only age counts"
    monkeypatch.setenv("CXR_INSTRUCT_LOCK_STALE_S", "30")
    assert out_lock.is_stale(elsewhere, path, now)
    monkeypatch.delenv("CXR_INSTRUCT_LOCK_STALE_S")

    (tmp_path / out_lock.FILE).write_text(json.dumps({**elsewhere, "command": "build", "started": "then"}))
    with pytest.raises(out_lock.OutputLocked, match="host another-host, pid 1"):
        out_lock.acquire(str(tmp_path))


# ------------------------------------------------------------------ an older build in the folder


def images_rows(out: Path) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for path in (out / "images").glob("*.parquet"))


def test_an_older_build_of_another_config_is_refused_or_replaced(corpus, small_shards, built_copy):
    out = built_copy
    (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in (out / "images").glob("*.parquet"))

    with pytest.raises(out_lock.OtherBuildInOutput, match="--replace"):
        run_build(load_config(small_shards), str(out))
    assert sorted(p.name for p in (out / "images").glob("*.parquet")) == before, "a refusal deletes nothing"

    manifest = run_build(load_config(small_shards), str(out), replace=True)

    listed = {entry["path"] for entry in manifest["outputs"]}
    assert set(before) - {p.rsplit("/", 1)[1] for p in listed if p.startswith("images/")}, (
        "some old shard names are not in the new build (the shard counts differ)"
    )
    assert {f"images/{p.name}" for p in (out / "images").glob("*.parquet")} <= listed, "every old shard is gone"
    assert images_rows(out) == sum(manifest["tables"]["images"].values()), "a glob loads each image once"
    assert verify(out) == []
    assert (out / "notes.txt").read_text() == "mine", "only files the old manifest lists are removed"
    assert not (out / WORK_DIR).exists()


def test_a_build_of_0_1_with_the_default_profiles_in_their_old_order_is_the_same_build(corpus, built_copy):
    """0.1 listed the default profiles in another order: its output is still this config's build, found
    finished by ``cxr-instruct build`` and rebuilt in place by a forced run, never refused as another
    config's."""
    out = built_copy
    manifest = json.loads((out / "manifest.json").read_text())
    old_order = ["imt-cxr", "m4cxr", "chexmix", "radixpert", "medivlm"]
    assert sorted(manifest["config"]["profiles"]) == sorted(old_order) != old_order
    manifest["config"]["profiles"] = old_order
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    config = load_config(corpus / "build.yaml")

    assert finished_build(str(out), config, input_fingerprints(config, read_plans(config))) is not None
    assert run_build(config, str(out))["config"]["profiles"] == sorted(old_order)
    assert verify(out) == []


def test_orphan_shards_named_by_markers_of_either_version_are_removed(tmp_path):
    """A killed build's images shards that the finished build does not list are removed, whether its
    completion markers are of today's shape or of 0.1's (``shard.path``); a damaged marker is passed over."""
    markers = tmp_path / WORK_DIR / "images"
    markers.mkdir(parents=True)
    (tmp_path / "images").mkdir()
    shards = [f"images/train-0000{i}-of-00003.parquet" for i in range(3)]
    for shard in shards:
        (tmp_path / shard).write_bytes(b"PAR1")
    (markers / "a.json").write_text(json.dumps({"outputs": [{"path": shards[0]}]}))
    (markers / "b.json").write_text(json.dumps({"shard": {"path": shards[1]}}))
    (markers / "c.json").write_text(json.dumps({"outputs": [{"path": shards[2]}]}))
    for damaged in ("{not json", "[]", '{"outputs": []}', '{"shard": {"path": null}}', '{"shard": 5}'):
        (markers / f"damaged-{len(list(markers.iterdir()))}.json").write_text(damaged)

    removed = out_lock.remove_orphan_shards(str(tmp_path), {"outputs": [{"path": shards[2]}]})

    assert sorted(removed) == shards[:2]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [shards[2].rsplit("/", 1)[1]]


def test_a_killed_build_fixed_and_rerun_reads_the_fixed_image(small_shards, tmp_path):
    """A broken image is rejected in a shard that finishes before the kill; the file is fixed under the
    same name; the rerun re-reads it (its shard's marker no longer matches) and the reject is gone."""
    corpus = small_shards.parent
    broken = sorted((corpus / "vindr-cxr" / "train").glob("*.dicom"))[0]
    good = broken.read_bytes()
    key = f"vindr/{broken.stem}"
    out = tmp_path / "out"
    try:
        broken.write_bytes(good[: len(good) // 2])  # the header reads, the pixel data is cut: an image-stage reject
        kill_once_rejected(small_shards, out, key)
    finally:
        broken.write_bytes(good)  # fixed: same name, new content and mtime
    assert not (out / "manifest.json").exists(), "the kill landed before the build finished"

    manifest = run_build(load_config(small_shards), str(out))

    keys = {
        k
        for path in (out / "images").glob("*.parquet")
        for k in pq.read_table(path, columns=["image_key"]).column("image_key").to_pylist()
    }
    assert key in keys, "the fixed image is written"
    rejected = {
        k
        for path in (out / "rejects").glob("*.parquet")
        for k in pq.read_table(path, columns=["key"]).column("key").to_pylist()
    }
    assert key not in rejected, "the old reject is gone"
    assert manifest["checks"]["reconciled"] and verify(out) == []


def shard_rejects(marker: Path) -> set[str]:
    """Keys rejected in a finished images shard (its checkpoint, beside its completion marker)."""
    try:
        return {reject.key for reject in pickle.loads(marker.with_suffix(".pkl").read_bytes()).rejects}
    except (OSError, EOFError, pickle.UnpicklingError):
        return set()


def kill_once_rejected(config_path: Path, out: Path, key: str) -> None:
    """SIGKILL a build in a child process as soon as a finished images shard holds the reject of ``key``."""
    kill_build_when(
        config_path,
        out,
        lambda: any(key in shard_rejects(m) for m in completion_markers(out)),
        "the broken image's shard",
    )
    assert (out / out_lock.FILE).exists(), "the killed build left its lock (the rerun takes it over)"


# ------------------------------------------------------------------ manifest and verify


def test_a_failed_manifest_write_leaves_the_previous_manifest(built_copy, monkeypatch):
    path = built_copy / "manifest.json"
    before = path.read_bytes()
    doc = json.loads(before)
    doc["tables"] = {}

    real_create = FileSystems.create

    class DiskFull:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

    monkeypatch.setattr(FileSystems, "create", lambda target, *a, **k: DiskFull(real_create(target, *a, **k)))
    with pytest.raises(OSError, match="No space left"):
        manifest_module._write_json(str(path), doc)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert not list(built_copy.glob("manifest.json*.partial")), "the partial file is removed"
    assert verify(built_copy) == []


def test_verify_checks_weights_json(built_copy):
    profiles = json.loads((built_copy / "manifest.json").read_text())["profiles"]
    assert profiles
    first, second = (built_copy / "instructions" / profile / "weights.json" for profile in profiles[:2])
    first.unlink()
    edited = json.loads(second.read_text())
    edited["profile"] = "edited"
    second.write_text(json.dumps(edited))

    problems = verify(built_copy)

    assert f"instructions/{profiles[0]}/weights.json: missing" in problems
    assert any(p.startswith(f"instructions/{profiles[1]}/weights.json: ") for p in problems)


def test_verify_reports_a_truncated_manifest_in_one_line(built_copy):
    path = built_copy / "manifest.json"
    path.write_bytes(path.read_bytes()[:200])

    problems = verify(built_copy)

    assert len(problems) == 1 and "manifest.json: not a whole JSON document" in problems[0]
    assert "\n" not in problems[0]
