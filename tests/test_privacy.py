"""Privacy: no identifying value of the inputs reaches any output.

The synthetic corpus plants fake PHI (``pipelines/synth/phi.py``) in DICOM headers and in MIMIC
report headers and text, and lists every planted value in the truth file. One build writes every
output (tables, manifest, mixture weights, dataset card, preview); the scanner reads every column of
every Parquet table (nested values walked, bytes included) and every other file, and looks for
(a) every planted value and the fake-name markers, and (b) every value of a DICOM identifying
attribute read from the corpus's own files, less the pseudonymous ids the datasets publish.
The scanner is shown to catch a leak, and the planted values are shown to be in the raw corpus,
so the check cannot pass for want of something to find.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from builds import writable_copy
from hypothesis import given
from hypothesis import strategies as st
from realdata import DATA, iu_development_reports

from pipelines.synth import phi
from pipelines.tools import card, preview
from transforms import deid, phrases, reports
from transforms.image_decode import DICOM_FACTS_KEPT, DICOM_KEYWORDS_READ

IDENTIFYING_ATTRIBUTES = (
    # DICOM PS3.15 Table E.1-1 (Basic Application Level Confidentiality Profile), the attributes that
    # name or date a person, a visit, a place or a device, plus the instance UIDs.
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "MediaStorageSOPInstanceUID",
    "AdditionalPatientHistory",
    "PatientComments",
    "ImageComments",
)
DICOM_GLOBS = {
    "mimic": "mimic-cxr/files/p*/p*/s*/*.dcm",
    "vindr": "vindr-cxr/*/*.dicom",
    "siim": "siim-acr/dicom-images-*/*/*/*.dcm",
}
MARKER = re.compile("|".join(phi.MARKERS), re.IGNORECASE)
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # VinDr's MD5 instance UID, a real trap
MIN_NEEDLE = 6  # shorter header values (sex, age, a view) say nothing about anyone


# ------------------------------------------------------------------------------------ scanner


@dataclass(frozen=True)
class Hit:
    file: str  # relative to the output folder
    column: str  # "" for a file that is not a table; nested fields as "sections[].text"
    value: str  # the needle found
    origin: str  # where the needle came from

    def __str__(self) -> str:
        where = f"{self.file} column {self.column}" if self.column else self.file
        return f"{where}: {self.value!r} ({self.origin})"


class Scanner:
    """Finds any of ``needles`` (value -> where it came from) and the fake-name markers in text."""

    def __init__(self, needles: dict[str, str]):
        self.needles = needles
        alternatives = sorted(needles, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def find(self, text: str) -> list[tuple[str, str]]:
        """(value, origin) of every needle or marker in ``text``, whitespace runs read as one space."""
        found = []
        for candidate in (text, " ".join(text.split())):
            if self.pattern is not None:
                found += [(m.group(), self.needles[m.group()]) for m in self.pattern.finditer(candidate)]
            found += [(m.group(), "fake-name marker") for m in MARKER.finditer(candidate)]
        return sorted(set(found))

    def scan_table(self, table: pa.Table, name: str) -> list[Hit]:
        hits = []
        for column in table.column_names:
            for value in table.column(column).to_pylist():
                for path, text in _strings(value, column):
                    hits += [Hit(name, path, needle, origin) for needle, origin in self.find(text)]
        return hits

    def scan_output(self, out: Path) -> list[Hit]:
        """Every Parquet table column by column, and every other file as text (binary as Latin-1)."""
        hits = []
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            name = str(path.relative_to(out))
            if path.suffix == ".parquet":
                hits += self.scan_table(pq.read_table(path), name)
            else:
                data = path.read_bytes()
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    text = data.decode("latin-1")
                hits += [Hit(name, "", needle, origin) for needle, origin in self.find(text)]
        return sorted(set(hits), key=str)


def _strings(value, path: str):
    """(column path, text) of every string, byte string and number inside a nested value."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, f"{path}[]")
    elif isinstance(value, bytes):
        yield path, value.decode("latin-1")
    else:
        yield path, str(value)


def planted_needles(truth: dict) -> dict[str, str]:
    """Every planted value (and the ISO and US spellings of planted DICOM dates) -> its origin."""
    needles = {}
    for key, entry in truth["images"].items():
        for item in entry["planted_phi"]:
            spellings = _spellings(item["value"]) if item["in"] == "dicom" else [item["value"]]
            needles.update(dict.fromkeys(spellings, f"{key} {item['in']} {item['field']}"))
    return needles


def published_ids(truth: dict) -> set[str]:
    """The datasets' own pseudonymous identifiers, legitimately in outputs: subject and study ids,
    native image ids, MIMIC's shifted study dates and times."""
    allowed = set()
    for key, entry in truth["images"].items():
        allowed.add(key.split("/", 1)[1])
        allowed.update(
            str(entry[name])
            for name in ("subject_id", "study_id", "study_date", "study_time")
            if entry.get(name) is not None
        )
    return allowed


def dicom_files(corpus: Path) -> dict[str, Path]:
    """Image key -> DICOM file of every DICOM in the corpus."""
    return {
        f"{source}/{path.stem}": path
        for source, pattern in DICOM_GLOBS.items()
        for path in sorted(corpus.glob(pattern))
    }


def read_header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def dicom_needles(corpus: Path, truth: dict) -> dict[str, str]:
    """Values of identifying, non-allow-listed DICOM attributes in the corpus files -> their origin."""
    allowed = published_ids(truth)
    needles = {}
    for key, path in dicom_files(corpus).items():
        header = read_header(path)
        elements = {**{e.keyword: e.value for e in header.file_meta}, **{e.keyword: e.value for e in header}}
        for keyword in IDENTIFYING_ATTRIBUTES:
            value = str(elements.get(keyword) or "").strip()
            if len(value) >= MIN_NEEDLE and value not in allowed:
                needles.update(dict.fromkeys(_spellings(value), f"{key} DICOM {keyword}"))
    return needles


def _spellings(value: str) -> list[str]:
    """A value, and a DICOM date (YYYYMMDD) also as a reader would reformat it (ISO, US)."""
    if re.fullmatch(r"(19|2[01])\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])", value):
        return [value, f"{value[:4]}-{value[4:6]}-{value[6:]}", phi.us_date(value)]
    return [value]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def built(clean_build, tmp_path_factory) -> tuple[Path, Path]:
    out = writable_copy(clean_build.out, tmp_path_factory.mktemp("privacy") / "out")
    card.write_card(out)
    preview.write_preview(out)
    return clean_build.corpus, out


@pytest.fixture(scope="module")
def truth(built) -> dict:
    return json.loads((built[0] / "SYNTHETIC_TRUTH.json").read_text())


# ------------------------------------------------------------------- the corpus holds the PHI


PLANTED_DICOM = {
    "mimic": {
        "PatientName",
        "PatientBirthDate",
        "OtherPatientIDs",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "OperatorsName",
    },
    "siim": {
        "PatientBirthDate",
        "OtherPatientIDs",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "OperatorsName",
        "AcquisitionDate",
    },
}
PLANTED_DICOM["vindr"] = PLANTED_DICOM["mimic"] | {"StudyDate", "SeriesDate"}
PLANTED_REPORT = {
    "patient name",
    "mrn",
    "date of birth",
    "accession",
    "referring physician",
    "notification physician",
    "notification date",
    "comparison date",
}


def test_planted_phi_is_in_the_raw_dicom_headers(built, truth):
    corpus, _ = built
    files = dicom_files(corpus)
    assert set(files) == {k for k, e in truth["images"].items() if e["source"] in DICOM_GLOBS}
    for key, path in files.items():
        planted = [item for item in truth["images"][key]["planted_phi"] if item["in"] == "dicom"]
        assert {item["field"] for item in planted} == PLANTED_DICOM[key.split("/")[0]], key
        header = read_header(path)
        for item in planted:
            assert str(header[item["field"]].value) == item["value"], (key, item)
            assert item["field"] not in DICOM_KEYWORDS_READ and item["field"] not in DICOM_FACTS_KEPT.values()


def test_planted_phi_is_in_the_raw_reports(built, truth):
    corpus, _ = built
    kinds = set()
    for key, entry in truth["images"].items():
        planted = [item for item in entry["planted_phi"] if item["in"] == "report"]
        if entry["source"] != "mimic":
            assert not planted
            continue
        study = f"files/p{entry['subject_id'][:2]}/p{entry['subject_id']}/s{entry['study_id']}.txt"
        text = " ".join((corpus / "mimic-cxr" / study).read_text().split())
        for item in planted:
            assert item["value"] in text, (key, item)
            kinds.add(item["field"])
    assert kinds == PLANTED_REPORT  # every kind of planted report PHI occurs in this corpus


def test_planted_values_look_synthetic_and_the_needles_are_many(truth, built):
    needles = planted_needles(truth)
    assert len(needles) > 100
    names = [
        item["value"]
        for e in truth["images"].values()
        for item in e["planted_phi"]
        if item["field"] in ("PatientName", "ReferringPhysicianName", "OperatorsName", "patient name")
    ]
    assert names and all(MARKER.search(name) for name in names)
    assert len(dicom_needles(built[0], truth)) > 100


# ----------------------------------------------------------------------- nothing reaches out


def _report(hits: list[Hit]) -> str:
    return f"{len(hits)} identifying value(s) in the outputs:\n" + "\n".join(map(str, hits[:50]))


def test_no_planted_phi_reaches_any_output(built, truth):
    hits = Scanner(planted_needles(truth)).scan_output(built[1])
    assert not hits, _report(hits)


def test_no_identifying_dicom_value_reaches_any_output(built, truth):
    hits = Scanner(dicom_needles(built[0], truth)).scan_output(built[1])
    assert not hits, _report(hits)


def test_the_output_does_carry_scrubbed_reports(built, truth):
    """The scan is not vacuous: report text is output, with the planted fields scrubbed in place."""
    rows = [
        row
        for path in sorted((built[1] / "annotations").glob("*.parquet"))
        for row in pq.read_table(path, columns=["report_text", "report_language"]).to_pylist()
    ]
    texts = [row["report_text"] for row in rows if row["report_language"] == "en"]
    studies = {e["study_id"] for e in truth["images"].values() if e["source"] == "mimic"}
    assert len(texts) >= len(studies)
    assert all(
        "Patient:  ___" in text and "MRN:  ___" in text and "Referring physician:  ___" in text for text in texts
    )
    assert any("Dr. ___ by telephone" in text for text in texts)


def test_the_scanner_catches_a_leak_in_a_table_copy_and_a_text_file(built, truth, tmp_path):
    _, out = built
    copy = tmp_path / "out"
    shutil.copytree(out / "annotations", copy / "annotations")
    shutil.copy(out / "manifest.json", copy / "manifest.json")
    mimic = next(key for key, e in truth["images"].items() if e["source"] == "mimic")
    name = next(i["value"] for i in truth["images"][mimic]["planted_phi"] if i["field"] == "PatientName")
    mrn = next(i["value"] for i in truth["images"][mimic]["planted_phi"] if i["field"] == "mrn")
    path = sorted((copy / "annotations").glob("*.parquet"))[0]
    rows = pq.read_table(path).to_pylist()
    rows[0]["sections"] = rows[0]["sections"] + [{"name": "preamble", "text": f"Unit no:\n  {mrn}"}]
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["note"] = f"exported by {name}"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    hits = Scanner(planted_needles(truth)).scan_output(copy)
    rel = str(path.relative_to(copy))
    assert {(h.file, h.column, h.value) for h in hits} == {
        (rel, "sections[].text", mrn),
        ("manifest.json", "", name),
        ("manifest.json", "", name.split("^")[0]),
    }
    assert {(h.file, h.column) for h in Scanner({}).scan_output(copy)} == {("manifest.json", "")}  # the marker alone


def test_the_dicom_needles_catch_a_header_value_copied_by_a_reader(built, truth):
    needles = dicom_needles(built[0], truth)
    leaked = next(
        value
        for value, origin in needles.items()
        if origin.endswith("StudyInstanceUID") and origin.startswith("mimic/")
    )
    table = pa.table({"provenance": [json.dumps({"dicom": {"StudyInstanceUID": leaked}})]})
    assert [h.value for h in Scanner(needles).scan_table(table, "t")] == [leaked]
    published = next(e["subject_id"] for e in truth["images"].values() if e["source"] == "siim")
    assert published not in needles  # the SIIM PatientID (= PatientName) is the dataset's own pseudonym


# --------------------------------------------------------------------------- de-identification


SCRUBBED = [
    (" Patient:  DOE, JANE Q          MRN:  123456789", " Patient:  ___          MRN:  ___"),
    (" PATIENT NAME:  DOE^JANE\n DOB:  1/2/1950", " PATIENT NAME:  ___\n DOB:  ___"),
    (" Accession #:  A12345678   Exam:  CHEST", " Accession #:  ___   Exam:  CHEST"),
    ("Discussed with Dr. Alan Smith by phone at 9:45 AM.", "Discussed with Dr. ___ by phone at 9:45 AM."),
    ("Discussed with Dr. Smith\n IMPRESSION:  Clear.", "Discussed with Dr. ___\n IMPRESSION:  Clear."),
    ("Read by Jane Roe, M.D. today.", "Read by ___ today."),
    ("Compared with the study of March 3, 2180 and 2180-02-11.", "Compared with the study of ___ and ___."),
    ("Call (617) 555-1234 or jroe@example.org.", "Call ___ or ___."),
    ("Outside film from 3-14-48 was reviewed.", "Outside film from ___ was reviewed."),
]
UNTOUCHED = [
    "A 2.5 cm nodule at T11-12, 1/3 of the way down; 10:30 AM; 100% O2; 1. Clear.  2. No effusion.",
    "Dr. ___ was paged at 9:45 AM on ___.",
    "Dr. XXXX XXXX notified the ordering team.",
    " INDICATION:  ___ year old man with cough  // r/o PNA",
    "The findings were discussed with the patient.  Patient: stable.",  # "Patient:" mid-line is not a field
]


@pytest.mark.parametrize(("raw", "scrubbed"), SCRUBBED)
def test_scrub_replaces_identifying_values(raw, scrubbed):
    assert deid.scrub(raw) == scrubbed
    assert deid.scrub(scrubbed) == scrubbed


@pytest.mark.parametrize("text", UNTOUCHED)
def test_scrub_leaves_clinical_and_already_scrubbed_text(text):
    assert deid.scrub(text) == text


def test_scrub_leaves_real_deidentified_reports_unchanged():
    paths = [
        DATA / "mimic_cxr" / "official_example_report.txt",
        *sorted((DATA / "reports").glob("negbio_example_*.txt")),
        DATA / "reports" / "chexpert_labeler_sample_reports.csv",
    ]
    assert len(paths) == 4 and all(path.is_file() for path in paths)
    for path in paths:
        text = path.read_text()
        assert deid.scrub(text) == text, path.name


def test_scrub_leaves_every_iu_xray_development_report_unchanged(tmp_path):
    """7,000+ real de-identified report sections (IU X-ray, even ids only): no false positive."""
    sections = [
        text
        for report in iu_development_reports(tmp_path)
        for text in (report.findings, report.impression, report.comparison, report.indication)
        if text
    ]
    assert len(sections) > 5000
    changed = [text for text in sections if deid.scrub(text) != text]
    assert not changed, changed[:5]


def test_scrubbed_synthetic_reports_keep_their_clinical_sections(built):
    corpus, _ = built
    for path in sorted((corpus / "mimic-cxr" / "files").glob("p1?/p*/s*.txt")):
        raw = path.read_text()
        clean = deid.scrub(raw)
        assert not MARKER.search(clean) and all(clean[s.start : s.end] == deid.TOKEN for s in deid.phi_spans(clean))
        before, after = reports.sections(raw), reports.sections(clean)
        assert before.keys() == after.keys() and {"findings", "impression"} & after.keys()
        assert after["preamble"].startswith("FINAL REPORT\n Patient:  ___")  # the header stays out of sections
        for name in ("findings", "impression", "examination", "indication", "technique"):
            assert after.get(name) == before.get(name), (path.name, name)
        for name in ("findings", "impression"):
            if name in after:
                assert phrases.extract_mentions(after[name]) == phrases.extract_mentions(before[name])


_PIECES = st.sampled_from(
    [
        " Patient:  DOE, JANE",
        "  MRN:  12345678",
        "\n",
        "  ",
        "Dr. Roe",
        " at 9:45",
        " on 02/03/2180",
        "___",
        " 4 cm nodule.",
        " IMPRESSION: ",
        "Accession:",
        " A1234567",
        "XXXX",
        ", MD",
        " 1. ",
        "Jan 2, 2001",
    ]
)


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_scrub_is_idempotent_and_leaves_no_span(text):
    once = deid.scrub(text)
    assert deid.scrub(once) == once
    assert all(once[s.start : s.end] == deid.TOKEN for s in deid.phi_spans(once))
