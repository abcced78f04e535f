"""Reading a build's Parquet tables a few columns at a time, for the dataset card and the preview.

Files are listed and opened through :mod:`transforms.io` (Beam's FileSystems), so the build may be a
local folder or a ``gs://`` URI; paths are strings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from transforms import io

BATCH_ROWS = 4096


def table_files(out_dir: str | Path, table_dir: str) -> list[str]:
    """The shard files of one table folder (``images``, ``instructions/m4cxr/triage``), sorted."""
    return io.glob(io.join(str(out_dir), table_dir, "*.parquet"))


def column_batches(files: Sequence[str | Path], columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Record batches holding only ``columns`` of every file, in file order."""
    for path in files:
        with io.open_file(str(path)) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS, columns=columns)


def parquet_rows(path: str | Path) -> int:
    """Rows of one Parquet file, from its footer."""
    with io.open_file(str(path)) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def count_by(files: Sequence[str | Path], columns: list[str]) -> Counter:
    """Rows per distinct tuple of ``columns`` (nulls kept as None)."""
    counts: Counter = Counter()
    for batch in column_batches(files, columns):
        grouped = pa.Table.from_batches([batch]).group_by(columns).aggregate([([], "count_all")])
        for row in grouped.to_pylist():
            counts[tuple(row[c] for c in columns)] += row["count_all"]
    return counts
