"""The tokenize stage on a real build output: Beam codes equal direct codes (1 and 2 worker
processes), the vq table loads with ``datasets``, resume after a crash writes each image once, bad
images become rejects, and CUDA without CUDA fails before anything runs."""

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.beam.build import run_build
from pipelines.beam.tokenize import VqganModelHandler, marker_path, run_tokenize
from pipelines.synth import generate
from schemas.config import load_config
from transforms import vqgan

TWO_PROCESSES = ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A build output of a small synthetic corpus and a tiny model folder."""
    root = tmp_path_factory.mktemp("tok")
    generate(root / "corpus", studies=1, seed=0)
    run_build(load_config(str(root / "corpus" / "build.yaml")), str(root / "build"))
    return root / "build", vqgan.write_tiny_model(root / "tiny", seed=0)


@pytest.fixture(scope="module")
def tokenized(built, tmp_path_factory):
    """The build's images table tokenized once in-process, and the run's summary."""
    build, model = built
    out = copy_images(build, tmp_path_factory.mktemp("one"))
    return out, run_tokenize(str(out), str(model), batch_size=4)


def copy_images(build: Path, out: Path) -> Path:
    shutil.copytree(build / "images", out / "images")
    return out


def vq_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "vq").rglob("*.parquet"))}


def image_rows(out: Path) -> dict[str, bytes]:
    table = pq.read_table(out / "images", columns=["image_key", "image"])
    return dict(zip(table["image_key"].to_pylist(), table["image"].combine_chunks().field("bytes").to_pylist()))


def test_beam_codes_equal_direct_codes_with_one_and_two_processes(built, tokenized, tmp_path):
    build, model = built
    one, summary = tokenized
    assert summary["tokenizer"].startswith("untrained-") and summary["rejects"] == 0
    images = image_rows(one)
    assert summary["images"] == len(images) > 10

    keys = sorted(images)
    direct = vqgan.load_tokenizer(model).encode_codes(
        np.stack([vqgan.tokenizer_input(images[k]) for k in keys]), fixed_batch=4
    )
    vq = pa.concat_tables(pq.read_table(p) for p in sorted((one / "vq").glob("*.parquet")))
    by_key = dict(zip(vq["image_key"].to_pylist(), vq["codes"].to_pylist()))
    assert sorted(by_key) == keys  # every image exactly once
    assert np.array_equal(np.array([by_key[k] for k in keys], dtype=np.int16), direct)
    assert np.array_equal(np.array(vq["lm_ids"].to_pylist()), np.array(vq["codes"].to_pylist()) + 4)
    assert set(vq["tokenizer"].to_pylist()) == {summary["tokenizer"]}

    two = copy_images(build, tmp_path)
    assert run_tokenize(str(two), str(model), batch_size=4, beam_args=TWO_PROCESSES)["images"] == len(images)
    assert vq_files(two) == vq_files(one)  # byte-identical shards and rejects


def test_vq_table_schema_and_load_with_datasets(tokenized):
    out, summary = tokenized
    shard = sorted((out / "vq").glob("*.parquet"))[0]
    schema = pq.read_schema(shard)
    assert schema.field("codes").type == pa.list_(pa.int16(), 1024)
    assert schema.field("lm_ids").type == pa.list_(pa.int32(), 1024)
    assert sorted(p.name for p in (out / "vq").glob("*.parquet")) == sorted(p.name for p in (out / "images").glob("*"))
    splits = {s: str(out / "vq" / f"{s}-*.parquet") for s in ("train", "validation", "test")}
    loaded = datasets.load_dataset("parquet", data_files=splits)
    assert loaded["train"].features["codes"] == datasets.List(datasets.Value("int16"), length=1024)
    assert sum(loaded[s].num_rows for s in splits) == summary["images"]
    fingerprint = json.loads((out / "vq" / "tokenizer.json").read_text())
    assert fingerprint["id"] == summary["tokenizer"] and fingerprint["trained"] is False


def test_resume_after_crash_encodes_only_unfinished_shards_once(built, tokenized, tmp_path):
    _, model = built
    first, _ = tokenized
    out = tmp_path / "out"
    shutil.copytree(first, out)
    expected = vq_files(first)
    # crash simulation: the train shard was half written and its marker never appeared
    train = sorted((out / "vq").glob("train-*.parquet"))[0]
    train.write_bytes(train.read_bytes()[:100])
    Path(marker_path(str(out), train.name)).unlink()

    resumed = run_tokenize(str(out), str(model), batch_size=4)
    assert resumed["written"] == [train.name]
    assert resumed["images"] == pq.read_metadata(first / "vq" / train.name).num_rows
    assert sorted(resumed["skipped"]) == sorted(
        n for n in (p.name for p in (out / "images").glob("*")) if n != train.name
    )
    assert vq_files(out) == expected  # nothing duplicated, nothing lost

    again = run_tokenize(str(out), str(model), batch_size=4)
    assert again["written"] == [] and again["images"] == 0


def test_a_marker_is_trusted_only_while_its_checksums_match(built, tokenized, tmp_path):
    """A vq shard damaged after its marker was written, and an images shard rebuilt since, are both
    tokenized again; untouched shards are skipped."""
    _, model = built
    first, _ = tokenized
    out = tmp_path / "out"
    shutil.copytree(first, out)
    expected = vq_files(first)
    names = sorted(p.name for p in (out / "images").glob("*.parquet"))
    damaged, rebuilt = names[0], names[-1]
    vq_shard = out / "vq" / damaged
    vq_shard.write_bytes(vq_shard.read_bytes()[:-8] + b"\0" * 8)  # bit rot, marker untouched
    images_shard = out / "images" / rebuilt
    table = pq.read_table(images_shard)
    pq.write_table(table, images_shard, compression="snappy")  # same rows, different bytes

    resumed = run_tokenize(str(out), str(model), batch_size=4)
    assert sorted(resumed["written"]) == sorted({damaged, rebuilt})
    assert sorted(resumed["skipped"]) == sorted(set(names) - {damaged, rebuilt})
    assert vq_files(out) == expected


def test_unreadable_image_becomes_a_reject_not_a_blank(built, tmp_path):
    build, model = built
    out = copy_images(build, tmp_path)
    shard = sorted((out / "images").glob("validation-*.parquet"))[0]
    for other in (out / "images").glob("*.parquet"):
        if other != shard:
            other.unlink()
    table = pq.read_table(shard)
    images = table["image"].combine_chunks()
    broken_bytes = images.field("bytes").to_pylist()
    broken_bytes[0] = broken_bytes[0][:60]  # truncated PNG
    broken = pa.StructArray.from_arrays(
        [pa.array(broken_bytes, pa.binary()), images.field("path")], fields=list(images.type)
    )
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", broken), shard)

    summary = run_tokenize(str(out), str(model), batch_size=4)
    assert (summary["images"], summary["rejects"]) == (table.num_rows - 1, 1)
    rejects = pq.read_table(out / "vq" / "_rejects" / shard.name).to_pylist()
    assert [r["key"] for r in rejects] == [table["image_key"][0].as_py()]
    assert rejects[0]["stage"] == "tokenize" and rejects[0]["reason"]
    assert table["image_key"][0].as_py() not in pq.read_table(out / "vq" / shard.name)["image_key"].to_pylist()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_request_without_cuda_fails_before_running(built, tmp_path):
    build, model = built
    out = copy_images(build, tmp_path)
    with pytest.raises(RuntimeError, match="Refusing to fall back to CPU"):
        run_tokenize(str(out), str(model), device="cuda")
    assert not (out / "vq").exists()


def test_other_tokenizer_markers_refuse_to_mix(built, tokenized, tmp_path):
    _, model = built
    out = tmp_path / "out"
    shutil.copytree(tokenized[0], out)
    marker = Path(marker_path(str(out), sorted((out / "images").glob("*"))[0].name))
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "settings": {"tokenizer": "chameleon-vqgan-0000"}}))
    with pytest.raises(RuntimeError, match="written by tokenizer chameleon-vqgan-0000"):
        run_tokenize(str(out), str(model))


def marker_as_version_0_1(marker: Path, shard: str) -> None:
    """Rewrite a completion marker in the shape cxr-instruct 0.1 wrote: every field at the top level."""
    doc = json.loads(marker.read_text())
    vq, rejects = doc["outputs"]
    old = {
        "shard": shard,
        "tokenizer": doc["settings"]["tokenizer"],
        "images_sha256": doc["inputs_sha256"],
        "rows": vq["rows"],
        "sha256": vq["sha256"],
        "rejects": rejects["rows"],
        "rejects_sha256": rejects["sha256"],
    }
    marker.write_text(json.dumps(old))


def test_markers_of_version_0_1_keep_their_shards_and_damaged_ones_redo_theirs(built, tokenized, tmp_path):
    """An output tokenized by 0.1 is not encoded again (its markers are read in their old shape); a marker
    that is not JSON, or of no known shape, costs only its own shard."""
    _, model = built
    out = tmp_path / "out"
    shutil.copytree(tokenized[0], out)
    expected = vq_files(out)
    names = sorted(p.name for p in (out / "images").glob("*.parquet"))
    assert len(names) >= 3
    for name in names:
        marker_as_version_0_1(Path(marker_path(str(out), name)), name)
    Path(marker_path(str(out), names[0])).write_text("{not json")
    Path(marker_path(str(out), names[1])).write_text(json.dumps({"shard": names[1]}))

    resumed = run_tokenize(str(out), str(model), batch_size=4)
    assert sorted(resumed["written"]) == names[:2]
    assert sorted(resumed["skipped"]) == names[2:]
    assert vq_files(out) == expected


def test_a_version_0_1_marker_of_another_tokenizer_still_refuses_to_mix(built, tokenized, tmp_path):
    _, model = built
    out = tmp_path / "out"
    shutil.copytree(tokenized[0], out)
    name = sorted(p.name for p in (out / "images").glob("*.parquet"))[0]
    marker = Path(marker_path(str(out), name))
    marker_as_version_0_1(marker, name)
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "tokenizer": "chameleon-vqgan-0000"}))
    with pytest.raises(RuntimeError, match="written by tokenizer chameleon-vqgan-0000"):
        run_tokenize(str(out), str(model))


def test_handler_batches_at_a_fixed_size_and_hints_a_gpu_only_on_cuda():
    gpu = VqganModelHandler("m", "cuda", 64, accelerator="type:nvidia-l4;count:1;install-nvidia-driver")
    cpu = VqganModelHandler("m", "cpu", 8, accelerator="type:nvidia-l4;count:1;install-nvidia-driver")
    assert gpu.batch_elements_kwargs() == {"min_batch_size": 64, "max_batch_size": 64}
    assert gpu.get_resource_hints() == {"accelerator": "type:nvidia-l4;count:1;install-nvidia-driver"}
    assert cpu.get_resource_hints() == {} and gpu.share_model_across_processes()
    assert gpu.get_num_bytes([np.zeros((4, 4), np.uint8)] * 3) == 48


def test_a_tokenized_build_lists_vq_in_its_manifest_and_verifies(built, tmp_path):
    from pipelines.tools.verify import verify

    build, model = built
    out = tmp_path / "out"
    shutil.copytree(build, out)
    run_tokenize(str(out), str(model), batch_size=4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tables"]["vq"] == manifest["tables"]["images"]
    assert manifest["tokenizer"].startswith("untrained-")
    assert verify(out) == []
    next((out / "vq").glob("train-*.parquet")).write_bytes(b"tampered")
    assert any("vq/train-" in problem for problem in verify(out))
