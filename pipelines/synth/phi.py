"""Fake PHI planted in the synthetic corpus, so the build is tested against leaks.

Real MIMIC-CXR, VinDr-CXR and SIIM-ACR files are de-identified; the synthetic ones model files that
were not: DICOM headers carry a patient name, birth date, hospital MRN, accession number, institution
and staff names, and MIMIC reports open with an administrative header block (name, MRN, birth date,
accession, referring physician) and may name a physician and a date in the text. Every value is
obviously synthetic (family names ``SYNTHPHI``, ``SYNTHDOC``, ``SYNTHTECH``) but realistic in shape,
and derives from a stable hash of the corpus seed and a record key, so the corpus stays byte-identical.

Each planted value is listed in the truth file per image as ``planted_phi``: a list of
``{"in": "dicom" | "report", "field": <DICOM keyword or report field>, "value": <text as written>}``.
The datasets' own pseudonymous identifiers (MIMIC ``subject_id`` and shifted dates, the SIIM
``PatientID`` UUID, PadChest ids) are never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.synth.cases import Patient, stable_int

PATIENT_FAMILY = "SYNTHPHI"
DOCTOR_FAMILY = "SYNTHDOC"
OPERATOR_FAMILY = "SYNTHTECH"
MARKERS = (PATIENT_FAMILY, DOCTOR_FAMILY, OPERATOR_FAMILY)
"""Every planted person or institution name contains one of these (upper case in DICOM, any case in text)."""

_GIVEN = {
    "F": ("Jane", "Maria", "Olga", "Aisha", "Mei", "Ingrid", "Fatima", "Lucia", "Hanna", "Priya"),
    "M": ("John", "Ahmed", "Wei", "Pavel", "Diego", "Kwame", "Lars", "Ravi", "Tomas", "Kenji"),
}
_STAFF_GIVEN = ("Alan", "Beth", "Carlos", "Dana", "Erik", "Farah", "Gita", "Hugo", "Irene", "Jonas")
_INSTITUTIONS = (
    "SYNTHPHI General Hospital",
    "SYNTHPHI Memorial Medical Center",
    "SYNTHPHI University Clinic",
    "SYNTHPHI Community Hospital",
)
_STREETS = ("Maple Avenue", "Harbor Road", "Hillcrest Drive", "Station Street", "Elm Court")
_CITIES = ("Springfield, MA 01103", "Riverton, WY 82501", "Fairview, OR 97024", "Lakewood, OH 44107")


@dataclass(frozen=True)
class Person:
    family: str
    given: str
    middle: str = ""

    def dicom(self) -> str:
        """DICOM PN: ``FAMILY^Given^M``."""
        return "^".join(part for part in (self.family, self.given, self.middle) if part)

    def listed(self) -> str:
        """``FAMILY, Given M`` as an administrative header writes it."""
        return f"{self.family}, {' '.join(p for p in (self.given, self.middle) if p)}"

    def spoken(self) -> str:
        """``Given Family`` in title case, as a sentence names someone."""
        return f"{self.given} {self.family.title()}"


@dataclass(frozen=True)
class PatientPHI:
    name: Person
    birth_date: str  # YYYYMMDD
    mrn: str  # 9 digits, the hospital's medical record number

    @property
    def birth_date_us(self) -> str:
        """MM/DD/YYYY."""
        return us_date(self.birth_date)


@dataclass(frozen=True)
class VisitPHI:
    accession: str  # "A" + 8 digits
    referring: Person
    operator: Person
    institution: str
    address: str


def us_date(yyyymmdd: str) -> str:
    return f"{yyyymmdd[4:6]}/{yyyymmdd[6:8]}/{yyyymmdd[:4]}"


def _pick(options: tuple, *key: object):
    return options[stable_int(*key) % len(options)]


def patient(seed: int, source: str, patient_key: str, sex: str, birth_year: int | None = None) -> PatientPHI:
    """A patient's fake identity: same key, same identity (a patient keeps it across studies).
    Without ``birth_year`` the year is drawn from 1930-1999."""
    key = (seed, "phi-patient", source, patient_key)
    given = _pick(_GIVEN["F" if sex == "F" else "M"], *key, "given")
    middle = "ABCDEFGHJKLMNPRSTW"[stable_int(*key, "middle") % 18]
    day = stable_int(*key, "birthday") % 365
    month, day_of_month = 1 + day // 31 % 12, 1 + day % 28
    year = 1930 + stable_int(*key, "birth-year") % 70 if birth_year is None else birth_year
    birth = f"{year:04d}{month:02d}{day_of_month:02d}"
    mrn = str(100_000_000 + stable_int(*key, "mrn") % 900_000_000)
    return PatientPHI(Person(PATIENT_FAMILY, given, middle), birth, mrn)


def mimic_patient(seed: int, subject: Patient) -> PatientPHI:
    """A MIMIC patient's identity, born ``age`` years before the first (shifted) study."""
    return patient(seed, "mimic", subject.subject_id, subject.sex, int(subject.studies[0].date[:4]) - subject.age)


def visit(seed: int, source: str, visit_key: str) -> VisitPHI:
    """A study's (or image's) fake administrative facts."""
    key = (seed, "phi-visit", source, visit_key)
    accession = f"A{stable_int(*key, 'accession') % 100_000_000:08d}"
    referring = Person(DOCTOR_FAMILY, _pick(_STAFF_GIVEN, *key, "referring"))
    operator = Person(OPERATOR_FAMILY, _pick(_STAFF_GIVEN, *key, "operator"))
    institution = _pick(_INSTITUTIONS, *key, "institution")
    street = f"{1 + stable_int(*key, 'number') % 980} {_pick(_STREETS, *key, 'street')}"
    address = f"{street}, {_pick(_CITIES, *key, 'city')}"
    return VisitPHI(accession, referring, operator, institution, address)


def fake_date(seed: int, source: str, key: str, first_year: int, years: int) -> str:
    """A YYYYMMDD date for header fields the real files do not carry (VinDr, SIIM)."""
    value = stable_int(seed, "phi-date", source, key)
    return f"{first_year + value % years:04d}{1 + value // 7 % 12:02d}{1 + value // 101 % 28:02d}"


def dicom_fields(person: PatientPHI, facts: VisitPHI, with_name: bool = True) -> dict[str, str]:
    """DICOM keyword -> planted value. ``with_name=False`` where PatientName is the dataset's own
    pseudonym (SIIM writes the PatientID UUID there)."""
    fields = {
        "PatientBirthDate": person.birth_date,
        "OtherPatientIDs": person.mrn,
        "AccessionNumber": facts.accession,
        "InstitutionName": facts.institution,
        "InstitutionAddress": facts.address,
        "ReferringPhysicianName": facts.referring.dicom(),
        "OperatorsName": facts.operator.dicom(),
    }
    if with_name:
        fields = {"PatientName": person.name.dicom(), **fields}
    return fields


def plant_dicom(dataset, fields: dict[str, str]) -> None:
    """Set the fields on a pydicom dataset."""
    for keyword, value in fields.items():
        setattr(dataset, keyword, value)


def plant_entries(fields: dict[str, str]) -> list[dict]:
    """The truth file's planted-PHI entries of DICOM fields."""
    return [{"in": "dicom", "field": keyword, "value": value} for keyword, value in fields.items()]


def report_header(person: PatientPHI, facts: VisitPHI) -> tuple[list[str], list[dict]]:
    """The administrative block an un-scrubbed report opens with (mixed-case labels, so the MIMIC
    section parser leaves it in the preamble), and its planted-PHI entries."""
    name, mrn, birth = person.name.listed(), person.mrn, person.birth_date_us
    physician = f"{facts.referring.listed()} MD"
    lines = [
        f"{'Patient:  ' + name:<42}MRN:  {mrn}",
        f"{'Date of birth:  ' + birth:<42}Accession #:  {facts.accession}",
        f"Referring physician:  {physician}",
    ]
    planted = [
        ("patient name", name),
        ("mrn", mrn),
        ("date of birth", birth),
        ("accession", facts.accession),
        ("referring physician", facts.referring.listed()),
    ]
    return lines, [{"in": "report", "field": field, "value": value} for field, value in planted]


def notifies(seed: int, study_id: str) -> bool:
    """Whether the study's report ends with a NOTIFICATION naming a physician (about a third do)."""
    return stable_int(seed, "phi-notification", study_id) % 3 == 0


def notification(facts: VisitPHI, date: str, seed: int, study_id: str) -> tuple[str, list[dict]]:
    """A NOTIFICATION sentence with a physician's name and a date in the text, and its entries."""
    minutes = stable_int(seed, "phi-notification-time", study_id) % 600
    time = f"{8 + minutes // 60}:{minutes % 60:02d}"
    doctor, when = facts.referring.spoken(), us_date(date)
    sentence = f"The findings were discussed with Dr. {doctor} by telephone on {when} at {time}."
    return sentence, [
        {"in": "report", "field": "notification physician", "value": doctor},
        {"in": "report", "field": "notification date", "value": when},
    ]
