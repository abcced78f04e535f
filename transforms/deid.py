"""De-identification of free-text reports: names, ids and dates become ``___``, as in MIMIC-CXR.

The language stage scrubs every English report before sectioning, so report text, sections, mention
spans and everything derived from them refer to scrubbed text. Two rule sets from
``manifests/deid.yaml``:

1. administrative header lines (``Patient:  DOE, JANE      MRN:  123456789``): on a line that starts
   with a listed label, the value of every listed field goes and the labels stay;
2. patterns anywhere in the text: titled names (``Dr. ___``), DICOM person names, dates with a year,
   runs of six or more digits, letter-prefixed ids, phone numbers, e-mail addresses.

Spans of both passes are found on the text and merged; each merged span becomes the token. A
replacement can change what a header line's fields are, so scrubbing repeats until a pass changes
nothing: the result is idempotent, and clinical text is left as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import manifests

_RULES = manifests.load("deid.yaml")
TOKEN: str = _RULES["token"]
HEADER_LABELS: frozenset[str] = frozenset(_RULES["header_labels"])
PATTERNS: dict[str, re.Pattern[str]] = {name: re.compile(regex) for name, regex in _RULES["patterns"].items()}

# A field starts a line (after its indentation) or follows two or more blanks; its label is up to
# five words separated by single spaces, then a colon.
_LABEL = r"(?P<label>[A-Za-z][A-Za-z.#/'-]*(?: [A-Za-z.#/'-]+){0,4})[ \t]*:[ \t]*"
_FIRST_FIELD = re.compile(r"[ \t]*" + _LABEL)
_FIELD = re.compile(r"(?:^[ \t]*|(?<=[ \t]{2}))" + _LABEL)
_NON_LETTERS = re.compile(r"[^a-z]+")


@dataclass(frozen=True)
class Span:
    """``text[start:end]`` is identifying, found by ``rule`` (``header:<label>`` or a pattern name)."""

    start: int
    end: int
    rule: str


def _label_key(label: str) -> str:
    return _NON_LETTERS.sub(" ", label.lower()).strip()


def header_spans(text: str) -> list[Span]:
    """Values of the listed fields on administrative header lines (those starting with a listed label)."""
    spans, offset = [], 0
    for line in text.split("\n"):
        line_offset, offset = offset, offset + len(line) + 1
        first = _FIRST_FIELD.match(line)
        if first is None or _label_key(first.group("label")) not in HEADER_LABELS:
            continue
        fields = list(_FIELD.finditer(line))
        for index, field in enumerate(fields):
            if _label_key(field.group("label")) not in HEADER_LABELS:
                continue
            end = fields[index + 1].start() if index + 1 < len(fields) else len(line)
            value = line[field.end() : end].rstrip(" \t")
            if value:
                start = line_offset + field.end()
                spans.append(Span(start, start + len(value), f"header:{_label_key(field.group('label'))}"))
    return spans


def pattern_spans(text: str) -> list[Span]:
    """Matches of the identifying patterns (their ``phi`` group where they have one)."""
    spans = []
    for name, pattern in PATTERNS.items():
        group = "phi" if "phi" in pattern.groupindex else 0
        for match in pattern.finditer(text):
            if match.start(group) < match.end(group):
                spans.append(Span(match.start(group), match.end(group), name))
    return spans


def phi_spans(text: str) -> list[Span]:
    """Every identifying span of ``text``, overlapping ones merged, in order."""
    if not isinstance(text, str):
        raise TypeError(f"report text must be str, got {type(text).__name__}")
    merged: list[Span] = []
    for span in sorted(header_spans(text) + pattern_spans(text), key=lambda s: (s.start, -s.end)):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, span.end), last.rule)
        else:
            merged.append(span)
    return merged


def _replace(text: str, spans: list[Span]) -> str:
    pieces, position = [], 0
    for span in spans:
        pieces += [text[position : span.start], TOKEN]
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces)


def scrub(text: str) -> str:
    """``text`` with every identifying span replaced by ``___``, repeated until nothing changes (each
    changing pass replaces characters other than the token, so this ends)."""
    while True:
        scrubbed = _replace(text, phi_spans(text))
        if scrubbed == text:
            return text
        text = scrubbed
