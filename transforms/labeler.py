"""CheXpert-style report labeler: report text -> the 14 CheXpert observations (1.0 / 0.0 / -1.0 / None).

Two backends behind :func:`label_report`:

``rules`` (default, pure Python, offline) follows the CheXpert labeler's three stages
(docs/language.md §3) with a parser-free classifier:

1. clean like the CheXpert loader (lower case, ``and/or`` -> ``or``, ``x/y`` -> ``x or y``, spaces
   after ``.`` and ``,``, every run of whitespace one space) after normalising line ends (CRLF and
   CR become LF) and ending a sentence at a blank line or before a numbered line when no punctuation
   does (see :func:`clean_for_labeling`), so a hedge or negation broken over lines ("Cannot\r\n
   exclude pneumonia.") reads as on one line; then split sentences with ``spacy.blank("en")`` + the
   rule sentencizer;
2. mentions: the phrase lists of ``manifests/labeler/mentions.yaml`` as regular expressions per
   sentence, minus unmentions (incl. the positional ones such as "over the left heart");
3. classification: the cues of ``manifests/labeler/cues.yaml`` (pre-negation uncertainty, negation,
   post-negation uncertainty; first phase that covers a mention wins) matched on lower-case tokens,
   each with a direction and a scope that stops at terminators ("but", "however", ...); a mention
   glued to a negating prefix ("nonconsolidating") is negated; a differential ("atelectasis versus
   scarring") is read as the manifest's ``differential.reading`` says (default: uncertain, as CheXpert);
4. aggregation: per observation positive beats uncertain beats negative; "chf" / "heart failure"
   add Cardiomegaly -1; No Finding is 1 only when nothing but Support Devices is positive or
   uncertain, else None (never 0).

``chexbert`` runs a CheXbert-architecture model (BERT + 13 four-class heads + one two-class head on
the [CLS] token) from a local checkpoint directory (:mod:`transforms.chexbert`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import manifests
from transforms.chexbert import CHEXBERT_FILES, chexbert_labeler
from transforms.reports import normalise_line_endings

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.matcher import PhraseMatcher
    from spacy.tokens import Doc, Span

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 CheXpert observations, in the CheXpert labeler's output order."""
NO_FINDING = "No Finding"
EXEMPT_FROM_NO_FINDING = frozenset({"Support Devices"})
PHASES: tuple[str, ...] = ("pre_negation_uncertainty", "negation", "post_negation_uncertainty")
PHASE_VALUE = {
    "pre_negation_uncertainty": -1.0,
    "negation": 0.0,
    "post_negation_uncertainty": -1.0,
    "stable_heart": -1.0,
}
_STRENGTH = {0.0: 0, -1.0: 1, 1.0: 2}
"""Several mentions of one observation: 1 beats -1 beats 0 (CheXpert aggregation)."""

_AND_OR = re.compile(r"\band\s*/\s*or\b")
_SLASH_WORDS = re.compile(r"(?<=[a-z])/(?=[a-z])")
_DOUBLE_DOT = re.compile(r"\.\.+")
_SPACE_AFTER = re.compile(r"([.,])(?=[^\s\d])")
_WHITESPACE = re.compile(r"\s+")
_UNPUNCTUATED_BREAK = re.compile(r"(?<=[^\s.!?;:,])[ \t]*\n(?=[ \t]*\n|[ \t]*(?:\d{1,2}[.)]|[-*\u2022])\s)")
"""A line break after a line that ends without punctuation, before a blank line or a numbered or
bulleted line: the end of a sentence that the report wrote as layout."""

Value = float | None


# ---------------------------------------------------------------- rules: data


@dataclass(frozen=True)
class CueRule:
    """What one cue phrase does: which phase, which direction, how far."""

    phase: str  # one of PHASES, "pseudo", "terminator" or "stable_heart"
    direction: Literal["forward", "backward", "both", "none"]
    max_tokens: int | None


@dataclass(frozen=True)
class Rules:
    """Both labeler manifests, compiled."""

    mention_patterns: Mapping[str, re.Pattern[str]]  # observation -> alternation of its phrases
    unmention_patterns: Mapping[str, re.Pattern[str] | None]
    implies_uncertain: Mapping[str, str]  # mention text -> observation set to -1
    always_uncertain: frozenset[str]
    cue_rules: Mapping[str, tuple[CueRule, ...]]  # matcher label (the phrase) -> rules
    stable_heart_words: tuple[str, ...]
    stable_heart_unless: tuple[str, ...]
    negating_prefix: re.Pattern[str] | None  # the whole word part before a mention: "non" of "nonconsolidating"


def _alternation(phrases: list[str]) -> re.Pattern[str] | None:
    if not phrases:
        return None
    for phrase in phrases:
        re.compile(phrase)  # a bad phrase fails here, naming itself
    # Longest first, so "infectious process" wins over "infectious" at the same position.
    return re.compile("|".join(f"(?:{p})" for p in sorted(phrases, key=len, reverse=True)))


def _mention_pattern(observation: str, phrases: list[str]) -> re.Pattern[str]:
    pattern = _alternation(phrases)
    if pattern is None:
        raise ValueError(f"labeler/mentions.yaml: {observation} has no mention phrases")
    return pattern


def _positional_unmentions(mention: list[str], spec: Mapping[str, Any]) -> list[str]:
    """ "over the left heart", "in the cardiac silhouette", ...: places, not findings (docs/language.md §3.2)."""
    keep = set(spec["keep"])
    result = []
    for phrase in mention:
        if phrase in keep:
            continue
        bare = phrase.replace(r"\b", "")
        bare = bare[len("the ") :] if bare.startswith("the ") else bare
        result += [re.escape(f"{prefix} {side}{bare}") for prefix in spec["prefixes"] for side in spec["sides"]]
    return result


def _check_observations(names: Any, where: str) -> None:
    unknown = set(names) - set(OBSERVATIONS)
    if unknown:
        raise ValueError(f"{where}: unknown observations {sorted(unknown)}")


@lru_cache(maxsize=1)
def load_rules() -> Rules:
    """Compile ``manifests/labeler/{mentions,cues}.yaml`` (cached)."""
    mentions = manifests.load("labeler/mentions.yaml")
    cues = manifests.load("labeler/cues.yaml")
    observations = mentions["observations"]
    if set(observations) != set(OBSERVATIONS):
        raise ValueError(f"labeler/mentions.yaml must list exactly {list(OBSERVATIONS)}")
    positional = mentions["positional_unmention"]
    _check_observations(positional["observations"], "positional_unmention")
    _check_observations(mentions["implies_uncertain"].values(), "implies_uncertain")
    unmentions = {}
    for name, spec in observations.items():
        extra = _positional_unmentions(spec["mention"], positional) if name in positional["observations"] else []
        unmentions[name] = _alternation(list(spec["unmention"]) + extra)

    cue_rules: dict[str, list[CueRule]] = {}

    def add(phrases: list[Any], rule: CueRule) -> None:
        for phrase in phrases:
            if not isinstance(phrase, str):  # YAML reads a bare no / yes / on as a boolean
                raise ValueError(f"labeler/cues.yaml: cue {phrase!r} is not a string; quote it")
            cue_rules.setdefault(phrase, []).append(rule)

    add(cues["terminators"], CueRule("terminator", "none", None))
    add(cues["pseudo"], CueRule("pseudo", "none", None))
    for phase in PHASES:
        for group in cues["phases"][phase]:
            limits = group.get("max_tokens_by_phrase", {})
            for phrase in group["phrases"]:
                add([phrase], CueRule(phase, group["direction"], limits.get(phrase)))
    stable = cues["stable_heart"]
    add(stable["phrases"], CueRule("stable_heart", stable["direction"], None))
    differential = cues["differential"]
    if differential["reading"] == "uncertain":  # the CheXpert labeler's reading of "or" / "versus"
        for phrase in differential["phrases"]:
            add([phrase], CueRule("post_negation_uncertainty", "forward", differential["forward_tokens"][phrase]))
            add([phrase], CueRule("post_negation_uncertainty", "backward", differential["backward_tokens"][phrase]))
    elif differential["reading"] != "positive":
        raise ValueError(
            f"labeler/cues.yaml: differential.reading must be 'positive' or 'uncertain', "
            f"got {differential['reading']!r}"
        )
    prefixes = cues["negating_prefixes"]
    return Rules(
        mention_patterns={name: _mention_pattern(name, spec["mention"]) for name, spec in observations.items()},
        unmention_patterns=unmentions,
        implies_uncertain=dict(mentions["implies_uncertain"]),
        always_uncertain=frozenset(mentions["always_uncertain"]),
        cue_rules={phrase: tuple(rules) for phrase, rules in cue_rules.items()},
        stable_heart_words=tuple(stable["mention_words"]),
        stable_heart_unless=tuple(stable["not_when_sentence_has"]),
        negating_prefix=_alternation(prefixes),
    )


@lru_cache(maxsize=1)
def _pipeline() -> tuple[Language, PhraseMatcher]:
    """``spacy.blank("en")`` + rule sentencizer, and a PhraseMatcher of every cue (label = phrase).

    spaCy is imported here, not at module import: it pulls in torch through thinc (~1.5 s), which a
    process that only routes records (a local runner's main process) never needs."""
    import spacy
    from spacy.matcher import PhraseMatcher

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
    for phrase in load_rules().cue_rules:
        matcher.add(phrase, [nlp.make_doc(phrase)])
    return nlp, matcher


# ---------------------------------------------------------------- rules: stages


def clean_for_labeling(text: str) -> str:
    """The CheXpert loader's normalisation: lower case, ``and/or`` -> ``or``, ``x/y`` -> ``x or y``,
    ``..`` -> ``.``, a space after ``.`` and ``,`` (not inside numbers), whitespace collapsed.

    Before it, line ends are normalised (CRLF and CR become LF) and a line that ends without
    punctuation gets a ``.`` when a blank line or a numbered / bulleted line follows ("No
    pneumothorax\n\nIMPRESSION: ..."), so no cue reaches into the next paragraph or list item. Any
    other line break is a space, wherever it falls: "Cannot\r\n exclude" reads as "cannot exclude"."""
    if not isinstance(text, str):
        raise TypeError(f"report text must be str, got {type(text).__name__}")
    text = _UNPUNCTUATED_BREAK.sub(".\n", normalise_line_endings(text))
    text = _AND_OR.sub("or", text.lower())
    text = _SLASH_WORDS.sub(" or ", text)
    text = _DOUBLE_DOT.sub(".", text)
    text = _SPACE_AFTER.sub(r"\1 ", text)
    return _WHITESPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class Mention:
    """One classified mention: ``observation`` matched ``text`` in sentence ``sentence``."""

    observation: str
    text: str
    sentence: str
    start: int  # token offsets in the parsed, cleaned report
    end: int
    value: float  # 1.0, 0.0 or -1.0
    cue: str | None  # the deciding cue phrase


def _sentence_mentions(sentence: Span, text: str, rules: Rules) -> list[tuple[str, Span, str | None]]:
    """(observation, token span, negating prefix or None) of every mention in one sentence (``text``
    is ``sentence.text``, which spaCy rebuilds from the tokens on every access)."""
    found = []
    for name, pattern in rules.mention_patterns.items():
        unmention = rules.unmention_patterns[name]
        blocked = [m.span() for m in unmention.finditer(text)] if unmention is not None else []
        for match in pattern.finditer(text):
            start, end = match.span()
            if start == end or any(start < b_end and b_start < end for b_start, b_end in blocked):
                continue
            span = sentence.char_span(start, end, alignment_mode="expand")
            word_start = text.rfind(" ", 0, start) + 1  # the mention's word, up to the match
            prefix = rules.negating_prefix.fullmatch(text, word_start, start) if rules.negating_prefix else None
            found.append((name, span, prefix.group() if prefix else None))
    return found


def _scope(cue: Span, rule: CueRule, sentence: Span, stops: list[int]) -> tuple[range, range]:
    """Token ranges (after, before) covered by ``cue``; ``stops`` are the token indices scopes end at."""
    after = range(0)
    before = range(0)
    if rule.direction in ("forward", "both"):
        end = min([s for s in stops if s >= cue.end] + [sentence.end])
        if rule.max_tokens is not None:
            end = min(end, cue.end + rule.max_tokens)
        after = range(cue.end, end)
    if rule.direction in ("backward", "both"):
        start = max([s + 1 for s in stops if s < cue.start] + [sentence.start])
        if rule.max_tokens is not None:
            start = max(start, cue.start - rule.max_tokens)
        before = range(start, cue.start)
    return after, before


def _classify(
    name: str, mention: Span, cues: list[tuple[Span, CueRule]], sentence: Span, rules: Rules
) -> tuple[float, str | None]:
    """(value, deciding cue) of one mention: the first phase whose cue covers it decides."""
    mention_text = mention.text
    is_heart_size = (
        name in ("Cardiomegaly", "Enlarged Cardiomediastinum")
        and any(word in mention_text for word in rules.stable_heart_words)
        and not any(word in sentence.text for word in rules.stable_heart_unless)
    )
    outside = [(cue, rule) for cue, rule in cues if cue.end <= mention.start or cue.start >= mention.end]
    for phase in (*PHASES, "stable_heart"):
        if phase == "stable_heart" and not is_heart_size:
            continue
        stops = [cue.start for cue, rule in outside if rule.phase == "terminator"]
        for cue, rule in outside:
            if rule.phase != phase:
                continue
            after, before = _scope(cue, rule, sentence, [s for s in stops if s != cue.start])
            if mention.start in after or mention.start in before:
                return PHASE_VALUE[phase], cue.text
    if mention_text in rules.always_uncertain:
        return -1.0, mention_text
    return 1.0, None


def _outermost(spans: list[Span]) -> list[Span]:
    """Cue spans not contained in a longer cue ("no" inside "no new" goes; partial overlaps such as
    "are clear" / "clear of" both stay)."""
    return [
        span
        for span in spans
        if not any(other.start <= span.start and span.end <= other.end and len(other) > len(span) for other in spans)
    ]


def extract_label_mentions(text: str) -> list[Mention]:
    """Every observation mention of a report with its value (the labeler's evidence)."""
    rules = load_rules()
    from spacy.tokens import Span

    nlp, matcher = _pipeline()
    doc: Doc = nlp(clean_for_labeling(text))
    spans = _outermost([Span(doc, start, end, label=key) for key, start, end in matcher(doc)])
    cue_spans = [(span, rule) for span in spans for rule in rules.cue_rules[span.label_]]
    result = []
    for sentence in doc.sents:
        cues = [(span, rule) for span, rule in cue_spans if sentence.start <= span.start < sentence.end]
        sentence_text = sentence.text
        for name, span, prefix in _sentence_mentions(sentence, sentence_text, rules):
            value, cue = (0.0, prefix) if prefix else _classify(name, span, cues, sentence, rules)
            result.append(Mention(name, span.text, sentence_text, span.start, span.end, value, cue))
    return result


def aggregate(mentions: list[Mention]) -> dict[str, Value]:
    """CheXpert aggregation of classified mentions into the 14 observations (docs/language.md §3.4)."""
    rules = load_rules()
    labels: dict[str, Value] = dict.fromkeys(OBSERVATIONS)
    blocks_no_finding = False

    def merge(name: str, value: float) -> None:
        current = labels[name]
        if current is None or _STRENGTH[value] > _STRENGTH[current]:
            labels[name] = value

    for mention in mentions:
        if mention.value != 0.0 and mention.observation not in EXEMPT_FROM_NO_FINDING:
            blocks_no_finding = True
        if mention.observation != NO_FINDING:
            merge(mention.observation, mention.value)
        if mention.value != 0.0 and mention.text in rules.implies_uncertain:
            merge(rules.implies_uncertain[mention.text], -1.0)
    labels[NO_FINDING] = None if blocks_no_finding else 1.0
    return labels


def label_report_rules(text: str) -> dict[str, Value]:
    """The rule-based labeler on one report (see the module docstring)."""
    return aggregate(extract_label_mentions(text))


# ---------------------------------------------------------------- public entry point


def label_report(
    text: str, backend: Literal["rules", "chexbert"] = "rules", checkpoint: str | Path | None = None
) -> dict[str, Value]:
    """The 14 CheXpert observations of one report: 1.0 positive, 0.0 negative, -1.0 uncertain, None
    not mentioned (No Finding is 1.0 or None). ``backend="chexbert"`` needs ``checkpoint``, a local
    directory described in :class:`transforms.chexbert.CheXbertLabeler`; without it, or without the optional packages,
    it raises with the reason instead of falling back silently."""
    if backend == "rules":
        return label_report_rules(text)
    if backend == "chexbert":
        if checkpoint is None:
            raise ValueError(
                "backend='chexbert' needs checkpoint=<local directory with "
                f"{', '.join(CHEXBERT_FILES)}>; use backend='rules' for the offline labeler"
            )
        values = chexbert_labeler(str(Path(checkpoint).resolve()))(text)
        return {name: values[name] for name in OBSERVATIONS}
    raise ValueError(f"backend must be 'rules' or 'chexbert', got {backend!r}")
