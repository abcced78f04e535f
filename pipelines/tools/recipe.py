"""``cxr-instruct recipe OUT --dest DIR``: a public recipe from which a credentialed user rebuilds a build.

A recipe is a folder with nothing derived from protected content that anyone could read back:

- ``recipe.json``: the build config without local paths (each source root is its source's name), the
  tool and dependency versions (the build's, with the code fingerprint) and ``runtime`` (Python, machine
  and the further libraries that decide bytes, as installed where the recipe is made), per source what
  the build read (file count, bytes, the manifest's input fingerprint, the dataset's name, release and
  licence as manifests/sources.yaml has them), per output file its table, split, row count, rows per
  source and *sealed* SHA-256, the other files' checksums (``weights.json``, ``vq/tokenizer.json``),
  aggregate counts, a digest of the fitted severity IDF, the tokenizer and translation fingerprints, and
  the checksum of every other file of the recipe. Written last, field by field (nothing of the manifest
  is copied whole), and of the allowlisted shape :func:`schema_problems` checks.
- ``inputs/<source>.sha256``: every file the source's read plan reads, by its path relative to the root
  (a safe character set, bounded length). The source's *anchors* (:func:`anchors_of`: the plan's tables,
  or its largest file when it reads none) as ``sha256sum`` lines (``<sha256>  <path>``); every other file
  as ``sealed:<seal>  <path>``, the seal ``HMAC(K, path | its sha256)`` cut to 128 bits, ``K`` made from
  the anchors' bytes (:func:`input_key`). ``sha256sum -c`` checks the anchors (and skips the sealed
  lines); ``hydrate --check-only`` checks everything.
- ``images/<source>.txt``: the image keys (the datasets' own ids, each of its source's id grammar).
- ``sealed.tsv``: one line per written image, sorted by its tag: the tag, the sources its rows rest on
  (a bit mask under a pad) and a 64-bit seal per table folder (``images``, ``annotations``, ``vq``, each
  ``instructions/<profile>/<task>``), "no rows" sealed like any other. Every value is an HMAC keyed by
  a secret only the image's own pixels give (:func:`image_secret`: the canvas PNG the build made from it,
  with its key), so only someone holding the image can find its line, read it or check a seal: every
  line has the same shape, and no cell says which tasks have rows on an image or what they rest on.
- ``README.md``: the card (:func:`card`), made from ``recipe.json`` and manifests/sources.yaml.

Why no per-row listing: an instruction row's id hashes its variant (``finding_grounding`` ``absent:Nodule``
against ``Nodule``, ``abnormality_detection`` ``all`` against ``none``), so a public list of row ids
and image keys gives each image's findings to anyone who hashes the few candidates; and which tasks
have rows on an image (``lesion_localization`` only where there are boxes) is a label too. The sealed
digests verify the same rows without saying any of it.

Why sealed input hashes: a plain SHA-256 of a short input file (a MIMIC-CXR report ``FINDINGS: No acute
cardiopulmonary process.``, a scene graph derived from one) lets anyone confirm a guessed file byte for
byte, and so learn that a patient's study is normal. Sealed with a key only the dataset's own tables give,
a line can be tested only by someone who holds the dataset (and with it the report); the tables themselves
are large and unguessable, so their plain SHA-256 tells nothing, and says "another release or a modified
copy" when a hydrating user's differs.

Why sealed output SHA-256s: a plain SHA-256 of a shard of one or a few low-entropy rows (the last shard
of a table holds ``rows mod rows_per_shard`` rows; small splits are one small shard) lets anyone test
guessed answers. Each output file's SHA-256 is published HMAC'd with a key made from the secrets of
the images its rows name (rejects files: of every written image of their sources), so exactly those
who hold the images (a hydrating user, a holder of the build) check it byte for byte.

``hydrate`` (pipelines/tools/hydrate.py) rebuilds from a user's own copies and checks against all of this.
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
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.output.atomic import write_bytes_atomically
from pipelines.output.manifest import LISTING_THREADS, VIEW_FOLDERS, Manifest, input_files, input_fingerprints
from schemas.config import BuildConfig
from schemas.records import ALL_SOURCES
from transforms import io

FORMAT = "cxr-instruct recipe 1"
RECIPE_FILE = "recipe.json"
CARD_FILE = "README.md"
SEALED_FILE = "sealed.tsv"
INPUTS_DIR = "inputs"
KEYS_DIR = "images"

SECRET_DOMAIN = b"cxr-instruct recipe 1: image secret\0"
DIGEST_BYTES = 8
_HEX16 = r"[0-9a-f]{16}"
"""Tags and digests are 64 bits: enough that two images or two different row sets never meet by
chance among millions, and nobody without the image can compute one at all."""


def is_sealed(table: str) -> bool:
    """Whether a table's rows are sealed per image: ``images``, ``annotations``, ``vq`` and every
    instruction table; not ``rejects`` and ``vq/_rejects`` (no training data: their files verify whole)."""
    return table in ("images", "annotations", "vq") or table.startswith("instructions/")


TOP_LEVEL = (
    "format",
    "tool",
    "versions",
    "runtime",
    "config",
    "profiles",
    "sources",
    "tokenizer",
    "translation",
    "severity_idf_sha256",
    "tables",
    "instructions",
    "counts",
    "outputs",
    "files",
    "sealed",
    "recipe_files",
)
TOKENIZER_KEYS = {"architecture", "weights_sha256", "precision", "preprocessing", "lm_ids", "id", "trained", "origin"}
TRANSLATION_KEYS = {"method", "model", "sha256", "files", "unit", "num_beams", "max_new_tokens", "batch_size", "device"}


class RecipeError(ValueError):
    """A whole-input problem of ``recipe`` or ``hydrate``: one line (or one per fault), exit status 2."""


# ------------------------------------------------------------------ sealing


def canonical(row: dict) -> bytes:
    """A row as bytes that only its values decide: JSON with sorted keys, floats as Python writes them
    (exact), bytes as base64."""
    return json.dumps(
        row,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=lambda value: base64.b64encode(value).decode("ascii"),
    ).encode("utf-8")


def image_secret(image_key: str, png: bytes) -> bytes:
    """The key of an image's seals: a hash of its key and its canvas PNG under a domain of its own, so
    it is neither the published shard SHA-256 nor computable from anything the recipe holds."""
    return hashlib.sha256(SECRET_DOMAIN + image_key.encode("utf-8") + b"\0" + png).digest()


def _seal(secret: bytes, message: bytes) -> int:
    return int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:DIGEST_BYTES], "big")


def hex64(value: int) -> str:
    return f"{value:016x}"


def group_seal(secret: bytes, group: str, rows: int, total: int) -> int:
    """An image's seal of its ``rows`` rows in ``group`` whose row SHA-256s sum to ``total`` (mod 2^256);
    ``rows == 0`` is the seal of "no rows", which looks like any other."""
    return _seal(secret, group.encode("utf-8") + b"\0" + rows.to_bytes(8, "big") + total.to_bytes(32, "big"))


REST_ORDER = tuple(sorted(ALL_SOURCES))
"""Bit ``i`` of a sealed ``rests_on`` is ``REST_ORDER[i]``."""


def seal_rests_on(secret: bytes, sources) -> int:
    """The sources an image's rows rest on as a bit mask, XORed with a pad only the image gives."""
    mask = sum(1 << REST_ORDER.index(name) for name in set(sources))
    return mask ^ _seal(secret, b"rests_on")


def open_rests_on(secret: bytes, value: int) -> tuple[str, ...]:
    mask = value ^ _seal(secret, b"rests_on")
    if mask >> len(REST_ORDER):
        return ()  # not this image's line
    return tuple(name for i, name in enumerate(REST_ORDER) if mask >> i & 1)


def shard_key(secrets) -> bytes:
    """The key of a shard's sealed SHA-256: every secret of the images it is keyed by, sorted."""
    return hashlib.sha256(b"".join(sorted(secrets))).digest()


def sealed_sha256(key: bytes, sha256_hex: str) -> str:
    """A shard's SHA-256 sealed with its images' secrets: the byte-identity proof for anyone who holds
    those images, and no way to test a guessed shard for anyone who does not."""
    return hmac.new(key, bytes.fromhex(sha256_hex), hashlib.sha256).hexdigest()


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
    if not isinstance(target, str) or "severity_tfidf" not in target:
        return False
    try:
        parsed = json.loads(target)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("severity_tfidf") is not None


@dataclass
class Sealed:
    """A build's rows sealed per image: ``digests[i, g]`` is image ``keys[i]``'s seal of its rows in
    ``groups[g]`` (the "no rows" seal where ``present[i, g]`` is false), ``tags[i]`` its tag, ``secrets``
    the images' secrets (never written anywhere), ``source`` and ``ids`` (its ids, for naming the files it
    comes from), ``rests_on`` (its source and everything that annotates an image of its patient: what its
    rows can depend on); per output file its SHA-256 (hashed here from the bytes read) and sealed SHA-256."""

    groups: list[str]
    keys: list[str]
    tags: np.ndarray
    digests: np.ndarray
    present: np.ndarray
    secrets: dict[str, bytes]
    source: dict[str, str]
    ids: dict[str, tuple[str, ...]]
    rests_on: dict[str, tuple[str, ...]]
    severity: set[tuple[int, int]] = field(default_factory=set)
    unkeyed: dict[str, int] = field(default_factory=dict)  # group -> rows naming no written image
    shard_sources: dict[str, dict[str, int]] = field(default_factory=dict)  # shard path -> source -> rows
    file_sha256: dict[str, str] = field(default_factory=dict)  # output path -> SHA-256 of its bytes
    sealed_sha256: dict[str, str] = field(default_factory=dict)  # output path -> sealed SHA-256

    def index(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.keys)}

    def seal_of(self, i: int, group: str) -> int:
        """Image ``i``'s seal in ``group``, also for a group this build has no rows in at all."""
        if group in self.groups:
            return int(self.digests[i, self.groups.index(group)])
        return group_seal(self.secrets[self.keys[i]], group, 0, 0)


def _read_shard(path: str) -> tuple[bytes, str]:
    with io.open_file(path) as handle:
        data = handle.read()
    return data, hashlib.sha256(data).hexdigest()


def _source_of(row: dict) -> str:
    return row.get("source") or _row_keys(row)[0].split("/", 1)[0]


def seal_build(out_dir: str, manifest: dict) -> Sealed:
    """Read every output file once (``images`` first: its PNGs key the rest), hashing its bytes; seal each
    image's rows per table folder; count each file's rows per source; seal each file's SHA-256 with the
    secrets of the images its rows name (``rejects``: of every written image of its sources)."""
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
    file_sha256: dict[str, str] = {}
    shard_images: dict[str, set[str]] = {}
    sealed: dict[str, dict[str, tuple[int, int]]] = {}  # group -> image key -> (rows, sum)

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
            data, file_sha256[path] = _read_shard(io.join(out_dir, path))
            per_source: dict[str, int] = defaultdict(int)
            images: set[str] = set()
            for row in pq.read_table(pa.BufferReader(data)).to_pylist():
                if group == "images":
                    learn(row)
                elif group == "annotations":
                    covers[row["image_key"]].update(row["annotation_sources"] or ())
                per_source[_source_of(row)] += 1
                digest = int.from_bytes(hashlib.sha256(canonical(row)).digest(), "big")
                named = [key for key in _row_keys(row) if key in secrets]
                if not named:
                    unkeyed[group] = unkeyed.get(group, 0) + 1
                images.update(named)
                carries = _carries_severity(row)
                for key in named:
                    counts[key] += 1
                    sums[key] = (sums[key] + digest) % (1 << 256)
                    if carries:
                        severity.add((key, group))
            del data
            shard_sources[path] = dict(sorted(per_source.items()))
            shard_images[path] = images
        sealed[group] = {key: (n, sums[key]) for key, n in counts.items()}
    keys = sorted(secrets)
    position = {key: i for i, key in enumerate(keys)}
    groups = sorted(groups)
    tags = np.array([_seal(secrets[key], b"tag") for key in keys], dtype=np.uint64)
    digests = np.zeros((len(keys), len(groups)), dtype=np.uint64)
    present = np.zeros((len(keys), len(groups)), dtype=bool)
    for g, group in enumerate(groups):
        found = sealed.pop(group)
        for i, key in enumerate(keys):
            n, total = found.get(key, (0, 0))
            digests[i, g] = group_seal(secrets[key], group, n, total)
            present[i, g] = n > 0
    for entry in outputs:  # rejects and vq/_rejects: rows per source only
        if entry["path"] not in shard_sources:
            data, file_sha256[entry["path"]] = _read_shard(io.join(out_dir, entry["path"]))
            column = pq.read_table(pa.BufferReader(data), columns=["source"]).column("source").to_pylist()
            found_sources: dict[str, int] = defaultdict(int)
            for name in column:
                found_sources[name] += 1
            shard_sources[entry["path"]] = dict(sorted(found_sources.items()))
            in_shard = set(found_sources)
            written = set(source.values())
            shard_images[entry["path"]] = (
                {key for key in keys if source[key] in in_shard} if in_shard <= written else set(keys)
            )
    patients: dict[tuple[str, str | None], set[str]] = defaultdict(set)  # looked up with a key's patient or None
    for key, patient in subject.items():
        patients[(source[key], patient)].update(covers.get(key, ()))
    rests_on = {
        key: tuple(sorted({source[key], *covers.get(key, ()), *patients.get((source[key], subject.get(key)), ())}))
        for key in keys
    }
    sealed_files = {
        path: sealed_sha256(shard_key(secrets[key] for key in shard_images[path]), digest)
        for path, digest in file_sha256.items()
    }
    return Sealed(
        groups=groups,
        keys=keys,
        tags=tags,
        digests=digests,
        present=present,
        secrets=secrets,
        source=source,
        ids=ids,
        rests_on=rests_on,
        severity={(position[key], groups.index(group)) for key, group in severity},
        unkeyed=unkeyed,
        shard_sources=shard_sources,
        file_sha256=file_sha256,
        sealed_sha256=sealed_files,
    )


def sealed_lines(sealed: Sealed) -> list[str]:
    """``sealed.tsv``: a header, then one line per image sorted by tag: tag, sealed rests_on, a seal per
    group (every cell: "no rows" is sealed too). Every cell is 16 hex digits; no cell is readable."""
    lines = ["\t".join(["tag", "rests_on", *sealed.groups])]
    body = []
    for i, key in enumerate(sealed.keys):
        secret = sealed.secrets[key]
        cells = [hex64(int(value)) for value in sealed.digests[i]]
        body.append("\t".join([hex64(int(sealed.tags[i])), hex64(seal_rests_on(secret, sealed.rests_on[key])), *cells]))
    return lines + sorted(body)


@dataclass(frozen=True)
class SealedEntry:
    rests_on: int  # sealed: open with :func:`open_rests_on` and the image's secret
    digests: dict[str, str]  # group -> hex seal (every group)


def parse_sealed(text: str, groups: list[str]) -> dict[str, SealedEntry]:
    """tag -> entry of a ``sealed.tsv`` whose header names ``groups``."""
    lines = text.splitlines()
    header = ["tag", "rests_on", *groups]
    if not lines or lines[0].split("\t") != header:
        raise RecipeError(f"{SEALED_FILE}: its header is not {header[:3]}...: not this recipe's sealed rows")
    pattern = re.compile(_HEX16 + rf"(\t{_HEX16}){{{len(groups) + 1}}}")
    entries = {}
    for number, line in enumerate(lines[1:], start=2):
        if not pattern.fullmatch(line):
            raise RecipeError(f"{SEALED_FILE} line {number}: not {len(header)} cells of 16 hex digits")
        cells = line.split("\t")
        entries[cells[0]] = SealedEntry(rests_on=int(cells[1], 16), digests=dict(zip(groups, cells[2:])))
    return entries


# ------------------------------------------------------------------ inputs


INPUT_KEY_DOMAIN = b"cxr-instruct recipe 1: input key\0"
ANCHOR_DOMAIN = b"cxr-instruct recipe 1: anchor\0"
INPUT_SEAL_BYTES = 16
"""A sealed input line holds 128 bits of ``HMAC(K, path | sha256)``: no two files' seals meet by chance,
and without ``K`` none can be computed at all (``K`` is 256 bits, from the anchors' bytes)."""
SEALED_PREFIX = "sealed:"


def anchors_of(plan, files: dict) -> list[str]:
    """A source's anchors (absolute paths): the tables its read plan reads (CSV label, metadata and split
    tables: large, and no one guesses them), or when it reads none, its largest file (the first by path
    among equals). Their plain SHA-256s are published; the key of every other file's seal is made from
    their bytes."""
    tables = sorted({table.path for table in plan.tables} & set(files))
    if tables or not files:
        return tables
    return [min(files, key=lambda path: (-files[path].size_in_bytes, path))]


def _digest(path: str, anchor: bool) -> tuple[str, bytes | None]:
    """A file's SHA-256 and, for an anchor, its part of the input key (a hash of its bytes under a domain of
    its own: nothing published gives it), in one read."""
    if not anchor:
        return io.sha256_of(path), None
    plain, keyed = hashlib.sha256(), hashlib.sha256(ANCHOR_DOMAIN)
    with io.open_file(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            plain.update(block)
            keyed.update(block)
    return plain.hexdigest(), keyed.digest()


def digest_files(paths: list[str], anchors, threads: int = LISTING_THREADS) -> tuple[dict[str, str], dict[str, bytes]]:
    """path -> SHA-256 of every file, and anchor path -> its part of the input key; ``threads`` at a time."""
    anchors = set(anchors)
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(lambda path: _digest(path, path in anchors), paths))
    return (
        {path: plain for path, (plain, _) in zip(paths, found)},
        {path: part for path, (_, part) in zip(paths, found) if part is not None},
    )


def input_key(source: str, parts: dict[str, bytes]) -> bytes:
    """``K`` of a source: ``sha256(domain | source | 0 | (path | 0 | sha256(anchor domain | anchor bytes))``
    per anchor, by relative path). Only someone holding every anchor, byte for byte, computes it."""
    return hashlib.sha256(
        INPUT_KEY_DOMAIN
        + source.encode("utf-8")
        + b"\0"
        + b"".join(relative.encode("utf-8") + b"\0" + part for relative, part in sorted(parts.items()))
    ).digest()


def seal_input(key: bytes, relative: str, sha256_hex: str) -> str:
    """A non-anchor file's published value: ``HMAC-SHA256(K, path | 0 | its SHA-256)``, first 128 bits."""
    return (
        hmac.new(key, relative.encode("utf-8") + b"\0" + bytes.fromhex(sha256_hex), hashlib.sha256)
        .digest()[:INPUT_SEAL_BYTES]
        .hex()
    )


INPUT_PATH = re.compile(r"(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9._+=@-]+(?:/[A-Za-z0-9._+=@-]+){0,15}")
MAX_INPUT_PATH = 240
"""An input file's path as a recipe lists it: relative, ``/``-separated, no ``.``/``..`` parts, characters
from a safe set (no spaces: no sentence fits), at most :data:`MAX_INPUT_PATH` characters."""
INPUT_LINE = re.compile(
    rf"(?:([0-9a-f]{{64}})|{SEALED_PREFIX}([0-9a-f]{{{2 * INPUT_SEAL_BYTES}}}))  (.{{1,{MAX_INPUT_PATH}}})"
)
"""An ``inputs/<source>.sha256`` line: ``<sha256>  <path>`` (an anchor: a ``sha256sum`` line) or
``sealed:<32 hex digits>  <path>`` (every other file; ``sha256sum -c`` skips it as improperly formatted)."""


def _safe_input_path(relative: str) -> bool:
    return len(relative) <= MAX_INPUT_PATH and bool(INPUT_PATH.fullmatch(relative))


def input_lines(source: str, hashes: dict[str, str], parts: dict[str, bytes], root: str) -> list[str]:
    """A source's ``inputs`` lines, sorted by relative path: the anchors (``parts``' paths) as ``sha256sum``
    lines, every other file sealed with the key the anchors give."""
    relative = {}
    for path in hashes:
        relative[path] = io.relative(path, root)
        if not _safe_input_path(relative[path]):
            raise RecipeError(
                f"{path}: a file name a recipe cannot list (over {MAX_INPUT_PATH} characters, or "
                f"characters other than letters, digits, ._+=@- and /)"
            )
    key = input_key(source, {relative[path]: part for path, part in parts.items()})
    lines = [
        (
            relative[path],
            f"{digest}  {relative[path]}"
            if path in parts
            else f"{SEALED_PREFIX}{seal_input(key, relative[path], digest)}  {relative[path]}",
        )
        for path, digest in hashes.items()
    ]
    return [line for _, line in sorted(lines)]


@dataclass(frozen=True)
class InputList:
    """A source's ``inputs`` file: anchor path -> plain SHA-256, every other path -> its 128-bit seal."""

    anchors: dict[str, str]
    sealed: dict[str, str]

    def paths(self) -> set[str]:
        return set(self.anchors) | set(self.sealed)


def parse_inputs(text: str, where: str) -> InputList:
    """An ``inputs/<source>.sha256`` file (strict: see :data:`INPUT_LINE` and :data:`INPUT_PATH`)."""
    anchors, sealed = {}, {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = INPUT_LINE.fullmatch(line)
        if not match or not _safe_input_path(match.group(3)) or match.group(3) in anchors or match.group(3) in sealed:
            raise RecipeError(
                f"{where} line {number}: not a '<sha256>  <path>' or 'sealed:<seal>  <path>' line of a recipe"
            )
        if match.group(1):
            anchors[match.group(3)] = match.group(1)
        else:
            sealed[match.group(3)] = match.group(2)
    if sealed and not anchors:
        raise RecipeError(f"{where}: sealed lines and no anchor: not a recipe's")
    return InputList(anchors=anchors, sealed=sealed)


IMAGE_ID = {
    "mimic": r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}",
    "vindr": r"[0-9a-f]{32}",
    "siim": r"[0-9]+(?:\.[0-9]+){2,30}",
    "padchest": r"[0-9A-Za-z_-]{1,120}\.png",
}
"""Each image source's own id grammar (the part of an image key after ``source/``)."""
MAX_IMAGE_KEY = 140


def image_key_problem(source: str, key: str) -> bool:
    pattern = IMAGE_ID.get(source)
    return pattern is None or len(key) > MAX_IMAGE_KEY or not re.fullmatch(re.escape(source) + "/" + pattern, key)


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


def names_local_path(text: str, path: str) -> bool:
    """Whether ``text`` names the local path ``path``: the whole string, or the path standing on its own
    (not inside a longer path or a URL: ``/content/mimic-cxr`` is not named by
    ``https://physionet.org/content/mimic-cxr/2.0.0/``)."""
    path = path.rstrip("/") or path
    if text == path:
        return True
    return re.search(r"(?<![\w.:/@-])" + re.escape(path) + r"(?![\w.-])", text) is not None


def severity_digest(idf) -> str | None:
    return None if idf is None else hashlib.sha256(json.dumps(idf, sort_keys=True).encode()).hexdigest()


SCHEME = (
    "per image: HMAC-SHA256 keyed by sha256(domain | image_key | 0 | canvas PNG), first 8 bytes; "
    "tag = seal('tag'); group = seal(group | 0 | rows | sum of the rows' sha256 mod 2^256), rows 0 for "
    "none; rests_on = bit mask of sorted sources XOR seal('rests_on'); a row as canonical JSON; output "
    "files: HMAC-SHA256(sha256(sorted secrets of the images its rows name), its sha256); input files "
    "other than anchors: HMAC-SHA256(K, path | 0 | sha256), first 16 bytes, K = sha256(input key domain | "
    "source | 0 | per anchor path | 0 | sha256(anchor domain | bytes)) (pipelines/tools/recipe.py)"
)
COUNT_KEYS = ("read", "written", "rejected", "filtered", "item_rejects", "reconciled")
INPUT_KEYS = ("files", "bytes", "fingerprint", "sha256")
RUNTIME_PACKAGES = ("pandas", "polars", "spacy", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "Pillow")
MODEL_PACKAGES = ("torch", "transformers")
"""Libraries that decide output bytes beyond manifest.py's list: the labeler, DICOM decoders, tables;
torch and transformers when the build tokenized or translated."""


def runtime_versions(models: bool) -> dict[str, str]:
    """The Python version, machine, and :data:`RUNTIME_PACKAGES` (and :data:`MODEL_PACKAGES` when
    ``models``) installed here: what a recipe pins beyond the build manifest's ``versions``."""
    import platform
    from importlib import metadata

    found = {"python": platform.python_version(), "machine": platform.machine() or "unknown"}
    for name in RUNTIME_PACKAGES + (MODEL_PACKAGES if models else ()):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def recipe_document(
    manifest: dict,
    sources_yaml: dict,
    hashes_files: dict[str, dict],
    image_keys: dict[str, list[str]],
    sealed: Sealed,
    tokenizer: dict | None,
) -> dict:
    """recipe.json without ``recipe_files`` (added when the other files are written), field by field:
    nothing of the manifest is copied whole, and :func:`schema_problems` checks the result."""
    config = manifest["config"]
    enabled = [name for name, source in config["sources"].items() if source.get("enabled", True)]
    sources = {}
    for name in sorted(enabled):
        facts = sources_yaml["sources"].get(name, {})
        inputs = {k: manifest["inputs"][name].get(k) for k in INPUT_KEYS}
        sources[name] = {
            "name": facts.get("name", name),
            "release": release_of(facts),
            "url": facts.get("url"),
            "access": facts.get("access"),
            "licence_id": facts.get("licence_id"),
            "inputs": inputs,
            "hashes": f"{INPUTS_DIR}/{name}.sha256",
            "hashes_sha256": hashes_files[name]["sha256"],
            "images": len(image_keys.get(name, [])),
            **({"image_keys": f"{KEYS_DIR}/{name}.txt"} if image_keys.get(name) else {}),
        }
    view_prefixes = tuple(prefix for prefixes in VIEW_FOLDERS.values() for prefix in prefixes)
    outputs = [
        {
            **{k: entry[k] for k in ("path", "table", "split", "rows")},
            "sealed_sha256": sealed.sealed_sha256[entry["path"]],
            "sources": sealed.shard_sources.get(entry["path"], {}),
        }
        for entry in manifest["outputs"]
    ]
    models = bool(config.get("tokenizer") or config.get("translation"))
    return {
        "format": FORMAT,
        "tool": "cxr-instruct",
        "versions": dict(manifest["versions"]),
        "runtime": runtime_versions(models),
        "config": public_config(config),
        "profiles": list(manifest["profiles"]),
        "sources": sources,
        "tokenizer": tokenizer,
        "translation": manifest.get("translation"),
        "severity_idf_sha256": severity_digest(manifest.get("severity_idf")),
        "tables": {table: dict(splits) for table, splits in manifest["tables"].items()},
        "instructions": manifest["instructions"],
        "counts": {name: {k: entry.get(k) for k in COUNT_KEYS} for name, entry in manifest["counts"].items()},
        "outputs": outputs,
        "files": [
            {k: entry[k] for k in ("path", "bytes", "sha256")}
            for entry in manifest.get("files", [])
            if not entry["path"].startswith(view_prefixes)
        ],
        "sealed": {"file": SEALED_FILE, "images": len(sealed.keys), "groups": sealed.groups, "scheme": SCHEME},
    }


# ------------------------------------------------------------------ the card


def card(doc: dict, sources_yaml: dict) -> str:
    """README.md of a recipe: what it is, what each source needs, how to hydrate, what you get."""
    versions = doc["versions"]
    rows = sum(n for splits in doc["tables"].values() for n in splits.values())
    lines = [
        "---",
        "viewer: false",
        "license: other",
        "tags:",
        "- medical",
        "- chest-x-ray",
        "- cxr-instruct",
        "- build-recipe",
        "---",
        "",
        "# A cxr-instruct build recipe (no data inside)",
        "",
        "This repository holds no images, reports, labels, boxes, answers or any other row of the datasets "
        "it was built from. It holds what you need to rebuild one exact cxr-instruct build from your own "
        "copies of those datasets, and to prove that what you rebuilt is that build, byte for byte: the "
        "build's settings, the tool and library versions, the SHA-256 of each dataset's tables and a sealed "
        "SHA-256 of every other input file, the checksum and "
        f"row count of every output file, and sealed digests of its rows. The build has "
        f"{len(doc['outputs'])} Parquet files and {rows:,} rows in all.",
        "",
        "## What you need",
        "",
        "Each dataset comes from its own provider, under its own terms; you get it there, not here.",
        "",
        "| source | dataset | access | licence | where | input files |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in doc["sources"].items():
        facts = sources_yaml["sources"].get(name, {})
        release = f" {entry['release']}" if entry.get("release") else ""
        lines.append(
            f"| `{name}` | {entry['name']}{release} | {entry['access']} | {facts.get('licence', '?')} "
            f"| {entry['url']} | {entry['inputs']['files']:,} ({entry['inputs']['bytes']:,} bytes) |"
        )
    lines += [""]
    for name, entry in doc["sources"].items():
        note = sources_yaml["sources"].get(name, {}).get("access_note")
        if note:
            lines += [f"- **{entry['name']}**: {' '.join(note.split())}"]
    runtime = doc.get("runtime", {})
    pins = " ".join(
        f"{package}=={version}"
        for package, version in sorted({**versions, **runtime}.items(), key=lambda item: item[0].lower())
        if package not in ("cxr-instruct", "cxr-instruct code", "python", "machine") and version != "not installed"
    )
    code = versions.get("cxr-instruct code", "?")
    lines += [
        "",
        "## Rebuild it (hydrate)",
        "",
        f"1. Install cxr-instruct {versions.get('cxr-instruct', '?')} (the code whose fingerprint, "
        f"`pipelines.output.manifest.code_fingerprint()`, is `{code}`), under Python {runtime.get('python', '?')} on "
        f"{runtime.get('machine', '?')}, and the same libraries: `pip install {pins}`. `hydrate` refuses other "
        "versions unless you pass `--other-versions`.",
        "2. Download this repository: `hf download <this repository> --repo-type dataset --local-dir recipe`.",
        "3. Write a `build.yaml` naming where your copies are, one root per source you have "
        "(a subset is fine; the other settings come from the recipe):",
        "",
        "```yaml",
        "sources:",
        *[f"  {name}: {{root: /data/{name}}}" for name in doc["sources"]],
        "```",
        "",
    ]
    if doc.get("tokenizer"):
        lines += [
            "   The build also tokenized its images: add `tokenizer: {model: <folder>}` with the VQ-GAN "
            f"whose fingerprint is `{doc['tokenizer'].get('id')}` (weights SHA-256 "
            f"`{doc['tokenizer'].get('weights_sha256', '?')}`), or leave it out and go without `vq/`.",
            "",
        ]
    if doc.get("translation"):
        lines += [
            "   The build translated PadChest reports: add `translation: {model: <folder>}` with the model "
            f"`{doc['translation'].get('model')}` (files SHA-256 `{doc['translation'].get('sha256')}`).",
            "",
        ]
    lines += [
        "4. `cxr-instruct hydrate recipe --sources build.yaml --out out`",
        "",
        "`hydrate` first checks every input file against the recipe and names each one that is missing, "
        "changed or extra; then it runs the build with the recipe's settings; then it checks every output "
        "file against the recipe's SHA-256 and every image's rows against their sealed digests, and writes "
        "the outcome into `out/hydrate.json` and `out/manifest.json`. With every source it says "
        "`byte-identical` when all output files match. With some of the sources it builds what they give "
        "and says which rows match the recipe's, which need a source you lack, and why anything else "
        "differs (which file, which rows, which output files). `hydrate --check-only` checks the inputs "
        "alone (no build, any library versions). Without cxr-instruct, `sha256sum -c inputs/<source>.sha256`, "
        "run in a source's root, checks its tables (the anchors) and skips the other files' sealed lines "
        "as improperly formatted: only `hydrate` can check those.",
        "",
        "## What the build holds",
        "",
        "| profile | task | rows | sources |",
        "|---|---|---:|---|",
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
        "",
        "## What this recipe holds, and what it does not",
        "",
        "- `recipe.json`: settings (roots replaced by source names), versions, per source its input "
        "fingerprint, per output file its table, split, rows (per source) and sealed SHA-256, and counts.",
        "- `inputs/<source>.sha256`: every input file by its path inside the dataset: the dataset's tables "
        "(anchors) with their SHA-256, every other file (reports, images, scene graphs) with its SHA-256 sealed "
        "under a key made from the tables' bytes, so only someone holding the dataset can test one.",
        "- `images/<source>.txt`: the image ids the build wrote (the datasets' own ids).",
        "- `sealed.tsv`: per image, a tag, the sources its rows rest on and a digest of its rows in every table "
        "folder (rows or none), all sealed with a secret that only the image's own pixels give. Every cell is 16 "
        "hex digits; a line is not linked to an image id, and nobody without the image can read, compute or "
        "test one, so it tells no label, finding, task pattern, answer or report of any image.",
        "- Output files are listed by their SHA-256 sealed with the secrets of the images their rows name: "
        "whoever holds those images checks them byte for byte; nobody else can test a guessed file.",
        "- No row ids, prompts, answers, report text, labels, coordinates, pixels or image codes.",
        "",
        "## Citations",
        "",
        "Cite the datasets you rebuild from:",
        "",
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
        raise RecipeError(
            f"--dest {dest}: holds {len(present)} files and no recipe; name an empty folder (or an earlier recipe's)"
        )
    foreign = sorted(present - old)
    if foreign:
        raise RecipeError(
            f"--dest {dest}: holds files that are not its recipe's ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); name another folder"
        )
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
    from pipelines.tools.card import load_sources
    from pipelines.tools.verify import verify
    from transforms.sources import read_plans

    started = time.monotonic()
    out, dest = str(out_dir), Path(dest)
    old = prepare_dest(dest)
    problems = verify(out)
    if problems:
        raise RecipeError(
            f"{out} does not verify against its manifest ({len(problems)} problem(s), first: "
            f"{problems[0]}); run `cxr-instruct verify {out}`"
        )
    manifest = Manifest.read(out)
    config = BuildConfig.model_validate(manifest["config"])
    try:
        plans = read_plans(config)
    except (FileNotFoundError, ValueError, OSError) as unreadable:
        raise RecipeError(f"the build's inputs cannot be read at the roots its manifest names: {unreadable}") from None
    files = input_files(plans)
    anchors = {name: anchors_of(plans[name], files[name]) for name in files}
    hash_started = time.monotonic()
    hashes, parts = digest_files(
        sorted(path for found in files.values() for path in found),
        {path for found in anchors.values() for path in found},
    )
    hash_seconds = time.monotonic() - hash_started
    now = input_fingerprints(config, plans, files, hashes)
    changed = [
        name
        for name in sorted(now)
        if {k: now[name][k] for k in ("files", "bytes", "sha256")}
        != {k: manifest["inputs"].get(name, {}).get(k) for k in ("files", "bytes", "sha256")}
    ]
    if changed:
        raise RecipeError(
            f"the inputs of {', '.join(changed)} are not the ones the build read (manifest.json "
            f"fingerprint {config.fingerprint}): rebuild {out}, then make its recipe"
        )
    seal_started = time.monotonic()
    sealed = seal_build(out, manifest)
    seal_seconds = time.monotonic() - seal_started
    if sealed.unkeyed:
        raise RecipeError(f"rows that name no written image: {sealed.unkeyed}; the build is not whole")
    payloads: dict[str, bytes] = {}
    hashes_files = {}
    for name in sorted(files):
        root = config.sources[name].root
        text = "".join(
            line + "\n"
            for line in input_lines(
                name, {p: hashes[p] for p in files[name]}, {p: parts[p] for p in anchors[name]}, root
            )
        ).encode()
        payloads[f"{INPUTS_DIR}/{name}.sha256"] = text
        hashes_files[name] = {"sha256": hashlib.sha256(text).hexdigest()}
    image_keys: dict[str, list[str]] = defaultdict(list)
    for key in sealed.keys:
        image_keys[sealed.source[key]].append(key)
    for name, keys in sorted(image_keys.items()):
        odd = [key for key in keys if image_key_problem(name, key)]
        if odd:
            raise RecipeError(f"image keys a recipe cannot list (not {name}'s id format): {', '.join(odd[:3])}")
        payloads[f"{KEYS_DIR}/{name}.txt"] = "".join(key + "\n" for key in keys).encode()
    payloads[SEALED_FILE] = "".join(line + "\n" for line in sealed_lines(sealed)).encode()
    tokenizer = None
    if any(entry["path"] == "vq/tokenizer.json" for entry in manifest.get("files", [])):
        tokenizer = json.loads(io.read_text(io.join(out, "vq", "tokenizer.json")))
    sources_yaml = load_sources()
    doc = recipe_document(manifest, sources_yaml, hashes_files, image_keys, sealed, tokenizer)
    texts = _strings(doc)
    leaked = sorted(
        {
            path
            for path in local_paths(manifest["config"])
            if path not in ALL_SOURCES
            for text in texts
            if names_local_path(text, path)
        }
    )
    if leaked:
        raise RecipeError(f"recipe.json would name the local path(s) {', '.join(leaked)}: refusing to write it")
    payloads[CARD_FILE] = card(doc, sources_yaml).encode()
    doc["recipe_files"] = [
        {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for path, data in sorted(payloads.items())
    ]
    problems = schema_problems(doc)
    if problems:
        raise RecipeError(
            f"recipe.json would not be of a recipe's shape ({len(problems)} problem(s), first: "
            f"{problems[0]}): refusing to write it"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for path, data in sorted(payloads.items()):
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(str(dest / path), data)
    document = json.dumps(doc, indent=1, sort_keys=False).encode() + b"\n"
    write_bytes_atomically(str(dest / RECIPE_FILE), document)
    for stale in sorted(old - set(payloads) - {RECIPE_FILE}):
        (dest / stale).unlink(missing_ok=True)
    return RecipeSummary(
        dest=dest,
        files=len(payloads) + 1,
        bytes=sum(map(len, payloads.values())) + len(document),
        images=len(sealed.keys),
        shards=len(manifest["outputs"]),
        input_files=len(hashes),
        input_bytes=sum(m.size_in_bytes for found in files.values() for m in found.values()),
        hash_seconds=hash_seconds,
        seal_seconds=seal_seconds,
        total_seconds=time.monotonic() - started,
    )


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

    def inputs(self, source: str) -> InputList:
        return parse_inputs(self.text(self.sources[source]["hashes"]), self.sources[source]["hashes"])

    def image_keys(self, source: str) -> list[str]:
        where = self.sources[source].get("image_keys")
        return self.text(where).split() if where else []

    def sealed(self) -> dict[str, SealedEntry]:
        return parse_sealed(self.text(SEALED_FILE), self.doc["sealed"]["groups"])


def recipe_folder(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.name == RECIPE_FILE else path


def read_recipe(path: str | Path) -> Recipe:
    """The recipe in folder ``path`` (or its recipe.json): recipe.json of the allowlisted shape
    (:func:`schema_problems`), every file checked against the checksums it lists. A torn, edited,
    incomplete or malformed recipe raises :class:`RecipeError` (one line)."""
    folder = recipe_folder(path)
    if str(path).startswith("gs://"):
        raise RecipeError(f"{path}: a recipe is read from a local folder; download it first")
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
    problems = schema_problems(doc)
    if not problems:
        problems = integrity_problems(folder, doc)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise RecipeError(f"{folder}: " + "; ".join(problems[:5]) + more + ": make or download the recipe again")
    return Recipe(folder=folder, doc=doc, sha256=hashlib.sha256(data).hexdigest())


def integrity_problems(folder: Path, doc: dict) -> list[str]:
    """Every file recipe.json lists (paths already checked by :func:`schema_problems`) against its
    size and SHA-256."""
    problems = []
    for entry in doc["recipe_files"]:
        path = folder / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} missing")
            continue
        data = path.read_bytes()
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']} is not the file recipe.json lists (edited or torn)")
    return problems


# ------------------------------------------------------------------ the allowlist schema

SPLIT_NAMES = ("train", "validation", "test")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[A-Za-z0-9.+_-]{1,48}|not installed")
_REASON = re.compile(r"[a-z0-9_-]{1,40}(?::[a-z0-9_-]{1,48}){0,3}")
_WORD = re.compile(r"[A-Za-z0-9._+-]{1,64}")
_PROSE = re.compile(r"[A-Za-z0-9 .,:;()/+*=<>_'-]{0,160}")
"""A tokenizer fingerprint's own descriptions (``origin``, ``preprocessing``, ``lm_ids``): short and plain."""
RUNTIME_KEYS = frozenset({"python", "machine", *RUNTIME_PACKAGES, *MODEL_PACKAGES})


def _vocabulary() -> dict:
    """The names a recipe may use as keys: sources, splits, profiles and each profile's tasks (from
    manifests/mixtures), table folders and tables."""
    from schemas.config import PROFILES
    from transforms.tasks import load_profile

    tasks = {profile: frozenset(load_profile(profile).tasks) for profile in PROFILES}
    groups = {"images", "annotations", "vq"} | {
        f"instructions/{profile}/{task}" for profile, names in tasks.items() for task in names
    }
    return {
        "profiles": PROFILES,
        "tasks": tasks,
        "groups": frozenset(groups),
        "tables": frozenset(groups | {"rejects", "vq/_rejects"}),
    }


def schema_problems(doc) -> list[str]:
    """Why ``doc`` is not a recipe.json of the allowed shape: exact keys per section, every key from a
    known vocabulary (sources, splits, profiles, tasks, table folders, reason codes of a fixed grammar),
    every value an int, a bool, a hex digest, a bounded word, or equal to what manifests/sources.yaml
    says. Anything else (a new field, a sentence, a long key) is refused. Empty: the shape is right."""
    from pipelines.output.manifest import PACKAGES
    from pipelines.tools.card import load_sources

    problems: list[str] = []
    vocab = _vocabulary()

    def bad(where: str, what: str) -> None:
        if len(problems) < 50:
            problems.append(f"recipe.json {where}: {what}")

    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62

    def ints(where: str, value, keys, allow_empty: bool = True) -> None:
        """A mapping of ``keys`` (a set or a regex) to non-negative ints."""
        if not isinstance(value, dict) or (not value and not allow_empty):
            return bad(where, "not a mapping of counts")
        for key, n in value.items():
            ok = key in keys if not isinstance(keys, re.Pattern) else bool(keys.fullmatch(key))
            if not ok:
                bad(where, f"key {key[:40]!r} is not a known name")
            elif not is_int(n):
                bad(f"{where}.{key}", "not a count")

    def exact(where: str, value, required: set, optional: set | frozenset = frozenset()) -> bool:
        if not isinstance(value, dict):
            bad(where, "not a mapping")
            return False
        missing, extra = sorted(required - set(value)), sorted(set(value) - required - optional)
        if missing:
            bad(where, f"lacks {missing}")
        if extra:
            bad(where, f"unknown field(s) {[key[:40] for key in extra]}")
        return not missing and not extra

    def hex64(where: str, value, none: bool = False) -> None:
        if not (value is None and none) and not (isinstance(value, str) and _HEX64.fullmatch(value)):
            bad(where, "not a SHA-256")

    if not exact("", doc, set(TOP_LEVEL)):
        return problems
    if doc["format"] != FORMAT or doc["tool"] != "cxr-instruct":
        bad("format/tool", "not this tool's recipe")
    known_versions = {*PACKAGES, "cxr-instruct code"}
    for section, keys in (("versions", known_versions), ("runtime", RUNTIME_KEYS)):
        value = doc[section]
        if not isinstance(value, dict):
            bad(section, "not a mapping")
            continue
        for key, version in value.items():
            if key not in keys:
                bad(section, f"{key[:40]!r} is not a pinned package")
            elif key == "cxr-instruct code":
                hex64(f"{section}.{key}", version)
            elif not (isinstance(version, str) and _VERSION.fullmatch(version)):
                bad(f"{section}.{key}", "not a version")
    sources = doc["sources"]
    names = set(sources) if isinstance(sources, dict) else set()
    if not isinstance(sources, dict) or not names <= set(ALL_SOURCES) or not names:
        bad("sources", f"not a mapping of known sources ({sorted(ALL_SOURCES)})")
        return problems
    config_problem = _config_problem(doc["config"], names)
    if config_problem:
        bad("config", config_problem)
    profiles = doc["profiles"]
    if not (isinstance(profiles, list) and all(isinstance(p, str) and p in vocab["profiles"] for p in profiles)):
        bad("profiles", "not a list of profiles")
        profiles = []
    facts = load_sources()["sources"]
    for name, entry in sources.items():
        where = f"sources.{name}"
        images = "image_keys" in entry if isinstance(entry, dict) else False
        if not exact(
            where,
            entry,
            {"name", "release", "url", "access", "licence_id", "inputs", "hashes", "hashes_sha256", "images"},
            {"image_keys"},
        ):
            continue
        known = facts.get(name, {})
        for key, value in (
            ("name", known.get("name", name)),
            ("release", release_of(known)),
            ("url", known.get("url")),
            ("access", known.get("access")),
            ("licence_id", known.get("licence_id")),
            ("hashes", f"{INPUTS_DIR}/{name}.sha256"),
        ):
            if entry[key] != value:
                bad(f"{where}.{key}", "not what manifests/sources.yaml (or the recipe format) says")
        if images and (entry["image_keys"] != f"{KEYS_DIR}/{name}.txt" or name not in IMAGE_ID):
            bad(f"{where}.image_keys", f"not {KEYS_DIR}/{name}.txt of an image source")
        hex64(f"{where}.hashes_sha256", entry["hashes_sha256"])
        if not is_int(entry["images"]):
            bad(f"{where}.images", "not a count")
        inputs = entry["inputs"]
        if exact(f"{where}.inputs", inputs, set(INPUT_KEYS)):
            if not (is_int(inputs["files"]) and is_int(inputs["bytes"])):
                bad(f"{where}.inputs", "files/bytes not counts")
            if inputs["fingerprint"] not in ("size-mtime", "sha256"):
                bad(f"{where}.inputs.fingerprint", "not a fingerprint kind")
            hex64(f"{where}.inputs.sha256", inputs["sha256"])
    _fingerprint_problems(doc["tokenizer"], doc["translation"], bad)
    hex64("severity_idf_sha256", doc["severity_idf_sha256"], none=True)
    tables = doc["tables"]
    if isinstance(tables, dict):
        for table, splits in tables.items():
            if table not in vocab["tables"]:
                bad("tables", f"{table[:60]!r} is not a table")
            else:
                ints(f"tables.{table}", splits, set(SPLIT_NAMES) | {"rejects"})
    else:
        bad("tables", "not a mapping")
    instructions = doc["instructions"]
    if isinstance(instructions, dict):
        for profile, tasks in instructions.items():
            if profile not in vocab["tasks"] or not isinstance(tasks, dict):
                bad("instructions", f"{profile[:40]!r} is not a profile")
                continue
            for task, per_source in tasks.items():
                if task not in vocab["tasks"][profile] or not isinstance(per_source, dict):
                    bad(f"instructions.{profile}", f"{task[:40]!r} is not one of its tasks")
                    continue
                for source, splits in per_source.items():
                    if source not in ALL_SOURCES:
                        bad(f"instructions.{profile}.{task}", f"{source[:40]!r} is not a source")
                    else:
                        ints(f"instructions.{profile}.{task}.{source}", splits, set(SPLIT_NAMES))
    else:
        bad("instructions", "not a mapping")
    counts = doc["counts"]
    if isinstance(counts, dict):
        for source, entry in counts.items():
            if source not in ALL_SOURCES:
                bad("counts", f"{source[:40]!r} is not a source")
            elif exact(f"counts.{source}", entry, set(COUNT_KEYS)):
                if not (is_int(entry["read"]) and is_int(entry["written"]) and isinstance(entry["reconciled"], bool)):
                    bad(f"counts.{source}", "read/written/reconciled of the wrong type")
                for key in ("rejected", "filtered", "item_rejects"):
                    ints(f"counts.{source}.{key}", entry[key], _REASON)
    else:
        bad("counts", "not a mapping")
    outputs = doc["outputs"]
    if isinstance(outputs, list):
        for i, entry in enumerate(outputs):
            where = f"outputs[{i}]"
            if not exact(where, entry, {"path", "table", "split", "rows", "sealed_sha256", "sources"}):
                continue
            table, split = entry["table"], entry["split"]
            if (
                table not in vocab["tables"]
                or split not in (*SPLIT_NAMES, "rejects")
                or not isinstance(entry["path"], str)
                or not re.fullmatch(re.escape(f"{table}/{split}") + r"-\d{5}-of-\d{5}\.parquet", entry["path"])
            ):
                bad(where, "not an output file of a known table and split")
            if not is_int(entry["rows"]):
                bad(f"{where}.rows", "not a count")
            hex64(f"{where}.sealed_sha256", entry["sealed_sha256"])
            ints(f"{where}.sources", entry["sources"], set(ALL_SOURCES))
    else:
        bad("outputs", "not a list")
    side_files = {f"instructions/{profile}/weights.json" for profile in vocab["profiles"]} | {"vq/tokenizer.json"}
    recipe_paths = (
        {RECIPE_FILE, CARD_FILE, SEALED_FILE}
        | {f"{INPUTS_DIR}/{name}.sha256" for name in names}
        | {f"{KEYS_DIR}/{name}.txt" for name in names if name in IMAGE_ID}
    )
    for section, allowed in (("files", side_files), ("recipe_files", recipe_paths - {RECIPE_FILE})):
        listing = doc[section]
        if not isinstance(listing, list):
            bad(section, "not a list")
            continue
        for i, entry in enumerate(listing):
            if exact(f"{section}[{i}]", entry, {"path", "bytes", "sha256"}):
                if entry["path"] not in allowed:
                    bad(f"{section}[{i}].path", f"{str(entry['path'])[:60]!r} is not a file it may list")
                if not is_int(entry["bytes"]):
                    bad(f"{section}[{i}].bytes", "not a count")
                hex64(f"{section}[{i}].sha256", entry["sha256"])
    sealed = doc["sealed"]
    if exact("sealed", sealed, {"file", "images", "groups", "scheme"}):
        groups = sealed["groups"]
        if sealed["file"] != SEALED_FILE or sealed["scheme"] != SCHEME or not is_int(sealed["images"]):
            bad("sealed", "not this format's sealed rows")
        if not (
            isinstance(groups, list)
            and all(isinstance(g, str) and g in vocab["groups"] for g in groups)
            and groups == sorted(set(groups))
        ):
            bad("sealed.groups", "not a sorted list of table folders")
    return problems


def _config_problem(config, names: set[str]) -> str | None:
    """Why the public config is not one: it must validate as a build config, name exactly the recipe's
    sources with each root its source's name, and hold only placeholder model folders."""
    try:
        parsed = BuildConfig.model_validate(config)
    except (ValueError, TypeError) as invalid:
        return f"not a build config ({str(invalid).splitlines()[0][:120]})"
    enabled = {name for name, source in parsed.sources.items() if source.enabled}
    if enabled != names or any(source.root != name for name, source in parsed.sources.items()):
        return "its sources are not the recipe's, each rooted at its own name"
    if parsed.tokenizer and (
        parsed.tokenizer.model != "tokenizer.model"
        or parsed.tokenizer.vocabulary not in (None, "tokenizer.vocabulary")
        or not re.fullmatch(r"[a-z0-9:]{1,16}", parsed.tokenizer.device)
    ):
        return "tokenizer: not the recipe's placeholders"
    if parsed.translation and parsed.translation.model != "translation.model":
        return "translation: not the recipe's placeholder"
    return None


def _fingerprint_problems(tokenizer, translation, bad) -> None:
    """The tokenizer and translation fingerprints: their own keys, each value a number, a flag, a digest,
    a bounded word or (tokenizer descriptions) a short plain phrase."""
    if tokenizer is not None:
        if not isinstance(tokenizer, dict) or not set(tokenizer) <= TOKENIZER_KEYS:
            bad("tokenizer", "not a tokenizer fingerprint")
        else:
            for key, value in tokenizer.items():
                ok = {
                    "weights_sha256": lambda v: isinstance(v, str) and bool(_HEX64.fullmatch(v)),
                    "id": lambda v: isinstance(v, str) and bool(re.fullmatch(r"[a-z-]{1,32}-[0-9a-f]{16}", v)),
                    "precision": lambda v: v in ("fp32", "bf16", None),
                    "trained": lambda v: v in (True, False, None),
                    "architecture": _architecture_ok,
                }.get(key, lambda v: isinstance(v, str) and bool(_PROSE.fullmatch(v)))(value)
                if not ok:
                    bad(f"tokenizer.{key}", "not a fingerprint value")
    if translation is not None:
        if not isinstance(translation, dict) or not set(translation) <= TRANSLATION_KEYS:
            bad("translation", "not a translation fingerprint")
            return
        for key, value in translation.items():
            if key == "sha256":
                ok = isinstance(value, str) and bool(_HEX64.fullmatch(value))
            elif key == "files":
                ok = isinstance(value, list) and all(isinstance(v, str) and _WORD.fullmatch(v) for v in value)
            elif isinstance(value, str):
                ok = bool(_WORD.fullmatch(value))
            else:
                ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok:
                bad(f"translation.{key}", "not a fingerprint value")


def _architecture_ok(value) -> bool:
    if not isinstance(value, dict) or len(value) > 40:
        return False
    for key, item in value.items():
        if not re.fullmatch(r"[a-z_]{1,40}", key):
            return False
        items = item if isinstance(item, list) else [item]
        if len(items) > 16 or not all(
            isinstance(v, (int, float)) or (isinstance(v, str) and _WORD.fullmatch(v)) or v is None for v in items
        ):
            return False
    return True


def recipe_problems(folder: str | Path, paths: list[str] | None = None) -> list[str]:
    """Why the recipe folder may not go public, checking only what a recipe may hold: its own files
    (``paths``: the files to be sent; default every file), each a checksum recipe.json lists, recipe.json
    of the allowlisted shape (:func:`schema_problems`, run by :func:`read_recipe`), every line of the
    hash, id and sealed files of its exact format, and the card as the recipe makes it. Empty: fit to
    publish."""
    from pipelines.tools.card import load_sources

    folder = Path(folder)
    try:
        recipe = read_recipe(folder)
    except RecipeError as error:
        return [str(error)]
    doc = recipe.doc
    problems = []
    allowed = {RECIPE_FILE} | {entry["path"] for entry in doc["recipe_files"]}
    if paths is None:
        paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    for path in paths:
        if path not in allowed:
            problems.append(f"{path}: not a file a recipe holds (or not listed in recipe.json)")
    groups = doc["sealed"]["groups"]
    for path in paths:
        if path not in allowed or path == RECIPE_FILE or not (folder / path).is_file():
            continue
        data = (folder / path).read_bytes()
        try:
            text = data.decode("ascii") if path != CARD_FILE else data.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{path}: not {'ASCII' if path != CARD_FILE else 'UTF-8'} text")
            continue
        problems += _line_problems(path, text, groups, doc)
    if (folder / CARD_FILE).is_file() and not problems:
        expected = card({k: v for k, v in doc.items() if k != "recipe_files"}, load_sources())
        if (folder / CARD_FILE).read_text(encoding="utf-8") != expected:
            problems.append(f"{CARD_FILE}: not the card this recipe makes (edited?); make the recipe again")
    return problems


def _line_problems(path: str, text: str, groups: list[str], doc: dict) -> list[str]:
    """Every line of an ``inputs``, ``images`` or ``sealed`` file in its exact format; the line counts
    those recipe.json states."""
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        return [f"{path}: does not end with a newline"]
    if path.startswith(f"{INPUTS_DIR}/"):
        source = path.removeprefix(f"{INPUTS_DIR}/").removesuffix(".sha256")

        def bad_line(line: str) -> bool:
            match = INPUT_LINE.fullmatch(line)
            return not match or not _safe_input_path(match.group(3))

        expected = doc["sources"][source]["inputs"]["files"]
        if lines and not any(line[:1] != "s" and INPUT_LINE.fullmatch(line) for line in lines):
            return [f"{path}: no anchor line (a <sha256>  <path> line): not a recipe's"]
    elif path.startswith(f"{KEYS_DIR}/"):
        source = path.removeprefix(f"{KEYS_DIR}/").removesuffix(".txt")

        def bad_line(line: str) -> bool:
            return image_key_problem(source, line)

        expected = doc["sources"][source]["images"]
    elif path == SEALED_FILE:
        if not lines or lines[0] != "\t".join(["tag", "rests_on", *groups]):
            return [f"{path}: header does not name recipe.json's sealed groups"]
        pattern = re.compile(_HEX16 + rf"(\t{_HEX16}){{{len(groups) + 1}}}")

        def bad_line(line: str) -> bool:
            return not pattern.fullmatch(line)

        lines, expected = lines[1:], doc["sealed"]["images"]
    else:
        return []
    problems = []
    bad = [number for number, line in enumerate(lines, start=1) if bad_line(line)]
    if bad:
        problems.append(f"{path}: {len(bad)} line(s) not of a recipe's format (first: line {bad[0]})")
    if len(lines) != expected or len(set(lines)) != len(lines):
        problems.append(f"{path}: {len(lines)} lines ({len(set(lines))} distinct), recipe.json says {expected}")
    return problems


# ------------------------------------------------------------------ command line


def _recipe_command():
    import click
    from rich.console import Console

    from pipelines.output.paths import BUILD_OUTPUT, LOCAL_FOLDER

    console = Console()

    @click.command("recipe")
    @click.argument("out", type=BUILD_OUTPUT)
    @click.option(
        "--dest",
        type=LOCAL_FOLDER,
        required=True,
        help="Folder to write the recipe into (new, empty, or an earlier recipe's).",
    )
    def recipe(out: str, dest: Path) -> None:
        """Write a public recipe of the finished build OUT into DEST: settings without local paths,
        versions, every input file's SHA-256 (the tables' plain, the others' sealed), every output file's
        checksum and rows, and sealed row digests; nothing derived from protected content that anyone
        could read back (docs/recipes.md).

        Reads every input byte once when the build fingerprinted by size and mtime. Publish it with
        `cxr-instruct publish DEST --repo user/name --public`; others rebuild with `cxr-instruct hydrate`."""
        try:
            with console.status("hashing the inputs and sealing the rows"):
                summary = make_recipe(out, dest)
        except RecipeError as refused:
            for line in str(refused).splitlines():
                console.print(f"recipe: {line}", style="red", markup=False, highlight=False, soft_wrap=True)
            raise SystemExit(2) from None
        rate = summary.input_bytes / max(summary.hash_seconds, 1e-9) / 1e6
        console.print(
            f"recipe: {summary.dest}  ({summary.files} files, {summary.bytes:,} bytes; {summary.shards} "
            f"output files, {summary.images:,} images sealed)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            f"hashed {summary.input_files:,} input files, {summary.input_bytes / 1e6:,.1f} MB in "
            f"{summary.hash_seconds:.1f} s ({rate:,.0f} MB/s); sealed the rows in "
            f"{summary.seal_seconds:.1f} s; {summary.total_seconds:.1f} s in all",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            f"next: cxr-instruct publish {summary.dest} --repo user/name --public --dry-run",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    return recipe


recipe_command = _recipe_command()
