"""Label harmonisation: raw source labels -> the 14 CheXpert observations.

Every map and policy lives in ``manifests/labels.yaml`` (its header comment is the full rule book):
exact-string maps per raw-label system, the "absent means 0" policy, multi-reader aggregation, which
system wins when several label one image, and the No Finding rule. Presence is 1 / 0 / -1 / None;
None (not annotated) is never turned into 0 unless the system's policy says the source is complete.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Literal

import manifests
from schemas.records import Box, Finding, RawLabel
from transforms.labeler import NO_FINDING, label_report  # noqa: F401 (label_report: the labeler, by its usual name)

LABELS_MANIFEST = "labels.yaml"
Vote = Literal[1, 0, -1]
"""A stated presence: present, absent, uncertain (None, not annotated, is no vote)."""
_STRENGTH: dict[Vote, int] = {0: 0, -1: 1, 1: 2}
"""CheXpert's aggregation of several mentions of one category: 1 beats -1 beats 0."""
_RAW_VALUES: dict[float, Vote] = {1.0: 1, 0.0: 0, -1.0: -1}


@dataclass(frozen=True)
class SystemRules:
    """The manifest entry of one raw-label system, parsed and checked."""

    name: str
    targets: Mapping[str, tuple[tuple[str, int], ...]]  # raw name -> ((taxonomy name, implied presence), ...)
    not_mapped: Mapping[str, str]  # raw name -> why it stays out of the taxonomy
    no_information: frozenset[str]
    absent: Literal["none", "zero"]
    readers: Literal["single", "majority"]
    consensus_reader: str | None
    no_finding: Literal["stated", "exclusive"]

    @property
    def covered(self) -> frozenset[str]:
        """Categories this system can state as positive; with ``absent: zero`` the others stay None."""
        return frozenset(target for pairs in self.targets.values() for target, implied in pairs if implied == 1)


@dataclass(frozen=True)
class LabelRules:
    """The whole of ``manifests/labels.yaml``, parsed and checked."""

    taxonomy: tuple[str, ...]
    exempt_from_no_finding: frozenset[str]
    preference: Mapping[str, tuple[str, ...]]  # group -> systems, preferred first
    non_finding_systems: frozenset[str]
    systems: Mapping[str, SystemRules]


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> Any:
    if value not in allowed:
        raise ValueError(f"{where}: {value!r} is not one of {list(allowed)}")
    return value


def _map_entry(raw_name: str, entry: Any, taxonomy: Sequence[str], where: str) -> tuple[tuple[str, int], ...]:
    """``Target`` | ``[Target, ...]`` | ``{Target: 1 | -1}`` as ((target, implied presence), ...)."""
    if isinstance(entry, str):
        pairs = [(entry, 1)]
    elif isinstance(entry, list):
        pairs = [(target, 1) for target in entry]
    elif isinstance(entry, dict):
        pairs = list(entry.items())
    else:
        raise ValueError(f"{where}: {raw_name!r} maps to {entry!r}; expected a name, a list or a mapping")
    if not pairs:
        raise ValueError(f"{where}: {raw_name!r} maps to nothing")
    for target, implied in pairs:
        if target not in taxonomy:
            raise ValueError(f"{where}: {raw_name!r} maps to {target!r}, which is not a taxonomy name")
        if implied not in (1, -1) or isinstance(implied, bool):
            raise ValueError(f"{where}: {raw_name!r} -> {target!r} has implied presence {implied!r}; expected 1 or -1")
    return tuple(pairs)


def _reasons(entry: Any, where: str) -> dict[str, str]:
    """``not_mapped``: raw name -> the reason it is left out; every reason a non-empty string."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping of raw name -> reason, got {type(entry).__name__}")
    if missing := sorted(
        str(name) for name, reason in entry.items() if not isinstance(reason, str) or not reason.strip()
    ):
        raise ValueError(f"{where}: no reason given for {missing}")
    return {str(name): reason for name, reason in entry.items()}


def _system_rules(name: str, entry: Mapping[str, Any], taxonomy: Sequence[str]) -> SystemRules:
    where = f"{LABELS_MANIFEST} systems.{name}"
    known = {"identity", "map", "not_mapped", "no_information", "absent", "readers", "consensus_reader", "no_finding"}
    if extra := set(entry) - known:
        raise ValueError(f"{where}: unknown keys {sorted(extra)}")
    targets: dict[str, tuple[tuple[str, int], ...]] = {}
    if entry.get("identity", False):
        targets.update({observation: ((observation, 1),) for observation in taxonomy})
    for raw_name, target in (entry.get("map") or {}).items():
        targets[str(raw_name)] = _map_entry(str(raw_name), target, taxonomy, where)
    not_mapped = _reasons(entry.get("not_mapped") or {}, f"{where}.not_mapped")
    if both := set(not_mapped) & set(targets):
        raise ValueError(f"{where}: {sorted(both)} are both mapped and listed as not mapped")
    readers = _choice(entry.get("readers"), ("single", "majority"), f"{where}.readers")
    consensus = entry.get("consensus_reader")
    if consensus is not None and readers != "majority":
        raise ValueError(f"{where}: consensus_reader needs readers: majority")
    return SystemRules(
        name=name,
        targets=targets,
        not_mapped=not_mapped,
        no_information=frozenset(entry.get("no_information") or ()),
        absent=_choice(entry.get("absent"), ("none", "zero"), f"{where}.absent"),
        readers=readers,
        consensus_reader=consensus,
        no_finding=_choice(entry.get("no_finding"), ("stated", "exclusive"), f"{where}.no_finding"),
    )


def parse_label_rules(document: Mapping[str, Any]) -> LabelRules:
    """Check and parse the labels manifest; ValueError naming the offending entry."""
    taxonomy = tuple(document["taxonomy"])
    if len(set(taxonomy)) != len(taxonomy) or NO_FINDING not in taxonomy:
        raise ValueError(f"{LABELS_MANIFEST}: taxonomy must list distinct names including {NO_FINDING!r}")
    systems = {name: _system_rules(name, entry, taxonomy) for name, entry in document["systems"].items()}
    preference = {group: tuple(members) for group, members in document["preference"].items()}
    grouped = [system for members in preference.values() for system in members]
    if unknown := set(grouped) - set(systems):
        raise ValueError(f"{LABELS_MANIFEST} preference: unknown systems {sorted(unknown)}")
    if len(set(grouped)) != len(grouped):
        raise ValueError(f"{LABELS_MANIFEST} preference: a system is listed in more than one place")
    exempt = frozenset(document.get("exempt_from_no_finding") or ())
    if not exempt <= set(taxonomy):
        raise ValueError(f"{LABELS_MANIFEST} exempt_from_no_finding: {sorted(exempt - set(taxonomy))} not in taxonomy")
    return LabelRules(
        taxonomy=taxonomy,
        exempt_from_no_finding=exempt,
        preference=preference,
        non_finding_systems=frozenset(document.get("non_finding_systems") or ()),
        systems=systems,
    )


@lru_cache(maxsize=1)
def label_rules() -> LabelRules:
    """The parsed ``manifests/labels.yaml`` (cached)."""
    return parse_label_rules(manifests.load(LABELS_MANIFEST))


TAXONOMY: tuple[str, ...] = label_rules().taxonomy


def _presence(label: RawLabel) -> Vote | None:
    if label.value is None:
        return None
    if label.value not in _RAW_VALUES:
        raise ValueError(
            f"raw label {label.system}:{label.name!r} has value {label.value!r}; expected 1, 0, -1 or blank"
        )
    return _RAW_VALUES[label.value]


def _raw_text(label: RawLabel) -> str:
    text = f"{label.system}:{label.name}={_presence(label)}"
    return f"{text}@{label.reader}" if label.reader else text


def _implied(raw: Vote, implied: int) -> Vote | None:
    """A raw value passed through a map entry: an implied -1 turns 1/-1 into -1; its raw 0 says nothing."""
    if implied == 1:
        return raw
    return None if raw == 0 else -1


def _strongest(values: Iterable[Vote]) -> Vote:
    return max(values, key=_STRENGTH.__getitem__)


def _majority(values: Sequence[Vote]) -> Vote:
    """The value given by more than half of the readers; -1 (uncertain) for a split vote."""
    value, count = Counter(values).most_common(1)[0]
    return value if 2 * count > len(values) else -1


def _reader_opinion(rules: SystemRules, labels: Sequence[RawLabel]) -> tuple[dict[str, Vote], dict[str, list[str]]]:
    """One reader's value per category, and the raw labels behind each value."""
    values: dict[str, Vote] = {}
    sources: dict[str, list[str]] = defaultdict(list)
    for label in labels:
        raw = _presence(label)
        if raw is None:
            continue
        for target, implied in rules.targets.get(label.name, ()):
            value = _implied(raw, implied)
            if value is not None:
                values[target] = value if target not in values else _strongest((values[target], value))
                sources[target].append(_raw_text(label))
    labelled = any(_presence(label) is not None and label.name not in rules.no_information for label in labels)
    if rules.absent == "zero" and labelled:
        for target in rules.covered:
            values.setdefault(target, 0)
    return values, sources


def _system_opinion(
    rules: SystemRules, labels: Sequence[RawLabel], exempt: frozenset[str]
) -> dict[str, tuple[Vote, list[str]]]:
    """Category -> (value, raw labels) for one system, readers aggregated per the manifest."""
    by_reader: dict[str | None, list[RawLabel]] = defaultdict(list)
    for label in labels:
        by_reader[label.reader if rules.readers == "majority" else None].append(label)
    if rules.consensus_reader is not None and rules.consensus_reader in by_reader:
        by_reader = {rules.consensus_reader: by_reader[rules.consensus_reader]}
    opinions = [_reader_opinion(rules, reader_labels) for reader_labels in by_reader.values()]
    result: dict[str, tuple[Vote, list[str]]] = {}
    for target in {target for values, _ in opinions for target in values}:
        votes = [values[target] for values, _ in opinions if target in values]
        raw = sorted(text for _, sources in opinions for text in sources.get(target, ()))
        result[target] = (_majority(votes), raw)
    if (
        rules.no_finding == "exclusive"
        and result.get(NO_FINDING, (None,))[0] == 1
        and any(value in (1, -1) for target, (value, _) in result.items() if target not in exempt | {NO_FINDING})
    ):
        result[NO_FINDING] = (0, result[NO_FINDING][1])
    return result


def _preference(rules: LabelRules, system_priority: Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    if system_priority is None:
        return dict(rules.preference)
    if unknown := [system for system in system_priority if system not in rules.systems]:
        raise ValueError(f"system_priority: unknown systems {unknown}; known: {sorted(rules.systems)}")
    return {
        group: tuple(system for system in system_priority if system in members)
        for group, members in rules.preference.items()
    }


def _used_systems(labelled: Iterable[str], rules: LabelRules, system_priority: Sequence[str] | None) -> list[str]:
    """Systems whose labels are used: per preference group the first one present, plus ungrouped ones."""
    labelled = set(labelled)
    groups = _preference(rules, system_priority)
    used = [next(s for s in members if s in labelled) for members in groups.values() if labelled & set(members)]
    grouped = {system for members in rules.preference.values() for system in members}
    return used + sorted(labelled - grouped)


def harmonize(raw_labels: Sequence[RawLabel], system_priority: Sequence[str] | None = None) -> list[Finding]:
    """The 14 CheXpert observations, in taxonomy order, from one image's raw labels.

    ``system_priority`` replaces the manifest's preference order inside each preference group (e.g.
    ``["mimic-negbio"]`` uses NegBio only); group members it leaves out are not used. Raw labels of
    unknown systems and unmapped names are ignored here (see :func:`unmapped`). ValueError on a raw
    value other than 1, 0, -1 or blank.
    """
    rules = label_rules()
    by_system: dict[str, list[RawLabel]] = defaultdict(list)
    for label in raw_labels:
        _presence(label)  # ValueError on a bad value, whichever system the label belongs to
        if label.system in rules.systems:
            by_system[label.system].append(label)
    labelled = [system for system, labels in by_system.items() if any(label.value is not None for label in labels)]
    combined: dict[str, list[tuple[str, Vote, list[str]]]] = defaultdict(list)
    for system in _used_systems(labelled, rules, system_priority):
        opinion = _system_opinion(rules.systems[system], by_system[system], rules.exempt_from_no_finding)
        for target, (value, raw) in opinion.items():
            combined[target].append((system, value, raw))
    return [
        Finding(
            name=name,
            presence=_strongest(value for _, value, _ in combined[name]) if combined[name] else None,
            systems=[system for system, _, _ in combined[name]],
            raw=[text for _, _, raw in combined[name] for text in raw],
        )
        for name in rules.taxonomy
    ]


def unmapped(raw_labels: Iterable[RawLabel]) -> list[RawLabel]:
    """Raw labels that no map entry covers (unknown system, or a name the system does not map),
    in input order; localisation-style systems (``non_finding_systems``) are left out."""
    rules = label_rules()
    return [
        label
        for label in raw_labels
        if label.system not in rules.non_finding_systems
        and (label.system not in rules.systems or label.name not in rules.systems[label.system].targets)
    ]


def unknown_labels(raw_labels: Iterable[RawLabel]) -> list[RawLabel]:
    """The :func:`unmapped` labels that the manifest does not list either (not a documented
    ``not_mapped`` or ``no_information`` name): new strings, typos, unknown systems."""
    rules = label_rules()
    return [
        label
        for label in unmapped(raw_labels)
        if label.system not in rules.systems
        or label.name not in set(rules.systems[label.system].not_mapped) | rules.systems[label.system].no_information
    ]


def finding_for_box(origin: str, label: str) -> str | None:
    """The CheXpert-14 name a box stands for, reading ``origin`` as the raw-label system (e.g.
    ``vindr-annotations``): set when the label maps to exactly one category as a positive, None for
    unmapped labels, uncertain or multi-category maps, and unknown origins (anatomical regions)."""
    rules = label_rules().systems.get(origin)
    pairs = rules.targets.get(label, ()) if rules is not None else ()
    return pairs[0][0] if len(pairs) == 1 and pairs[0][1] == 1 else None


def box_labels(boxes: Iterable[Box]) -> list[RawLabel]:
    """One positive raw label per distinct (origin, reader, box label), so that box annotations
    (e.g. VinDr ``vindr-annotations`` / ``vindr-kaggle``) can be harmonised; sorted."""
    keys = sorted({(box.origin, box.reader or "", box.label) for box in boxes})
    return [RawLabel(system=origin, name=label, value=1.0, reader=reader or None) for origin, reader, label in keys]


@dataclass(frozen=True)
class Region:
    """One anatomical region or organ name of an annotation source (``anatomy`` in the manifest)."""

    name: str
    structure: str  # lung, heart, mediastinum, bone, ...
    laterality: Literal["left", "right"] | None  # the patient's side
    zones: tuple[str, ...]  # zones of manifests/attributes.yaml the region covers; () = all of it


def _region(system: str, name: str, entry: Mapping[str, Any], zones: frozenset[str]) -> Region:
    where = f"{LABELS_MANIFEST} anatomy.{system}.{name}"
    if extra := set(entry) - {"structure", "laterality", "zones"}:
        raise ValueError(f"{where}: unknown keys {sorted(extra)}")
    if entry.get("laterality") not in ("left", "right", None):
        raise ValueError(f"{where}: laterality {entry.get('laterality')!r} is not left, right or absent")
    if unknown := set(entry.get("zones") or ()) - zones:
        raise ValueError(f"{where}: zones {sorted(unknown)} are not in attributes.yaml zone_order")
    return Region(
        name=name,
        structure=entry["structure"],
        laterality=entry.get("laterality"),
        zones=tuple(entry.get("zones") or ()),
    )


@cache
def anatomy(system: str) -> Mapping[str, Region]:
    """Region name -> :class:`Region` for ``imagenome-regions`` or ``chexmask-organs``; KeyError names
    the known systems."""
    document = manifests.load(LABELS_MANIFEST)["anatomy"]
    if system not in document:
        raise KeyError(f"no anatomy system {system!r}; known: {sorted(document)}")
    zones = frozenset(manifests.load("attributes.yaml")["zone_order"])
    return {str(name): _region(system, str(name), entry, zones) for name, entry in document[system].items()}
