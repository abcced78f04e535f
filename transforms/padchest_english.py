"""English statements from PadChest's sentence annotations (phrases: ``manifests/padchest_english.yaml``).

PadChest's report is stemmed Spanish; per report sentence it gives labels and localizations in English
(``LabelsLocalizationsBySentence``, parsed by :func:`transforms.sources.padchest.parse_by_sentence`).
:func:`render_report` turns them into one English sentence per annotated sentence, in order:
``[["pleural effusion", "loc left costophrenic angle"], ["cardiomegaly"]]`` ->
"Pleural effusion in the left costophrenic angle. Cardiomegaly."

Rules (docs/language.md, "English statements from PadChest's structure"):

- A sentence's items are runs of labels, each followed by the localizations that belong to them
  (:func:`transforms.phrases.label_groups`). Every label and localization must be in the manifest, else
  :class:`UnknownPhrase` names it.
- A finding run reads "<side> <pre-modifiers> <label> and <label> <places>": side words and adjectival
  localizations ("basal", "retrocardiac") go before the first label's head, places after the labels
  ("in the right upper lobe", "below the diaphragm"; the same preposition once: "in the A and the B").
  A side goes into the first place that takes one and has none ("Pleural effusion in the right
  hemithorax."), is not repeated when a place already says it, and otherwise goes before the label;
  right and left together read as bilateral ("in both costophrenic angles"). Several runs of a
  sentence are joined with commas and "and".
- Words redundant with the label are not said: a localization the label implies (manifest
  ``implies``) or whose English is among the label's words (pleural effusion + loc pleural), and a
  localization beside a more specific one it contains (loc bone + loc rib: manifest ``within``).
- ``exclude`` (a sentence without relevant content), ``unchanged`` (a comparison with a prior study,
  which one image cannot show) and ``""`` say nothing; their localizations go with them. A sentence
  left with nothing to say is omitted, as is a ``None`` (``nan``) sentence.
- ``normal`` with localizations says those parts are normal ("Normal cardiac silhouette and
  mediastinum."), in its own clause after a semicolon when the sentence also states findings; a part
  in which a finding of the report lies (same part or a part within it, on a side that can be the
  same) is left out, so a normal statement never contradicts a finding. In a run that mixes
  ``normal`` with findings, the localizations go to ``normal`` only when it is the run's last label.
- A bare ``normal`` says "no significant abnormality" only when no sentence of the report states a
  finding, and only once; otherwise it is omitted (a sentence-level normal does not make the study
  normal).
- ``suboptimal study`` says "suboptimal study", takes no localization and is not a finding.
- ``sides=False`` (lateral views, where left and right cannot be told apart) drops every side word
  and the labels that are themselves side statements (``needs_sides``: dextrocardia, right aortic
  arch): "Pleural effusion in the costophrenic angle."

Each sentence is capitalised and ends with "."; the text is the sentences joined by one space.
Deterministic; pure (no Beam).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import manifests
from transforms.phrases import label_groups

MANIFEST = "padchest_english.yaml"
_DATA = manifests.load(MANIFEST)
VERSION: int = _DATA["version"]
SIDES = ("right", "left", "bilateral")
KINDS = ("finding", "normal", "study", "omit")
NO_ABNORMALITY = "no significant abnormality"
LOCALIZATION_PREFIX = "loc "


class UnknownPhrase(ValueError):
    """A label or localization string the manifest has no English for (``phrase`` is the string)."""

    def __init__(self, phrase: str):
        super().__init__(f"PadChest string {phrase!r} has no English in manifests/{MANIFEST}")
        self.phrase = phrase


@dataclass(frozen=True)
class EnglishReport:
    """``sentences``: one per annotated sentence that says something, in order; ``text``: them joined by
    one space; ``sources``: the index of the annotated sentence each came from; ``labels``: the PadChest
    labels each states (findings, ``normal``, ``suboptimal study``)."""

    text: str
    sentences: tuple[str, ...]
    sources: tuple[int, ...]
    labels: tuple[tuple[str, ...], ...]


# ------------------------------------------------------------------ the manifest


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.lower().split())


def _contains(words: tuple[str, ...], part: tuple[str, ...]) -> bool:
    return any(words[i:i + len(part)] == part for i in range(len(words) - len(part) + 1))


@dataclass(frozen=True, eq=False)  # one object per manifest entry: compared and hashed by identity
class _Loc:
    name: str
    area: str  # the plain localization it is a form of (itself, or its ``of``)
    side: str | None = None
    adjective: str | None = None
    noun: str | None = None
    plural: str | None = None
    sided: bool = False
    article: str = "the"
    prep: str = "in"
    place: str | None = None
    ancestors: frozenset[str] = frozenset()

    @property
    def forms(self) -> tuple[tuple[str, ...], ...]:
        """The words that say this localization (to find it among a label's words)."""
        return tuple(_words(text) for text in (self.adjective, self.noun, self.place) if text)


@dataclass(frozen=True, eq=False)
class _Label:
    name: str
    kind: str
    en: str = ""
    head: str = ""
    side: str | None = None
    side_words: dict = field(default_factory=dict)
    areas: frozenset[str] = frozenset()  # implied localizations, listed or found among its words
    needs_sides: bool = False
    unlocalized: bool = False


def _load_locs(table: dict) -> dict[str, _Loc]:
    fields = {"side", "of", "adjective", "noun", "plural", "sided", "article", "prep", "place", "within"}
    for name, entry in table.items():
        if set(entry) - fields:
            raise ValueError(f"{MANIFEST}: loc {name!r} has unknown fields {sorted(set(entry) - fields)}")
        base = table.get(entry.get("of", name))
        if base is None or "of" in base:
            raise ValueError(f"{MANIFEST}: loc {name!r}: 'of' must name a plain localization")
        if entry.get("side") not in (None, *SIDES):
            raise ValueError(f"{MANIFEST}: loc {name!r}: side must be one of {SIDES}")
        if not (entry.get("side") or base.get("noun")):
            raise ValueError(f"{MANIFEST}: loc {name!r} needs a side or a noun")
        if base.get("sided") and not (base.get("plural") or base.get("adjective")):
            raise ValueError(f"{MANIFEST}: loc {name!r} is a place that takes a side, so it needs a plural")
        if base.get("article", "the") not in ("the", "a"):
            raise ValueError(f"{MANIFEST}: loc {name!r}: article must be 'the' or 'a'")
        for parent in base.get("within", ()):
            if parent not in table or "of" in table[parent]:
                raise ValueError(f"{MANIFEST}: loc {name!r}: 'within' names unknown {parent!r}")

    def ancestors(name: str, seen: frozenset[str] = frozenset()) -> frozenset[str]:
        if name in seen:
            raise ValueError(f"{MANIFEST}: loc 'within' cycle through {name!r}")
        parents = table[name].get("within", ())
        return frozenset(parents).union(*(ancestors(p, seen | {name}) for p in parents))

    locs = {}
    for name, entry in table.items():
        area = entry.get("of", name)
        base = {key: value for key, value in table[area].items() if key != "within"}
        base.update({key: value for key, value in entry.items() if key not in ("of", "within")})
        locs[name] = _Loc(name=name, area=area, ancestors=ancestors(area), **base)
    return locs


def _load_labels(table: dict, locs: dict[str, _Loc]) -> dict[str, _Label]:
    fields = {"kind", "en", "head", "side", "side_words", "implies", "needs_sides", "unlocalized", "like"}
    labels = {}
    for name, own in table.items():
        entry = dict(own)
        if "like" in entry:
            like = table.get(entry.pop("like"))
            if like is None or "like" in like:
                raise ValueError(f"{MANIFEST}: label {name!r}: 'like' must name a label without 'like'")
            entry = {**like, **entry}
        if set(entry) - fields:
            raise ValueError(f"{MANIFEST}: label {name!r} has unknown fields {sorted(set(entry) - fields)}")
        kind = entry.get("kind", "finding")
        if kind not in KINDS:
            raise ValueError(f"{MANIFEST}: label {name!r}: kind must be one of {KINDS}")
        en = entry.get("en", "")
        if kind in ("finding", "study") and not en:
            raise ValueError(f"{MANIFEST}: label {name!r} needs 'en'")
        if set(_words(en)) & {"right", "left", "bilateral", "both"}:
            raise ValueError(f"{MANIFEST}: label {name!r}: 'en' must not say a side (use 'side')")
        head = entry.get("head", en)
        if not _contains(_words(en), _words(head)):
            raise ValueError(f"{MANIFEST}: label {name!r}: head {head!r} is not words of {en!r}")
        if entry.get("side") not in (None, *SIDES) or set(entry.get("side_words", {})) - set(SIDES):
            raise ValueError(f"{MANIFEST}: label {name!r}: sides must be among {SIDES}")
        implies = set(entry.get("implies", ()))
        if implies - {n for n, loc in locs.items() if loc.area == n}:
            raise ValueError(f"{MANIFEST}: label {name!r}: 'implies' names unknown or sided {sorted(implies)}")
        found = {loc.area for loc in locs.values() if any(_contains(_words(en), f) for f in loc.forms)}
        labels[name] = _Label(name=name, kind=kind, en=en, head=head, side=entry.get("side"),
                              side_words=dict(entry.get("side_words", {})), areas=frozenset(implies | found),
                              needs_sides=bool(entry.get("needs_sides", False)),
                              unlocalized=bool(entry.get("unlocalized", False)))
    return labels


LOCS = _load_locs(_DATA["locs"])
LABELS = _load_labels(_DATA["labels"], LOCS)
_ORDER = {name: index for index, name in enumerate(LOCS)}


def _label(name: str) -> _Label:
    if name not in LABELS:
        raise UnknownPhrase(name)
    return LABELS[name]


def _loc(name: str) -> _Loc:
    if name not in LOCS:
        raise UnknownPhrase(f"{LOCALIZATION_PREFIX}{name}")
    return LOCS[name]


# ------------------------------------------------------------------ one sentence


def _one_side(sides: Iterable[str | None]) -> str | None:
    """right + left (or any bilateral) -> bilateral; one side -> it; none -> None."""
    found = {side for side in sides if side}
    if not found:
        return None
    return found.pop() if len(found) == 1 else "bilateral"


def _and(parts: Sequence[str]) -> str:
    if len(parts) < 3:
        return " and ".join(parts)
    return f"{', '.join(parts[:-1])}{',' if any(' and ' in part for part in parts) else ''} and {parts[-1]}"


def _specific(locs: list[_Loc]) -> list[_Loc]:
    """The localizations without one that lies within another of the run (loc bone beside loc rib)."""
    return [loc for loc in locs if not any(loc.area in other.ancestors for other in locs)]


def _by_area(locs: list[_Loc]) -> dict[str, tuple[_Loc, str | None]]:
    """Localizations naming a part (a noun or an adjective), merged per part with their own side."""
    merged: dict[str, tuple[_Loc, list[str | None]]] = {}
    for loc in locs:
        if loc.noun or loc.adjective:
            merged.setdefault(loc.area, (loc, []))[1].append(loc.side)
    return {area: (loc, _one_side(sides)) for area, (loc, sides) in merged.items()}


def _free_sides(locs: list[_Loc]) -> list[str | None]:
    """The sides said by localizations that name no part (loc right) or are adjectives (basal bilateral)."""
    return [loc.side for loc in locs if not (loc.noun and not loc.adjective)]


def _place(loc: _Loc, side: str | None) -> str:
    words = loc.place or loc.noun
    if side == "bilateral":
        return f"both {loc.plural}" if loc.article == "the" else f"{loc.plural} on both sides"
    following = side or words
    article = "an" if loc.article == "a" and following[0] in "aeiou" else loc.article
    return f"{article} {following}" if not side else f"{article} {side} {words}"


def _part(loc: _Loc, side: str | None) -> str:
    """How a normal statement names a part: "right lung base", "costophrenic angles", "right ribs"."""
    if side in (None, "bilateral"):
        return loc.plural or loc.noun
    return f"{side} {loc.plural if loc.article == 'a' else loc.noun}"


@dataclass(frozen=True)
class _Finding:
    text: str
    labels: tuple[str, ...]
    areas: frozenset[str]  # the parts it lies in (implied or localized)
    sides: frozenset[str]  # the sides it is on (empty: not said)


@dataclass(frozen=True)
class _NormalPart:
    text: str
    area: str
    side: str | None


@dataclass(frozen=True)
class _Sentence:
    """One annotated sentence, planned: pieces in order, each ("finding", _Finding), ("normal",
    tuple[_NormalPart]), ("bare", None) or ("study", None)."""

    pieces: tuple[tuple[str, object], ...]
    findings: tuple[_Finding, ...]  # every finding, also those not said without sides


def _modified(label: _Label, side: str | None, adjectives: list[str]) -> str:
    """The label's phrase with its side word and pre-modifiers before its head."""
    words, head = label.en.split(), label.head.split()
    at = next(i for i in range(len(words)) if words[i:i + len(head)] == head)
    modifiers = ([label.side_words.get(side, side)] if side else []) + adjectives
    return " ".join(words[:at] + modifiers + words[at:])


def _finding(labels: list[_Label], said: list[_Label], locs: list[_Loc], redundant: list[_Loc],
             sides: bool) -> _Finding:
    """One run of finding labels with its localizations, as "<side> <adjectives> <labels> <places>".

    A side belongs to the label that states it or implies the localization that states it (the last
    such label: localizations follow their label); the run's other sides (loc right, an adjective's
    side) to the last label that states or implies something, else to the first label that is not
    ``unlocalized``, which also takes the adjectives, in the manifest's order ("subsegmental basal",
    "apical pleural")."""
    parts = _by_area(locs)
    places = {area: [loc, side] for area, (loc, side) in parts.items() if not loc.adjective}
    modifiers = sorted((loc for loc, _ in parts.values() if loc.adjective), key=lambda loc: _ORDER[loc.area])
    adjectives = [loc.adjective for loc in modifiers]
    owned = {label.name: [label.side] for label in labels}
    for loc in redundant:
        owned[next(label.name for label in reversed(labels) if loc.area in label.areas)].append(loc.side)
    first = next((label for label in said if not label.unlocalized), said[0])
    owner = next((label for label in reversed(labels) if len(owned[label.name]) > 1 or label.side), first)
    owned[owner.name] += _free_sides(locs)
    label_sides = {name: _one_side(found) for name, found in owned.items()}
    all_sides = {*label_sides.values(), *(side for _, side in places.values())} - {None}
    if not sides:
        label_sides = dict.fromkeys(label_sides)
        for entry in places.values():
            entry[1] = None
    before = {}
    for label in said:
        side = label_sides[label.name]
        target = next((entry for entry in places.values() if entry[0].sided and entry[1] is None), None)
        if side and target is not None:
            target[1] = side
        elif side and side not in {side for _, side in places.values()}:
            before[label.name] = side
    text = _and([_modified(label, before.get(label.name), adjectives if label is first else []) for label in said])
    by_prep: dict[str, list[str]] = {}
    for loc, side in places.values():
        by_prep.setdefault(loc.prep, []).append(_place(loc, side))
    if by_prep:
        text += " " + _and([f"{prep} {_and(phrases)}" for prep, phrases in by_prep.items()])
    areas = frozenset().union(*(label.areas for label in labels), (loc.area for loc in locs + redundant))
    return _Finding(text=text, labels=tuple(label.name for label in said), areas=areas,
                    sides=frozenset({"right", "left"} if "bilateral" in all_sides else all_sides))


def _normal_parts(locs: list[_Loc], sides: bool) -> tuple[_NormalPart, ...]:
    parts = {area: [loc, side if sides else None] for area, (loc, side) in _by_area(locs).items()}
    free = _one_side(_free_sides(locs)) if sides else None
    target = next((entry for entry in parts.values() if entry[0].sided and entry[1] is None), None)
    if free and target is not None:
        target[1] = free
    return tuple(_NormalPart(text=_part(loc, side), area=loc.area, side=side) for loc, side in parts.values())


def _runs(items: tuple[str, ...]) -> list[tuple[list[_Label], list[_Loc]]]:
    """The sentence's runs of labels and their localizations. A finding said in an earlier run of the
    sentence is not said again: a later run of nothing else adds its localizations to that run
    ("Bronchiectasis in the left upper lobe and the middle lobe."), a longer one drops it."""
    runs: list[tuple[list[_Label], list[_Loc]]] = []
    said: dict[str, int] = {}
    for names, loc_names in label_groups(items):
        labels = list(dict.fromkeys(_label(name) for name in names))
        locs = [_loc(name) for name in loc_names]
        repeated = [label for label in labels if label.name in said]
        if repeated and all(label in repeated or label.kind == "omit" for label in labels):
            runs[said[repeated[0].name]][1].extend(locs)
            continue
        labels = [label for label in labels if label not in repeated]
        said.update({label.name: len(runs) for label in labels if label.kind == "finding"})
        runs.append((labels, locs))
    return runs


@lru_cache(maxsize=1 << 16)
def _plan(items: tuple[str, ...], sides: bool) -> _Sentence:
    pieces: list[tuple[str, object]] = []
    findings: list[_Finding] = []
    for labels, all_locs in _runs(items):
        locs = _specific(all_locs)
        found = [label for label in labels if label.kind == "finding"]
        kinds = [label.kind for label in labels if label.kind in ("finding", "normal")]
        implied = frozenset().union(*(label.areas for label in found))
        redundant = [loc for loc in locs if loc.area in implied]
        rest = [loc for loc in locs if loc.area not in implied]
        to_normal = "normal" in kinds and kinds[-1] == "normal"
        run: dict[str, tuple[str, object]] = {}  # the run's pieces by the kind of label they say
        if found:
            said = [label for label in found if sides or not label.needs_sides]
            finding = _finding(found, said or found, [] if to_normal else rest, redundant, sides)
            findings.append(finding)
            if said:
                run["finding"] = ("finding", finding)
        if "normal" in kinds:
            parts = _normal_parts(rest, sides) if to_normal else ()
            run["normal"] = ("normal", parts) if parts else ("bare", None)
        if any(label.kind == "study" for label in labels):
            run["study"] = ("study", None)
        order = [label.kind for label in labels]
        pieces += [run[kind] for kind in sorted(run, key=order.index)]
    return _Sentence(pieces=tuple(pieces), findings=tuple(findings))


# ------------------------------------------------------------------ the report


def _covered(part: _NormalPart, findings: Sequence[_Finding], sides: bool) -> bool:
    """Whether a finding lies in the part (the same part or one within it) on a side it can share."""
    for finding in findings:
        inside = part.area in finding.areas or any(part.area in LOCS[area].ancestors for area in finding.areas)
        apart = sides and part.side not in (None, "bilateral") and finding.sides and part.side not in finding.sides
        if inside and not apart:
            return True
    return False


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def render_report(by_sentence: Sequence[Sequence[str] | None], *, sides: bool = True) -> EnglishReport:
    """English sentences for a parsed ``LabelsLocalizationsBySentence`` (rules: module docstring).

    UnknownPhrase when a label or localization is not in the manifest; ValueError when a sentence starts
    with a localization."""
    plans = [None if items is None else _plan(tuple(items), sides) for items in by_sentence]
    findings = [finding for plan in plans if plan is not None for finding in plan.findings]
    sentences, sources, stated = [], [], []
    said_no_abnormality = False
    for index, plan in enumerate(plans):
        if plan is None:
            continue
        clauses: dict[str, list] = {}
        for kind, piece in plan.pieces:
            if kind == "finding":
                clauses.setdefault("finding", []).append(piece)
            elif kind == "normal":
                kept = [part for part in piece if not _covered(part, findings, sides)]
                clauses.setdefault("normal", []).extend(kept)
            elif kind == "bare" and not findings:
                clauses.setdefault("bare", [])
            elif kind == "study":
                clauses.setdefault("study", [])
        if not clauses.get("normal"):
            clauses.pop("normal", None)
        if "normal" in clauses or said_no_abnormality:
            clauses.pop("bare", None)
        said_no_abnormality = said_no_abnormality or "bare" in clauses
        texts, labels = [], []
        for kind, pieces in clauses.items():
            if kind == "finding":
                texts.append(_and([finding.text for finding in pieces]))
                labels += [label for finding in pieces for label in finding.labels]
            elif kind == "normal":
                texts.append("normal " + _and(list(dict.fromkeys(part.text for part in pieces))))
                labels.append("normal")
            elif kind == "bare":
                texts.append(NO_ABNORMALITY)
                labels.append("normal")
            else:
                texts.append(LABELS["suboptimal study"].en)
                labels.append("suboptimal study")
        if texts:
            sentences.append(_capital("; ".join(texts)))
            sources.append(index)
            stated.append(tuple(dict.fromkeys(labels)))
    return EnglishReport(text=" ".join(sentences), sentences=tuple(sentences), sources=tuple(sources),
                         labels=tuple(stated))


def stated_findings(labels: Iterable[str], *, sides: bool = True) -> frozenset[str]:
    """The labels among ``labels`` (a study's ``Labels``) that its English statements must state: the
    findings (devices included), without the side statements when ``sides`` is False. UnknownPhrase
    for a label the manifest does not know."""
    return frozenset(name for name in labels
                     if _label(name).kind == "finding" and (sides or not _label(name).needs_sides))
