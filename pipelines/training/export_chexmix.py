"""The ``chexmix`` export: instruction rows as token sequences for an early-fusion model that reads VQ-GAN
image codes and text in one vocabulary (CheXmix, Chameleon), with a loss mask and a length limit.

Every rule here is described for users in ``docs/chexmix-export.md``; in short:

- **Vocabulary** (:class:`Layout`): the text ids are the tokenizer file's; image code ``c`` (the ``codes``
  column of ``OUT/vq``, 0..8191) becomes id ``image_offset + c``, the offset being the size of the text
  vocabulary (``after-text``, CheXmix's own layout) or a given number (4 for Chameleon). A special token is
  named by its text (the tokenizer's id when it has it, else a new id after the image codes and the text),
  ``id:N``, or ``none``. A layout whose image ids meet a text token is refused, unless that token is the
  image token of the same code (Chameleon's ``IMGIMG…Z`` names). ``DEST/vocabulary.json`` holds it all.
- **Sequences** (:func:`chexmix_sequence`): ``[bos] (prompt separator answer eos)+`` where an image is
  ``begin-image, 1024 code ids, end-image`` and each run of images is followed by ``text-start``;
  pretraining rows (``report_pretraining``) are one document, ``image(s) text-start report eos``, with no
  separator, as CheXmix is pretrained.
- **Loss** (``labels``: the id where learned, -100 where not): instruction rows learn each answer and the
  ``eos`` after it; pretraining rows learn every token (image codes too, unless
  ``pretraining_image_loss`` is off, then image blocks are masked).
- **Length** (``max_length``, 1300 by default): nothing is ever cut inside a sequence. A row too long is
  dropped (``overflow="drop"``), or first has whole parts of its prompt removed (``overflow="shorten"``:
  list items and sentences of context lines, never the instruction line, an image or an answer) and is
  dropped only if that is not enough. Dropped rows are counted per task and listed in
  ``DEST/dropped.jsonl`` with their length.

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
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import click
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.training.export_source import (
    ExportError,
    Mixture,
    instruction_shards,
    mixture_rows,
    profile_settings,
    shards_by_split,
)
from transforms import io
from transforms.export_records import IMAGE_PLACEHOLDER, RecordError, check_conversation

CODES_PER_IMAGE = 1024
IGNORE = -100
VOCABULARY_FILE = "vocabulary.json"
DROPPED_FILE = "dropped.jsonl"
MIXTURE_FOLDER = "mixture"
MIXTURE_ROWS_PER_FILE = 20_000
BATCH_ROWS = 512
EXAMPLES_PER_TASK = 10
VQ_FINGERPRINT_COLUMNS = ("tokenizer", "tokenizer_fingerprint")
SPECIAL_ROLES = ("mask", "separator", "begin_image", "end_image", "text_start", "eos", "bos", "pad")
"""Special-token roles; a role whose token is new gets its id in this order."""
REQUIRED_ROLES = ("begin_image", "end_image", "separator", "eos")
IN_SEQUENCE_ROLES = ("separator", "begin_image", "end_image", "text_start", "eos", "bos")
"""Roles written into sequences: plain text may not tokenize to any of them."""
_IMAGE_TOKEN = re.compile(r"IMGIMG([A-J]+)Z")
_BIN_TOKENS = tuple(f"<bin_{k}>" for k in range(1, 1001))

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


# ------------------------------------------------------------------ options and presets


@dataclass(frozen=True)
class ChexmixOptions:
    """What the export writes. Defaults: CheXmix's layout (RadPhi-2 text ids, image ids after them,
    ``<|img|>`` / ``<|/img|>`` around an image, ``<|endoftext|>`` as text-start and end of text).

    A token spec is the token's text (its id in the tokenizer, or a new id when the tokenizer lacks it),
    ``id:N`` (that id, whatever the tokenizer holds there) or ``none``. ``image_offset`` None places the
    image codes right after the text vocabulary (its largest id + 1).
    """

    tokenizer_path: str
    max_length: int = 1300
    image_offset: int | None = None
    image_codes: int = 8192
    begin_image: str = "<|img|>"
    end_image: str = "<|/img|>"
    text_start: str = "<|endoftext|>"
    separator: str = "<|answer|>"
    eos: str = "<|endoftext|>"
    bos: str = "none"
    pad: str = "<|endoftext|>"
    mask: str = "<|mask|>"
    overflow: Literal["drop", "shorten"] = "drop"
    pretraining_tasks: tuple[str, ...] = ("report_pretraining",)
    pretraining_image_loss: bool = True
    bin_tokens: bool = False
    vq_fingerprint: str | None = None

    def __post_init__(self) -> None:
        if self.overflow not in ("drop", "shorten"):
            raise ExportError(f"overflow must be 'drop' or 'shorten', not {self.overflow!r}")
        if self.max_length < 1:
            raise ExportError(f"max_length must be positive, not {self.max_length}")
        if self.image_codes < 1 or (self.image_offset is not None and self.image_offset < 0):
            raise ExportError("image_codes must be positive and image_offset not negative")
        for role in REQUIRED_ROLES:
            if getattr(self, role).strip().lower() == "none":
                raise ExportError(f"the {role} token cannot be none: sequences need it")


PRESETS: dict[str, dict] = {
    "chexmix": {},
    "chameleon": {
        "image_offset": 4,
        "begin_image": "id:8197",
        "end_image": "id:8196",
        "text_start": "none",
        "separator": "<reserved08706>",
        "eos": "</s>",
        "bos": "<s>",
        "pad": "<pad>",
        "mask": "none",
    },
}
"""``chexmix``: CheXmix's own layout (image ids after RadPhi-2's 50,368 text ids; with its tokenizer the
new ``<|mask|>`` and ``<|answer|>`` get 58560 and 58561, so the 58,562 embedding rows CheXmix's loader
sizes are enough). ``chameleon``: Chameleon's ids (codes 4..8195, begin-image 8197, end-image 8196,
``<reserved08706>`` = 8710 as separator), for a tokenizer that keeps 4..8195 free or holds the image
tokens there."""


def preset_options(preset: str, tokenizer_path: str, **changes) -> ChexmixOptions:
    """The options of a preset with some fields changed."""
    if preset not in PRESETS:
        raise ExportError(f"unknown chexmix preset {preset!r}; one of {sorted(PRESETS)}")
    return ChexmixOptions(tokenizer_path=tokenizer_path, **{**PRESETS[preset], **changes})


# ------------------------------------------------------------------ the vocabulary layout


@dataclass(frozen=True)
class Layout:
    """Where every id of a sequence comes from (module docstring). ``ids``: role -> id or None;
    ``tokens``: role -> the token's text (None for ``id:N`` and absent roles); ``origins``: role ->
    ``tokenizer`` | ``added`` | ``fixed id``; ``added``: new tokens and their ids, in id order."""

    placement: Literal["after-text", "offset"]
    text_size: int
    image_offset: int
    image_codes: int
    ids: dict[str, int | None]
    tokens: dict[str, str | None]
    origins: dict[str, str | None]
    added: tuple[tuple[str, int], ...] = ()
    image_tokens_in_text: int = 0

    @property
    def embedding_rows(self) -> int:
        """Rows the model's embedding (and output) matrix needs: the largest id used + 1."""
        ids = [
            self.text_size - 1,
            self.image_offset + self.image_codes - 1,
            *(i for i in self.ids.values() if i is not None),
            *(i for _, i in self.added),
        ]
        return max(ids) + 1

    @property
    def image_ids(self) -> range:
        return range(self.image_offset, self.image_offset + self.image_codes)

    def describe(self, tokenizer_file: str | None = None, tokenizer_sha256: str | None = None) -> dict:
        """The content of ``vocabulary.json``."""
        return {
            "placement": self.placement,
            "text": {
                "size": self.text_size,
                "ids": f"0..{self.text_size - 1}",
                "tokenizer_file": tokenizer_file,
                "tokenizer_sha256": tokenizer_sha256,
                "image_tokens_in_text": self.image_tokens_in_text,
            },
            "image_codes": {
                "first_id": self.image_offset,
                "last_id": self.image_offset + self.image_codes - 1,
                "count": self.image_codes,
                "rule": "id = first_id + code (code: the vq table's codes)",
                "codes_per_image": CODES_PER_IMAGE,
            },
            "special_tokens": {
                role: None
                if self.ids[role] is None
                else {"id": self.ids[role], "token": self.tokens[role], "origin": self.origins[role]}
                for role in SPECIAL_ROLES
            },
            "added_tokens": [{"token": token, "id": token_id} for token, token_id in self.added],
            "embedding_rows": self.embedding_rows,
        }


def _parse_spec(spec: str) -> tuple[str, str | int | None]:
    text = spec.strip()
    if text.lower() == "none" or text == "":
        return "none", None
    if text.startswith("id:"):
        try:
            return "id", int(text[3:])
        except ValueError as error:
            raise ExportError(f"bad token spec {spec!r}: id:N needs an integer") from error
    return "token", spec


def image_token_code(name: str) -> int | None:
    """Chameleon's image token ``IMGIMG<digits as letters A=0..J=9>Z`` -> its code; None for other tokens."""
    found = _IMAGE_TOKEN.fullmatch(name)
    return None if found is None else int("".join(str(ord(c) - ord("A")) for c in found.group(1)))


def resolve_layout(vocabulary: Mapping[str, int], options: ChexmixOptions) -> Layout:
    """The layout of ``options`` over a tokenizer's vocabulary (token -> id, added tokens included).

    Raises :class:`ExportError` when the image ids meet a text token that is not the image token of
    the same code, or a special token falls among the image ids.
    """
    if not vocabulary:
        raise ExportError("the tokenizer has an empty vocabulary")
    text_size = max(vocabulary.values()) + 1
    offset = text_size if options.image_offset is None else options.image_offset
    codes = range(offset, offset + options.image_codes)
    image_tokens = 0
    clashes = []
    for token, token_id in vocabulary.items():
        if token_id in codes:
            if image_token_code(token) == token_id - offset:
                image_tokens += 1
            else:
                clashes.append((token_id, token))
    if clashes:
        token_id, token = min(clashes)
        raise ExportError(
            f"the image ids {offset}..{offset + options.image_codes - 1} overlap the text vocabulary: "
            f"{len(clashes)} text tokens lie there (first: id {token_id} {token!r}); this tokenizer's ids start "
            f"at {min(vocabulary.values())} and end at {text_size - 1}. Place the image codes after the text "
            "(no image offset: --chexmix-image-offset after-text) or at a free offset"
        )
    first_new = max(text_size, offset + options.image_codes)
    specs = {role: _parse_spec(getattr(options, role)) for role in SPECIAL_ROLES}
    extra = [t for t in (_BIN_TOKENS if options.bin_tokens else ()) if t not in vocabulary]
    ids: dict[str, int | None] = {}
    tokens: dict[str, str | None] = {}
    origins: dict[str, str | None] = {}
    added: dict[str, int] = {}
    for role in SPECIAL_ROLES:
        kind, value = specs[role]
        if kind == "none":
            ids[role] = tokens[role] = origins[role] = None
        elif kind == "id":
            ids[role], tokens[role], origins[role] = value, None, "fixed id"
        elif value in vocabulary:
            ids[role], tokens[role], origins[role] = vocabulary[value], value, "tokenizer"
        else:
            if value not in added:
                added[value] = first_new + len(added)
            ids[role], tokens[role], origins[role] = added[value], value, "added"
    for token in extra:
        added.setdefault(token, first_new + len(added))
    for role in SPECIAL_ROLES:
        if ids[role] is not None and (ids[role] in codes or ids[role] < 0):
            raise ExportError(f"the {role} token id {ids[role]} lies among the image ids {offset}..{codes[-1]}")
    if ids["separator"] in (ids["eos"], ids["begin_image"], ids["end_image"]) or ids["begin_image"] == ids["end_image"]:
        raise ExportError(
            "separator, eos, begin-image and end-image must be different tokens "
            f"(got {[ids[r] for r in ('separator', 'eos', 'begin_image', 'end_image')]})"
        )
    return Layout(
        placement="after-text" if options.image_offset is None else "offset",
        text_size=text_size,
        image_offset=offset,
        image_codes=options.image_codes,
        ids=ids,
        tokens=tokens,
        origins=origins,
        added=tuple(sorted(added.items(), key=lambda item: item[1])),
        image_tokens_in_text=image_tokens,
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


class TextEncoder:
    """Text -> ids with the tokenizer (no special tokens added), the ``added`` tokens of the layout kept
    whole, and a check that no text tokenizes to a token the sequences use as a marker."""

    def __init__(self, tokenizer, layout: Layout):
        self.tokenizer = tokenizer
        self.added = {token: token_id for token, token_id in layout.added if token.startswith("<bin_")}
        self.pattern = (
            re.compile("|".join(re.escape(t) for t in sorted(self.added, key=len, reverse=True)))
            if self.added
            else None
        )
        self.markers = {layout.ids[r]: r for r in IN_SEQUENCE_ROLES if layout.ids[r] is not None}
        self.cache: dict[str, list[int]] = {}

    def prime(self, texts: Iterable[str]) -> None:
        """Make the cache exactly the pieces of ``texts`` (one batch's): those already cached are kept, the
        others encoded at once (the library batches them); pieces of earlier batches are forgotten."""
        pieces = {piece for text in texts for piece in self._pieces(text) if piece not in self.added}
        cache = {piece: self.cache[piece] for piece in pieces if piece in self.cache}
        new = sorted(pieces - cache.keys())
        if new:
            for piece, encoding in zip(new, self.tokenizer.encode_batch(new, add_special_tokens=False)):
                cache[piece] = encoding.ids
        self.cache = cache

    def _pieces(self, text: str) -> list[str]:
        if self.pattern is None:
            return [text] if text else []
        parts, start = [], 0
        for found in self.pattern.finditer(text):
            if found.start() > start:
                parts.append(text[start : found.start()])
            parts.append(found.group())
            start = found.end()
        if start < len(text):
            parts.append(text[start:])
        return parts

    def __call__(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._pieces(text):
            if piece in self.added:
                ids.append(self.added[piece])
                continue
            encoded = self.cache.get(piece)
            if encoded is None:
                encoded = self.cache[piece] = self.tokenizer.encode(piece, add_special_tokens=False).ids
            ids += encoded
        marker = next((t for t in ids if t in self.markers), None)
        if marker is not None:
            raise ExportError(
                f"text {text[:60]!r} tokenizes to the {self.markers[marker]} token (id {marker}): "
                "the text holds a token the sequences use as a marker"
            )
        return ids


# ------------------------------------------------------------------ one row -> one sequence


@dataclass
class SequenceResult:
    """One row's sequence and what happened to it. ``record`` is None when the row was dropped."""

    record: dict | None
    status: Literal["fits", "shortened", "dropped"]
    full_tokens: int
    tokens: int
    image_tokens: int
    images: int
    prompt_tokens_removed: int = 0
    reason: str | None = None


def _check_row(row: dict) -> None:
    try:
        check_conversation(row)
    except RecordError as error:
        raise ExportError(str(error)) from error


def _assemble(
    row: dict,
    codes_of: Callable[[str], Sequence[int]],
    encode: Callable[[str], list[int]],
    layout: Layout,
    options: ChexmixOptions,
) -> tuple[list[int], list[int], int, int]:
    """(input_ids, labels, image tokens, prompt tokens) of a row, whole."""
    pretraining = row["task"] in options.pretraining_tasks
    ids, learn = [], []
    image_tokens = prompt_tokens = 0
    special = layout.ids

    def put(tokens: Sequence[int], learned: bool) -> None:
        ids.extend(tokens)
        learn.extend([learned] * len(tokens))

    if special["bos"] is not None:
        put([special["bos"]], False)
    images = iter(row["image_keys"])
    for turn in row["conversations"]:
        if turn["from"] == "gpt":
            if not pretraining:
                put([special["separator"]], False)
            answer = encode(turn["value"].strip())
            put(answer, True)
            put([special["eos"]], True)
            continue
        after_image = False
        for number, piece in enumerate(turn["value"].split(IMAGE_PLACEHOLDER)):
            if number:
                key = next(images)
                codes = codes_of(key)
                block = [
                    special["begin_image"],
                    *(np.asarray(codes, np.int64) + layout.image_offset).tolist(),
                    special["end_image"],
                ]
                put(block, pretraining and options.pretraining_image_loss)
                image_tokens += len(block)
                after_image = True
            text = piece.strip()
            if text:
                if after_image and special["text_start"] is not None:
                    put([special["text_start"]], pretraining)
                    prompt_tokens += 1
                after_image = False
                tokens = encode(text)
                put(tokens, pretraining)
                prompt_tokens += len(tokens)
        if after_image and special["text_start"] is not None:  # images end the turn: text starts after them
            put([special["text_start"]], pretraining)
            prompt_tokens += 1
    labels = [token if learned else IGNORE for token, learned in zip(ids, learn)]
    return ids, labels, image_tokens, prompt_tokens


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def prompt_units(text: str) -> list[tuple[int, int]]:
    """The removable parts of a human turn, as (line index, part index) in text order: every line except
    the turn's last text line (its instruction) and lines holding an image slot, cut into ``; ``-separated
    items, or else into sentences."""
    lines = text.split("\n")
    text_lines = [i for i, line in enumerate(lines) if line.strip() and IMAGE_PLACEHOLDER not in line]
    protected = text_lines[-1] if text_lines else None
    units = []
    for i in text_lines:
        if i == protected:
            continue
        units += [(i, part) for part in range(len(_line_parts(lines[i])))]
    return units


def _line_parts(line: str) -> list[str]:
    items = line.split("; ")
    return items if len(items) > 1 else [p for p in _SENTENCE_END.split(line) if p]


def remove_units(text: str, units: set[tuple[int, int]]) -> str:
    """``text`` without the given :func:`prompt_units`; a line that loses every part goes, and a list line
    that loses its last item keeps its closing punctuation."""
    lines = text.split("\n")
    kept = []
    for i, line in enumerate(lines):
        parts = _line_parts(line) if line.strip() else []
        gone = {p for (li, p) in units if li == i}
        if not gone:
            kept.append(line)
            continue
        rest = [part for p, part in enumerate(parts) if p not in gone]
        if not rest:
            continue
        joiner = "; " if len(line.split("; ")) > 1 else " "
        new = joiner.join(rest)
        end = line.rstrip()[-1:]
        if joiner == "; " and end in ".:" and not new.rstrip().endswith(end):
            new = new.rstrip() + end
        kept.append(new)
    return "\n".join(kept)


def shortened_rows(row: dict) -> Iterator[tuple[int, dict]]:
    """The row with 1, 2, ... of its prompt parts removed, latest first (``(removed, row)``)."""
    units = [
        (t, unit)
        for t, turn in enumerate(row["conversations"])
        if turn["from"] == "human"
        for unit in prompt_units(turn["value"])
    ]
    for count in range(1, len(units) + 1):
        gone = units[len(units) - count :]
        turns = []
        for t, turn in enumerate(row["conversations"]):
            mine = {unit for (tt, unit) in gone if tt == t}
            turns.append({**turn, "value": remove_units(turn["value"], mine)} if mine else turn)
        yield count, {**row, "conversations": turns}


def chexmix_sequence(
    row: dict,
    codes_of: Callable[[str], Sequence[int]],
    encode: Callable[[str], list[int]],
    layout: Layout,
    options: ChexmixOptions,
) -> SequenceResult:
    """One row as a sequence (module docstring), fitted to ``max_length`` by the ``overflow`` policy.

    ``codes_of(image_key)`` gives the image's codes (0..image_codes-1); ``encode(text)`` the text's ids
    with no special tokens added. Nothing is ever cut: a sequence is written whole or not at all.
    """
    _check_row(row)
    ids, labels, image_tokens, prompt_tokens = _assemble(row, codes_of, encode, layout, options)
    full = len(ids)
    images = len(row["image_keys"])

    def done(ids, labels, status, removed=0) -> SequenceResult:
        record = {
            "id": row["id"],
            "task": row["task"],
            "source": row["source"],
            "split": row["split"],
            "image_keys": list(row["image_keys"]),
            "input_ids": ids,
            "labels": labels,
            "num_tokens": len(ids),
            "num_image_tokens": image_tokens,
            "num_loss_tokens": sum(label != IGNORE for label in labels),
            "prompt_tokens_removed": removed,
        }
        return SequenceResult(record, status, full, len(ids), image_tokens, images, removed)

    if full <= options.max_length:
        return done(ids, labels, "fits")
    shorten = options.overflow == "shorten" and row["task"] not in options.pretraining_tasks
    if shorten and full - prompt_tokens <= options.max_length:  # else no prompt part can make it fit
        for _, shorter in shortened_rows(row):
            s_ids, s_labels, _, s_prompt = _assemble(shorter, codes_of, encode, layout, options)
            if len(s_ids) <= options.max_length:
                return done(s_ids, s_labels, "shortened", prompt_tokens - s_prompt)
    if image_tokens + (layout.ids["bos"] is not None) > options.max_length:
        reason = "images alone exceed max_length"
    elif full - prompt_tokens > options.max_length:
        reason = "images and answers alone exceed max_length"
    else:
        reason = "prompt too long even shortened" if shorten else "too long"
    return SequenceResult(None, "dropped", full, full, image_tokens, images, reason=reason)


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
        low, high = (int(codes.min()), int(codes.max())) if len(codes) else (None, None)
        if len(codes) != CODES_PER_IMAGE or low < 0 or high >= image_codes:
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


def percentile(sorted_values: Sequence[int], p: float) -> int | None:
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

    def __init__(self):
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
            codes: Mapping[str, list[int]] = {}
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
    parts: list[tuple[Path, int]] = []
    writer, path, count = None, None, 0
    for batch in _batches(rows, BATCH_ROWS):
        records = sequencer(batch)
        while records:
            if writer is None:
                folder.mkdir(parents=True, exist_ok=True)
                path, count = folder / f".{split}-{len(parts):05d}.partial", 0
                writer = pq.ParquetWriter(path, CHEXMIX_SCHEMA, compression="zstd")
            take, records = records[: rows_per_file - count], records[rows_per_file - count :]
            writer.write_table(_records_table(take))
            count += len(take)
            if count == rows_per_file:
                writer.close()
                parts.append((path, count))
                writer = None
    if writer is not None:
        writer.close()
        parts.append((path, count))
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


SEQUENCE_RULES = {
    "image": "begin_image, image_offset + code for the 1024 codes (row-major 32 x 32), end_image",
    "pretraining": "[bos] image(s) text_start report eos; every token learned (image blocks masked when "
    "pretraining_image_loss is off)",
    "instruction": "[bos] then per question/answer pair: prompt (images, text_start after each run of images, "
    "text) separator answer eos; only answers and their eos learned",
    "labels": "input_ids where learned, -100 elsewhere",
}


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


def options_from_cli(params: dict) -> ChexmixOptions | None:
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
    "PRESETS",
    "ChexmixOptions",
    "Layout",
    "VqCodes",
    "chexmix_sequence",
    "length_report",
    "lengths_command",
    "options_from_cli",
    "preset_options",
    "resolve_layout",
    "write_chexmix",
]

if __name__ == "__main__":
    lengths_command()
