"""Report severity scores from attribute mentions (parameters in manifests/severity.yaml).

``severity_ordinal``: weighted mean of the ordinal severity of the findings present, in [0, 1], with a
bucket (none / mild / moderate / severe). ``triage_bucket``: the bucket of the most severe finding
present (what triage answers; a mean would call a large pneumothorax beside small findings moderate). ``severity_tfidf``: MediVLM's TF-IDF sum over
seed terms, but counting only affirmed mentions; its IDF table and min / max are fitted once on the
training split by the Beam CombineFn :class:`FitSeverityIdf` and frozen, so shards need no global pass
and validation / test never influence it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import apache_beam as beam

import manifests
from schemas.records import AttributeMention
from transforms.phrases import extract_mentions

_SEVERITY = manifests.load("severity.yaml")
VERSION: str = _SEVERITY["version"]
_ORDINAL = _SEVERITY["ordinal"]
_TFIDF = _SEVERITY["tfidf"]
_TRIAGE = _SEVERITY["triage"]
DEFAULT_WEIGHTS: Mapping[str, float] = _ORDINAL["weights"]
_MAX_ORDINAL = 3
_ORDINAL_TERMS = {int(ordinal): term for ordinal, term in _TFIDF["ordinal_terms"].items()}
SEED_TERMS: tuple[str, ...] = tuple(sorted(
    {*_TFIDF["finding_terms"].values(), *_ORDINAL_TERMS.values(), *_TFIDF["temporal_terms"].values()}))

Signature = tuple[tuple[str, int], ...]
"""A document's seed-term counts, sorted by term: what TF-IDF needs to know of it."""


def _finding_levels(mentions: Iterable[AttributeMention]) -> dict[str, tuple[float, int]]:
    """Finding -> (presence factor, largest stated ordinal or the unstated default) over present mentions."""
    factors: dict[str, float] = {}
    stated: dict[str, int] = {}
    for mention in mentions:
        if mention.presence not in (1, -1):
            continue
        factor = 1.0 if mention.presence == 1 else _ORDINAL["uncertain_factor"]
        factors[mention.finding] = max(factor, factors.get(mention.finding, 0.0))
        if mention.severity is not None:
            stated[mention.finding] = max(mention.severity[1], stated.get(mention.finding, 0))
    return {finding: (factor, stated.get(finding, _ORDINAL["unstated_ordinal"])) for finding, factor in factors.items()}


def severity_ordinal(mentions: Iterable[AttributeMention], weights: Mapping[str, float] | None = None) -> float:
    """sum(weight * factor * ordinal) / sum(weight * factor * 3) over the findings present; 0.0 when none
    (or only zero-weight ones) is present. ``weights`` default to manifests/severity.yaml; ValueError
    for a present finding without a weight."""
    weights = DEFAULT_WEIGHTS if weights is None else weights
    levels = _finding_levels(mentions)
    if missing := sorted(set(levels) - set(weights)):
        raise ValueError(f"no severity weight for {missing}; weights cover {sorted(weights)}")
    total = sum(weights[finding] * factor * _MAX_ORDINAL for finding, (factor, _) in levels.items())
    if total == 0:
        return 0.0
    return sum(weights[finding] * factor * ordinal for finding, (factor, ordinal) in levels.items()) / total


def severity_bucket(score: float) -> str:
    """The manifest bucket of an ordinal score (none / mild / moderate / severe)."""
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"severity score {score!r} is outside [0, 1]")
    return next(bucket["name"] for bucket in _ORDINAL["buckets"] if score <= bucket["upper"])


def triage_bucket(mentions: Iterable[AttributeMention]) -> str:
    """none / mild / moderate / severe: the largest ordinal of a finding present (presence 1, weight > 0),
    or of an uncertain one capped at ``uncertain_cap`` when no finding is present (manifest ``triage``)."""
    levels = {finding: level for finding, level in _finding_levels(mentions).items()
              if DEFAULT_WEIGHTS.get(finding, 0) > 0}
    definite = [ordinal for factor, ordinal in levels.values() if factor == 1.0]
    uncertain = [min(ordinal, _TRIAGE["uncertain_cap"]) for factor, ordinal in levels.values() if factor < 1.0]
    level = max(definite) if definite else max(uncertain, default=None)
    return "none" if level is None else _TRIAGE["buckets"][level]


def _as_mentions(text_or_mentions: str | Iterable[AttributeMention]) -> list[AttributeMention]:
    return extract_mentions(text_or_mentions) if isinstance(text_or_mentions, str) else list(text_or_mentions)


def severity_terms(text_or_mentions: str | Iterable[AttributeMention]) -> list[str]:
    """The seed terms of a report's affirmed (presence 1) mentions: finding term, its stated ordinal as
    a word, its temporal cue when it is one of the seed cues. Findings without a term give none."""
    terms = []
    for mention in _as_mentions(text_or_mentions):
        if mention.presence != 1 or mention.finding not in _TFIDF["finding_terms"]:
            continue
        terms.append(_TFIDF["finding_terms"][mention.finding])
        if mention.severity is not None:
            terms.append(_ORDINAL_TERMS[mention.severity[1]])
        if mention.temporal in _TFIDF["temporal_terms"]:
            terms.append(_TFIDF["temporal_terms"][mention.temporal])
    return terms


def _signature(terms: Iterable[str]) -> Signature:
    counts = Counter(terms)
    if unknown := sorted(set(counts) - set(SEED_TERMS)):
        raise ValueError(f"{unknown} are not severity seed terms; known: {list(SEED_TERMS)}")
    return tuple(sorted(counts.items()))


def _idf(document_frequency: int, documents: int) -> float:
    return math.log((1 + documents) / (1 + document_frequency)) + 1.0


def _raw_score(signature: Signature, idf: Mapping[str, float]) -> float:
    return sum(((1.0 + math.log(count)) * idf[term] for term, count in signature), 0.0)


class FitSeverityIdf(beam.CombineFn):
    """Fits the TF-IDF table on a collection of ``severity_terms`` lists (one per training report).

    The accumulator counts documents per distinct term signature, which is all that document
    frequencies and the min / max raw score need, and stays small (a few seed terms, small counts).
    The output is a plain dict (a frozen artifact): version, n_documents, idf per seed term, min, max.
    """

    def create_accumulator(self) -> Counter:
        return Counter()

    def add_input(self, accumulator: Counter, terms: Sequence[str]) -> Counter:
        accumulator[_signature(terms)] += 1
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Counter]) -> Counter:
        merged: Counter = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator: Counter) -> dict:
        documents = sum(accumulator.values())
        frequency = Counter()
        for signature, count in accumulator.items():
            for term, _ in signature:
                frequency[term] += count
        idf = {term: _idf(frequency[term], documents) for term in SEED_TERMS}
        scores = [_raw_score(signature, idf) for signature in accumulator] or [0.0]
        return {"version": VERSION, "n_documents": documents, "idf": idf, "min": min(scores), "max": max(scores)}


def severity_tfidf(text_or_mentions: str | Iterable[AttributeMention], idf_table: Mapping) -> float:
    """The report's TF-IDF severity, min-max normalised with the fitted table and clipped to [0, 1]
    (0.0 when the fitted min equals the max). ValueError for a table of another version."""
    if idf_table.get("version") != VERSION:
        raise ValueError(f"IDF table version {idf_table.get('version')!r} is not {VERSION!r}; refit it")
    raw = _raw_score(_signature(severity_terms(text_or_mentions)), idf_table["idf"])
    low, high = idf_table["min"], idf_table["max"]
    if high <= low:
        return 0.0
    return min(max((raw - low) / (high - low), 0.0), 1.0)
