"""The CheXpert-style report labeler (transforms/labeler.py): reference outputs, one test per rule,
the IU X-ray development score against NegBio's gold, and the CheXbert backend on a tiny random model."""

from __future__ import annotations

import csv
import importlib.util
import json
import re

import pytest
import realdata

from transforms import chexbert, labeler
from transforms.labeler import OBSERVATIONS, clean_for_labeling, extract_label_mentions, label_report

SAMPLES = realdata.DATA / "reports" / "chexpert_labeler_sample_reports.csv"
LABELED = realdata.DATA / "reports" / "chexpert_labeler_labeled_reports.csv"


def _row(**values: float) -> dict[str, float | None]:
    return {name: values.get(name.replace(" ", "_"), None) for name in OBSERVATIONS}


# ---------------------------------------------------------------- the CheXpert labeler's own outputs


def test_reproduces_the_chexpert_labeler_on_its_sample_reports():
    if not (SAMPLES.is_file() and LABELED.is_file()):
        pytest.skip(f"reference reports not found under {SAMPLES.parent}")
    with SAMPLES.open(newline="") as handle:
        reports = [row[0] for row in csv.reader(handle)]
    with LABELED.open(newline="") as handle:
        expected = list(csv.DictReader(handle))
    assert [row["Reports"] for row in expected] == reports
    for report, row in zip(reports, expected, strict=True):
        want = {name: float(row[name]) if row[name] else None for name in OBSERVATIONS}
        assert label_report(report) == want, report


# ---------------------------------------------------------------- one rule at a time

RULES = [
    # (report, expected non-None labels); No Finding is written out where it is 1.
    ("Small left pleural effusion.", dict(Pleural_Effusion=1.0)),
    ("No pneumothorax.", dict(Pneumothorax=0.0, No_Finding=1.0)),
    # negation scope: a forward cue covers a list, and stops at "but" / "however" / "although"
    (
        "No focal consolidation, effusion, or pneumothorax.",
        dict(Consolidation=0.0, Pleural_Effusion=0.0, Pneumothorax=0.0, No_Finding=1.0),
    ),
    ("No pneumothorax, but there is a small right effusion.", dict(Pneumothorax=0.0, Pleural_Effusion=1.0)),
    ("No pneumothorax; however, patchy atelectasis is seen at the left base.", dict(Pneumothorax=0.0, Atelectasis=1.0)),
    ("Without edema, although a small effusion persists.", dict(Edema=0.0, Pleural_Effusion=1.0)),
    ("Cardiomegaly without pulmonary edema.", dict(Cardiomegaly=1.0, Edema=0.0)),
    # post-negation cues look backwards
    ("A pneumothorax is not seen.", dict(Pneumothorax=0.0, No_Finding=1.0)),
    ("The previously noted effusion has resolved.", dict(Pleural_Effusion=0.0, No_Finding=1.0)),
    ("The heart is not significantly enlarged.", dict(Cardiomegaly=0.0, No_Finding=1.0)),
    (
        "Heart size and mediastinal contours are within normal limits.",
        dict(Cardiomegaly=0.0, Enlarged_Cardiomediastinum=0.0, No_Finding=1.0),
    ),
    # uncertainty before negation: "cannot exclude", "not excluded", "no new" are uncertain
    ("Cannot exclude early pneumonia.", dict(Pneumonia=-1.0)),
    ("A small pneumothorax is not excluded.", dict(Pneumothorax=-1.0)),
    ("No new consolidation.", dict(Consolidation=-1.0)),
    # uncertainty after negation
    ("Possible right lower lobe pneumonia.", dict(Pneumonia=-1.0)),
    ("Bibasilar opacities may represent atelectasis.", dict(Lung_Opacity=1.0, Atelectasis=-1.0)),
    ("Mild pulmonary vascular congestion.", dict(Edema=-1.0)),
    # pseudo-negations decide nothing
    ("No change in the small left pleural effusion.", dict(Pleural_Effusion=1.0)),
    ("Not only cardiomegaly but also edema.", dict(Cardiomegaly=1.0, Edema=1.0)),
    # an unchanged, unquantified heart is uncertain; a stated cardiomegaly stays positive
    ("Stable cardiomediastinal silhouette.", dict(Enlarged_Cardiomediastinum=-1.0)),
    ("Heart size is unchanged.", dict(Cardiomegaly=-1.0)),
    ("Stable mild cardiomegaly.", dict(Cardiomegaly=1.0)),
    ("Stable enlargement of the heart.", dict(Cardiomegaly=1.0)),
    # "chf" / "heart failure" also say Cardiomegaly -1, unless negated
    ("Findings of congestive heart failure.", dict(Edema=1.0, Cardiomegaly=-1.0)),
    ("No evidence of chf.", dict(Edema=0.0, No_Finding=1.0)),
    # unmentions: places and lookalikes are not findings
    ("Calcified nodule over the left heart border.", dict()),
    ("Plate-like atelectasis at the left base.", dict(Atelectasis=1.0)),
    ("Massive right pleural effusion.", dict(Pleural_Effusion=1.0)),
    # No Finding: support devices do not block it, other findings (incl. the "other" list) do
    ("Right PICC line tip in the SVC. No pneumothorax.", dict(Support_Devices=1.0, Pneumothorax=0.0, No_Finding=1.0)),
    ("Calcified granuloma in the right upper lobe. No pneumothorax.", dict(Pneumothorax=0.0)),
    ("No acute cardiopulmonary abnormality.", dict(No_Finding=1.0)),
    ("", dict(No_Finding=1.0)),
    # the loader's normalisation: and/or and slashes become "or" (so a differential: uncertain)
    ("Left base atelectasis/scarring.", dict(Atelectasis=-1.0, Lung_Opacity=-1.0)),
    ("Possible atelectasis/scarring.", dict(Atelectasis=-1.0, Lung_Opacity=-1.0)),
]

# Our rules beyond the CheXpert labeler's lists (manifests/labeler/*.yaml, "added"), one sentence each.
ADDED_RULES = [
    # a differential leaves its alternatives uncertain (the CheXpert labeler's reading, the default);
    # what the radiologist sees beside it stays positive, and a negation covers a whole list
    ("Streaky opacity, atelectasis versus scarring.", dict(Lung_Opacity=1.0, Atelectasis=-1.0)),
    ("Right basilar opacity, atelectasis or infiltrate.", dict(Lung_Opacity=1.0, Atelectasis=-1.0)),
    ("Opacity may represent atelectasis or pneumonia.", dict(Lung_Opacity=1.0, Atelectasis=-1.0, Pneumonia=-1.0)),
    ("No effusion or pneumothorax.", dict(Pleural_Effusion=0.0, Pneumothorax=0.0, No_Finding=1.0)),
    (
        "No significant change in the right pneumothorax or pleural fluid.",
        dict(Pneumothorax=-1.0, Pleural_Effusion=-1.0),
    ),
    # "probable" states a high likelihood; "possible" stays a hedge
    ("Probable small bilateral pleural effusions.", dict(Pleural_Effusion=1.0)),
    ("Probable right lower lobe pneumonia.", dict(Pneumonia=1.0)),
    ("Possible small bilateral pleural effusions.", dict(Pleural_Effusion=-1.0)),
    # proposals are hedges: suggest*, favored, "a consideration", "also possible", "may also be"
    ("Bandlike opacity suggestive of atelectasis.", dict(Lung_Opacity=1.0, Atelectasis=-1.0)),
    ("Findings suggest early pneumonia.", dict(Pneumonia=-1.0)),
    ("Lingular opacity, favored to represent atelectasis.", dict(Lung_Opacity=1.0, Atelectasis=-1.0)),
    ("Atypical infection is another consideration.", dict(Pneumonia=-1.0)),
    ("Aspiration or edema is also possible.", dict(Edema=-1.0)),
    ("There may also be a small left effusion.", dict(Pleural_Effusion=-1.0)),
    # ...but the leading diagnosis, named as such, is a finding
    ("Streaky opacities most suggestive of atelectasis.", dict(Lung_Opacity=1.0, Atelectasis=1.0)),
    # reasons for looking are not findings
    ("Evaluation for pneumothorax is limited by patient rotation.", dict(Pneumothorax=-1.0)),
    ("Correlate with symptoms of infection.", dict(Pneumonia=-1.0)),
    # a negating prefix inside the word
    ("Nonconsolidating airspace disease in the right lower lobe.", dict(Lung_Opacity=1.0, Consolidation=0.0)),
    ("Non-consolidative opacity at the left base.", dict(Lung_Opacity=1.0, Consolidation=0.0)),
    # mention phrases: "heart is" without "the", pleural air, stents; places over the heart
    ("Heart is large.", dict(Cardiomegaly=1.0)),
    ("Heart is not enlarged.", dict(Cardiomegaly=0.0, No_Finding=1.0)),
    ("Small medial pleural air collection at the left apex.", dict(Pneumothorax=1.0)),
    ("Coronary artery stents. No pneumothorax.", dict(Support_Devices=1.0, Pneumothorax=0.0, No_Finding=1.0)),
    ("Small nodule projecting over the middle cardiac silhouette.", dict(Lung_Lesion=1.0)),
]


@pytest.mark.parametrize(("report", "expected"), ADDED_RULES, ids=[r for r, _ in ADDED_RULES])
def test_added_rule(report, expected):
    assert label_report(report) == _row(**expected)


# Reports as they arrive: CRLF line ends, MIMIC's line breaks with a leading space inside sentences,
# paragraphs and numbered lines without a full stop.
LAYOUT = [
    ("Cannot\n exclude pneumonia.", dict(Pneumonia=-1.0)),
    ("Cannot\r\n exclude pneumonia.", dict(Pneumonia=-1.0)),
    ("Pneumonia cannot\r\n be excluded.", dict(Pneumonia=-1.0)),
    ("A small pneumothorax\n is not excluded.", dict(Pneumothorax=-1.0)),
    ("No\n pneumothorax.", dict(Pneumothorax=0.0, No_Finding=1.0)),
    (
        "No\r\n focal consolidation,\r\n effusion or\r\n pneumothorax.",
        dict(Consolidation=0.0, Pleural_Effusion=0.0, Pneumothorax=0.0, No_Finding=1.0),
    ),
    ("Possible\rright lower lobe pneumonia.", dict(Pneumonia=-1.0)),  # a lone CR (old Mac files)
    # a paragraph or a numbered line ends the sentence, so the negation does not reach past it
    ("No pneumothorax\r\n\r\nIMPRESSION: Small left effusion", dict(Pneumothorax=0.0, Pleural_Effusion=1.0)),
    ("1. No pneumothorax\n2. Small left effusion", dict(Pneumothorax=0.0, Pleural_Effusion=1.0)),
    ("No pneumothorax  \n \n- Small left effusion", dict(Pneumothorax=0.0, Pleural_Effusion=1.0)),
]


@pytest.mark.parametrize(("report", "expected"), LAYOUT, ids=[repr(r) for r, _ in LAYOUT])
def test_line_breaks_read_as_on_one_line(report, expected):
    assert label_report(report) == _row(**expected)


def test_crlf_and_leading_space_layout_label_like_the_flat_report():
    flat = (
        "Heart size is normal. There is no focal consolidation, pleural effusion or pneumothorax. "
        "A small left basilar opacity may represent atelectasis. Cannot exclude early pneumonia."
    )
    mimic = flat.replace(" focal", "\n focal").replace(" may", "\n may").replace(" exclude", "\n exclude")
    assert "\n " in mimic
    for text in (mimic, mimic.replace("\n", "\r\n"), flat.replace(". ", ".\r\n")):
        assert clean_for_labeling(text) == clean_for_labeling(flat)
        assert extract_label_mentions(text) == extract_label_mentions(flat)


def test_differential_reading_can_name_every_alternative(monkeypatch):
    """``differential.reading: positive`` counts each alternative as mentioned, as the OpenI gold
    annotators do (macro F1 0.942 against 0.904 with the default); the default stays the CheXpert
    labeler's, which does not turn a differential into a finding the radiologist did not commit to."""
    real_load = labeler.manifests.load

    def positive_reading(name):
        data = real_load(name)
        if name == "labeler/cues.yaml":
            data = json.loads(json.dumps(data))
            data["differential"]["reading"] = "positive"
        return data

    monkeypatch.setattr(labeler.manifests, "load", positive_reading)
    labeler.load_rules.cache_clear()
    labeler._pipeline.cache_clear()
    try:
        assert label_report("Streaky opacity, atelectasis versus scarring.") == _row(Lung_Opacity=1.0, Atelectasis=1.0)
        assert label_report("Left base atelectasis/scarring.") == _row(Atelectasis=1.0, Lung_Opacity=1.0)
        assert label_report("Opacity may represent atelectasis or pneumonia.") == _row(
            Lung_Opacity=1.0, Atelectasis=-1.0, Pneumonia=-1.0
        )  # a hedge word still covers all of them
    finally:
        labeler.load_rules.cache_clear()
        labeler._pipeline.cache_clear()


@pytest.mark.parametrize(("report", "expected"), RULES, ids=[r or "<empty>" for r, _ in RULES])
def test_rule(report, expected):
    assert label_report(report) == _row(**expected)


def test_mentions_carry_their_deciding_cue():
    (mention,) = [m for m in extract_label_mentions("Cannot exclude pneumonia.") if m.observation == "Pneumonia"]
    assert (mention.text, mention.value, mention.cue) == ("pneumonia", -1.0, "cannot exclude")
    (mention,) = [m for m in extract_label_mentions("Nonconsolidating opacity.") if m.observation == "Consolidation"]
    assert (mention.text, mention.value, mention.cue) == ("nonconsolidating", 0.0, "non")


def test_cleaning_follows_the_chexpert_loader():
    assert clean_for_labeling("Lungs  CLEAR..No edema,effusion and/or PTX.\nAP/PA") == (
        "lungs clear. no edema, effusion or ptx. ap or pa"
    )
    assert clean_for_labeling("Tip 2.5 cm above the carina.") == "tip 2.5 cm above the carina."


def test_cleaning_normalises_line_ends_and_ends_unpunctuated_paragraphs():
    assert clean_for_labeling("No acute\r\n process.\r\n\r\nStable.") == "no acute process. stable."
    assert clean_for_labeling("No effusion\r\n\r\nIMPRESSION:\r\n Normal") == "no effusion. impression: normal"
    assert clean_for_labeling("1. Clear lungs\n2. Normal heart") == "1. clear lungs. 2. normal heart"
    # a line break inside a sentence, or after a colon or comma, stays a space
    assert clean_for_labeling("FINDINGS:\n\nNo effusion,\n\nno pneumothorax") == (
        "findings: no effusion, no pneumothorax"
    )


def test_bad_input_raises():
    with pytest.raises(TypeError, match="must be str"):
        label_report(None)
    with pytest.raises(ValueError, match="backend must be"):
        label_report("No effusion.", backend="negbio")
    with pytest.raises(ValueError, match="needs checkpoint"):
        label_report("No effusion.", backend="chexbert")


def test_cue_manifest_is_checked(monkeypatch):
    real_load = labeler.manifests.load

    def with_bare_no(name):
        data = real_load(name)
        if name == "labeler/cues.yaml":
            data = json.loads(json.dumps(data))
            data["pseudo"].append(False)  # what YAML makes of an unquoted `no`
        return data

    monkeypatch.setattr(labeler.manifests, "load", with_bare_no)
    labeler.load_rules.cache_clear()
    try:
        with pytest.raises(ValueError, match="not a string; quote it"):
            labeler.load_rules()
    finally:
        labeler.load_rules.cache_clear()


# ---------------------------------------------------------------- IU X-ray development reports

# NegBio OpenI gold name -> CheXpert observation.
GOLD_LABELS = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
}
BASELINE_KEYWORDS = {
    "Atelectasis": r"atelecta",
    "Cardiomegaly": r"cardiomegaly|cardiac enlargement|enlarged heart",
    "Pleural Effusion": r"effusion|pleural fluid",
    "Pneumonia": r"pneumonia",
    "Pneumothorax": r"pneumothora",
    "Consolidation": r"consolidat",
    "Edema": r"edema",
}
BASELINE_NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of|clear of)\b")


def keyword_baseline(text: str) -> dict[str, float | None]:
    """Keyword + negation baseline: 1 when a label's keyword occurs in a sentence with no negation word
    before it, 0 when every occurrence follows one, None when absent."""
    result: dict[str, float | None] = dict.fromkeys(OBSERVATIONS)
    for sentence in re.split(r"(?<=[.!?])\s+", clean_for_labeling(text)):
        for name, keywords in BASELINE_KEYWORDS.items():
            for match in re.finditer(keywords, sentence):
                value = 0.0 if BASELINE_NEGATION.search(sentence, 0, match.start()) else 1.0
                result[name] = max(value, result[name] if result[name] is not None else 0.0)
    return result


def _scores(predictions: dict[int, dict], gold: dict[int, dict[str, int]], gold_name: str) -> tuple[float, ...]:
    observation = GOLD_LABELS[gold_name]
    tp = fp = fn = 0
    for report_id, labels in predictions.items():
        predicted = labels[observation] == 1.0  # -1 (uncertain) counts as not positive
        actual = gold[report_id][gold_name] == 1
        tp += predicted and actual
        fp += predicted and not actual
        fn += actual and not predicted
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return tp + fn, precision, recall, f1


def test_iu_development_reports_against_negbio_gold(tmp_path):
    """Even ids only (tests/realdata.py). Findings + impression are labelled; a report counts as
    positive for a label only when the labeler says 1.0. Uncertain (-1) counts as NOT positive: the
    OpenI gold codes hedged findings ("possible small effusions", "may represent pneumonia",
    "vascular congestion") as absent far more often than as present. Printed for both labelers; run
    with -s to see the table."""
    reports = realdata.iu_development_reports(tmp_path)
    gold = realdata.negbio_openi_development_gold()
    texts = {r.id: "\n".join(part for part in (r.findings, r.impression) if part) for r in reports if r.id in gold}
    assert len(texts) > 1800 and all(report_id % 2 == 0 for report_id in texts)
    ours = {report_id: label_report(text) for report_id, text in texts.items()}
    baseline = {report_id: keyword_baseline(text) for report_id, text in texts.items()}
    print(f"\n{len(texts)} even-id IU reports; -1 counts as not positive")
    print(
        f"{'label':14s} {'n':>4s}   {'labeler P':>9s} {'R':>5s} {'F1':>5s}   {'baseline P':>10s} {'R':>5s} {'F1':>5s}"
    )
    macro = {"labeler": [], "baseline": []}
    for gold_name in GOLD_LABELS:
        n, p, r, f = _scores(ours, gold, gold_name)
        _, bp, br, bf = _scores(baseline, gold, gold_name)
        macro["labeler"].append(f)
        macro["baseline"].append(bf)
        print(f"{gold_name:14s} {n:4d}   {p:9.3f} {r:5.3f} {f:5.3f}   {bp:10.3f} {br:5.3f} {bf:5.3f}")
    ours_f1 = sum(macro["labeler"]) / len(GOLD_LABELS)
    baseline_f1 = sum(macro["baseline"]) / len(GOLD_LABELS)
    print(f"{'macro F1':14s} {'':4s}   {'':9s} {'':5s} {ours_f1:5.3f}   {'':10s} {'':5s} {baseline_f1:5.3f}")
    assert ours_f1 >= 0.90
    assert ours_f1 > baseline_f1


# ---------------------------------------------------------------- CheXbert backend

needs_torch = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("torch", "transformers", "tokenizers")),
    reason="the chexbert backend needs the optional extra: pip install 'cxr-instruct[chexbert]'",
)
TINY_WORDS = [
    "heart",
    "size",
    "normal",
    "lungs",
    "clear",
    "no",
    "pleural",
    "effusion",
    "pneumothorax",
    "edema",
    "cardiomegaly",
    "small",
    "left",
    "right",
]


def _tiny_checkpoint(directory, force: dict[str, int] | None = None):
    """A randomly initialised CheXbert-architecture model (2 layers, hidden 32) saved the way CheXbert
    saves it (``model_state_dict``, DataParallel ``module.`` prefixes). ``force`` pins a head's class."""
    import torch
    import transformers

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + TINY_WORDS
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    (directory / "config.json").write_text(config.to_json_string())
    model = chexbert._build_chexbert_model(torch, transformers, config)
    with torch.no_grad():
        for name, cls in (force or {}).items():
            head = model.linear_heads[chexbert.CHEXBERT_ORDER.index(name)]
            head.weight.zero_()
            head.bias.fill_(-10.0)
            head.bias[cls] = 10.0
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 1}, directory / "chexbert.pth")
    return directory


@needs_torch
def test_chexbert_backend_maps_head_classes_to_chexpert_values(tmp_path):
    force = {"Edema": 3, "Pleural Effusion": 1, "Pneumothorax": 2, "Cardiomegaly": 0, "No Finding": 1}
    checkpoint = _tiny_checkpoint(tmp_path, force)
    labels = label_report("No pleural effusion. Heart size normal.", backend="chexbert", checkpoint=checkpoint)
    assert list(labels) == list(OBSERVATIONS)
    assert (
        labels["Edema"],
        labels["Pleural Effusion"],
        labels["Pneumothorax"],
        labels["Cardiomegaly"],
        labels["No Finding"],
    ) == (-1.0, 1.0, 0.0, None, 1.0)
    assert all(value in (1.0, 0.0, -1.0, None) for value in labels.values())
    # deterministic (eval mode, no dropout) and tolerant of text longer than 512 word pieces
    long_report = "small left pleural effusion . " * 400
    first = label_report(long_report, backend="chexbert", checkpoint=checkpoint)
    assert first == label_report(long_report, backend="chexbert", checkpoint=checkpoint)


@needs_torch
def test_chexbert_backend_explains_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"lacks \['config.json', 'vocab.txt', 'chexbert.pth'\]"):
        chexbert.CheXbertLabeler(tmp_path)
    checkpoint = _tiny_checkpoint(tmp_path)
    import torch

    state = torch.load(checkpoint / "chexbert.pth", weights_only=True)["model_state_dict"]
    del state["module.linear_heads.13.weight"]
    torch.save(state, checkpoint / "chexbert.pth")
    with pytest.raises(ValueError, match="does not fit the CheXbert architecture"):
        chexbert.CheXbertLabeler(checkpoint)


def test_chexbert_backend_names_the_extra_when_packages_are_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'", name="torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match=r"cxr-instruct\[chexbert\].*missing: torch"):
        chexbert.CheXbertLabeler("/nonexistent")
