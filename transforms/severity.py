"""Report severity scores (parameters in manifests/severity.yaml).

``severity_ordinal``: weighted mean of the ordinal severity of the findings present, in [0, 1], with a
bucket (none / mild / moderate / severe). ``triage_bucket``: the bucket of the most severe finding
present (what triage answers; a mean would call a large pneumothorax beside small findings moderate).
Both read attribute mentions, so negation and uncertainty count.

``severity_tfidf``: MediVLM's score exactly as the paper defines it: the TF-IDF sum of the severity
terms (manifest ``medivlm``) in a report's text, min-max normalised. It reads words, not mentions, so
"no pneumothorax" counts pneumothorax. Its table (IDF per term, min and max raw score) is fitted once
on the training split and frozen: :func:`new_accumulator`, :func:`add_document`,
:func:`merge_accumulators` and :func:`fit_table` are the pure steps a combine runs
(pipelines/beam/severity_fit.py), so shards need no global pass and validation / test never influence it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import manifests
from schemas.records import AttributeMention

_SEVERITY = manifests.load("severity.yaml")
VERSION: str = _SEVERITY["version"]
_ORDINAL = _SEVERITY["ordinal"]
_MEDIVLM = _SEVERITY["medivlm"]
_TRIAGE = _SEVERITY["triage"]
DEFAULT_WEIGHTS: Mapping[str, float] = _ORDINAL["weights"]
_MAX_ORDINAL = 3
_TOKEN = re.compile(_MEDIVLM["token_pattern"])


def _term_list(groups: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The manifest's terms, sorted; ValueError for a repeated term or one that is not a single token."""
    words = [word for group in groups.values() for word in group]
    if repeated := sorted(word for word, count in Counter(words).items() if count > 1):
        raise ValueError(f"severity terms listed twice: {repeated}")
    if odd := sorted(word for word in words if _TOKEN.findall(word.lower()) != [word]):
        raise ValueError(f"severity terms that are not one lower-case token: {odd}")
    return tuple(sorted(words))


TERMS: tuple[str, ...] = _term_list(_MEDIVLM["terms"])
_TERM_SET = frozenset(TERMS)

Signature = tuple[tuple[str, int], ...]
"""A document's term counts, sorted by term: all that TF-IDF needs to know of it."""


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
    levels = {
        finding: level for finding, level in _finding_levels(mentions).items() if DEFAULT_WEIGHTS.get(finding, 0) > 0
    }
    definite = [ordinal for factor, ordinal in levels.values() if factor == 1.0]
    uncertain = [min(ordinal, _TRIAGE["uncertain_cap"]) for factor, ordinal in levels.values() if factor < 1.0]
    level = max(definite) if definite else max(uncertain, default=None)
    return "none" if level is None else _TRIAGE["buckets"][level]


def severity_terms(text: str) -> list[str]:
    """Every occurrence of a severity term in ``text``, in order (lower-cased, manifest token pattern)."""
    return [token for token in _TOKEN.findall(text.lower()) if token in _TERM_SET]


def _signature(terms: Iterable[str]) -> Signature:
    counts = Counter(terms)
    if unknown := sorted(set(counts) - _TERM_SET):
        raise ValueError(f"{unknown} are not severity terms (manifests/severity.yaml medivlm)")
    return tuple(sorted(counts.items()))


def _raw_score(signature: Signature, idf: Mapping[str, float]) -> float:
    return sum(((1.0 + math.log(count)) * idf[term] for term, count in signature), 0.0)


def new_accumulator() -> Counter:
    """An empty fit: the number of documents per distinct term signature, which is all that document
    frequencies and the min / max raw score need."""
    return Counter()


def add_document(accumulator: Counter, terms: Sequence[str]) -> Counter:
    """Counts one training document, given as its ``severity_terms``, in ``accumulator`` (updated in place
    and returned, as a combine's accumulator is). ValueError for a word that is not a term."""
    accumulator[_signature(terms)] += 1
    return accumulator


def merge_accumulators(accumulators: Iterable[Counter]) -> Counter:
    """One accumulator counting every document of ``accumulators`` (which are left unchanged)."""
    merged: Counter = Counter()
    for accumulator in accumulators:
        merged.update(accumulator)
    return merged


def fit_table(accumulator: Counter) -> dict:
    """The frozen table (plain, JSON-ready): version, n_documents, idf per term (every term, seen or not,
    as scikit-learn's smoothed IDF over a fixed vocabulary), min and max raw score over the documents
    (0.0 both when there are none)."""
    documents = sum(accumulator.values())
    frequency: Counter = Counter()
    for signature, count in accumulator.items():
        for term, _ in signature:
            frequency[term] += count
    idf = {term: math.log((1 + documents) / (1 + frequency[term])) + 1.0 for term in TERMS}
    scores = [_raw_score(signature, idf) for signature in accumulator] or [0.0]
    return {"version": VERSION, "n_documents": documents, "idf": idf, "min": min(scores), "max": max(scores)}


def severity_tfidf(text: str, table: Mapping) -> float:
    """MediVLM's severity of ``text``: its raw TF-IDF sum min-max normalised with the fitted ``table`` and
    clipped to [0, 1] (0.0 when the fitted min equals the max). ValueError for a table of another version."""
    if table.get("version") != VERSION:
        raise ValueError(f"severity IDF table version {table.get('version')!r} is not {VERSION!r}; refit it")
    raw = _raw_score(_signature(severity_terms(text)), table["idf"])
    low, high = table["min"], table["max"]
    if high <= low:
        return 0.0
    return min(max((raw - low) / (high - low), 0.0), 1.0)
