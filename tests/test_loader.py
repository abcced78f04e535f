"""The mixture loader over a small synthetic build: sampling law, reproducibility, worker sharding,
resuming, lazy image decoding, and refusal of inconsistent builds."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.build import run_build
from pipelines.loader import LoaderError, MixtureStream, mixture_dataset, mixture_probabilities
from pipelines.synth import generate
from schemas.config import load_config


@pytest.fixture(scope="module")
def build_out(tmp_path_factory) -> Path:
    corpus = generate(tmp_path_factory.mktemp("corpus"), studies=4, seed=5)
    out = tmp_path_factory.mktemp("out")
    run_build(load_config(corpus / "build.yaml"), str(out))
    return out


def ids(samples) -> list[tuple[int, str]]:
    return [(s["position"], s["id"]) for s in samples]


def take(stream, n: int) -> list[dict]:
    iterator = iter(stream)
    return [next(iterator) for _ in range(n)]


def test_mixture_probabilities_weight_tasks_then_sources():
    rows = {"a": {"mimic": 30, "vindr": 10}, "b": {"siim": 5}, "c": {"mimic": 0}}
    p = mixture_probabilities(rows, {"a": 1.0, "b": 3.0, "c": 10.0})
    assert p == pytest.approx({("a", "mimic"): 0.1875, ("a", "vindr"): 0.0625, ("b", "siim"): 0.75})
    p = mixture_probabilities(rows, {"a": 1.0, "b": 1.0, "c": 1.0}, {"mimic": 1.0, "vindr": 1.0, "siim": 2.0})
    assert p == pytest.approx({("a", "mimic"): 0.25, ("a", "vindr"): 0.25, ("b", "siim"): 0.5})
    with pytest.raises(LoaderError, match="no weight for \\['vindr'\\]"):
        mixture_probabilities(rows, {"a": 1, "b": 1, "c": 1}, {"mimic": 1.0, "siim": 1.0})
    with pytest.raises(LoaderError, match="no task has weighted rows"):
        mixture_probabilities({"c": {"mimic": 0}}, {"c": 1.0})


def test_same_seed_same_stream_other_seed_other_stream(build_out):
    first = ids(MixtureStream(build_out, "imt-cxr", epochs=2, decode_images=False))
    assert first == ids(MixtureStream(build_out, "imt-cxr", epochs=2, decode_images=False))
    assert first != ids(MixtureStream(build_out, "imt-cxr", seed=1, epochs=2, decode_images=False))
    epoch = len(first) // 2
    assert [i for _, i in first[:epoch]] != [i for _, i in first[epoch:]]  # each epoch reshuffled


def test_sources_follow_rows_within_a_task(build_out):
    stream = MixtureStream(build_out, "imt-cxr", samples_per_epoch=6000, epochs=1, decode_images=False)
    weights = json.loads((build_out / "instructions" / "imt-cxr" / "weights.json").read_text())["tasks"]
    table = [r for p in stream.shards for r in pq.read_table(p, columns=["task", "source"]).to_pylist()]
    rows: dict[str, Counter] = {}
    for r in table:
        rows.setdefault(r["task"], Counter())[r["source"]] += 1
    task_total = sum(weights[t]["weight"] for t in rows)
    seen = Counter((s["task"], s["source"]) for s in stream)
    for task, sources in rows.items():  # P(task) by weight, then sources by their rows in that task
        for source, n in sources.items():
            expected = 6000 * weights[task]["weight"] / task_total * n / sum(sources.values())
            assert abs(seen[(task, source)] - expected) < 4 * np.sqrt(expected) + 2, (task, source, seen, rows)
    rows = Counter(r["source"] for r in table)
    only = MixtureStream(build_out, "imt-cxr", epochs=1, decode_images=False,
                         source_weights={s: float(s == "mimic") for s in rows})
    assert {s["source"] for s in only} == {"mimic"}


def test_pools_are_drawn_without_replacement_until_exhausted(build_out):
    stream = MixtureStream(build_out, "imt-cxr", samples_per_epoch=500)
    plan = stream.epoch_rows(3)
    for members in stream.pool_rows:
        drawn = plan[np.isin(plan, members)]
        for start in range(0, len(drawn) - len(members) + 1, len(members)):
            assert len(set(drawn[start:start + len(members)].tolist())) == len(members)


def test_consumers_split_the_same_stream(build_out):
    whole = ids(MixtureStream(build_out, "imt-cxr", epochs=2, decode_images=False))
    parts = []
    for consumer in range(3):
        stream = MixtureStream(build_out, "imt-cxr", epochs=2, decode_images=False)
        parts += ids(stream.iterate(consumer, 3))
    assert sorted(parts) == whole
    torch = pytest.importorskip("torch")
    dataset = mixture_dataset(build_out, "imt-cxr", epochs=1, decode_images=False, rank=1, world_size=2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=list)
    from_workers = sorted(ids(s for batch in loader for s in batch))
    assert from_workers == [pair for pair in whole[: len(whole) // 2] if pair[0] % 2 == 1]


def test_resume_continues_where_training_stopped(build_out):
    expected = ids(take(MixtureStream(build_out, "m4cxr", decode_images=False), 40))
    stream = MixtureStream(build_out, "m4cxr", decode_images=False)
    before = ids(take(stream, 25))
    state = json.loads(json.dumps(stream.state_dict()))
    resumed = MixtureStream(build_out, "m4cxr", decode_images=False)
    resumed.load_state_dict(state)
    assert before + ids(take(resumed, 15)) == expected
    resumed.load_state_dict(stream.state_dict(consumed_positions=[3, 9, 7]))
    assert ids(take(resumed, 1)) == expected[10:11]
    with pytest.raises(LoaderError, match="seed"):
        MixtureStream(build_out, "m4cxr", seed=9).load_state_dict(state)


def test_images_are_decoded_from_the_image_table(build_out):
    pngs = {r["image_key"]: r["image"]["bytes"] for p in sorted((build_out / "images").glob("train-*.parquet"))
            for r in pq.read_table(p, columns=["image_key", "image"]).to_pylist()}
    for sample in take(MixtureStream(build_out, "chexmix"), 8):
        (pixels,) = sample["images"]
        assert pixels.dtype == np.uint8 and pixels.shape == (512, 512)
        expected = cv2.imdecode(np.frombuffer(pngs[sample["image_keys"][0]], np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(pixels, expected)
    raw = take(MixtureStream(build_out, "chexmix", decode_images=False), 1)[0]
    assert raw["images"] == [pngs[raw["image_keys"][0]]]


def test_inconsistent_builds_are_refused(build_out, tmp_path):
    with pytest.raises(LoaderError, match="no profile"):
        MixtureStream(build_out, "missing")
    copy = tmp_path / "out"
    shutil.copytree(build_out / "instructions", copy / "instructions")
    shutil.copytree(build_out / "images", copy / "images")
    weights_path = copy / "instructions" / "m4cxr" / "weights.json"
    weights = json.loads(weights_path.read_text())
    weights["tasks"]["disease_classification"]["rows"]["mimic"]["train"] += 1
    weights_path.write_text(json.dumps(weights))
    with pytest.raises(LoaderError, match="disagree with the shards"):
        MixtureStream(copy, "m4cxr")
    for shard in (copy / "images").glob("train-*.parquet"):
        shard.unlink()
    with pytest.raises(LoaderError, match="not in"):
        MixtureStream(copy, "imt-cxr")
