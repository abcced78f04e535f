"""One instruction row as each training framework's data file writes it (pure; ``pipelines.training.export``
streams the rows through these).

Every format keeps the row's turns and puts one image placeholder per image, in the order of
``image_keys``; they differ in keys, roles and where a placeholder goes:

=================  =========================================================================================
``llava``          ``{id, image, conversations}``: ``image`` a file name for one image, a list for several
                   (the LLaVA-NeXT / OneVision convention), absent for none; turns ``{from: human|gpt,
                   value}`` with ``<image>`` in the text
``qwen-vl``        the same keys (Qwen2.5-VL's ``qwen-vl-finetune`` reads LLaVA's layout), coordinates in
                   the Qwen frame (``pipelines.training.export``)
``llamafactory``   ``{id, messages, images}``: LLaMA-Factory's ``sharegpt`` layout with OpenAI-style tags,
                   ``messages`` ``{role: user|assistant, content}`` with ``<image>`` in the text
``swift``          the same keys as ``llamafactory`` (ms-swift's ``messages`` / ``images`` JSON Lines)
``messages``       ``{id, images, messages}`` in the Hugging Face chat format: ``content`` a list of parts
                   ``{"type": "image"}`` / ``{"type": "text", "text": ...}``
=================  =========================================================================================
"""

from __future__ import annotations

import re

from transforms.hashing import stable_hash

IMAGE_PLACEHOLDER = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class ExportError(ValueError):
    """The build output cannot be exported as asked (missing table, image, VQ codes, bad row)."""


class RecordError(ValueError):
    """A row that no format can write faithfully (turn order, placeholders against images)."""


def image_file_name(image_key: str) -> str:
    """A safe, unique relative file name for an image key: ``<source>/<native id>.png`` where the native
    id keeps ``[A-Za-z0-9._-]``; an id with any other character (or a leading dot) has those characters
    (and the dot) replaced by ``_`` and the first 8 hex digits of its stable hash appended, so two keys
    never share a file. ``mimic/02aa804e-...`` -> ``mimic/02aa804e-....png``."""
    source, sep, native = image_key.partition("/")
    if not sep or not source or not native or _UNSAFE.search(source):
        raise RecordError(f"image_key {image_key!r} is not '<source>/<native id>'")
    safe = re.sub(r"^\.", "_", _UNSAFE.sub("_", native))
    if safe != native:
        safe = f"{safe}-{stable_hash('image-file', image_key) % 16**8:08x}"
    return f"{source}/{safe}.png"


def check_conversation(row: dict) -> None:
    """Raise unless turns alternate human/gpt from a human turn, end on an answer, and the ``<image>``
    slots (in human turns only) match the images one to one."""
    turns = row["conversations"]
    if not turns or len(turns) % 2:
        raise RecordError(f"row {row['id']}: {len(turns)} turns; a conversation is question/answer pairs")
    for index, turn in enumerate(turns):
        expected = "human" if index % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise RecordError(f"row {row['id']}: turn {index} is from {turn['from']!r}, expected {expected!r}")
        if expected == "gpt" and IMAGE_PLACEHOLDER in turn["value"]:
            raise RecordError(f"row {row['id']}: answer turn {index} holds {IMAGE_PLACEHOLDER}")
    slots = sum(turn["value"].count(IMAGE_PLACEHOLDER) for turn in turns)
    if slots != len(row["image_keys"]):
        raise RecordError(f"row {row['id']}: {slots} {IMAGE_PLACEHOLDER} slots for {len(row['image_keys'])} images")


def llava_record(row: dict, image_prefix: str = "") -> dict:
    """``llava`` / ``qwen-vl``: one image as a string, several as a list, in slot order."""
    check_conversation(row)
    names = [image_prefix + image_file_name(key) for key in row["image_keys"]]
    record: dict = {"id": row["id"]}
    if names:
        record["image"] = names[0] if len(names) == 1 else names
    record["conversations"] = [{"from": t["from"], "value": t["value"]} for t in row["conversations"]]
    return record


def role_record(row: dict, image_prefix: str = "") -> dict:
    """``llamafactory`` / ``swift``: OpenAI-style roles, string content with ``<image>`` placeholders."""
    check_conversation(row)
    return {
        "id": row["id"],
        "messages": [{"role": ROLES[t["from"]], "content": t["value"]} for t in row["conversations"]],
        "images": [image_prefix + image_file_name(key) for key in row["image_keys"]],
    }


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


def messages_record(row: dict, image_prefix: str = "") -> dict:
    """``messages``: ``images`` in slot order and ``messages`` with user/assistant roles and content parts."""
    check_conversation(row)
    return {
        "id": row["id"],
        "images": [image_prefix + image_file_name(key) for key in row["image_keys"]],
        "messages": [{"role": ROLES[t["from"]], "content": content_parts(t["value"])} for t in row["conversations"]],
    }
