"""Report sectioning (official MIMIC-CXR rules + tolerant mode) and text cleaning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from realdata import DATA

from transforms.reports import (
    choose_section,
    clean_text,
    normalise_section_name,
    section_list,
    section_spans,
    sections,
    sentence_spans,
)

OFFICIAL_EXAMPLE = DATA / "mimic_cxr" / "official_example_report.txt"
NEGBIO_EXAMPLES = DATA / "reports"


def _reference_text(path: Path) -> str:
    """A committed reference text (origin and licence: tests/data/*/SOURCES.md)."""
    return path.read_text(encoding="utf-8")


def mimic_report(*lines: str, title: str = "FINAL REPORT") -> str:
    """A synthetic report in MIMIC layout: centred title, every other line with one leading space."""
    return " " * 33 + title + "\n" + "".join(f" {line}\n" for line in lines)


SYNTHETIC = mimic_report(
    "EXAMINATION:  CHEST (PORTABLE AP)",
    "",
    "INDICATION:  ___ year old man with dyspnea.",
    "",
    "COMPARISON:  ___",
    "",
    "FINDINGS: ",
    "",
    "Heart size is mildly enlarged.  There is mild pulmonary vascular congestion.",
    "No pneumothorax.",
    "",
    "IMPRESSION: ",
    "",
    "Mild cardiomegaly and vascular congestion.",
)


# --- the official example (docs/formats/mimic-cxr.md, tests/data/mimic_cxr) ---------------------


def test_official_example_sections_and_impression():
    text = _reference_text(OFFICIAL_EXAMPLE)
    assert list(sections(text)) == [
        "preamble",
        "examination",
        "indication",
        "technique",
        "comparison",
        "findings",
        "impression",
    ]
    assert sections(text)["impression"] == "Large left pleural effusion"
    assert sections(text)["examination"] == "CHEST (PA AND LAT)"
    assert sections(text)["comparison"] == "___"
    assert sections(text)["findings"].startswith("Cardiac size cannot be evaluated.")
    assert sections(text)["findings"].endswith("degenerative changes in the thoracic spine")
    assert choose_section(text) == ("impression", "Large left pleural effusion")


def test_official_example_without_leading_spaces_strict_vs_tolerant():
    text = "\n".join(line.lstrip() for line in _reference_text(OFFICIAL_EXAMPLE).splitlines())
    assert list(sections(text)) == ["full report"]
    tolerant = sections(text, tolerant=True)
    assert list(tolerant) == [
        "preamble",
        "examination",
        "indication",
        "technique",
        "comparison",
        "findings",
        "impression",
    ]
    assert tolerant["impression"] == "Large left pleural effusion"
    assert tolerant["findings"].startswith("Cardiac size cannot be evaluated.")


def test_tolerant_mode_agrees_with_strict_mode_on_mimic_layout():
    text = _reference_text(OFFICIAL_EXAMPLE)
    strict, tolerant = sections(text), sections(text, tolerant=True)
    assert list(strict) == list(tolerant)
    assert {k: " ".join(v.split()) for k, v in strict.items()} == {k: " ".join(v.split()) for k, v in tolerant.items()}


# --- header rules ------------------------------------------------------------------------------


def test_synthetic_report_sections():
    assert section_list(SYNTHETIC) == [
        ("preamble", "FINAL REPORT"),
        ("examination", "CHEST (PORTABLE AP)"),
        ("indication", "___ year old man with dyspnea."),
        ("comparison", "___"),
        ("findings", "Heart size is mildly enlarged.  There is mild pulmonary vascular congestion.\n No pneumothorax."),
        ("impression", "Mild cardiomegaly and vascular congestion."),
    ]


ADMINISTRATIVE_HEADER = (
    "Patient:  SYNTHPHI, Jane Q                MRN:  123456789",
    "Date of birth:  03/14/1948                Accession #:  A12345678",
    "Referring physician:  SYNTHDOC, Alan MD",
    "",
)


@pytest.mark.parametrize("tolerant", [False, True])
def test_an_unscrubbed_administrative_header_stays_in_the_preamble(tolerant):
    """The synthetic corpus's un-scrubbed header block (mixed-case labels, pipelines/synth/phi.py) is
    not a section in either mode, so FINDINGS and IMPRESSION come out as without it."""
    body = [line[1:] for line in SYNTHETIC.split("\n")[1:-1]]  # without the one leading space
    with_header = mimic_report(*ADMINISTRATIVE_HEADER, *body)
    got, plain = section_list(with_header, tolerant), section_list(SYNTHETIC, tolerant)
    assert got[0][0] == "preamble" and "MRN:  123456789" in got[0][1]
    assert got[1:] == plain[1:]


def test_header_needs_newline_and_a_leading_space():
    text = " FINAL REPORT\nIMPRESSION:  no space before the header\n IMPRESSION:  one space"
    assert section_list(text) == [
        ("preamble", "FINAL REPORT\nIMPRESSION:  no space before the header"),
        ("impression", "one space"),
    ]
    # the header group admits spaces, so extra indentation still matches (as in the official regex)
    assert section_list(" X\n   IMPRESSION:  indented") == [("preamble", "X"), ("impression", "indented")]
    assert section_list("IMPRESSION:  at the very start, no newline") == [
        ("full report", "IMPRESSION:  at the very start, no newline"),
    ]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("IMPRESSON", "impression"),
        ("FINDNGS", "findings"),
        ("FINIDNGS", "findings"),
        ("COMPARISONS", "comparison"),
        ("CLINICAL HISTORY", "history"),
        ("REASON FOR EXAMINATION", "indication"),
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("CHEST, TWO VIEWS", "findings"),
        ("WETREAD", "wet read"),
        ("FINAL IMPRESSION", "impression"),  # contains-rule
        ("ADDENDUM TO REPORT", "addendum"),  # contains-rule
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),  # view words
        ("PORTABLE SUPINE AP", "findings"),
        ("NOTE", "note"),  # unknown names are kept, lower-cased
    ],
)
def test_header_name_normalisation(header, expected):
    assert normalise_section_name(header) == expected
    text = mimic_report("EXAMINATION:  CHEST", f"{header}:  Some text.", "IMPRESSION:  Normal chest.")
    assert [name for name, _ in section_list(text)] == ["preamble", "examination", expected, "impression"]


def test_typo_headers_feed_the_section_choice():
    text = mimic_report("FINDNGS: ", "", "Lungs are clear.", "", "IMPRESSON: ", "", "No acute process.")
    assert sections(text) == {
        "preamble": "FINAL REPORT",
        "findings": "Lungs are clear.",
        "impression": "No acute process.",
    }
    assert choose_section(text) == ("impression", "No acute process.")


# --- empty sections, repeats, last_paragraph, choice ------------------------------------------


def test_empty_findings_and_impression_are_dropped():
    text = mimic_report("CHEST, PA LATERAL:", "", "FINDINGS:  The lungs are clear.", "", "IMPRESSION: ", "")
    assert section_list(text) == [("preamble", "FINAL REPORT"), ("findings", "The lungs are clear.")]
    assert choose_section(text) == ("findings", "The lungs are clear.")


def test_repeated_section_last_occurrence_wins():
    text = mimic_report("IMPRESSION:  First reading.", "", "FINDINGS:  Lungs clear.", "", "IMPRESSION:  Final reading.")
    assert [name for name, _ in section_list(text)] == ["preamble", "impression", "findings", "impression"]
    assert sections(text)["impression"] == "Final reading."
    assert list(sections(text)) == ["preamble", "impression", "findings"]
    assert choose_section(text) == ("impression", "Final reading.")


def test_last_paragraph_split_when_no_findings_or_impression():
    text = mimic_report(
        "EXAMINATION:  CHEST (PA AND LAT)",
        "",
        "INDICATION:  Cough.",
        "",
        "The lungs are clear.  No effusion.",
        "No pneumothorax.",
        "",
        "Second paragraph stays with the tail.",
    )
    assert section_list(text) == [
        ("preamble", "FINAL REPORT"),
        ("examination", "CHEST (PA AND LAT)"),
        ("indication", "Cough."),
        (
            "last_paragraph",
            "The lungs are clear.  No effusion.\n No pneumothorax.\n \n Second paragraph stays with the tail.",
        ),
    ]
    assert choose_section(text)[0] == "last_paragraph"


def test_no_last_paragraph_when_findings_exist():
    text = mimic_report("FINDINGS:  Clear lungs.", "", "RECOMMENDATION(S):  Follow up.", "", "Call ___.")
    assert [name for name, _ in section_list(text)] == ["preamble", "findings", "recommendations"]


def test_report_without_headers_is_full_report_then_last_paragraph():
    text = " Portable chest.\n \n Lungs are clear.\n"
    assert section_list(text) == [("full report", "Portable chest."), ("last_paragraph", "Lungs are clear.")]
    assert choose_section(text) == ("last_paragraph", "Lungs are clear.")


def test_comparison_is_the_last_resort():
    text = mimic_report("EXAMINATION:  CHEST", "COMPARISON:  Unchanged from ___, no acute process.")
    assert choose_section(text) == ("comparison", "Unchanged from ___, no acute process.")


def test_no_usable_section_gives_none():
    assert choose_section(mimic_report("EXAMINATION:  CHEST", "INDICATION:  Cough.")) is None
    # the chosen section exists but is empty (a trailing blank line makes an empty last_paragraph)
    trailing_blank = mimic_report("EXAMINATION:  CHEST", "INDICATION:  Cough.", "")
    assert section_list(trailing_blank)[-1] == ("last_paragraph", "")
    assert choose_section(trailing_blank) is None
    assert choose_section("") is None


def test_non_string_input_is_a_clear_error():
    with pytest.raises(TypeError, match="report text must be str"):
        sections(None)  # type: ignore[arg-type]


# --- addenda -----------------------------------------------------------------------------------

ADDENDUM_REPORT = (
    " " * 32 + "FINAL ADDENDUM\n"
    " ADDENDUM:  Findings were discussed with Dr. ___ at 10:15 on ___.\n"
    " \n"
    " "
    + "_" * 78
    + "\n"
    + mimic_report("EXAMINATION:  CHEST (PA AND LAT)", "", "IMPRESSION: ", "", "Right lower lobe pneumonia.")
)


def test_addendum_is_kept_as_its_own_section():
    names = [name for name, _ in section_list(ADDENDUM_REPORT)]
    assert names == ["preamble", "addendum", "examination", "impression"]
    addendum = sections(ADDENDUM_REPORT)["addendum"]
    assert addendum.startswith("Findings were discussed with Dr. ___ at 10:15 on ___.")
    assert choose_section(ADDENDUM_REPORT) == ("impression", "Right lower lobe pneumonia.")
    assert clean_text(addendum) == "Findings were discussed with Dr. ___ at 10:15 on ___.\n\nFINAL REPORT"


# --- tolerant mode -----------------------------------------------------------------------------


def test_tolerant_negbio_examples():
    first = _reference_text(NEGBIO_EXAMPLES / "negbio_example_00000086.txt")
    assert sections(first) == {"full report": first.strip()}
    found = sections(first, tolerant=True)
    assert list(found) == ["preamble", "findings", "impression"]
    assert found["findings"].startswith("pa and lat cxr at 7:34 p.m..")
    assert found["impression"].startswith("stable chest.")

    second = _reference_text(NEGBIO_EXAMPLES / "negbio_example_00019248.txt")
    name, body = choose_section(second, tolerant=True)
    assert name == "findings"
    assert body.startswith("chest: four images:") and "mild cardiomegaly." in body


def test_tolerant_iu_style_and_mixed_case_headers():
    text = "Comparison: None.\nIndication: Chest pain.\nFindings: The heart is normal in size.\nThe lungs are clear.\nImpression: No acute disease."
    assert sections(text, tolerant=True) == {
        "preamble": "",
        "comparison": "None.",
        "indication": "Chest pain.",
        "findings": "The heart is normal in size.\nThe lungs are clear.",
        "impression": "No acute disease.",
    }


def test_tolerant_mode_ignores_ordinary_lower_case_colons():
    text = "findings:\nheart: normal size.\nlungs: clear.\nimpression: normal chest."
    assert section_list(text, tolerant=True) == [
        ("preamble", ""),
        ("findings", "heart: normal size.\nlungs: clear."),
        ("impression", "normal chest."),
    ]


def test_tolerant_last_paragraph_uses_any_blank_line():
    text = "EXAMINATION: Chest\n\nLungs are clear.\n\t\nNo effusion."
    assert section_list(text, tolerant=True)[-1] == ("last_paragraph", "Lungs are clear.\n\t\nNo effusion.")


# --- properties: sections never lose or invent text -------------------------------------------

REPORTISH = st.lists(
    st.sampled_from(list("abcXYZ IMPRESONFDG():,/-._\n\t") + ["\n ", "\n \n", "FINDINGS", "IMPRESSION"]),
    max_size=60,
).map("".join)
_CANDIDATE_HEADERS = {
    False: re.compile(r"(?=\n ([A-Z ()/,-]+:))"),
    True: re.compile(r"(?=^[ \t]*([A-Za-z][A-Za-z ()/,-]*:))", re.MULTILINE),
}


@settings(max_examples=300, deadline=None)
@given(text=REPORTISH, tolerant=st.booleans())
def test_sections_are_verbatim_slices_and_cover_all_content(text, tolerant):
    spans = section_spans(text, tolerant)
    covered = [False] * len(text)
    previous_end = 0
    for section in spans:
        assert text[section.start : section.start + len(section.text)] == section.text
        assert section.text == section.text.strip()
        assert section.start >= previous_end or not section.text
        previous_end = section.start + len(section.text)
        covered[section.start : previous_end] = [True] * len(section.text)
    for match in _CANDIDATE_HEADERS[tolerant].finditer(text):
        covered[match.start(1) : match.end(1)] = [True] * (match.end(1) - match.start(1))
    lost = [char for char, is_covered in zip(text, covered) if not is_covered and not char.isspace()]
    assert lost == []


HEADERS = st.sampled_from(["FINDINGS", "IMPRESSION", "IMPRESSON", "COMPARISON", "INDICATION", "NOTE", "WET READ"])
BODIES = st.lists(st.text(alphabet="abc .", min_size=0, max_size=12), min_size=1, max_size=3).map("\n \n ".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(HEADERS, BODIES), min_size=1, max_size=5), BODIES)
def test_structured_reports_keep_every_body_word(parts, preamble):
    lines = [preamble] + [f"{header}:  {body}" for header, body in parts]
    text = " " * 30 + "FINAL REPORT\n" + "".join(f" {line}\n" for line in lines)
    found = section_list(text)
    names = [
        normalise_section_name(header)
        for header, body in parts
        if body.strip() or normalise_section_name(header) not in ("impression", "findings")
    ]
    assert [name for name, _ in found if name not in ("preamble", "last_paragraph")] == names
    body_words = [word for _, body in parts for word in body.split()]
    section_words = [word for _, section_text in found for word in section_text.split()]
    assert section_words[len(("FINAL REPORT " + preamble).split()) :] == body_words


# --- clean_text --------------------------------------------------------------------------------


def test_clean_text_normalises_whitespace_and_keeps_deid_token():
    raw = " Large left pleural effusion is new.  Small\n right effusion, per Dr. ___.\r\n \n\t2.  No pneumothorax.  "
    assert (
        clean_text(raw)
        == "Large left pleural effusion is new. Small right effusion, per Dr. ___.\n\n2. No pneumothorax."
    )


def test_clean_text_deid_variants_and_separator():
    assert clean_text("Seen by XXXX on ______ at ___ ___.") == "Seen by ___ on ___ at ___ ___."
    assert clean_text("Seen by XXXX on ___.", deid_token="[ANON]") == "Seen by [ANON] on [ANON]."
    assert clean_text("Addendum text.\n " + "_" * 60 + "\n Report text.") == "Addendum text.\n\nReport text."
    assert clean_text("XRAY of the EXXXTRA chest") == "XRAY of the EXXXTRA chest"
    assert clean_text(" \n \n ") == ""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab X_.\n\t\r ") + ["XXXX", "___"]), max_size=40).map("".join))
def test_clean_text_is_idempotent_and_tidy(text):
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    assert "  " not in cleaned and "\t" not in cleaned and "\r" not in cleaned
    assert (
        all(
            paragraph and paragraph == paragraph.strip() and "\n" not in paragraph
            for paragraph in cleaned.split("\n\n")
        )
        or cleaned == ""
    )
    # apart from underscores and X (de-identification runs), no visible character is lost or added
    assert re.sub(r"[\s_X]", "", cleaned) == re.sub(r"[\s_X]", "", text)


# ---------------------------------------------------------------- sentences


def test_sentence_spans_slice_stripped_sentences():
    text = "FINDINGS:\n  Heart size normal.  A 2.5 cm nodule!\nIs it new?\n\nIMPRESSION:\n1. Nodule.\n2. No effusion"
    sentences = [text[start:end] for start, end in sentence_spans(text)]
    assert sentences == [
        "FINDINGS:\n  Heart size normal.",
        "A 2.5 cm nodule!",
        "Is it new?",
        "IMPRESSION:",
        "1. Nodule.",
        "2. No effusion",
    ]
    assert sentence_spans("") == sentence_spans(" \n ") == []
    with pytest.raises(TypeError, match="must be str"):
        sentence_spans(b"bytes")
