"""``cxr-instruct recipe OUT --dest DIR``: a public recipe from which a credentialed user rebuilds a build.

A recipe is a folder with nothing derived from protected content that anyone could read back:

- ``recipe.json``: the build config without local paths (each source root is its source's name), the
  tool and dependency versions, per source what the build read (file count, bytes, the manifest's
  input fingerprint, the dataset's name, release and licence), per output shard its table, split, row
  count, size, SHA-256 and rows per source, the other files' checksums (``weights.json``,
  ``vq/tokenizer.json``), aggregate counts (per table and split, per profile/task/source/split, per
  source read/written/rejected/filtered), a digest of the fitted severity IDF, the tokenizer and
  translation fingerprints, and the checksum of every other file of the recipe. Written last.
- ``inputs/<source>.sha256``: every file the source's read plan reads, as ``sha256sum`` lines
  (``<sha256>  <path relative to the root>``): ``sha256sum -c`` checks a copy with no cxr-instruct at
  all. When the build fingerprinted its inputs by size and mtime, this reads every input byte once.
- ``images/<source>.txt``: the image keys (the datasets' own ids) the build wrote, one per line.
- ``sealed.tsv``: one line per written image, in an order that says nothing about the image (sorted by
  its tag), with a 64-bit digest per table its rows are in (``images``, ``annotations``, ``vq``, each
  ``instructions/<profile>/<task>``) and the sources its rows rest on. Every value is an HMAC keyed
  by a secret only the image's own pixels give (:func:`image_secret`: the canvas PNG the build made
  from it, with its key), so only someone holding the image can find its line or check a digest:
  the file neither links a line to an image key nor lets anyone try guessed answers against it.
- ``README.md``: the card (:func:`card`), made from ``recipe.json`` and manifests/sources.yaml.

Why no per-row listing: an instruction row's id hashes its variant (``finding_grounding`` ``absent:Nodule``
against ``Nodule``, ``abnormality_detection`` ``all`` against ``none``), so a public list of row ids
and image keys gives each image's findings to anyone who hashes the few candidates; and which tasks
have rows on an image (``lesion_localization`` only where there are boxes) is a label too. The sealed
digests verify the same rows without saying any of it.

Shard SHA-256s are published as the manifest has them: the byte-identity proof anyone can check. A
shard is a hash over every byte of a Parquet file, so guessing its content means guessing every row
of it; a shard of only a few template rows is the one case where that is conceivable
(docs/recipes.md).

``hydrate`` (pipelines/hydrate.py) rebuilds from a user's own copies and checks against all of this.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipelines.manifest import LISTING_THREADS, VIEW_FOLDERS, Manifest, input_files, input_fingerprints
from pipelines.write import write_bytes_atomically
from schemas.config import BuildConfig
from schemas.records import ALL_SOURCES
from schemas.tables import TABLES
from transforms import io

FORMAT = "cxr-instruct recipe 1"
RECIPE_FILE = "recipe.json"
CARD_FILE = "README.md"
SEALED_FILE = "sealed.tsv"
INPUTS_DIR = "inputs"
KEYS_DIR = "images"

SECRET_DOMAIN = b"cxr-instruct recipe 1: image secret\0"
DIGEST_BYTES = 8
"""Tags and digests are 64 bits: enough that two images or two different row sets never meet by
chance among millions, and nobody without the image can compute one at all."""



def is_sealed(table: str) -> bool:
    """Whether a table's rows are sealed per image: ``images``, ``annotations``, ``vq`` and every
    instruction table; not ``rejects`` and ``vq/_rejects`` (no training data: their files verify whole)."""
    return table in ("images", "annotations", "vq") or table.startswith("instructions/")


IDENTIFIER_COLUMNS = {"image_key", "image_keys", "id", "key", "source", "split", "split_authority", "subject_id",
                      "study_id", "profile", "task", "template_id", "stage", "kind", "level", "reason", "view",
                      "study_datetime", "tokenizer", "annotation_sources", "source_format"}
PROTECTED_FIELDS = frozenset(column for features in TABLES.values() for column in features
                             if column not in IDENTIFIER_COLUMNS) | {"answers", "answer", "question", "text",
                                                                      "severity_idf", "leakage"}
"""Columns (and keys) that carry what the datasets protect: pixels and codes, report text, labels,
geometry, questions and answers, conversations and targets. A recipe may hold none of them as a key;
the publish guard (:func:`recipe_problems`) refuses one that does."""

MAX_TEXT = 256
"""No string in recipe.json is longer: a report or an answer smuggled in as a value is refused too."""

TOP_LEVEL = ("format", "tool", "versions", "config", "profiles", "sources", "tokenizer", "translation",
             "severity_idf_sha256", "tables", "instructions", "counts", "outputs", "files", "sealed", "recipe_files")
TOKENIZER_KEYS = {"architecture", "weights_sha256", "precision", "preprocessing", "lm_ids", "id", "trained", "origin"}
TRANSLATION_KEYS = {"method", "model", "sha256", "files", "unit", "num_beams", "max_new_tokens", "batch_size", "device"}


class RecipeError(ValueError):
    """A whole-input problem of ``recipe`` or ``hydrate``: one line (or one per fault), exit status 2."""


# ------------------------------------------------------------------ sealing


def canonical(row: dict) -> bytes:
    """A row as bytes that only its values decide: JSON with sorted keys, floats as Python writes them
    (exact), bytes as base64."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=lambda value: base64.b64encode(value).decode("ascii")).encode("utf-8")


def image_secret(image_key: str, png: bytes) -> bytes:
    """The key of an image's seals: a hash of its key and its canvas PNG under a domain of its own, so
    it is neither the published shard SHA-256 nor computable from anything the recipe holds."""
    return hashlib.sha256(SECRET_DOMAIN + image_key.encode("utf-8") + b"\0" + png).digest()


def _seal(secret: bytes, message: bytes) -> int:
    value = int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:DIGEST_BYTES], "big")
    return value or 1  # 0 marks "no rows" in the matrix


def hex64(value: int) -> str:
    return f"{value:016x}"


def group_of(path: str) -> str:
    """``instructions/m4cxr/triage/train-00000-of-00001.parquet`` -> ``instructions/m4cxr/triage``."""
    return path.rsplit("/", 1)[0]


def _row_keys(row: dict) -> list[str]:
    return list(row["image_keys"]) if "image_keys" in row else [row["image_key"]]


def _carries_severity(row: dict) -> bool:
    """The row holds MediVLM's score, which rests on an IDF fitted over every train report of the build."""
    if row.get("severity_tfidf") is not None:
        return True
    target = row.get("target")
    return isinstance(target, str) and '"severity_tfidf": ' in target and '"severity_tfidf": null' not in target


@dataclass
class Sealed:
    """A build's rows sealed per image: ``digests[i, g]`` is image ``keys[i]``'s digest of its rows in
    ``groups[g]`` (0: none), ``tags[i]`` its tag; ``source``, ``study``/``subject`` (its ids, for naming
    the files it comes from), ``covers`` (the sources that annotate it) and ``rests_on`` (its source and
    everything that annotates an image of its patient: what its rows can depend on)."""

    groups: list[str]
    keys: list[str]
    tags: np.ndarray
    digests: np.ndarray
    source: dict[str, str]
    ids: dict[str, tuple[str, ...]]
    rests_on: dict[str, tuple[str, ...]]
    severity: set[tuple[int, int]] = field(default_factory=set)
    unkeyed: dict[str, int] = field(default_factory=dict)  # group -> rows naming no written image
    shard_sources: dict[str, dict[str, int]] = field(default_factory=dict)  # shard path -> source -> rows

    def index(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.keys)}


def _read_rows(path: str) -> list[dict]:
    with io.open_file(path) as handle:
        return pq.read_table(handle).to_pylist()


def _source_of(row: dict) -> str:
    return row.get("source") or _row_keys(row)[0].split("/", 1)[0]


def seal_build(out_dir: str, manifest: dict) -> Sealed:
    """Read every shard of the sealed tables once (``images`` first: its PNGs key the rest) and seal each
    image's rows per table folder; also count each shard's rows per source (``rejects`` too)."""
    outputs = manifest["outputs"]
    shards: dict[str, list[str]] = defaultdict(list)
    for entry in outputs:
        if is_sealed(entry["table"]):
            shards[group_of(entry["path"])].append(entry["path"])
    groups = sorted(shards, key=lambda group: (group != "images", group))  # images first, then the rest
    secrets: dict[str, bytes] = {}
    source: dict[str, str] = {}
    ids: dict[str, tuple[str, ...]] = {}
    subject: dict[str, str] = {}
    covers: dict[str, set[str]] = defaultdict(set)
    severity: set[tuple[str, str]] = set()
    unkeyed: dict[str, int] = {}
    shard_sources: dict[str, dict[str, int]] = {}
    sealed: dict[str, dict[str, int]] = {}  # group -> image key -> digest

    def learn(row: dict) -> None:  # an images row: its secret and ids
        key = row["image_key"]
        secrets[key] = image_secret(key, row["image"]["bytes"])
        source[key] = row["source"]
        ids[key] = tuple(value for value in (key.split("/", 1)[1], row["study_id"], row["subject_id"]) if value)
        if row["subject_id"]:
            subject[key] = row["subject_id"]

    for group in groups:
        counts: dict[str, int] = defaultdict(int)
        sums: dict[str, int] = defaultdict(int)
        for path in sorted(shards[group]):
            per_source: dict[str, int] = defaultdict(int)
            for row in _read_rows(io.join(out_dir, path)):
                if group == "images":
                    learn(row)
                elif group == "annotations":
                    covers[row["image_key"]].update(row["annotation_sources"] or ())
                per_source[_source_of(row)] += 1
                digest = int.from_bytes(hashlib.sha256(canonical(row)).digest(), "big")
                named = [key for key in _row_keys(row) if key in secrets]
                if not named:
                    unkeyed[group] = unkeyed.get(group, 0) + 1
                carries = _carries_severity(row)
                for key in named:
                    counts[key] += 1
                    sums[key] = (sums[key] + digest) % (1 << 256)
                    if carries:
                        severity.add((key, group))
            shard_sources[path] = dict(sorted(per_source.items()))
        label = group.encode("utf-8") + b"\0"
        sealed[group] = {key: _seal(secrets[key], label + n.to_bytes(8, "big") + sums[key].to_bytes(32, "big"))
                         for key, n in counts.items()}
    keys = sorted(secrets)
    position = {key: i for i, key in enumerate(keys)}
    groups = sorted(groups)
    tags = np.array([_seal(secrets[key], b"tag") for key in keys], dtype=np.uint64)
    digests = np.zeros((len(keys), len(groups)), dtype=np.uint64)
    for g, group in enumerate(groups):
        for key, value in sealed.pop(group).items():
            digests[position[key], g] = value
    for entry in outputs:  # rejects and vq/_rejects: rows per source only
        if entry["path"] not in shard_sources:
            with io.open_file(io.join(out_dir, entry["path"])) as handle:
                column = pq.read_table(handle, columns=["source"]).column("source").to_pylist()
            found: dict[str, int] = defaultdict(int)
            for name in column:
                found[name] += 1
            shard_sources[entry["path"]] = dict(sorted(found.items()))
    patients: dict[tuple[str, str], set[str]] = defaultdict(set)
    for key, patient in subject.items():
        patients[(source[key], patient)].update(covers.get(key, ()))
    rests_on = {key: tuple(sorted({source[key], *covers.get(key, ()),
                                   *patients.get((source[key], subject.get(key)), ())})) for key in keys}
    return Sealed(groups=groups, keys=keys, tags=tags, digests=digests, source=source, ids=ids, rests_on=rests_on,
                  severity={(position[key], groups.index(group)) for key, group in severity},
                  unkeyed=unkeyed, shard_sources=shard_sources)


def sealed_lines(sealed: Sealed) -> list[str]:
    """``sealed.tsv``: a header, then one line per image sorted by tag: tag, source, rests_on, a digest
    (or nothing) per group."""
    lines = ["\t".join(["tag", "source", "rests_on", *sealed.groups])]
    body = []
    for i, key in enumerate(sealed.keys):
        cells = [hex64(int(value)) if value else "" for value in sealed.digests[i]]
        body.append("\t".join([hex64(int(sealed.tags[i])), sealed.source[key], ",".join(sealed.rests_on[key]), *cells]))
    return lines + sorted(body)


@dataclass(frozen=True)
class SealedEntry:
    source: str
    rests_on: tuple[str, ...]
    digests: dict[str, str]  # group -> hex digest (groups with rows only)


def parse_sealed(text: str, groups: list[str]) -> dict[str, SealedEntry]:
    """tag -> entry of a ``sealed.tsv`` whose header names ``groups``."""
    lines = text.splitlines()
    header = ["tag", "source", "rests_on", *groups]
    if not lines or lines[0].split("\t") != header:
        raise RecipeError(f"{SEALED_FILE}: its header is not {header[:4]}...: not this recipe's sealed rows")
    entries = {}
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise RecipeError(f"{SEALED_FILE} line {number}: {len(cells)} cells, expected {len(header)}")
        entries[cells[0]] = SealedEntry(source=cells[1], rests_on=tuple(filter(None, cells[2].split(","))),
                                        digests={group: cell for group, cell in zip(groups, cells[3:]) if cell})
    return entries


# ------------------------------------------------------------------ inputs


def hash_files(paths: list[str], threads: int = LISTING_THREADS) -> dict[str, str]:
    """path -> SHA-256 of its content, ``threads`` files at a time (object stores are latency bound)."""
    with ThreadPoolExecutor(threads) as pool:
        return dict(zip(paths, pool.map(io.sha256_of, paths)))


def sha256sum_lines(hashes: dict[str, str], root: str) -> list[str]:
    """``sha256sum`` lines, sorted by relative path."""
    lines = []
    for path, digest in hashes.items():
        relative = io.relative(path, root)
        if "\n" in relative or "\\" in relative:
            raise RecipeError(f"{path}: a file name with a newline or backslash cannot be listed in a recipe")
        lines.append((relative, f"{digest}  {relative}"))
    return [line for _, line in sorted(lines)]


def parse_sha256sum(text: str, where: str) -> dict[str, str]:
    """relative path -> sha256 of an ``inputs/<source>.sha256`` file."""
    found = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.fullmatch(r"([0-9a-f]{64})  (.+)", line)
        if not match:
            raise RecipeError(f"{where} line {number}: not a '<sha256>  <path>' line")
        found[match.group(2)] = match.group(1)
    return found


# ------------------------------------------------------------------ the document


def release_of(entry: dict) -> str | None:
    """The dataset release a source's URL names (``.../mimic-cxr/2.0.0/`` -> ``2.0.0``), if it names one."""
    match = re.search(r"/(\d+\.\d+(?:\.\d+)?)/?$", entry.get("url", ""))
    return match.group(1) if match else None


def public_config(config: dict) -> dict:
    """The build config without local paths: each root becomes its source's name, model folders a
    placeholder the hydrating user's build.yaml fills in."""
    doc = copy.deepcopy(config)
    for name, source in doc["sources"].items():
        source["root"] = name
    if doc.get("tokenizer"):
        doc["tokenizer"]["model"] = "tokenizer.model"
        if doc["tokenizer"].get("vocabulary"):
            doc["tokenizer"]["vocabulary"] = "tokenizer.vocabulary"
    if doc.get("translation"):
        doc["translation"]["model"] = "translation.model"
    return doc


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def local_paths(config: dict) -> list[str]:
    """Every local path the build config names (roots, model folders, the vocabulary file)."""
    paths = [source["root"] for source in config["sources"].values()]
    for section, keys in (("tokenizer", ("model", "vocabulary")), ("translation", ("model",))):
        if config.get(section):
            paths += [config[section][key] for key in keys if config[section].get(key)]
    return [path for path in paths if path]


def severity_digest(idf) -> str | None:
    return None if idf is None else hashlib.sha256(json.dumps(idf, sort_keys=True).encode()).hexdigest()


def recipe_document(manifest: dict, sources_yaml: dict, hashes_files: dict[str, dict], image_keys: dict[str, list[str]],
                    sealed: Sealed, tokenizer: dict | None) -> dict:
    """recipe.json without ``recipe_files`` (added when the other files are written)."""
    config = manifest["config"]
    enabled = [name for name, source in config["sources"].items() if source.get("enabled", True)]
    sources = {}
    for name in sorted(enabled):
        facts = sources_yaml["sources"].get(name, {})
        inputs = {k: v for k, v in manifest["inputs"][name].items() if k != "root"}
        sources[name] = {"name": facts.get("name", name), "release": release_of(facts), "url": facts.get("url"),
                         "access": facts.get("access"), "licence_id": facts.get("licence_id"),
                         "inputs": inputs, "hashes": f"{INPUTS_DIR}/{name}.sha256",
                         "hashes_sha256": hashes_files[name]["sha256"],
                         "images": len(image_keys.get(name, [])),
                         **({"image_keys": f"{KEYS_DIR}/{name}.txt"} if image_keys.get(name) else {})}
    view_prefixes = tuple(prefix for prefixes in VIEW_FOLDERS.values() for prefix in prefixes)
    outputs = [{**{k: entry[k] for k in ("path", "table", "split", "rows", "bytes", "sha256")},
                "sources": sealed.shard_sources.get(entry["path"], {})} for entry in manifest["outputs"]]
    return {
        "format": FORMAT,
        "tool": manifest.get("tool", "cxr-instruct"),
        "versions": manifest["versions"],
        "config": public_config(config),
        "profiles": manifest["profiles"],
        "sources": sources,
        "tokenizer": tokenizer,
        "translation": manifest.get("translation"),
        "severity_idf_sha256": severity_digest(manifest.get("severity_idf")),
        "tables": manifest["tables"],
        "instructions": manifest["instructions"],
        "counts": manifest["counts"],
        "outputs": outputs,
        "files": [entry for entry in manifest.get("files", []) if not entry["path"].startswith(view_prefixes)],
        "sealed": {"file": SEALED_FILE, "images": len(sealed.keys), "groups": sealed.groups,
                   "scheme": "per image: HMAC-SHA256 keyed by sha256(domain | image_key | 0 | canvas PNG), "
                             "first 8 bytes; tag = seal('tag'); group = seal(group | 0 | rows | sum of the rows' "
                             "sha256 mod 2^256), a row as canonical JSON (pipelines/recipe.py)"},
    }


# ------------------------------------------------------------------ the card


def card(doc: dict, sources_yaml: dict) -> str:
    """README.md of a recipe: what it is, what each source needs, how to hydrate, what you get."""
    versions = doc["versions"]
    rows = sum(n for splits in doc["tables"].values() for n in splits.values())
    lines = [
        "---", "viewer: false", "license: other", "tags:", "- medical", "- chest-x-ray", "- cxr-instruct",
        "- build-recipe", "---", "",
        "# A cxr-instruct build recipe (no data inside)", "",
        "This repository holds no images, reports, labels, boxes, answers or any other row of the datasets "
        "it was built from. It holds what you need to rebuild one exact cxr-instruct build from your own "
        "copies of those datasets, and to prove that what you rebuilt is that build, byte for byte: the "
        "build's settings, the tool and library versions, the SHA-256 of every input file, the checksum and "
        f"row count of every output file, and sealed digests of its rows. The build has "
        f"{len(doc['outputs'])} Parquet files and {rows:,} rows in all.", "",
        "## What you need", "",
        "Each dataset comes from its own provider, under its own terms; you get it there, not here.", "",
        "| source | dataset | access | licence | where | input files |", "|---|---|---|---|---|---|",
    ]
    for name, entry in doc["sources"].items():
        facts = sources_yaml["sources"].get(name, {})
        release = f" {entry['release']}" if entry.get("release") else ""
        lines.append(f"| `{name}` | {entry['name']}{release} | {entry['access']} | {facts.get('licence', '?')} "
                     f"| {entry['url']} | {entry['inputs']['files']:,} ({entry['inputs']['bytes']:,} bytes) |")
    lines += [""]
    for name, entry in doc["sources"].items():
        note = sources_yaml["sources"].get(name, {}).get("access_note")
        if note:
            lines += [f"- **{entry['name']}**: {' '.join(note.split())}"]
    pins = " ".join(f"{package}=={version}" for package, version in sorted(versions.items())
                    if package != "cxr-instruct" and version != "not installed")
    lines += [
        "", "## Rebuild it (hydrate)", "",
        f"1. Install cxr-instruct {versions.get('cxr-instruct', '?')} and the same libraries: `pip install {pins}`.",
        "2. Download this repository: `hf download <this repository> --repo-type dataset --local-dir recipe`.",
        "3. Write a `build.yaml` naming where your copies are, one root per source you have "
        "(a subset is fine; the other settings come from the recipe):", "",
        "```yaml", "sources:", *[f"  {name}: {{root: /data/{name}}}" for name in doc["sources"]], "```", "",
    ]
    if doc.get("tokenizer"):
        lines += ["   The build also tokenized its images: add `tokenizer: {model: <folder>}` with the VQ-GAN "
                  f"whose fingerprint is `{doc['tokenizer'].get('id')}` (weights SHA-256 "
                  f"`{doc['tokenizer'].get('weights_sha256', '?')}`), or leave it out and go without `vq/`.", ""]
    if doc.get("translation"):
        lines += ["   The build translated PadChest reports: add `translation: {model: <folder>}` with the model "
                  f"`{doc['translation'].get('model')}` (files SHA-256 `{doc['translation'].get('sha256')}`).", ""]
    lines += [
        "4. `cxr-instruct hydrate recipe --sources build.yaml --out out`", "",
        "`hydrate` first checks every input file against the recipe and names each one that is missing, "
        "changed or extra; then it runs the build with the recipe's settings; then it checks every output "
        "file against the recipe's SHA-256 and every image's rows against their sealed digests, and writes "
        "the outcome into `out/hydrate.json` and `out/manifest.json`. With every source it says "
        "`byte-identical` when all output files match. With some of the sources it builds what they give "
        "and says which rows match the recipe's, which need a source you lack, and why anything else "
        "differs (which file, which rows, which output files). `hydrate --check-only` checks the inputs "
        "alone; `sha256sum -c inputs/<source>.sha256`, run in a source's root, does the same without cxr-instruct.",
        "", "## What the build holds", "",
        "| profile | task | rows | sources |", "|---|---|---:|---|",
    ]
    for profile, tasks in doc["instructions"].items():
        for task, per_source in tasks.items():
            total = sum(n for splits in per_source.values() for n in splits.values())
            lines.append(f"| {profile} | {task} | {total:,} | {', '.join(sorted(per_source))} |")
    lines += ["", "| table | " + " | ".join(("train", "validation", "test")) + " |", "|---|---:|---:|---:|"]
    for table, splits in doc["tables"].items():
        if not table.startswith("instructions/"):
            counts = " | ".join(f"{splits.get(split, 0):,}" for split in ("train", "validation", "test"))
            lines.append(f"| {table} | {counts} |")
    lines += [
        "", "## What this recipe holds, and what it does not", "",
        "- `recipe.json`: settings (roots replaced by source names), versions, per source its input "
        "fingerprint, per output file its table, split, rows (per source), size and SHA-256, and counts.",
        "- `inputs/<source>.sha256`: the SHA-256 of every input file, by its path inside the dataset.",
        "- `images/<source>.txt`: the image ids the build wrote (the datasets' own ids).",
        "- `sealed.tsv`: per image, digests of its rows keyed by a secret that only the image's own pixels "
        "give. A line is not linked to an image id, and nobody without the image can compute or test one, "
        "so it tells no label, finding, answer or report of any image.",
        "- No row ids, prompts, answers, report text, labels, coordinates, pixels or image codes.", "",
        "## Citations", "",
        "Cite the datasets you rebuild from:", "",
    ]
    for name in doc["sources"]:
        citation = sources_yaml["sources"].get(name, {}).get("citation")
        if citation:
            lines += ["```bibtex", citation.strip(), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------ writing


def _recipe_listing(dest: Path) -> set[str] | None:
    """The files the recipe in ``dest`` lists (itself included), or None when there is none."""
    path = dest / RECIPE_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        return {RECIPE_FILE, *(entry["path"] for entry in doc["recipe_files"])}
    except (ValueError, KeyError, TypeError):
        return {RECIPE_FILE}  # a torn recipe.json: its own files cannot be told apart


def prepare_dest(dest: Path) -> set[str]:
    """``dest`` is new, empty or holds a recipe (whose files are replaced); anything else is refused.
    Returns the old recipe's files."""
    if dest.exists() and not dest.is_dir():
        raise RecipeError(f"--dest {dest}: is a file, not a folder")
    present = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} if dest.exists() else set()
    present = {path for path in present if not path.endswith(".partial")}
    if not present:
        return set()
    old = _recipe_listing(dest)
    if old is None:
        raise RecipeError(f"--dest {dest}: holds {len(present)} files and no recipe; name an empty folder "
                          f"(or an earlier recipe's)")
    foreign = sorted(present - old)
    if foreign:
        raise RecipeError(f"--dest {dest}: holds files that are not its recipe's ({', '.join(foreign[:5])}"
                          f"{', ...' if len(foreign) > 5 else ''}); name another folder")
    return old


@dataclass
class RecipeSummary:
    dest: Path
    files: int
    bytes: int
    images: int
    shards: int
    input_files: int
    input_bytes: int
    hash_seconds: float
    seal_seconds: float
    total_seconds: float


def make_recipe(out_dir: str, dest: str | Path) -> RecipeSummary:
    """Write the recipe of the finished build ``out_dir`` into ``dest``. The build must verify against
    its manifest, and its inputs (at the roots its config names) must be the ones its manifest
    fingerprinted: a recipe describes exactly the build."""
    from pipelines.card import load_sources
    from pipelines.verify import verify
    from transforms.sources import read_plans

    started = time.monotonic()
    out, dest = str(out_dir), Path(dest)
    old = prepare_dest(dest)
    problems = verify(out)
    if problems:
        raise RecipeError(f"{out} does not verify against its manifest ({len(problems)} problem(s), first: "
                          f"{problems[0]}); run `cxr-instruct verify {out}`")
    manifest = Manifest.read(out)
    config = BuildConfig.model_validate(manifest["config"])
    try:
        plans = read_plans(config)
    except (FileNotFoundError, ValueError, OSError) as unreadable:
        raise RecipeError(f"the build's inputs cannot be read at the roots its manifest names: {unreadable}") from None
    files = input_files(plans)
    hash_started = time.monotonic()
    hashes = hash_files(sorted(path for found in files.values() for path in found))
    hash_seconds = time.monotonic() - hash_started
    now = input_fingerprints(config, plans, files, hashes)
    changed = [name for name in sorted(now) if {k: now[name][k] for k in ("files", "bytes", "sha256")}
               != {k: manifest["inputs"].get(name, {}).get(k) for k in ("files", "bytes", "sha256")}]
    if changed:
        raise RecipeError(f"the inputs of {', '.join(changed)} are not the ones the build read (manifest.json "
                          f"fingerprint {config.fingerprint}): rebuild {out}, then make its recipe")
    seal_started = time.monotonic()
    sealed = seal_build(out, manifest)
    seal_seconds = time.monotonic() - seal_started
    if sealed.unkeyed:
        raise RecipeError(f"rows that name no written image: {sealed.unkeyed}; the build is not whole")
    payloads: dict[str, bytes] = {}
    hashes_files = {}
    for name in sorted(files):
        root = config.sources[name].root
        text = "".join(line + "\n" for line in sha256sum_lines({p: hashes[p] for p in files[name]}, root)).encode()
        payloads[f"{INPUTS_DIR}/{name}.sha256"] = text
        hashes_files[name] = {"sha256": hashlib.sha256(text).hexdigest()}
    image_keys: dict[str, list[str]] = defaultdict(list)
    for key in sealed.keys:
        image_keys[sealed.source[key]].append(key)
    for name, keys in sorted(image_keys.items()):
        payloads[f"{KEYS_DIR}/{name}.txt"] = "".join(key + "\n" for key in keys).encode()
    payloads[SEALED_FILE] = "".join(line + "\n" for line in sealed_lines(sealed)).encode()
    tokenizer = None
    if any(entry["path"] == "vq/tokenizer.json" for entry in manifest.get("files", [])):
        tokenizer = json.loads(io.read_text(io.join(out, "vq", "tokenizer.json")))
    sources_yaml = load_sources()
    doc = recipe_document(manifest, sources_yaml, hashes_files, image_keys, sealed, tokenizer)
    leaked = sorted({path for path in local_paths(manifest["config"]) for text in _strings(doc) if path in text})
    if leaked:
        raise RuntimeError(f"recipe.json would name local paths {leaked}: refusing to write it")
    payloads[CARD_FILE] = card(doc, sources_yaml).encode()
    doc["recipe_files"] = [{"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                           for path, data in sorted(payloads.items())]
    dest.mkdir(parents=True, exist_ok=True)
    for path, data in sorted(payloads.items()):
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(str(dest / path), data)
    document = json.dumps(doc, indent=1, sort_keys=False).encode() + b"\n"
    write_bytes_atomically(str(dest / RECIPE_FILE), document)
    for stale in sorted(old - set(payloads) - {RECIPE_FILE}):
        (dest / stale).unlink(missing_ok=True)
    return RecipeSummary(dest=dest, files=len(payloads) + 1, bytes=sum(map(len, payloads.values())) + len(document),
                         images=len(sealed.keys), shards=len(manifest["outputs"]),
                         input_files=len(hashes), input_bytes=sum(m.size_in_bytes for found in files.values()
                                                                 for m in found.values()),
                         hash_seconds=hash_seconds, seal_seconds=seal_seconds,
                         total_seconds=time.monotonic() - started)


# ------------------------------------------------------------------ reading and guarding


@dataclass
class Recipe:
    folder: Path
    doc: dict
    sha256: str  # of recipe.json

    @property
    def sources(self) -> dict[str, dict]:
        return self.doc["sources"]

    def text(self, relative: str) -> str:
        return (self.folder / relative).read_text(encoding="utf-8")

    def hashes(self, source: str) -> dict[str, str]:
        return parse_sha256sum(self.text(self.sources[source]["hashes"]), self.sources[source]["hashes"])

    def image_keys(self, source: str) -> list[str]:
        where = self.sources[source].get("image_keys")
        return self.text(where).split() if where else []

    def sealed(self) -> dict[str, SealedEntry]:
        return parse_sealed(self.text(SEALED_FILE), self.doc["sealed"]["groups"])


def recipe_folder(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.name == RECIPE_FILE else path


def read_recipe(path: str | Path) -> Recipe:
    """The recipe in folder ``path`` (or its recipe.json), every file checked against the checksums
    recipe.json lists: a torn, edited or incomplete recipe raises :class:`RecipeError`."""
    folder = recipe_folder(path)
    file = folder / RECIPE_FILE
    if not file.is_file():
        raise RecipeError(f"{folder}: no {RECIPE_FILE} (is it a recipe folder from `cxr-instruct recipe`?)")
    data = file.read_bytes()
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RecipeError(f"{file}: not a whole JSON document ({len(data)} bytes; torn? {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise RecipeError(f"{file}: not a recipe of this version (format {found!r}, expected {FORMAT!r})")
    problems = integrity_problems(folder, doc)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise RecipeError(f"{folder}: " + "; ".join(problems[:5]) + more + ": make or download the recipe again")
    return Recipe(folder=folder, doc=doc, sha256=hashlib.sha256(data).hexdigest())


def integrity_problems(folder: Path, doc: dict) -> list[str]:
    problems = []
    for entry in doc.get("recipe_files", []):
        path = folder / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} missing")
            continue
        data = path.read_bytes()
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']} is not the file recipe.json lists (edited or torn)")
    return problems


_GROUP = re.compile(r"(images|annotations|vq|vq/_rejects|instructions/[a-z0-9-]+/[a-z0-9_]+)")
_HEX16 = r"[0-9a-f]{16}"


def _key_problems(value, where: str) -> list[str]:
    """Protected keys and long strings anywhere in a JSON value (the tokenizer and translation
    fingerprints are checked against their own key lists instead)."""
    problems = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in PROTECTED_FIELDS:
                problems.append(f"{where}.{key}: a field that carries protected content")
            problems += _key_problems(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += _key_problems(item, f"{where}[{i}]")
    elif isinstance(value, str) and len(value) > MAX_TEXT:
        problems.append(f"{where}: a text of {len(value)} characters (recipes hold ids, names and checksums)")
    return problems


def recipe_problems(folder: str | Path, paths: list[str] | None = None) -> list[str]:
    """Why the recipe folder may not go public, checking only what a recipe may hold: its own files
    (``paths``: the files to be sent; default every file), each a checksum recipe.json lists, recipe.json
    with known sections only and no protected field or long text, lines of the right shape in the hash,
    id and sealed files, and the card as the recipe makes it. Empty: fit to publish."""
    from pipelines.card import load_sources

    folder = Path(folder)
    try:
        recipe = read_recipe(folder)
    except RecipeError as error:
        return [str(error)]
    doc = recipe.doc
    problems = []
    sources = doc.get("sources", {})
    allowed = {RECIPE_FILE, CARD_FILE, SEALED_FILE}
    allowed |= {f"{INPUTS_DIR}/{name}.sha256" for name in sources if name in ALL_SOURCES}
    allowed |= {f"{KEYS_DIR}/{name}.txt" for name in sources if name in ALL_SOURCES}
    listed = {entry["path"] for entry in doc.get("recipe_files", [])} | {RECIPE_FILE}
    if paths is None:
        paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    for path in paths:
        if path not in allowed:
            problems.append(f"{path}: not a file a recipe holds")
        elif path not in listed:
            problems.append(f"{path}: not listed in recipe.json")
    unknown = sorted(set(doc) - set(TOP_LEVEL))
    problems += [f"recipe.json: unknown section {key!r}" for key in unknown]
    for key in TOP_LEVEL:
        if key in ("tokenizer", "translation"):
            continue
        problems += _key_problems(doc.get(key), f"recipe.json {key}")
    for key, known in (("tokenizer", TOKENIZER_KEYS), ("translation", TRANSLATION_KEYS)):
        section = doc.get(key)
        if section is not None:
            extra = sorted(set(section) - known) if isinstance(section, dict) else ["(not a mapping)"]
            problems += [f"recipe.json {key}.{name}: not a fingerprint field" for name in extra]
    groups = doc.get("sealed", {}).get("groups", [])
    problems += [f"recipe.json sealed.groups: {g!r} is not a table folder" for g in groups if not _GROUP.fullmatch(g)]
    for path in paths:
        if path not in allowed or not (folder / path).is_file():
            continue
        data = (folder / path).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{path}: not UTF-8 text")
            continue
        if "\0" in text:
            problems.append(f"{path}: holds NUL bytes")
            continue
        problems += _line_problems(path, text, groups, set(sources))
    if (folder / CARD_FILE).is_file() and not problems:
        expected = card({k: v for k, v in doc.items() if k != "recipe_files"}, load_sources())
        if (folder / CARD_FILE).read_text(encoding="utf-8") != expected:
            problems.append(f"{CARD_FILE}: not the card this recipe makes (edited?); make the recipe again")
    return problems


def _line_problems(path: str, text: str, groups: list[str], sources: set[str]) -> list[str]:
    lines = text.splitlines()
    if path.startswith(f"{INPUTS_DIR}/"):
        pattern = re.compile(r"[0-9a-f]{64}  [^\t]+")
    elif path.startswith(f"{KEYS_DIR}/"):
        source = path.removeprefix(f"{KEYS_DIR}/").removesuffix(".txt")
        pattern = re.compile(re.escape(source) + r"/\S+")
    elif path == SEALED_FILE:
        if not lines or lines[0] != "\t".join(["tag", "source", "rests_on", *groups]):
            return [f"{path}: header does not name recipe.json's sealed groups"]
        names = "|".join(re.escape(name) for name in sorted(sources)) or "-"
        pattern = re.compile(rf"{_HEX16}\t({names})\t(({names})(,({names}))*)" + rf"\t(?:{_HEX16})?" * len(groups))
        lines = lines[1:]
    else:
        return []
    bad = [number for number, line in enumerate(lines, start=1) if not pattern.fullmatch(line)]
    return [f"{path}: {len(bad)} line(s) not of a recipe's shape (first: line {bad[0]})"] if bad else []


# ------------------------------------------------------------------ command line


def _recipe_command():
    import click
    from rich.console import Console

    from pipelines.paths import BUILD_OUTPUT, LOCAL_FOLDER

    console = Console()

    @click.command("recipe")
    @click.argument("out", type=BUILD_OUTPUT)
    @click.option("--dest", type=LOCAL_FOLDER, required=True,
                  help="Folder to write the recipe into (new, empty, or an earlier recipe's).")
    def recipe(out: str, dest: Path) -> None:
        """Write a public recipe of the finished build OUT into DEST: settings without local paths,
        versions, every input file's SHA-256, every output file's checksum and rows, and sealed row
        digests; nothing derived from protected content that anyone could read back (docs/recipes.md).

        Reads every input byte once when the build fingerprinted by size and mtime. Publish it with
        `cxr-instruct publish DEST --repo user/name --public`; others rebuild with `cxr-instruct hydrate`."""
        try:
            with console.status("hashing the inputs and sealing the rows"):
                summary = make_recipe(out, dest)
        except RecipeError as refused:
            for line in str(refused).splitlines():
                console.print(f"recipe: {line}", style="red", markup=False, highlight=False, soft_wrap=True)
            raise SystemExit(2)
        rate = summary.input_bytes / max(summary.hash_seconds, 1e-9) / 1e6
        console.print(f"recipe: {summary.dest}  ({summary.files} files, {summary.bytes:,} bytes; {summary.shards} "
                      f"output files, {summary.images:,} images sealed)", markup=False, highlight=False, soft_wrap=True)
        console.print(f"hashed {summary.input_files:,} input files, {summary.input_bytes / 1e6:,.1f} MB in "
                      f"{summary.hash_seconds:.1f} s ({rate:,.0f} MB/s); sealed the rows in "
                      f"{summary.seal_seconds:.1f} s; {summary.total_seconds:.1f} s in all",
                      markup=False, highlight=False, soft_wrap=True)
        console.print(f"next: cxr-instruct publish {summary.dest} --repo user/name --public --dry-run",
                      markup=False, highlight=False, soft_wrap=True)

    return recipe


recipe_command = _recipe_command()
