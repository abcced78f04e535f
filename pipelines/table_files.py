"""Reading a local build's Parquet tables a few columns at a time (pyarrow only, so the dataset card and
the preview can use it without loading Beam)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 4096


def table_files(out_dir: Path, table_dir: str) -> list[Path]:
    """The shard files of one table folder (``images``, ``instructions/m4cxr/triage``), sorted."""
    return sorted((out_dir / table_dir).glob("*.parquet"))


def column_batches(files: list[Path], columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Record batches holding only ``columns`` of every file, in file order."""
    for path in files:
        yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns)


def count_by(files: list[Path], columns: list[str]) -> Counter:
    """Rows per distinct tuple of ``columns`` (nulls kept as None)."""
    counts: Counter = Counter()
    for batch in column_batches(files, columns):
        grouped = pa.Table.from_batches([batch]).group_by(columns).aggregate([([], "count_all")])
        for row in grouped.to_pylist():
            counts[tuple(row[c] for c in columns)] += row["count_all"]
    return counts
