"""Attribute mentions (transforms.phrases): one crafted sentence per rule, PadChest sentence labels, and
the laterality check on even-id IU X-ray reports against their human MeSH codes."""

from __future__ import annotations

import re

import pytest
import realdata
from hypothesis import given, settings
from hypothesis import strategies as st

import manifests
from schemas.records import AttributeMention
from transforms.labeler import label_report
from transforms.labels import TAXONOMY
from transforms.phrases import attribute_phrase, attribute_prompt, extract_mentions, mention_regions, padchest_mentions


def only(text: str, finding: str) -> AttributeMention:
    """The single mention of ``finding`` in ``text``."""
    found = [mention for mention in extract_mentions(text) if mention.finding == finding]
    assert len(found) == 1, (text, found)
    return found[0]


# ---------------------------------------------------------------- findings


@pytest.mark.parametrize(
    "text, finding",
    [
        ("There is a small nodule in the right upper lobe.", "Lung Lesion"),
        ("Right hilar mass.", "Lung Lesion"),
        ("Patchy airspace disease at the left base.", "Lung Opacity"),
        ("Streaky scarring in the lingula.", "Lung Opacity"),
        ("Small left pleural fluid collection.", "Pleural Effusion"),
        ("Moderate cardiomegaly.", "Cardiomegaly"),
        ("Right IJ catheter terminates in the SVC.", "Support Devices"),
        ("Healed right rib fractures.", "Fracture"),
        ("Bilateral apical pleural capping.", "Pleural Other"),
        ("Mild interstitial edema.", "Edema"),
    ],
)
def test_finding_is_the_chexpert_name(text, finding):
    assert only(text, finding).presence == 1


@pytest.mark.parametrize(
    "text, hidden",
    [
        ("Small pericardial effusion.", "Pleural Effusion"),
        ("Calcified nodule in the left upper lobe.", "Lung Lesion"),
        ("Massive hiatal hernia.", "Lung Lesion"),
        ("Left pleural scarring.", "Lung Opacity"),
    ],
)
def test_unmention_phrases_are_not_mentions(text, hidden):
    assert hidden not in {mention.finding for mention in extract_mentions(text)}


# ---------------------------------------------------------------- presence


@pytest.mark.parametrize(
    "text, finding, presence",
    [
        ("No focal consolidation, effusion, or pneumothorax.", "Pneumothorax", 0),
        ("No focal consolidation, effusion, or pneumothorax.", "Pleural Effusion", 0),
        ("Lungs are clear without focal infiltrate.", "Lung Opacity", 0),
        ("Heart size is normal.", "Cardiomegaly", 0),
        ("The heart is not enlarged.", "Cardiomegaly", 0),
        ("Normal heart size.", "Cardiomegaly", 0),
        ("Negative for pneumothorax.", "Pneumothorax", 0),
        ("Interval resolution of the left effusion.", "Pleural Effusion", 0),
        ("Cannot exclude a small right pneumothorax.", "Pneumothorax", -1),
        ("A small pneumothorax is not excluded.", "Pneumothorax", -1),
        ("No new consolidation.", "Consolidation", -1),
        ("Opacity at the right base may represent atelectasis.", "Atelectasis", -1),
        ("Findings are suspicious for pneumonia.", "Pneumonia", -1),
        ("Possible small left effusion.", "Pleural Effusion", -1),
        ("Left basilar atelectasis.", "Atelectasis", 1),
        # a pseudo-negation is no negation
        ("No change in the small left effusion.", "Pleural Effusion", 1),
        ("No significant interval change in bibasilar atelectasis.", "Atelectasis", 1),
        # a terminator ends the negation scope
        ("No pneumothorax, but there is a small left effusion.", "Pleural Effusion", 1),
        # a post cue acts inside its own clause only
        ("Heart size is mildly enlarged, pulmonary vascularity within normal limits.", "Cardiomegaly", 1),
        ("Interval clearing of the left basilar opacity.", "Lung Opacity", 0),
    ],
)
def test_presence(text, finding, presence):
    assert only(text, finding).presence == presence


# The hedges of the report labeler (manifests/labeler/cues.yaml): a mention and the report's labels
# agree on presence. "probable" / "likely" state a high likelihood; "less likely" is a hedge.
@pytest.mark.parametrize(
    "text, finding, presence",
    [
        ("Probable right lower lobe pneumonia.", "Pneumonia", 1),
        ("Probable small bilateral pleural effusions.", "Pleural Effusion", 1),
        ("Mild bibasilar airspace disease, probably atelectasis.", "Atelectasis", 1),
        ("Left basilar opacity, likely atelectasis.", "Atelectasis", 1),
        ("Atelectasis is likely.", "Atelectasis", 1),
        ("Pneumonia is less likely.", "Pneumonia", -1),
        ("Less likely pneumonia.", "Pneumonia", -1),
        ("Possible small bilateral pleural effusions.", "Pleural Effusion", -1),
        # the leading diagnosis named as such is a finding; a bare "suggestive of" stays a hedge
        ("Streaky opacities most suggestive of atelectasis.", "Atelectasis", 1),
        ("Bandlike opacity suggestive of atelectasis.", "Atelectasis", -1),
        ("Apical scarring, although difficult to exclude a small nodule.", "Lung Lesion", -1),
    ],
)
def test_presence_agrees_with_the_labeler(text, finding, presence):
    assert only(text, finding).presence == presence
    assert label_report(text)[finding] == presence


def test_negated_mentions_keep_their_attributes():
    mention = only("No large left pleural effusion.", "Pleural Effusion")
    assert (mention.presence, mention.laterality, mention.severity) == (0, "left", (3, 3))


# ---------------------------------------------------------------- laterality and zones


@pytest.mark.parametrize(
    "text, finding, laterality, zones",
    [
        ("Small left apical pneumothorax.", "Pneumothorax", "left", ["upper", "apical"]),
        ("Bibasilar atelectasis.", "Atelectasis", "bilateral", ["lower", "basal"]),
        ("Bilateral pleural effusions.", "Pleural Effusion", "bilateral", []),
        ("Opacities, right greater than left.", "Lung Opacity", "bilateral", []),
        ("Opacity in the right lower lobe and left base.", "Lung Opacity", "bilateral", ["lower", "basal"]),
        ("Effusion on the right.", "Pleural Effusion", "right", []),
        ("RUL consolidation.", "Consolidation", "right", ["upper"]),
        ("Left retrocardiac opacity.", "Lung Opacity", "left", ["lower", "retrocardiac"]),
        (
            "Blunting of the right costophrenic angle by a small effusion.",
            "Pleural Effusion",
            "right",
            ["lower", "costophrenic"],
        ),
        ("Streaky perihilar opacities.", "Lung Opacity", None, ["middle", "perihilar"]),
        ("Scarring in the lingula.", "Lung Opacity", None, ["middle", "lingula"]),
        ("Diffuse interstitial opacities.", "Lung Opacity", None, ["diffuse"]),
        ("Subpleural reticulation.", "Lung Opacity", None, ["peripheral"]),
        ("Scarring in the lung apices.", "Lung Opacity", "bilateral", ["upper", "apical"]),
        # an explicit side wins over the implicit one of a plural zone noun
        ("Atelectasis in the right middle and lower lobes.", "Atelectasis", "right", ["middle", "lower"]),
    ],
)
def test_laterality_and_zones(text, finding, laterality, zones):
    mention = only(text, finding)
    assert (mention.laterality, mention.zones) == (laterality, zones)


def test_modifiers_bind_within_their_clause_to_the_nearest_finding():
    mentions = {m.finding: m for m in extract_mentions("Small left pleural effusion with right basilar atelectasis.")}
    assert mentions["Pleural Effusion"].laterality == "left" and mentions["Pleural Effusion"].severity == (1, 1)
    assert mentions["Atelectasis"].laterality == "right" and mentions["Atelectasis"].severity is None
    mentions = {m.finding: m for m in extract_mentions("Left effusion and right pneumothorax.")}
    assert (mentions["Pleural Effusion"].laterality, mentions["Pneumothorax"].laterality) == ("left", "right")


def test_laterality_never_binds_to_the_heart():
    mentions = extract_mentions("The heart is enlarged with a left effusion.")
    assert [(m.finding, m.laterality) for m in mentions] == [("Cardiomegaly", None), ("Pleural Effusion", "left")]


def sides(text: str) -> list[tuple[str, str | None]]:
    return [(m.finding, m.laterality) for m in extract_mentions(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        # heart chambers, heart borders, mediastinal vessels and airways carry their own side
        (
            "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
            [("Support Devices", "left")],
        ),
        ("Left PICC with tip in the right atrium.", [("Support Devices", "left")]),
        ("Catheter tip projects over the right atrium.", [("Support Devices", None)]),
        ("Pacer leads in the right atrial and right ventricular positions.", [("Support Devices", None)]),
        ("Endotracheal tube tip in the right mainstem bronchus.", [("Support Devices", None)]),
        ("Left subclavian catheter with its tip in the left brachiocephalic vein.", [("Support Devices", "left")]),
        ("Nodule projecting over the left heart border.", [("Lung Lesion", None)]),
        ("Subsegmental atelectasis overlying the left ventricle.", [("Atelectasis", None)]),
        ("Right-sided aortic arch and a small left effusion.", [("Pleural Effusion", "left")]),
        ("Right paratracheal mass.", [("Lung Lesion", "right")]),  # the mass's own side
    ],
)
def test_sides_of_other_structures_do_not_lateralise(text, expected):
    assert sides(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # a device's side: a side word before it, or where it sits
        ("Right internal jugular line tip in the SVC.", [("Support Devices", "right")]),
        ("Left chest wall pacemaker.", [("Support Devices", "left")]),
        ("Stable left-sided ICD.", [("Support Devices", "left")]),
        ("Cardiac pacemaker generator overlies the left hemithorax.", [("Support Devices", "left")]),
        ("Port on the right with the catheter tip in the SVC.", [("Support Devices", "right")]),
        (
            "Chest tube in the right hemithorax, small right apical pneumothorax.",
            [("Support Devices", "right"), ("Pneumothorax", "right")],
        ),
        # ...never from where its tip lies, nor from a finding nearby; without a side it has none
        ("Nasogastric tube courses below the left hemidiaphragm.", [("Support Devices", None)]),
        ("Tracheostomy tube near a right upper lobe opacity.", [("Support Devices", None), ("Lung Opacity", "right")]),
        ("Endotracheal tube in good position.", [("Support Devices", None)]),
        ("Feeding tube, and left basilar atelectasis.", [("Support Devices", None), ("Atelectasis", "left")]),
    ],
)
def test_device_side_comes_from_the_device_itself(text, expected):
    assert sides(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Left chest wall AICD generator.", [("Support Devices", "left")]),  # one device, one mention
        ("Right humeral internal fixation hardware.", [("Support Devices", "right")]),
        ("Biliary stent in the right upper quadrant.", [("Support Devices", "right")]),
        ("Calcified right hilar nodes from prior granulomatous infection.", []),  # healed, not pneumonia
    ],
)
def test_added_device_and_unmention_phrases(text, expected):
    assert sides(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # bilateral: both sides stated for the finding, "bilateral", "bibasilar", plural effusions
        ("Small right and left effusions.", [("Pleural Effusion", "bilateral")]),
        ("Small effusions.", [("Pleural Effusion", "bilateral")]),
        ("Opacities in both lungs.", [("Lung Opacity", "bilateral")]),
        ("Small effusions, right greater than left.", [("Pleural Effusion", "bilateral")]),
        ("Small right effusion. No left effusion.", [("Pleural Effusion", "right"), ("Pleural Effusion", "left")]),
        # "both" of anything but the chest is no side
        ("Small right pleural effusion, visible on both PA and lateral views.", [("Pleural Effusion", "right")]),
    ],
)
def test_bilateral_needs_both_sides(text, expected):
    assert sides(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # each side at its own height: one mention per side, each with its zones
        (
            "Patchy left apical and right basilar airspace disease.",
            [("left", ["upper", "apical"]), ("right", ["lower", "basal"])],
        ),
        ("Right upper and left lower lobe airspace disease.", [("right", ["upper"]), ("left", ["lower"])]),
        (
            "Haziness in the right lung and left base, which could represent infiltrate.",
            [("right", []), ("left", ["lower", "basal"])],
        ),
        # the same height, or sides sharing one height, stay one bilateral mention
        ("Increase in right and decrease in left basilar atelectasis.", [("bilateral", ["lower", "basal"])]),
        ("Right and left lower lobe opacities.", [("bilateral", ["lower"])]),
    ],
)
def test_sides_at_different_heights_are_separate_mentions(text, expected):
    assert [(m.laterality, m.zones) for m in extract_mentions(text)] == expected


# ---------------------------------------------------------------- severity and temporal cues


@pytest.mark.parametrize(
    "text, finding, severity, scale",
    [
        ("Trace left pleural effusion.", "Pleural Effusion", (0, 0), "size"),
        ("Small right pneumothorax.", "Pneumothorax", (1, 1), "size"),
        ("Mild cardiomegaly.", "Cardiomegaly", (1, 1), "severity"),
        ("Heart size is mildly enlarged.", "Cardiomegaly", (1, 1), "severity"),
        ("Moderate right effusion.", "Pleural Effusion", (2, 2), "size"),
        ("Moderate pulmonary edema.", "Edema", (2, 2), "severity"),
        ("Large left pleural effusion.", "Pleural Effusion", (3, 3), "size"),
        ("Severe cardiomegaly.", "Cardiomegaly", (3, 3), "severity"),
        ("Mild to moderate pulmonary edema.", "Edema", (1, 2), "severity"),
        ("Small-to-moderate left effusion.", "Pleural Effusion", (1, 2), "size"),
        ("Moderate-to-large right effusion.", "Pleural Effusion", (2, 3), "size"),
        ("Left lower lobe consolidation.", "Consolidation", None, None),
    ],
)
def test_severity_is_an_ordinal_range_with_its_scale(text, finding, severity, scale):
    mention = only(text, finding)
    assert (mention.severity, mention.severity_scale) == (severity, scale)


@pytest.mark.parametrize(
    "text, finding, temporal",
    [
        ("New left lower lobe consolidation.", "Consolidation", "new"),
        ("Increased right pleural effusion.", "Pleural Effusion", "worsened"),
        ("Improved left basilar atelectasis.", "Atelectasis", "improved"),
        ("Stable mild cardiomegaly.", "Cardiomegaly", "no change"),
        ("Right apical scarring is unchanged.", "Lung Opacity", "no change"),
        ("Interval resolution of the left effusion.", "Pleural Effusion", "resolved"),
        ("Chronic left rib fractures.", "Fracture", "chronic"),
        ("Mild to moderate pulmonary edema, worsened since the prior study.", "Edema", "worsened"),
    ],
)
def test_temporal_cue_is_separate_from_severity(text, finding, temporal):
    assert only(text, finding).temporal == temporal


def test_increased_density_is_a_finding_not_a_temporal_cue():
    assert only("Increased density at the right base.", "Lung Opacity").temporal is None


# ---------------------------------------------------------------- sentences and spans


# Reports as they arrive: CRLF line ends and MIMIC's line breaks with a leading space inside sentences.
@pytest.mark.parametrize(
    "text, finding, presence",
    [
        ("Cannot\n exclude pneumonia.", "Pneumonia", -1),
        ("Cannot\r\n exclude pneumonia.", "Pneumonia", -1),
        ("Pneumonia cannot\r\n be excluded.", "Pneumonia", -1),
        ("A small right pneumothorax is not\n excluded.", "Pneumothorax", -1),
        ("Possible\r\nleft lower lobe pneumonia.", "Pneumonia", -1),
        ("No\n pneumothorax.", "Pneumothorax", 0),
        ("No\r\n focal consolidation,\r\n effusion or\r\n pneumothorax.", "Pneumothorax", 0),
        ("Heart size is\r\n within normal\r\n limits.", "Cardiomegaly", 0),
        ("No significant\r\n change in the left\r\n effusion.", "Pleural Effusion", 1),
    ],
)
def test_line_broken_cues_read_as_on_one_line(text, finding, presence):
    assert only(text, finding).presence == presence


def test_crlf_report_gives_the_mentions_of_its_lf_twin_with_original_spans():
    lf = (
        "FINDINGS:\n Small left\n pleural effusion.  Cannot exclude\n early pneumonia.\n\n"
        "IMPRESSION:\n 1. No\n pneumothorax."
    )
    crlf = lf.replace("\n", "\r\n")
    plain, windows = extract_mentions(lf), extract_mentions(crlf)
    strip = ("sentence", "span")
    assert [m.model_dump(exclude=set(strip)) for m in windows] == [m.model_dump(exclude=set(strip)) for m in plain]
    assert [(m.finding, m.presence, m.laterality) for m in windows] == [
        ("Pleural Effusion", 1, "left"),
        ("Pneumonia", -1, None),
        ("Pneumothorax", 0, None),
    ]
    # sentence is the ORIGINAL text between the span's offsets, CR, LF and repeated spaces kept
    for text, mentions in ((lf, plain), (crlf, windows)):
        for mention in mentions:
            assert text[slice(*mention.span)] == mention.sentence
    assert windows[0].sentence == "FINDINGS:\r\n Small left\r\n pleural effusion."
    assert windows[1].sentence == "Cannot exclude\r\n early pneumonia."


def test_sentence_and_span_point_into_the_input_text():
    text = "FINDINGS:\n  Heart size normal.  Small left\neffusion.\n\nIMPRESSION:\n1. Small left effusion."
    mentions = extract_mentions(text)
    assert [m.finding for m in mentions] == ["Cardiomegaly", "Pleural Effusion", "Pleural Effusion"]
    for mention in mentions:
        assert text[mention.span[0] : mention.span[1]] == mention.sentence
    assert mentions[1].sentence == "Small left\neffusion." and mentions[1].laterality == "left"
    assert mentions[2].sentence == "1. Small left effusion."


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "No effusion.",
                "Small left effusion",
                " and ",
                "moderate",
                "\n",
                "  ",
                "\r\n",
                "\n ",
                "Cannot\r\n exclude",
                "Heart size normal",
                ", ",
                "bibasilar opacities",
                "right upper and left lower lobe opacities",
                "1. ",
                "XXXX",
            ]
        ),
        max_size=12,
    )
)
def test_every_span_slices_its_sentence(pieces):
    text = "".join(pieces)
    for mention in extract_mentions(text):
        assert text[mention.span[0] : mention.span[1]] == mention.sentence
        assert mention.sentence.strip() == mention.sentence


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="must be str"):
        extract_mentions(None)


# ---------------------------------------------------------------- IMT-CXR-style prompts


def test_attribute_prompt_renders_positive_mentions_only():
    mentions = extract_mentions(
        "Small left apical pneumothorax. Moderate cardiomegaly. No pleural effusion. Possible right basilar "
        "consolidation. Bibasilar atelectasis. Mild to moderate pulmonary edema."
    )
    assert attribute_prompt(mentions) == (
        "small left apical pneumothorax, moderate cardiomegaly, bilateral basal atelectasis, "
        "mild to moderate pulmonary edema"
    )
    assert attribute_prompt([]) == ""


def test_attribute_phrase_without_attributes_is_the_finding():
    mention = AttributeMention(finding="Lung Lesion", presence=1, sentence="Nodule.", span=(0, 7))
    assert attribute_phrase(mention) == "lung nodule or mass"
    with pytest.raises(ValueError, match="no phrase"):
        attribute_phrase(mention.model_copy(update={"finding": "Scoliosis"}))


# ---------------------------------------------------------------- PadChest sentence labels


def test_padchest_labels_and_localizations_become_mentions():
    mentions = padchest_mentions(
        [
            ["alveolar pattern", "interstitial pattern", "loc basal", "loc left"],
            ["pleural effusion left side"],
            None,
            ["heart insufficiency", "loc cardiac", "pacemaker", "loc right"],
            ["normal"],
            ["scoliosis", "", "loc right", "exclude"],
        ]
    )
    summary = [(m.finding, m.presence, m.laterality, m.zones) for m in mentions]
    assert summary == [
        ("Lung Opacity", 1, "left", ["lower", "basal"]),  # two labels, one category: one mention
        ("Pleural Effusion", 1, "left", []),
        ("Edema", 1, None, []),
        ("Cardiomegaly", -1, None, []),
        ("Support Devices", 1, "right", []),
    ]
    joined = " . ".join(
        [
            "alveolar pattern, interstitial pattern, loc basal, loc left",
            "pleural effusion left side",
            "",
            "heart insufficiency, loc cardiac, pacemaker, loc right",
            "normal",
            "scoliosis, , loc right, exclude",
        ]
    )
    for mention in mentions:
        assert joined[mention.span[0] : mention.span[1]] == mention.sentence


def test_padchest_severity_stems_grade_only_a_sentence_of_one_finding():
    labels = [["pleural effusion", "loc pleural", "loc right"], ["cardiomegaly", "loc cardiac"]]
    graded = padchest_mentions(labels, "pequen derram pleural derech . moder cardiomegali .")
    assert [(m.finding, m.severity, m.severity_scale) for m in graded] == [
        ("Pleural Effusion", (1, 1), "size"),
        ("Cardiomegaly", (2, 2), "severity"),
    ]
    # the report's sentences do not line up with the label lists: no grade anywhere
    assert all(m.severity is None for m in padchest_mentions(labels, "grand derram pleural derech ."))
    # one sentence, two findings: the word cannot be given to either
    both = padchest_mentions([["pleural effusion", "cardiomegaly"]], "grand derram pleural y cardiomegali .")
    assert [(m.finding, m.severity) for m in both] == [("Pleural Effusion", None), ("Cardiomegaly", None)]


def test_padchest_bilateral_localizations():
    (mention,) = padchest_mentions([["infiltrates", "loc perihilar", "loc basal bilateral"]])
    assert (mention.laterality, mention.zones) == ("bilateral", ["middle", "lower", "perihilar", "basal"])


@pytest.mark.parametrize(
    "items, message",
    [
        (["pleural efusion"], "neither mapped nor listed"),
        (["pleural effusion", "loc nowhere"], "not in manifests/attributes.yaml"),
        (["loc left", "pleural effusion"], "before any label"),
    ],
)
def test_padchest_unknown_strings_are_errors(items, message):
    with pytest.raises(ValueError, match=message):
        padchest_mentions([items])


# ---------------------------------------------------------------- IU X-ray (even ids) against MeSH
# Matching, per report: the gold set is the lateralities (left / right / bilateral) written in the
# report's MeSH/major terms whose heading is one of MESH_FINDINGS (lung, pleura and device findings the
# extractor covers; bones, spine, aorta, granulomas, diaphragm are out of scope). The predicted set is
# the lateralities of the mentions that are not negated (presence 1 or -1: MeSH indexers code suspected
# findings too). Micro-F1 over (report, laterality) pairs of all even-id reports, findings + impression.

MESH_FINDINGS = {
    "Opacity": "Lung Opacity",
    "Density": "Lung Opacity",
    "Airspace Disease": "Lung Opacity",
    "Infiltrate": "Lung Opacity",
    "Cicatrix": "Lung Opacity",
    "Markings": "Lung Opacity",
    "Lung Diseases, Interstitial": "Lung Opacity",
    "Pulmonary Atelectasis": "Atelectasis",
    "Pleural Effusion": "Pleural Effusion",
    "Hydropneumothorax": "Pneumothorax",
    "Nodule": "Lung Lesion",
    "Mass": "Lung Lesion",
    "Cavitation": "Lung Lesion",
    "Pneumonia": "Pneumonia",
    "Consolidation": "Consolidation",
    "Pneumothorax": "Pneumothorax",
    "Pulmonary Edema": "Edema",
    "Pulmonary Congestion": "Edema",
    "Fractures, Bone": "Fracture",
    "Catheters, Indwelling": "Support Devices",
    "Implanted Medical Device": "Support Devices",
    "Tube, Inserted": "Support Devices",
    "Medical Device": "Support Devices",
    "Stents": "Support Devices",
    "Thickening": "Pleural Other",
    "Pulmonary Fibrosis": "Pleural Other",
    "Cardiomegaly": "Cardiomegaly",
}
SIDES = {"left", "right", "bilateral"}
MESH_SEVERITY = {"mild": 1, "small": 1, "borderline": 1, "moderate": 2, "severe": 3, "large": 3}
NAIVE_SIDE = re.compile(r"\b(left|right|bilateral(?:ly)?|bi-?basilar|bibasal|biapical)\b")


def naive_lateralities(text: str) -> set[str]:
    """Baseline: every laterality word anywhere in the report."""
    return {"bilateral" if word.startswith("bi") else word for word in NAIVE_SIDE.findall(text.lower())}


def micro_f1(pairs: list[tuple[set, set]]) -> tuple[float, float, float]:
    tp = sum(len(gold & pred) for gold, pred in pairs)
    fp = sum(len(pred - gold) for gold, pred in pairs)
    fn = sum(len(gold - pred) for gold, pred in pairs)
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return 2 * precision * recall / max(precision + recall, 1e-12), precision, recall


@pytest.fixture(scope="module")
def iu_reports(tmp_path_factory):
    return realdata.iu_development_reports(tmp_path_factory.mktemp("iu"))


def test_iu_lateralities_match_mesh(iu_reports):
    ours, naive = [], []
    for report in iu_reports:
        text = " ".join(part for part in (report.findings, report.impression) if part)
        gold = {
            side
            for term in report.mesh_major
            if term.split("/")[0] in MESH_FINDINGS
            for side in SIDES & set(term.split("/")[1:])
        }
        mentions = extract_mentions(text)
        ours.append((gold, {m.laterality for m in mentions if m.presence != 0 and m.laterality}))
        naive.append((gold, naive_lateralities(text)))
    f1, precision, recall = micro_f1(ours)
    naive_f1, naive_precision, naive_recall = micro_f1(naive)
    print(
        f"\nIU even ids ({len(iu_reports)} reports) laterality micro-F1: extractor {f1:.3f} "
        f"(P {precision:.3f} R {recall:.3f}); any-laterality-word baseline {naive_f1:.3f} "
        f"(P {naive_precision:.3f} R {naive_recall:.3f})"
    )
    assert len(iu_reports) == 1976
    assert f1 >= 0.90 and f1 > naive_f1


def test_iu_severity_agreement_with_mesh(iu_reports):
    """Per (report, MeSH finding with a severity word): does the extractor's ordinal range for that
    CheXpert category contain the MeSH ordinal? Printed, with coverage; a floor guards regressions."""
    agree = stated = total = 0
    for report in iu_reports:
        text = " ".join(part for part in (report.findings, report.impression) if part)
        ranges: dict[str, list[tuple[int, int]]] = {}
        for mention in extract_mentions(text):
            if mention.presence != 0 and mention.severity is not None:
                ranges.setdefault(mention.finding, []).append(mention.severity)
        for term in report.mesh_major:
            head, *modifiers = term.split("/")
            words = [MESH_SEVERITY[word] for word in modifiers if word in MESH_SEVERITY]
            if head not in MESH_FINDINGS or not words:
                continue
            total += 1
            found = ranges.get(MESH_FINDINGS[head], [])
            stated += bool(found)
            agree += any(low <= words[0] <= high for low, high in found)
    print(
        f"\nIU even ids severity vs MeSH: {total} coded (finding, severity) pairs; extractor states a "
        f"severity for {stated} ({stated / total:.2f}); range contains the MeSH ordinal for {agree} "
        f"({agree / total:.2f} of all, {agree / max(stated, 1):.2f} of stated)"
    )
    assert total > 100 and agree / max(stated, 1) >= 0.8


def test_vocabulary_covers_exactly_the_chexpert_findings():
    findings = set(manifests.load("attributes.yaml")["findings"])
    assert findings == set(TAXONOMY) - {"No Finding"}
    assert set(manifests.load("severity.yaml")["ordinal"]["weights"]) == findings


@pytest.mark.parametrize(
    "text, system, regions",
    [
        ("Left basilar opacity.", "imagenome-regions", ["left lower lung zone"]),
        ("Bibasilar atelectasis.", "imagenome-regions", ["left lower lung zone", "right lower lung zone"]),
        ("Right perihilar opacity.", "imagenome-regions", ["right hilar structures"]),
        ("Small left apical pneumothorax.", "imagenome-regions", ["left apical zone"]),
        (
            "Blunting of the left costophrenic angle by a small effusion.",
            "imagenome-regions",
            ["left costophrenic angle"],
        ),
        ("Right effusion.", "imagenome-regions", ["right lung"]),
        ("Bibasilar atelectasis.", "chexmask-organs", ["left lung", "right lung"]),
        ("Right upper and left lower lobe airspace disease.", "imagenome-regions", ["left lower lung zone"]),
        ("Basilar atelectasis.", "imagenome-regions", []),
        ("Mild cardiomegaly.", "imagenome-regions", []),
    ],
)
def test_mention_regions_bridge_to_boxes_and_masks(text, system, regions):
    assert mention_regions(extract_mentions(text)[-1], system) == regions
