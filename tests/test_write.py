"""Sharded Parquet writing: deterministic bytes, HF-loadable shards, never a zero-row shard."""

import hashlib
import json
from pathlib import Path

import apache_beam as beam
import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.beam.write import (
    CompletionMarker,
    Fragment,
    WriteFragments,
    WriteTables,
    batched,
    marker_problems,
    plan_fragment_shards,
    prepare,
    read_marker,
    stream_parquet,
    write_fragment,
    write_marker,
    write_shard_file,
)
from schemas.tables import arrow_schema


def reject(i: int) -> dict:
    return {
        "key": f"k{i:03d}",
        "source": "siim",
        "stage": "image",
        "kind": "rejected",
        "level": "record",
        "reason": "image-decode-error",
        "detail": f"detail {i}",
    }


def instruction(i: int, split: str) -> dict:
    return {
        "id": f"id{i:04d}",
        "profile": "imt-cxr",
        "task": "t",
        "source": "vindr",
        "split": split,
        "image_keys": [f"vindr/{i}"],
        "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
        "target": "{}",
        "template_id": "x",
    }


def run(out: Path, rows, order_seed: int):
    rows = sorted(rows, key=lambda r: hashlib.sha256(f"{order_seed}{r[2]}".encode()).hexdigest())
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        (
            p
            | beam.Create([prepare(*row) for row in rows])
            | WriteTables(str(out), {"instructions": 40, "rejects": 1000})
        )


def checksums(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))
    }


def test_same_rows_in_any_order_give_identical_files(tmp_path):
    rows = [
        ("instructions/imt-cxr/t", "train" if i % 3 else "test", instruction(i, "train" if i % 3 else "test"))
        for i in range(100)
    ]
    run(tmp_path / "a", rows, 1)
    run(tmp_path / "b", rows, 2)
    a, b = checksums(tmp_path / "a"), checksums(tmp_path / "b")
    assert a == b
    # 67 train rows at 40 per shard -> 2 shards, 33 test rows -> 1; the empty rejects table writes no file
    assert sorted(a) == [
        "instructions/imt-cxr/t/test-00000-of-00001.parquet",
        "instructions/imt-cxr/t/train-00000-of-00002.parquet",
        "instructions/imt-cxr/t/train-00001-of-00002.parquet",
    ]


def test_no_zero_row_shard_is_written_and_every_shard_loads(tmp_path):
    """6 rejects at 1 per shard -> 6 planned shards, hashed: empty buckets get no file (datasets cannot
    load a zero-row Parquet file), the rest load, and every row is written once."""
    rows = [("rejects", "rejects", reject(i)) for i in range(6)]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        (
            p
            | beam.Create([prepare(*row) for row in rows])
            | WriteTables(str(tmp_path), {"rejects": 1})
            | beam.Map(lambda d: (d["path"], d["rows"]))
            | beam.io.WriteToText(str(tmp_path / "described"))
        )
    files = sorted((tmp_path / "rejects").glob("*.parquet"))
    assert 0 < len(files) < 6 and all(f.name.endswith("-of-00006.parquet") for f in files)
    assert all(pq.ParquetFile(f).metadata.num_rows > 0 for f in files)
    described = [line for part in sorted(tmp_path.glob("described*")) for line in part.read_text().splitlines()]
    assert sorted(described) == sorted(str((f"rejects/{f.name}", pq.ParquetFile(f).metadata.num_rows)) for f in files)
    loaded = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    assert sorted(loaded["key"]) == [f"k{i:03d}" for i in range(6)]


def test_stream_parquet_with_no_rows_writes_nothing_and_removes_a_stale_file(tmp_path):
    """The image stage's path: every batch is consumed (its side effects happen) and no file remains."""
    path = tmp_path / "images" / "train-00000-of-00001.parquet"
    path.parent.mkdir()
    path.write_bytes(b"left by an earlier run")
    consumed = []

    def batches():
        for i in range(3):
            consumed.append(i)
            yield []

    assert stream_parquet(str(path), "rejects", batches()) == (0, 0, None)
    assert consumed == [0, 1, 2] and not path.exists() and not list(path.parent.iterdir())
    rows, size, sha256 = stream_parquet(str(path), "rejects", iter([[], [reject(1), reject(2)], []]))
    assert (rows, size) == (2, path.stat().st_size) and sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_tables_load_back_with_datasets_and_rows_are_sorted(tmp_path):
    rows = [("rejects", "rejects", reject(i)) for i in (5, 1, 3)]
    rows += [("instructions/imt-cxr/t", "train", instruction(i, "train")) for i in range(7)]
    run(tmp_path, rows, 0)
    rejects = datasets.load_dataset("parquet", data_files=str(tmp_path / "rejects/*.parquet"), split="train")
    assert rejects["key"] == ["k001", "k003", "k005"]
    inst = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "instructions/imt-cxr/t/*.parquet"), split="train"
    )
    assert inst.num_rows == 7
    assert inst.features["conversations"] == datasets.List(
        {"from": datasets.Value("string"), "value": datasets.Value("string")}
    )


# ------------------------------------------------------------------ fragments (the task stage's rows)


def fragments(tmp_path: Path, sizes: list[int], split: str = "train") -> list[Fragment]:
    """One fragment per images shard ``shard-NN`` with ``sizes[NN]`` instruction rows."""
    made, i = [], 0
    for number, size in enumerate(sizes):
        path = str(tmp_path / "work" / f"shard-{number:02d}.pkl")
        rows = [prepare("instructions/imt-cxr/t", split, instruction(i + n, split)) for n in range(size)]
        i += size
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_fragment(path, rows)
        made.append(Fragment("instructions/imt-cxr/t", split, f"shard-{number:02d}", path, size))
    return made


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 50), min_size=1, max_size=12),
    per_shard=st.integers(1, 60),
    order=st.randoms(use_true_random=False),
)
def test_fragment_plan_covers_every_row_once_in_full_shards(sizes, per_shard, order):
    frags = [Fragment("annotations", "train", f"s{n:02d}", f"s{n:02d}.pkl", size) for n, size in enumerate(sizes)]
    shuffled = list(frags)
    order.shuffle(shuffled)
    plan = plan_fragment_shards((("annotations", "train"), shuffled), {"annotations": per_shard})
    total = sum(sizes)
    assert [key[2] for key, _ in plan] == list(range(len(plan)))
    assert {key[3] for key, _ in plan} == {len(plan)} and len(plan) == max(1, -(-total // per_shard))
    covered = [(path, row) for _, slices in plan for path, start, stop in slices for row in range(start, stop)]
    assert sorted(covered) == sorted((f.path, row) for f in frags for row in range(f.rows))
    assert all(stop > start for _, slices in plan for _, start, stop in slices)
    sizes_out = [sum(stop - start for _, start, stop in slices) for _, slices in plan]
    assert all(size == per_shard for size in sizes_out[:-1]) and 0 <= sizes_out[-1] <= per_shard
    assert plan == plan_fragment_shards((("annotations", "train"), frags), {"annotations": per_shard})


def write_fragments(out: Path, frags: list[Fragment], per_shard: int):
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        p | beam.Create(frags) | WriteFragments(str(out), {"instructions": per_shard})


def test_fragments_in_any_order_give_identical_sorted_shards_that_load(tmp_path):
    frags = fragments(tmp_path, [7, 0, 12, 5])
    write_fragments(tmp_path / "a", frags, 10)
    write_fragments(tmp_path / "b", frags[::-1], 10)
    a, b = checksums(tmp_path / "a"), checksums(tmp_path / "b")
    assert a == b
    assert sorted(a) == [f"instructions/imt-cxr/t/train-0000{k}-of-00003.parquet" for k in range(3)]
    shards = [
        datasets.load_dataset("parquet", data_files=str(tmp_path / "a" / name), split="train")["id"]
        for name in sorted(a)
    ]
    assert [len(ids) for ids in shards] == [10, 10, 4]
    assert all(ids == sorted(ids) for ids in shards)
    assert sorted(i for ids in shards for i in ids) == [f"id{i:04d}" for i in range(24)]


def test_streamed_row_groups_are_the_bytes_of_one_whole_table_write(tmp_path):
    """Row groups streamed one batch at a time give the file a whole-table ``pq.write_table`` with that
    row group size gives (the tokenizer wrote its shards that way before it used this writer)."""
    rows = [reject(i) for i in range(25)]
    whole = tmp_path / "whole.parquet"
    pq.write_table(
        pa.Table.from_pylist(rows, schema=arrow_schema("rejects")), whole, compression="zstd", row_group_size=10
    )
    described = write_shard_file(
        str(tmp_path), "rejects/train-00000-of-00001.parquet", "rejects", "train", batched(rows, 10)
    )
    streamed = tmp_path / described["path"]
    assert streamed.read_bytes() == whole.read_bytes()
    assert described == {
        "path": "rejects/train-00000-of-00001.parquet",
        "table": "rejects",
        "split": "train",
        "rows": 25,
        "bytes": whole.stat().st_size,
        "sha256": hashlib.sha256(whole.read_bytes()).hexdigest(),
    }


def test_a_completion_marker_holds_while_its_files_inputs_and_settings_do(tmp_path):
    out = str(tmp_path)
    written = write_shard_file(out, "rejects/train-00000-of-00001.parquet", "rejects", "train", [[reject(1)]])
    absent = write_shard_file(out, "rejects/_none/train-00000-of-00001.parquet", "rejects", "train", [[]])
    assert absent["sha256"] is None and not (tmp_path / absent["path"]).exists()
    path = str(tmp_path / "marker.json")
    write_marker(path, CompletionMarker(outputs=[written, absent], inputs_sha256="in", settings={"size": 1}))
    marker = read_marker(path, 2)
    assert marker is not None and read_marker(str(tmp_path / "none.json"), 2) is None
    assert marker_problems(out, marker, "in", {"size": 1}) == []
    assert marker_problems(out, marker, "changed", {"size": 2}) == ["settings", "inputs"]
    (tmp_path / absent["path"]).parent.mkdir(parents=True)
    (tmp_path / absent["path"]).write_bytes(b"stray")  # a file the shard did not write is a change too
    (tmp_path / written["path"]).write_bytes(b"damaged")
    assert marker_problems(out, marker, "in", {"size": 1}) == [written["path"], absent["path"]]


def test_a_marker_of_another_shape_is_never_trusted_and_may_be_upgraded(tmp_path, caplog):
    """0.1's markers, damaged ones and ones listing another number of files read as None (the shard is
    redone, and the log says why); an ``upgrade`` that makes a whole marker of one is taken."""
    entry = {"path": "images/train-00000-of-00001.parquet", "sha256": "ab", "rows": 3}
    good = {"outputs": [entry, {**entry, "sha256": None, "rows": 0}], "inputs_sha256": "in", "settings": {}}
    shapes = {
        "version 0.1": '{"shard": {"path": "images/train-00000-of-00001.parquet"}, "sha256": "ab"}',
        "not json": "{torn",
        "a list": "[]",
        "no outputs": json.dumps({**good, "outputs": []}),
        "one output": json.dumps({**good, "outputs": [entry]}),
        "a path of null": json.dumps({**good, "outputs": [{**entry, "path": None}, entry]}),
        "rows as text": json.dumps({**good, "outputs": [{**entry, "rows": "3"}, entry]}),
        "no inputs digest": json.dumps({**good, "inputs_sha256": None}),
    }
    for name, text in shapes.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        assert read_marker(str(path), 2) is None, name
    assert caplog.text.count("not a completion marker of this version") == len(shapes)
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert read_marker(str(tmp_path / "good.json"), 2) == good
    assert read_marker(str(tmp_path / "good.json"), 3) is None
    upgraded = read_marker(str(tmp_path / "version 0.1.json"), 2, upgrade=lambda old: good)
    assert upgraded == good
    assert read_marker(str(tmp_path / "version 0.1.json"), 2, upgrade=lambda old: {**good, "outputs": []}) is None
