"""Severity scores (transforms.severity): the ordinal score and its buckets; MediVLM's TF-IDF score,
recomputed independently on a small corpus, its pure fit and the FitSeverityIdf CombineFn
(pipelines/beam/severity_fit.py) inside a small FnApiRunner pipeline."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.beam.severity_fit import FitSeverityIdf
from schemas.records import AttributeMention
from transforms import output_rows
from transforms.phrases import extract_mentions
from transforms.severity import (
    TERMS,
    VERSION,
    _term_list,
    add_document,
    fit_table,
    merge_accumulators,
    new_accumulator,
    severity_bucket,
    severity_ordinal,
    severity_terms,
    severity_tfidf,
)
from transforms.tasks.severity_report import severity_document

# Written for this test in the style of chest radiograph findings / impressions. Every training report
# has a term (the fitted min is above 0, so a test report with none clips up to 0).
TRAIN = [
    "No acute cardiopulmonary process.",
    "Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Large right pneumothorax with mediastinal shift, concerning for tension pneumothorax.",
    "Moderate pulmonary edema, worsened since the prior study. Bilateral pleural effusions.",
    "Right lower lobe consolidation, concerning for pneumonia.",
    "Mild cardiomegaly. No focal consolidation.",
    "Stable 8 mm nodule in the left upper lobe.",
]
TEST = [
    "Massive right pleural effusion with complete collapse of the right lung. Severe, critical, worsening "
    "pulmonary edema; tension pneumothorax on the left.",
    "Heart size is normal. Lungs are clear.",
    "No pneumothorax. No pleural effusion.",
    "Pneumothorax. Pleural effusion.",
]


def mention(finding: str, presence: int, severity: tuple[int, int] | None = None) -> AttributeMention:
    return AttributeMention(finding=finding, presence=presence, severity=severity, sentence="s.", span=(0, 2))


def fit(reports) -> dict:
    accumulator = new_accumulator()
    for report in reports:
        accumulator = add_document(accumulator, severity_terms(report))
    return fit_table(accumulator)


def reference_scores(train: list[str], documents: list[str]) -> tuple[list[float], list[float]]:
    """MediVLM's definition written out directly (not with transforms.severity): scikit-learn's default
    tokens, TfidfVectorizer(vocabulary=TERMS, sublinear_tf=True, smooth_idf=True, norm=None) summed per
    document, min-max over ``train``. Returns (raw, normalised and clipped) per document."""

    def counts(text: str) -> Counter:
        return Counter(token for token in re.findall(r"\b\w\w+\b", text.lower()) if token in TERMS)

    train_counts = [counts(text) for text in train]
    idf = {term: math.log((1 + len(train)) / (1 + sum(term in c for c in train_counts))) + 1 for term in TERMS}

    def raw(c: Counter) -> float:
        return sum((1 + math.log(n)) * idf[term] for term, n in c.items())

    low, high = min(map(raw, train_counts)), max(map(raw, train_counts))
    raws = [raw(counts(text)) for text in documents]
    return raws, [min(max((r - low) / (high - low), 0.0), 1.0) for r in raws]


# ---------------------------------------------------------------- ordinal score


def test_ordinal_one_finding_is_its_ordinal_over_three():
    assert severity_ordinal(extract_mentions("Mild cardiomegaly.")) == pytest.approx(1 / 3)
    assert severity_ordinal(extract_mentions("Large right pneumothorax.")) == 1.0
    assert severity_ordinal(extract_mentions("Trace left effusion.")) == 0.0


def test_ordinal_uses_the_largest_stated_ordinal_and_one_when_none_is_stated():
    mentions = [mention("Edema", 1, (1, 1)), mention("Edema", 1, (1, 2))]
    assert severity_ordinal(mentions) == pytest.approx(2 / 3)
    assert severity_ordinal([mention("Edema", 1)]) == pytest.approx(1 / 3)


def test_ordinal_weights_findings_and_halves_uncertain_ones():
    weights = {"Pneumothorax": 3, "Cardiomegaly": 1}
    mentions = [mention("Pneumothorax", 1, (3, 3)), mention("Cardiomegaly", 1, (1, 1))]
    assert severity_ordinal(mentions, weights) == pytest.approx((3 * 3 + 1 * 1) / (3 * 3 + 1 * 3))
    uncertain = [mention("Pneumothorax", -1, (3, 3)), mention("Cardiomegaly", 1, (1, 1))]
    assert severity_ordinal(uncertain, weights) == pytest.approx((1.5 * 3 + 1) / (1.5 * 3 + 3))


def test_ordinal_ignores_negated_and_zero_weight_findings():
    assert severity_ordinal(extract_mentions("No pneumothorax. Heart size normal.")) == 0.0
    assert severity_ordinal(extract_mentions("Right IJ catheter in the SVC.")) == 0.0
    assert severity_ordinal([]) == 0.0


def test_ordinal_needs_a_weight_for_every_present_finding():
    with pytest.raises(ValueError, match=r"no severity weight for \['Edema'\]"):
        severity_ordinal([mention("Edema", 1)], {"Pneumothorax": 1})


@pytest.mark.parametrize(
    "score, bucket",
    [
        (0.0, "none"),
        (0.01, "mild"),
        (1 / 3, "mild"),
        (0.5, "moderate"),
        (2 / 3, "moderate"),
        (0.9, "severe"),
        (1.0, "severe"),
    ],
)
def test_buckets(score, bucket):
    assert severity_bucket(score) == bucket


def test_bucket_rejects_scores_outside_the_unit_interval():
    with pytest.raises(ValueError, match="outside"):
        severity_bucket(1.2)


# ---------------------------------------------------------------- MediVLM TF-IDF


def test_the_term_list_holds_the_papers_examples_and_red_flags_as_single_words():
    for word in (
        "severe",
        "critical",
        "unstable",
        "emergency",
        "shock",
        "acute",
        "worsening",
        "marked",
        "extensive",
        "large",
        "massive",
        "pneumothorax",
        "tension",
        "edema",
        "consolidation",
        "cardiomegaly",
        "effusion",
        "mass",
        "nodule",
        "opacity",
        "fracture",
        "collapse",
    ):
        assert word in TERMS
    assert not {"mild", "small", "trace", "normal", "clear"} & set(TERMS)
    with pytest.raises(ValueError, match="listed twice"):
        _term_list({"severity": ["severe"], "negative": ["severe"]})
    with pytest.raises(ValueError, match="not one lower-case token"):
        _term_list({"red_flags": ["pleural effusion", "Edema"]})


def test_terms_are_every_occurrence_of_a_term_word():
    assert severity_terms("Large right PNEUMOTHORAX; no left pneumothorax.") == [
        "large",
        "pneumothorax",
        "pneumothorax",
    ]
    assert severity_terms("Tension-pneumothorax, edema/effusion.") == ["tension", "pneumothorax", "edema", "effusion"]
    assert severity_terms("Heart size is normal. Lungs are clear.") == []
    assert severity_terms("") == []


def test_the_score_matches_an_independent_computation_with_a_train_only_fit():
    table = fit(TRAIN)
    raws, expected = reference_scores(TRAIN, TRAIN + TEST)
    assert [severity_tfidf(text, table) for text in TRAIN + TEST] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert table["n_documents"] == len(TRAIN) and table["min"] == pytest.approx(min(raws[: len(TRAIN)]))
    assert max(expected[: len(TRAIN)]) == 1.0 and min(expected[: len(TRAIN)]) == 0.0 < min(raws[: len(TRAIN)])
    # Test documents do not move the table: fitted on train and test together, they would score otherwise.
    leaked = fit(TRAIN + TEST)
    assert [severity_tfidf(text, leaked) for text in TEST] != pytest.approx(expected[len(TRAIN) :])
    # Clipping: the first test report is above the train max, the second has no term (below the min).
    assert raws[len(TRAIN)] > table["max"] and severity_tfidf(TEST[0], table) == 1.0
    assert severity_tfidf(TEST[1], table) == 0.0


def test_negated_mentions_count_as_the_paper_defines():
    """ "no pneumothorax" counts pneumothorax: the TF-IDF score reads words; severity_ordinal reads mentions."""
    table = fit(TRAIN)
    negated, affirmed = TEST[2], TEST[3]
    assert severity_tfidf(negated, table) == severity_tfidf(affirmed, table) > 0.0
    assert severity_ordinal(extract_mentions(negated)) == 0.0 < severity_ordinal(extract_mentions(affirmed))


def test_fitted_table_follows_the_formula():
    table = fit(TRAIN)
    assert table["version"] == VERSION and list(table["idf"]) == list(TERMS)
    # "pneumothorax" is in 2 of the 8 reports, "effusion" in 2 ("effusions" is another word), "shock" in none
    assert table["idf"]["pneumothorax"] == pytest.approx(math.log(9 / 3) + 1)
    assert table["idf"]["effusion"] == pytest.approx(math.log(9 / 3) + 1)
    assert table["idf"]["shock"] == pytest.approx(math.log(9 / 1) + 1)
    tension_report = TRAIN[3]  # large, pneumothorax x2, concerning, tension
    expected = (
        table["idf"]["large"]
        + (1 + math.log(2)) * table["idf"]["pneumothorax"]
        + table["idf"]["concerning"]
        + table["idf"]["tension"]
    )
    assert sorted(severity_terms(tension_report)) == ["concerning", "large", "pneumothorax", "pneumothorax", "tension"]
    assert table["max"] == pytest.approx(expected) and severity_tfidf(tension_report, table) == 1.0


def test_degenerate_and_foreign_tables():
    empty = fit_table(new_accumulator())
    assert empty["n_documents"] == 0 and empty["min"] == empty["max"] == 0.0
    assert severity_tfidf("Large right pneumothorax.", empty) == 0.0
    same = fit(["Large right pneumothorax.", "Large right pneumothorax."])
    assert same["min"] == same["max"] > 0 and severity_tfidf("Large right pneumothorax.", same) == 0.0
    with pytest.raises(ValueError, match="refit"):
        severity_tfidf("Large right pneumothorax.", dict(empty, version="severity-v2"))
    with pytest.raises(ValueError, match="not severity terms"):
        add_document(new_accumulator(), ["pleural effusion"])


def test_rows_are_scored_on_their_severity_document():
    english = {
        "report_language": "en",
        "report_english": None,
        "sections": [
            {"name": "findings", "text": "Large right pneumothorax, increased compared to the prior study."},
            {"name": "impression", "text": "Worsening right pneumothorax."},
        ],
    }
    padchest = {
        "report_language": "es",
        "report_english": "Cardiomegaly. Left costophrenic angle pleural effusion.",
        "sections": [],
    }
    without = {"report_language": None, "report_english": None, "sections": None}
    assert severity_terms(severity_document(english)) == ["large", "pneumothorax"]  # findings, comparison rewritten out
    assert severity_terms(severity_document(padchest)) == ["cardiomegaly", "effusion"]
    assert severity_document(without) is None
    table = fit(TRAIN)
    assert output_rows.add_severity_tfidf(english, table)["severity_tfidf"] == severity_tfidf(
        "Large right pneumothorax.", table
    )
    assert output_rows.add_severity_tfidf(without, table)["severity_tfidf"] == severity_tfidf("", table) == 0.0


FILLER = ("no", "the", "right", "left", "lung", "with", "stable", "heart", "of")
WORDS = st.lists(st.sampled_from(TERMS + FILLER), max_size=25)
SEPARATORS = st.sampled_from([" ", ", ", ". ", "; ", "\n", "/"])


@settings(max_examples=60, deadline=None)
@given(WORDS, SEPARATORS, st.sampled_from(TERMS), st.integers(min_value=0))
def test_scores_lie_in_the_unit_interval_and_grow_with_every_term_occurrence(words, separator, term, where):
    table = fit(TRAIN)
    at = where % (len(words) + 1)
    text, more = separator.join(words), separator.join(words[:at] + [term] + words[at:])
    assert 0.0 <= severity_tfidf(text, table) <= severity_tfidf(more, table) <= 1.0
    assert severity_terms(text.upper()) == severity_terms(text) == [w for w in words if w in TERMS]
    # The raw sum, read through a table whose min is 0 and whose max is far above any raw score here:
    # one more occurrence of a term always raises it (1 + ln(n + 1) > 1 + ln n, and every idf is >= 1).
    unclipped = dict(table, min=0.0, max=1e6)
    assert severity_tfidf(more, unclipped) > severity_tfidf(text, unclipped)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.sampled_from(TERMS[:12]), max_size=5), max_size=12), st.randoms(use_true_random=False))
def test_merge_is_order_independent(documents, random):
    whole = new_accumulator()
    for terms in documents:
        whole = add_document(whole, terms)
    parts = [new_accumulator() for _ in range(3)]
    shuffled = list(documents)
    random.shuffle(shuffled)
    for index, terms in enumerate(shuffled):
        parts[index % 3] = add_document(parts[index % 3], terms)
    random.shuffle(parts)
    merged = fit_table(merge_accumulators(parts))
    assert json.dumps(merged) == json.dumps(fit_table(whole))  # the same bytes in manifest.json


def test_fitting_is_deterministic():
    first, again = fit(TRAIN), fit(list(reversed(TRAIN)))
    assert json.dumps(first) == json.dumps(again)
    assert [severity_tfidf(text, first) for text in TEST] == [severity_tfidf(text, again) for text in TEST]


def test_the_beam_combine_fits_the_same_table_over_several_bundles():
    expected = fit(TRAIN)
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        parts = [pipeline | f"Part {n}" >> beam.Create(TRAIN[n::3]) for n in range(3)]
        table = parts | beam.Flatten() | beam.Map(severity_terms) | beam.CombineGlobally(FitSeverityIdf())
        scores = (
            pipeline
            | "Reports" >> beam.Create(TEST)
            | beam.Map(lambda text, fitted: severity_tfidf(text, fitted), fitted=beam.pvalue.AsSingleton(table))
        )
        assert_that(table | beam.Map(json.dumps), equal_to([json.dumps(expected)]), label="table")
        assert_that(scores, equal_to([severity_tfidf(text, expected) for text in TEST]), label="scores")


def test_the_idf_is_fitted_on_train_documents_once_per_study():
    """A study's images share one report: one document; rows without a document, and rows of other
    splits, are no documents; a study's lateral PadChest image (statements without sides) counts apart."""

    def row(key, study, split="train", english=None, source="padchest"):
        return {
            "image_key": key,
            "source": source,
            "split": split,
            "study_id": study,
            "report_language": "es-stemmed",
            "report_english": english,
        }

    rows = [
        row("a", "s1", english="Left pleural effusion."),
        row("b", "s1", english="Left pleural effusion."),
        row("c", "s1", english="Pleural effusion."),
        row("d", "s2", english=None),
        row("e", "s3", split="test", english="Large pneumothorax."),
        row("f", None, english="Cardiomegaly."),
    ]
    assert output_rows.train_severity_documents(rows) == [["effusion"], ["effusion"], ["cardiomegaly"]]
