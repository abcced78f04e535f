"""Single-image report generation: IMT-CXR plain and attribute-prompted, M4CXR chain of thought.

Only English reports (``report_language == "en"``). The target text is one section of the report —
FINDINGS, or IMPRESSION when the report has no findings section — after
:func:`transforms.reports.drop_prior_references` (a single image cannot show a change since a prior
study) and :func:`transforms.reports.clean_text`. The removed sentences travel in the target JSON
(``removed``). When nothing is left after the filter, the image gets no report row.

``report_generation_with_attributes`` adds an attribute prompt (the IMT-CXR phrases of the report's own
positive mentions, :func:`transforms.phrases.attribute_prompt`) to the human turn: that the prompt comes
from the same report is what the IMT-CXR task defines, so it is not a leak. It is the row's
``attribute_prompt`` restricted to the mentions whose sentence the target text still contains: the row's
prompt also covers the impression and the sentences the prior filter removed ("new moderate edema"),
and a prompt naming what the target never says would teach the model to ignore its prompt. Images with
no such mention get no row.

``report_generation_cot`` (M4CXR) has four turns: the image and "which findings?" -> the positive
CheXpert observations, then "write the FINDINGS section" -> the filtered FINDINGS text (no findings
section: no row). The findings list comes from ``findings_labels``, the labeler run on the FINDINGS
section alone, not from the harmonised ``findings``: for MIMIC those are the official study labels,
drawn mostly from the impression, so they can name observations the FINDINGS text never states, and
the chain of thought would then disagree with its own second answer. When the prior filter removed
sentences, the same labeler (``transforms.labels.label_report``, as the enrich stage runs it) labels the
kept text again, so the list always matches the text it introduces (``labels_basis`` in the target
says which). Uncertain observations (-1) follow the profile's ``uncertain`` policy; a report with no
positive observation answers "No Finding" only when the labeler sets No Finding, else "No definite
finding" (its observations are all uncertain and excluded).
"""

from __future__ import annotations

from functools import lru_cache

from schemas.records import AttributeMention
from transforms.hashing import seeded_rng
from transforms.labels import NO_FINDING, label_report
from transforms.phrases import attribute_prompt
from transforms.reports import clean_text, drop_prior_references
from transforms.tasks import Profile, instruction_row
from transforms.templates import load_template_set, render

REPORT = "report_generation"
WITH_ATTRIBUTES = "report_generation_with_attributes"
COT = "report_generation_cot"
TARGET_SECTIONS = ("findings", "impression")
_CACHE_SIZE = 8192  # pure functions of report text: a study's images share one report, and three tasks read it


@lru_cache(maxsize=_CACHE_SIZE)
def single_image_text(section_text: str) -> tuple[str, tuple[str, ...]]:
    """(cleaned text without prior references, the removed sentences cleaned)."""
    kept, removed = drop_prior_references(section_text)
    return clean_text(kept), tuple(clean_text(sentence) for sentence in removed)


@lru_cache(maxsize=_CACHE_SIZE)
def labels_of_text(text: str) -> tuple[tuple[str, float | None], ...]:
    return tuple(label_report(text).items())


def target_section(row: dict, names: tuple[str, ...] = TARGET_SECTIONS) -> dict | None:
    """The first of ``names`` the report has (the last occurrence of a repeated name, as the official
    section rules), filtered for a single image: {section, text, removed}; None when the report has
    none of them or nothing is left."""
    if row["report_language"] != "en":
        return None
    sections = {s["name"]: s["text"] for s in row["sections"] or ()}
    name = next((n for n in names if sections.get(n, "").strip()), None)
    if name is None:
        return None
    text, removed = single_image_text(sections[name])
    return {"section": name, "text": text, "removed": list(removed)} if text else None


def target_attribute_prompt(row: dict, target_text: str) -> str:
    """The attribute prompt of the positive mentions whose (cleaned) sentence is in the target text."""
    return attribute_prompt(
        AttributeMention.model_construct(  # rows of the annotations table, validated when they were made
            finding=m["finding"], presence=m["presence"], laterality=m["laterality"], zones=m["zones"],
            severity=None if m["severity_min"] is None else (m["severity_min"], m["severity_max"]),
            severity_scale=m["severity_scale"], temporal=m["temporal"], sentence=m["sentence"],
            span=(m["span_start"], m["span_end"]))
        for m in row["mentions"] or ()
        if m["presence"] == 1 and cleaned_sentence(m["sentence"]) in target_text)


@lru_cache(maxsize=_CACHE_SIZE)
def cleaned_sentence(sentence: str) -> str:
    return clean_text(sentence)


def positive_observations(labels: list[tuple[str, float | None]], uncertain: str) -> list[str]:
    """The observations labelled positive, in label order; -1 counts only under the "positive" policy."""
    wanted = {1.0, -1.0} if uncertain == "positive" else {1.0}
    return [name for name, value in labels if name != NO_FINDING and value in wanted]


def findings_answer(labels: list[tuple[str, float | None]], positives: list[str], answers: dict[str, str]) -> str:
    """The positives joined by ", "; without any, "No Finding" only when the labeler says so, else the
    answer for a report whose only observations are uncertain (excluded by the profile)."""
    if positives:
        return ", ".join(positives)
    return answers["none" if dict(labels).get(NO_FINDING) == 1.0 else "none_definite"]


def _rng(task: str, version: int, row: dict, profile: Profile, seed: int):
    return seeded_rng(seed, profile.name, task, version, row["image_key"])


def generate_report(row: dict, profile: Profile, seed: int) -> list[dict]:
    target = target_section(row)
    if target is None:
        return []
    templates = load_template_set(profile.tasks[REPORT].template_set)
    template = templates.pick("report", _rng(REPORT, templates.version, row, profile, seed))
    return [instruction_row(profile=profile.name, task=REPORT, row=row, variant="report",
                            conversations=render(template, section=target["section"], report=target["text"]),
                            target=target, template_id=template.id)]


def generate_report_with_attributes(row: dict, profile: Profile, seed: int) -> list[dict]:
    target = target_section(row)
    attributes = target_attribute_prompt(row, target["text"]) if target and row["attribute_prompt"] else ""
    if not attributes:
        return []
    templates = load_template_set(profile.tasks[WITH_ATTRIBUTES].template_set)
    template = templates.pick("report_attributes", _rng(WITH_ATTRIBUTES, templates.version, row, profile, seed))
    conversations = render(template, section=target["section"], attributes=attributes, report=target["text"])
    return [instruction_row(profile=profile.name, task=WITH_ATTRIBUTES, row=row, variant="report_attributes",
                            conversations=conversations, target={**target, "attributes": attributes},
                            template_id=template.id)]


def generate_report_cot(row: dict, profile: Profile, seed: int) -> list[dict]:
    target = target_section(row, names=("findings",))
    if target is None:
        return []
    if row["findings_labels"] is None:
        raise ValueError(f"{row['image_key']} has a findings section but no findings_labels")
    if target["removed"]:
        labels, basis = list(labels_of_text(target["text"])), "relabelled_after_prior_filter"
    else:
        labels, basis = [(item["name"], item["value"]) for item in row["findings_labels"]], "findings_labels"
    positives = positive_observations(labels, profile.uncertain)
    templates = load_template_set(profile.tasks[COT].template_set)
    rng = _rng(COT, templates.version, row, profile, seed)
    first, second = templates.pick("findings_list", rng), templates.pick("findings_section", rng)
    conversations = (render(first, findings=findings_answer(labels, positives, templates.answers))
                     + render(second, report=target["text"]))
    return [instruction_row(profile=profile.name, task=COT, row=row, variant="cot", conversations=conversations,
                            target={**target, "findings": positives, "labels_basis": basis},
                            template_id=f"{first.id}+{second.id}")]


CACHED = (single_image_text, labels_of_text, cleaned_sentence)
"""The memoised text functions (benchmarks clear them to time cold passes)."""

GENERATORS = {REPORT: generate_report, WITH_ATTRIBUTES: generate_report_with_attributes, COT: generate_report_cot}
