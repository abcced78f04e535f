"""The ``chexmix`` export's files: every instruction row of a profile as one token sequence for an early-fusion
model that reads VQ-GAN image codes and text in one vocabulary (CheXmix, Chameleon). The sequences are laid out
by :mod:`transforms.chexmix_tokens`; this module supplies what that needs from outside (the tokenizer file, the
image codes of ``OUT/vq`` through :class:`VqCodes`, the rows of the build), counts lengths and dropped rows
(``DEST/dropped.jsonl``), writes the files and ``DEST/vocabulary.json``, and holds the command-line flags.

Files: ``DEST/<task>/<split>-SSSSS-of-NNNNN.parquet`` mirror the input shards (one output row group per
``BATCH_ROWS`` input rows of an input row group; a shard whose rows were all dropped writes no file); with
a mixture, its split is ``DEST/mixture/<split>-SSSSS-of-NNNNN.parquet`` in stream order (no folder when
every draw is dropped). Rows are read, sequenced and written ``BATCH_ROWS`` at a time, so memory holds one
batch's rows, sequences and VQ codes, plus the VQ key index (:class:`VqCodes`). The same build and options
give byte-identical files. :func:`length_report` gives the length numbers without VQ codes or writing
(``python -m pipelines.training.export_chexmix OUT --tokenizer FILE``).
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.training.export_source import (
    Mixture,
    instruction_shards,
    mixture_rows,
    profile_settings,
    shards_by_split,
)
from transforms import io
from transforms.chexmix_tokens import (
    CODES_PER_IMAGE,
    PRESETS,
    SEQUENCE_RULES,
    SPECIAL_ROLES,
    ChexmixOptions,
    ImageCodes,
    Layout,
    SequenceResult,
    TextEncoder,
    chexmix_sequence,
    preset_options,
    resolve_layout,
)
from transforms.export_records import IMAGE_PLACEHOLDER, ExportError

VOCABULARY_FILE = "vocabulary.json"
DROPPED_FILE = "dropped.jsonl"
MIXTURE_FOLDER = "mixture"
MIXTURE_ROWS_PER_FILE = 20_000
BATCH_ROWS = 512
EXAMPLES_PER_TASK = 10
VQ_FINGERPRINT_COLUMNS = ("tokenizer", "tokenizer_fingerprint")

CHEXMIX_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("image_keys", pa.list_(pa.string())),
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("num_tokens", pa.int32()),
        ("num_image_tokens", pa.int32()),
        ("num_loss_tokens", pa.int32()),
        ("prompt_tokens_removed", pa.int32()),
    ]
)


def load_tokenizer(path: str | Path):
    """``(tokenizers.Tokenizer, the file that defines it)`` from a ``tokenizer.json``, or from a folder
    holding one, or else GPT-2-style ``vocab.json`` + ``merges.txt`` (+ ``added_tokens.json``), the files
    of RadPhi-2 / CodeGen / Phi-2 slow tokenizers (:func:`byte_level_bpe_from_files`)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir() and not (path / "tokenizer.json").is_file() and (path / "vocab.json").is_file():
        return byte_level_bpe_from_files(path), path / "vocab.json"
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"no tokenizer file {path} (nor vocab.json + merges.txt beside it)")
    try:
        return Tokenizer.from_file(str(path)), path
    except Exception as error:  # the library raises a bare Exception for a file it cannot read
        raise ExportError(f"{path} is not a tokenizers library tokenizer.json: {error}") from error


def byte_level_bpe_from_files(folder: Path):
    """A GPT-2 byte-level BPE (its pre-tokenizer regex, no prefix space, byte-level decoder) from
    ``vocab.json`` and ``merges.txt``, with the tokens of ``added_tokens.json`` added at their ids
    (``<|…|>`` ones as special tokens, e.g. RadPhi-2's ``<|img|>`` = 50295); raises when an id would not
    match."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    merges = folder / "merges.txt"
    if not merges.is_file():
        raise ExportError(f"{folder} has vocab.json but no merges.txt")
    tokenizer = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(merges)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    for name in ("<|endoftext|>",):
        if tokenizer.token_to_id(name) is not None:
            tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False)])
    added_file = folder / "added_tokens.json"
    added = json.loads(added_file.read_text(encoding="utf-8")) if added_file.is_file() else {}
    for token, token_id in sorted(added.items(), key=lambda item: item[1]):
        if token_id != size:
            raise ExportError(f"{added_file}: {token!r} has id {token_id}, but the next free id is {size}")
        if token.startswith("<|") and token.endswith("|>"):
            tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        else:
            tokenizer.add_tokens([AddedToken(token, normalized=True)])
        size += 1
        if tokenizer.token_to_id(token) != token_id:
            raise ExportError(f"{added_file}: {token!r} did not get id {token_id}")
    return tokenizer


# ------------------------------------------------------------------ the VQ table


class VqCodes:
    """Codes of images from ``OUT/vq``, looked up by key.

    An index ``image_key -> (shard, row group, offset)`` is built once from the ``image_key`` column alone
    (the codes are not read for it; the first shard in name order wins for a key in two). A lookup reads
    each row group that holds a wanted key once and keeps only the wanted rows' codes, so memory holds the
    index and one batch's codes."""

    def __init__(self, out: str | Path, expected_fingerprint: str | None = None):
        self.out = str(out)
        root = io.join(self.out, "vq")
        self.paths = sorted(io.glob(io.join(root, "*.parquet")))
        if not self.paths:
            raise ExportError(f"no VQ codes in {root}: run cxr-instruct tokenize first")
        images = {io.basename(p) for p in io.glob(io.join(self.out, "images", "*.parquet"))}
        missing = sorted(images - {io.basename(p) for p in self.paths})
        if missing:
            raise ExportError(
                f"the VQ table {root} lacks {len(missing)} of the {len(images)} images shards "
                f"(first: {missing[0]}): finish cxr-instruct tokenize first"
            )
        self.expected = expected_fingerprint
        self.fingerprint_column = None
        self.locations: dict[str, int] = {}
        """key -> ``_pack(shard, group, offset)`` (one int, not a tuple: a few tens of bytes less per key)."""
        for shard, path in enumerate(self.paths):
            with io.open_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                names = parquet.schema_arrow.names
                column = next((c for c in VQ_FINGERPRINT_COLUMNS if c in names), None)
                if column is None or "codes" not in names or "image_key" not in names:
                    raise ExportError(
                        f"{path} is not a VQ table (needs image_key, codes and one of {VQ_FINGERPRINT_COLUMNS})"
                    )
                self.fingerprint_column = self.fingerprint_column or column
                for group in range(parquet.metadata.num_row_groups):
                    keys = parquet.read_row_group(group, columns=["image_key"]).column("image_key").to_pylist()
                    for offset, key in enumerate(keys):
                        self.locations.setdefault(key, _pack(shard, group, offset))
        self.rejected: set[str] = set()
        for path in io.glob(io.join(root, "_rejects", "*.parquet")):
            with io.open_file(path) as handle:
                self.rejected.update(pq.read_table(handle, columns=["key"])["key"].to_pylist())
        self.fingerprints: set[str] = set()
        self.description = self._description(root)

    def _description(self, root: str) -> dict:
        path = io.join(root, "tokenizer.json")
        if not io.exists(path):
            return {}
        fingerprint = json.loads(io.read_text(path))
        return {k: fingerprint.get(k) for k in ("id", "trained", "lm_ids")}

    def lookup(self, keys: Iterable[str], image_codes: int) -> dict[str, np.ndarray]:
        """``key -> codes`` (a 1-D integer array) for the keys that have codes (rejected images are left
        out), reading each row group that holds one of them once; raises for a key the table does not
        know, codes outside the layout, or a second VQ tokenizer."""
        wanted: dict[int, dict[int, list[tuple[int, str]]]] = {}  # shard -> group -> [(offset, key)]
        for key in sorted(set(keys)):
            location = self.locations.get(key)
            if location is None:
                if key in self.rejected:
                    continue
                raise ExportError(
                    f"no VQ codes for image {key} in {self.out}/vq (and no reject for it): "
                    "the VQ table does not match this build"
                )
            shard, group, offset = _unpack(location)
            wanted.setdefault(shard, {}).setdefault(group, []).append((offset, key))
        found: dict[str, np.ndarray] = {}
        for shard, groups in sorted(wanted.items()):
            with io.open_file(self.paths[shard]) as handle:
                parquet = pq.ParquetFile(handle)
                for group, members in sorted(groups.items()):
                    data = parquet.read_row_group(group, columns=["codes", self.fingerprint_column])
                    rows = pa.array([offset for offset, _ in members], pa.int64())
                    codes = data.column("codes").take(rows).combine_chunks()
                    lengths = pc.fill_null(pc.list_value_length(codes), 0).to_numpy(zero_copy_only=False)
                    values = codes.flatten().to_numpy(zero_copy_only=False)
                    ends = np.cumsum(lengths)
                    fingerprints = data.column(self.fingerprint_column).take(rows).to_pylist()
                    for (_, key), end, length, fingerprint in zip(
                        members, ends.tolist(), lengths.tolist(), fingerprints
                    ):
                        row = values[end - length : end]
                        self._check(key, row, fingerprint, image_codes)
                        found[key] = row
        return found

    def _check(self, key: str, codes: np.ndarray, fingerprint: str, image_codes: int) -> None:
        if fingerprint not in self.fingerprints:
            self.fingerprints.add(fingerprint)
            if self.expected is not None and fingerprint != self.expected:
                raise ExportError(f"image {key} was tokenized by {fingerprint!r}, not the expected {self.expected!r}")
            if len(self.fingerprints) > 1:
                raise ExportError(
                    f"VQ codes come from {len(self.fingerprints)} different tokenizers: {sorted(self.fingerprints)}"
                )
        if len(codes) != CODES_PER_IMAGE or int(codes.min()) < 0 or int(codes.max()) >= image_codes:
            low, high = (int(codes.min()), int(codes.max())) if len(codes) else (None, None)
            raise ExportError(
                f"image {key}: {len(codes)} codes in {low}..{high}; the layout holds "
                f"{CODES_PER_IMAGE} codes in 0..{image_codes - 1}"
            )


_FIELD = 1 << 24  # row groups per shard and rows per row group stay below this


def _pack(shard: int, group: int, offset: int) -> int:
    if group >= _FIELD or offset >= _FIELD:
        raise ExportError(f"VQ shard {shard}: row group {group} / offset {offset} too large to index")
    return (shard * _FIELD + group) * _FIELD + offset


def _unpack(location: int) -> tuple[int, int, int]:
    rest, offset = divmod(location, _FIELD)
    shard, group = divmod(rest, _FIELD)
    return shard, group, offset


# ------------------------------------------------------------------ length statistics


def percentile(sorted_values: Sequence[int] | np.ndarray, p: float) -> int | None:
    """Nearest-rank percentile: the value at rank ceil(p/100 * n) of the sorted values."""
    if not len(sorted_values):
        return None
    return int(sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1])


@dataclass
class TaskLengths:
    rows: int = 0
    fits: int = 0
    shortened: int = 0
    dropped: int = 0
    written: int = 0
    prompt_tokens_removed: int = 0
    max_images: int = 0
    full: array = field(default_factory=lambda: array("i"))  # 4 bytes a row, not a Python int's 36
    written_lengths: array = field(default_factory=lambda: array("i"))
    dropped_examples: list[dict] = field(default_factory=list)
    dropped_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, row: dict, result: SequenceResult) -> None:
        self.rows += 1
        self.full.append(result.full_tokens)
        self.max_images = max(self.max_images, result.images)
        if result.status == "dropped":
            self.dropped += 1
            assert result.reason is not None  # a dropped row always says why
            self.dropped_reasons[result.reason] = self.dropped_reasons.get(result.reason, 0) + 1
            if len(self.dropped_examples) < EXAMPLES_PER_TASK:
                self.dropped_examples.append(
                    {"id": row["id"], "split": row["split"], "tokens": result.full_tokens, "images": result.images}
                )
            return
        self.written += 1
        self.written_lengths.append(result.tokens)
        self.fits += result.status == "fits"
        self.shortened += result.status == "shortened"
        self.prompt_tokens_removed += result.prompt_tokens_removed

    def summary(self) -> dict:
        full, written = np.sort(np.asarray(self.full)), np.sort(np.asarray(self.written_lengths))
        return {
            "rows": self.rows,
            "fitting": self.fits,
            "shortened": self.shortened,
            "dropped": self.dropped,
            "written": self.written,
            "prompt_tokens_removed": self.prompt_tokens_removed,
            "max_images": self.max_images,
            "tokens": {"p50": percentile(full, 50), "p95": percentile(full, 95), "max": percentile(full, 100)},
            "written_tokens": {
                "p50": percentile(written, 50),
                "p95": percentile(written, 95),
                "max": percentile(written, 100),
            },
            "dropped_reasons": dict(sorted(self.dropped_reasons.items())),
            "dropped_examples": self.dropped_examples,
        }


class LengthStats:
    """Per task :class:`TaskLengths`, and per split the counts (rows, fits, shortened, dropped, written)."""

    COUNTS = ("rows", "fits", "shortened", "dropped", "written")

    def __init__(self) -> None:
        self.tasks: dict[str, TaskLengths] = {}
        self.splits: dict[str, dict[str, int]] = {}

    def add(self, row: dict, result: SequenceResult) -> None:
        self.tasks.setdefault(row["task"], TaskLengths()).add(row, result)
        counts = self.splits.setdefault(row["split"], dict.fromkeys(self.COUNTS, 0))
        counts["rows"] += 1
        counts["written"] += result.status != "dropped"
        counts[{"fits": "fits", "shortened": "shortened", "dropped": "dropped"}[result.status]] += 1

    def summary(self) -> dict:
        return {task: lengths.summary() for task, lengths in sorted(self.tasks.items())}

    def totals(self) -> dict:
        return {name: sum(getattr(t, name) for t in self.tasks.values()) for name in self.COUNTS}

    def report(self, profile: str, options: ChexmixOptions, splits: tuple[str, ...]) -> dict:
        """What :func:`length_report` returns and ``export.json`` holds under ``chexmix.lengths``."""
        return {
            "profile": profile,
            "max_length": options.max_length,
            "overflow": options.overflow,
            "splits": list(splits) or "all",
            "totals": self.totals(),
            "tasks": self.summary(),
        }


# ------------------------------------------------------------------ streaming rows into files


class _Sequencer:
    """Turns batches of rows into sequences: VQ codes (or none, for lengths only), the text encoder,
    the statistics and the dropped-rows log."""

    def __init__(
        self,
        layout: Layout,
        options: ChexmixOptions,
        encoder: TextEncoder,
        vq: VqCodes | None,
        stats: LengthStats,
        dropped_log=None,
    ):
        self.layout, self.options, self.encoder, self.vq = layout, options, encoder, vq
        self.stats, self.dropped_log = stats, dropped_log
        self.also: LengthStats | None = None  # the mixture's own statistics while it is written
        self.blank = [0] * CODES_PER_IMAGE

    def __call__(self, batch: list[dict]) -> list[dict]:
        self.encoder.prime(
            turn["value"].strip() if turn["from"] == "gpt" else piece.strip()
            for row in batch
            for turn in row["conversations"]
            for piece in turn["value"].split(IMAGE_PLACEHOLDER)
        )
        if self.vq is None:
            codes: Mapping[str, ImageCodes] = {}
        else:
            codes = self.vq.lookup((key for row in batch for key in row["image_keys"]), self.layout.image_codes)
        records = []
        for row in batch:
            missing = self.vq is not None and any(key not in codes for key in row["image_keys"])
            codes_of = (lambda key: self.blank) if self.vq is None or missing else codes.__getitem__
            result = chexmix_sequence(row, codes_of, self.encoder, self.layout, self.options)
            if missing:
                result = SequenceResult(
                    None,
                    "dropped",
                    result.full_tokens,
                    result.full_tokens,
                    result.image_tokens,
                    result.images,
                    reason="an image has no VQ codes (rejected by the tokenize stage)",
                )
            self.stats.add(row, result)
            if self.also is not None:
                self.also.add(row, result)
            if result.record is not None:
                record = result.record
                record["input_ids"] = np.asarray(record["input_ids"], np.int32)  # 4 bytes a token from here on
                record["labels"] = np.asarray(record["labels"], np.int32)
                records.append(record)
            elif self.dropped_log is not None:
                self.dropped_log.write(
                    json.dumps(
                        {
                            "id": row["id"],
                            "task": row["task"],
                            "source": row["source"],
                            "split": row["split"],
                            "tokens": result.full_tokens,
                            "images": result.images,
                            "image_tokens": result.image_tokens,
                            "reason": result.reason,
                        },
                        sort_keys=True,
                    )
                    + "\n"
                )
        return records


def _batches(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _shard_batches(shard: str) -> Iterator[list[dict]]:
    """The rows of an input shard, ``BATCH_ROWS`` at a time as Python rows (each batch within one row
    group, which is held as Arrow data while its batches are made)."""
    with io.open_file(shard) as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group)
            for start in range(0, table.num_rows, BATCH_ROWS):
                yield table.slice(start, BATCH_ROWS).to_pylist()


def _records_table(records: list[dict]) -> pa.Table:
    """Sequenced records (``input_ids`` / ``labels`` as int32 arrays) as a table of :data:`CHEXMIX_SCHEMA`."""
    columns = []
    for name, kind in zip(CHEXMIX_SCHEMA.names, CHEXMIX_SCHEMA.types):
        values = [record[name] for record in records]
        if name in ("input_ids", "labels"):
            offsets = np.zeros(len(values) + 1, np.int32)
            np.cumsum([len(v) for v in values], out=offsets[1:])
            columns.append(
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(values), pa.int32()), type=kind)
            )
        else:
            columns.append(pa.array(values, kind))
    return pa.Table.from_arrays(columns, schema=CHEXMIX_SCHEMA)


def _write_shard(shard: str, target: Path, sequencer: _Sequencer) -> int:
    """One input shard -> one output file, one output row group per ``BATCH_ROWS`` input rows that kept a
    row; no file when nothing is written."""
    written = 0
    writer = None
    try:
        for batch in _shard_batches(shard):
            records = sequencer(batch)
            if records:
                if writer is None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(target, CHEXMIX_SCHEMA, compression="zstd")
                writer.write_table(_records_table(records))
                written += len(records)
    finally:
        if writer is not None:
            writer.close()
    return written


def _write_mixture(
    rows: Iterator[dict], folder: Path, split: str, sequencer: _Sequencer, rows_per_file: int = MIXTURE_ROWS_PER_FILE
) -> dict[str, int]:
    """The sampled rows in stream order, ``rows_per_file`` a file; {file name: rows}. ``folder`` is made
    only when a row is written."""
    parts: list[tuple[Path, int]] = []  # the closed parts and their rows

    def open_part() -> Path:
        """The file of the part being written: the one after the closed parts."""
        return folder / f".{split}-{len(parts):05d}.partial"

    writer, count = None, 0
    for batch in _batches(rows, BATCH_ROWS):
        records = sequencer(batch)
        while records:
            if writer is None:
                folder.mkdir(parents=True, exist_ok=True)
                writer, count = pq.ParquetWriter(open_part(), CHEXMIX_SCHEMA, compression="zstd"), 0
            take, records = records[: rows_per_file - count], records[rows_per_file - count :]
            writer.write_table(_records_table(take))
            count += len(take)
            if count == rows_per_file:
                writer.close()
                parts.append((open_part(), count))
                writer = None
    if writer is not None:
        writer.close()
        parts.append((open_part(), count))
    files = {}
    for number, (part, rows_in_part) in enumerate(parts):
        name = f"{split}-{number:05d}-of-{len(parts):05d}.parquet"
        part.rename(folder / name)
        files[name] = rows_in_part
    return files


def prepare(options: ChexmixOptions) -> tuple[Layout, TextEncoder, Path]:
    """The layout and the text encoder of the options' tokenizer."""
    tokenizer, path = load_tokenizer(options.tokenizer_path)
    layout = resolve_layout(tokenizer.get_vocab(with_added_tokens=True), options)
    return layout, TextEncoder(tokenizer, layout), path


def _settings(options: ChexmixOptions, layout: Layout) -> dict:
    return {
        "max_length": options.max_length,
        "overflow": options.overflow,
        "pretraining_tasks": list(options.pretraining_tasks),
        "pretraining_image_loss": options.pretraining_image_loss,
        "bin_tokens": options.bin_tokens,
        "embedding_rows": layout.embedding_rows,
        "image_ids": [layout.image_offset, layout.image_ids[-1]],
        "placement": layout.placement,
    }


def write_chexmix(
    out, profile: str, staging: Path, options: ChexmixOptions, splits: tuple[str, ...], mixture: Mixture | None
) -> tuple[dict, dict[str, int]]:
    """Write the chexmix files into ``staging``; (report fields for ``export.json``, {file: rows}).

    With ``mixture``, its split is written as the sampled rows in stream order (``DEST/mixture/``); the
    other splits mirror the input shards.
    """
    profile_settings(out, profile)  # a missing profile is named before anything else
    layout, encoder, tokenizer_file = prepare(options)
    vq = VqCodes(out, options.vq_fingerprint)
    by_split = shards_by_split(out, profile, splits)
    if mixture is not None and mixture.split not in by_split:
        raise ExportError(
            f"--mixture samples the {mixture.split!r} split, which this export does not write "
            f"(splits: {sorted(by_split)})"
        )
    stats = LengthStats()
    sequencer = _Sequencer(layout, options, encoder, vq, stats)
    rows_per_file: dict[str, int] = {}
    shares = None
    with open(staging / DROPPED_FILE, "w", encoding="utf-8") as dropped_log:
        sequencer.dropped_log = dropped_log
        for split, shards in by_split.items():
            if mixture is not None and split == mixture.split:
                rows, shares = mixture_rows(out, profile, mixture)
                sampled = LengthStats()
                sequencer.also = sampled
                for name, count in _write_mixture(rows, staging / MIXTURE_FOLDER, split, sequencer).items():
                    rows_per_file[f"{MIXTURE_FOLDER}/{name}"] = count
                sequencer.also = None
                continue
            for shard in shards:
                task = io.basename(shard.rsplit("/", 1)[0])
                relative = f"{task}/{io.basename(shard)}"
                written = _write_shard(shard, staging / relative, sequencer)
                if written:
                    rows_per_file[relative] = written
    vocabulary = {
        **layout.describe(tokenizer_file.name, io.sha256_of(str(tokenizer_file))),
        "vq_tokenizer": {**vq.description, "fingerprints_used": sorted(vq.fingerprints)},
        "sequences": SEQUENCE_RULES,
        "settings": _settings(options, layout),
    }
    (staging / VOCABULARY_FILE).write_text(json.dumps(vocabulary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    counts = {split: stats.splits.get(split, dict.fromkeys(LengthStats.COUNTS, 0)) for split in sorted(by_split)}
    report = {
        "rows": {split: c["written"] for split, c in counts.items()},
        "read": {split: c["rows"] for split, c in counts.items()},
        "dropped": {split: c["dropped"] for split, c in counts.items()},
        "shortened": {split: c["shortened"] for split, c in counts.items()},
        "chexmix": {
            **_settings(options, layout),
            "vocabulary_file": VOCABULARY_FILE,
            "dropped_file": DROPPED_FILE,
            "vq_tokenizer": sorted(vq.fingerprints)[0] if vq.fingerprints else None,
            "vq_trained": vq.description.get("trained"),
            "lengths": stats.report(profile, options, splits),
        },
    }
    if shares is not None:
        report["mixture"] = {
            **shares,
            "written_after_length_limit": {
                task: sampled.tasks[task].written if task in sampled.tasks else 0 for task in shares["tasks"]
            },
        }
    return report, rows_per_file


# ------------------------------------------------------------------ lengths only


def length_report(out, profile: str, options: ChexmixOptions, splits: tuple[str, ...] = ()) -> dict:
    """Per task of a profile: rows, fitting, shortened, dropped and token percentiles at
    ``options.max_length``, computed as the export would write them (no VQ codes read, nothing written)."""
    layout, encoder, _ = prepare(options)
    stats = LengthStats()
    sequencer = _Sequencer(layout, options, encoder, None, stats)
    for shard in instruction_shards(out, profile, splits):
        for batch in _shard_batches(shard):
            sequencer(batch)
    return stats.report(profile, options, splits)


def profiles_of(out) -> list[str]:
    """The profiles of a build (folders of OUT/instructions with a weights.json)."""
    found = io.glob(io.join(str(out), "instructions", "*", "weights.json"))
    return sorted(io.basename(path.rsplit("/", 1)[0]) for path in found)


def format_lengths(report: dict) -> str:
    """A plain table of one :func:`length_report` (or of ``export.json``'s ``chexmix.lengths``)."""
    lines = [
        f"{report['profile']} at {report['max_length']} tokens ({report['overflow']}):",
        f"  {'task':<34} {'rows':>6} {'fit':>6} {'short':>6} {'drop':>6} {'p50':>6} {'p95':>6} {'max':>6} {'imgs':>4}",
    ]
    for task, t in report["tasks"].items():
        lines.append(
            f"  {task:<34} {t['rows']:>6} {t['fitting']:>6} {t['shortened']:>6} {t['dropped']:>6} "
            f"{t['tokens']['p50']:>6} {t['tokens']['p95']:>6} {t['tokens']['max']:>6} {t['max_images']:>4}"
        )
    totals = report["totals"]
    lines.append(
        f"  {'all tasks':<34} {totals['rows']:>6} {totals['fits']:>6} {totals['shortened']:>6} {totals['dropped']:>6}"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------ command line


def _offset(value):
    if value is None or isinstance(value, int):
        return value
    if str(value).lower() in ("after-text", "after_text", "auto"):
        return "after-text"
    try:
        return int(value)
    except ValueError as error:
        raise click.BadParameter(f"{value!r}: an integer or 'after-text'") from error


CLI_OPTIONS: list = [
    click.option(
        "--tokenizer",
        "tokenizer_path",
        type=click.Path(exists=True),
        help="chexmix: the language model's tokenizer.json (or its folder), tokenizers library format.",
    ),
    click.option(
        "--max-length",
        type=click.IntRange(min=1),
        default=1300,
        show_default=True,
        help="chexmix: maximum tokens per sequence; longer rows are dropped (or shortened), never cut.",
    ),
    click.option(
        "--chexmix-preset",
        type=click.Choice(sorted(PRESETS)),
        default="chexmix",
        show_default=True,
        help="chexmix: token layout to start from (CheXmix: codes after the text ids; chameleon: 4..8195).",
    ),
    click.option(
        "--chexmix-image-offset",
        default=None,
        callback=lambda ctx, param, value: _offset(value),
        help="chexmix: id of image code 0, or 'after-text' (default of the chexmix preset).",
    ),
    *[
        click.option(
            f"--chexmix-{role.replace('_', '-')}",
            f"chexmix_{role}",
            default=None,
            help=f"chexmix: the {role.replace('_', '-')} token: its text, id:N, or none.",
        )
        for role in SPECIAL_ROLES
    ],
    click.option(
        "--chexmix-overflow",
        type=click.Choice(["drop", "shorten"]),
        default="drop",
        show_default=True,
        help="chexmix: a row over --max-length is dropped, or first loses whole prompt parts.",
    ),
    click.option(
        "--chexmix-pretraining-task",
        "chexmix_pretraining_tasks",
        multiple=True,
        help="chexmix: tasks written as pretraining documents (default report_pretraining).",
    ),
    click.option(
        "--chexmix-image-loss/--chexmix-no-image-loss",
        default=True,
        show_default=True,
        help="chexmix: pretraining rows learn their image codes too.",
    ),
    click.option(
        "--chexmix-bin-tokens",
        is_flag=True,
        help="chexmix: add <bin_1>..<bin_1000> as whole tokens when the tokenizer lacks them.",
    ),
    click.option(
        "--chexmix-vq-fingerprint",
        default=None,
        help="chexmix: refuse VQ codes of any other tokenizer fingerprint id (OUT/vq/tokenizer.json 'id').",
    ),
]


def options_from_cli(params: dict) -> ChexmixOptions:
    """The options of the chexmix flags (``params``: their click keyword arguments)."""
    if not params.get("tokenizer_path"):
        raise click.UsageError("--format chexmix needs --tokenizer FILE (the language model's tokenizer.json)")
    changes: dict = {
        "max_length": params.get("max_length") or 1300,
        "overflow": params.get("chexmix_overflow") or "drop",
        "pretraining_image_loss": params.get("chexmix_image_loss", True),
        "bin_tokens": bool(params.get("chexmix_bin_tokens")),
        "vq_fingerprint": params.get("chexmix_vq_fingerprint"),
    }
    offset = params.get("chexmix_image_offset")
    if offset is not None:
        changes["image_offset"] = None if offset == "after-text" else offset
    for role in SPECIAL_ROLES:
        if params.get(f"chexmix_{role}") is not None:
            changes[role] = params[f"chexmix_{role}"]
    if params.get("chexmix_pretraining_tasks"):
        changes["pretraining_tasks"] = tuple(params["chexmix_pretraining_tasks"])
    try:
        return preset_options(params.get("chexmix_preset") or "chexmix", params["tokenizer_path"], **changes)
    except ExportError as error:
        raise click.UsageError(str(error)) from error


def with_cli_options(command):
    """``command`` with the chexmix flags (:data:`CLI_OPTIONS`) added."""
    for option in reversed(CLI_OPTIONS):
        command = option(command)
    return command


@click.command("chexmix-lengths")
@click.argument("out")
@click.option("--profile", "profiles", multiple=True, help="Profiles to measure (repeatable); default all.")
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable); default all.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the full reports (percentiles, dropped examples) to this JSON file.",
)
@with_cli_options
def lengths_command(out, profiles, splits, json_path, **params) -> None:
    """Token lengths of every profile of the build in OUT as the chexmix export would write them: per task
    the rows, how many fit --max-length, are shortened or dropped, and the p50 / p95 / max lengths.
    Reads no VQ codes and writes no sequences."""
    options = options_from_cli(params)
    reports = []
    try:
        for profile in profiles or profiles_of(out):
            report = length_report(out, profile, options, tuple(splits))
            reports.append(report)
            click.echo(format_lengths(report))
    except ExportError as error:
        raise click.ClickException(str(error)) from error
    if json_path:
        Path(json_path).write_text(json.dumps(reports, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = [
    "CHEXMIX_SCHEMA",
    "CLI_OPTIONS",
    "VqCodes",
    "length_report",
    "lengths_command",
    "options_from_cli",
    "write_chexmix",
]

if __name__ == "__main__":
    lengths_command()
