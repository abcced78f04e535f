"""Report sections (MIMIC-CXR official rules, plus a tolerant variant) and report text cleaning.

Strict mode reproduces ``section_text`` of the official MIMIC-CXR parser (docs/formats/mimic-cxr.md §7.1):

1. a header is newline + ONE space + ``[A-Z ()/,-]+`` + ``:`` + one whitespace character;
2. text before the first header is ``preamble``; a section runs from the end of its header to the
   start of the next header (the official parser resumes its search at the next newline, which is
   implied here: every header begins at a line start); no header at all gives one section
   ``full report``;
3. names are normalised with the table in ``manifests/report_sections.yaml``;
4. empty ``impression`` / ``findings`` sections are removed;
5. with neither an impression nor a findings section, the last section is split at its first blank
   line (``"\\n \\n"``) and the tail becomes ``last_paragraph``.

Tolerant mode (``tolerant=True``) is for reports without MIMIC's one-leading-space layout (stripped
lines, lower-case ``findings:`` headers, IU X-ray / NegBio style): a header is a ``Name:`` at the start
of a line after optional blanks, and is accepted when the name is upper case (the official character
set) or, in any case, when it is a key of the frequent-sections table or contains one of the main
section words (impression, findings, history, comparison, addendum). Blank lines are any
whitespace-only line. Everything else follows the strict rules.

Section texts are returned stripped but otherwise verbatim (inner line breaks and leading spaces kept);
:func:`clean_text` is the separate normalisation step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import manifests

_RULES = manifests.load("report_sections.yaml")
FREQUENT_SECTIONS: dict[str, str] = dict(_RULES["frequent_sections"])
MAIN_SECTIONS: tuple[str, ...] = tuple(_RULES["main_sections"])
VIEW_WORDS: tuple[str, ...] = tuple(_RULES["view_words"])
DROP_WHEN_EMPTY: frozenset[str] = frozenset(_RULES["drop_when_empty"])
CHOICE_PRIORITY: tuple[str, ...] = tuple(_RULES["choice_priority"])

_STRICT_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
_TOLERANT_HEADER = re.compile(r"^[ \t]*([A-Za-z][A-Za-z ()/,-]*):(?=\s|\Z)", re.MULTILINE)
_UPPER_NAME = re.compile(r"[A-Z ()/,-]+")
_STRICT_BLANK_LINE = re.compile(r"\n \n")
_TOLERANT_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")

_SEPARATOR_LINE = re.compile(r"^[ \t]*_{10,}[ \t]*$", re.MULTILINE)
_DEID_RUN = re.compile(r"_{3,}|\bX{4,}\b")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclass(frozen=True)
class Section:
    """One report section: ``text == report[start:start + len(text)]``."""

    name: str  # normalised, e.g. "impression", "preamble", "full report", "last_paragraph"
    header: str  # the header as written, without the colon; "" for preamble/full report/last_paragraph
    text: str  # stripped section body
    start: int  # offset of ``text`` in the report


def normalise_section_name(header: str) -> str:
    """The official name normalisation of one header (see manifests/report_sections.yaml)."""
    name = header.lower().strip()
    if name in FREQUENT_SECTIONS:
        return FREQUENT_SECTIONS[name]
    for word in MAIN_SECTIONS:
        if word in name:
            return word
    if any(word in name for word in VIEW_WORDS):
        return "findings"
    return name


def _accepted_tolerant_header(header: str) -> bool:
    name = header.lower().strip()
    return (
        _UPPER_NAME.fullmatch(header) is not None
        or name in FREQUENT_SECTIONS
        or any(word in name for word in MAIN_SECTIONS)
    )


def _next_header(text: str, position: int, tolerant: bool) -> re.Match[str] | None:
    if not tolerant:
        return _STRICT_HEADER.search(text, position)
    return next(
        (m for m in _TOLERANT_HEADER.finditer(text, position) if _accepted_tolerant_header(m.group(1))),
        None,
    )


def _raw_spans(text: str, tolerant: bool) -> list[tuple[str, str, int, int]]:
    """(name, header, start, end) of every section before the empty-section and last-paragraph rules."""
    match = _next_header(text, 0, tolerant)
    if match is None:
        return [("full report", "", 0, len(text))]
    spans = [("preamble", "", 0, match.start(1))]
    while match is not None:
        header = match.group(1)
        body_start = match.end()
        following = _next_header(text, body_start, tolerant)
        body_end = len(text) if following is None else following.start()
        spans.append((normalise_section_name(header), header.strip(), body_start, body_end))
        match = following
    return spans


def section_spans(text: str, tolerant: bool = False) -> list[Section]:
    """Every section of a report in order of appearance (repeated names and addenda included)."""
    if not isinstance(text, str):
        raise TypeError(f"report text must be str, got {type(text).__name__}")
    spans = [
        span
        for span in _raw_spans(text, tolerant)
        if not (span[0] in DROP_WHEN_EMPTY and not text[span[2] : span[3]].strip())
    ]
    names = {span[0] for span in spans}
    if "impression" not in names and "findings" not in names:
        name, header, start, end = spans[-1]
        blank = (_TOLERANT_BLANK_LINE if tolerant else _STRICT_BLANK_LINE).search(text, start, end)
        if blank is not None:
            spans[-1:] = [(name, header, start, blank.start()), ("last_paragraph", "", blank.end(), end)]
    return [_section(text, *span) for span in spans]


def _section(text: str, name: str, header: str, start: int, end: int) -> Section:
    body = text[start:end]
    stripped = body.strip()
    offset = start + (len(body) - len(body.lstrip())) if stripped else start
    return Section(name=name, header=header, text=stripped, start=offset)


def section_list(text: str, tolerant: bool = False) -> list[tuple[str, str]]:
    """``(name, stripped text)`` of every section, in order."""
    return [(section.name, section.text) for section in section_spans(text, tolerant)]


def sections(text: str, tolerant: bool = False) -> dict[str, str]:
    """Section name -> stripped text; when a name repeats, the LAST occurrence wins (as the official
    create_section_files does). Keys keep the order of each name's first appearance."""
    result: dict[str, str] = {}
    for name, body in section_list(text, tolerant):
        result[name] = body
    return result


def choose_section(text: str, tolerant: bool = False) -> tuple[str, str] | None:
    """The official per-study choice: the last section named impression, else findings, else
    last_paragraph, else comparison, as ``(name, stripped text)``. None when no such section exists
    or the chosen one is empty (where the official script writes '')."""
    by_name = sections(text, tolerant)
    for name in CHOICE_PRIORITY:
        if name in by_name:
            return (name, by_name[name]) if by_name[name] else None
    return None


def normalise_line_endings(text: str) -> str:
    """CR LF and lone CR line endings as LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def clean_text(text: str, deid_token: str = "___") -> str:
    """Report text with whitespace normalised, for prompts and targets.

    - Lines made only of 10 or more underscores (MIMIC's separator between an addendum and the
      original report) are removed: they are layout, not content.
    - De-identification placeholders are kept as one neutral token: every run of 3 or more
      underscores (MIMIC ``___``) and every word of 4 or more ``X`` (IU X-ray ``XXXX``) becomes
      ``deid_token`` (default ``___``, so MIMIC text keeps its own token).
    - Paragraphs (separated by blank lines) become single lines separated by one empty line
      (``"\\n\\n"``); inside a paragraph, line breaks and runs of whitespace become one space.
      Leading/trailing blanks go. Cleaning cleaned text changes nothing.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be str, got {type(text).__name__}")
    text = _SEPARATOR_LINE.sub("", normalise_line_endings(text))
    text = _DEID_RUN.sub(lambda _: deid_token, text)
    paragraphs = (" ".join(paragraph.split()) for paragraph in _PARAGRAPH_BREAK.split(text))
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


_SENTENCE_END = re.compile(r"[.!?]+(?=\s|\Z)|\n[ \t\r\f\v]*\n|\n(?=[ \t]*(?:\d+[.)]|[-*•])\s)")
_ITEM_NUMBER = re.compile(r"\s*\d{1,2}[.)]\s*")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every non-empty sentence, stripped, so ``text[start:end]`` is the sentence.

    A sentence ends after a run of ``.``, ``!`` or ``?`` followed by whitespace or the end of the text
    (so "2.5 cm" does not end one), at a blank line, and before a line that starts a numbered or
    bulleted item; an item number such as "1." belongs to the sentence it numbers.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be str, got {type(text).__name__}")
    spans = []
    start = 0
    for end in [match.end() for match in _SENTENCE_END.finditer(text)] + [len(text)]:
        piece = text[start:end]
        if _ITEM_NUMBER.fullmatch(piece):
            continue  # "1." numbers the next sentence: keep it with that one
        if piece.strip():
            left = start + len(piece) - len(piece.lstrip())
            spans.append((left, start + len(piece.rstrip())))
        start = end
    return spans
