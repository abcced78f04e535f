"""Single-image report generation: IMT-CXR plain and attribute-prompted, M4CXR chain of thought.

Only English reports, and only on frontal views (:mod:`transforms.views`): report text names sides,
which a lateral view cannot show. The target text is one section of the report (FINDINGS, or
IMPRESSION when the report has no findings section), cleaned (:func:`transforms.reports.clean_text`)
and with its comparison wording rewritten out (:mod:`transforms.comparisons`): a single image cannot
show a change since a prior study, but the finding a comparing sentence states stays ("New moderate
right pneumothorax." -> "Moderate right pneumothorax."); a sentence is dropped only when nothing but
comparison was in it. The rewrites travel in the target JSON (``rewritten``). When nothing is left,
the image gets no report row.

``report_generation_with_attributes`` adds an attribute prompt (the IMT-CXR phrases of the report's own
positive mentions, :func:`transforms.phrases.attribute_prompt`) to the human turn: that the prompt comes
from the same report is what the IMT-CXR task defines, so it is not a leak. It is the row's
``attribute_prompt`` restricted to the mentions whose sentence, rewritten for a single image as the
target is, the target text contains, so the prompt never names what the target does not say. Images
with no such mention get no row.

``report_generation_cot`` (M4CXR) has four turns: the image and "which findings?" -> the positive
CheXpert observations, then "write the FINDINGS section" -> the FINDINGS target text (no findings
section: no row). The findings list is the labeler (:func:`transforms.labels.label_report`) run on
exactly the target text, so list and report are one labelling of one text (the annotation row's
``findings_labels`` is that labelling whenever no sentence was rewritten). The row must also agree with
the image's harmonised findings (:func:`consistent_findings`): a target that omits a finding the image
is labelled with (the impression states it, the FINDINGS section does not) or lists one the image is
labelled without gives no row, since either would teach a list that contradicts the image. Uncertain
observations (-1) follow the profile's ``uncertain`` policy. Without a positive observation the
answer is "No Finding" when the labeler sets No Finding, else "No definite finding" (its
observations are all uncertain and excluded).
"""

from __future__ import annotations

from functools import lru_cache

from schemas.records import AttributeMention
from transforms import comparisons
from transforms.hashing import seeded_rng
from transforms.labels import NO_FINDING, label_report
from transforms.phrases import attribute_prompt
from transforms.reports import clean_text
from transforms.tasks import Profile, Task, instruction_row
from transforms.templates import load_template_set, render
from transforms.views import is_frontal

REPORT = "report_generation"
WITH_ATTRIBUTES = "report_generation_with_attributes"
COT = "report_generation_cot"
TARGET_SECTIONS = ("findings", "impression")
_CACHE_SIZE = 8192  # pure functions of report text: a study's images share one report, and three tasks read it


@lru_cache(maxsize=_CACHE_SIZE)
def single_image_text(section_text: str) -> tuple[str, tuple[comparisons.Rewrite, ...]]:
    """The cleaned section with its comparison wording rewritten out, and the rewrites."""
    return comparisons.single_image_text(clean_text(section_text))


@lru_cache(maxsize=_CACHE_SIZE)
def labels_of_text(text: str) -> tuple[tuple[str, float | None], ...]:
    return tuple(label_report(text).items())


def target_section(row: dict, names: tuple[str, ...] = TARGET_SECTIONS) -> dict | None:
    """The first of ``names`` the report has (the last occurrence of a repeated name, as the official
    section rules), rewritten for a single image: {section, text, rewritten}; None when the report has
    none of them or nothing is left."""
    if row["report_language"] != "en":
        return None
    sections = {s["name"]: s["text"] for s in row["sections"] or ()}
    name = next((n for n in names if sections.get(n, "").strip()), None)
    if name is None:
        return None
    text, rewrites = single_image_text(sections[name])
    return {"section": name, "text": text, "rewritten": [r.as_dict() for r in rewrites]} if text else None


def target_attribute_prompt(row: dict, target_text: str) -> str:
    """The attribute prompt of the positive mentions whose sentence, as a single-image target words it,
    is in the target text."""
    return attribute_prompt(
        AttributeMention.from_row(m)
        for m in row["mentions"] or ()
        if m["presence"] == 1 and (sentence := single_image_sentence(m["sentence"])) and sentence in target_text
    )


@lru_cache(maxsize=_CACHE_SIZE)
def single_image_sentence(sentence: str) -> str:
    """A mention's sentence as a single-image target words it (cleaned, comparison rewritten out)."""
    return single_image_text(sentence)[0]


def positive_observations(labels: list[tuple[str, float | None]], uncertain: str) -> list[str]:
    """The observations labelled positive, in label order; -1 counts only under the "positive" policy."""
    wanted = {1.0, -1.0} if uncertain == "positive" else {1.0}
    return [name for name, value in labels if name != NO_FINDING and value in wanted]


def target_labels(row: dict, target: dict) -> list[tuple[str, float | None]]:
    """The labeler's labels of a FINDINGS target text: the row's ``findings_labels`` (the labeler on the
    cleaned FINDINGS section) when no sentence was rewritten, else the labeler on the target text."""
    if target["section"] == "findings" and not target["rewritten"] and row["findings_labels"] is not None:
        return [(item["name"], item["value"]) for item in row["findings_labels"]]
    return list(labels_of_text(target["text"]))


def consistent_findings(
    labels: list[tuple[str, float | None]], rows: list[dict], uncertain: str
) -> tuple[list, list[str]] | None:
    """A text's labels and its positive observations, when they agree with the harmonised findings of
    the images shown (``rows``): every observation an image is labelled positive with is positive in
    the text, and none of the text's positives is labelled absent (0) on any image. None when they
    disagree. An observation the images leave unlabelled (null) may be stated by the text."""
    positives = positive_observations(labels, uncertain)
    stated = {name for name, value in labels if value == 1.0}
    presences = [(f["name"], f["presence"]) for row in rows for f in row["findings"] or ()]
    labelled = {name for name, presence in presences if presence == 1 and name != NO_FINDING}
    absent = {name for name, presence in presences if presence == 0}
    if labelled - stated or absent & set(positives):
        return None
    return labels, positives


def findings_answer(labels: list[tuple[str, float | None]], positives: list[str], answers: dict[str, str]) -> str:
    """The positives joined by ", "; without any, "No Finding" only when the labeler says so, else the
    answer for a report whose only observations are uncertain (excluded by the profile)."""
    if positives:
        return ", ".join(positives)
    return answers["none" if dict(labels).get(NO_FINDING) == 1.0 else "none_definite"]


def _rng(task: str, version: int, row: dict, profile: Profile, seed: int):
    return seeded_rng(seed, profile.name, task, version, row["image_key"])


def single_image_target(row: dict, names: tuple[str, ...] = TARGET_SECTIONS) -> dict | None:
    """The target of a single-image report row: a frontal view's section (see :func:`target_section`)."""
    return target_section(row, names) if is_frontal(row["view"]) else None


def generate_report(row: dict, profile: Profile, seed: int) -> list[dict]:
    target = single_image_target(row)
    if target is None:
        return []
    templates = load_template_set(profile.tasks[REPORT].template_set)
    template = templates.pick("report", _rng(REPORT, templates.version, row, profile, seed))
    return [
        instruction_row(
            profile=profile.name,
            task=REPORT,
            row=row,
            variant="report",
            conversations=render(template, section=target["section"], report=target["text"]),
            target=target,
            template_id=template.id,
        )
    ]


def generate_report_with_attributes(row: dict, profile: Profile, seed: int) -> list[dict]:
    target = single_image_target(row)
    if not target or not row["attribute_prompt"]:
        return []
    attributes = target_attribute_prompt(row, target["text"])
    if not attributes:
        return []
    templates = load_template_set(profile.tasks[WITH_ATTRIBUTES].template_set)
    template = templates.pick("report_attributes", _rng(WITH_ATTRIBUTES, templates.version, row, profile, seed))
    conversations = render(template, section=target["section"], attributes=attributes, report=target["text"])
    return [
        instruction_row(
            profile=profile.name,
            task=WITH_ATTRIBUTES,
            row=row,
            variant="report_attributes",
            conversations=conversations,
            target={**target, "attributes": attributes},
            template_id=template.id,
        )
    ]


def generate_report_cot(row: dict, profile: Profile, seed: int) -> list[dict]:
    target = single_image_target(row, names=("findings",))
    if target is None:
        return []
    agreed = consistent_findings(target_labels(row, target), [row], profile.uncertain)
    if agreed is None:
        return []
    labels, positives = agreed
    templates = load_template_set(profile.tasks[COT].template_set)
    rng = _rng(COT, templates.version, row, profile, seed)
    first, second = templates.pick("findings_list", rng), templates.pick("findings_section", rng)
    conversations = render(first, findings=findings_answer(labels, positives, templates.answers)) + render(
        second, report=target["text"]
    )
    return [
        instruction_row(
            profile=profile.name,
            task=COT,
            row=row,
            variant="cot",
            conversations=conversations,
            target={**target, "findings": positives},
            template_id=f"{first.id}+{second.id}",
        )
    ]


CACHED = (single_image_text, labels_of_text, single_image_sentence)
"""The memoised text functions (benchmarks clear them to time cold passes)."""

TASKS = (
    Task(name=REPORT, unit="image", template_sets=("report_imt",), generate=generate_report),
    Task(name=WITH_ATTRIBUTES, unit="image", template_sets=("report_imt",), generate=generate_report_with_attributes),
    Task(name=COT, unit="image", template_sets=("report_cot_m4cxr",), generate=generate_report_cot),
)
