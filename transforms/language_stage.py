"""The language stage of one image: report sections, labels, attribute phrases, PHI scrubbing and the
English text of a PadChest report (pure; see :mod:`transforms.enrich`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

from schemas.records import AttributeMention
from schemas.rows import FindingCell, SectionCell
from transforms import deid, labels, padchest_english, phrases, reports
from transforms.enrich import DecodedUnit, EnrichedUnit
from transforms.views import is_frontal

MENTION_SECTIONS = ("findings", "impression")


def report_mentions(record) -> list[AttributeMention]:
    """Attribute mentions of a record's report: English rules on the findings and impression
    sections (spans into the full report text); PadChest's sentence labels, never its stemmed text."""
    report = record.report
    if report is not None and report.language == "en":
        mentions = []
        for section in reports.section_spans(report.text):
            if section.name in MENTION_SECTIONS:
                for mention in phrases.extract_mentions(section.text):
                    start, end = mention.span
                    mentions.append(mention.model_copy(update={"span": (start + section.start, end + section.start)}))
        return mentions
    by_sentence = record.provenance.get("labels_localizations_by_sentence")
    if record.image.source == "padchest" and by_sentence:
        return phrases.padchest_mentions(json.loads(by_sentence), report.text if report is not None else None)
    return []


def english_statements(record) -> str | None:
    """PadChest's report in English: its sentence labels and localizations rendered as statements
    (:mod:`transforms.padchest_english`), without side words on a view where left and right cannot be
    told apart. None for other sources and for rows without sentence labels."""
    by_sentence = record.provenance.get("labels_localizations_by_sentence")
    if record.image.source != "padchest" or not by_sentence:
        return None
    rendered = padchest_english.render_report(json.loads(by_sentence), sides=is_frontal(record.image.view))
    return rendered.text or None


def _scrub_report(decoded: DecodedUnit) -> DecodedUnit:
    """The unit with its English report's line endings normalised (CR LF and CR -> LF) and the report
    de-identified (new objects; the input is left as it was)."""
    record = decoded.unit.record
    report = record.report
    if report is None or report.language != "en":
        return decoded
    text = deid.scrub(reports.normalise_line_endings(report.text))
    if text == report.text:
        return decoded
    record = record.model_copy(update={"report": report.model_copy(update={"text": text})})
    return replace(decoded, unit=replace(decoded.unit, record=record))


def language_unit(enriched: EnrichedUnit) -> EnrichedUnit:
    """De-identified report, its sections and attribute mentions, and the harmonised findings.

    The English report's line endings are normalised and the report is scrubbed first
    (``transforms/deid.py``); the result replaces the record's report, so sections, mention spans and the
    annotation row's ``report_text`` all refer to that text, and no carriage return reaches a target."""
    enriched.decoded = _scrub_report(enriched.decoded)
    record = enriched.decoded.unit.record
    if record.report is not None and record.report.language == "en":
        enriched.sections = [
            SectionCell(name=name, text=text) for name, text in reports.section_list(record.report.text)
        ]
    enriched.mentions = report_mentions(record)
    findings_text = next((s["text"] for s in reversed(enriched.sections) if s["name"] == "findings"), None)
    if findings_text:  # the cleaned FINDINGS text's labels, for chain-of-thought targets (study labels stay official)
        enriched.findings_labels = labels.label_report(reports.clean_text(findings_text))
    raw = (
        list(record.raw_labels)
        + labels.box_labels(record.boxes)
        + [label for ann in enriched.annotations for label in ann.raw_labels]
    )
    enriched.findings = [
        FindingCell(name=f.name, presence=f.presence, systems=list(f.systems), raw=list(f.raw))
        for f in labels.harmonize(raw)
    ]
    return enriched


def english_unit(enriched: EnrichedUnit, translations: Mapping[str, str] | None = None) -> EnrichedUnit:
    """PadChest's report in English: its statements (:func:`english_statements`) and, from
    ``translations`` (report text -> English, when the build translates), its translation.
    :class:`transforms.padchest_english.UnknownPhrase` for a sentence label the manifest lacks."""
    record = enriched.decoded.unit.record
    enriched.report_english = english_statements(record)
    if translations and record.report is not None and record.image.source == "padchest":
        enriched.report_translation = translations.get(record.report.text) or None
    return enriched


def without_report(enriched: EnrichedUnit, reason: str) -> EnrichedUnit:
    """The unit as geometry left it, its report dropped (``provenance["report"]`` = ``reason``) with
    PadChest's sentence labels, which annotate the report's sentences, and nothing of the language
    stage kept: what a report the language stage cannot handle costs."""
    record = enriched.decoded.unit.record
    provenance = {key: value for key, value in record.provenance.items() if key != "labels_localizations_by_sentence"}
    record = record.model_copy(update={"report": None, "provenance": {**provenance, "report": reason}})
    decoded = replace(enriched.decoded, unit=replace(enriched.decoded.unit, record=record))
    return replace(
        enriched,
        decoded=decoded,
        findings=[],
        sections=[],
        mentions=[],
        findings_labels=None,
        report_english=None,
        report_translation=None,
    )
