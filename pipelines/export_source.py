"""What every export reads and how it writes: the build's instruction shards, the profile's settings,
the sampled mixture, and the staged folder that becomes ``DEST`` only when the export has succeeded.

An export writes into a hidden sibling of ``DEST`` (``.<name>.partial-<pid>``) and renames it into place
as its last step, after ``export.json`` (every file with its size, sha256 and rows). A failed or killed
export leaves no file under ``DEST`` that a loader would read: ``DEST`` is either absent, the previous
export, or the new one whole. An existing ``DEST`` is replaced only when it is empty or a previous export
(it holds ``export.json``); anything else is refused rather than deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from transforms import io

REPORT_FILE = "export.json"


class ExportError(ValueError):
    """The build output cannot be exported as asked (missing table, image, VQ codes, bad row)."""


# ------------------------------------------------------------------ reading the build output


def instruction_shards(out: str | Path, profile: str, splits: tuple[str, ...] = ()) -> list[str]:
    """The instruction shards of a profile (all tasks), sorted; only the given splits when any."""
    root = io.join(str(out), "instructions", profile)
    if not io.exists(io.join(root, "weights.json")):
        raise ExportError(f"no profile {profile!r} in {out} (missing {io.join(root, 'weights.json')})")
    shards = io.glob(io.join(root, "*", "*.parquet"))
    if splits:
        shards = [p for p in shards if split_of(p) in splits]
    if not shards:
        raise ExportError(f"profile {profile!r} has no instruction shards for splits {list(splits) or 'any'}")
    return shards


def shards_by_split(out: str | Path, profile: str, splits: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """:func:`instruction_shards` grouped by split, splits in sorted order."""
    grouped: dict[str, list[str]] = {}
    for shard in instruction_shards(out, profile, splits):
        grouped.setdefault(split_of(shard), []).append(shard)
    return dict(sorted(grouped.items()))


def split_of(shard: str | Path) -> str:
    """``train-00000-of-00002.parquet`` -> ``train``."""
    return io.basename(str(shard)).rsplit("-", 3)[0]


def iter_rows(shard: str) -> Iterator[dict]:
    """Rows of one Parquet shard, one row group in memory at a time."""
    with io.open_file(shard) as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group).to_pylist()


def profile_settings(out: str | Path, profile: str) -> dict:
    """The profile's ``weights.json`` (task weights and rows, ``image_size``, ``coordinates``)."""
    path = io.join(str(out), "instructions", profile, "weights.json")
    if not io.exists(path):
        raise ExportError(f"no profile {profile!r} in {out} (missing {path})")
    with io.open_text(path) as handle:
        return json.load(handle)


# ------------------------------------------------------------------ the sampled mixture


@dataclass(frozen=True)
class Mixture:
    """``--mixture``: the train split written as ``samples`` rows drawn by the profile's weights
    (:class:`pipelines.loader.MixtureStream`, epoch 0 of ``seed``) instead of each row once."""

    samples: int | None = None  # default: the split's row count
    seed: int = 0
    split: str = "train"


def mixture_rows(out: str | Path, profile: str, mixture: Mixture) -> tuple[Iterator[dict], dict]:
    """The sampled rows in stream order, and the shares: per task the probability ``weights.json``
    gives it (``expected``) and the fraction of the samples it got (``realised``)."""
    from pipelines.loader import LoaderError, MixtureStream

    if str(out).startswith("gs://"):
        raise ExportError("--mixture reads a local build; copy OUT locally first (gsutil -m cp -r)")
    try:
        stream = MixtureStream(out, profile, split=mixture.split, seed=mixture.seed,
                               samples_per_epoch=mixture.samples, decode_images=False)
    except LoaderError as error:
        raise ExportError(f"--mixture: {error}") from error
    expected: Counter = Counter()
    for (task, _source), probability in zip(stream.pools, stream.pool_probabilities.tolist()):
        expected[task] += probability
    plan = stream.epoch_rows(0)
    realised = Counter(stream.row_task(int(row)) for row in plan.tolist())
    shares = {
        "split": mixture.split, "seed": mixture.seed, "samples": int(len(plan)),
        "tasks": {task: {"expected": round(expected[task], 6), "realised": round(realised[task] / len(plan), 6),
                         "samples": realised[task]} for task in sorted(expected)},
    }
    return (stream.row(position) for position in range(len(plan))), shares


# ------------------------------------------------------------------ writing DEST atomically


def file_entry(root: Path, path: Path, rows: int | None = None) -> dict:
    """``export.json``'s record of one written file: path relative to DEST, bytes, sha256, rows."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    entry = {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    if rows is not None:
        entry["rows"] = rows
    return entry


def write_report(staging: Path, report: dict, rows_per_file: dict[str, int]) -> dict:
    """``export.json`` in the staged folder: the report plus every file under it (sorted), with sizes,
    checksums and, for the files that hold rows, their row counts."""
    files = [file_entry(staging, path, rows_per_file.get(path.relative_to(staging).as_posix()))
             for path in sorted(staging.rglob("*")) if path.is_file()]
    unknown = sorted(set(rows_per_file) - {entry["path"] for entry in files})
    if unknown:
        raise ExportError(f"export wrote no file {unknown[0]!r} that it counted rows for")
    report = {**report, "files": files}
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


@contextmanager
def staged_folder(dest: str | Path) -> Iterator[Path]:
    """An empty hidden sibling of ``dest`` to write into; renamed to ``dest`` when the block ends without
    an exception, removed when it raises (see the module docstring)."""
    dest = Path(dest).absolute()
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / REPORT_FILE).is_file())):
        raise ExportError(f"{dest} exists and is not an export (no {REPORT_FILE}); choose an empty or new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.partial-*"):  # left by a killed export
        shutil.rmtree(stale, ignore_errors=True)
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = dest.parent / f".{dest.name}.previous-{os.getpid()}"
    if dest.exists():
        dest.rename(previous)
    staging.rename(dest)
    shutil.rmtree(previous, ignore_errors=True)
