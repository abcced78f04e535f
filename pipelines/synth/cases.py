"""The case model: what is true about each synthetic patient, study and image.

Every writer expresses these cases; nothing here knows a file format. Randomness comes only from
:func:`rng_for`, a NumPy generator seeded from the SHA-256 of the corpus seed and a record key, so
a case never depends on how many other cases were drawn before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from dataclasses import dataclass, field, replace

import numpy as np

CHEXPERT_14 = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
ABNORMAL = tuple(name for name in CHEXPERT_14 if name not in ("No Finding", "Support Devices"))

CTR_BAND_EDGES = (("normal", 0.51), ("mild", 0.55), ("moderate", 0.60), ("severe", float("inf")))
"""Upper (exclusive) CTR limit of each band: normal < 0.51 <= mild < 0.55 <= moderate < 0.60 <= severe."""

CTR_TARGETS = {"normal": (0.41, 0.49), "mild": (0.522, 0.538), "moderate": (0.565, 0.585), "severe": (0.615, 0.655)}
"""Ranges the drawn CTR comes from: inside each band with a margin, so pixel rounding never crosses an edge."""

SEVERITY_BAND = {1: "mild", 2: "moderate", 3: "severe"}
DEVICES = ("endotracheal tube", "nasogastric tube", "right internal jugular line", "pacemaker")

# Per-study probability that a finding is present when it was absent before (first study: as listed).
_ONSET = {
    "Cardiomegaly": 0.35,
    "Pleural Effusion": 0.30,
    "Support Devices": 0.25,
    "Atelectasis": 0.20,
    "Pneumothorax": 0.15,
    "Consolidation": 0.15,
    "Lung Opacity": 0.15,
    "Edema": 0.15,
    "Lung Lesion": 0.12,
    "Enlarged Cardiomediastinum": 0.08,
    "Pleural Other": 0.06,
    "Fracture": 0.06,
}
# Findings whose presence can be uncertain (-1) in a report, and how often.
_UNCERTAIN = {"Atelectasis": 0.3, "Cardiomegaly": 0.15, "Pneumonia": 0.5}
# Findings that, when absent, a report often states as negative (the classic "no pneumothorax").
_STATED_NEGATIVES = ("Pneumothorax", "Pleural Effusion", "Consolidation", "Edema")
_SIDED = {
    "Pleural Effusion",
    "Pneumothorax",
    "Lung Lesion",
    "Consolidation",
    "Lung Opacity",
    "Atelectasis",
    "Pleural Other",
    "Fracture",
}
_ZONED = {
    "Lung Lesion": ("upper", "middle", "lower"),
    "Consolidation": ("lower", "middle"),
    "Lung Opacity": ("lower", "middle", "upper"),
    "Atelectasis": ("lower",),
    "Pleural Effusion": ("lower",),
    "Pneumothorax": ("upper",),
    "Pleural Other": ("upper",),
    "Fracture": ("middle", "lower"),
}


def stable_int(*parts: object) -> int:
    """A 64-bit integer from the SHA-256 of the parts joined by ``|``."""
    digest = hashlib.sha256("|".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def stable_hex(length: int, *parts: object) -> str:
    """``length`` lower-case hex characters of the SHA-256 of the parts."""
    digest = hashlib.sha256("|".join(str(part) for part in parts).encode()).hexdigest()
    while len(digest) < length:
        digest += hashlib.sha256(digest.encode()).hexdigest()
    return digest[:length]


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded from a stable hash of the parts (corpus seed first, then a record key)."""
    return np.random.Generator(np.random.PCG64(stable_int(*parts)))


def ctr_band(ctr: float) -> str:
    """The cardiothoracic-ratio band of a CTR value."""
    for band, upper in CTR_BAND_EDGES:
        if ctr < upper:
            return band
    raise AssertionError("unreachable: the last band has no upper limit")


@dataclass(frozen=True)
class Finding:
    """One CheXpert-14 observation as a report states it.

    ``presence``: 1 positive, 0 negative, -1 uncertain. ``severity``: 1 small/mild, 2 moderate,
    3 large/severe. ``change`` compares with the patient's previous study (None without one).
    ``detail`` names the device for Support Devices.
    """

    name: str
    presence: int
    laterality: str | None = None  # "right" | "left" | "bilateral" (the patient's sides)
    zone: str | None = None  # "upper" | "middle" | "lower"
    severity: int | None = None
    change: str | None = None
    detail: str | None = None


Findings = dict[str, Finding]


@dataclass(frozen=True)
class View:
    """One image of a study."""

    image_id: str
    position: str  # "PA" | "AP" | "LATERAL"
    width: int
    height: int

    @property
    def frontal(self) -> bool:
        return self.position in ("PA", "AP")


@dataclass(frozen=True)
class Study:
    subject_id: str
    study_id: str
    order: int  # 1-based position in the patient's time line
    date: str  # YYYYMMDD
    time: str  # HHMMSS.fff with its leading zeros
    views: tuple[View, ...]
    findings: Findings
    ctr_target: float
    indication: str
    prior_study_id: str | None


@dataclass(frozen=True)
class Patient:
    subject_id: str
    sex: str  # "M" | "F"
    age: int  # at the first study
    split: str
    studies: tuple[Study, ...]


@dataclass(frozen=True)
class ImageCase:
    """A single-image case of VinDr, SIIM or PadChest (one patient, one study per case)."""

    index: int
    findings: Findings
    ctr_target: float
    sex: str
    age: int
    width: int
    height: int
    extra: dict = field(default_factory=dict)  # source-specific facts (e.g. SIIM pneumothorax pockets)


def _draw_side(rng: np.random.Generator, name: str) -> str:
    if name in ("Pleural Effusion", "Atelectasis") and rng.random() < 0.35:
        return "bilateral"
    return "right" if rng.random() < 0.5 else "left"


def _new_finding(rng: np.random.Generator, name: str, change: str | None, allow_uncertain: bool) -> Finding:
    presence = -1 if allow_uncertain and rng.random() < _UNCERTAIN.get(name, 0.0) else 1
    laterality = _draw_side(rng, name) if name in _SIDED else ("bilateral" if name == "Edema" else None)
    zones = _ZONED.get(name)
    zone = str(rng.choice(zones)) if zones else None
    severity = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    if name == "Pneumothorax" and severity == 3 and rng.random() < 0.6:
        severity = 2
    detail = str(rng.choice(DEVICES)) if name == "Support Devices" else None
    if presence == -1:
        severity = 1
    return Finding(name, presence, laterality, zone, severity, change, detail)


def _with_pneumonia(rng: np.random.Generator, findings: Findings, allow_uncertain: bool) -> None:
    """Consolidation or opacity may carry a positive or uncertain pneumonia on the same side."""
    for source in ("Consolidation", "Lung Opacity"):
        base = findings.get(source)
        if base is not None and base.presence == 1 and "Pneumonia" not in findings and rng.random() < 0.6:
            presence = -1 if allow_uncertain and rng.random() < _UNCERTAIN["Pneumonia"] else 1
            findings["Pneumonia"] = Finding("Pneumonia", presence, base.laterality, base.zone, None, base.change)


def draw_findings(
    rng: np.random.Generator,
    allowed: tuple[str, ...] = ABNORMAL + ("Support Devices",),
    allow_uncertain: bool = True,
    normal_rate: float = 0.25,
) -> Findings:
    """Findings of a first (or only) study; about ``normal_rate`` of cases have nothing abnormal."""
    findings: Findings = {}
    if rng.random() >= normal_rate:
        for name, rate in _ONSET.items():
            if name in allowed and rng.random() < rate:
                findings[name] = _new_finding(rng, name, None, allow_uncertain)
        if not any(f.presence != 0 and f.name in ABNORMAL for f in findings.values()):
            name = str(rng.choice([n for n in ("Cardiomegaly", "Pleural Effusion", "Consolidation") if n in allowed]))
            findings[name] = _new_finding(rng, name, None, allow_uncertain)
    elif "Support Devices" in allowed and rng.random() < 0.2:
        findings["Support Devices"] = _new_finding(rng, "Support Devices", None, False)
    if "Pneumonia" in allowed:
        _with_pneumonia(rng, findings, allow_uncertain)
    return findings


def _evolve_one(rng: np.random.Generator, prior: Finding) -> Finding:
    """The same finding one study later: improved, unchanged, worsened or resolved."""
    if prior.presence == 0:
        return prior
    if prior.name == "Cardiomegaly":  # heart size drifts slowly
        return replace(prior, change="unchanged")
    if prior.name in ("Lung Lesion", "Pleural Other", "Fracture", "Enlarged Cardiomediastinum"):
        return replace(prior, change="unchanged")
    if prior.name == "Support Devices":
        return (
            replace(prior, change="unchanged") if rng.random() < 0.7 else replace(prior, presence=0, change="resolved")
        )
    roll = rng.random()
    severity = prior.severity or 1
    if roll < 0.3:
        if severity == 1 or prior.presence == -1:
            return replace(prior, presence=0, change="resolved", severity=None)
        return replace(prior, severity=severity - 1, change="improved")
    if roll < 0.65:
        return replace(prior, change="unchanged")
    if prior.presence == -1:
        return replace(prior, presence=1, change="worsened")
    return replace(prior, severity=min(3, severity + 1), change="worsened")


def evolve_findings(rng: np.random.Generator, prior: Findings) -> Findings:
    """Findings of the next study of the same patient, each with its change against the prior."""
    findings: Findings = {}
    for name in sorted(prior):
        if prior[name].presence == 0:
            continue  # a stated negative is not carried forward; a later study may restate it
        findings[name] = _evolve_one(rng, prior[name])
    for name, rate in _ONSET.items():
        if name not in findings and rng.random() < rate / 3:
            findings[name] = _new_finding(rng, name, "new", True)
    pneumonia = findings.get("Pneumonia")
    carried = any(findings[n].presence == 1 for n in ("Consolidation", "Lung Opacity") if n in findings)
    if pneumonia is not None and pneumonia.presence != 0 and not carried:
        findings["Pneumonia"] = replace(pneumonia, presence=0, change="resolved")  # its opacity has gone
    _with_pneumonia(rng, findings, True)
    return findings


def add_stated_negatives(rng: np.random.Generator, findings: Findings, rate: float = 0.7) -> Findings:
    """Add the negatives a radiologist would write (``No pneumothorax.``) for absent findings."""
    stated = dict(findings)
    for name in _STATED_NEGATIVES:
        if name not in stated and rng.random() < rate:
            stated[name] = Finding(name, 0)
    if "Cardiomegaly" not in stated and rng.random() < 0.5:
        stated["Cardiomegaly"] = Finding("Cardiomegaly", 0)
    return stated


def is_normal(findings: Findings) -> bool:
    """True when no abnormal finding is positive or uncertain (support devices do not count)."""
    return not any(f.presence != 0 for f in findings.values() if f.name in ABNORMAL)


def finding_details(findings: Findings, names: Container[str] | None = None) -> dict[str, dict]:
    """What the truth file states of each finding (all, or those in ``names``): presence, laterality
    (the patient's side), zone, severity (1 small/mild, 2 moderate, 3 large/severe), change against
    the prior study and the device name for Support Devices."""
    return {
        name: {
            "presence": f.presence,
            "laterality": f.laterality,
            "zone": f.zone,
            "severity": f.severity,
            "change": f.change,
            "detail": f.detail,
        }
        for name, f in sorted(findings.items())
        if names is None or name in names
    }


def stated_labels(findings: Findings) -> dict[str, int]:
    """The CheXpert-style labels a report with these findings states; No Finding is only 1 or absent."""
    labels = {name: finding.presence for name, finding in sorted(findings.items())}
    if is_normal(findings):
        labels["No Finding"] = 1
    return labels


def ctr_target_for(rng: np.random.Generator, findings: Findings) -> float:
    """A CTR inside the band the cardiomegaly finding implies (uncertain cardiomegaly = mild)."""
    heart = findings.get("Cardiomegaly")
    if heart is None or heart.presence == 0:
        band = "normal"
    elif heart.presence == -1:
        band = "mild"
    else:
        band = SEVERITY_BAND[heart.severity or 1]
    low, high = CTR_TARGETS[band]
    return float(rng.uniform(low, high))


SPLIT_CYCLE = ("train", "test", "validate", "train", "train", "train", "validate", "train", "test", "train")
"""Official MIMIC split of the i-th patient (patient-wise, so the split is patient-disjoint)."""

INDICATIONS = (
    "___ year old {sex} with shortness of breath  // eval for interval change",
    "___ year old {sex} with cough and fever  // ?acute process",
    "___ year old {sex} with chest pain  // evaluate",
    "___ year old {sex} with hypoxia  // assess",
    "___ year old {sex} status post fall  // evaluate",
    "___ year old {sex} preoperative evaluation",
)
_STUDY_COUNTS = (1, 2, 3, 4)
_STUDY_COUNT_P = (0.45, 0.3, 0.15, 0.1)
_VIEW_SETS = (("PA", "LATERAL"), ("AP",), ("PA",), ("PA", "PA", "LATERAL"))
_VIEW_SET_P = (0.5, 0.3, 0.08, 0.12)


def _unique_number(seed: int, kind: str, low: int, span: int, taken: set[str], *key: object) -> str:
    """A decimal id in ``[low, low + span)`` derived from the key, probing past collisions."""
    attempt = 0
    while True:
        value = str(low + stable_int(seed, kind, *key, attempt) % span)
        if value not in taken:
            taken.add(value)
            return value
        attempt += 1


def mimic_dicom_id(seed: int, study_id: str, index: int) -> str:
    """Five groups of 8 hex characters joined by dashes, like MIMIC's ``dicom_id``."""
    digits = stable_hex(40, seed, "dicom", study_id, index)
    return "-".join(digits[i : i + 8] for i in range(0, 40, 8))


def _study_views(rng: np.random.Generator, seed: int, study_id: str) -> tuple[View, ...]:
    positions = _VIEW_SETS[int(rng.choice(len(_VIEW_SETS), p=_VIEW_SET_P))]
    if positions[0] == "AP":  # portable: squarer detector
        height, width = int(rng.integers(720, 801)), int(rng.integers(700, 781))
    else:
        height, width = int(rng.integers(800, 901)), int(rng.integers(660, 761))
    return tuple(
        View(mimic_dicom_id(seed, study_id, i), position, width, height) for i, position in enumerate(positions)
    )


def _study_time(rng: np.random.Generator, early: bool) -> str:
    """``HHMMSS.fff``; early studies happen before 10:00 so the numeric StudyTime loses a zero."""
    hour = int(rng.integers(0, 10)) if early else int(rng.integers(10, 24))
    return f"{hour:02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}.{int(rng.integers(0, 1000)):03d}"


def make_mimic_patients(studies: int, seed: int) -> list[Patient]:
    """Patients holding exactly ``studies`` studies in time order (patient 0: up to 3, patient 1: one)."""
    import datetime as dt

    if studies < 1:
        raise ValueError(f"studies must be at least 1, got {studies}")
    patients: list[Patient] = []
    taken_subjects: set[str] = set()
    taken_studies: set[str] = set()
    remaining = studies
    study_number = 0
    while remaining:
        index = len(patients)
        rng = rng_for(seed, "mimic-patient", index)
        if index < 2:  # small corpora still get a three-study time line and a single-study patient
            count = min((3, 1)[index], remaining)
        else:
            count = min(int(rng.choice(_STUDY_COUNTS, p=_STUDY_COUNT_P)), remaining)
        subject_id = _unique_number(seed, "subject", 10_000_000, 10_000_000, taken_subjects, index)
        sex = "F" if rng.random() < 0.5 else "M"
        age = int(rng.integers(25, 90))
        day = dt.date(2110, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 80)))
        findings: Findings = {}
        study_list: list[Study] = []
        for order in range(1, count + 1):
            study_rng = rng_for(seed, "mimic-study", subject_id, order)
            study_id = _unique_number(seed, "study", 50_000_000, 10_000_000, taken_studies, subject_id, order)
            if order > 1:
                day += dt.timedelta(days=int(study_rng.integers(1, 400)))
            findings = draw_findings(study_rng) if order == 1 else evolve_findings(study_rng, findings)
            stated = add_stated_negatives(study_rng, findings)
            study_list.append(
                Study(
                    subject_id=subject_id,
                    study_id=study_id,
                    order=order,
                    date=day.strftime("%Y%m%d"),
                    time=_study_time(study_rng, early=study_number % 3 == 0),
                    views=_study_views(study_rng, seed, study_id),
                    findings=stated,
                    ctr_target=ctr_target_for(study_rng, findings),
                    indication=INDICATIONS[int(study_rng.integers(len(INDICATIONS)))].format(
                        sex="woman" if sex == "F" else "man"
                    ),
                    prior_study_id=study_list[-1].study_id if study_list else None,
                )
            )
            study_number += 1
        patients.append(Patient(subject_id, sex, age, SPLIT_CYCLE[index % len(SPLIT_CYCLE)], tuple(study_list)))
        remaining -= count
    return patients


def make_image_cases(source: str, count: int, seed: int) -> list[ImageCase]:
    """``count`` single-image cases for ``vindr``, ``siim`` or ``padchest``.

    SIIM cases hold only pneumothorax (case 0 is positive with two pockets, case 1 negative);
    VinDr cases never carry support devices (VinDr has no such label); PadChest case 1 has at
    least two labels, one of them (NSG tube) without a CUI. No single-image case is uncertain.
    """
    cases = []
    for index in range(count):
        rng = rng_for(seed, f"{source}-case", index)
        sex = "F" if rng.random() < 0.5 else "M"
        age = int(rng.integers(20, 90))
        extra: dict = {}
        if source == "siim":
            width = height = 1024
            positive = index == 0 or (index != 1 and rng.random() < 0.45)
            findings = {"Pneumothorax": _new_finding(rng, "Pneumothorax", None, False)} if positive else {}
            extra["pockets"] = 2 if positive and (index == 0 or rng.random() < 0.3) else (1 if positive else 0)
        elif source == "vindr":
            width, height = int(rng.integers(880, 1041)), int(rng.integers(940, 1101))
            findings = draw_findings(rng, allowed=ABNORMAL, allow_uncertain=False, normal_rate=0.35)
        elif source == "padchest":
            width, height = int(rng.integers(700, 1001)), int(rng.integers(760, 1001))
            findings = draw_findings(rng, allow_uncertain=False, normal_rate=0.0 if index == 1 else 0.3)
            if index == 1:  # a multi-label report (leading-space trap) with a label that has no CUI
                findings["Support Devices"] = Finding("Support Devices", 1, detail="nasogastric tube")
            extra["lateral"] = bool(rng.random() < 0.35)
        else:
            raise ValueError(f"no single-image cases for source {source!r}")
        cases.append(ImageCase(index, findings, ctr_target_for(rng, findings), sex, age, width, height, extra))
    return cases
