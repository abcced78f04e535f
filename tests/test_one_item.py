"""One bad item costs one item: a report the language stage cannot handle costs the report (an item
reject at ``language``), and the image, its labels and its annotations are still written."""

from __future__ import annotations

import json

import pytest

from pipelines.beam import image_stage
from schemas.records import ImageRef, RawLabel, Report, SourceRecord
from transforms import enrich, language_stage, padchest_english
from transforms.geometry import letterbox_for
from transforms.units import ImageUnit

REPORT = "FINDINGS: Small left pleural effusion.\nIMPRESSION: Effusion.\n"


def unit_with(report: Report | None) -> ImageUnit:
    ref = ImageRef(
        image_key="mimic/ab",
        source="mimic",
        native_id="ab",
        uri="/ab.dcm",
        format="dicom",
        subject_id="10000001",
        study_id="50000001",
    )
    record = SourceRecord(
        image=ref, report=report, raw_labels=[RawLabel(system="mimic-chexpert", name="Pleural Effusion", value=1.0)]
    )
    return ImageUnit(record=record, split="train", split_authority="official")


@pytest.fixture
def decoded(monkeypatch):
    """The image stage without pixels: decode_unit gives a 100x80 image's letterbox."""

    def decode(unit, size, png_compression):
        return enrich.DecodedUnit(
            unit=unit,
            png=b"",
            letterbox=letterbox_for(100, 80, 512),
            width=100,
            height=80,
            photometric="MONOCHROME2",
            bits_stored=12,
            source_format="dicom",
        )

    monkeypatch.setattr(enrich, "decode_unit", decode)


def failing_on(text: str):
    real = language_stage.report_mentions

    def mentions(record):
        if record.report is not None and text in record.report.text:
            raise RecursionError("maximum recursion depth exceeded in the rule matcher")
        return real(record)

    return mentions


def test_a_report_the_language_stage_cannot_handle_costs_only_the_report(decoded, monkeypatch):
    monkeypatch.setattr(language_stage, "report_mentions", failing_on("effusion"))
    report = Report(text=REPORT, language="en", origin="files/p10/p10000001/s50000001.txt")
    image, result = image_stage.run_unit(unit_with(report), 512, 30, "shard 0", 1)
    assert image is not None and image["image_key"] == "mimic/ab"  # the image is written
    (row,) = result.annotation_rows
    assert row["report_text"] is None and json.loads(row["provenance"])["report"] == "recursion-error"
    assert "Pleural Effusion" in {finding["name"] for finding in row["findings"]}  # labels still harmonised
    (reject,) = result.rejects
    assert (reject.key, reject.stage, reject.level, reject.reason) == (
        "mimic/ab",
        "language",
        "item",
        "recursion-error",
    )
    assert reject.detail.startswith("files/p10/p10000001/s50000001.txt: maximum recursion depth")
    assert result.events == [("mimic", "written")]


def padchest_unit(by_sentence: list, view: str = "PA") -> ImageUnit:
    ref = ImageRef(
        image_key="padchest/1.png",
        source="padchest",
        native_id="1.png",
        uri="/1.png",
        format="png",
        subject_id="7",
        study_id="8",
        view=view,
    )
    record = SourceRecord(
        image=ref,
        report=Report(text="cardiomegali .", language="es-stemmed", origin="Report"),
        raw_labels=[RawLabel(system="padchest-labels", name="cardiomegaly", value=1.0)],
        provenance={"labels_localizations_by_sentence": json.dumps(by_sentence)},
    )
    return ImageUnit(record=record, split="train", split_authority="patient-hash")


def test_a_sentence_label_without_english_costs_only_the_english_statements(decoded, monkeypatch):
    def unknown(by_sentence, sides=True):
        raise padchest_english.UnknownPhrase("pleural effusion")

    render = padchest_english.render_report
    monkeypatch.setattr(padchest_english, "render_report", unknown)  # a label the phrase table lacks
    image, result = image_stage.run_unit(
        padchest_unit([["cardiomegaly", "loc cardiac"], ["pleural effusion"]]), 512, 30, "shard 0", 1
    )
    assert image is not None
    (row,) = result.annotation_rows
    assert row["report_text"] == "cardiomegali ." and row["report_english"] is None
    assert [m["finding"] for m in row["mentions"]] == ["Cardiomegaly", "Pleural Effusion"]  # the report stays
    (reject,) = result.rejects
    assert (reject.stage, reject.level, reject.reason) == ("language", "item", "unknown-padchest-phrase")
    assert "'pleural effusion'" in reject.detail
    monkeypatch.setattr(padchest_english, "render_report", render)
    _, good = image_stage.run_unit(padchest_unit([["cardiomegaly", "loc cardiac"]]), 512, 30, "shard 0", 1)
    assert good.annotation_rows[0]["report_english"] == "Cardiomegaly." and not good.rejects
    _, translated = image_stage.run_unit(
        padchest_unit([["cardiomegaly"]]), 512, 30, "shard 0", 1, {"cardiomegali .": "Cardiomegaly."}
    )
    assert translated.annotation_rows[0]["report_translation"] == "Cardiomegaly."


def test_a_sentence_label_nothing_knows_costs_the_report_not_the_image(decoded):
    """A label labels.yaml does not map either: the report (mentions, statements) goes, the image stays."""
    image, result = image_stage.run_unit(padchest_unit([["cardiomegaly"], ["moon phase"]]), 512, 30, "shard 0", 1)
    (row,) = result.annotation_rows
    assert image is not None and row["report_english"] is None and row["mentions"] == []
    assert "labels_localizations_by_sentence" not in json.loads(row["provenance"])  # they went with the report
    assert [(r.stage, r.level, r.reason) for r in result.rejects] == [("language", "item", "value-error")]


def test_a_language_failure_without_a_report_still_rejects_the_unit(decoded, monkeypatch):
    def broken(raw):
        raise ValueError("label table broken")

    monkeypatch.setattr(language_stage.labels, "harmonize", broken)
    image, result = image_stage.run_unit(unit_with(None), 512, 30, "shard 0", 1)
    assert image is None and [(r.stage, r.level, r.reason) for r in result.rejects] == [
        ("language", "record", "value-error")
    ]


@pytest.mark.parametrize("where", ["decode", "language"])
def test_running_out_of_memory_is_not_the_image_s_fault_and_is_never_a_reject(decoded, monkeypatch, where):
    """A reject lands in the shard's checkpoint and is never retried; MemoryError fails the bundle instead,
    so the runner retries it (Dataflow: on another worker)."""

    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(
        *((enrich, "decode_unit") if where == "decode" else (language_stage, "report_mentions")), exhausted
    )
    report = Report(text=REPORT, language="en", origin="files/p10/p10000001/s50000001.txt")
    with pytest.raises(MemoryError):
        image_stage.run_unit(unit_with(report), 512, 30, "shard 0", 1)
