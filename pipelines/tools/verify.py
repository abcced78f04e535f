"""``cxr-instruct verify OUT``: re-check a finished build against its ``manifest.json``.

Checks every listed output file (present, size, SHA-256, Parquet row count, at least one row: a
zero-row shard does not load with ``datasets``), that the per-table totals and the instruction counts
agree with the shards, that ``read = written + rejected + filtered`` holds per source, that the
rejects table holds one row per counted reject, that the build's own checks passed, and that no
unlisted shard sits in a table folder (a stale shard would be picked up by a ``<split>-*.parquet``
glob). Also checks the other files that manifest.json lists under ``files`` by size and SHA-256: each
profile's ``instructions/<profile>/weights.json``, ``vq/tokenizer.json`` after tokenize, and what
later commands wrote into OUT and recorded there (``README.md`` and ``card/`` by ``card``,
``preview/`` by ``preview``, ``audit.json`` by ``audit``: pipelines/output/manifest.py ``record_view_files``);
reports a manifest.json that is missing or not a whole JSON document in one line. Reads Parquet
footers only, never row data. Not checked: ``run.json``, the local record of the last run.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pipelines.output.manifest import Manifest, ManifestUnreadable
from pipelines.output.table_files import parquet_rows
from transforms import io

TABLE_ROOTS = ("images", "annotations", "instructions", "rejects", "vq")
"""Folders whose every ``*.parquet`` file must be listed in the manifest (the tokenize stage adds ``vq/``)."""


def check_outputs(out_dir: str, outputs: list[dict], present: dict[str, int]) -> list[str]:
    """Problems with the listed files: missing, wrong size, wrong checksum, wrong row count. ``present``
    is :func:`transforms.io.sizes_under` of the output."""
    problems = []
    for entry in outputs:
        if entry["path"] not in present:
            problems.append(f"{entry['path']}: missing")
            continue
        path = io.join(out_dir, entry["path"])
        size = present[entry["path"]]
        if size != entry["bytes"]:
            problems.append(f"{entry['path']}: {size} bytes, manifest says {entry['bytes']}")
        sha = io.sha256_of(path)
        if sha != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 {sha[:12]}..., manifest says {entry['sha256'][:12]}...")
            continue  # a corrupt file's footer may not parse; the checksum already says what is wrong
        rows = parquet_rows(path)
        if rows != entry["rows"]:
            problems.append(f"{entry['path']}: {rows} rows, manifest says {entry['rows']}")
        if rows == 0:
            problems.append(f"{entry['path']}: zero rows (`datasets` cannot load a zero-row Parquet file)")
    return problems


def check_files(out_dir: str, files: list[dict], present: dict[str, int]) -> list[str]:
    """The build's files besides the shards (``instructions/<profile>/weights.json``, ``vq/tokenizer.json``):
    present, size and SHA-256 as manifest.json lists them."""
    problems = []
    for entry in files:
        if entry["path"] not in present:
            problems.append(f"{entry['path']}: missing")
            continue
        if present[entry["path"]] != entry["bytes"]:
            problems.append(f"{entry['path']}: {present[entry['path']]} bytes, manifest says {entry['bytes']}")
        sha = io.sha256_of(io.join(out_dir, entry["path"]))
        if sha != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 {sha[:12]}..., manifest says {entry['sha256'][:12]}...")
    return problems


def check_weights_listed(manifest: dict) -> list[str]:
    """Every profile's ``weights.json`` is among the listed files (a manifest from before they were listed
    cannot vouch for them)."""
    listed = {entry["path"] for entry in manifest.get("files", [])}
    return [
        f"instructions/{profile}/weights.json: not listed in manifest.json files"
        for profile in manifest.get("profiles", [])
        if f"instructions/{profile}/weights.json" not in listed
    ]


def check_unlisted(outputs: list[dict], present: dict[str, int]) -> list[str]:
    """Parquet files under the table folders that the manifest does not list."""
    listed = {entry["path"] for entry in outputs}
    found = sorted(path for path in present if path.endswith(".parquet") and path.split("/", 1)[0] in TABLE_ROOTS)
    return [f"{path}: not listed in manifest.json outputs" for path in found if path not in listed]


def check_tables(manifest: dict) -> list[str]:
    """``tables`` and ``instructions`` agree with the rows of the listed shards."""
    problems = []
    from_shards: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entry in manifest["outputs"]:
        from_shards[entry["table"]][entry["split"]] += entry["rows"]
    tables = manifest["tables"]
    for table in sorted(set(tables) | set(from_shards)):
        stated, summed = tables.get(table, {}), dict(from_shards.get(table, {}))
        if stated != summed:
            problems.append(f"tables[{table!r}] = {stated}, shards add up to {summed}")
    for profile, tasks in manifest["instructions"].items():
        for task, per_source in tasks.items():
            per_split: dict[str, int] = defaultdict(int)
            for splits in per_source.values():
                for split, n in splits.items():
                    per_split[split] += n
            table = f"instructions/{profile}/{task}"
            if dict(per_split) != tables.get(table, {}):
                problems.append(
                    f"instructions[{profile!r}][{task!r}] add up to {dict(per_split)}, "
                    f"tables[{table!r}] = {tables.get(table, {})}"
                )
    return problems


def check_reconciliation(manifest: dict) -> list[str]:
    """Per source ``read = written + rejected + filtered``; the rejects table holds every counted reject;
    the build's own checks passed."""
    problems = []
    counted_rejects = 0
    for source, entry in manifest["counts"].items():
        rejected, filtered = sum(entry["rejected"].values()), sum(entry["filtered"].values())
        counted_rejects += rejected + filtered + sum(entry["item_rejects"].values())
        if entry["read"] != entry["written"] + rejected + filtered:
            problems.append(
                f"counts[{source!r}]: read {entry['read']} != written {entry['written']} "
                f"+ rejected {rejected} + filtered {filtered}"
            )
        if not entry["reconciled"]:
            problems.append(f"counts[{source!r}]: marked not reconciled")
    reject_rows = sum(manifest["tables"].get("rejects", {}).values())
    if reject_rows != counted_rejects:
        problems.append(f"rejects table has {reject_rows} rows, counts name {counted_rejects} rejects")
    problems += [f"checks[{name!r}] is false" for name, passed in manifest["checks"].items() if not passed]
    return problems


def verify(out_dir: str | Path) -> list[str]:
    """Every problem found in a build output (a local folder or a ``gs://`` URI); an empty list means
    it verifies."""
    out = str(out_dir)
    present = io.sizes_under(out)
    if Manifest.FILE not in present:
        return [f"{io.join(out, Manifest.FILE)}: missing (is {out} a cxr-instruct build output?)"]
    try:
        manifest = Manifest.read(out)
    except ManifestUnreadable as unreadable:
        return [str(unreadable)]
    return (
        check_outputs(out, manifest["outputs"], present)
        + check_unlisted(manifest["outputs"], present)
        + check_files(out, manifest.get("files", []), present)
        + check_weights_listed(manifest)
        + check_tables(manifest)
        + check_reconciliation(manifest)
    )
