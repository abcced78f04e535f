"""Exports of one profile's instruction rows into the formats training repositories read.

``llava``     ``DEST/<split>.json``: a JSON list of ``{id, image | images, conversations}`` (LLaVA's
              ``train.py`` contract) and ``DEST/images/`` holding one PNG per referenced image, at the
              profile's ``image_size`` when it names one (``weights.json``; Radixpert and MediVLM: 224).
``messages``  ``DEST/<split>.jsonl``: one ``{id, images, messages}`` object a line, ``messages`` in the
              Hugging Face chat format (``content`` parts ``{"type": "image"}`` / ``{"type": "text"}``),
              plus the same ``DEST/images/`` folder.
``chexmix``   ``DEST/<task>/<split>-SSSSS-of-NNNNN.parquet`` (one file per input shard): the token ids of
              each row with every ``<image>`` replaced by ``begin-image, 1024 LM ids, end-image``
              (from ``OUT/vq``) and the text tokenized with a user-supplied ``tokenizer.json``.

Every export streams: instruction shards are read one row group at a time in sorted shard order and
written as they are read; images are copied row group by row group. Memory holds one row group plus
the set of image keys the export references. Same build and options give byte-identical files.
``DEST/export.json`` reports what was written (rows per split, images, truncations).

OUT may be a local folder or a ``gs://`` URI (read through :mod:`transforms.io`, Beam's FileSystems);
DEST is a local folder, what a trainer reads.

Image file names (:func:`image_file_name`): ``<source>/<native id>.png`` where the native id keeps
``[A-Za-z0-9._-]``; an id that contains any other character (or starts with a dot) has those
characters (and the leading dot) replaced by ``_`` and the first 8 hex digits of its stable hash appended, so two keys never
share a file. ``mimic/02aa804e-...`` -> ``mimic/02aa804e-....png``; ``padchest/2168...png`` ->
``padchest/2168...png.png``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.paths import BUILD_OUTPUT, LOCAL_FOLDER
from transforms import io
from transforms.hashing import stable_hash
from transforms.images import resize_png

FORMATS = ("llava", "messages", "chexmix")
IMAGE_PLACEHOLDER = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}
VQ_FINGERPRINT_COLUMNS = ("tokenizer", "tokenizer_fingerprint")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

CHEXMIX_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("image_keys", pa.list_(pa.string())),
        ("input_ids", pa.list_(pa.int32())),
        ("num_tokens", pa.int32()),
        ("num_image_tokens", pa.int32()),
        ("num_text_tokens", pa.int32()),
        ("truncated_tokens", pa.int32()),
    ]
)


class ExportError(ValueError):
    """The build output cannot be exported as asked (missing table, image, VQ codes, bad row)."""


@dataclass(frozen=True)
class ChexmixOptions:
    """Token layout of the ``chexmix`` export (defaults: CheXmix / Chameleon, docs/tokenizer.md §3).

    ``image_id_range`` is the closed range of LM ids that belong to image codes; a text token inside
    it (or equal to a begin/end id) means the tokenizer does not match the VQ vocabulary, an error.
    ``bos_token`` / ``eos_token`` name tokens of the tokenizer file put first / last (none by default).
    """

    tokenizer_path: str
    max_length: int = 1300
    begin_image_id: int = 8197
    end_image_id: int = 8196
    image_id_range: tuple[int, int] = (4, 8195)
    bos_token: str | None = None
    eos_token: str | None = None


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


def split_of(shard: str | Path) -> str:
    """``train-00000-of-00002.parquet`` -> ``train``."""
    return io.basename(str(shard)).rsplit("-", 3)[0]


def iter_rows(shard: str) -> Iterator[dict]:
    """Rows of one Parquet shard, one row group in memory at a time."""
    with io.open_file(shard) as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group).to_pylist()


def image_file_name(image_key: str) -> str:
    """A safe, unique relative file name for an image key (rule in the module docstring)."""
    source, sep, native = image_key.partition("/")
    if not sep or not source or not native or _UNSAFE.search(source):
        raise ExportError(f"image_key {image_key!r} is not '<source>/<native id>'")
    safe = re.sub(r"^\.", "_", _UNSAFE.sub("_", native))
    if safe != native:
        safe = f"{safe}-{stable_hash('image-file', image_key) % 16**8:08x}"
    return f"{source}/{safe}.png"


def profile_image_size(out: str | Path, profile: str) -> int | None:
    """The input size the profile names in its ``weights.json`` (Radixpert, MediVLM: 224), else None."""
    with io.open_text(io.join(str(out), "instructions", profile, "weights.json")) as handle:
        return json.load(handle).get("image_size")


def copy_images(out: str | Path, keys: set[str], dest: Path, image_size: int | None = None) -> int:
    """Write the PNG of every key into ``dest/images/<image_file_name>``, resized to ``image_size`` when
    given (:func:`transforms.images.resize_png`); all must exist."""
    remaining = set(keys)
    for shard in io.glob(io.join(str(out), "images", "*.parquet")):
        if not remaining:
            break
        with io.open_file(shard) as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=["image_key", "image"])
                wanted = pc.is_in(table["image_key"], value_set=pa.array(sorted(remaining), pa.string()))
                for row in table.filter(wanted).to_pylist():
                    path = dest / "images" / image_file_name(row["image_key"])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    png = row["image"]["bytes"]
                    path.write_bytes(png if image_size is None else resize_png(png, image_size))
                    remaining.discard(row["image_key"])
    if remaining:
        raise ExportError(f"{len(remaining)} referenced images are not in {out}/images, e.g. {sorted(remaining)[:3]}")
    return len(keys)


# ------------------------------------------------------------------ row conversions (pure)


def check_conversation(row: dict) -> None:
    """Raise unless turns alternate human/gpt from a human turn and ``<image>`` slots match the images."""
    turns = row["conversations"]
    if not turns:
        raise ExportError(f"row {row['id']}: empty conversation")
    for index, turn in enumerate(turns):
        expected = "human" if index % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise ExportError(f"row {row['id']}: turn {index} is from {turn['from']!r}, expected {expected!r}")
    slots = sum(turn["value"].count(IMAGE_PLACEHOLDER) for turn in turns)
    if slots != len(row["image_keys"]):
        raise ExportError(f"row {row['id']}: {slots} {IMAGE_PLACEHOLDER} slots for {len(row['image_keys'])} images")


def llava_record(row: dict) -> dict:
    """One LLaVA item: ``image`` for a single image, ``images`` (in order) for several."""
    check_conversation(row)
    names = [image_file_name(key) for key in row["image_keys"]]
    record: dict = {"id": row["id"]}
    if len(names) == 1:
        record["image"] = names[0]
    elif names:
        record["images"] = names
    record["conversations"] = [{"from": t["from"], "value": t["value"]} for t in row["conversations"]]
    return record


def content_parts(text: str) -> list[dict]:
    """``"<image>\\nWhat is shown?"`` -> ``[{"type": "image"}, {"type": "text", "text": "What is shown?"}]``.

    Text around a placeholder is stripped of surrounding whitespace; empty text parts are left out.
    """
    parts: list[dict] = []
    for index, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if index:
            parts.append({"type": "image"})
        piece = piece.strip()
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def messages_record(row: dict) -> dict:
    """One chat-format item: ``images`` in slot order and ``messages`` with user/assistant roles."""
    check_conversation(row)
    return {
        "id": row["id"],
        "images": [image_file_name(key) for key in row["image_keys"]],
        "messages": [{"role": ROLES[t["from"]], "content": content_parts(t["value"])} for t in row["conversations"]],
    }


def chexmix_ids(row: dict, lm_ids: dict[str, list[int]], encode, options: ChexmixOptions,
                bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """Token ids of one row: turns in order, each ``<image>`` as ``[begin, *lm_ids, end]``, text via ``encode``.

    Only text is truncated (from the end, EOS included) to fit ``max_length``; a row whose image blocks
    alone do not fit raises. ``encode(text) -> list[int]`` adds no special tokens.
    """
    check_conversation(row)
    low, high = options.image_id_range
    ids: list[int] = [] if bos_id is None else [bos_id]
    is_image: list[bool] = [False] * len(ids)
    images = iter(row["image_keys"])
    for turn in row["conversations"]:
        for index, piece in enumerate(turn["value"].split(IMAGE_PLACEHOLDER)):
            if index:
                key = next(images)
                if key not in lm_ids:
                    raise ExportError(f"row {row['id']}: no VQ codes for image {key}")
                block = [options.begin_image_id, *lm_ids[key], options.end_image_id]
                ids += block
                is_image += [True] * len(block)
            piece = piece.strip()
            if piece:
                text_ids = encode(piece)
                clash = [t for t in text_ids if low <= t <= high or t in (options.begin_image_id, options.end_image_id)]
                if clash:
                    raise ExportError(f"row {row['id']}: text token ids {clash[:5]} fall in the image id range "
                                      f"{options.image_id_range}: the tokenizer does not match the VQ vocabulary")
                ids += text_ids
                is_image += [False] * len(text_ids)
    if eos_id is not None:
        ids.append(eos_id)
        is_image.append(False)
    image_tokens = sum(is_image)
    if image_tokens + (bos_id is not None) > options.max_length:
        raise ExportError(f"row {row['id']}: {image_tokens} image tokens exceed max_length {options.max_length}")
    drop = max(0, len(ids) - options.max_length)
    if drop:  # the last `drop` text tokens go (EOS first), image blocks and BOS stay
        text_positions = [i for i, img in enumerate(is_image) if not img and not (i == 0 and bos_id is not None)]
        removed = set(text_positions[-drop:])
        ids = [t for i, t in enumerate(ids) if i not in removed]
    return {
        "id": row["id"],
        "task": row["task"],
        "source": row["source"],
        "split": row["split"],
        "image_keys": list(row["image_keys"]),
        "input_ids": ids,
        "num_tokens": len(ids),
        "num_image_tokens": image_tokens,
        "num_text_tokens": len(ids) - image_tokens,
        "truncated_tokens": drop,
    }


# ------------------------------------------------------------------ the three exports


def export_json(out: str | Path, profile: str, dest: str | Path, fmt: str, splits: tuple[str, ...] = ()) -> dict:
    """``llava`` (JSON list per split) or ``messages`` (JSON Lines per split), plus the image folder."""
    convert, suffix = {"llava": (llava_record, ".json"), "messages": (messages_record, ".jsonl")}[fmt]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[Path]] = {}
    for shard in instruction_shards(out, profile, splits):
        by_split.setdefault(split_of(shard), []).append(shard)
    keys: set[str] = set()
    rows: dict[str, int] = {}
    for split, shards in sorted(by_split.items()):
        count = 0
        with open(dest / f"{split}{suffix}", "w", encoding="utf-8") as handle:
            handle.write("[\n" if fmt == "llava" else "")
            for shard in shards:
                for row in iter_rows(shard):
                    text = json.dumps(convert(row), ensure_ascii=False)
                    if fmt == "llava":
                        handle.write(("" if count == 0 else ",\n") + text)
                    else:
                        handle.write(text + "\n")
                    keys.update(row["image_keys"])
                    count += 1
            handle.write("\n]\n" if fmt == "llava" else "")
        rows[split] = count
    image_size = profile_image_size(out, profile)
    images = copy_images(out, keys, dest, image_size)
    return write_report(dest, {"format": fmt, "profile": profile, "rows": rows, "images": images,
                               "image_size": image_size})


def load_tokenizer(options: ChexmixOptions):
    """The ``tokenizers.Tokenizer`` of the options and its BOS / EOS ids (imported lazily)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(options.tokenizer_path))
    special = {}
    for name in ("bos_token", "eos_token"):
        token = getattr(options, name)
        special[name] = None if token is None else tokenizer.token_to_id(token)
        if token is not None and special[name] is None:
            raise ExportError(f"{name} {token!r} is not in {options.tokenizer_path}")
    return tokenizer, special["bos_token"], special["eos_token"]


def vq_lookup(out: str | Path, keys: list[str]) -> tuple[dict[str, list[int]], set[str]]:
    """``image_key -> lm_ids`` for the given keys from ``OUT/vq`` and the tokenizer fingerprints seen.

    The fingerprint column is ``tokenizer`` (``pipelines.tokenize``) or ``tokenizer_fingerprint``.
    """
    paths = io.glob(io.join(str(out), "vq", "*.parquet"))
    if not paths:
        raise ExportError(f"no VQ codes in {out}/vq: run the tokenizer stage first")
    wanted = pa.array(keys, pa.string())
    lookup: dict[str, list[int]] = {}
    fingerprints: set[str] = set()
    fingerprint = None
    for path in paths:
        with io.open_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            if fingerprint is None:  # the first shard's schema names the column, as for a dataset of them all
                fingerprint = next((c for c in VQ_FINGERPRINT_COLUMNS if c in parquet.schema_arrow.names), None)
                if fingerprint is None:
                    raise ExportError(f"{out}/vq has none of the fingerprint columns {VQ_FINGERPRINT_COLUMNS}")
            for group in range(parquet.num_row_groups):
                found = pc.is_in(parquet.read_row_group(group, columns=["image_key"])["image_key"], value_set=wanted)
                if not pc.any(found).as_py():
                    continue
                table = parquet.read_row_group(group, columns=["image_key", "lm_ids", fingerprint]).filter(found)
                lookup.update(zip(table["image_key"].to_pylist(), table["lm_ids"].to_pylist()))
                fingerprints.update(table[fingerprint].to_pylist())
    return lookup, fingerprints


def export_chexmix(out: str | Path, profile: str, dest: str | Path, options: ChexmixOptions,
                   splits: tuple[str, ...] = ()) -> dict:
    """Token sequences per input shard, written as Parquet with token counts and truncations."""
    tokenizer, bos_id, eos_id = load_tokenizer(options)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    dest = Path(dest)
    root = io.join(str(out), "instructions", profile)
    rows: dict[str, int] = {}
    truncated_rows = truncated_tokens = 0
    fingerprints: set[str] = set()
    for shard in instruction_shards(out, profile, splits):
        target = dest / io.relative(shard, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        with io.open_file(shard) as handle, pq.ParquetWriter(target, CHEXMIX_SCHEMA, compression="zstd") as writer:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                batch = parquet.read_row_group(group).to_pylist()
                keys = sorted({key for row in batch for key in row["image_keys"]})
                lm_ids, seen = vq_lookup(out, keys)
                fingerprints |= seen
                records = [chexmix_ids(row, lm_ids, encode, options, bos_id, eos_id) for row in batch]
                truncated_rows += sum(r["truncated_tokens"] > 0 for r in records)
                truncated_tokens += sum(r["truncated_tokens"] for r in records)
                writer.write_table(pa.Table.from_pylist(records, schema=CHEXMIX_SCHEMA))
            if parquet.num_row_groups == 0:
                writer.write_table(CHEXMIX_SCHEMA.empty_table())
        split = split_of(shard)
        rows[split] = rows.get(split, 0) + parquet.metadata.num_rows
    if len(fingerprints) > 1:
        raise ExportError(f"VQ codes come from {len(fingerprints)} different tokenizers: {sorted(fingerprints)}")
    return write_report(dest, {
        "format": "chexmix", "profile": profile, "rows": dict(sorted(rows.items())),
        "max_length": options.max_length, "truncated_rows": truncated_rows,
        "truncated_tokens": truncated_tokens, "tokenizer_fingerprint": next(iter(fingerprints), None),
    })


def write_report(dest: Path, report: dict) -> dict:
    (dest / "export.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


def export(out: str | Path, profile: str, fmt: str, dest: str | Path, splits: tuple[str, ...] = (),
           chexmix: ChexmixOptions | None = None) -> dict:
    """Export one profile of a build; returns (and writes to ``DEST/export.json``) the report."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; one of {FORMATS}")
    if fmt == "chexmix":
        if chexmix is None:
            raise ExportError("the chexmix format needs a tokenizer file (ChexmixOptions.tokenizer_path)")
        return export_chexmix(out, profile, dest, chexmix, splits)
    return export_json(out, profile, dest, fmt, splits)


@click.command("export")
@click.argument("out", type=BUILD_OUTPUT)
@click.option("--profile", required=True, help="Profile folder under OUT/instructions, e.g. m4cxr.")
@click.option("--format", "fmt", required=True, type=click.Choice(FORMATS))
@click.option("--dest", required=True, type=LOCAL_FOLDER,
              help="Local folder to write into (also for a gs:// OUT: what a trainer reads).")
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable); default all.")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(exists=True, dir_okay=False),
              help="chexmix: tokenizer.json of the language model (tokenizers library format).")
@click.option("--max-length", default=1300, show_default=True, help="chexmix: maximum tokens per sequence.")
@click.option("--begin-image-id", default=8197, show_default=True)
@click.option("--end-image-id", default=8196, show_default=True)
@click.option("--bos-token", default=None, help="chexmix: token of the tokenizer put first.")
@click.option("--eos-token", default=None, help="chexmix: token of the tokenizer put last.")
def export_command(out, profile, fmt, dest, splits, tokenizer_path, max_length, begin_image_id, end_image_id,
                   bos_token, eos_token) -> None:
    """Export one profile of the build in OUT (a local folder or gs:// URI) as llava JSON, chat messages
    or CheXmix token sequences, into the local folder DEST."""
    options = None
    if fmt == "chexmix":
        if not tokenizer_path:
            raise click.UsageError("--format chexmix needs --tokenizer FILE")
        options = ChexmixOptions(tokenizer_path=tokenizer_path, max_length=max_length,
                                 begin_image_id=begin_image_id, end_image_id=end_image_id,
                                 bos_token=bos_token, eos_token=eos_token)
    try:
        report = export(out, profile, fmt, dest, tuple(splits), options)
    except ExportError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(report, sort_keys=True))
