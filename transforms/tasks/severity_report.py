"""MediVLM report generation: the report followed by its severity score.

The report is the image's :func:`severity_document`: an English report's single-image
target (FINDINGS, else IMPRESSION, comparison wording rewritten out) or PadChest's English statements;
frontal views only, since the text names sides. The answer is that text, a new line, and
``Severity Score: X.XX``: the row's ``severity_tfidf`` (MediVLM's score of exactly that text, fitted on
the train split; :mod:`transforms.severity`) with two decimals. The target JSON keeps the unrounded score.

``report_severity_regions`` lists the image's anatomical region boxes in the prompt, standing in for the
regions MediVLM's detector finds: Chest ImaGenome region boxes and CheXmask organ boxes, one box per
region name (ImaGenome's where both give one), by name, in the profile's coordinates. An image without
region boxes gets no such row.
"""

from __future__ import annotations

from transforms.geometry import render_box
from transforms.hashing import seeded_rng
from transforms.tasks import Profile, Task, instruction_row
from transforms.tasks.grounding import box_role, unit_box
from transforms.tasks.report import target_section
from transforms.templates import load_template_set, render
from transforms.views import is_frontal

REPORT = "report_severity"
REGIONS = "report_severity_regions"
REGION_ORIGINS = ("imagenome-scene-graph", "chexmask-mask")
"""Origins of anatomical region boxes, the preferred first when both box a region name."""


def severity_document(row: dict) -> str | None:
    """The text MediVLM's severity score reads for an image: the report its ``medivlm`` rows show. An
    English report's single-image target (FINDINGS, else IMPRESSION, comparison wording rewritten out:
    :func:`transforms.tasks.report.target_section`), PadChest's English statements; None without either."""
    if row["report_language"] == "en":
        target = target_section(row)
        return None if target is None else target["text"]
    return row["report_english"]


def region_boxes(row: dict) -> list[dict]:
    """{label, origin, unit} per region name among the row's region and organ boxes, sorted by name."""
    chosen: dict[str, dict] = {}
    for box in sorted(
        row["boxes"],
        key=lambda b: (
            REGION_ORIGINS.index(b["origin"]) if b["origin"] in REGION_ORIGINS else len(REGION_ORIGINS),
            b["label"],
        ),
    ):
        if box_role(box) in ("organ", "region"):
            chosen.setdefault(box["label"], {"label": box["label"], "origin": box["origin"], "unit": unit_box(box)})
    return [chosen[label] for label in sorted(chosen)]


def score_text(score: float) -> str:
    return f"{score:.2f}"


def _target(row: dict) -> dict | None:
    document = severity_document(row) if is_frontal(row["view"]) else None
    if not document or row["severity_tfidf"] is None:
        return None
    return {
        "report": document,
        "severity_tfidf": row["severity_tfidf"],
        "severity_score": score_text(row["severity_tfidf"]),
    }


def _rows(task: str, kind: str, row: dict, profile: Profile, seed: int, target: dict, **fields: str) -> list[dict]:
    templates = load_template_set(profile.tasks[task].template_set)
    template = templates.pick(kind, seeded_rng(seed, profile.name, task, templates.version, row["image_key"]))
    conversations = render(template, report=target["report"], score=target["severity_score"], **fields)
    return [
        instruction_row(
            profile=profile.name,
            task=task,
            row=row,
            variant=kind,
            conversations=conversations,
            target=target,
            template_id=template.id,
        )
    ]


def generate_report(row: dict, profile: Profile, seed: int) -> list[dict]:
    target = _target(row)
    return [] if target is None else _rows(REPORT, "report", row, profile, seed, target)


def generate_report_regions(row: dict, profile: Profile, seed: int) -> list[dict]:
    target = _target(row)
    if not target:
        return []
    regions = region_boxes(row)
    if not regions:
        return []
    text = "; ".join(f"{r['label']}: {render_box(r['unit'], profile.coordinates)}" for r in regions)
    boxes = [{"label": r["label"], "origin": r["origin"], "box": list(r["unit"])} for r in regions]
    return _rows(REGIONS, "report_regions", row, profile, seed, {**target, "boxes": boxes}, regions=text)


TASKS = (
    Task(name=REPORT, unit="image", template_sets=("report_medivlm",), generate=generate_report),
    Task(name=REGIONS, unit="image", template_sets=("report_medivlm",), generate=generate_report_regions),
)
