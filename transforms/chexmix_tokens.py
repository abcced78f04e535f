"""CheXmix token layout, pure: where every id of a sequence comes from (text ids, image code ``c`` at
``image_offset + c``, the special tokens of :class:`ChexmixOptions` and its presets), how one instruction row
becomes ``input_ids`` and ``labels`` (images as ``begin-image, 1024 codes, end-image``, the loss on answers or,
for pretraining rows, on every token), and the length policy (a row over ``max_length`` is dropped, or first
loses whole prompt parts, never an image or an answer). It reads no file and knows no Beam or Arrow: the
tokenizer, the image codes and the rows are handed in by :mod:`pipelines.training.export_chexmix`, and the
rules are written for users in ``docs/chexmix-export.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from transforms.export_records import IMAGE_PLACEHOLDER, ExportError, RecordError, check_conversation

CODES_PER_IMAGE = 1024
ImageCodes = Sequence[int] | np.ndarray
"""One image's VQ codes (0..image_codes-1), a list or a 1-D integer array."""
IGNORE = -100
SPECIAL_ROLES = ("mask", "separator", "begin_image", "end_image", "text_start", "eos", "bos", "pad")
"""Special-token roles; a role whose token is new gets its id in this order."""
REQUIRED_ROLES = ("begin_image", "end_image", "separator", "eos")
IN_SEQUENCE_ROLES = ("separator", "begin_image", "end_image", "text_start", "eos", "bos")
"""Roles written into sequences: plain text may not tokenize to any of them."""
_IMAGE_TOKEN = re.compile(r"IMGIMG([A-J]+)Z")
_BIN_TOKENS = tuple(f"<bin_{k}>" for k in range(1, 1001))


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
    """Where every id of a sequence comes from (``docs/chexmix-export.md``). ``ids``: role -> id or None;
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

    def required_id(self, role: str) -> int:
        """The id of a role every sequence holds (:data:`REQUIRED_ROLES`, never ``none``)."""
        role_id = self.ids[role]
        if role_id is None:
            raise ExportError(f"the {role} token cannot be none: sequences need it")
        return role_id

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


def _parse_spec(spec: str) -> str | int | None:
    """A token spec as the token's text (str), a fixed id (int, from ``id:N``) or None (``none``)."""
    text = spec.strip()
    if text.lower() == "none" or text == "":
        return None
    if text.startswith("id:"):
        try:
            return int(text[3:])
        except ValueError as error:
            raise ExportError(f"bad token spec {spec!r}: id:N needs an integer") from error
    return spec


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
        value = specs[role]
        if value is None:
            ids[role] = tokens[role] = origins[role] = None
        elif isinstance(value, int):
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
        role_id = ids[role]
        if role_id is not None and (role_id in codes or role_id < 0):
            raise ExportError(f"the {role} token id {role_id} lies among the image ids {offset}..{codes[-1]}")
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
    codes_of: Callable[[str], ImageCodes],
    encode: Callable[[str], list[int]],
    layout: Layout,
    options: ChexmixOptions,
) -> tuple[list[int], list[int], int, int]:
    """(input_ids, labels, image tokens, prompt tokens) of a row, whole."""
    pretraining = row["task"] in options.pretraining_tasks
    ids: list[int] = []
    learn: list[bool] = []
    image_tokens = prompt_tokens = 0
    bos, text_start = layout.ids["bos"], layout.ids["text_start"]
    separator, eos = layout.required_id("separator"), layout.required_id("eos")
    begin_image, end_image = layout.required_id("begin_image"), layout.required_id("end_image")

    def put(tokens: Sequence[int], learned: bool) -> None:
        ids.extend(tokens)
        learn.extend([learned] * len(tokens))

    if bos is not None:
        put([bos], False)
    images = iter(row["image_keys"])
    for turn in row["conversations"]:
        if turn["from"] == "gpt":
            if not pretraining:
                put([separator], False)
            answer = encode(turn["value"].strip())
            put(answer, True)
            put([eos], True)
            continue
        after_image = False
        for number, piece in enumerate(turn["value"].split(IMAGE_PLACEHOLDER)):
            if number:
                key = next(images)
                codes = codes_of(key)
                block = [begin_image, *(np.asarray(codes, np.int64) + layout.image_offset).tolist(), end_image]
                put(block, pretraining and options.pretraining_image_loss)
                image_tokens += len(block)
                after_image = True
            text = piece.strip()
            if text:
                if after_image and text_start is not None:
                    put([text_start], pretraining)
                    prompt_tokens += 1
                after_image = False
                tokens = encode(text)
                put(tokens, pretraining)
                prompt_tokens += len(tokens)
        if after_image and text_start is not None:  # images end the turn: text starts after them
            put([text_start], pretraining)
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
    codes_of: Callable[[str], ImageCodes],
    encode: Callable[[str], list[int]],
    layout: Layout,
    options: ChexmixOptions,
) -> SequenceResult:
    """One row as a sequence (``docs/chexmix-export.md``), fitted to ``max_length`` by the ``overflow`` policy.

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


SEQUENCE_RULES = {
    "image": "begin_image, image_offset + code for the 1024 codes (row-major 32 x 32), end_image",
    "pretraining": "[bos] image(s) text_start report eos; every token learned (image blocks masked when "
    "pretraining_image_loss is off)",
    "instruction": "[bos] then per question/answer pair: prompt (images, text_start after each run of images, "
    "text) separator answer eos; only answers and their eos learned",
    "labels": "input_ids where learned, -100 elsewhere",
}
