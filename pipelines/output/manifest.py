"""``manifest.json``: config, versions, input fingerprints, reconciled counts, output checksums.

It holds no wall-clock time, so two builds of the same inputs and config write the same manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from pipelines.output.atomic import write_atomically
from pipelines.output.paths import split_of
from schemas.config import BuildConfig
from transforms import io
from transforms.sources import read_plans
from transforms.sources.plan import ReadPlan
from transforms.tasks import Profile

PACKAGES = (
    "cxr-instruct",
    "apache-beam",
    "pyarrow",
    "numpy",
    "pydicom",
    "opencv-python-headless",
    "shapely",
    "pydantic",
    "datasets",
)

SHARD_FIELDS = ("path", "table", "split", "rows", "bytes", "sha256")  # one entry of "outputs", in this order


CODE_PACKAGES = ("manifests", "pipelines", "schemas", "transforms")


def code_fingerprint() -> str:
    """SHA-256 over this package's own code and data files (``.py``, ``.yaml``, ``.json`` of
    :data:`CODE_PACKAGES`, by relative path): which code made a build, which a version number alone
    does not pin between releases. The same for an editable clone and an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".yaml", ".json") and "__pycache__" not in path.parts:
                digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """The versions of the packages a build's output depends on, and :func:`code_fingerprint`."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["cxr-instruct code"] = code_fingerprint()
    return found


LISTING_THREADS = 16
"""Listings (and hashes) run at once while fingerprinting: object-store listing is round-trip bound."""


def input_files(plans: dict[str, ReadPlan]) -> dict[str, dict[str, FileMetadata]]:
    """Per source, every file its read plan reads (each listing shard's matches and every table), by
    path; the listings run :data:`LISTING_THREADS` at a time."""
    patterns = sorted(
        {
            (name, pattern)
            for name, plan in plans.items()
            for pattern in [
                *(p for listing in plan.listings for p in listing.patterns()),
                *(table.path for table in plan.tables),
            ]
        }
    )
    files: dict[str, dict[str, FileMetadata]] = {name: {} for name in plans}
    with ThreadPoolExecutor(LISTING_THREADS) as pool:
        for (name, _), found in zip(patterns, pool.map(io.match, [pattern for _, pattern in patterns])):
            files[name].update((m.path, m) for m in found)
    return files


def input_fingerprints(
    config: BuildConfig,
    plans: dict[str, ReadPlan] | None = None,
    files: dict[str, dict[str, FileMetadata]] | None = None,
    hashes: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Per source: file count, total bytes and a SHA-256 over the sorted list of the files its read plan
    reads (every listing shard and every table; transforms/sources/plan.py).

    The listings run :data:`LISTING_THREADS` at a time over the plans' prefix shards, so the launcher
    does not walk a million-object tree serially before the job starts. ``config.fingerprint`` picks
    what each file contributes: ``size-mtime`` (relative path, size and modification time: one listing,
    cheap for a million files) or ``sha256`` (relative path and a hash of its content: reads every
    byte, for audits). Files under a root that no plan reads (notes, archives) do not count. ``files``
    (:func:`input_files`) and ``hashes`` (path -> SHA-256 of its content) are what a caller has already
    listed and hashed (pipelines/tools/recipe.py), used instead of listing and reading again.
    """
    sources = config.enabled_sources()
    plans = plans if plans is not None else read_plans(config)
    files = files if files is not None else input_files(plans)
    with ThreadPoolExecutor(LISTING_THREADS) as pool:
        everything = [m for name in sorted(files) for m in files[name].values()]
        if config.fingerprint == "sha256" and hashes is not None:
            contributions = [hashes[m.path] for m in everything]
        elif config.fingerprint == "sha256":
            contributions = list(pool.map(io.sha256_of, [m.path for m in everything]))
        else:
            contributions = [f"{m.size_in_bytes}\t{m.last_updated_in_seconds:.6f}" for m in everything]
    contribution = {m.path: what for m, what in zip(everything, contributions)}
    result = {}
    for name in sorted(plans):
        root = sources[name].root
        entries = [f"{io.relative(path, root)}\t{contribution[path]}" for path in sorted(files[name])]
        digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
        result[name] = {
            "root": root,
            "files": len(entries),
            "bytes": sum(m.size_in_bytes for m in files[name].values()),
            "fingerprint": config.fingerprint,
            "sha256": digest,
        }
    return result


def reconcile(counts: list[tuple[tuple[str, str], int]], sources: list[str]) -> dict[str, dict]:
    """Per source: read = written + rejected + filtered, stage by stage."""
    table: dict[str, dict] = {
        name: {"read": 0, "written": 0, "rejected": {}, "filtered": {}, "item_rejects": {}} for name in sources
    }
    emitted: dict[str, int] = defaultdict(int)
    for (source, measure), n in counts:
        entry = table.setdefault(source, {"read": 0, "written": 0, "rejected": {}, "filtered": {}, "item_rejects": {}})
        if measure == "emitted":
            emitted[source] += n
        elif measure == "written":
            entry["written"] += n
        elif measure.startswith(("rejected:", "filtered:")):
            kind, stage = measure.split(":", 1)
            entry[kind][stage] = entry[kind].get(stage, 0) + n
        elif measure.startswith("item-"):
            entry["item_rejects"][measure[len("item-") :]] = n
        else:
            raise ValueError(f"unknown count measure {measure!r}")
    for source, entry in table.items():
        at_read = entry["rejected"].get("read", 0) + entry["filtered"].get("read", 0)
        entry["read"] = emitted[source] + at_read
        out = entry["written"] + sum(entry["rejected"].values()) + sum(entry["filtered"].values())
        entry["reconciled"] = entry["read"] == out
        for key in ("rejected", "filtered", "item_rejects"):
            entry[key] = dict(sorted(entry[key].items()))
    return dict(sorted(table.items()))


def instruction_table(instruction_counts) -> dict:
    """profile -> task -> source -> split -> rows."""
    table: dict = {}
    for (profile, task, source, split), n in sorted(instruction_counts):
        table.setdefault(profile, {}).setdefault(task, {}).setdefault(source, {})[split] = n
    return table


def _write_json(path: str, doc: dict) -> dict:
    """``doc`` as ``path``, atomically (a failed write leaves the previous file intact); returns the
    file's entry for the manifest's ``files`` list (path relative to nothing: the caller sets it)."""
    payload = json.dumps(doc, indent=2).encode("utf-8") + b"\n"
    write_atomically(path, lambda handle: handle.write(payload))
    return {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def file_entry(out_dir: str, relative: str) -> dict:
    """An entry of the manifest's ``files`` (the build's files that are not table shards)."""
    data = io.read_bytes(io.join(out_dir, relative))
    return {"path": relative, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


VIEW_FOLDERS = {
    "card": ("README.md", "card/"),
    "preview": ("preview/",),
    "audit": ("audit.json",),
    "hydrate": ("hydrate.json",),
}
"""What each later command writes into OUT (a view of the build, made from it): recorded in the
manifest's ``files`` by :func:`record_view_files`, so ``verify`` checks them and a rebuild clears them."""


def record_view_files(out_dir: str, command: str, paths: list[str]) -> dict:
    """Replace ``command``'s entries in manifest.json's ``files`` by ``paths`` (relative to ``out_dir``,
    with their size and SHA-256), rewriting the manifest atomically; returns it."""
    prefixes = VIEW_FOLDERS[command]
    outside = [path for path in paths if not path.startswith(prefixes)]
    if outside:
        raise ValueError(f"{command} does not write {outside} (its files are {prefixes})")
    doc = Manifest.read(out_dir)
    kept = [entry for entry in doc.get("files", []) if not entry["path"].startswith(prefixes)]
    doc["files"] = sorted(kept + [file_entry(out_dir, path) for path in sorted(paths)], key=lambda e: e["path"])
    _write_json(io.join(out_dir, Manifest.FILE), doc)
    return doc


def record_vq_outputs(out_dir: str) -> dict:
    """Add the tokenize stage's shards (``vq/`` and ``vq/_rejects/``), their checksums and the tokenizer
    fingerprint id to an existing manifest.json, replacing earlier vq entries; returns the manifest."""
    doc = Manifest.read(out_dir)
    entries = []
    for pattern in (("vq", "*.parquet"), ("vq", "_rejects", "*.parquet")):
        for path in io.glob(io.join(out_dir, *pattern)):
            data = io.read_bytes(path)
            relative = io.relative(path, out_dir)
            table, name = relative.rsplit("/", 1)
            entries.append(
                {
                    "path": relative,
                    "table": table,
                    "split": split_of(name),
                    "rows": pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
    kept = [entry for entry in doc["outputs"] if entry["table"] not in ("vq", "vq/_rejects")]
    doc["outputs"] = sorted(kept + entries, key=lambda entry: entry["path"])
    tables = {name: splits for name, splits in doc["tables"].items() if name not in ("vq", "vq/_rejects")}
    for entry in entries:
        tables.setdefault(entry["table"], {}).setdefault(entry["split"], 0)
        tables[entry["table"]][entry["split"]] += entry["rows"]
    doc["tables"] = {name: dict(sorted(splits.items())) for name, splits in sorted(tables.items())}
    with io.open_text(io.join(out_dir, "vq", "tokenizer.json")) as handle:
        doc["tokenizer"] = json.load(handle)["id"]
    files = [entry for entry in doc.get("files", []) if not entry["path"].startswith("vq/")]
    doc["files"] = sorted(files + [file_entry(out_dir, "vq/tokenizer.json")], key=lambda entry: entry["path"])
    _write_json(io.join(out_dir, Manifest.FILE), doc)
    return doc


def same_config(recorded: dict | None, config_doc: dict) -> bool:
    """Whether a manifest's ``config`` is ``config_doc``, the order of ``profiles`` aside: a profile's
    rows, seeds and files do not depend on it, and a build of 0.1 listed the default profiles in another
    order than today's (sorted)."""

    def normal(doc: dict) -> dict:
        return {**doc, "profiles": sorted(doc.get("profiles", []))}

    return isinstance(recorded, dict) and normal(recorded) == normal(config_doc)


def finished_build(out_dir: str, config: BuildConfig, inputs: dict) -> dict | None:
    """The manifest of ``out_dir`` when it is a finished build of exactly these inputs and this config by
    this version (every listed output present at its size, ``vq/`` recorded when the config tokenizes);
    None otherwise, and then the build has to run."""
    path = io.join(out_dir, Manifest.FILE)
    if not io.exists(path):
        return None
    try:
        doc = Manifest.read(out_dir)
    except (ValueError, OSError):
        return None
    same = (
        same_config(doc.get("config"), config.model_dump(mode="json"))
        and doc.get("inputs") == inputs
        and doc.get("versions", {}).get("cxr-instruct") == versions()["cxr-instruct"]
        and (config.tokenizer is None or "tokenizer" in doc)
    )
    if not same:
        return None
    for entry in [*doc["outputs"], *doc.get("files", [])]:
        found = FileSystems.match([io.join(out_dir, entry["path"])])[0].metadata_list
        if [m.size_in_bytes for m in found] != [entry["bytes"]]:
            return None
    return doc


def pools_without_rows(
    task_weights: dict[str, float],
    source_weights: dict[str, dict[str, float]],
    rows: dict[str, dict[str, dict[str, int]]],
) -> list[dict]:
    """The weighted (task, source) pools of a profile that got no row in any split: a task with weight
    and no rows at all (source ``None``), or a source its ``source_weights`` names that has none. Their
    weight goes unused: the loader and ``export --mixture`` renormalise over the pools with rows."""
    empty = []
    for task, weight in sorted(task_weights.items()):
        if weight <= 0:
            continue
        counts = {source: sum(splits.values()) for source, splits in rows.get(task, {}).items()}
        if task not in source_weights:
            if not any(counts.values()):
                empty.append({"task": task, "source": None, "weight": weight})
            continue
        named = source_weights[task]
        total = sum(named.values())
        for source, share in sorted(named.items()):
            if share > 0 and not counts.get(source):
                empty.append({"task": task, "source": source, "weight": weight * share / total})
    return empty


class Manifest:
    """Built in the driver with what is known up front; written by the pipeline's last step."""

    FILE = "manifest.json"

    def __init__(self, config: BuildConfig, inputs: dict, profiles: list[Profile], translation: dict | None = None):
        self.config = config.model_dump(mode="json")
        self.translation = translation
        self.inputs = inputs
        self.task_weights = {p.name: {task: spec.weight for task, spec in p.tasks.items()} for p in profiles}
        self.source_weights = {
            p.name: {task: spec.source_weights for task, spec in p.tasks.items() if spec.source_weights is not None}
            for p in profiles
        }
        self.image_sizes = {p.name: p.image_size for p in profiles}
        self.geometry = {
            p.name: {"coordinates": p.coordinates, "polygon_max_vertices": p.polygon_max_vertices} for p in profiles
        }

    def document(self, counts, shards, straddling, instruction_counts=(), severity_idf=None) -> dict:
        outputs = [{field: shard[field] for field in SHARD_FIELDS} for shard in sorted(shards, key=lambda s: s["path"])]
        tables: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for shard in outputs:
            tables[shard["table"]][shard["split"]] += shard["rows"]
        sources = sorted(self.inputs)
        per_source = reconcile(sorted(counts), sources)
        return {
            "tool": "cxr-instruct",
            "versions": versions(),
            "config": self.config,
            "profiles": sorted(self.task_weights),
            "inputs": self.inputs,
            "counts": per_source,
            "tables": {name: dict(sorted(splits.items())) for name, splits in sorted(tables.items())},
            "instructions": instruction_table(instruction_counts),
            "severity_idf": severity_idf,  # fitted on the train split; applied to every row's severity_tfidf
            "translation": self.translation,  # the model that translated PadChest reports, when one did
            "outputs": outputs,
            "leakage": {
                "passed": not straddling,
                "patients_in_several_splits": len(straddling),
                "examples": sorted(straddling)[:20],
            },
            "checks": {
                "reconciled": all(entry["reconciled"] for entry in per_source.values()),
                "leakage_free": not straddling,
            },
        }

    def weights(self, profile: str, instructions: dict) -> dict:
        """``instructions/<profile>/weights.json``: task weights of the profile (with the task's
        ``source_weights`` where the profile gives them), the rows behind them, the profile's
        ``image_size`` where it names one (what export and the loader resize the images to), the
        build's ``canvas`` size, how the profile writes coordinates, and ``pools_without_rows``."""
        tasks = instructions.get(profile, {})
        source_weights = self.source_weights[profile]
        return {
            "profile": profile,
            **({"image_size": self.image_sizes[profile]} if self.image_sizes[profile] else {}),
            "canvas": self.config["image_size"],
            **self.geometry[profile],
            "pools_without_rows": pools_without_rows(self.task_weights[profile], source_weights, tasks),
            "tasks": {
                task: {
                    "weight": weight,
                    "rows": tasks.get(task, {}),
                    **(
                        {"source_weights": dict(sorted(source_weights[task].items()))} if task in source_weights else {}
                    ),
                }
                for task, weight in sorted(self.task_weights[profile].items())
            },
        }

    def write(self, out_dir: str, counts, shards, straddling, instruction_counts=(), severity_idf=None) -> dict:
        """Every file of the build besides the shards (``weights.json`` per profile), then
        ``manifest.json`` last, listing each of them with its checksum under ``files``; all atomically."""
        doc = self.document(counts, shards, straddling, instruction_counts, severity_idf)
        files = []
        for profile in sorted(self.task_weights):
            relative = f"instructions/{profile}/weights.json"
            written = _write_json(io.join(out_dir, relative), self.weights(profile, doc["instructions"]))
            files.append({"path": relative, **written})
        doc["files"] = files
        _write_json(io.join(out_dir, self.FILE), doc)
        return doc

    @classmethod
    def read(cls, out_dir: str) -> dict:
        """The manifest; a file that is not a whole JSON document (truncated, torn) raises
        :class:`ManifestUnreadable` with a one-line message."""
        path = io.join(out_dir, cls.FILE)
        text = io.read_text(path)
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ManifestUnreadable(
                f"{path}: not a whole JSON document ({len(text)} bytes; truncated or torn? {exc})"
            ) from None
        if not isinstance(doc, dict) or "outputs" not in doc:
            raise ManifestUnreadable(f"{path}: not a cxr-instruct manifest (no 'outputs')")
        return doc


class ManifestUnreadable(ValueError):
    """manifest.json exists but cannot be read as a manifest."""
