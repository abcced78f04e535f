"""Severity scores (transforms.severity): the ordinal score and its buckets, the TF-IDF scorer and the
FitSeverityIdf CombineFn, directly and inside a small FnApiRunner pipeline."""

from __future__ import annotations

import math

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import AttributeMention
from transforms.phrases import extract_mentions
from transforms.severity import (
    SEED_TERMS,
    VERSION,
    FitSeverityIdf,
    severity_bucket,
    severity_ordinal,
    severity_terms,
    severity_tfidf,
)

TRAINING_REPORTS = [
    "No acute cardiopulmonary disease.",
    "Small left pleural effusion.",
    "Large right pneumothorax. Severe pulmonary edema, worsening.",
    "Mild cardiomegaly. No pneumothorax.",
    "Heart size normal. Lungs are clear.",
    "New right lower lobe consolidation.",
]


def mention(finding: str, presence: int, severity: tuple[int, int] | None = None, temporal: str | None = None) -> AttributeMention:
    return AttributeMention(finding=finding, presence=presence, severity=severity, temporal=temporal,
                            sentence="s.", span=(0, 2))


def fit(reports) -> dict:
    combine = FitSeverityIdf()
    accumulator = combine.create_accumulator()
    for report in reports:
        accumulator = combine.add_input(accumulator, severity_terms(report))
    return combine.extract_output(accumulator)


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


@pytest.mark.parametrize("score, bucket", [(0.0, "none"), (0.01, "mild"), (1 / 3, "mild"), (0.5, "moderate"),
                                           (2 / 3, "moderate"), (0.9, "severe"), (1.0, "severe")])
def test_buckets(score, bucket):
    assert severity_bucket(score) == bucket


def test_bucket_rejects_scores_outside_the_unit_interval():
    with pytest.raises(ValueError, match="outside"):
        severity_bucket(1.2)


# ---------------------------------------------------------------- TF-IDF


def test_terms_come_from_affirmed_mentions_only():
    assert severity_terms("No pneumothorax. Possible small effusion.") == []
    assert severity_terms("Large right pneumothorax, worsening.") == ["pneumothorax", "severe", "worsening"]
    assert severity_terms([mention("Support Devices", 1)]) == []


def test_negation_does_not_raise_the_score():
    """MediVLM's weakness: "no pneumothorax" counted the word. Here it scores like a normal report."""
    table = fit(TRAINING_REPORTS)
    assert severity_tfidf("No pneumothorax, no edema.", table) == severity_tfidf("Lungs are clear.", table) == 0.0
    assert severity_tfidf("Large right pneumothorax.", table) > severity_tfidf("Mild cardiomegaly.", table) > 0.0


def test_fitted_table_follows_the_formula():
    table = fit(TRAINING_REPORTS)
    assert table["version"] == VERSION and table["n_documents"] == 6 and set(table["idf"]) == set(SEED_TERMS)
    # pneumothorax is affirmed in 1 of 6 documents; "new" in 1; "moderate" in none
    assert table["idf"]["pneumothorax"] == pytest.approx(math.log(7 / 2) + 1)
    assert table["idf"]["moderate"] == pytest.approx(math.log(7 / 1) + 1)
    edema_report = ["pneumothorax", "severe", "edema", "severe", "worsening"]
    expected_max = sum((1 + math.log(count)) * table["idf"][term]
                       for term, count in {"pneumothorax": 1, "severe": 2, "edema": 1, "worsening": 1}.items())
    assert sorted(severity_terms(TRAINING_REPORTS[2])) == sorted(edema_report)
    assert (table["min"], table["max"]) == (0.0, pytest.approx(expected_max))
    assert severity_tfidf(TRAINING_REPORTS[2], table) == 1.0


def test_scores_are_clipped_to_the_fitted_range():
    table = fit(TRAINING_REPORTS[:2])
    assert severity_tfidf("Large right pneumothorax. Severe edema. New consolidation.", table) == 1.0


def test_degenerate_and_foreign_tables():
    empty = FitSeverityIdf().extract_output(FitSeverityIdf().create_accumulator())
    assert empty["n_documents"] == 0 and empty["min"] == empty["max"] == 0.0
    assert severity_tfidf("Large right pneumothorax.", empty) == 0.0
    with pytest.raises(ValueError, match="refit"):
        severity_tfidf("Large right pneumothorax.", dict(empty, version="severity-v0"))
    with pytest.raises(ValueError, match="not severity seed terms"):
        FitSeverityIdf().add_input(FitSeverityIdf().create_accumulator(), ["tension"])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.sampled_from(SEED_TERMS), max_size=5), max_size=12), st.randoms(use_true_random=False))
def test_merge_is_order_independent(documents, random):
    combine = FitSeverityIdf()
    whole = combine.create_accumulator()
    for terms in documents:
        whole = combine.add_input(whole, terms)
    parts = [combine.create_accumulator() for _ in range(3)]
    shuffled = list(documents)
    random.shuffle(shuffled)
    for index, terms in enumerate(shuffled):
        parts[index % 3] = combine.add_input(parts[index % 3], terms)
    random.shuffle(parts)
    assert combine.extract_output(combine.merge_accumulators(parts)) == combine.extract_output(whole)


def test_fit_in_a_beam_pipeline_matches_the_direct_fit():
    expected = fit(TRAINING_REPORTS)
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        table = (pipeline
                 | beam.Create(TRAINING_REPORTS)
                 | beam.Map(severity_terms)
                 | beam.CombineGlobally(FitSeverityIdf()))
        scores = (pipeline
                  | "Reports" >> beam.Create(TRAINING_REPORTS[1:3])
                  | beam.Map(lambda text, fitted: round(severity_tfidf(text, fitted), 9), fitted=beam.pvalue.AsSingleton(table)))
        assert_that(table, equal_to([expected]), label="table")
        assert_that(scores, equal_to([round(severity_tfidf(text, expected), 9) for text in TRAINING_REPORTS[1:3]]),
                    label="scores")
