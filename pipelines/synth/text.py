"""Report text from the case truth: MIMIC-CXR reports in the official layout and PadChest's
stemmed-Spanish report strings with their label columns.

MIMIC: every stated finding is written in the FINDINGS body and again in the IMPRESSION with the
same polarity, so a labeler reading either section (or both) recovers exactly the case's stated
labels. Phrasing follows the CheXpert mention/negation/uncertainty conventions (``docs/language.md``
§3): negations ("No pneumothorax."), uncertainty ("Cannot exclude pneumonia.", "Possible ..."),
hedges on causes ("likely reflecting fluid overload") and temporal words only when a prior exists.
Filler sentences never contain a CheXpert mention phrase.

The reports are un-scrubbed on purpose (``phi.py``): an administrative header block after
``FINAL REPORT``, a comparison date where real MIMIC writes ``___`` and, in about a third of the
studies, a NOTIFICATION naming a physician and a date. Scrubbed as MIMIC does (every such value ->
``___``), a report is the de-identified layout again.
"""

from __future__ import annotations

import textwrap

import numpy as np

from pipelines.synth import phi
from pipelines.synth.cases import CHEXPERT_14, Finding, Findings, Patient, Study, is_normal, rng_for

REPORT_WIDTH = 79
_SIZE = {1: "small", 2: "moderate", 3: "large"}
_DEGREE = {1: "mild", 2: "moderate", 3: "severe"}
_LOBE = {"upper": "upper lobe", "middle": "mid lung", "lower": "lower lobe"}
_FILLERS = (
    "The lungs are well expanded.",
    "No acute osseous abnormality is seen.",
    "The visualized upper abdomen is unremarkable.",
)
_DEVICE_SENTENCES = {
    "endotracheal tube": "Endotracheal tube terminates 4 cm above the carina.",
    "nasogastric tube": "Nasogastric tube courses below the diaphragm with the tip in the stomach.",
    "right internal jugular line": "Right internal jugular line ends in the low SVC.",
    "pacemaker": "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
}
_EXAMINATIONS = {
    "PA": ("CHEST (PA AND LAT)", "Chest PA and lateral"),
    "AP": ("CHEST (PORTABLE AP)", "Portable AP chest radiograph"),
    "PA-only": ("CHEST (PA)", "Chest PA"),
}


def _side_words(finding: Finding) -> str:
    return {"bilateral": "bilateral", "right": "right", "left": "left"}.get(finding.laterality or "", "")


_CHANGE_WORDING = {
    "worsened": (
        "{S} {has} increased since the prior study.",
        "Increasing {s}.",
        "{S}, increased compared to the prior radiograph.",
        "Interval increase in {s}.",
    ),
    "improved": ("{S} {has} decreased since the prior study.", "Decreasing {s}.", "{S}, improved since ___."),
    "unchanged": ("{S} {is} unchanged from the prior study.", "Stable {s}.", "{S}, unchanged.", "Again seen {is} {s}."),
    "new": ("New {s}.", "Interval development of {s}.", "{S} {is} new since the prior study."),
}
"""How a report words a change against the prior study: the first wording mostly, the others as real
reports vary it (single-image targets must rewrite every one of them, transforms/comparisons.py)."""


def _changed(sentence_subject: str, change: str | None, rng: np.random.Generator, plural: bool = False) -> str:
    """A sentence stating the subject with its change against the prior study, else the bare subject."""
    wordings = _CHANGE_WORDING.get(change or "")
    if wordings is None:
        return f"{sentence_subject}."
    wording = wordings[0] if rng.random() < 0.5 else wordings[int(rng.integers(1, len(wordings)))]
    return wording.format(
        S=sentence_subject,
        s=sentence_subject[0].lower() + sentence_subject[1:],
        has="have" if plural else "has",
        **{"is": "are" if plural else "is"},
    )


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def finding_sentence(finding: Finding, rng: np.random.Generator) -> str:
    """One report sentence stating the finding with its presence, attributes and change."""
    name, presence, change = finding.name, finding.presence, finding.change
    side = _side_words(finding)
    size = _SIZE.get(finding.severity or 1)
    degree = _DEGREE[finding.severity or 1]  # severities are 1..3
    if presence == 0:
        return _negative_sentence(finding, rng)
    if name == "Cardiomegaly":
        if presence == -1:
            return str(rng.choice(["Possible mild cardiomegaly.", "Cannot exclude mild cardiomegaly."]))
        if change == "worsened":
            return f"{_capital(degree)} cardiomegaly has progressed since the prior study."
        return str(rng.choice([f"{_capital(degree)} cardiomegaly.", f"There is {degree} cardiomegaly."]))
    if name == "Pleural Effusion":
        if side != "bilateral":
            return _changed(_capital(f"{size} {side} pleural effusion"), change, rng)
        return _changed(_capital(f"{size} bilateral pleural effusions"), change, rng, plural=True)
    if name == "Pneumothorax":
        where = f"{side} apical" if finding.zone == "upper" and (finding.severity or 1) == 1 else side
        return _changed(_capital(f"{size} {where} pneumothorax"), change, rng)
    if name == "Lung Lesion":
        if (finding.severity or 1) == 3:
            subject = f"A {int(rng.integers(3, 6))} cm mass in the {side} {_LOBE[finding.zone or 'middle']}"
        else:
            millimetres = int(rng.integers(5, 10)) if finding.severity == 1 else int(rng.integers(11, 20))
            subject = f"A {millimetres} mm nodule in the {side} {_LOBE[finding.zone or 'middle']}"
        return f"{subject} is unchanged from the prior study." if change == "unchanged" else f"{subject} is noted."
    if name == "Consolidation":
        return _changed(_capital(f"{side} {_LOBE[finding.zone or 'lower']} consolidation"), change, rng)
    if name == "Lung Opacity":
        return _changed(f"Patchy opacity in the {side} {_LOBE[finding.zone or 'lower']}", change, rng)
    if name == "Pneumonia":
        if presence == -1:
            return str(
                rng.choice(["Cannot exclude pneumonia.", "Possible pneumonia.", "This may represent pneumonia."])
            )
        return f"{_capital(side)} {_LOBE[finding.zone or 'lower']} pneumonia."
    if name == "Atelectasis":
        where = "bibasilar" if side == "bilateral" else f"{side} basilar"
        if presence == -1:
            return f"Possible {where} atelectasis."
        return _changed(_capital(f"{degree} {where} atelectasis"), change, rng)
    if name == "Edema":
        if change in ("worsened", "improved", "unchanged"):
            return _changed(_capital(f"{degree} pulmonary edema"), change, rng)
        base = _capital(f"{degree} pulmonary edema")
        return (
            str(rng.choice([f"{base}.", f"{base}, likely reflecting fluid overload."]))
            if change is None
            else f"New {degree} pulmonary edema."
        )
    if name == "Enlarged Cardiomediastinum":
        return str(rng.choice(["The mediastinum is widened.", "Widened mediastinum."]))
    if name == "Pleural Other":
        return f"{_capital(side)} apical pleural thickening."
    if name == "Fracture":
        return str(rng.choice([f"Healed {side} rib fracture.", f"Old {side} rib fracture."]))
    if name == "Support Devices":
        return _DEVICE_SENTENCES[finding.detail or "endotracheal tube"]
    raise ValueError(f"no sentence for finding {name!r}")


def _negative_sentence(finding: Finding, rng: np.random.Generator) -> str:
    name, side = finding.name, _side_words(finding)
    if finding.change == "resolved":
        resolved = {
            "Pleural Effusion": f"The {side} pleural effusion has resolved.",
            "Pneumothorax": f"The {side} pneumothorax has resolved.",
            "Consolidation": f"The {side} {_LOBE[finding.zone or 'lower']} consolidation has resolved.",
            "Lung Opacity": f"The {side} {_LOBE[finding.zone or 'lower']} opacity has resolved.",
            "Pneumonia": "The pneumonia has resolved.",
            "Atelectasis": "The basilar atelectasis has resolved.",
            "Edema": "The pulmonary edema has resolved.",
            "Support Devices": f"Interval removal of the {finding.detail or 'endotracheal tube'}.",
        }
        return " ".join(resolved[name].split())  # an unsided finding leaves a double space
    plain = {
        "Pneumothorax": ["No pneumothorax.", "There is no pneumothorax."],
        "Pleural Effusion": ["No pleural effusion.", "There is no pleural effusion."],
        "Consolidation": ["No focal consolidation.", "There is no focal consolidation."],
        "Edema": ["No pulmonary edema.", "There is no pulmonary edema."],
        "Cardiomegaly": ["The heart size is normal.", "No cardiomegaly."],
    }
    if name not in plain:
        raise ValueError(f"no negative sentence for finding {name!r}")
    return str(rng.choice(plain[name]))


def _ordered(findings: Findings) -> list[Finding]:
    """Positive and uncertain findings first (taxonomy order), then the stated negatives."""
    present = [findings[n] for n in CHEXPERT_14 if n in findings and findings[n].presence != 0]
    absent = [findings[n] for n in CHEXPERT_14 if n in findings and findings[n].presence == 0]
    return present + absent


def _wrap(paragraph: str) -> list[str]:
    return textwrap.wrap(paragraph, width=REPORT_WIDTH - 1, break_long_words=False, break_on_hyphens=False)


def report_layout(study: Study) -> str:
    """``full`` (FINDINGS + IMPRESSION), ``impression`` (no FINDINGS) or ``findings`` (no IMPRESSION)."""
    number = int(study.study_id)
    return "impression" if number % 6 == 1 else ("findings" if number % 8 == 3 else "full")


def findings_sentences(study: Study, seed: int) -> dict[str, str]:
    """The FINDINGS-section sentence of every stated finding (Chest ImaGenome phrases quote these)."""
    rng = rng_for(seed, "mimic-findings-text", study.study_id)
    return {finding.name: finding_sentence(finding, rng) for finding in _ordered(study.findings)}


def mimic_report(patient: Patient, study: Study, seed: int) -> str:
    """The study's report in the official MIMIC-CXR text layout (one leading space per line)."""
    return mimic_report_with_phi(patient, study, seed)[0]


def mimic_report_with_phi(patient: Patient, study: Study, seed: int) -> tuple[str, list[dict]]:
    """The study's report and the fake PHI planted in it (``phi.py`` entries)."""
    rng = rng_for(seed, "mimic-report", study.study_id)
    frontal = [v.position for v in study.views if v.frontal]
    kind = "AP" if frontal and frontal[0] == "AP" else ("PA" if len(study.views) > 1 else "PA-only")
    examination, technique = _EXAMINATIONS[kind]
    comparison = str(rng.choice(["___.", "Chest radiograph from ___."])) if study.prior_study_id else "None."
    person = phi.mimic_patient(seed, patient)
    facts = phi.visit(seed, "mimic", study.study_id)
    header, planted = phi.report_header(person, facts)
    if comparison.startswith("Chest radiograph"):  # the prior's date, where MIMIC writes ___
        prior = next(s for s in patient.studies if s.study_id == study.prior_study_id)
        comparison = f"Chest radiograph from {phi.us_date(prior.date)}."
        planted.append({"in": "report", "field": "comparison date", "value": phi.us_date(prior.date)})
    ordered = _ordered(study.findings)
    body = list(findings_sentences(study, seed).values())
    lung_findings = {"Lung Opacity", "Consolidation", "Edema", "Atelectasis", "Lung Lesion", "Pneumonia"}
    fillers = list(_FILLERS)
    if not any(f.presence != 0 and f.name in lung_findings for f in ordered):
        fillers.insert(0, "The lungs are clear.")
    body.insert(min(1, len(body)), fillers[int(rng.integers(len(fillers)))])
    impression_parts = [finding_sentence(f, rng) for f in ordered]
    if is_normal(study.findings):
        impression_parts.insert(0, "No acute cardiopulmonary process.")
    if sum(f.presence != 0 for f in ordered) > 1 and not is_normal(study.findings):
        impression = [f"{i}. {sentence}" for i, sentence in enumerate(impression_parts, 1)]
    else:
        impression = ["  ".join(impression_parts)]
    layout = report_layout(study)
    lines = [" " * 33 + "FINAL REPORT", *header, "", f"EXAMINATION:  {examination}", ""]
    lines += _wrap(f"INDICATION:  {study.indication}") + [
        "",
        f"TECHNIQUE:  {technique}",
        "",
        f"COMPARISON:  {comparison}",
        "",
    ]
    if layout in ("full", "findings"):
        lines += ["FINDINGS: ", ""] + _wrap("  ".join(body)) + [""]
    if layout in ("full", "impression"):
        lines += ["IMPRESSION: ", ""]
        for item in impression:
            lines += _wrap(item)
    else:
        lines.pop()
    if phi.notifies(seed, study.study_id):
        sentence, named = phi.notification(facts, study.date, seed, study.study_id)
        lines += ["", *_wrap(f"NOTIFICATION:  {sentence}")]
        planted += named
    return "\n".join([lines[0]] + [" " + line for line in lines[1:]]) + "\n", planted


# ---------------------------------------------------------------------------------------------
# PadChest

PADCHEST_CUIS = {
    "normal": "C0205307",
    "cardiomegaly": "C0018800",
    "pleural effusion": "C2073625",
    "pneumothorax": "C2073565",
    "nodule": "C0034079",
    "consolidation": "C0521530",
    "infiltrates": "C0277877",
    "pneumonia": "C0032285",
    "laminar atelectasis": "",
    "pulmonary edema": "C0034063",
    "mediastinal enlargement": "C2021206",
    "apical pleural thickening": "",
    "callus rib fracture": "C0006767",
    "pacemaker": "C0030163",
    "endotracheal tube": "C0336630",
    "NSG tube": "",
    "central venous catheter via jugular vein": "C0398278",
    "unchanged": "",
}
"""PadChest label -> UMLS CUI as in the PadChest taxonomy tree; '' where the tree gives none."""

PADCHEST_LOCALIZATION_CUIS = {
    "cardiac": "C1522601",
    "left": "C0443246",
    "right": "C0444532",
    "basal": "C1282378",
    "apical": "C0734296",
    "bilateral": "C0238767",
    "lower lobe": "C0225758",
    "upper lobe": "C0225756",
    "middle lobe": "C4281590",
    "lingula": "C0225740",
    "pleural": "C0032225",
    "rib": "C0035561",
}
_SPANISH_SIDE = {"right": "derech", "left": "izquierd", "bilateral": "bilateral"}
_SPANISH_SIZE = {1: "pequen", 2: "moder", 3: "grand"}
_SPANISH_LOBE = {
    "upper": ("lob superior", "upper lobe"),
    "middle": ("lob medi", "middle lobe"),
    "lower": ("lob inferior", "lower lobe"),
}
_SPANISH_DEVICES = {
    "pacemaker": ("marcapas con electrod", "pacemaker"),
    "endotracheal tube": ("tub endotraqueal", "endotracheal tube"),
    "nasogastric tube": ("sond nasogastr", "NSG tube"),
    "right internal jugular line": ("cateter venos central yugular derech", "central venous catheter via jugular vein"),
}


def padchest_sentence(finding: Finding) -> tuple[str, str, list[str]]:
    """(stemmed sentence, PadChest label, localizations without the ``loc`` prefix) of a positive finding."""
    side = finding.laterality or "right"
    side_stem = _SPANISH_SIDE.get(side, "derech")
    size = _SPANISH_SIZE[finding.severity or 1]
    lobe_stem, lobe = _SPANISH_LOBE[finding.zone or "lower"]
    if (finding.zone, side) == ("middle", "left"):  # the middle lobe is the right lung's; the left has the lingula
        lobe_stem, lobe = "lingul", "lingula"
    name = finding.name
    if name == "Cardiomegaly":
        return "cardiomegali", "cardiomegaly", ["cardiac"]
    if name == "Pleural Effusion":
        return f"{size} derram pleural {side_stem}", "pleural effusion", ["pleural", side]
    if name == "Pneumothorax":
        return f"neumotorax apical {side_stem}", "pneumothorax", ["apical", side]
    if name == "Lung Lesion":
        return f"nodul pulmonar {lobe_stem} {side_stem}", "nodule", [lobe, side]
    if name == "Consolidation":
        return f"condensacion {lobe_stem} {side_stem}", "consolidation", [lobe, side]
    if name == "Lung Opacity":
        return f"infiltr alveolar {side_stem}", "infiltrates", [side]
    if name == "Pneumonia":
        return f"neumoni {side_stem}", "pneumonia", [side]
    if name == "Atelectasis":
        return f"atelectasi laminar bas {side_stem}", "laminar atelectasis", ["basal", side]
    if name == "Edema":
        return "edem pulmonar", "pulmonary edema", []
    if name == "Enlarged Cardiomediastinum":
        return "ensanch mediastin", "mediastinal enlargement", []
    if name == "Pleural Other":
        return f"engros pleural apical {side_stem}", "apical pleural thickening", ["apical", side]
    if name == "Fracture":
        return f"call fractur costal antigu {side_stem}", "callus rib fracture", ["rib", side]
    if name == "Support Devices":
        stem, label = _SPANISH_DEVICES[finding.detail or "pacemaker"]
        return stem, label, []
    raise ValueError(f"no PadChest sentence for finding {name!r}")


def numpy_repr(items: list[str]) -> str:
    """The repr NumPy gives a 1-D string array: quoted items separated by spaces, no commas."""
    return "[" + " ".join(f"'{item}'" for item in items) + "]"


def padchest_report(findings: Findings, index: int) -> dict[str, str]:
    """Report, Labels, Localizations, LabelsLocalizationsBySentence, labelCUIS, LocalizationsCUIS.

    Rows with ``index % 3 == 1`` write later label items with a leading space (``"['a', ' b']"``)
    and their localizations double-spaced (``'loc  left'``), as the real file does.
    """
    present = [findings[n] for n in CHEXPERT_14 if n in findings and findings[n].presence == 1]
    sentences: list[str] = []
    by_sentence: list[list[str]] = []
    if is_normal(findings):
        sentences += ["sin hallazg patologic signific", "siluet cardiomediastin dentr limit normal"]
        by_sentence += [["normal"], ["normal", "loc cardiac"]]
    for finding in present:
        stem, label, places = padchest_sentence(finding)
        sentences.append(stem)
        by_sentence.append([label] + [f"loc {place}" for place in places])
    labels = list(dict.fromkeys(items[0] for items in by_sentence))
    if "normal" in labels and len(labels) > 1:
        labels.remove("normal")  # the authors drop 'normal' when a study has other labels
    places = list(dict.fromkeys(item[4:] for items in by_sentence for item in items[1:]))
    quirky = index % 3 == 1
    label_items = [label if i == 0 or not quirky else f" {label}" for i, label in enumerate(labels)]
    location_items = [f"loc  {place}" if quirky else f"loc {place}" for place in places]
    return {
        "Report": " . ".join(sentences) + " .",
        "Labels": repr(label_items),
        "Localizations": repr(location_items),
        "LabelsLocalizationsBySentence": repr(by_sentence),
        "labelCUIS": numpy_repr([PADCHEST_CUIS[label] for label in labels]),
        "LocalizationsCUIS": numpy_repr([PADCHEST_LOCALIZATION_CUIS[place] for place in places]),
    }
