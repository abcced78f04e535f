"""Every instruction row of a 150-study synthetic build checked against the corpus's own truth.

The row checks are those of ``cxr-instruct audit`` (transforms/audit.py), but each image's facts come
from ``SYNTHETIC_TRUTH.json`` (:func:`truth_facts`): which findings the case states and how, where its
lesions are, how severe they are and on which side, the view, and whether it is a Chest ImaGenome gold
image. Only what the truth does not describe (report sections, organ outlines, region phrases and
attributes) comes from the build; generated VQA states are also checked against the case itself. Then:
zero contradictions of every kind, and the audit is shown to catch each kind of defect when one is
planted, so the zero means something.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, replace

import pyarrow.parquet as pq
import pytest

from pipelines.beam.build import run_build
from pipelines.synth import generate
from pipelines.synth.cases import Finding
from pipelines.synth.text import padchest_sentence
from pipelines.synth.vindr import BOX_CLASSES, LOCAL_LABELS
from schemas.config import PROFILES, load_config
from transforms.audit import KINDS, ImageFacts, LesionBox, audit_row, facts_from_annotation
from transforms.geometry import letterbox_for
from transforms.labels import NO_FINDING
from transforms.padchest_english import render_report

STUDIES = 150
TAXONOMY = (
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
DEVICE_SIDES = {"pacemaker": "left", "right internal jugular line": "right"}
"""The side of each synthetic device as its report sentence states it (pipelines/synth/text.py)."""
BOX_LABEL = {"vindr": BOX_CLASSES, "siim": {"Pneumothorax": "Pneumothorax"}}
"""Case finding -> the class label its box carries, per source that boxes lesions."""


def iou(a, b) -> float:
    width, height = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@dataclass
class TruthFacts(ImageFacts):
    """Facts of an image from the synthetic truth. Boxes are the case's lesion outlines, so a box the
    pipeline draws (a reader consensus, a merge of overlapping boxes) matches one by overlap, not exactly."""

    positives: frozenset[str] = frozenset()

    def box_supported(self, label, finding, unit) -> bool:
        """One of the label's lesion boxes, or the enclosing box of those mostly inside it, overlaps
        the drawn box by IoU >= 0.5."""
        own = [b.unit for b in self.lesion_boxes if b.label == label]
        if any(iou(box, unit) >= 0.5 for box in own):
            return True
        inside = [box for box in own if _inside_fraction(box, unit) >= 0.5]
        if not inside:
            return False
        enclosing = (
            min(b[0] for b in inside),
            min(b[1] for b in inside),
            max(b[2] for b in inside),
            max(b[3] for b in inside),
        )
        return iou(enclosing, unit) >= 0.5

    def box_covered(self, required, claimed) -> bool:
        return any(iou(required.unit, unit) >= 0.5 or _inside_fraction(required.unit, unit) >= 0.8 for unit in claimed)

    def report_positives(self, section):
        return set(self.positives) if section in self.sections else None


def _inside_fraction(box, outer) -> float:
    width, height = min(box[2], outer[2]) - max(box[0], outer[0]), min(box[3], outer[3]) - max(box[1], outer[1])
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / ((box[2] - box[0]) * (box[3] - box[1]))


def truth_presence(entry: dict) -> dict[str, int | None]:
    """Presence of every taxonomy finding as the case states it, per source:

    - MIMIC: the findings the report states (1 / 0 / -1); the others are not stated (None).
    - VinDr: its readers label every local and global finding; the truth lists them all (Edema and
      Fracture only when present: the writer boxes them then), so what is not 1 is 0. No device label.
    - SIIM: pneumothorax only.
    - PadChest: the labels list every finding of the study (absent ones are 0), unless the row has no
      labels at all (every finding None).
    """
    stated = entry["findings"]
    if entry["source"] == "mimic":
        return {name: stated.get(name) for name in TAXONOMY}
    if entry["source"] == "siim":
        return {name: stated.get(name) if name == "Pneumothorax" else None for name in TAXONOMY}
    if entry["source"] == "vindr":
        return {name: None if name == "Support Devices" else stated.get(name, 0) for name in TAXONOMY}
    if entry.get("labels_missing"):
        return {name: None for name in TAXONOMY}
    return {name: stated.get(name, 0) for name in TAXONOMY}


def truth_sides(entry: dict) -> dict[str, frozenset[str]]:
    sides = {}
    for name, detail in (entry.get("finding_details") or {}).items():
        if detail["presence"] != 1:
            continue
        side = DEVICE_SIDES.get(detail["detail"]) if name == "Support Devices" else detail["laterality"]
        if side:
            sides[name] = frozenset({side} if side != "bilateral" else {"left", "right", "bilateral"})
    return sides


WORDED_SEVERITIES = {
    "mimic": {"Pleural Effusion", "Pneumothorax", "Cardiomegaly", "Atelectasis", "Edema"},
    "padchest": {"Pleural Effusion"},
}
"""Findings whose severity the synthetic report words (pipelines/synth/text.py: "small left pleural
effusion", "moderate cardiomegaly", PadChest's "grand derram pleural"); VinDr and SIIM have no report."""


def truth_severities(entry: dict) -> dict[str, tuple[int, int]]:
    worded = WORDED_SEVERITIES.get(entry["source"], set())
    return {
        name: (detail["severity"], detail["severity"])
        for name, detail in (entry.get("finding_details") or {}).items()
        if detail["presence"] == 1 and detail["severity"] and name in worded
    }


def truth_questions(document: dict) -> dict[str, dict[str, dict]]:
    """image key -> {where: question} of the VQA datasets' questions the synthetic corpus wrote, as the
    truth file records them (not as the reader read them)."""
    found: dict[str, dict[str, dict]] = {}
    for q in document["mimic_cxr_vqa"]["questions"]:
        found.setdefault(q["image"], {})[f"{q['file']} #{q['idx']}"] = {
            "dataset": "mimic-cxr-vqa",
            "split": q["split"],
            "question": q["question"],
            "answers": q["answer"],
            "question_type": q["content_type"],
            "reference_study_id": None,
        }
    for q in document["mimic_diff_vqa"]["questions"]:
        found.setdefault(q["image"], {})[f"{q['file']} row {q['row']}"] = {
            "dataset": "mimic-diff-vqa",
            "split": q["split"],
            "question": q["question"],
            "answers": [q["answer"].strip()],
            "question_type": q["question_type"],
            "reference_study_id": q["ref_id"],
        }
    return found


def truth_facts(entry: dict, built: ImageFacts, questions: dict[str, dict], size: int = 512) -> TruthFacts:
    presence = truth_presence(entry)
    boxes = []
    if entry["lesion_boxes"] and entry["source"] in BOX_LABEL:
        letterbox = letterbox_for(entry["width"], entry["height"], size)
        for finding, finding_boxes in entry["lesion_boxes"].items():
            label = BOX_LABEL[entry["source"]].get(finding)
            if label and presence.get(finding) == 1:
                boxes += [LesionBox(label, finding, letterbox.box_to_unit(*box)) for box in finding_boxes]
    absent = frozenset()
    if entry["source"] == "vindr":
        positive_labels = {BOX_CLASSES[name] for name, p in presence.items() if p == 1 and name in BOX_CLASSES}
        absent = frozenset(set(LOCAL_LABELS) - positive_labels)
    elif entry["source"] == "siim" and presence["Pneumothorax"] == 0:
        absent = frozenset({"Pneumothorax"})
    bands = dict(built.bands, ctr_band=entry["ctr_band"])
    return TruthFacts(
        key=built.key,
        source=entry["source"],
        split=built.split,
        view=entry["view"],
        held_out=entry["imagenome_gold"],
        study_id=built.study_id,
        presence=presence,
        absent_labels=absent,
        lesion_boxes=tuple(boxes),
        required_boxes=tuple(boxes),
        structure_boxes=built.structure_boxes,
        polygons=built.polygons,
        polygon_areas=built.polygon_areas,
        sides=truth_sides(entry),
        severities=truth_severities(entry),
        bands=bands,
        sections=built.sections,
        region_phrases=built.region_phrases,
        study_datetime=built.study_datetime,
        scene_phrases=built.scene_phrases,
        relationships=built.relationships,
        report_english=built.report_english,
        report_translation=built.report_translation,
        padchest_findings=built.padchest_findings,
        english_labels=built.english_labels,
        severity_document=built.severity_document,
        severity_tfidf=built.severity_tfidf,
        questions=questions,
        positives=frozenset(n for n, p in presence.items() if p == 1 and n != NO_FINDING),
    )


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    corpus = generate(tmp_path_factory.mktemp("corpus"), studies=STUDIES, seed=0)
    out = tmp_path_factory.mktemp("out")
    run_build(load_config(corpus / "build.yaml"), str(out))
    document = json.loads((corpus / "SYNTHETIC_TRUTH.json").read_text())
    truth, questions = document["images"], truth_questions(document)
    annotations = {
        row["image_key"]: row
        for path in sorted(out.glob("annotations/*.parquet"))
        for row in pq.read_table(path).to_pylist()
    }
    built = {key: facts_from_annotation(row) for key, row in annotations.items()}
    facts = {key: truth_facts(truth[key], built[key], questions.get(key, {})) for key in built}
    rows = [row for path in sorted(out.glob("instructions/*/*/*.parquet")) for row in pq.read_table(path).to_pylist()]
    rejects = [row for path in sorted(out.glob("rejects/*.parquet")) for row in pq.read_table(path).to_pylist()]
    return {
        "out": out,
        "truth": truth,
        "document": document,
        "annotations": annotations,
        "facts": facts,
        "rows": rows,
        "rejects": rejects,
    }


def test_every_row_agrees_with_the_truth(build):
    found = [c for row in build["rows"] for c in audit_row(row, build["facts"])]
    by_kind = Counter(c.kind for c in found)
    examples = {kind: next(c.as_dict() for c in found if c.kind == kind) for kind in by_kind}
    assert not found, f"{len(found)} contradictions: {dict(by_kind)}; examples {json.dumps(examples, indent=1)}"
    assert len(build["rows"]) > 5000


def test_every_task_of_every_profile_has_rows(build):
    from transforms.tasks import load_profile

    made = Counter((row["profile"], row["task"]) for row in build["rows"])
    for profile in PROFILES:
        for task in load_profile(profile).tasks:
            assert made[(profile, task)] > 0, (profile, task)


def english_phrase(detail: dict, name: str) -> tuple[str, str | None]:
    """How the English statements name a synthetic PadChest finding (the label the synthetic writer
    gives it, rendered alone and without sides) and the side its sentence labels state, if any."""
    _, label, places = padchest_sentence(
        Finding(name, 1, detail["laterality"], detail["zone"], detail["severity"], None, detail["detail"])
    )
    phrase = render_report([[label]], sides=False).text.rstrip(".").lower()
    return phrase, detail["laterality"] if detail["laterality"] in places else None


def test_padchest_english_reports_name_every_finding_of_the_case_and_its_side(build):
    """Radixpert and MediVLM rows of PadChest images, against the truth: every finding the case has is
    named by a sentence of the report, on a frontal view with the side the case gives it; on other
    views no side at all."""
    checked = 0
    for row in build["rows"]:
        if row["source"] != "padchest" or row["profile"] not in ("radixpert", "medivlm"):
            continue
        target = json.loads(row["target"])
        text = target.get("text") or target["report"]
        entry = build["truth"][row["image_keys"][0]]
        sentences = [sentence.lower() for sentence in text.split(". ")]
        for name, detail in entry["finding_details"].items():
            if detail["presence"] != 1:
                continue
            phrase, side = english_phrase(detail, name)
            naming = [sentence for sentence in sentences if phrase in sentence]
            assert naming, (row["id"], name, phrase, text)
            if side and entry["view"] in ("PA", "AP", "AP_horizontal"):
                words = ("bilateral", "both") if side == "bilateral" else (side,)
                assert any(word in sentence for word in words for sentence in naming), (row["id"], name, side, text)
            checked += 1
        if entry["view"] not in ("PA", "AP", "AP_horizontal"):
            assert not re.search(r"\b(left|right|bilateral|both)\b", text, re.IGNORECASE), (row["id"], text)
    assert checked > 50


def test_vqa_states_are_the_cases_own_findings(build):
    """Each state a generated VQA row rests on, against the case: an attribute said present is a finding
    the case states (1, or -1: the synthetic scene graph says "yes" for both), one said absent a finding
    it denies (0), in a region the synthetic scene graph gives that finding."""
    from pipelines.synth.imagenome import finding_attribute, finding_regions

    checked = 0
    for row in build["rows"]:
        if row["task"] != "vqa" or json.loads(row["target"])["origin"] != "imagenome-scene-graph":
            continue  # a MIMIC-CXR-VQA row is checked against its file by the audit
        case = {}
        for name, d in build["truth"][row["image_keys"][0]]["finding_details"].items():
            finding = Finding(name, d["presence"], d["laterality"], d["zone"], d["severity"], None, d["detail"])
            case[finding_attribute(finding).split("|")[2]] = (d["presence"], set(finding_regions(finding)))
        for region, attribute, present in json.loads(row["target"])["claims"]:
            if attribute is not None:
                presence, regions = case[attribute]
                assert (presence != 0) is present and region in (None, *regions), (row["id"], region, attribute)
                checked += 1
    assert checked > 500


def test_every_question_of_the_vqa_datasets_is_a_row_in_its_split_or_a_reject_with_its_reason(build):
    """Each question the synthetic MIMIC-CXR-VQA and Medical-Diff-VQA files ask: a row of its task in the
    dataset's own split, or (as the truth file expects) a reject naming its file and row."""
    rows = {}
    for row in build["rows"]:
        target = json.loads(row["target"])
        if target.get("origin") in ("mimic-cxr-vqa", "mimic-diff-vqa") and row["profile"] == "m4cxr":
            rows[target["where"]] = row
    rejects = {}
    for reject in build["rejects"]:
        where = re.match(r"(?:\w+: )?(dataset/\w+\.json #\d+|mimic_pair_questions\.csv row \d+)", reject["detail"])
        if where:
            rejects[where[1]] = reject
    outcomes = Counter()
    for dataset, at in (("mimic_cxr_vqa", "{file} #{idx}"), ("mimic_diff_vqa", "{file} row {row}")):
        for q in build["document"][dataset]["questions"]:
            where = at.format(**q)
            if q["expected"] is None:
                row = rows[where]
                task = (
                    "vqa"
                    if dataset == "mimic_cxr_vqa"
                    else ("difference_vqa" if q["question_type"] == "difference" else "main_image_vqa")
                )
                keys = [q["reference_image"], q["image"]] if task == "difference_vqa" else [q["image"]]
                assert (row["task"], row["image_keys"]) == (task, keys), where
                assert row["split"] == {"valid": "validation", "val": "validation"}.get(q["split"], q["split"])
                outcomes[(dataset, "row")] += 1
            else:
                reject = rejects[where]
                assert (reject["stage"], reject["reason"]) == (q["expected"]["stage"], q["expected"]["reason"]), where
                outcomes[(dataset, q["expected"]["reason"])] += 1
    assert set(outcomes) >= {
        ("mimic_cxr_vqa", "row"),
        ("mimic_diff_vqa", "row"),
        ("mimic_cxr_vqa", "vqa-split-differs"),
        ("mimic_diff_vqa", "vqa-split-differs"),
        ("mimic_diff_vqa", "reference-not-earlier"),
    }, outcomes


# ---------------------------------------------------------------- planted defects are caught


def _first(rows, task, predicate=lambda row, target: True):
    return next(row for row in rows if row["task"] == task and predicate(row, json.loads(row["target"])))


def _with_target(row, **changes):
    return {**row, "target": json.dumps({**json.loads(row["target"]), **changes})}


def _kinds(row, facts) -> set[str]:
    return {c.kind for c in audit_row(row, facts)}


def test_the_audit_catches_planted_contradictions(build):
    rows, facts = build["rows"], build["facts"]
    yes = _first(rows, "disease_classification", lambda r, t: t.get("present") is True)
    assert "positive-for-absent" in _kinds(
        _with_target(yes, finding=next(n for n, p in facts[yes["image_keys"][0]].presence.items() if p == 0)), facts
    )
    siim = _first(rows, "disease_classification", lambda r, t: r["source"] == "siim" and "positives" in t)
    assert "negative-for-unannotated" in _kinds(_with_target(siim, question="open"), facts)
    grounding = _first(rows, "finding_grounding", lambda r, t: t["present"])
    moved = [
        {**box, "box": [min(v + 0.2, 1.0) for v in box["box"]]} for box in json.loads(grounding["target"])["boxes"]
    ]
    assert "box-not-annotated" in _kinds(_with_target(grounding, boxes=moved), facts)
    absent = _first(rows, "finding_grounding", lambda r, t: not t["present"] and facts[r["image_keys"][0]].lesion_boxes)
    present_label = facts[absent["image_keys"][0]].lesion_boxes[0].label
    assert "negative-for-present" in _kinds(_with_target(absent, label=present_label), facts)
    lateral = next(key for key, f in facts.items() if f.view == "LATERAL" and f.source == "mimic")
    location = _first(rows, "location_classification")
    moved_row = {**location, "image_keys": [lateral], "split": facts[lateral].split}
    assert "side-on-lateral" in _kinds(moved_row, facts)
    cot = _first(rows, "report_generation_cot", lambda r, t: t["findings"])
    assert "findings-list-disagrees" in _kinds(_with_target(cot, findings=[]), facts)
    report = _first(rows, "report_generation", lambda r, t: facts[r["image_keys"][0]].positives)
    dropped = {**report, "conversations": [report["conversations"][0], {"from": "gpt", "value": "No acute process."}]}
    assert "report-drops-finding" in _kinds(_with_target(dropped, text="No acute process."), facts)
    native = _first(rows, "main_image_vqa")
    assert "native-question-changed" in _kinds(_with_target(native, answers=["something else"]), facts)
    gold = next(key for key, entry in build["truth"].items() if entry.get("imagenome_gold") and key in facts)
    assert "held-out-in-train" in _kinds(
        {**report, "image_keys": [gold], "split": "train"}, {**facts, gold: replace(facts[gold], split="train")}
    )


# ---------------------------------------------------------------- each defect class, on the truth


def test_gold_images_are_in_no_train_table(build):
    gold = {key for key, entry in build["truth"].items() if entry["imagenome_gold"]}
    written = {key: row["split"] for key, row in build["annotations"].items()}
    assert gold and not any(written.get(key) == "train" for key in gold)
    assert any(entry["split"] == "train" for key, entry in build["truth"].items() if key in gold)  # there were some
    train_rows = [row for row in build["rows"] if row["split"] == "train"]
    assert not any(key in gold for row in train_rows for key in row["image_keys"])
    images = {
        row["image_key"]: row["split"]
        for path in build["out"].glob("images/*.parquet")
        for row in pq.read_table(path, columns=["image_key", "split"]).to_pylist()
    }
    assert not any(images.get(key) == "train" for key in gold)


def test_grounding_asks_about_absent_findings_at_the_documented_ratio(build):
    rows = [row for row in build["rows"] if row["task"] == "finding_grounding"]
    present = sum(json.loads(row["target"])["present"] for row in rows)
    absent = len(rows) - present
    assert present and absent >= present  # one per present label, and one on every image without any
    assert any(json.loads(row["target"])["absent"] for row in build["rows"] if row["task"] == "multi_finding_grounding")
    for row in rows:
        if not json.loads(row["target"])["present"]:
            assert row["conversations"][1]["value"] == "Not present."


def test_report_targets_keep_every_stated_finding_and_lose_only_comparison_wording(build):
    rows = [row for row in build["rows"] if row["task"] in ("report_generation", "report_generation_cot")]
    rewritten = [json.loads(row["target"])["rewritten"] for row in rows]
    assert sum(bool(r) for r in rewritten) > 20  # the corpus words changes in many ways; each was rewritten
    for changes in rewritten:
        for change in changes:
            assert not change["residual"], change


def test_mask_polygons_keep_no_ring_below_the_minimum_area_and_count_the_dropped(build):
    from transforms.audit import MIN_RING_AREA

    siim = [row for row in build["annotations"].values() if row["source"] == "siim"]
    areas = [
        area
        for row in siim
        for key, found in facts_from_annotation(row).polygon_areas.items()
        if key[1] == "siim-rle"
        for area in found
    ]
    assert areas and min(areas) >= MIN_RING_AREA
    manifest = json.loads((build["out"] / "manifest.json").read_text())
    assert manifest["counts"]["siim"]["item_rejects"].get("filtered:geometry:polygon-ring-below-min-area", 0) > 0


# ---------------------------------------------------------------- the command


def test_audit_command_writes_audit_json_and_fails_on_a_planted_contradiction(build, tmp_path):
    import shutil

    from click.testing import CliRunner

    from pipelines.cli import main

    runner = CliRunner()
    clean = runner.invoke(main, ["audit", str(build["out"])])
    assert clean.exit_code == 0, clean.output
    document = json.loads((build["out"] / "audit.json").read_text())
    assert document["rows"] == len(build["rows"]) and document["rows_with_contradictions"] == 0
    assert set(document["contradictions"]) == set(KINDS) and not any(document["contradictions"].values())

    tampered = tmp_path / "out"
    shutil.copytree(build["out"], tampered)
    shard = sorted(tampered.glob("instructions/imt-cxr/disease_classification/*.parquet"))[0]
    table = pq.read_table(shard)
    rows = table.to_pylist()
    flip = next(i for i, row in enumerate(rows) if '"present": true' in row["target"])
    rows[flip]["target"] = rows[flip]["target"].replace('"present": true', '"present": false')
    pq.write_table(table.from_pylist(rows, schema=table.schema), shard)
    failed = runner.invoke(main, ["audit", str(tampered)])
    assert failed.exit_code == 1 and "negative-for-present" in failed.output
    assert json.loads((tampered / "audit.json").read_text())["contradictions"]["negative-for-present"] == 1

    not_a_build = runner.invoke(main, ["audit", str(tmp_path)])
    assert not_a_build.exit_code == 2 and "no manifest.json" in not_a_build.output

    older = json.loads(rows[flip]["target"])  # a target an earlier version wrote: one clear line, exit 2
    del older["present"]
    rows[flip]["target"] = json.dumps(older)
    pq.write_table(table.from_pylist(rows, schema=table.schema), shard)
    stale = runner.invoke(main, ["audit", str(tampered)])
    assert stale.exit_code == 2 and "rebuild OUT" in stale.output and "Traceback" not in stale.output
