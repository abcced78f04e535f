"""Attribute mentions from report text: finding, presence, laterality, zones, severity, temporal cue.

English rules (``extract_mentions``), all vocabularies in ``manifests/attributes.yaml``:

1. The report is cut into sentences (:func:`transforms.reports.sentence_spans`); each sentence is
   matched lower-cased with every run of whitespace (line ends CRLF / CR / LF included) read as one
   space, so "Cannot\r\n exclude" or "No\n pneumothorax" read as on one line; each sentence is cut
   into clauses at semicolons, commas and termination words ("but", "however", ...).
2. Findings are the CheXpert-14 mention phrases (word-bounded regexes on lower-cased text); a match
   overlapping an ``unmention`` phrase is not a mention; overlapping matches keep the earliest, then
   the longest. ``finding`` holds the CheXpert name ("nodule" -> Lung Lesion); the words themselves
   stay readable through ``sentence``.
3. Presence, CheXpert's order: uncertainty that overrides negation ("cannot exclude", "no new"), then
   negation, then uncertainty; else 1. Cues inside a pseudo-cue ("no change") do not count. A ``pre`` cue covers the findings after it up to a scope
   terminator (so "no consolidation, effusion, or pneumothorax" negates all three); a ``post`` cue
   covers the findings before it in its clause ("heart size is normal").
4. Modifiers (laterality, zone, severity, temporal) bind to the finding they premodify (only
   modifier words between, no stop word such as "with", "in", "is"), else to the nearest finding of
   their clause (gap in characters), else, in a clause without findings, to the nearest finding of
   the sentence. Laterality and zones bind only to findings that can have a side (not the heart).
   A side word inside the name of another structure ("right atrium", "left heart border", "right
   mainstem bronchus") lateralises nothing. A device (``own_side_only``) takes a side only from a
   side word that premodifies it ("right internal jugular line") or names its site ("pacemaker in
   the left chest wall"), never from its tip's place or a nearby lung finding.
   Several lateralities on one finding: left + right -> bilateral, except that a finding stated on
   each side at a different height gives one mention per side with its own zones ("right upper and
   left lower lobe opacities"); a plural effusion without a side is bilateral. Several severity
   words -> range.
5. ``span`` is the sentence's character span in the ORIGINAL input text and ``sentence`` those
   original characters, line breaks and repeated spaces included: ``text[slice(*span)] == sentence``.
   The whitespace-normalised text of step 1 is internal to matching and never returned.

PadChest (``padchest_mentions``) never runs these rules: its sentence-level labels are mapped through
the padchest-labels system of ``manifests/labels.yaml`` and its localizations through the table in
``manifests/attributes.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import manifests
from schemas.records import AttributeMention, Presence
from transforms.labels import NO_FINDING, anatomy, label_rules
from transforms.reports import sentence_spans

ATTRIBUTES_MANIFEST = "attributes.yaml"
PADCHEST_SYSTEM = "padchest-labels"
_LOCALIZATION_PREFIX = "loc "
Laterality = Literal["left", "right", "bilateral"]
SeverityScale = Literal["size", "severity"]


@dataclass(frozen=True)
class _Match:
    """One regex hit inside a sentence (offsets relative to the sentence) and what it stands for."""

    start: int
    end: int
    value: Any


@dataclass(frozen=True)
class _FindingRule:
    name: str
    pattern: re.Pattern[str]
    unmention: re.Pattern[str] | None
    lateral: bool
    scale: SeverityScale
    render: str
    own_side_only: bool  # a device: sides only from its premodifiers and its site
    paired_plural: re.Pattern[str] | None  # "effusions": one in each pleural space unless a side says otherwise


def _alternation(patterns: Sequence[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns)) if patterns else None


def _required_alternation(patterns: Sequence[str], what: str) -> re.Pattern[str]:
    """The alternation of a list the matching cannot do without (at least one pattern in the manifest)."""
    pattern = _alternation(patterns)
    if pattern is None:
        raise ValueError(f"{ATTRIBUTES_MANIFEST}: {what} lists no patterns")
    return pattern


def _table(rows: Iterable[dict], value_keys: Sequence[str]) -> tuple[tuple[re.Pattern[str], tuple], ...]:
    return tuple((re.compile(row["pattern"]), tuple(row.get(key) for key in value_keys)) for row in rows)


_VOCABULARY = manifests.load(ATTRIBUTES_MANIFEST)
_FINDINGS = tuple(
    _FindingRule(
        name,
        _required_alternation(entry["patterns"], f"findings.{name}.patterns"),
        _alternation(entry["unmention"]),
        entry["lateral"],
        entry["scale"],
        entry["render"],
        entry.get("own_side_only", False),
        _alternation(entry.get("paired_plural", ())),
    )
    for name, entry in _VOCABULARY["findings"].items()
)
_FINDING_RULES = {rule.name: rule for rule in _FINDINGS}
_PRESENCE = {
    kind: {
        side: _required_alternation(_VOCABULARY["presence"][kind][side], f"presence.{kind}.{side}")
        for side in ("pre", "post")
    }
    for kind in ("pre_negation_uncertainty", "negation", "uncertainty")
}
_PRESENCE_VALUE: dict[str, Presence] = {"pre_negation_uncertainty": -1, "negation": 0, "uncertainty": -1}
_PSEUDO = _required_alternation(_VOCABULARY["presence"]["pseudo"], "presence.pseudo")
_SCOPE_TERMINATOR = _required_alternation(_VOCABULARY["presence"]["scope_terminators"], "presence.scope_terminators")
_CLAUSE_BOUNDARY = _required_alternation(_VOCABULARY["clause_boundaries"], "clause_boundaries")
_LATERALITY = _table(_VOCABULARY["laterality"], ("laterality", "implicit", "zones"))
_SIDED_STRUCTURE = _required_alternation(_VOCABULARY["sided_structures"], "sided_structures")
_DEVICE_SITE = _required_alternation(_VOCABULARY["device_sites"], "device_sites")
_WHITESPACE = re.compile(r"\s+")
_ZONES = _table(_VOCABULARY["zones"], ("zones",))
_SEVERITY_RANGES = _table(_VOCABULARY["severity_ranges"], ("min", "max"))
_SEVERITY_WORDS = _table(_VOCABULARY["severity_words"], ("ordinal", "scale"))
_TEMPORAL = _table(_VOCABULARY["temporal"], ("temporal",))
_ZONE_ORDER = {zone: index for index, zone in enumerate(_VOCABULARY["zone_order"])}
_VERTICAL = frozenset({"upper", "middle", "lower"})
_COORDINATED = re.compile(r"(?:[- ]sided)?\s*(?:,|and\b|or\b|&)")
"""After a side word: it is coordinated with the next one ("right and left basilar"), no noun of its own."""
_ZONE_RENDER: dict[str, str] = _VOCABULARY["zone_render"]
_ZONE_IMPLIES: dict[str, str] = _VOCABULARY["zone_implies"]
SEVERITY_RENDER = {
    scale: {int(k): v for k, v in words.items()} for scale, words in _VOCABULARY["severity_render"].items()
}
"""scale ("size" | "severity") -> ordinal -> word, as the attribute prompt writes them."""
_PADCHEST = _VOCABULARY["padchest"]
_SEVERITY_STEMS: dict[str, int] = _PADCHEST["severity_stems"]
_BINDING_STOP = _required_alternation(_VOCABULARY["binding"]["stop_words"], "binding.stop_words")
_PREMODIFIER_REACH: int = _VOCABULARY["binding"]["premodifier_reach"]


# ---------------------------------------------------------------- matching helpers


def _overlaps(a: _Match, b: _Match) -> bool:
    return a.start < b.end and b.start < a.end


def _non_overlapping(matches: Iterable[_Match]) -> list[_Match]:
    """Earliest first, then longest; a match overlapping a kept one is dropped."""
    kept: list[_Match] = []
    for match in sorted(matches, key=lambda m: (m.start, m.start - m.end)):
        if not any(_overlaps(match, other) for other in kept):
            kept.append(match)
    return kept


def _table_matches(sentence: str, table: Sequence[tuple[re.Pattern[str], tuple]]) -> list[_Match]:
    hits = [_Match(m.start(), m.end(), values) for pattern, values in table for m in pattern.finditer(sentence)]
    return _non_overlapping(hits)


def _finding_matches(sentence: str) -> list[_Match]:
    hits = []
    for rule in _FINDINGS:
        hidden = [_Match(m.start(), m.end(), None) for m in rule.unmention.finditer(sentence)] if rule.unmention else []
        for m in rule.pattern.finditer(sentence):
            hit = _Match(m.start(), m.end(), rule)
            if not any(_overlaps(hit, other) for other in hidden):
                hits.append(hit)
    return _non_overlapping(hits)


def _clause_of(position: int, boundaries: Sequence[int]) -> int:
    return sum(1 for boundary in boundaries if boundary <= position)


def _gap(cue: _Match, finding: _Match) -> tuple[int, int]:
    """Distance of a cue to a finding; on a tie the finding after the cue ranks first."""
    if cue.end <= finding.start:
        return finding.start - cue.end, 0
    return max(cue.start - finding.end, 0), 1


def _premodifies(cue: _Match, finding: _Match, sentence: str) -> bool:
    """The cue stands before the finding with only modifier words between ("left basilar atelectasis")."""
    between = sentence[cue.end : finding.start]
    return cue.end <= finding.start and len(between) <= _PREMODIFIER_REACH and not _BINDING_STOP.search(between)


def _bind(
    cues: Iterable[_Match],
    findings: Sequence[_Match],
    sentence: str,
    clause: list[int],
    boundaries: Sequence[int],
    lateral_only: bool,
    sites: Sequence[_Match] | None = None,
) -> dict[int, list[_Match]]:
    """Finding index -> the cues bound to it.

    A cue binds to the finding it premodifies, else to the nearest finding of its clause; a cue in a
    clause without a finding ("bibasilar opacities, right greater than left") to the nearest finding
    of the sentence. With ``sites`` (laterality), an ``own_side_only`` finding (a device) takes only a
    cue that premodifies it or lies in one of ``sites``; a cue no candidate takes binds nowhere.
    """
    bound: dict[int, list[_Match]] = {}
    eligible = [i for i, finding in enumerate(findings) if finding.value.lateral or not lateral_only]

    def takes(i: int, cue: _Match) -> bool:
        if sites is None or not findings[i].value.own_side_only:
            return True
        return _premodifies(cue, findings[i], sentence) or any(_overlaps(cue, site) for site in sites)

    for cue in cues:
        if any(_overlaps(cue, finding) for finding in findings):
            continue  # "increased" inside "increased density" is part of the finding
        where = _clause_of(cue.start, boundaries)
        candidates = [i for i in eligible if clause[i] == where] or eligible
        candidates = [i for i in candidates if takes(i, cue)]
        if not candidates:
            continue
        forward = [i for i in candidates if _premodifies(cue, findings[i], sentence)]
        chosen = forward[0] if forward else min(candidates, key=lambda i: _gap(cue, findings[i]))
        bound.setdefault(chosen, []).append(cue)
    return bound


# ---------------------------------------------------------------- attributes of one finding


def _presence(finding: _Match, sentence: str, clause_end: int) -> Presence:
    pseudo = [_Match(m.start(), m.end(), None) for m in _PSEUDO.finditer(sentence)]

    def real(cue: re.Match[str]) -> bool:
        return not any(_overlaps(_Match(cue.start(), cue.end(), None), other) for other in pseudo)

    for kind in ("pre_negation_uncertainty", "negation", "uncertainty"):
        pre, post = _PRESENCE[kind]["pre"], _PRESENCE[kind]["post"]
        for cue in filter(real, pre.finditer(sentence, 0, finding.start)):
            terminator = _SCOPE_TERMINATOR.search(sentence, cue.end())
            if finding.start < (terminator.start() if terminator else len(sentence)):
                return _PRESENCE_VALUE[kind]
        if any(map(real, post.finditer(sentence, finding.end, clause_end))):
            return _PRESENCE_VALUE[kind]
    return 1


def _side_cues(sentence: str) -> tuple[list[_Match], list[_Match]]:
    """(laterality cues, device sites) of a sentence; a side inside a sided structure's name is no cue."""
    structures = [_Match(m.start(), m.end(), None) for m in _SIDED_STRUCTURE.finditer(sentence)]
    cues = [cue for cue in _table_matches(sentence, _LATERALITY) if not any(_overlaps(cue, s) for s in structures)]
    return cues, [_Match(m.start(), m.end(), None) for m in _DEVICE_SITE.finditer(sentence)]


def _matching_text(sentence: str) -> str:
    """What the rules match a sentence as: lower case, every run of whitespace (CR and LF included) one
    space. Offsets into it are internal; mentions point into the original text (module doc, step 5)."""
    return _WHITESPACE.sub(" ", sentence.lower())


def _laterality(cues: Sequence[_Match]) -> Laterality | None:
    """Explicit sides win over implicit ones (plural "bases"); left + right is bilateral."""
    explicit = [cue for cue in cues if not cue.value[1]]
    sides = {cue.value[0] for cue in explicit or cues}
    if "bilateral" in sides or {"left", "right"} <= sides:
        return "bilateral"
    return next(iter(sides), None)


def _zones(cues: Sequence[_Match]) -> list[str]:
    zones = {zone for cue in cues for zone in (cue.value[-1] or ())}
    return sorted(zones, key=_ZONE_ORDER.__getitem__)


def _sides_and_zones(
    sides: Sequence[_Match], places: Sequence[_Match], sentence: str
) -> list[tuple[Laterality | None, list[str]]]:
    """(laterality, zones) of one finding: one pair, or one pair per side when the finding is stated on
    each side at a different height ("right upper and left lower lobe opacities", "haziness in the
    right lung and left base"), so each side keeps its own zones. A zone belongs to the explicit side
    word before it (the first one when none is before it); a side word coordinated with the next one
    ("right and left basilar") shares its zones. The same heights on both sides ("right lower lobe and
    left base") stay one bilateral mention with all the zones."""
    explicit = sorted((cue for cue in sides if not cue.value[1]), key=lambda cue: cue.start)
    if {cue.value[0] for cue in explicit} != {"left", "right"}:
        return [(_laterality(sides), _zones([*sides, *places]))]
    owners = [side for side in explicit if not _COORDINATED.match(sentence, side.end)] or explicit[-1:]
    own: dict[str, list[_Match]] = {"left": [], "right": []}
    for cue in [*sides, *places]:
        owner = max(
            (side for side in owners if side.start <= cue.start), key=lambda side: side.start, default=owners[0]
        )
        own[owner.value[0]].append(cue)
    zones = {side: _zones(cues) for side, cues in own.items()}
    same_height = _VERTICAL.intersection(zones["left"]) == _VERTICAL.intersection(zones["right"])
    if same_height or not all(own.values()):
        return [("bilateral", _zones([*sides, *places]))]
    return [(side, zones[side]) for side in dict.fromkeys(cue.value[0] for cue in explicit)]


def _severity(
    ranges: Sequence[_Match], words: Sequence[_Match], rule: _FindingRule
) -> tuple[tuple[int, int] | None, SeverityScale | None]:
    bounds = [cue.value for cue in ranges] + [(cue.value[0], cue.value[0]) for cue in words]
    if not bounds:
        return None, None
    scales = {cue.value[1] for cue in words} - {"any"}
    scale = scales.pop() if len(scales) == 1 else rule.scale
    return (min(low for low, _ in bounds), max(high for _, high in bounds)), scale


def _nearest_value(cues: Sequence[_Match], finding: _Match) -> Any:
    return min(cues, key=lambda cue: _gap(cue, finding)).value[0] if cues else None


# ---------------------------------------------------------------- public API


def extract_mentions(text: str) -> list[AttributeMention]:
    """Every CheXpert-14 finding mentioned in English report text, with its attributes (module doc)."""
    if not isinstance(text, str):
        raise TypeError(f"report text must be str, got {type(text).__name__}")
    mentions = []
    for sentence_start, sentence_end in sentence_spans(text):
        sentence = _matching_text(text[sentence_start:sentence_end])
        findings = _finding_matches(sentence)
        if not findings:
            continue
        boundaries = [m.start() for m in _CLAUSE_BOUNDARY.finditer(sentence)]
        clause = [_clause_of(finding.start, boundaries) for finding in findings]
        clause_ends = [next((b for b in boundaries if b > finding.start), len(sentence)) for finding in findings]
        side_cues, sites = _side_cues(sentence)
        sides = _bind(side_cues, findings, sentence, clause, boundaries, lateral_only=True, sites=sites)
        places = _bind(_table_matches(sentence, _ZONES), findings, sentence, clause, boundaries, lateral_only=True)
        ranges = _table_matches(sentence, _SEVERITY_RANGES)
        words = [w for w in _table_matches(sentence, _SEVERITY_WORDS) if not any(_overlaps(w, r) for r in ranges)]
        range_cues = _bind(ranges, findings, sentence, clause, boundaries, lateral_only=False)
        word_cues = _bind(words, findings, sentence, clause, boundaries, lateral_only=False)
        times = _bind(_table_matches(sentence, _TEMPORAL), findings, sentence, clause, boundaries, lateral_only=False)
        for index, finding in enumerate(findings):
            rule = finding.value
            severity, scale = _severity(range_cues.get(index, ()), word_cues.get(index, ()), rule)
            side = sides.get(index, [])
            if rule.paired_plural and rule.paired_plural.fullmatch(sentence, finding.start, finding.end):
                side = [*side, _Match(finding.start, finding.end, ("bilateral", True, None))]  # implicit
            presence = _presence(finding, sentence, clause_ends[index])
            temporal = _nearest_value(times.get(index, ()), finding)
            for laterality, zones in _sides_and_zones(side, places.get(index, []), sentence):
                mentions.append(
                    AttributeMention(
                        finding=rule.name,
                        presence=presence,
                        laterality=laterality,
                        zones=zones,
                        severity=severity,
                        severity_scale=scale,
                        temporal=temporal,
                        sentence=text[sentence_start:sentence_end],
                        span=(sentence_start, sentence_end),
                    )
                )
    return mentions


def severity_words(low: int, high: int, scale: str) -> str:
    """ "moderate", or "mild to moderate" for a range, in the words of ``scale``."""
    words = SEVERITY_RENDER[scale]
    return words[low] if low == high else f"{words[low]} to {words[high]}"


def zone_words(zones: Sequence[str]) -> str | None:
    """ "apical", "lower and retrocardiac": the zones, leaving out one implied by a more specific one."""
    implied = {_ZONE_IMPLIES[zone] for zone in zones if zone in _ZONE_IMPLIES}
    shown = [_ZONE_RENDER[zone] for zone in zones if zone not in implied]
    return " and ".join(shown) or None


def _severity_phrase(mention: AttributeMention) -> str | None:
    if mention.severity is None:
        return None
    return severity_words(*mention.severity, mention.severity_scale or _FINDING_RULES[mention.finding].scale)


def attribute_phrase(mention: AttributeMention) -> str:
    """IMT-CXR-style phrase of one mention: severity, side, zone, finding ("small left apical pneumothorax")."""
    if mention.finding not in _FINDING_RULES:
        raise ValueError(f"no phrase for finding {mention.finding!r}; known: {sorted(_FINDING_RULES)}")
    parts = (
        _severity_phrase(mention),
        mention.laterality,
        zone_words(mention.zones),
        _FINDING_RULES[mention.finding].render,
    )
    return " ".join(part for part in parts if part)


def attribute_prompt(mentions: Iterable[AttributeMention]) -> str:
    """The distinct phrases of the positive mentions, in order, joined by ", " ("" when none)."""
    phrases = [attribute_phrase(mention) for mention in mentions if mention.presence == 1]
    return ", ".join(dict.fromkeys(phrases))


def _split_side(label: str) -> tuple[str, str | None]:
    for suffix, side in _PADCHEST["side_suffixes"].items():
        if label.endswith(suffix):
            return label[: -len(suffix)], side
    return label, None


def _padchest_targets(label: str) -> tuple[tuple[str, int], ...]:
    """CheXpert targets of one PadChest label; () for documented non-finding labels, ValueError if unknown."""
    rules = label_rules().systems[PADCHEST_SYSTEM]
    if label in rules.targets:
        return tuple(pair for pair in rules.targets[label] if pair[0] != NO_FINDING)
    if label in rules.not_mapped or label in rules.no_information:
        return ()
    raise ValueError(f"PadChest label {label!r} is neither mapped nor listed in manifests/labels.yaml")


def _padchest_location(name: str) -> dict:
    table = _PADCHEST["localizations"]
    if name not in table:
        raise ValueError(f"PadChest localization {name!r} is not in manifests/attributes.yaml padchest.localizations")
    return table[name]


def label_groups(items: Sequence[str]) -> list[tuple[list[str], list[str]]]:
    """(labels, localizations) runs: consecutive labels share the localizations that follow them."""
    groups: list[tuple[list[str], list[str]]] = []
    for item in items:
        if item.startswith(_LOCALIZATION_PREFIX):
            if not groups:
                raise ValueError(f"localization {item!r} before any label in {list(items)!r}")
            groups[-1][1].append(item[len(_LOCALIZATION_PREFIX) :].strip())
        elif not groups or groups[-1][1]:
            groups.append(([item.strip()], []))
        else:
            groups[-1][0].append(item.strip())
    return groups


def padchest_mentions(
    labels_by_sentence: Sequence[Sequence[str] | None], report: str | None = None
) -> list[AttributeMention]:
    """English mentions from PadChest ``LabelsLocalizationsBySentence`` (one item list per sentence).

    Consecutive labels share the ``loc`` items that follow them. A side suffix ("pleural effusion left
    side") sets the laterality; localizations set laterality and zones through the attributes table.
    Labels map through the padchest-labels system (presence = the implied value, e.g. heart
    insufficiency -> Edema 1 and Cardiomegaly -1); ``normal``, empty items, documented non-CheXpert
    labels and no-information labels give no mention. A None (``nan``) sentence has no labels.
    ``sentence`` is the sentence's items joined by ", "; ``span`` its offsets in those sentences joined
    by " . " (PadChest's own sentence separator): there is no English report text to point into.
    With the stemmed Spanish ``report``, a severity word of a sentence (``severity_stems``) grades the
    sentence's mentions when the report has exactly one sentence per label list and the sentence's
    mentions name one finding. ValueError for an unknown label or localization.
    """
    rendered = [", ".join(items) if items else "" for items in labels_by_sentence]
    grades = _padchest_grades(report, len(labels_by_sentence))
    mentions = []
    offset = 0
    for items, sentence, grade in zip(labels_by_sentence, rendered, grades):
        span = (offset, offset + len(sentence))
        offset = span[1] + len(" . ")
        found = []
        for labels, locations in label_groups(items or ()):
            attributes = [_padchest_location(name) for name in locations]
            zones = sorted(
                {zone for entry in attributes for zone in entry.get("zones", ())}, key=_ZONE_ORDER.__getitem__
            )
            for label in filter(None, labels):
                base, side = _split_side(label)
                sides = {side} | {entry["laterality"] for entry in attributes if "laterality" in entry}
                laterality = _laterality([_Match(0, 0, (value, False)) for value in sides if value])
                for finding, presence in _padchest_targets(base):
                    mention = AttributeMention(
                        finding=finding,
                        presence=cast(Presence, presence),  # labels.yaml's targets are 1, 0 or -1
                        laterality=laterality if _FINDING_RULES[finding].lateral else None,
                        zones=zones if _FINDING_RULES[finding].lateral else [],
                        sentence=sentence,
                        span=span,
                    )
                    if mention not in found:  # two labels, one category: one mention
                        found.append(mention)
        if grade is not None and len({m.finding for m in found}) == 1:
            found = [
                m.model_copy(update={"severity": (grade, grade), "severity_scale": _FINDING_RULES[m.finding].scale})
                for m in found
            ]
        mentions += found
    return mentions


def _padchest_grades(report: str | None, sentences: int) -> list[int | None]:
    """Per report sentence, the largest severity stem it holds (None: no stem, or the report's
    sentences do not line up one to one with the label lists)."""
    parts = [part.split() for part in (report or "").split(".") if part.strip()]
    if len(parts) != sentences:
        return [None] * sentences
    return [
        max((_SEVERITY_STEMS[token] for token in words if token in _SEVERITY_STEMS), default=None) for words in parts
    ]


def mention_regions(mention: AttributeMention, system: str = "imagenome-regions") -> list[str]:
    """The lung regions of ``system`` (manifests/labels.yaml ``anatomy``) a lateralised mention points
    at: per side, the regions whose zones all belong to the mention and cover most of them ("left" +
    [lower, basal] -> left lower lung zone; no zones -> the whole lung). [] without a laterality."""
    if mention.laterality is None:
        return []
    sides = ("left", "right") if mention.laterality == "bilateral" else (mention.laterality,)
    names = []
    for side in sides:
        candidates = [
            region
            for region in anatomy(system).values()
            if region.structure == "lung" and region.laterality == side and set(region.zones) <= set(mention.zones)
        ]
        best = max((len(region.zones) for region in candidates), default=None)
        names += [region.name for region in candidates if len(region.zones) == best]
    return names
