"""Comparison wording rewritten out of single-image targets (transforms/comparisons.py), checked on
hand-written sentences of each kind and on every comparing sentence of the even-id IU X-ray reports."""

from __future__ import annotations

import pytest
import realdata
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.comparisons import compares, rewrite_sentence, single_image_text
from transforms.labels import NO_FINDING, label_report
from transforms.reports import clean_text, sentence_spans


@pytest.mark.parametrize(
    ("sentence", "rewritten"),
    [
        ("New moderate right pneumothorax.", "Moderate right pneumothorax."),
        ("Small right pleural effusion has decreased since the prior study.", "Small right pleural effusion."),
        (
            "Moderate bilateral pleural effusions have increased since the prior study.",
            "Moderate bilateral pleural effusions.",
        ),
        (
            "A 13 mm nodule in the left upper lobe is unchanged from the prior study.",
            "A 13 mm nodule in the left upper lobe.",
        ),
        ("Stable mild cardiomegaly.", "Mild cardiomegaly."),
        ("Large left pleural effusion, unchanged.", "Large left pleural effusion."),
        ("Again seen is a small left apical pneumothorax.", "A small left apical pneumothorax."),
        ("Interval development of moderate pulmonary edema.", "Moderate pulmonary edema."),
        ("Interval increase in the right pleural effusion.", "Right pleural effusion."),
        (
            "There has been interval increase in size of the cardiac silhouette from ___.",
            "Increased size of the cardiac silhouette.",
        ),
        ("No interval change in the moderate right pleural effusion.", "Moderate right pleural effusion."),
        ("Small right pneumothorax is new since the prior study.", "Small right pneumothorax."),
        ("Increasing left lower lobe consolidation.", "Left lower lobe consolidation."),
        ("Left basilar opacity is again seen.", "Left basilar opacity is seen."),
        ("Right infrahilar nodular density (lateral view).", "Right infrahilar nodular density."),
        ("1. Small left effusion, unchanged from prior.", "1. Small left effusion."),
        ("Compared with the previous study, the effusion is smaller.", "The effusion."),
        ("Large right pleural effusion, worse than before.", "Large right pleural effusion."),
        ("Moderate pulmonary edema, slightly better than previously.", "Moderate pulmonary edema."),
        ("Right basilar opacity is worse.", "Right basilar opacity."),
        ("Worse bibasilar atelectasis.", "Bibasilar atelectasis."),
    ],
)
def test_a_comparing_sentence_keeps_what_it_states(sentence, rewritten):
    rewrite = rewrite_sentence(sentence)
    assert (rewrite.result, rewrite.residual) == (rewritten, False)


@pytest.mark.parametrize(
    "sentence",
    [
        "No interval change.",
        "Unchanged.",
        "No significant change since the prior examination.",
        "The mediastinum is stable.",
        "The cardiomediastinal silhouette is unchanged.",
        "The left pleural effusion has resolved.",
        "Interval removal of the endotracheal tube.",
        "PA and lateral views of the chest were obtained.",
        "No new focal consolidation, effusion or pneumothorax.",
        "Recommend comparison with prior images.",
    ],
)
def test_a_sentence_with_nothing_but_comparison_is_dropped(sentence):
    assert rewrite_sentence(sentence).result is None


def test_sentences_without_comparison_are_left_as_written():
    for sentence in (
        "Small left pleural effusion.",
        "No pneumothorax.",
        "Increased interstitial markings.",
        "Heart size is normal.",
    ):
        assert not compares(sentence) and rewrite_sentence(sentence) is None


def test_single_image_text_rewrites_in_place_and_keeps_paragraphs():
    text = clean_text(
        "Moderate cardiomegaly is unchanged from the prior study.  Small left\n pleural effusion.\n"
        "\nNo interval change.  No pneumothorax."
    )
    result, rewrites = single_image_text(text)
    assert result == "Moderate cardiomegaly. Small left pleural effusion.\n\nNo pneumothorax."
    assert [(r.original, r.result) for r in rewrites] == [
        ("Moderate cardiomegaly is unchanged from the prior study.", "Moderate cardiomegaly."),
        ("No interval change.", None),
    ]
    assert single_image_text(result) == (result, ())


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "Stable cardiomegaly.",
                "No effusion.",
                "Small left effusion has increased.",
                "\n\n",
                " ",
                "Again seen is a nodule.",
                "No interval change.",
                "Clear lungs.",
                "New right apical pneumothorax.",
                "1. ",
            ]
        ),
        max_size=10,
    )
)
def test_rewriting_is_idempotent_and_leaves_comparison_only_in_residuals(pieces):
    """Pieces may run together ("cardiomegaly.No"), as real reports sometimes do."""
    text = clean_text("".join(pieces))
    result, rewrites = single_image_text(text)
    assert single_image_text(result)[0] == result
    residuals = {r.result for r in rewrites if r.residual}
    assert all(result[a:b] in residuals for a, b in sentence_spans(result) if compares(result[a:b]))
    originals = [text[a:b] for a, b in sentence_spans(text)]
    assert all(r.original in originals for r in rewrites)


# ---------------------------------------------------------------- real report sentences (IU X-ray, even ids)


def _positives(text: str) -> set[str]:
    return {name for name, value in label_report(text).items() if value == 1.0 and name != NO_FINDING}


def test_real_comparing_sentences_keep_their_findings(tmp_path):
    """Every comparing sentence of the even-id IU reports: the labeler finds every finding of the original
    in the rewrite, except where the sentence said only "<normal structure> is stable" (the labeler reads
    a bare "mediastinum" as enlarged, which "The mediastinum is stable." does not say); almost none keeps
    comparison wording."""
    sentences = [
        clean_text(text)[a:b]
        for report in realdata.iu_development_reports(tmp_path)
        for text in (report.findings, report.impression)
        if text
        for a, b in sentence_spans(clean_text(text))
    ]
    rewrites = [r for r in map(rewrite_sentence, sentences) if r is not None]
    lost = {r.original: sorted(_positives(r.original) - _positives(r.result or "")) for r in rewrites}
    lost = {sentence: names for sentence, names in lost.items() if names}
    structure_only = {
        s
        for s, names in lost.items()
        if names == ["Enlarged Cardiomediastinum"] and rewrite_sentence(s).result is None and "mediastin" in s.lower()
    }
    print(
        f"{len(sentences)} sentences, {len(rewrites)} compare: {sum(r.result is None for r in rewrites)} dropped, "
        f"{sum(r.residual for r in rewrites)} residual, {len(lost)} lose a finding "
        f"({len(structure_only)} of them 'mediastinum is stable')"
    )
    assert len(rewrites) > 800
    assert set(lost) == structure_only
    assert sum(r.residual for r in rewrites) <= 0.02 * len(rewrites)
