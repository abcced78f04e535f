"""``OUT/run.json``: what one run of ``cxr-instruct build`` did, for people and for scripts.

The manifest describes the dataset and is the same for every run of the same inputs; the run record
describes the run: when it started and ended, each stage's items and wall time (pipelines/beam/progress.py),
per source what was read, written, rejected and filtered (records and items apart), the most frequent
reject reasons, and where the outputs are. The terminal summary prints the same record. It is not a
dataset file: ``publish`` leaves it out, ``verify`` ignores it.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.output.atomic import write_atomically
from transforms import io

FILE = "run.json"
TOP_REASONS = 10


def _items(entry: dict, kind: str) -> int:
    """Item-level rejects (``kind`` "rejected" or "filtered") of a manifest count entry."""
    return sum(n for measure, n in entry["item_rejects"].items() if measure.startswith(f"{kind}:"))


def source_counts(manifest: dict) -> dict[str, dict]:
    """Per source: records read / written / rejected / filtered, items rejected / filtered, reconciled."""
    return {
        source: {
            "read": entry["read"],
            "written": entry["written"],
            "rejected": sum(entry["rejected"].values()),
            "filtered": sum(entry["filtered"].values()),
            "rejected_items": _items(entry, "rejected"),
            "filtered_items": _items(entry, "filtered"),
            "reconciled": entry["reconciled"],
        }
        for source, entry in manifest["counts"].items()
    }


def reject_reasons(out_dir: str, top: int = TOP_REASONS) -> list[dict]:
    """The most frequent (source, stage, kind, reason) of the rejects table, most frequent first."""
    counts: Counter = Counter()
    for path in io.glob(io.join(out_dir, "rejects", "*.parquet")):
        with FileSystems.open(path) as handle:
            table = pq.read_table(handle, columns=["source", "stage", "kind", "reason"])
        counts.update(zip(*(table.column(name).to_pylist() for name in ("source", "stage", "kind", "reason"))))
    return [
        {"source": s, "stage": st, "kind": k, "reason": r, "count": n}
        for (s, st, k, r), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    ]


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def run_record(
    out_dir: str, manifest: dict, stages: dict, started: float, finished: float, outcome: str = "built"
) -> dict:
    """The record of one run (``outcome``: "built", or "already built" when nothing had to run)."""
    return {
        "outcome": outcome,
        "started": _stamp(started),
        "finished": _stamp(finished),
        "wall_seconds": round(finished - started, 3),
        "stages": stages,
        "sources": source_counts(manifest),
        "top_reject_reasons": reject_reasons(out_dir),
        "tables": manifest["tables"],
        "pools_without_rows": profile_pools_without_rows(out_dir, manifest),
        "checks": manifest["checks"],
        "outputs": {
            "folder": out_dir,
            "manifest": io.join(out_dir, "manifest.json"),
            "run": io.join(out_dir, FILE),
            "files": len(manifest["outputs"]),
        },
    }


def profile_pools_without_rows(out_dir: str, manifest: dict) -> dict[str, list[dict]]:
    """Per profile, the weighted (task, source) pools its ``weights.json`` reports with no rows."""
    found = {}
    for profile in manifest.get("profiles", []):
        with io.open_text(io.join(out_dir, "instructions", profile, "weights.json")) as handle:
            empty = json.load(handle).get("pools_without_rows", [])
        if empty:
            found[profile] = empty
    return found


def write_run_record(out_dir: str, record: dict) -> None:
    """``OUT/run.json``, written under a temporary name and renamed."""
    payload = json.dumps(record, indent=2).encode("utf-8") + b"\n"
    write_atomically(io.join(out_dir, FILE), lambda handle: handle.write(payload))
