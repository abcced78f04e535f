"""Deterministic sharded Parquet writing, two ways in.

- :class:`WriteTables` takes prepared rows (:func:`prepare`, a :class:`PreparedRow`: table, split,
  key, sort key and the packed row) through a GroupByKey: the shard count of each (table_dir, split) follows from its row
  count (``ceil(rows / rows_per_shard)``) and a row's shard is a stable hash of its key. The build
  uses it for the rejects table.
- :class:`WriteFragments` takes references to :class:`Fragment` work files (the task stage's rows of
  one images shard) and cuts their concatenation into shards of ``rows_per_shard`` rows, so the
  annotation and instruction rows never pass through the runner's memory.

Either way rows in a shard are sorted by key and names and bytes are identical on every run and
every runner.

This module is the one shard writer of the build and the tokenizer: every Parquet file is streamed a
row group at a time under a ``.partial`` name and renamed when complete (:func:`stream_parquet`,
:func:`write_shard_file`, which also describes the file as the manifest lists it: :class:`ShardFile`).
The image stage (``images/``) and the tokenizer (``vq/``) write their shards here too, and prove a
shard finished with one :class:`CompletionMarker` format (:func:`write_marker`, :func:`read_marker`,
:func:`marker_problems`): the files it wrote with their sha256, what it was made from and how.

No zero-row shard is ever written (``datasets`` fails on a zero-row Parquet file): a shard whose rows
all went elsewhere (an empty hash bucket, an images shard whose every image was rejected) has no file
and no manifest entry, so ``-SSSSS-of-NNNNN`` numbers can skip; a (table, split) with no rows has no
files at all, and the dataset card no config or split for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io as stdio
import itertools
import json
import logging
import math
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.beam.grouping import pack, unpack
from pipelines.beam.progress import Progress
from pipelines.output.atomic import remove_if_exists, write_atomically, write_bytes_atomically
from pipelines.output.paths import shard_name
from schemas.tables import ROW_KEY, arrow_schema
from transforms.hashing import shard_of
from transforms.io import sha256_if_exists

log = logging.getLogger(__name__)

# Rows per Parquet row group: small for image tables (the dataset viewer and readers hold a whole
# group in memory), larger for the rest.
ROW_GROUP_ROWS = {"images": 64, "annotations": 1000, "instructions": 5000, "rejects": 10000}
REJECT_TIEBREAK = ("stage", "source", "kind", "level", "reason", "detail")


def table_of(table_dir: str) -> str:
    """``instructions/m4cxr/disease_classification`` -> ``instructions``."""
    return table_dir.split("/", 1)[0]


def row_sort_key(table: str, row: Mapping[str, Any]) -> tuple:
    key = row[ROW_KEY[table]]
    if table == "rejects":
        return (key,) + tuple(str(row[column]) for column in REJECT_TIEBREAK)
    return (key,)


class PreparedRow(NamedTuple):
    """A row on its way to a shard: where it goes, what orders it, and the row itself, packed."""

    table_dir: str  # e.g. "annotations", "instructions/m4cxr/disease_classification"
    split: str
    key: str  # the row's ROW_KEY value: its shard is a stable hash of it (WriteTables)
    sort_key: tuple  # its place inside the shard (row_sort_key)
    packed: bytes  # the row, packed (pipelines/beam/grouping.py)


def prepare(table_dir: str, split: str, row: Mapping[str, Any]) -> PreparedRow:
    """A typed row (schemas/rows.py) as the writers take it. Rows are packed where they are made, so
    the whole-table steps before the shard grouping (counting and assigning shards) move compact
    bytes, not dicts."""
    table = table_of(table_dir)
    return PreparedRow(table_dir, split, row[ROW_KEY[table]], row_sort_key(table, row), pack(row))


class HashingSink(stdio.RawIOBase):
    """A write-only stream that forwards to ``handle`` and hashes what passes (for Parquet writers)."""

    def __init__(self, handle):
        super().__init__()
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self.sha256.update(data)
        self.size += len(data)
        self.handle.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def batched(rows: Sequence, size: int) -> Iterable[list]:
    """``rows`` in lists of ``size`` (the last one shorter): one row group each for :func:`stream_parquet`."""
    return (list(rows[start : start + size]) for start in range(0, len(rows), size))


def stream_parquet(
    path: str,
    table: str,
    batches: Iterable[Sequence[Mapping[str, Any]]],
    to_arrow: Callable[[Sequence[Mapping[str, Any]]], pa.Table] | None = None,
) -> tuple[int, int, str | None]:
    """Write row batches (one row group each, in order) as one zstd Parquet file with ``table``'s
    schema. Returns (rows, bytes, sha256); only one batch is held at a time, and every batch is
    consumed. ``to_arrow`` turns a batch into an Arrow table (default ``pa.Table.from_pylist``).

    Batches that hold no row at all write no file: any file an earlier run left at ``path`` is removed
    and (0, 0, None) is returned (``datasets`` cannot load a zero-row Parquet file)."""
    schema = arrow_schema(table)

    def from_pylist(batch: Sequence[Mapping[str, Any]]) -> pa.Table:
        return pa.Table.from_pylist(list(batch), schema=schema)

    convert = to_arrow or from_pylist
    batches = (batch for batch in batches if batch)
    first = next(batches, None)
    if first is None:
        remove_if_exists(path)
        return 0, 0, None

    def write(handle):
        sink, rows = HashingSink(handle), 0
        with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            for batch in itertools.chain([first], batches):
                writer.write_table(convert(batch))
                rows += len(batch)
        return rows, sink.size, sink.sha256.hexdigest()

    return write_atomically(path, write)


class ShardFile(TypedDict):
    """A file a shard wrote, as the manifest's ``outputs`` lists it (``sha256`` None and no file when
    it has no rows)."""

    path: str  # relative to the output folder
    table: str  # its folder: "images", "instructions/<profile>/<task>", "vq/_rejects", ...
    split: str
    rows: int
    bytes: int
    sha256: str | None


def write_shard_file(
    out_dir: str,
    path: str,
    table: str,
    split: str,
    batches: Iterable[Sequence[Mapping[str, Any]]],
    to_arrow: Callable[[Sequence[Mapping[str, Any]]], pa.Table] | None = None,
) -> ShardFile:
    """Row batches as the Parquet file ``path`` (relative to ``out_dir``) with ``table``'s schema,
    through :func:`stream_parquet`; its description."""
    rows, size, sha256 = stream_parquet(FileSystems.join(out_dir, path), table, batches, to_arrow)
    return ShardFile(path=path, table=path.rsplit("/", 1)[0], split=split, rows=rows, bytes=size, sha256=sha256)


def write_sorted(
    out_dir: str, table_dir: str, split: str, shard: int, num_shards: int, entries: list[tuple[tuple, bytes]]
) -> list[ShardFile]:
    """Write ``(sort key, packed row)`` entries, sorted, as one shard file and describe it: a list of
    one description, or an empty list (and no file) when there are no entries. Rows are unpacked one
    row group at a time."""
    table = table_of(table_dir)
    entries = sorted(entries)  # packed bytes break sort-key ties
    batches = ([unpack(packed) for _, packed in group] for group in batched(entries, ROW_GROUP_ROWS[table]))
    name = f"{table_dir}/{shard_name(split, shard, num_shards)}.parquet"
    written = write_shard_file(out_dir, name, table, split, batches)
    return [written] if written["rows"] else []


class CompletionMarker(TypedDict):
    """Written last when a shard is finished, so a rerun can skip it: the files it wrote, a digest of
    what it was made from and the settings it was made with. A rerun trusts it only while all three
    still hold (:func:`marker_problems`)."""

    outputs: list[ShardFile]  # every file the shard wrote, the first its main one
    inputs_sha256: str
    settings: dict[str, Any]


def write_marker(path: str, marker: CompletionMarker) -> None:
    write_bytes_atomically(path, json.dumps(marker, indent=2, sort_keys=True).encode() + b"\n")


def read_marker(
    path: str, outputs: int, upgrade: Callable[[dict[str, Any]], CompletionMarker] | None = None
) -> CompletionMarker | None:
    """The completion marker at ``path`` of a shard that writes ``outputs`` files, or None when there is
    none. A marker in another shape (written by cxr-instruct 0.1, or damaged) is converted by ``upgrade``
    when one is given and can; otherwise it is None too, and its shard is redone, with a log line that
    says why."""
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        try:
            found = json.loads(handle.read())
        except ValueError:
            found = None
    if is_marker(found, outputs):
        return found
    if upgrade is not None and isinstance(found, dict):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            upgraded = upgrade(found)
            if is_marker(upgraded, outputs):
                return upgraded
    log.warning("%s: not a completion marker of this version (an older one, or damaged); redoing the shard", path)
    return None


def is_marker(found: Any, outputs: int) -> bool:
    """Whether a parsed JSON document has the shape of a :class:`CompletionMarker` of ``outputs`` files."""
    return (
        isinstance(found, dict)
        and isinstance(found.get("outputs"), list)
        and len(found["outputs"]) == outputs
        and all(
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("sha256"), (str, type(None)))
            and isinstance(entry.get("rows"), int)
            for entry in found["outputs"]
        )
        and isinstance(found.get("inputs_sha256"), str)
        and isinstance(found.get("settings"), dict)
    )


def marker_problems(
    out_dir: str, marker: CompletionMarker, inputs_sha256: str | None, settings: dict[str, Any]
) -> list[str]:
    """What no longer matches a completion marker: "settings", "inputs", or the path of a file it
    lists whose sha256 changed (a file listed as not written must still be absent). Empty when the
    shard is finished and current."""
    problems = [] if marker.get("settings") == settings else ["settings"]
    problems += [] if marker.get("inputs_sha256") == inputs_sha256 else ["inputs"]
    return problems + [
        output["path"]
        for output in marker.get("outputs", [])
        if sha256_if_exists(FileSystems.join(out_dir, output["path"])) != output["sha256"]
    ]


def finished(
    out_dir: str, path: str, marker: CompletionMarker | None, inputs_sha256: str | None, settings: dict[str, Any]
) -> bool:
    """Whether ``marker`` (read from ``path``) proves its shard finished and current; says why not."""
    if marker is None:
        return False
    problems = marker_problems(out_dir, marker, inputs_sha256, settings)
    if problems:
        log.warning("%s: completion marker does not match (%s); redoing the shard", path, ", ".join(problems))
    return not problems


def write_shard(out_dir: str, element) -> list[ShardFile]:
    """``((table_dir, split, shard, n), values)`` -> one shard file (none when it has no rows); a value
    is ``(sort key, packed row)``, or None for the shard plan's placeholder."""
    (table_dir, split, shard, num_shards), values = element
    return write_sorted(out_dir, table_dir, split, shard, num_shards, [v for v in values if v is not None])


class WriteTables(beam.PTransform):
    """Prepared rows (:func:`prepare`) -> shard files; outputs one description per file written. No
    zero-row shard is written, so a table with no rows gets no file (an empty rejects table is simply
    absent, and the manifest and card list no ``rejects`` table)."""

    def __init__(self, out_dir: str, rows_per_shard: dict[str, int]):
        super().__init__()
        self.out_dir = out_dir
        self.rows_per_shard = rows_per_shard

    def expand(self, rows):
        rows_per_shard = self.rows_per_shard

        def num_shards(kv):
            (table_dir, split), count = kv
            return (table_dir, split), max(1, math.ceil(count / rows_per_shard[table_of(table_dir)]))

        counts = (
            rows
            | "Count key" >> beam.Map(lambda prepared: ((prepared.table_dir, prepared.split), 1))
            | "Sum per split" >> beam.CombinePerKey(sum)
            | "Shards per split" >> beam.Map(num_shards)
        )
        plan = counts | "Plan shards" >> beam.FlatMap(
            lambda kv: [((kv[0][0], kv[0][1], shard, kv[1]), None) for shard in range(kv[1])]
        )

        def assign(prepared: PreparedRow, shards):
            n = shards[(prepared.table_dir, prepared.split)]
            return (prepared.table_dir, prepared.split, shard_of(prepared.key, n), n), (
                prepared.sort_key,
                prepared.packed,
            )

        keyed = rows | "Assign shard" >> beam.Map(assign, shards=beam.pvalue.AsDict(counts))
        out_dir = self.out_dir
        return (
            (plan, keyed)
            | "Merge plan" >> beam.Flatten()
            | "Group shard" >> beam.GroupByKey()
            | "Write shard" >> beam.FlatMap(lambda element: write_shard(out_dir, element))
        )


@dataclass(frozen=True)
class Fragment:
    """One images shard's rows of one (table_dir, split): ``(sort key, packed row)`` entries, sorted,
    pickled in a work file (written by the task stage, read by :class:`WriteFragments`)."""

    table_dir: str
    split: str
    shard: str  # the images shard it came from: fragments are laid end to end in this order
    path: str
    rows: int


def write_fragment(path: str, rows: Iterable[PreparedRow]) -> None:
    """Prepared rows of one (table_dir, split) as a fragment work file: ``(sort key, packed row)`` entries, sorted."""
    payload = pickle.dumps(sorted((row.sort_key, row.packed) for row in rows), protocol=5)
    write_atomically(path, lambda handle: handle.write(payload))


def read_fragment(path: str) -> list[tuple[tuple, bytes]]:
    with FileSystems.open(path) as handle:
        return pickle.loads(handle.read())


def plan_fragment_shards(element, rows_per_shard: dict[str, int]) -> list[tuple]:
    """``((table_dir, split), fragments)`` -> ``((table_dir, split, shard, n), slices)`` per shard.

    Fragments are laid end to end in images-shard order; shard ``k`` takes rows ``[k R, (k+1) R)``
    of that sequence (R = rows_per_shard of the table), as ``(fragment path, start, stop)`` slices."""
    (table_dir, split), fragments = element
    size = rows_per_shard[table_of(table_dir)]
    num_shards = max(1, math.ceil(sum(f.rows for f in fragments) / size))
    slices: list[list[tuple[str, int, int]]] = [[] for _ in range(num_shards)]
    first = 0  # position of the fragment's first row in the sequence
    for fragment in sorted(fragments, key=lambda f: f.shard):
        row, end = first, first + fragment.rows
        while row < end:
            shard = row // size
            stop = min(end, (shard + 1) * size)
            slices[shard].append((fragment.path, row - first, stop - first))
            row = stop
        first = end
    return [((table_dir, split, shard, num_shards), parts) for shard, parts in enumerate(slices)]


def write_fragment_shard(out_dir: str, element) -> list[ShardFile]:
    (table_dir, split, shard, num_shards), slices = element
    entries = []
    for path, start, stop in slices:
        entries += read_fragment(path)[start:stop]
    return write_sorted(out_dir, table_dir, split, shard, num_shards, entries)


class WriteFragments(beam.PTransform):
    """Row :class:`Fragment` references -> shard files of ``rows_per_shard`` rows; outputs one description
    per file written (fragments that hold no rows write nothing).

    Only references cross the grouping (one per images shard and table), so the rows themselves never
    pass through the runner: each writer reads the slices of the fragments its shard covers. The
    layout depends only on the fragments, so names and bytes are identical on every run and runner."""

    def __init__(self, out_dir: str, rows_per_shard: dict[str, int], progress: Progress | None = None):
        super().__init__()
        self.out_dir = out_dir
        self.rows_per_shard = rows_per_shard
        self.progress = progress or Progress(None)

    def expand(self, fragments):
        out_dir, rows_per_shard, progress = self.out_dir, self.rows_per_shard, self.progress

        def plan(element):
            progress.started("write")
            plans = plan_fragment_shards(element, rows_per_shard)
            progress.add("write", total=len(plans))
            return plans

        def write(element):
            written = write_fragment_shard(out_dir, element)
            progress.add("write", 1)
            return written

        return (
            fragments
            | "Key by table" >> beam.Map(lambda f: ((f.table_dir, f.split), f))
            | "Group fragments" >> beam.GroupByKey()
            | "Plan shards" >> beam.FlatMap(plan)
            | "Spread shards" >> beam.Reshuffle()
            | "Write shard" >> beam.FlatMap(write)
        )
