"""Sharded Parquet writing: deterministic bytes, contiguous shard names, HF-loadable."""

import hashlib
from pathlib import Path

import apache_beam as beam
import datasets
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.write import WriteTables, prepare


def reject(i: int) -> dict:
    return {"key": f"k{i:03d}", "source": "siim", "stage": "image", "kind": "rejected", "level": "record",
            "reason": "image-decode-error", "detail": f"detail {i}"}


def instruction(i: int, split: str) -> dict:
    return {"id": f"id{i:04d}", "profile": "imt-cxr", "task": "t", "source": "vindr", "split": split,
            "image_keys": [f"vindr/{i}"], "conversations": [{"from": "human", "value": "<image>\nq"},
                                                           {"from": "gpt", "value": "a"}],
            "target": "{}", "template_id": "x"}


def run(out: Path, rows, order_seed: int):
    rows = sorted(rows, key=lambda r: hashlib.sha256(f"{order_seed}{r[2]}".encode()).hexdigest())
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        (p | beam.Create([prepare(*row) for row in rows]) | WriteTables(str(out), {"instructions": 40, "rejects": 1000},
                                             always=[("rejects", "rejects")]))


def checksums(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def test_same_rows_in_any_order_give_identical_files(tmp_path):
    rows = [("instructions/imt-cxr/t", "train" if i % 3 else "test", instruction(i, "train" if i % 3 else "test"))
            for i in range(100)]
    run(tmp_path / "a", rows, 1)
    run(tmp_path / "b", rows, 2)
    a, b = checksums(tmp_path / "a"), checksums(tmp_path / "b")
    assert a == b
    # 67 train rows at 40 per shard -> 2 shards, 33 test rows -> 1; empty rejects table still written
    assert sorted(a) == ["instructions/imt-cxr/t/test-00000-of-00001.parquet",
                         "instructions/imt-cxr/t/train-00000-of-00002.parquet",
                         "instructions/imt-cxr/t/train-00001-of-00002.parquet",
                         "rejects/rejects-00000-of-00001.parquet"]


def test_tables_load_back_with_datasets_and_rows_are_sorted(tmp_path):
    rows = [("rejects", "rejects", reject(i)) for i in (5, 1, 3)]
    rows += [("instructions/imt-cxr/t", "train", instruction(i, "train")) for i in range(7)]
    run(tmp_path, rows, 0)
    rejects = datasets.load_dataset("parquet", data_files=str(tmp_path / "rejects/*.parquet"), split="train")
    assert rejects["key"] == ["k001", "k003", "k005"]
    inst = datasets.load_dataset("parquet", data_files=str(tmp_path / "instructions/imt-cxr/t/*.parquet"),
                                 split="train")
    assert inst.num_rows == 7
    assert inst.features["conversations"] == datasets.List({"from": datasets.Value("string"),
                                                            "value": datasets.Value("string")})
