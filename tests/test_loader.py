"""The mixture loader over a small synthetic build: sampling law, reproducibility, worker sharding,
resuming, lazy image decoding, and refusal of inconsistent builds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from builds import writable_copy

from pipelines.training.loader import LoaderError, MixtureStream, mixture_dataset, mixture_probabilities
from transforms.tasks import load_profile


@pytest.fixture(scope="module")
def build_out(clean_build) -> Path:
    return clean_build.out


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


# M4CXR's sampling weights of the (task, dataset) pools we build (instruction_tuning.yaml of
# deepnoid-ai/M4CXR-TNNLS, under our task and source names), and the weights of our own tasks, whose
# sources share them by rows.
M4CXR_POOLS = {
    ("report_generation_cot", "mimic"): 200.0,
    ("report_generation_multi_image", "mimic"): 120.0,
    ("report_generation_multi_study", "mimic"): 60.0,
    ("disease_classification", "vindr"): 3.0,
    ("disease_classification", "siim"): 4.0,
    ("finding_grounding", "vindr"): 2.0,
    ("finding_grounding", "siim"): 4.0,
    ("grounded_finding", "vindr"): 2.0,
    ("grounded_finding", "siim"): 2.0,
    ("abnormality_detection", "vindr"): 3.0,
    ("abnormality_detection", "siim"): 2.0,
    ("multi_finding_grounding", "vindr"): 2.0,
    # ImaGenome annotates MIMIC images, so its task rows carry the image's source
    ("grounded_phrase_generation", "mimic"): 40.0,
    ("phrase_grounding", "mimic"): 40.0,
    ("anatomical_region_grounding", "mimic"): 20.0,
    ("grounded_anatomical_region", "mimic"): 20.0,
    ("vqa", "mimic"): 2.0,  # mimicvqa_vqa: MIMIC-CXR-VQA's files, else generated from ImaGenome scene graphs
    ("main_image_vqa", "mimic"): 2.0,  # mimiccxr_diff_vqa: Medical-Diff-VQA's single-image questions
    ("difference_vqa", "mimic"): 4.0,  # mimiccxr_diff_vqa_difference: Medical-Diff-VQA's, else generated
}
OWN_TASKS = {"organ_grounding": 0.8, "grounded_organ": 0.8, "triage": 2.0}


def m4cxr_weights() -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    profile = load_profile("m4cxr")
    return (
        {t: spec.weight for t, spec in profile.tasks.items()},
        {t: spec.source_weights for t, spec in profile.tasks.items() if spec.source_weights is not None},
    )


def expected_m4cxr(rows: dict[str, dict[str, int]]) -> dict[tuple[str, str], float]:
    """Pool probabilities from M4CXR's pool weights (present pools only) and our tasks' row shares."""
    mass = {pool: w for pool, w in M4CXR_POOLS.items() if rows.get(pool[0], {}).get(pool[1])}
    for task, weight in OWN_TASKS.items():
        for source, n in rows.get(task, {}).items():
            mass[(task, source)] = weight * n / sum(rows[task].values())
    return {pool: m / sum(mass.values()) for pool, m in mass.items()}


def test_profile_source_weights_reproduce_m4cxr_pool_proportions():
    task_weights, task_source_weights = m4cxr_weights()
    rows: dict[str, dict[str, int]] = {}
    for task, source in M4CXR_POOLS:
        rows.setdefault(task, {})[source] = 7 if source == "vindr" else 50  # row counts must not matter
    rows["disease_classification"].update(mimic=80, padchest=40)  # sources M4CXR does not use for the task
    rows.update(organ_grounding={"mimic": 30, "vindr": 10}, grounded_organ={"padchest": 5}, triage={"mimic": 9})
    p = mixture_probabilities(rows, task_weights, None, task_source_weights)
    assert p == pytest.approx(expected_m4cxr(rows))
    total = sum(M4CXR_POOLS.values()) + sum(OWN_TASKS.values())
    assert p[("report_generation_cot", "mimic")] == pytest.approx(200 / total)
    assert p[("organ_grounding", "vindr")] == pytest.approx(0.8 / 4 / total)
    del rows["disease_classification"]["siim"]  # a pool without rows drops out; its sibling keeps its share
    p = mixture_probabilities(rows, task_weights, None, task_source_weights)
    assert p[("disease_classification", "vindr")] == pytest.approx(3.0 / (total - 4.0))
    assert ("disease_classification", "mimic") not in p
    override = {"mimic": 1.0, "vindr": 1.0, "padchest": 0.0, "siim": 1.0, "imagenome": 1.0}
    p = mixture_probabilities(rows, task_weights, override, task_source_weights)  # the caller's weights win
    assert p[("disease_classification", "mimic")] == pytest.approx(p[("disease_classification", "vindr")])


def test_weights_json_carries_source_weights_and_the_stream_follows_them(build_out):
    weights = json.loads((build_out / "instructions" / "m4cxr" / "weights.json").read_text())["tasks"]
    _, task_source_weights = m4cxr_weights()
    assert {t: spec["source_weights"] for t, spec in weights.items() if "source_weights" in spec} == task_source_weights
    assert all(
        "source_weights" not in spec
        for spec in json.loads((build_out / "instructions" / "imt-cxr" / "weights.json").read_text())["tasks"].values()
    )
    stream = MixtureStream(build_out, "m4cxr", samples_per_epoch=4000, epochs=1, decode_images=False)
    rows: dict[str, dict[str, int]] = {}
    for task, spec in weights.items():
        for source, splits in spec["rows"].items():
            if splits.get("train"):
                rows.setdefault(task, {})[source] = splits["train"]
    expected = expected_m4cxr(rows)
    assert ("disease_classification", "mimic") not in expected and ("disease_classification", "vindr") in expected
    seen = Counter((s["task"], s["source"]) for s in stream)
    assert set(seen) <= set(expected)
    for pool, probability in expected.items():
        mean = 4000 * probability
        assert abs(seen[pool] - mean) < 4 * np.sqrt(mean) + 2, (pool, seen, expected)


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
    only = MixtureStream(
        build_out, "imt-cxr", epochs=1, decode_images=False, source_weights={s: float(s == "mimic") for s in rows}
    )
    assert {s["source"] for s in only} == {"mimic"}


def test_pools_are_drawn_without_replacement_until_exhausted(build_out):
    stream = MixtureStream(build_out, "imt-cxr", samples_per_epoch=500)
    plan = stream.epoch_rows(3)
    for members in stream.pool_rows:
        drawn = plan[np.isin(plan, members)]
        for start in range(0, len(drawn) - len(members) + 1, len(members)):
            assert len(set(drawn[start : start + len(members)].tolist())) == len(members)


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
    pngs = {
        r["image_key"]: r["image"]["bytes"]
        for p in sorted((build_out / "images").glob("train-*.parquet"))
        for r in pq.read_table(p, columns=["image_key", "image"]).to_pylist()
    }
    for sample in take(MixtureStream(build_out, "chexmix"), 8):
        (pixels,) = sample["images"]
        assert pixels.dtype == np.uint8 and pixels.shape == (512, 512)
        expected = cv2.imdecode(np.frombuffer(pngs[sample["image_keys"][0]], np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(pixels, expected)
    raw = take(MixtureStream(build_out, "chexmix", decode_images=False), 1)[0]
    assert raw["images"] == [pngs[raw["image_keys"][0]]]


def test_a_profile_with_an_input_size_gets_its_images_at_that_size(build_out):
    """MediVLM names 224 in its weights.json: decoded images (and PNG bytes) come resized from the 512
    canvas; image_size=None keeps the build's canvas."""
    weights = json.loads((build_out / "instructions" / "medivlm" / "weights.json").read_text())
    assert weights["image_size"] == 224
    pngs = {
        r["image_key"]: r["image"]["bytes"]
        for p in sorted((build_out / "images").glob("train-*.parquet"))
        for r in pq.read_table(p, columns=["image_key", "image"]).to_pylist()
    }
    for sample in take(MixtureStream(build_out, "medivlm"), 4):
        (pixels,) = sample["images"]
        canvas = cv2.imdecode(np.frombuffer(pngs[sample["image_keys"][0]], np.uint8), cv2.IMREAD_UNCHANGED)
        assert pixels.shape == (224, 224)
        assert np.array_equal(pixels, cv2.resize(canvas, (224, 224), interpolation=cv2.INTER_AREA))
    (raw,) = take(MixtureStream(build_out, "medivlm", decode_images=False), 1)[0]["images"]
    assert cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED).shape == (224, 224)
    (kept,) = take(MixtureStream(build_out, "medivlm", image_size=None), 1)[0]["images"]
    assert kept.shape == (512, 512)


def test_inconsistent_builds_are_refused(build_out, tmp_path):
    with pytest.raises(LoaderError, match="no profile"):
        MixtureStream(build_out, "missing")
    copy = tmp_path / "out"
    writable_copy(build_out / "instructions", copy / "instructions")
    writable_copy(build_out / "images", copy / "images")
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
