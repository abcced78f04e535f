"""``cxr-instruct audit OUT``: every instruction row of a finished build re-checked against its images.

Reads the ``annotations`` table once (one :class:`transforms.audit.ImageFacts` per image, a few KB each),
then streams every ``instructions/<profile>/<task>/*.parquet`` shard and runs
:func:`transforms.audit.audit_row` on each row. Writes ``OUT/audit.json`` (counts per kind, per
profile/task, and up to ``EXAMPLES_PER_KIND`` examples of each kind) atomically, and returns the
document; the command prints a table and exits non-zero when any contradiction is found. The build
may be a local folder or a ``gs://`` URI (read and written through :mod:`transforms.io`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.output.atomic import write_atomically
from pipelines.output.manifest import record_view_files
from transforms import io
from transforms.audit import KINDS, audit_row, facts_from_annotation

FILE = "audit.json"
VERSION = 1
EXAMPLES_PER_KIND = 20


def shard_rows(path: str) -> list[dict]:
    """Every row of one Parquet shard."""
    with io.open_file(path) as handle:
        return pq.ParquetFile(handle).read().to_pylist()


def image_facts(out_dir: str | Path) -> dict:
    """``image_key`` -> facts, from every shard of the annotations table."""
    return {
        row["image_key"]: facts_from_annotation(row)
        for path in io.glob(io.join(str(out_dir), "annotations", "*.parquet"))
        for row in shard_rows(path)
    }


def audit(out_dir: str | Path) -> dict:
    """Audit every instruction row of the build in ``out_dir``; writes and returns ``audit.json``."""
    out_dir = str(out_dir)
    if not io.exists(io.join(out_dir, "manifest.json")):
        raise FileNotFoundError(f"{out_dir}: no manifest.json, not a finished build")
    facts = image_facts(out_dir)
    kinds: Counter = Counter()
    per_task: dict[str, dict] = defaultdict(
        lambda: {"rows": 0, "rows_with_contradictions": 0, "contradictions": Counter()}
    )
    examples: dict[str, list] = defaultdict(list)
    rows = flagged = 0
    for shard in io.glob(io.join(out_dir, "instructions", "*", "*", "*.parquet")):
        for row in shard_rows(shard):
            try:
                found = audit_row(row, facts)
            except KeyError as missing:
                raise ValueError(
                    f"{shard}: row {row['id']} ({row['task']}) lacks {missing}: it was built by an "
                    "earlier cxr-instruct whose targets this audit does not read; rebuild OUT"
                ) from None
            cell = per_task[f"{row['profile']}/{row['task']}"]
            rows += 1
            cell["rows"] += 1
            if found:
                flagged += 1
                cell["rows_with_contradictions"] += 1
            for contradiction in found:
                kinds[contradiction.kind] += 1
                cell["contradictions"][contradiction.kind] += 1
                if len(examples[contradiction.kind]) < EXAMPLES_PER_KIND:
                    examples[contradiction.kind].append(contradiction.as_dict())
    document = {
        "version": VERSION,
        "images": len(facts),
        "rows": rows,
        "rows_with_contradictions": flagged,
        "contradictions": {kind: kinds.get(kind, 0) for kind in KINDS},
        "by_task": {
            name: {**cell, "contradictions": dict(sorted(cell["contradictions"].items()))}
            for name, cell in sorted(per_task.items())
        },
        "kinds": KINDS,
        "examples": {kind: examples[kind] for kind in KINDS if examples[kind]},
    }
    payload = json.dumps(document, indent=2).encode("utf-8") + b"\n"
    write_atomically(io.join(out_dir, FILE), lambda handle: handle.write(payload))
    record_view_files(str(out_dir), "audit", [FILE])
    return document
