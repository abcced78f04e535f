"""English statements from PadChest's sentence annotations (transforms/padchest_english.py): the rules on
hand-written sentences, every distinct value of the real ``LabelsLocalizationsBySentence`` column (read
from the torchxrayvision wheel at test time, never copied here) rendered with and without sides, and
sentence order kept on generated reports."""

from __future__ import annotations

import csv
import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import realdata
from pipelines.synth.cases import CHEXPERT_14, DEVICES, Finding
from pipelines.synth.text import padchest_report
from transforms.padchest_english import LABELS, LOCS, UnknownPhrase, render_report, stated_findings
from transforms.sources.padchest import LOCALIZATION_PREFIX, is_null, parse_by_sentence

SIDE_WORDS = re.compile(r"\b(?:right|left|bilateral|both|rightward|leftward|dextro\w*|levo\w*)\b|-sided",
                        re.IGNORECASE)
DOUBLED = re.compile(r"\b(\w+) \1\b", re.IGNORECASE)
FINDINGS = sorted(name for name, label in LABELS.items() if label.kind == "finding")
NO_ABNORMALITY = "No significant abnormality."


def _strings(sentences) -> tuple[set[str], set[str]]:
    """(labels, localization names) of parsed sentences."""
    labels, locs = set(), set()
    for items in sentences:
        for item in items or ():
            if item.startswith(LOCALIZATION_PREFIX):
                locs.add(item[len(LOCALIZATION_PREFIX):])
            else:
                labels.add(item)
    return labels, locs


@pytest.fixture(scope="module")
def real():
    """Every distinct non-null real column value -> (parsed, rendered with sides, rendered without)."""
    text = realdata.wheel_csv_text("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
    values = {row["LabelsLocalizationsBySentence"] for row in csv.DictReader(io.StringIO(text, newline=""))}
    parsed = {value: parse_by_sentence(value) for value in values if not is_null(value)}
    return {value: (sentences, render_report(sentences), render_report(sentences, sides=False))
            for value, sentences in parsed.items()}


def test_every_finding_of_a_real_report_is_stated_by_its_english(real):
    """What the row audit holds Radixpert rows to: each finding label of a report's sentences (devices
    included; side statements not on a lateral view) is stated by some rendered sentence."""
    for value, (sentences, with_sides, without_sides) in real.items():
        labels, _ = _strings(sentences)
        for sides, rendered in ((True, with_sides), (False, without_sides)):
            stated = {label for sentence_labels in rendered.labels for label in sentence_labels}
            assert stated_findings(labels, sides=sides) <= stated, (value, sides, rendered)
    assert stated_findings(["cardiomegaly", "normal", "exclude", "unchanged", "dextrocardia"], sides=False) == {
        "cardiomegaly"}


def _synthetic_sentences() -> list:
    """The sentences the synthetic corpus writes: every finding it renders, on every side and zone."""
    reports = [padchest_report({}, 0)]
    for name in CHEXPERT_14[1:]:
        for side in ("right", "left", "bilateral"):
            for zone in ("upper", "middle", "lower", None):
                for detail in DEVICES if name == "Support Devices" else (None,):
                    reports.append(padchest_report({name: Finding(name, 1, side, zone, 1, None, detail)}, 0))
    return [items for report in reports for items in parse_by_sentence(report["LabelsLocalizationsBySentence"])]


def _assert_well_formed(report) -> None:
    assert report.text == " ".join(report.sentences)
    assert len(report.sentences) == len(report.sources) == len(report.labels)
    assert list(report.sources) == sorted(set(report.sources)), report
    for sentence in report.sentences:
        assert re.fullmatch(r"[A-Z][^.]*[A-Za-z]\.", sentence), sentence
        assert "loc " not in sentence and not set(sentence) & set("{}[]_"), sentence
        assert "  " not in sentence and " ," not in sentence and " ;" not in sentence, sentence
        assert not DOUBLED.search(sentence), sentence


# ------------------------------------------------------------------ coverage of the real column


def test_every_real_string_has_english_and_every_entry_is_used(real):
    labels, locs = _strings(sentence for sentences, _, _ in real.values() for sentence in sentences)
    synthetic_labels, synthetic_locs = _strings(_synthetic_sentences())
    assert (len(labels), len(locs)) == (220, 104)  # the real column, the empty label included
    assert labels - set(LABELS) == set() and locs - set(LOCS) == set()
    assert synthetic_labels - set(LABELS) == set() and synthetic_locs - set(LOCS) == set()
    assert set(LABELS) - labels - synthetic_labels == set(), "manifest labels nothing uses"
    assert set(LOCS) - locs - synthetic_locs == set(), "manifest localizations nothing uses"


def test_every_real_value_renders_well_formed(real):
    assert len(real) > 49_000  # distinct values of 160,861 rows
    for sentences, frontal, lateral in real.values():
        _assert_well_formed(frontal)
        _assert_well_formed(lateral)
        assert all(sentences[index] is not None for index in frontal.sources)


def test_real_renderings_without_sides_say_no_side(real):
    said = [sentence for _, _, lateral in real.values() for sentence in lateral.sentences]
    assert len(said) > 70_000
    assert [sentence for sentence in said if SIDE_WORDS.search(sentence)] == []
    with_sides = [sentence for _, frontal, _ in real.values() for sentence in frontal.sentences]
    assert sum(bool(SIDE_WORDS.search(sentence)) for sentence in with_sides) > 10_000  # sides are said there


def test_real_bare_normal_only_in_reports_without_a_finding(real):
    with_no_abnormality = 0
    for sentences, frontal, _ in real.values():
        labels, _ = _strings(sentences)
        has_finding = any(LABELS[label].kind == "finding" for label in labels)
        said = frontal.sentences.count(NO_ABNORMALITY) + sum(s.endswith("; no significant abnormality.")
                                                              for s in frontal.sentences)
        assert said <= 1
        assert not (has_finding and said), (sentences, frontal.text)
        with_no_abnormality += said
    assert with_no_abnormality > 400  # distinct values


def test_synthetic_sentences_render():
    for items in _synthetic_sentences():
        _assert_well_formed(render_report([items]))
    assert render_report(parse_by_sentence(padchest_report({}, 0)["LabelsLocalizationsBySentence"])).text == \
        "No significant abnormality. Normal cardiac silhouette."


# ------------------------------------------------------------------ the rules


@pytest.mark.parametrize(("sentences", "frontal", "lateral"), [
    ([["pleural effusion", "loc left costophrenic angle"], ["cardiomegaly"]],
     "Pleural effusion in the left costophrenic angle. Cardiomegaly.",
     "Pleural effusion in the costophrenic angle. Cardiomegaly."),
    ([["cardiomegaly", "loc cardiac", "aortic elongation", "loc aortic", "normal"]],
     "Cardiomegaly and elongated aorta.", "Cardiomegaly and elongated aorta."),
    ([["apical pleural thickening", "fibrotic band", "loc pleural"]],
     "Apical pleural thickening and fibrotic band.", "Apical pleural thickening and fibrotic band."),
    ([["costophrenic angle blunting", "loc left costophrenic angle", "loc costophrenic angle"]],
     "Left costophrenic angle blunting.", "Costophrenic angle blunting."),
    ([["central venous catheter via jugular vein", "loc superior cave vein", "loc right", "loc central"]],
     "Right jugular central venous catheter in the superior vena cava.",
     "Jugular central venous catheter in the superior vena cava."),
    ([["pleural effusion", "loc pleural", "loc right"]], "Right pleural effusion.", "Pleural effusion."),
    ([["pleural effusion left side", "loc pleural", "loc left"]], "Left pleural effusion.", "Pleural effusion."),
    ([["pneumonia", "loc left lower lobe", "loc left"]], "Pneumonia in the left lower lobe.",
     "Pneumonia in the lower lobe."),
    ([["volume loss", "loc right", "loc hemithorax"]], "Volume loss in the right hemithorax.",
     "Volume loss in the hemithorax."),
    ([["pleural effusion", "loc bilateral", "loc costophrenic angle"]],
     "Pleural effusion in both costophrenic angles.", "Pleural effusion in the costophrenic angle."),
    ([["laminar atelectasis", "loc basal", "loc subsegmental", "loc left"]],
     "Left subsegmental basal plate-like atelectasis.", "Subsegmental basal plate-like atelectasis."),
    ([["hemidiaphragm elevation right side", "loc diaphragm", "loc right"]],
     "Elevated right hemidiaphragm.", "Elevated hemidiaphragm."),
    ([["callus rib fracture", "loc bone", "loc rib", "loc right"]], "Right rib fracture with callus.",
     "Rib fracture with callus."),
    ([["sclerotic bone lesion", "loc anterior rib"]], "Sclerotic bone lesion in an anterior rib.",
     "Sclerotic bone lesion in an anterior rib."),
    ([["goiter", "tracheal shift", "loc tracheal", "loc left"]], "Goiter and leftward tracheal deviation.",
     "Goiter and tracheal deviation."),
    ([["COPD signs", "fibrotic band", "loc apical", "loc right"]], "Signs of COPD and right apical fibrotic band.",
     "Signs of COPD and apical fibrotic band."),
    ([["bronchiectasis", "loc left upper lobe", "bronchiectasis", "loc middle lobe"]],
     "Bronchiectasis in the left upper lobe and the middle lobe.",
     "Bronchiectasis in the upper lobe and the middle lobe."),
    ([["scoliosis", "loc right"]], "Dextroconvex scoliosis.", "Scoliosis."),
    ([["dextrocardia"], ["right sided aortic arch", "loc aortic"]], "Dextrocardia. Right aortic arch.", ""),
])
def test_a_sentence_reads_in_natural_order(sentences, frontal, lateral):
    assert render_report(sentences).text == frontal
    assert render_report(sentences, sides=False).text == lateral


@pytest.mark.parametrize(("sentences", "text", "sources"), [
    ([["exclude", "loc right"], ["cardiomegaly", "loc cardiac"]], "Cardiomegaly.", (1,)),
    ([["exclude"], ["unchanged"], [""], None], "", ()),
    ([["unchanged"], ["pleural effusion", "loc left", "loc pleural", "unchanged"]], "Left pleural effusion.", (1,)),
    ([["nodule", "", "loc right upper lobe"], ["", "loc right"]], "Nodule in the right upper lobe.", (0,)),
    ([None, ["normal"]], NO_ABNORMALITY, (1,)),
    ([["normal", "loc cardiac", "loc mediastinum"]], "Normal cardiac silhouette and mediastinum.", (0,)),
    ([["normal"], ["normal", "loc costophrenic angle"], ["normal", "normal"]],
     "No significant abnormality. Normal costophrenic angles.", (0, 1)),
    ([["normal", "loc basal", "loc right"]], "Normal right lung base.", (0,)),
    ([["normal", "loc right"]], NO_ABNORMALITY, (0,)),
    ([["normal"], ["scoliosis", "loc right"]], "Dextroconvex scoliosis.", (1,)),
    ([["scoliosis"], ["normal"]], "Scoliosis.", (0,)),
    ([["nodule"], ["normal", "exclude"]], "Nodule.", (0,)),
    ([["scoliosis", "normal", "loc cardiac"]], "Scoliosis; normal cardiac silhouette.", (0,)),
    ([["normal", "cardiomegaly", "loc cardiac"]], "Cardiomegaly.", (0,)),
    ([["cardiomegaly", "loc cardiac"], ["normal", "loc cardiac", "loc costophrenic angle"]],
     "Cardiomegaly. Normal costophrenic angles.", (0, 1)),
    ([["pleural effusion", "loc right"], ["normal", "loc pleural", "loc left"]],
     "Right pleural effusion. Normal left pleura.", (0, 1)),
    ([["pleural effusion", "loc right"], ["normal", "loc pleural", "loc right"]], "Right pleural effusion.", (0,)),
    ([["pneumonia", "loc right lower lobe"], ["normal", "loc lower lobe"], ["normal", "loc bone"]],
     "Pneumonia in the right lower lobe. Normal bones.", (0, 2)),
    ([["suboptimal study", "loc right"]], "Suboptimal study.", (0,)),
    ([["suboptimal study", "normal"]], "Suboptimal study; no significant abnormality.", (0,)),
    ([["hypoexpansion", "suboptimal study"], ["normal"]], "Hypoexpansion; suboptimal study.", (0,)),
])
def test_normal_exclude_unchanged_and_empty_items(sentences, text, sources):
    report = render_report(sentences)
    assert (report.text, report.sources) == (text, sources)


def test_no_abnormality_is_not_said_without_sides_beside_an_unsaid_finding():
    report = render_report([["dextrocardia"], ["normal"]], sides=False)
    assert report.text == ""


def test_sides_are_left_out_of_normal_conflicts_without_sides():
    sentences = [["pleural effusion", "loc right"], ["normal", "loc pleural", "loc left"]]
    assert render_report(sentences, sides=False).text == "Pleural effusion."


def test_labels_name_what_each_sentence_states():
    report = render_report([["normal", "loc cardiac", "cardiomegaly"], ["exclude"], ["suboptimal study"],
                            ["pacemaker", "dual chamber device", "unchanged"]])
    assert report.labels == (("cardiomegaly",), ("suboptimal study",), ("pacemaker", "dual chamber device"))
    assert report.sources == (0, 2, 3)


@pytest.mark.parametrize(("sentences", "phrase"), [
    ([["pleural effusion", "loc moon"]], "loc moon"),
    ([["normal"], ["pleural effusion"], ["humming heart"]], "humming heart"),
])
def test_an_unknown_string_is_named(sentences, phrase):
    with pytest.raises(UnknownPhrase) as raised:
        render_report(sentences)
    assert raised.value.phrase == phrase and repr(phrase) in str(raised.value)
    assert isinstance(raised.value, ValueError)


# ------------------------------------------------------------------ properties

_RUN = st.tuples(
    st.lists(st.sampled_from(FINDINGS + ["exclude", "unchanged", ""]), min_size=1, max_size=3),
    st.lists(st.sampled_from(sorted(LOCS)), max_size=3),
)
_SENTENCE = st.lists(_RUN, min_size=1, max_size=3).map(
    lambda runs: [item for labels, locs in runs for item in labels + [LOCALIZATION_PREFIX + loc for loc in locs]])
_REPORT = st.lists(st.one_of(st.none(), _SENTENCE), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(report=_REPORT, sides=st.booleans())
def test_sentences_keep_their_order(report, sides):
    """Without normal sentences (which depend on the whole report) each sentence renders as it would
    alone, so the report is its sentences' renderings in order."""
    rendered = render_report(report, sides=sides)
    alone = [render_report([items], sides=sides) for items in report]
    assert rendered.sentences == tuple(sentence for part in alone for sentence in part.sentences)
    assert rendered.sources == tuple(index for index, part in enumerate(alone) for _ in part.sentences)
    _assert_well_formed(rendered)
    if not sides:
        assert not SIDE_WORDS.search(rendered.text)


_NORMAL = st.lists(st.sampled_from(["normal", "loc cardiac", "loc right", "loc costophrenic angle", "loc pleural"]),
                  max_size=4).map(lambda items: ["normal"] + items)


@settings(max_examples=150, deadline=None)
@given(report=st.lists(st.one_of(_SENTENCE, _NORMAL), min_size=1, max_size=5), sides=st.booleans())
def test_normal_never_contradicts_a_finding(report, sides):
    rendered = render_report(report, sides=sides)
    _assert_well_formed(rendered)
    labels, _ = _strings(report)
    normal = [clause for sentence in rendered.sentences for clause in sentence[:-1].lower().split("; ")
              if clause.startswith(("normal ", "no significant abnormality"))]
    if any(LABELS[label].kind == "finding" for label in labels):
        assert not any(clause.startswith("no significant abnormality") for clause in normal)
    if labels & {"cardiomegaly", "heart insufficiency", "pericardial effusion"}:
        assert not any("cardiac silhouette" in clause for clause in normal)
    if not sides and labels & {"pleural effusion", "pleural thickening", "pneumothorax"}:
        assert not any("pleura" in clause for clause in normal)
