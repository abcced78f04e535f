"""What the consumer checks share: where the exports are, how to read one, and the tiny tokenizers and
processors built on the spot (no weights, nothing from a model hub).

Imported in every environment that runs a check (the main ``.venv`` and the consumer venvs), so only
the standard library is imported at module level; each builder imports what it needs when called.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

EXPORTS_ENV = "CXR_CONSUMER_EXPORTS"
"""The folder the driver (``test_consumers.py``) exported into: ``<root>/<layout>/<profile>/``."""

PROFILES = ("imt-cxr", "m4cxr", "chexmix", "radixpert", "medivlm")
IMAGE = "<image>"

VISION_SIZE = 56
"""Side of the tiny CLIP-style processors' crop: 4 x 4 patches of 14 pixels, so 16 image tokens."""
PATCH = 14


# ------------------------------------------------------------------ the exports


def export_root() -> Path:
    root = os.environ.get(EXPORTS_ENV)
    if not root:
        raise RuntimeError(f"{EXPORTS_ENV} is not set: the consumer checks run from tests/consumers/test_consumers.py")
    return Path(root)


def destinations(layout: str, root: Path | None = None) -> list[tuple[str, Path]]:
    """``(profile, DEST)`` of every profile exported in ``layout`` (a format, or a format with options)
    under ``root`` (default: :func:`export_root`)."""
    root = (root or export_root()) / layout
    found = [(profile, root / profile) for profile in PROFILES if (root / profile / "export.json").is_file()]
    if len(found) != len(PROFILES):
        raise RuntimeError(f"{root}: expected an export of each of {PROFILES}, found {[p for p, _ in found]}")
    return found


def read_export(dest: Path) -> tuple[dict, dict[str, list[dict]]]:
    """``export.json`` and the rows of every split file it lists (JSON list or JSON lines)."""
    meta = json.loads((dest / "export.json").read_text())
    splits: dict[str, list[dict]] = {}
    for split in meta["rows"]:
        for name, lines in ((f"{split}.json", False), (f"{split}.jsonl", True)):
            path = dest / name
            if path.is_file():
                text = path.read_text()
                splits[split] = (
                    [json.loads(line) for line in text.splitlines() if line.strip()] if lines else json.loads(text)
                )
        assert split in splits, f"{dest}: export.json lists split {split!r} but it has no file"
        assert len(splits[split]) == meta["rows"][split], (dest, split, len(splits[split]), meta["rows"][split])
    return meta, splits


def image_base(dest: Path, meta: dict) -> Path:
    """The folder a row's image paths are relative to, as ``export.json`` states it."""
    return (dest / meta["image_paths_relative_to"]).resolve()


def turns(row: dict) -> list[tuple[str, str]]:
    """``(role, text)`` of each turn, ``role`` ``user`` or ``assistant``, whatever the layout."""
    if "conversations" in row:
        return [({"human": "user", "gpt": "assistant"}[t["from"]], t["value"]) for t in row["conversations"]]
    out = []
    for message in row["messages"]:
        content = message["content"]
        if isinstance(content, list):
            content = "".join(part.get("text") or "" for part in content if part["type"] == "text")
        out.append((message["role"], content))
    return out


def answers(row: dict) -> list[str]:
    return [text for role, text in turns(row) if role == "assistant"]


def row_images(row: dict) -> list[str]:
    """A row's image paths in slot order (``image`` as a string or a list, or ``images``)."""
    if "image" in row:
        return [row["image"]] if isinstance(row["image"], str) else list(row["image"])
    return list(row.get("images") or [])


def squash(text: str) -> str:
    """``text`` without whitespace: tokenizers differ in how they give back spaces at the joins."""
    return "".join(text.split())


def corpus(rows_by_split: dict[str, list[dict]]) -> list[str]:
    return [text for rows in rows_by_split.values() for row in rows for _, text in turns(row)]


# ------------------------------------------------------------------ tiny tokenizers and processors

TEMPLATE_WORDS = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. USER: ASSISTANT: [INST] [/INST]"
)


def byte_bpe(texts: list[str], special: list[str], vocab_size: int = 2000):
    """A byte-level BPE (``tokenizers``) trained on ``texts``: every string encodes and decodes exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        [TEMPLATE_WORDS, *texts],
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return tokenizer


def llava_hf_model(dest: Path, texts: list[str], chat_template: str | None = None) -> Path:
    """A LLaVA-1.5-HF model folder without weights: ``config.json``, a byte-level BPE tokenizer (exact
    round trip) that adds ``<s>`` and has an ``<image>`` token, and a ``LlavaProcessor`` whose CLIP image
    processor crops to 56 x 56 (16 image tokens). What LLaMA-Factory's ``llava`` template, ms-swift's
    ``llava1_5_hf`` and TRL load."""
    from tokenizers.processors import TemplateProcessing
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    dest.mkdir(parents=True, exist_ok=True)
    special = ["<unk>", "<s>", "</s>", "<pad>", IMAGE]
    bpe = byte_bpe(texts, special)
    bpe.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": VISION_SIZE}, crop_size={"height": VISION_SIZE, "width": VISION_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE,
        chat_template=chat_template,
    )
    processor.save_pretrained(dest)
    config = {
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "image_token_index": tokenizer.convert_tokens_to_ids(IMAGE),
        "vision_feature_select_strategy": "default",
        "text_config": {
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "intermediate_size": 16,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "image_size": VISION_SIZE,
            "patch_size": PATCH,
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "intermediate_size": 16,
        },
    }
    (dest / "config.json").write_text(json.dumps(config, indent=1))
    return dest


IMAGE_TOKENS = (VISION_SIZE // PATCH) ** 2
"""Image tokens per image of :func:`llava_hf_model`: (56 / 14)^2 patches, plus the CLS token the
processor counts (``num_additional_image_tokens``), less the one the ``default`` strategy drops."""


def llama_sentencepiece(dest: Path, texts: list[str]) -> Path:
    """A slow ``LlamaTokenizer`` folder (``legacy=False``, as Vicuna-1.5's) over a SentencePiece BPE trained
    on ``texts``, as LLaVA-1.5 loads it (``use_fast=False``).

    LLaVA's ``preprocess_v1`` counts tokens round by round and, for a ``legacy=False`` tokenizer, takes
    one token off every later round: it assumes ``USER`` at a round's start is one token shorter inside
    the conversation (right after ``</s>``, no leading space) than in the round tokenized alone (with
    the leading ``▁``), as it is with Vicuna's vocabulary. ``USER`` is a piece of its own here so this
    tokenizer keeps that property; without it every multi-turn row would read as a tokenization
    mismatch and be masked whole, whatever the data."""
    import sentencepiece
    from transformers import LlamaTokenizer

    dest.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([TEMPLATE_WORDS, *texts]),
        model_writer=model,
        vocab_size=1000,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        character_coverage=1.0,
        hard_vocab_limit=False,
        user_defined_symbols=["USER"],
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (dest / "tokenizer.model").write_bytes(model.getvalue())
    LlamaTokenizer(vocab_file=str(dest / "tokenizer.model"), legacy=False).save_pretrained(dest)
    return dest
