"""Comparison wording out of single-image targets, sentence by sentence (rules: ``manifests/comparisons.yaml``).

A single image cannot show what changed since an earlier study, but a sentence that compares usually
also states a finding: "New moderate right pneumothorax." is a pneumothorax. :func:`single_image_text`
rewrites the comparison out of each sentence and drops a sentence only when nothing else remains, or
when it only reports a removal or a resolution (the manifest's header explains the four steps).

Input is cleaned text (:func:`transforms.reports.clean_text`); sentences are found with
:func:`transforms.reports.sentence_spans`. Each changed sentence is reported as a :class:`Rewrite`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import manifests
from transforms.reports import sentence_spans

_RULES = manifests.load("comparisons.yaml")
VERSION: int = _RULES["version"]
_DETECT = re.compile("|".join(f"(?:{pattern})" for pattern in _RULES["detect"]), re.IGNORECASE)
_DROP = re.compile("|".join(f"(?:{pattern})" for pattern in _RULES["drop"]), re.IGNORECASE)
_REWRITES = tuple((re.compile(rule["pattern"], re.IGNORECASE), rule["replacement"]) for rule in _RULES["rewrites"])
_FILLER = frozenset(_RULES["filler_words"])
_STRUCTURE = frozenset(_RULES["structure_words"])
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|___")
_TERMINAL = re.compile(r"[.!?]+$")
_ITEM_NUMBER = re.compile(r"\d{1,2}[.)]\s+")
_ARTICLE = re.compile(r"\b([Aa])n?\s+(?=(\w))")


@dataclass(frozen=True)
class Rewrite:
    """One sentence that compared: its original text, what replaced it (None: dropped) and whether
    comparison wording is left in the replacement (``residual``)."""

    original: str
    result: str | None
    residual: bool = False

    def as_dict(self) -> dict:
        return {"original": self.original, "result": self.result, "residual": self.residual}


def compares(sentence: str) -> bool:
    """Whether a sentence has comparison wording (one of the manifest's ``detect`` patterns)."""
    return _DETECT.search(sentence) is not None


def _tidy(sentence: str, terminal: str) -> str:
    sentence = re.sub(r"\s+", " ", sentence).strip()
    sentence = re.sub(r"\s+([,.;:!?])", r"\1", sentence)
    sentence = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", sentence)
    sentence = re.sub(r"[,;:\s]+$", "", _TERMINAL.sub("", sentence))
    sentence = re.sub(r"^(?:[,;:\s]+|(?:and|but|with|which|that)\b\s*)+", "", sentence, flags=re.IGNORECASE)
    sentence = re.sub(r"\(\s*\)", "", sentence).strip()
    sentence = _ARTICLE.sub(lambda m: (m.group(1) + ("n " if m.group(2).lower() in "aeiou" else " ")), sentence)
    if not sentence:
        return ""
    return sentence[0].upper() + sentence[1:] + terminal


def _words(sentence: str) -> set[str]:
    return set(_WORD.findall(sentence.lower()))


@lru_cache(maxsize=65536)
def rewrite_sentence(sentence: str) -> Rewrite | None:
    """The rewrite of one sentence, or None when it has no comparison wording (kept as it is).

    An item number ("2. ") and the final punctuation are set aside while the rules run."""
    number = _ITEM_NUMBER.match(sentence)
    prefix = number.group(0) if number else ""
    ending = _TERMINAL.search(sentence)
    body = _TERMINAL.sub("", sentence[len(prefix) :])
    if not compares(body):
        return None
    if _DROP.search(body):
        return Rewrite(sentence, None)
    result = body
    for pattern, replacement in _REWRITES:
        result = pattern.sub(replacement, result)
    result = _tidy(result, ending.group(0)[:1] if ending else "")
    if _words(result) <= _FILLER | _STRUCTURE:
        return Rewrite(sentence, None)
    return Rewrite(sentence, prefix + result, residual=compares(result))


@lru_cache(maxsize=8192)
def single_image_text(text: str) -> tuple[str, tuple[Rewrite, ...]]:
    """``text`` (cleaned) with every comparing sentence rewritten or dropped, and the rewrites in order.

    Paragraph breaks (``"\\n\\n"``) are kept between the sentences that remain."""
    pieces: list[str] = []
    rewrites: list[Rewrite] = []
    position = 0
    for start, end in sentence_spans(text):
        pieces.append(text[position:start])
        position = end
        rewrite = rewrite_sentence(text[start:end])
        if rewrite is None:
            pieces.append(text[start:end])
            continue
        rewrites.append(rewrite)
        if rewrite.result is not None:
            pieces.append(rewrite.result)
    pieces.append(text[position:])
    joined = "".join(pieces)
    paragraphs = (" ".join(paragraph.split()) for paragraph in re.split(r"\n\s*\n", joined))
    return "\n\n".join(p for p in paragraphs if p), tuple(rewrites)
