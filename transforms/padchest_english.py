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
- A localization belongs to a finding label that can lie there (manifest ``at``): the run's LAST such
  label, as PadChest writes localizations after the labels they describe; one that no label of its run
  can take is not said ("cardiomegaly, loc central" -> "Cardiomegaly."). A side (loc right, the side of
  "basal bilateral") goes to the run's last label that can have one (manifest ``sides``: heart failure
  cannot and passes it on; a goiter keeps it unsaid, as it may be the trachea's); a label whose side has
  words of its own (scoliosis: levoconvex) says it only as the run's only finding.
- A finding run reads "<side> <pre-modifiers> <label> <places>" per label: side words and adjectival
  localizations ("basal", "retrocardiac") before the head of the label they belong to, places after it
  ("in the right upper lobe", "below the diaphragm"; the same preposition once: "in the A and the B").
  Earlier labels of the run that can lie in all of a label's places (not those that can lie anywhere,
  and none with a side of its own) share them ("Infiltrates and consolidation in the right upper
  lobe."); the others are said after the placed labels ("Pleural effusion in the left lower lobe and
  scoliosis."), so no place reads as theirs.
  A side goes into the label's first place that takes one and has none ("Pleural effusion in the right
  hemithorax."), is not repeated when a place already says it, goes before the label when no place
  says a side, and is left unsaid when a place says another side (never "right ... in the left lower
  lobe"); right and left together read as bilateral ("in both costophrenic angles"). Several runs of a
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
  same) is left out, so a normal statement never contradicts a finding, and a part already said
  normal in the report (or said without a side) is not said again. A run that mixes ``normal`` with
  findings makes no normal statement: its localizations go to the findings when ``normal`` comes
  first, else to nobody (they may be the normal part's or the findings').
- A bare ``normal`` says "no significant abnormality" only when no sentence of the report states a
  finding, and only once; otherwise it is omitted (a sentence-level normal does not make the study
  normal).
- ``suboptimal study`` says "suboptimal study", takes no localization and is not a finding.
- ``sides=False`` (lateral views, where left and right cannot be told apart) drops every side word,
  the labels that are themselves side statements (``needs_sides``: dextrocardia, right aortic arch) and
  the normal parts that carried a side ("normal right lung base" is not "normal lung bases"):
  "Pleural effusion in the costophrenic angle."

Each sentence is capitalised and ends with "."; the text is the sentences joined by one space.
Deterministic; pure (no Beam).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

import manifests
from transforms.phrases import label_groups
from transforms.sources.padchest import LOCALIZATION_PREFIX

MANIFEST = "padchest_english.yaml"
_DATA = manifests.load(MANIFEST)
VERSION: int = _DATA["version"]
SIDES = ("right", "left", "bilateral")
KINDS = ("finding", "normal", "study", "omit")
NO_ABNORMALITY = "no significant abnormality"
TAKES_SIDES = ("all", "single", "unsaid", "none")
ANYWHERE = "anywhere"


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
    return any(words[i : i + len(part)] == part for i in range(len(words) - len(part) + 1))


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
    at: frozenset[str] | None = frozenset()  # the parts it can lie in, with what lies within them; None: any
    not_at: frozenset[str] = frozenset()  # parts within those it cannot lie in
    sides: str = "none"  # one of TAKES_SIDES
    needs_sides: bool = False


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


def _load_regions(table: dict, locs: dict[str, _Loc]) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Region name -> (the plain localizations in it, those within them that are not)."""
    plain = {name for name, loc in locs.items() if loc.area == name}
    regions = {}
    for name, entry in table.items():
        if name in locs or name == ANYWHERE:
            raise ValueError(f"{MANIFEST}: region {name!r} has the name of a localization")
        if set(entry) - {"in", "not"} or not entry.get("in"):
            raise ValueError(f"{MANIFEST}: region {name!r} needs 'in' (and at most 'not')")
        inside, outside = frozenset(entry["in"]), frozenset(entry.get("not", ()))
        if (inside | outside) - plain:
            raise ValueError(f"{MANIFEST}: region {name!r} names unknown or sided {sorted((inside | outside) - plain)}")
        regions[name] = (inside, outside)
    return regions


def _load_at(
    name: str, at: object, regions: dict, locs: dict[str, _Loc]
) -> tuple[frozenset[str] | None, frozenset[str]]:
    """A label's ``at``: (the parts it can lie in, or None for anywhere; the parts within them it cannot)."""
    if at == ANYWHERE:
        return None, frozenset()
    plain = {key for key, loc in locs.items() if loc.area == key}
    if not isinstance(at, list) or set(at) - set(regions) - plain:
        raise ValueError(
            f"{MANIFEST}: label {name!r}: 'at' must be {ANYWHERE!r} or a list of regions and localizations"
        )
    inside = frozenset().union(*(regions[entry][0] if entry in regions else {entry} for entry in at))
    outside = frozenset().union(*(regions[entry][1] for entry in at if entry in regions))
    return inside, outside


def _load_labels(table: dict, locs: dict[str, _Loc], regions: dict) -> dict[str, _Label]:
    fields = {"kind", "en", "head", "side", "side_words", "implies", "needs_sides", "like", "at", "sides"}
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
        head = cast(str, entry.get("head", en))  # a string of the manifest
        if not _contains(_words(en), _words(head)):
            raise ValueError(f"{MANIFEST}: label {name!r}: head {head!r} is not words of {en!r}")
        if entry.get("side") not in (None, *SIDES) or set(entry.get("side_words", {})) - set(SIDES):
            raise ValueError(f"{MANIFEST}: label {name!r}: sides must be among {SIDES}")
        implies = set(entry.get("implies", ()))
        if implies - {n for n, loc in locs.items() if loc.area == n}:
            raise ValueError(f"{MANIFEST}: label {name!r}: 'implies' names unknown or sided {sorted(implies)}")
        if (kind == "finding") != ("at" in entry):
            raise ValueError(f"{MANIFEST}: label {name!r}: 'at' is required for a finding and only there")
        at, not_at = _load_at(name, entry.get("at", []), regions, locs)
        takes = entry.get("sides", "all" if at is None or at else "none")
        if takes not in TAKES_SIDES or (takes == "single" and not entry.get("side_words")):
            raise ValueError(
                f"{MANIFEST}: label {name!r}: sides must be one of {TAKES_SIDES}, 'single' only with side_words"
            )
        found = {loc.area for loc in locs.values() if any(_contains(_words(en), f) for f in loc.forms)}
        labels[name] = _Label(
            name=name,
            kind=kind,
            en=en,
            head=head,
            side=entry.get("side"),
            side_words=dict(entry.get("side_words", {})),
            areas=frozenset(implies | found),
            at=at,
            not_at=not_at,
            sides=takes,
            needs_sides=bool(entry.get("needs_sides", False)),
        )
    return labels


LOCS = _load_locs(_DATA["locs"])
LABELS = _load_labels(_DATA["labels"], LOCS, _load_regions(_DATA["regions"], LOCS))
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


def _place(loc: _Loc, side: str | None) -> str:
    words = cast(str, loc.place or loc.noun)  # a localization said as a place has one of them
    if side == "bilateral":
        return f"both {loc.plural}" if loc.article == "the" else f"{loc.plural} on both sides"
    following = side or words
    article = "an" if loc.article == "a" and following[0] in "aeiou" else loc.article
    return f"{article} {following}" if not side else f"{article} {side} {words}"


def _places(places: Iterable[tuple[_Loc, str | None]]) -> str:
    """ "in the A and the B, below the C": each preposition once."""
    by_prep: dict[str, list[str]] = {}
    for loc, side in places:
        by_prep.setdefault(loc.prep, []).append(_place(loc, side))
    return _and([f"{prep} {_and(phrases)}" for prep, phrases in by_prep.items()])


def _part(loc: _Loc, side: str | None) -> str:
    """How a normal statement names a part: "right lung base", "costophrenic angles", "right ribs"."""
    if side in (None, "bilateral"):
        return cast(str, loc.plural or loc.noun)  # a normal part has one of them
    return f"{side} {loc.plural if loc.article == 'a' else loc.noun}"


@dataclass(frozen=True)
class _Finding:
    text: str  # "" when none of its labels is said (side statements without sides)
    labels: tuple[str, ...]
    areas: frozenset[str]  # the parts it may lie in (implied or annotated, said or not)
    sides: frozenset[str]  # the sides annotated with it (empty: none)


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
    at = next(i for i in range(len(words)) if words[i : i + len(head)] == head)
    modifiers = ([label.side_words.get(side, side)] if side else []) + adjectives
    return " ".join(words[:at] + modifiers + words[at:])


def _fits(label: _Label, loc: _Loc) -> bool:
    """Whether the localization can say where the label lies (manifest ``at``), on the label's own side
    when it has one."""
    if label.side and loc.side not in (None, label.side):
        return False
    parts = loc.ancestors | {loc.area}
    return label.at is None or (bool(parts & label.at) and not parts & label.not_at)


def _owners(found: Sequence[_Label], locs: Sequence[_Loc]) -> list[_Label | None]:
    """The label of a finding run each localization belongs to, None when no label can take it: the last
    label implying it, else the last that can lie there (a part) or take a side (a side alone)."""
    owners = []
    for loc in locs:
        if loc.noun or loc.adjective:
            candidates = [label for label in found if loc.area in label.areas] or [
                label for label in found if _fits(label, loc)
            ]
        else:
            candidates = [label for label in found if label.sides != "none" and label.side in (None, loc.side)]
        owners.append(candidates[-1] if candidates else None)
    return owners


def _label_side(label: _Label, taken: list[str | None], alone: bool) -> str | None:
    """The side a finding says: its own, with those it took from its run as ``sides`` allows."""
    if label.sides in ("unsaid", "none"):
        return label.side
    side = _one_side([label.side, *taken])
    if label.sides == "single" and not (alone and side in label.side_words):
        return label.side
    return side


def _finding_text(found: list[_Label], said: list[_Label], locs: list[_Loc], sides: bool) -> str:
    """The said labels of a finding run with their localizations (module docstring: a finding run)."""
    taken: dict[str, list[str | None]] = {label.name: [] for label in found}
    parts: dict[str, list[_Loc]] = {label.name: [] for label in found}
    for loc, owner in zip(locs, _owners(found, locs)):
        if owner is None:
            continue
        if loc.area in owner.areas or not (loc.noun or loc.adjective):
            taken[owner.name].append(loc.side)  # implied, or a side alone: only its side is said
            continue
        parts[owner.name].append(loc)
        if loc.adjective:
            taken[owner.name].append(loc.side)  # "basal bilateral": the side is the label's
    phrases, places, sided = {}, {}, set()
    for label in said:
        own = _by_area(parts[label.name])
        here: dict[str, list[Any]] = {  # [loc, side], the side filled in below
            area: [loc, side if sides else None] for area, (loc, side) in own.items() if not loc.adjective
        }
        side = _label_side(label, taken[label.name], len(found) == 1) if sides else None
        before = None
        if side:
            target = next((entry for entry in here.values() if entry[0].sided and entry[1] is None), None)
            if target is not None:
                target[1] = side
            elif not {entry[1] for entry in here.values()} - {None}:
                before = side
            # else a place says the side already, or the other one: not said before the label
        adjectives = sorted((loc for loc, _ in own.values() if loc.adjective), key=lambda loc: _ORDER[loc.area])
        phrases[label.name] = _modified(label, before, [cast(str, loc.adjective) for loc in adjectives])
        places[label.name] = [tuple(entry) for entry in here.values()]
        if before:
            sided.add(label.name)
    texts: list[str] = []
    grouped: set[str] = set()
    for index, owner in enumerate(said):
        if not places[owner.name]:
            continue
        group = [
            label
            for label in said[:index]
            if label.name not in grouped | sided
            and not places[label.name]
            and label.at is not None
            and all(_fits(label, loc) for loc, _ in places[owner.name])
        ] + [owner]
        grouped.update(label.name for label in group)
        texts.append(f"{_and([phrases[label.name] for label in group])} {_places(places[owner.name])}")
    return _and(texts + [phrases[label.name] for label in said if label.name not in grouped])


def _normal_parts(locs: list[_Loc], sides: bool) -> tuple[_NormalPart, ...]:
    """The parts a normal run names, a side of the run on each sided part without one; without sides,
    only the parts that had no side."""
    parts: dict[str, list[Any]] = {area: [loc, side] for area, (loc, side) in _by_area(locs).items()}  # [loc, side]
    free = _one_side(loc.side for loc in locs if not (loc.noun and not loc.adjective))
    for entry in parts.values():
        if entry[0].sided and entry[1] is None:
            entry[1] = free
    return tuple(
        _NormalPart(text=_part(loc, side), area=loc.area, side=side)
        for loc, side in parts.values()
        if sides or side is None
    )


def _runs(items: tuple[str, ...]) -> list[tuple[list[_Label], list[_Loc], list[str]]]:
    """The sentence's runs: labels, their localizations and the kinds (finding, normal) of all the run's
    labels. A finding said in an earlier run of the sentence is not said again: a later run of nothing
    else adds its localizations to that run ("Bronchiectasis in the left upper lobe and the middle
    lobe."), a longer one drops it (its kind stays: the run still mixes it with normal)."""
    runs: list[tuple[list[_Label], list[_Loc], list[str]]] = []
    said: dict[str, int] = {}
    for names, loc_names in label_groups(items):
        labels = list(dict.fromkeys(_label(name) for name in names))
        locs = [_loc(name) for name in loc_names]
        kinds = [label.kind for label in labels if label.kind in ("finding", "normal")]
        repeated = [label for label in labels if label.name in said]
        if repeated and all(label in repeated or label.kind == "omit" for label in labels):
            runs[said[repeated[0].name]][1].extend(locs)
            continue
        labels = [label for label in labels if label not in repeated]
        said.update({label.name: len(runs) for label in labels if label.kind == "finding"})
        runs.append((labels, locs, kinds))
    return runs


@lru_cache(maxsize=1 << 16)
def _plan(items: tuple[str, ...], sides: bool) -> _Sentence:
    pieces: list[tuple[str, object]] = []
    findings: list[_Finding] = []
    for labels, all_locs, kinds in _runs(items):
        locs = _specific(all_locs)
        found = [label for label in labels if label.kind == "finding"]
        run: dict[str, tuple[str, object]] = {}  # the run's pieces by the kind of label they say
        if found:
            said = [label for label in found if sides or not label.needs_sides]
            mine = [] if kinds[-1] == "normal" else locs  # normal after the findings: whose are they?
            annotated = [label.side for label in found] + [loc.side for loc in all_locs]
            areas = frozenset().union(*(label.areas for label in found), (loc.area for loc in all_locs))
            finding = _Finding(
                text=_finding_text(found, said, mine, sides) if said else "",
                labels=tuple(label.name for label in said),
                areas=areas,
                sides=cast(
                    frozenset[str], frozenset({"right", "left"} if "bilateral" in annotated else annotated) - {None}
                ),
            )
            findings.append(finding)
            if said:
                run["finding"] = ("finding", finding)
        if "normal" in kinds:
            named = "finding" not in kinds and any(loc.noun or loc.adjective for loc in locs)
            run["normal"] = ("normal", _normal_parts(locs, sides)) if named else ("bare", None)
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


def _new_parts(parts: Sequence[_NormalPart], said: set[tuple[str, str | None]]) -> list[_NormalPart]:
    """The parts a sentence still says normal: not said before in the report (the same part, or the part
    without a side), each once, and a part with a side not beside the same part without one."""
    whole = {part.area for part in parts if part.side in (None, "bilateral")}
    new = []
    for part in parts:
        side = None if part.side in (None, "bilateral") else part.side
        if (part.area, side) in said or (part.area, None) in said or (side and part.area in whole):
            continue
        said.add((part.area, side))
        new.append(part)
    return new


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def render_report(by_sentence: Sequence[Sequence[str] | None], *, sides: bool = True) -> EnglishReport:
    """English sentences for a parsed ``LabelsLocalizationsBySentence`` (rules: module docstring).

    UnknownPhrase when a label or localization is not in the manifest; ValueError when a sentence starts
    with a localization."""
    plans = [None if items is None else _plan(tuple(items), sides) for items in by_sentence]
    findings = [finding for plan in plans if plan is not None for finding in plan.findings]
    sentences, sources, stated = [], [], []
    said_no_abnormality, said_normal = False, set[tuple[str, str | None]]()
    for index, plan in enumerate(plans):
        if plan is None:
            continue
        clauses: dict[str, list] = {}
        for kind, piece in plan.pieces:
            if kind == "finding":
                clauses.setdefault("finding", []).append(piece)
            elif kind == "normal":
                kept = [part for part in cast(tuple, piece) if not _covered(part, findings, sides)]
                clauses.setdefault("normal", []).extend(kept)
            elif kind == "bare" and not findings:
                clauses.setdefault("bare", [])
            elif kind == "study":
                clauses.setdefault("study", [])
        if "normal" in clauses:
            clauses["normal"] = _new_parts(clauses["normal"], said_normal)
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
                texts.append("normal " + _and([part.text for part in pieces]))
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
    return EnglishReport(
        text=" ".join(sentences), sentences=tuple(sentences), sources=tuple(sources), labels=tuple(stated)
    )


def label_head(name: str) -> str:
    """The words an English statement of a finding (or ``suboptimal study``) always contains, whatever
    side words and pre-modifiers it takes: "hemidiaphragm" for "hemidiaphragm elevation left side".
    UnknownPhrase for a label the manifest does not know, ValueError for one that is never said."""
    label = _label(name)
    if label.kind not in ("finding", "study"):
        raise ValueError(f"PadChest label {name!r} is not said as a finding")
    return label.head


def stated_findings(labels: Iterable[str], *, sides: bool = True) -> frozenset[str]:
    """The labels among ``labels`` (a study's ``Labels``) that its English statements must state: the
    findings (devices included), without the side statements when ``sides`` is False. UnknownPhrase
    for a label the manifest does not know."""
    return frozenset(
        name for name in labels if _label(name).kind == "finding" and (sides or not _label(name).needs_sides)
    )
