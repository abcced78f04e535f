"""English statements from PadChest's sentence annotations (transforms/padchest_english.py): the rules on
hand-written sentences, every distinct value of the real ``LabelsLocalizationsBySentence`` column (read
from the torchxrayvision wheel at test time, never copied here) rendered with and without sides, and
sentence order kept on generated reports."""

from __future__ import annotations

import csv
import functools
import io
import re

import pytest
import realdata
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.synth.cases import CHEXPERT_14, DEVICES, Finding
from pipelines.synth.text import padchest_report
from transforms import padchest_english
from transforms.padchest_english import LABELS, LOCS, UnknownPhrase, label_head, render_report, stated_findings
from transforms.sources.padchest import LOCALIZATION_PREFIX, is_null, parse_by_sentence

SIDE_WORDS = re.compile(r"\b(?:right|left|bilateral|both|rightward|leftward|dextro\w*|levo\w*)\b|-sided", re.IGNORECASE)
RIGHT_WORDS = re.compile(r"\b(?:right|rightward|dextroconvex)\b", re.IGNORECASE)  # dextrocardia is a label
LEFT_WORDS = re.compile(r"\b(?:left|leftward|levoconvex)\b", re.IGNORECASE)
BOTH_WORDS = re.compile(r"\b(?:bilateral|both)\b", re.IGNORECASE)
DOUBLED = re.compile(r"\b(\w+) \1\b", re.IGNORECASE)
FINDINGS = sorted(name for name, label in LABELS.items() if label.kind == "finding")
NO_ABNORMALITY = "No significant abnormality."


def _strings(sentences) -> tuple[set[str], set[str]]:
    """(labels, localization names) of parsed sentences."""
    labels, locs = set(), set()
    for items in sentences:
        for item in items or ():
            if item.startswith(LOCALIZATION_PREFIX):
                locs.add(item[len(LOCALIZATION_PREFIX) :])
            else:
                labels.add(item)
    return labels, locs


@pytest.fixture(scope="module")
def real():
    """Every distinct non-null real column value -> (parsed, rendered with sides, rendered without)."""
    text = realdata.wheel_csv_text("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
    values = {row["LabelsLocalizationsBySentence"] for row in csv.DictReader(io.StringIO(text, newline=""))}
    parsed = {value: parse_by_sentence(value) for value in values if not is_null(value)}
    return {
        value: (sentences, render_report(sentences), render_report(sentences, sides=False))
        for value, sentences in parsed.items()
    }


def _annotated_sides(items) -> set[str]:
    """The sides a sentence's items state: its localizations' and its labels' own (right + left is both)."""
    sides = set()
    for item in items or ():
        if item.startswith(LOCALIZATION_PREFIX):
            sides.add(LOCS[item[len(LOCALIZATION_PREFIX) :].strip()].side)
        else:
            sides.add(LABELS[item.strip()].side)
    sides.discard(None)
    return sides | ({"bilateral"} if {"right", "left"} <= sides else set())


def _side_problems(sentences, rendered) -> list[str]:
    """What the rendered text says about sides that its sentences' items do not: a side word without a
    localization (or label) of that side in its sentence, right and left in one sentence without both
    annotated, right and left in one phrase at all ("right basal consolidation in the left lower lobe")."""
    problems = []
    for index, sentence in zip(rendered.sources, rendered.sentences):
        annotated = _annotated_sides(sentences[index])
        said = {
            side
            for side, words in (("right", RIGHT_WORDS), ("left", LEFT_WORDS), ("bilateral", BOTH_WORDS))
            if words.search(sentence)
        }
        if said - annotated:
            problems.append(f"{sentence!r} says {sorted(said - annotated)}, annotated {sorted(annotated)}")
        for phrase in re.split(r"[,;.]| and ", sentence):
            if RIGHT_WORDS.search(phrase) and LEFT_WORDS.search(phrase):
                problems.append(f"{sentence!r}: opposite sides in {phrase!r}")
    return problems


def _can_lie_in(label, loc) -> bool:
    """The manifest's ``at`` for one label and localization (a part within one of its places)."""
    parts = loc.ancestors | {loc.area}
    return label.at is None or (bool(parts & label.at) and not parts & label.not_at)


@functools.cache
def _said(name: str) -> re.Pattern:
    """A finding's phrase in lower-case text, the words inserted before its head as group 1."""
    before, head, after = LABELS[name].en.lower().partition(LABELS[name].head.lower())
    return re.compile(
        r"(?:^|(?<=, )|(?<=; )|(?<=and ))"
        + re.escape(before)
        + r"((?:(?!and )[\w-]+ )*?)"
        + re.escape(head + after)
        + r"\b"
    )


def _modifier_problems(sentences, rendered) -> list[str]:
    """Words said before a finding's head that the finding cannot take: a side word on a label that
    takes no side (or a side not annotated in its sentence), an adjective ("basal") of a localization
    not annotated in its sentence or not a place the label can lie in; and a place after a label that
    can lie nowhere ("Cardiomegaly in the hilum")."""
    problems = []
    for index, sentence in zip(rendered.sources, rendered.sentences):
        items = [item.strip() for item in sentences[index]]
        locs = [
            LOCS[item[len(LOCALIZATION_PREFIX) :].strip()] for item in items if item.startswith(LOCALIZATION_PREFIX)
        ]
        sides = _annotated_sides(items)
        lowered = sentence.lower()
        for name in dict.fromkeys(item for item in items if item in LABELS and LABELS[item].kind == "finding"):
            label = LABELS[name]
            side_words = {side: {side, label.side_words.get(side, side)} for side in ("right", "left", "bilateral")}
            found = []  # per occurrence of the label (another label may hold its words): what is wrong there
            for match in _said(name).finditer(lowered):
                wrong = []
                for word in match.group(1).split():
                    side = next((side for side, words in side_words.items() if word in words), None)
                    if side and side != label.side and (label.sides in ("none", "unsaid") or side not in sides):
                        wrong.append(f"side {word!r}")
                    elif not side and not any(loc.adjective == word and _can_lie_in(label, loc) for loc in locs):
                        wrong.append(repr(word))
                if label.at == frozenset() and re.match(r" (?:in|at|below) ", lowered[match.end() :]):
                    wrong.append("a place after it")
                found.append(wrong)
            if found and all(found):
                problems.append(f"{sentence!r}: {found[0]} for {name!r}")
    return problems


def _normal_parts(sentence: str) -> list[str]:
    """The parts a rendered sentence says are normal ("Normal right ribs and mediastinum." -> two)."""
    parts = []
    for clause in sentence.rstrip(".").lower().split("; "):
        if clause.startswith("normal "):
            parts += re.split(r", | and ", clause[len("normal ") :])
    return parts


def test_every_finding_of_a_real_report_is_stated_by_its_english(real):
    """What the row audit holds Radixpert rows to: each finding label of a report's sentences (devices
    included; side statements not on a lateral view) is stated by some rendered sentence, and the text
    holds the label's head words."""
    for value, (sentences, with_sides, without_sides) in real.items():
        labels, _ = _strings(sentences)
        for sides, rendered in ((True, with_sides), (False, without_sides)):
            stated = {label for sentence_labels in rendered.labels for label in sentence_labels}
            findings = stated_findings(labels, sides=sides)
            assert findings <= stated, (value, sides, rendered)
            lowered = rendered.text.lower()
            unsaid = [label for label in findings if label_head(label).lower() not in lowered]
            assert unsaid == [], (value, rendered.text)
    assert stated_findings(["cardiomegaly", "normal", "exclude", "unchanged", "dextrocardia"], sides=False) == {
        "cardiomegaly"
    }


def test_real_side_words_are_annotated(real):
    """Every side word of a real rendering has a localization (or label) of that side in its sentence,
    and no phrase says right and left."""
    problems = [
        (value, problem)
        for value, (sentences, frontal, _) in real.items()
        for problem in _side_problems(sentences, frontal)
    ]
    assert problems == []


def test_real_findings_take_only_their_own_modifiers(real):
    """The words before each finding of a real rendering are its own: sides it can take, adjectives of
    its sentence's localizations that can say where it lies; nothing before or after cardiomegaly."""
    problems = [
        (value, problem)
        for value, (sentences, frontal, lateral) in real.items()
        for rendered in (frontal, lateral)
        for problem in _modifier_problems(sentences, rendered)
    ]
    assert problems == []


def test_real_normal_parts_are_said_once_and_without_sides_only_unsided(real):
    """A part is said normal once per report (not beside itself without a side), and a lateral view's
    normal parts are those the frontal rendering of the same sentence says without a side: a one-sided
    part never becomes a plural one ("normal right lung base" is not "normal lung bases")."""
    nouns = {name: loc.area for loc in LOCS.values() for name in (loc.noun, loc.plural) if name}
    repeated, widened = [], []
    for value, (_, frontal, lateral) in real.items():
        parts = [
            re.fullmatch(r"(right |left )?(.*)", part).groups()
            for sentence in frontal.sentences
            for part in _normal_parts(sentence)
        ]
        keys = [(nouns.get(noun, noun), side) for side, noun in parts]
        if len(keys) != len(set(keys)) or any(side and (area, None) in keys for area, side in keys):
            repeated.append((value, frontal.text))
        said = dict(zip(frontal.sources, frontal.sentences))
        for index, sentence in zip(lateral.sources, lateral.sentences):
            unsided = [part for part in _normal_parts(said.get(index, "")) if not part.startswith(("right ", "left "))]
            if set(_normal_parts(sentence)) - set(unsided):
                widened.append((value, sentence, said.get(index)))
    assert repeated == [] and widened == []


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
        said = frontal.sentences.count(NO_ABNORMALITY) + sum(
            s.endswith("; no significant abnormality.") for s in frontal.sentences
        )
        assert said <= 1
        assert not (has_finding and said), (sentences, frontal.text)
        with_no_abnormality += said
    assert with_no_abnormality > 400  # distinct values


def test_synthetic_sentences_render():
    for items in _synthetic_sentences():
        _assert_well_formed(render_report([items]))
    assert (
        render_report(parse_by_sentence(padchest_report({}, 0)["LabelsLocalizationsBySentence"])).text
        == "No significant abnormality. Normal cardiac silhouette."
    )


# ------------------------------------------------------------------ the rules


@pytest.mark.parametrize(
    ("sentences", "frontal", "lateral"),
    [
        (
            [["pleural effusion", "loc left costophrenic angle"], ["cardiomegaly"]],
            "Pleural effusion in the left costophrenic angle. Cardiomegaly.",
            "Pleural effusion in the costophrenic angle. Cardiomegaly.",
        ),
        (
            [["cardiomegaly", "loc cardiac", "aortic elongation", "loc aortic", "normal"]],
            "Cardiomegaly and elongated aorta.",
            "Cardiomegaly and elongated aorta.",
        ),
        (
            [["apical pleural thickening", "fibrotic band", "loc pleural"]],
            "Apical pleural thickening and fibrotic band.",
            "Apical pleural thickening and fibrotic band.",
        ),
        (
            [["costophrenic angle blunting", "loc left costophrenic angle", "loc costophrenic angle"]],
            "Left costophrenic angle blunting.",
            "Costophrenic angle blunting.",
        ),
        (
            [["central venous catheter via jugular vein", "loc superior cave vein", "loc right", "loc central"]],
            "Right jugular central venous catheter in the superior vena cava.",
            "Jugular central venous catheter in the superior vena cava.",
        ),
        ([["pleural effusion", "loc pleural", "loc right"]], "Right pleural effusion.", "Pleural effusion."),
        ([["pleural effusion left side", "loc pleural", "loc left"]], "Left pleural effusion.", "Pleural effusion."),
        (
            [["pneumonia", "loc left lower lobe", "loc left"]],
            "Pneumonia in the left lower lobe.",
            "Pneumonia in the lower lobe.",
        ),
        (
            [["volume loss", "loc right", "loc hemithorax"]],
            "Volume loss in the right hemithorax.",
            "Volume loss in the hemithorax.",
        ),
        (
            [["pleural effusion", "loc bilateral", "loc costophrenic angle"]],
            "Pleural effusion in both costophrenic angles.",
            "Pleural effusion in the costophrenic angle.",
        ),
        (
            [["laminar atelectasis", "loc basal", "loc subsegmental", "loc left"]],
            "Left subsegmental basal plate-like atelectasis.",
            "Subsegmental basal plate-like atelectasis.",
        ),
        (
            [["hemidiaphragm elevation right side", "loc diaphragm", "loc right"]],
            "Elevated right hemidiaphragm.",
            "Elevated hemidiaphragm.",
        ),
        (
            [["callus rib fracture", "loc bone", "loc rib", "loc right"]],
            "Right rib fracture with callus.",
            "Rib fracture with callus.",
        ),
        (
            [["sclerotic bone lesion", "loc anterior rib"]],
            "Sclerotic bone lesion in an anterior rib.",
            "Sclerotic bone lesion in an anterior rib.",
        ),
        ([["tracheal shift", "loc tracheal", "loc left"]], "Leftward tracheal deviation.", "Tracheal deviation."),
        (
            [["goiter", "tracheal shift", "loc tracheal", "loc left"]],
            "Goiter and tracheal deviation.",
            "Goiter and tracheal deviation.",
        ),
        (
            [["COPD signs", "fibrotic band", "loc apical", "loc right"]],
            "Signs of COPD and right apical fibrotic band.",
            "Signs of COPD and apical fibrotic band.",
        ),
        (
            [["bronchiectasis", "loc left upper lobe", "bronchiectasis", "loc middle lobe"]],
            "Bronchiectasis in the left upper lobe and the middle lobe.",
            "Bronchiectasis in the upper lobe and the middle lobe.",
        ),
        ([["scoliosis", "loc right"]], "Dextroconvex scoliosis.", "Scoliosis."),
        ([["dextrocardia"], ["right sided aortic arch", "loc aortic"]], "Dextrocardia. Right aortic arch.", ""),
    ],
)
def test_a_sentence_reads_in_natural_order(sentences, frontal, lateral):
    assert render_report(sentences).text == frontal
    assert render_report(sentences, sides=False).text == lateral


@pytest.mark.parametrize(
    ("sentences", "text", "sources"),
    [
        ([["exclude", "loc right"], ["cardiomegaly", "loc cardiac"]], "Cardiomegaly.", (1,)),
        ([["exclude"], ["unchanged"], [""], None], "", ()),
        ([["unchanged"], ["pleural effusion", "loc left", "loc pleural", "unchanged"]], "Left pleural effusion.", (1,)),
        ([["nodule", "", "loc right upper lobe"], ["", "loc right"]], "Nodule in the right upper lobe.", (0,)),
        ([None, ["normal"]], NO_ABNORMALITY, (1,)),
        ([["normal", "loc cardiac", "loc mediastinum"]], "Normal cardiac silhouette and mediastinum.", (0,)),
        (
            [["normal"], ["normal", "loc costophrenic angle"], ["normal", "normal"]],
            "No significant abnormality. Normal costophrenic angles.",
            (0, 1),
        ),
        ([["normal", "loc basal", "loc right"]], "Normal right lung base.", (0,)),
        ([["normal", "loc right"]], NO_ABNORMALITY, (0,)),
        ([["normal"], ["scoliosis", "loc right"]], "Dextroconvex scoliosis.", (1,)),
        ([["scoliosis"], ["normal"]], "Scoliosis.", (0,)),
        ([["nodule"], ["normal", "exclude"]], "Nodule.", (0,)),
        ([["scoliosis", "normal", "loc cardiac"]], "Scoliosis.", (0,)),
        ([["normal", "cardiomegaly", "loc cardiac"]], "Cardiomegaly.", (0,)),
        (
            [["cardiomegaly", "loc cardiac"], ["normal", "loc cardiac", "loc costophrenic angle"]],
            "Cardiomegaly. Normal costophrenic angles.",
            (0, 1),
        ),
        (
            [["pleural effusion", "loc right"], ["normal", "loc pleural", "loc left"]],
            "Right pleural effusion. Normal left pleura.",
            (0, 1),
        ),
        ([["pleural effusion", "loc right"], ["normal", "loc pleural", "loc right"]], "Right pleural effusion.", (0,)),
        (
            [["pneumonia", "loc right lower lobe"], ["normal", "loc lower lobe"], ["normal", "loc bone"]],
            "Pneumonia in the right lower lobe. Normal bones.",
            (0, 2),
        ),
        ([["suboptimal study", "loc right"]], "Suboptimal study.", (0,)),
        ([["suboptimal study", "normal"]], "Suboptimal study; no significant abnormality.", (0,)),
        ([["hypoexpansion", "suboptimal study"], ["normal"]], "Hypoexpansion; suboptimal study.", (0,)),
    ],
)
def test_normal_exclude_unchanged_and_empty_items(sentences, text, sources):
    report = render_report(sentences)
    assert (report.text, report.sources) == (text, sources)


# ------------------------------------------------------------------ the reviewed defects, on our own lists


@pytest.mark.parametrize(
    ("sentences", "frontal", "lateral"),
    [
        # a localization or side goes to the last label of the run that can take it, else it is not said
        (
            [["scoliosis", "atelectasis", "loc right", "loc basal"]],
            "Scoliosis and right basal atelectasis.",
            "Scoliosis and basal atelectasis.",
        ),
        (
            [["cardiomegaly", "volume loss", "loc cardiac", "loc basal bilateral"]],
            "Cardiomegaly and bilateral basal volume loss.",
            "Cardiomegaly and basal volume loss.",
        ),
        (
            [
                [
                    "aortic elongation",
                    "cardiomegaly",
                    "reticular interstitial pattern",
                    "loc aortic",
                    "loc cardiac",
                    "loc right",
                    "loc left",
                    "loc hilar bilateral",
                ]
            ],
            "Elongated aorta, cardiomegaly and bilateral hilar reticular interstitial pattern.",
            "Elongated aorta, cardiomegaly and hilar reticular interstitial pattern.",
        ),
        ([["heart insufficiency", "loc perihilar", "loc cardiac", "loc left"]], "Heart failure.", "Heart failure."),
        ([["cardiomegaly", "loc central", "loc cardiac"]], "Cardiomegaly.", "Cardiomegaly."),
        (
            [["cardiomegaly", "loc hilar"], ["cardiomegaly", "loc right", "loc left"]],
            "Cardiomegaly. Cardiomegaly.",
            "Cardiomegaly. Cardiomegaly.",
        ),
        ([["cardiomegaly", "loc left", "loc cardiac"]], "Left-sided cardiomegaly.", "Cardiomegaly."),
        (
            [["kyphosis", "vertebral compression", "loc retrocardiac"]],
            "Kyphosis and vertebral compression.",
            "Kyphosis and vertebral compression.",
        ),
        ([["kyphosis", "nodule", "loc pleural"]], "Kyphosis and pleural nodule.", "Kyphosis and pleural nodule."),
        (
            [["kyphosis", "loc paravertebral", "loc lumbar vertebrae"]],
            "Kyphosis in the lumbar spine.",
            "Kyphosis in the lumbar spine.",
        ),
        (
            [["scoliosis", "pleural thickening", "loc left"]],
            "Scoliosis and left pleural thickening.",
            "Scoliosis and pleural thickening.",
        ),
        ([["COPD signs", "scoliosis", "loc left"]], "Signs of COPD and scoliosis.", "Signs of COPD and scoliosis."),
        (
            [["scoliosis", "loc left", "loc dorsal vertebrae"]],
            "Levoconvex scoliosis in the thoracic spine.",
            "Scoliosis in the thoracic spine.",
        ),
        (
            [["pneumonia", "aortic elongation", "loc left"]],
            "Pneumonia and elongated aorta.",
            "Pneumonia and elongated aorta.",
        ),
        (
            [["pneumonia", "heart insufficiency", "loc left"]],
            "Left pneumonia and heart failure.",
            "Pneumonia and heart failure.",
        ),
        # a place goes after its own label; a label that cannot lie there is not put before it
        (
            [["pleural effusion", "scoliosis", "loc right lower lobe"]],
            "Pleural effusion in the right lower lobe and scoliosis.",
            "Pleural effusion in the lower lobe and scoliosis.",
        ),
        (
            [["nodule", "pleural effusion", "loc left lower lobe"]],
            "Nodule and pleural effusion in the left lower lobe.",
            "Nodule and pleural effusion in the lower lobe.",
        ),
        (
            [["metal", "consolidation", "loc left upper lobe"]],
            "Consolidation in the left upper lobe and metallic material.",
            "Consolidation in the upper lobe and metallic material.",
        ),
        # never a side before a label whose place says the other one
        (
            [["atelectasis", "loc right lower lobe", "loc basal", "loc left"]],
            "Basal atelectasis in the right lower lobe.",
            "Basal atelectasis in the lower lobe.",
        ),
        (
            [["pleural effusion", "loc pleural", "loc left", "loc right lower lobe"]],
            "Pleural effusion in the right lower lobe.",
            "Pleural effusion in the lower lobe.",
        ),
        (
            [["nodule", "loc right upper lobe", "loc bilateral"]],
            "Nodule in the right upper lobe.",
            "Nodule in the upper lobe.",
        ),
        (
            [["pleural effusion", "loc left lower lobe", "loc costophrenic angle", "loc right"]],
            "Pleural effusion in the left lower lobe and the right costophrenic angle.",
            "Pleural effusion in the lower lobe and the costophrenic angle.",
        ),
        (
            [["pleural effusion right side", "loc left costophrenic angle"]],
            "Right pleural effusion.",
            "Pleural effusion.",
        ),
        # a normal part with a side is not said without sides, never as both sides
        ([["normal", "loc costophrenic angle", "loc left"]], "Normal left costophrenic angle.", ""),
        (
            [["normal", "loc lower lobe", "loc right"], ["normal", "loc cardiac"]],
            "Normal right lower lobe. Normal cardiac silhouette.",
            "Normal cardiac silhouette.",
        ),
        ([["normal", "loc hilar", "loc basal", "loc left"]], "Normal left hilum and left lung base.", ""),
        # a run mixing findings with normal makes no normal statement
        ([["pneumonia", "normal", "loc left lower lobe", "loc basal"]], "Pneumonia.", "Pneumonia."),
        (
            [["normal", "pneumonia", "loc left lower lobe"]],
            "Pneumonia in the left lower lobe.",
            "Pneumonia in the lower lobe.",
        ),
        (
            [["nodule", "loc left upper lobe", "nodule", "normal", "loc cardiac"]],
            "Nodule in the left upper lobe.",
            "Nodule in the upper lobe.",
        ),
        # each part said normal once
        (
            [["normal", "loc rib", "loc right", "normal", "loc mediastinum", "normal", "loc rib"]],
            "Normal mediastinum and ribs.",
            "Normal mediastinum and ribs.",
        ),
        (
            [["normal", "loc cardiac"], ["normal", "loc hilar", "loc cardiac"]],
            "Normal cardiac silhouette. Normal hila.",
            "Normal cardiac silhouette. Normal hila.",
        ),
        ([["normal", "loc rib"], ["normal", "loc rib", "loc left"]], "Normal ribs.", "Normal ribs."),
    ],
)
def test_reviewed_defects_stay_fixed(sentences, frontal, lateral):
    assert render_report(sentences).text == frontal
    assert render_report(sentences, sides=False).text == lateral


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("cardiomegaly", "cardiomegaly"),
        ("hemidiaphragm elevation left side", "hemidiaphragm"),
        ("minor fissure thickening", "minor fissure"),
        ("callus rib fracture", "rib fracture"),
        ("suboptimal study", "suboptimal study"),
    ],
)
def test_label_head_is_what_every_statement_of_the_label_holds(name, head):
    assert label_head(name) == head
    for items in ([name], [name, "loc right", "loc basal"], [name, "loc left costophrenic angle"]):
        for sides in (True, False):
            assert head in render_report([items], sides=sides).text.lower()


def test_label_head_refuses_what_is_never_said_and_unknown_labels():
    with pytest.raises(ValueError, match="not said as a finding"):
        label_head("normal")
    with pytest.raises(UnknownPhrase):
        label_head("humming heart")


@pytest.mark.parametrize(
    ("labels", "regions", "message"),
    [
        ({"nodule": {"en": "nodule"}}, {}, "'at' is required for a finding"),
        ({"normal": {"kind": "normal", "at": []}}, {}, "'at' is required for a finding and only there"),
        ({"nodule": {"en": "nodule", "at": ["moon"]}}, {}, "'at' must be"),
        ({"scoliosis": {"en": "scoliosis", "at": [], "sides": "single"}}, {}, "'single' only with side_words"),
        ({}, {"basal": {"in": ["hemithorax"]}}, "has the name of a localization"),
        ({}, {"lungs": {"in": ["left lower lobe"]}}, "unknown or sided"),
    ],
)
def test_the_manifest_says_where_each_finding_can_lie(labels, regions, message):
    with pytest.raises(ValueError, match=message):
        padchest_english._load_labels(labels, LOCS, padchest_english._load_regions(regions, LOCS))


def test_no_abnormality_is_not_said_without_sides_beside_an_unsaid_finding():
    report = render_report([["dextrocardia"], ["normal"]], sides=False)
    assert report.text == ""


def test_sides_are_left_out_of_normal_conflicts_without_sides():
    sentences = [["pleural effusion", "loc right"], ["normal", "loc pleural", "loc left"]]
    assert render_report(sentences, sides=False).text == "Pleural effusion."


def test_labels_name_what_each_sentence_states():
    report = render_report(
        [
            ["normal", "loc cardiac", "cardiomegaly"],
            ["exclude"],
            ["suboptimal study"],
            ["pacemaker", "dual chamber device", "unchanged"],
        ]
    )
    assert report.labels == (("cardiomegaly",), ("suboptimal study",), ("pacemaker", "dual chamber device"))
    assert report.sources == (0, 2, 3)


@pytest.mark.parametrize(
    ("sentences", "phrase"),
    [
        ([["pleural effusion", "loc moon"]], "loc moon"),
        ([["normal"], ["pleural effusion"], ["humming heart"]], "humming heart"),
    ],
)
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
    lambda runs: [item for labels, locs in runs for item in labels + [LOCALIZATION_PREFIX + loc for loc in locs]]
)
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


@settings(max_examples=300, deadline=None)
@given(report=_REPORT, sides=st.booleans())
def test_random_runs_state_every_finding_with_only_its_own_words(report, sides):
    """Any runs of labels and localizations: each finding's head words are said, side words only where a
    localization of that side is annotated (none at all without sides), never right and left in one
    phrase, and no word before a finding that it cannot take."""
    rendered = render_report(report, sides=sides)
    labels, _ = _strings(report)
    lowered = rendered.text.lower()
    assert [label for label in stated_findings(labels, sides=sides) if label_head(label).lower() not in lowered] == []
    assert _side_problems(report, rendered) == [] and _modifier_problems(report, rendered) == []


_NORMAL = st.lists(
    st.sampled_from(["normal", "loc cardiac", "loc right", "loc costophrenic angle", "loc pleural"]), max_size=4
).map(lambda items: ["normal"] + items)


@settings(max_examples=150, deadline=None)
@given(report=st.lists(st.one_of(_SENTENCE, _NORMAL), min_size=1, max_size=5), sides=st.booleans())
def test_normal_never_contradicts_a_finding(report, sides):
    rendered = render_report(report, sides=sides)
    _assert_well_formed(rendered)
    labels, _ = _strings(report)
    normal = [
        clause
        for sentence in rendered.sentences
        for clause in sentence[:-1].lower().split("; ")
        if clause.startswith(("normal ", "no significant abnormality"))
    ]
    if any(LABELS[label].kind == "finding" for label in labels):
        assert not any(clause.startswith("no significant abnormality") for clause in normal)
    if labels & {"cardiomegaly", "heart insufficiency", "pericardial effusion"}:
        assert not any("cardiac silhouette" in clause for clause in normal)
    if not sides and labels & {"pleural effusion", "pleural thickening", "pneumothorax"}:
        assert not any("pleura" in clause for clause in normal)
