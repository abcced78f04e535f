"""Every command on ``gs://``, against a local GCS emulator (``gcp-storage-emulator``, in memory on
127.0.0.1): a synthetic corpus uploaded to the emulator's bucket is built into a ``gs://`` output with
``cxr-instruct build``, and the same corpus is built locally with ``run_build``.

The ``gs://`` build must write byte-identical tables (the manifest differs only in its source roots),
leave no ``_work/`` object behind, verify, and ``card``, ``audit``, ``preview``, ``export`` and ``publish``
must give on it what they give on the local build.

Beam's ``gcsio`` builds a ``google-cloud-storage`` client, which talks to ``STORAGE_EMULATOR_HOST``
when that is set. Beam first asks ``google.auth`` for default credentials (retrying for ~30 s when there
are none); the fixture has it make the anonymous client Beam itself offers
(``create_storage_client(..., use_credentials=False)``), so no credentials and no other host are involved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from pathlib import Path

import pytest
import yaml
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from click.testing import CliRunner

from pipelines.beam.build import run_build
from pipelines.cli import main
from pipelines.synth import generate
from pipelines.tools.card import write_card
from schemas.config import load_config
from transforms import io

BUCKET = "cxr-instruct-test"
STUDIES, SEED = 3, 4
WRITTEN_LATER = ("README.md", "card/", "audit.json", "run.json")
"""Files the commands after the build write (and run.json, the local run record: times and paths)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
    """An in-memory GCS emulator with one bucket; Beam's FileSystems reach it for ``gs://`` paths.
    Yields ``gs://<bucket>`` and the seconds the emulator took to start."""
    try:
        from apache_beam.io.gcp import gcsio
        from gcp_storage_emulator.server import create_server
    except ImportError as missing:
        pytest.skip(f"no GCS emulator ({missing}): install the test extra, pip install -e '.[test]'")
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)  # a warning per response otherwise
    started = time.perf_counter()
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    startup = time.perf_counter() - started
    anonymous = gcsio.create_storage_client
    patch = pytest.MonkeyPatch()
    patch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    patch.setattr(gcsio, "create_storage_client", lambda options, use_credentials=True: anonymous(options, False))
    io._gcs.cache_clear()  # a client made before would talk to another endpoint
    try:
        yield f"gs://{BUCKET}", startup
    finally:
        patch.undo()
        io._gcs.cache_clear()
        server.stop()


def upload(folder: Path, prefix: str) -> int:
    """Every file under ``folder`` to ``prefix/<relative path>``, bytes unchanged (Beam would gzip what it
    writes to a ``.gz`` name again unless told not to); the number of files."""
    files = [path for path in sorted(folder.rglob("*")) if path.is_file()]
    for path in files:
        target = io.join(prefix, path.relative_to(folder).as_posix())
        with FileSystems.create(target, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(path.read_bytes())
    return len(files)


def config_file(path: Path, corpus: Path, roots: dict[str, str]) -> Path:
    """``build.yaml`` of the synthetic corpus with the given source roots, fingerprinting inputs by
    content (a size-mtime fingerprint would differ between the two copies)."""
    config = yaml.safe_load((corpus / "build.yaml").read_text())
    config["fingerprint"] = "sha256"
    for name, root in roots.items():
        config["sources"][name]["root"] = root
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snapshot(out: str) -> dict[str, bytes]:
    """Every file under a build output by relative path -> its bytes."""
    return {relative: io.read_bytes(io.join(out, relative)) for relative in io.sizes_under(out)}


@pytest.fixture(scope="module")
def builds(gcs, tmp_path_factory):
    """The same corpus built locally and on gs://: their outputs, the files of each right after its
    build, the time the gs:// build took, and how the corpus was fingerprinted."""
    bucket, _ = gcs
    corpus = generate(tmp_path_factory.mktemp("corpus"), studies=STUDIES, seed=SEED)
    upload(corpus, f"{bucket}/corpus")
    sources = yaml.safe_load((corpus / "build.yaml").read_text())["sources"]
    configs = tmp_path_factory.mktemp("configs")
    local_yaml = config_file(
        configs / "local.yaml",
        corpus,
        {name: str((corpus / entry["root"]).resolve()) for name, entry in sources.items()},
    )
    remote_yaml = config_file(
        configs / "gcs.yaml", corpus, {name: f"{bucket}/corpus/{entry['root']}" for name, entry in sources.items()}
    )
    local = str(tmp_path_factory.mktemp("out"))
    run_build(load_config(local_yaml), local)
    remote = f"{bucket}/out"
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["build", "--config", str(remote_yaml), "--out", remote])
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output + repr(result.exception)
    return {
        "local": local,
        "remote": remote,
        "local_files": snapshot(local),
        "remote_files": snapshot(remote),
        "seconds": seconds,
        "roots": {
            name: (load_config(local_yaml).sources[name].root, load_config(remote_yaml).sources[name].root)
            for name in sources
        },
    }


def without_roots(manifest: dict, roots: dict[str, str]) -> dict:
    """The manifest with each source's root replaced by its name (config and input fingerprints)."""
    manifest = json.loads(json.dumps(manifest))
    for name, root in roots.items():
        for section in (manifest["config"]["sources"], manifest["inputs"]):
            if name in section:
                assert section[name]["root"] == root
                section[name]["root"] = f"<{name}>"
    return manifest


def test_the_gs_build_writes_the_local_build_s_bytes(builds):
    local, remote = builds["local_files"], dict(builds["remote_files"])
    remote.pop("run.json")  # written by the build command only: times, paths
    assert sorted(remote) == sorted(local)
    differ = [path for path in local if path != "manifest.json" and local[path] != remote[path]]
    assert differ == []
    assert any(path.startswith("images/") and path.endswith(".parquet") for path in local)
    local_roots = {name: roots[0] for name, roots in builds["roots"].items()}
    remote_roots = {name: roots[1] for name, roots in builds["roots"].items()}
    assert without_roots(json.loads(local["manifest.json"]), local_roots) == without_roots(
        json.loads(remote["manifest.json"]), remote_roots
    )


def test_no_temporary_object_is_left_on_gs(builds):
    remote = builds["remote_files"]
    assert not [path for path in remote if path.startswith("_work/")]
    assert io.files_under(io.join(builds["remote"], "_work")) == []
    assert not [path for path in remote if path.endswith((".partial", ".tmp"))]
    assert not Path(builds["local"], "_work").exists()
    assert io.remove_tree(io.join(builds["remote"], "_work")) == 0  # nothing there: nothing done


def test_remove_tree_deletes_every_object_under_the_prefix_only(gcs):
    bucket, _ = gcs
    for name in ("t/_work/a.pkl", "t/_work/rows/x/train/b.pkl", "t/_workshop.txt", "t/kept/c"):
        with FileSystems.create(f"{bucket}/{name}") as handle:
            handle.write(b"x")
    assert io.remove_tree(f"{bucket}/t/_work") == 2
    assert io.files_under(f"{bucket}/t") == [f"{bucket}/t/_workshop.txt", f"{bucket}/t/kept/c"]
    assert io.remove_tree(f"{bucket}/t") == 2 and io.files_under(f"{bucket}/t") == []


def test_verify_on_gs_passes_and_names_a_stray_shard(builds):
    runner = CliRunner()
    result = runner.invoke(main, ["verify", builds["remote"]])
    assert result.exit_code == 0, result.output
    assert "every output matches manifest.json" in result.output
    stray = io.join(builds["remote"], "images", "train-00009-of-00010.parquet")
    with FileSystems.create(stray) as handle:
        handle.write(builds["remote_files"]["manifest.json"])
    try:
        result = runner.invoke(main, ["verify", builds["remote"]])
    finally:
        FileSystems.delete([stray])
    assert result.exit_code == 1
    assert "images/train-00009-of-00010.parquet: not listed in manifest.json outputs" in result.output


def test_a_local_out_that_does_not_exist_is_one_error_line(tmp_path):
    for command in ("verify", "card", "audit", "preview"):
        result = CliRunner().invoke(main, [command, str(tmp_path / "missing")])
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [
            f"Error: {tmp_path / 'missing'}: no such folder (OUT is a build's output: a local folder or gs:// URI)"
        ]


def test_card_on_gs_is_the_local_card(builds):
    result = CliRunner().invoke(main, ["card", builds["remote"]])
    assert result.exit_code == 0, result.output
    write_card(builds["local"])
    local, remote = snapshot(builds["local"]), snapshot(builds["remote"])
    card = [path for path in local if path == "README.md" or path.startswith("card/")]
    assert "README.md" in card and len(card) > 1
    assert {path: remote.get(path) for path in card} == {path: local[path] for path in card}


def test_audit_on_gs_writes_the_local_audit(builds):
    from pipelines.tools.audit import audit

    result = CliRunner().invoke(main, ["audit", builds["remote"]])
    assert result.exit_code == 0, result.output
    assert f"audit: {builds['remote']}/audit.json" in result.output
    assert json.loads(io.read_text(io.join(builds["remote"], "audit.json"))) == audit(builds["local"])


def digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_export_of_a_gs_build_is_the_local_export(builds, tmp_path):
    for out, dest in ((builds["remote"], tmp_path / "remote"), (builds["local"], tmp_path / "local")):
        result = CliRunner().invoke(
            main, ["export", out, "--profile", "m4cxr", "--format", "llava", "--dest", str(dest)]
        )
        assert result.exit_code == 0, result.output
    assert digests(tmp_path / "remote") == digests(tmp_path / "local")
    assert (tmp_path / "remote" / "export.json").is_file() and (tmp_path / "remote" / "images").is_dir()


def test_preview_of_a_gs_build_goes_to_a_local_dest(builds, tmp_path):
    refused = CliRunner().invoke(main, ["preview", builds["remote"], "--rows", "3"])
    assert refused.exit_code == 2 and "--dest" in refused.output
    for out, dest in ((builds["remote"], tmp_path / "remote"), (builds["local"], tmp_path / "local")):
        result = CliRunner().invoke(main, ["preview", out, "--rows", "3", "--dest", str(dest)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "remote" / "index.html").is_file()
    assert digests(tmp_path / "remote") == digests(tmp_path / "local")
    assert not io.files_under(io.join(builds["remote"], "preview"))


def test_publish_from_gs_sends_the_local_build_s_files(builds, monkeypatch, tmp_path):
    from huggingface_hub import HfApi
    from test_publish import FakeHub

    from pipelines.tools.publish import publish, upload_plan

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a stray call fails fast
    for out in (builds["remote"], builds["local"]):
        write_card(out)
    local_plan = upload_plan(builds["local"])
    dry = CliRunner().invoke(main, ["publish", builds["remote"], "--repo", "someone/x", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert upload_plan(builds["remote"]).paths == local_plan.paths
    staging = tmp_path / "staging"
    with FakeHub() as hub:
        result = publish(
            builds["remote"], "someone/from-gcs", api=HfApi(endpoint=hub.endpoint, token="hf_dummy"), staging=staging
        )
    sent = hub.repos["someone/from-gcs"]["files"]
    assert sorted(sent) == result.files == local_plan.paths
    assert all(sent[path] == Path(builds["local"], path).read_bytes() for path in sent if path != "manifest.json")
    assert staging.is_dir() and not any(staging.iterdir())  # the staged copy is removed


def test_emulator_startup_and_gs_build_time_are_small(gcs, builds):
    _, startup = gcs
    assert startup < 5, f"the emulator took {startup:.1f} s to start"
    print(f"emulator start {startup:.3f} s, gs:// build {builds['seconds']:.1f} s")


def test_tokenize_on_gs_writes_the_local_codes(gcs, builds, tmp_path):
    """``tokenize --out gs://…`` (a tiny untrained model) on a copy of the gs:// build's smallest images
    shard: the same vq files as the stage run on a local copy."""
    pytest.importorskip("torch")
    from transforms import vqgan

    bucket, _ = gcs
    model = vqgan.write_tiny_model(tmp_path / "tiny", seed=0)
    remote, local = f"{bucket}/tokenize", tmp_path / "local"
    shards = {path: data for path, data in builds["remote_files"].items() if path.startswith("images/")}
    relative = min(shards, key=lambda path: len(shards[path]))
    with FileSystems.create(io.join(remote, relative)) as handle:
        handle.write(shards[relative])
    (local / relative).parent.mkdir(parents=True)
    (local / relative).write_bytes(shards[relative])
    for out in (remote, str(local)):
        result = CliRunner().invoke(main, ["tokenize", "--out", out, "--model", str(model), "--batch-size", "8"])
        assert result.exit_code == 0, result.output + repr(result.exception)
    vq = {path: data for path, data in snapshot(remote).items() if path.startswith("vq/")}
    assert any(path.endswith(".parquet") for path in vq)
    assert vq == {path: data for path, data in snapshot(str(local)).items() if path.startswith("vq/")}
