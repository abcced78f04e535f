"""What every export reads and how it writes: the build's instruction shards, the profile's settings,
the sampled mixture, and the staged folder that becomes ``DEST`` only when the export has succeeded.

An export writes into a hidden sibling of ``DEST`` (``.<name>.partial-XXXX``) and renames it into place
as its last step, after ``export.json`` (every file with its size, sha256 and rows). A failed or killed
export leaves no file under ``DEST`` that a loader would read: ``DEST`` is either absent, the previous
export, or the new one whole (a kill between moving the previous export aside and renaming the new one
in is undone by the next export to ``DEST``). An existing ``DEST`` is replaced only when it is empty or
a previous export holding nothing but the files its ``export.json`` lists; a folder with anything else
in it (a checkpoint a trainer wrote there, notes) is refused, never deleted. A symbolic link as ``DEST``
and a ``DEST`` inside the build output are refused.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.output.paths import split_of
from transforms import io
from transforms.export_records import ExportError

REPORT_FILE = "export.json"


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


def iter_rows(shard: str) -> Iterator[dict]:
    """Rows of one Parquet shard, one row group in memory at a time."""
    with io.open_file(shard) as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group).to_pylist()


def build_manifest(out: str | Path) -> dict:
    """The build's ``manifest.json``."""
    path = io.join(str(out), "manifest.json")
    if not io.exists(path):
        raise ExportError(f"{out} has no manifest.json: not a finished build")
    with io.open_text(path) as handle:
        return json.load(handle)


def build_identity(manifest: dict) -> dict:
    """What ``export.json`` records of the build it read: the tool version that made it and a sha256 over
    its output shards' paths and checksums (the same for the same build wherever it is stored)."""
    outputs = sorted(manifest["outputs"], key=lambda entry: entry["path"])
    listing = "\n".join(f"{entry['path']}\t{entry['sha256']}" for entry in outputs)
    return {
        "tool_version": manifest.get("versions", {}).get("cxr-instruct"),
        "outputs_sha256": hashlib.sha256(listing.encode("utf-8")).hexdigest(),
    }


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
    (:class:`pipelines.training.loader.MixtureStream`, epoch 0 of ``seed``) instead of each row once."""

    samples: int | None = None  # default: the split's row count
    seed: int = 0
    split: str = "train"


def mixture_rows(out: str | Path, profile: str, mixture: Mixture) -> tuple[Iterator[dict], dict]:
    """The sampled rows in stream order, and the shares: per weighted task the probability ``weights.json``
    gives it among the tasks with rows in the split (``expected``) and the fraction of the samples it got
    (``realised``). A weighted task none of whose rows in the split can be drawn is listed with
    ``no_weighted_rows``; the rows of a source that a task's ``source_weights`` gives no weight (never
    drawn) are listed under ``rows_without_weight``.

    Every row group that holds a sampled row is read once, in file order; the distinct sampled rows are
    kept as one Arrow table (their text, no images) and emitted in stream order."""
    from pipelines.training.loader import LoaderError, MixtureStream

    if str(out).startswith("gs://"):
        raise ExportError("--mixture reads a local build; copy OUT locally first (gsutil -m cp -r)")
    try:
        stream = MixtureStream(
            out, profile, split=mixture.split, seed=mixture.seed, samples_per_epoch=mixture.samples, decode_images=False
        )
    except LoaderError as error:
        raise ExportError(f"--mixture: {error}") from error
    plan = stream.epoch_rows(0)
    distinct = np.unique(plan)
    order = np.lexsort((stream.row_offset[distinct], stream.row_group[distinct], stream.row_shard[distinct]))
    located = distinct[order]
    pieces: list[pa.Table] = []
    position_of: dict[int, int] = {}
    for shard, group in sorted({(int(stream.row_shard[r]), int(stream.row_group[r])) for r in located.tolist()}):
        members = located[(stream.row_shard[located] == shard) & (stream.row_group[located] == group)]
        table = pq.ParquetFile(stream.shards[shard]).read_row_group(group)
        pieces.append(table.take(pa.array(stream.row_offset[members])))
        for row_id in members.tolist():
            position_of[row_id] = len(position_of)
    rows = pa.concat_tables(pieces)
    expected: Counter = Counter()
    for (task, _source), probability in zip(stream.pools, stream.pool_probabilities.tolist()):
        expected[task] += probability
    realised = Counter(stream.row_task(int(row)) for row in plan.tolist())
    weighted = profile_settings(out, profile)["tasks"]
    tasks = {
        task: {
            "expected": round(expected[task], 6),
            "realised": round(realised[task] / len(plan), 6),
            "samples": realised[task],
        }
        for task in sorted(expected)
    }
    tasks.update(
        {
            task: {"expected": 0.0, "realised": 0.0, "samples": 0, "no_weighted_rows": True}
            for task, spec in sorted(weighted.items())
            if spec["weight"] > 0 and task not in expected
        }
    )
    never = [
        {"task": task, "source": source, "rows": splits[mixture.split]}
        for task, spec in sorted(weighted.items())
        if "source_weights" in spec
        for source, splits in sorted(spec["rows"].items())
        if splits.get(mixture.split) and not spec["source_weights"].get(source)
    ]
    shares = {
        "split": mixture.split,
        "seed": mixture.seed,
        "samples": len(plan),
        "tasks": dict(sorted(tasks.items())),
        "rows_without_weight": never,
    }
    return (rows.slice(position_of[row_id], 1).to_pylist()[0] for row_id in plan.tolist()), shares


# ------------------------------------------------------------------ writing DEST atomically


def file_entry(root: Path, path: Path, rows: int | None = None) -> dict:
    """``export.json``'s record of one written file: path relative to DEST, bytes, sha256, rows."""
    entry = {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": io.sha256_of(str(path))}
    if rows is not None:
        entry["rows"] = rows
    return entry


def write_report(staging: Path, report: dict, rows_per_file: dict[str, int]) -> dict:
    """``export.json`` in the staged folder: the report plus every file under it (sorted), with sizes,
    checksums and, for the files that hold rows, their row counts."""
    files = [
        file_entry(staging, path, rows_per_file.get(path.relative_to(staging).as_posix()))
        for path in sorted(staging.rglob("*"))
        if path.is_file()
    ]
    unknown = sorted(set(rows_per_file) - {entry["path"] for entry in files})
    if unknown:
        raise ExportError(f"export wrote no file {unknown[0]!r} that it counted rows for")
    report = {**report, "files": files}
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


def _check_replaceable(dest: Path) -> None:
    """Raise unless ``dest`` is absent, an empty folder, or an export holding only the files its
    ``export.json`` lists (anything else there is the user's, and is never deleted)."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ExportError(f"{dest} is a file, not a folder")
    present = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() or p.is_symlink())
    if not present:
        return
    try:
        report = json.loads((dest / REPORT_FILE).read_text(encoding="utf-8"))
        if "format" not in report:
            raise KeyError("format")
        listed = {entry["path"] for entry in report["files"]} | {REPORT_FILE}
    except (OSError, ValueError, KeyError, TypeError):
        raise ExportError(
            f"{dest} holds files and is not an export (no readable {REPORT_FILE}); choose an empty or new folder"
        ) from None
    extra = [path for path in present if path not in listed]
    if extra:
        raise ExportError(
            f"{dest} holds {len(extra)} files its {REPORT_FILE} does not list (e.g. {extra[0]}); "
            "an export never deletes them: move them out or choose another folder"
        )


def _recover(dest: Path) -> None:
    """Under the lock: put back a previous export a kill stranded between the two renames, and remove the
    staged folders of killed exports."""
    previous = dest.parent / f".{dest.name}.previous"
    if previous.exists():
        if dest.exists():
            shutil.rmtree(previous)
        else:
            previous.rename(dest)
    for stale in dest.parent.glob(glob.escape(f".{dest.name}.partial-") + "*"):
        shutil.rmtree(stale)


@contextmanager
def staged_folder(dest: str | Path, out: str | Path | None = None) -> Iterator[Path]:
    """An empty hidden sibling of ``dest`` to write into; renamed to ``dest`` when the block ends without an
    exception, removed when it raises (see the module docstring). One export at a time per DEST: a lock
    file ``.<name>.lock`` beside it is held throughout."""
    dest = Path(dest).absolute()
    if dest.is_symlink():
        raise ExportError(f"{dest} is a symbolic link; give the folder it points to ({dest.resolve()})")
    if out is not None and not str(out).startswith("gs://") and dest.resolve().is_relative_to(Path(out).resolve()):
        raise ExportError(f"{dest} is inside the build output {out}; export next to it instead")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"another export is writing {dest}") from None
        _recover(dest)
        _check_replaceable(dest)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            yield staging
            previous = dest.parent / f".{dest.name}.previous"
            if dest.exists():
                dest.rename(previous)
            try:
                staging.rename(dest)
            except BaseException:
                if previous.exists():
                    previous.rename(dest)
                raise
            if previous.exists():
                shutil.rmtree(previous)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
