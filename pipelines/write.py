"""Deterministic sharded Parquet writing.

Rows arrive as ``(table_dir, split, row)``. The shard count of each (table_dir, split) follows from
its row count (``ceil(rows / rows_per_shard)``); a row's shard is a stable hash of its key; rows in a
shard are sorted by key. So names and bytes are identical on every run and every runner. Every
shard of the plan is written, empty ones included, so ``-SSSSS-of-NNNNN`` names stay contiguous.
"""

from __future__ import annotations

import hashlib
import io
import math

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.grouping import GroupPacked
from schemas.tables import ROW_KEY, arrow_schema
from transforms.hashing import shard_of

# Rows per Parquet row group: small for image tables (the dataset viewer and readers hold a whole
# group in memory), larger for the rest.
ROW_GROUP_ROWS = {"images": 64, "annotations": 1000, "instructions": 5000, "rejects": 10000}
REJECT_TIEBREAK = ("stage", "source", "kind", "level", "reason", "detail")


def table_of(table_dir: str) -> str:
    """``instructions/m4cxr/disease_classification`` -> ``instructions``."""
    return table_dir.split("/", 1)[0]


def row_sort_key(table: str, row: dict) -> tuple:
    key = row[ROW_KEY[table]]
    if table == "rejects":
        return (key,) + tuple(str(row[column]) for column in REJECT_TIEBREAK)
    return (key,)


def shard_path(out_dir: str, table_dir: str, split: str, shard: int, num_shards: int) -> str:
    return FileSystems.join(out_dir, table_dir, f"{split}-{shard:05d}-of-{num_shards:05d}.parquet")


def parquet_bytes(table: str, rows: list[dict]) -> bytes:
    arrow = pa.Table.from_pylist(rows, schema=arrow_schema(table))
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer, compression="zstd", row_group_size=ROW_GROUP_ROWS[table])
    return buffer.getvalue()


def write_shard(out_dir: str, element) -> dict:
    """Write one shard file and describe it (path relative to the output, rows, sha256)."""
    (table_dir, split, shard, num_shards), rows = element
    table = table_of(table_dir)
    rows = sorted((row for row in rows if row is not None), key=lambda r: row_sort_key(table, r))
    data = parquet_bytes(table, rows)
    path = shard_path(out_dir, table_dir, split, shard, num_shards)
    with FileSystems.create(path) as handle:
        handle.write(data)
    return {
        "path": f"{table_dir}/{split}-{shard:05d}-of-{num_shards:05d}.parquet",
        "table": table_dir,
        "split": split,
        "rows": len(rows),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


class WriteTables(beam.PTransform):
    """``(table_dir, split, row)`` -> shard files; outputs one description per file written.

    ``always`` names (table_dir, split) pairs that get a file even when they have no rows (e.g. an
    empty rejects table still loads).
    """

    def __init__(self, out_dir: str, rows_per_shard: dict[str, int], always: list[tuple[str, str]] = ()):
        super().__init__()
        self.out_dir = out_dir
        self.rows_per_shard = rows_per_shard
        self.always = list(always)

    def expand(self, rows):
        rows_per_shard = self.rows_per_shard

        def num_shards(kv):
            (table_dir, split), count = kv
            return (table_dir, split), max(1, math.ceil(count / rows_per_shard[table_of(table_dir)]))

        counts = (
            (
                rows | "Count key" >> beam.Map(lambda r: ((r[0], r[1]), 1)),
                rows.pipeline | "Always" >> beam.Create([(pair, 0) for pair in self.always]),
            )
            | "Merge counts" >> beam.Flatten()
            | "Sum per split" >> beam.CombinePerKey(sum)
            | "Shards per split" >> beam.Map(num_shards)
        )
        plan = counts | "Plan shards" >> beam.FlatMap(
            lambda kv: [((kv[0][0], kv[0][1], shard, kv[1]), None) for shard in range(kv[1])]
        )

        def assign(r, shards):
            table_dir, split, row = r
            n = shards[(table_dir, split)]
            key = row[ROW_KEY[table_of(table_dir)]]
            return (table_dir, split, shard_of(key, n), n), row

        keyed = rows | "Assign shard" >> beam.Map(assign, shards=beam.pvalue.AsDict(counts))
        out_dir = self.out_dir
        return (
            (plan, keyed)
            | "Merge plan" >> beam.Flatten()
            | "Group shard" >> GroupPacked()
            | "Write shard" >> beam.Map(lambda element: write_shard(out_dir, element))
        )
