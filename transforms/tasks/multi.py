"""M4CXR multi-image and multi-study report generation, as four-turn chains of thought.

These generators consume groups, not single rows: ``generate_multi_image(study, ...)`` gets the
annotation rows of one study, ``generate_multi_study(patient, ...)`` the studies of one patient, each
a list of rows, in time order (``study_datetime``, never ids). Each ``Task``'s ``unit`` (``TASKS`` below) says
which group a task needs; the build groups rows by study and by patient before calling them.

A study is shown only with a frontal view among its images: its report names sides, which a lateral
view alone cannot show.

- multi-image: up to five images of one study (frontal views first) and the study's FINDINGS
  section with its comparison wording rewritten out (no prior image is shown), as for a single image.
- multi-study: a study and the one just before it, prior images first (at most five per study, ten in
  all). The prior study's FINDINGS text is given in the prompt, the one place a report enters a prompt,
  as M4CXR defines this task; the target is the current FINDINGS text with its comparisons kept, since
  the prior is shown.

The findings list of the first answer comes from the labeler run on exactly the text of the second
answer, and must agree with the harmonised findings of the images shown (the current study's, for
multi-study), as in the single-image chain of thought (:func:`transforms.tasks.report.consistent_findings`);
a group whose text and labels disagree gets no row.
"""

from __future__ import annotations

import itertools
import json

from transforms.hashing import seeded_rng
from transforms.reports import clean_text
from transforms.tasks import Profile, Task, instruction_id
from transforms.tasks.report import consistent_findings, findings_answer, labels_of_text, target_section
from transforms.templates import load_template_set, render
from transforms.views import is_frontal

MULTI_IMAGE = "report_generation_multi_image"
MULTI_STUDY = "report_generation_multi_study"
MAX_IMAGES_PER_STUDY = 5


def study_images(study: list[dict]) -> list[dict]:
    """The rows whose images are shown for a study: frontal views first, then by key, at most five."""
    ordered = sorted(study, key=lambda row: (not is_frontal(row["view"]), row["image_key"]))
    return ordered[:MAX_IMAGES_PER_STUDY]


def in_time_order(studies: list[list[dict]]) -> list[list[dict]]:
    """A patient's studies by (study_datetime, study_id); studies without a date cannot be ordered and
    are left out."""
    dated = [study for study in studies if study[0]["study_datetime"]]
    return sorted(dated, key=lambda study: (study[0]["study_datetime"], study[0]["study_id"]))


def findings_text(row: dict) -> str | None:
    """The report's FINDINGS section, cleaned but unfiltered (comparisons kept)."""
    if row["report_language"] != "en":
        return None
    sections = {s["name"]: s["text"] for s in row["sections"] or ()}
    text = clean_text(sections.get("findings", ""))
    return text or None


def _images_first(conversations: list[dict], count: int) -> list[dict]:
    """One ``<image>`` slot per image, in image order, at the start of the first human turn."""
    first = dict(conversations[0])
    first["value"] = "<image>\n" * count + first["value"]
    return [first] + conversations[1:]


def group_row(
    profile: Profile,
    task: str,
    rows: list[dict],
    variant: str,
    conversations: list[dict],
    target: dict,
    template_id: str,
) -> dict:
    splits = {row["split"] for row in rows}
    if len(splits) != 1:  # one split authority per patient: a mix is a leak, never written
        raise ValueError(f"{task}: images {[r['image_key'] for r in rows]} span splits {sorted(splits)}")
    image_keys = [row["image_key"] for row in rows]
    return {
        "id": instruction_id(profile.name, task, image_keys, variant),
        "profile": profile.name,
        "task": task,
        "source": rows[-1]["source"],
        "split": splits.pop(),
        "image_keys": image_keys,
        "conversations": conversations,
        "target": json.dumps(target, sort_keys=True),
        "template_id": template_id,
    }


def _chain(
    task: str, profile: Profile, seed: int, key: str, text: str, shown: list[dict], fields: dict
) -> tuple[list[dict], dict, str] | None:
    """The four turns (findings list, then the section) and the structured target; None when the
    text's findings and the labels of the images ``shown`` disagree."""
    agreed = consistent_findings(list(labels_of_text(text)), shown, profile.uncertain)
    if agreed is None:
        return None
    labels, positives = agreed
    templates = load_template_set(profile.tasks[task].template_set)
    rng = seeded_rng(seed, profile.name, task, templates.version, key)
    kind = "multi_image" if task == MULTI_IMAGE else "multi_study"
    first, second = templates.pick(f"findings_list_{kind}", rng), templates.pick(f"findings_section_{kind}", rng)
    conversations = render(first, findings=findings_answer(labels, positives, templates.answers), **fields) + render(
        second, report=text
    )
    return conversations, {"findings": positives, "report": text}, f"{first.id}+{second.id}"


def generate_multi_image(study: list[dict], profile: Profile, seed: int) -> list[dict]:
    rows = study_images(study)
    if len(rows) < 2 or not is_frontal(rows[0]["view"]):  # frontal first: none means no side is visible
        return []
    target = target_section(rows[0], names=("findings",))  # one report for every image of the study
    if target is None:
        return []
    chain = _chain(MULTI_IMAGE, profile, seed, rows[0]["study_id"], target["text"], rows, {"count": len(rows)})
    if chain is None:
        return []
    conversations, answer, template_id = chain
    return [
        group_row(
            profile,
            MULTI_IMAGE,
            rows,
            "multi_image",
            _images_first(conversations, len(rows)),
            {**answer, "rewritten": target["rewritten"], "study_id": rows[0]["study_id"]},
            template_id,
        )
    ]


def generate_multi_study(patient: list[list[dict]], profile: Profile, seed: int) -> list[dict]:
    studies = in_time_order(patient)
    result = []
    for prior, current in itertools.pairwise(studies):
        prior_rows, current_rows = study_images(prior), study_images(current)
        prior_text, current_text = findings_text(prior_rows[0]), findings_text(current_rows[0])
        if not (prior_text and current_text and is_frontal(current_rows[0]["view"])):
            continue
        chain = _chain(
            MULTI_STUDY,
            profile,
            seed,
            current_rows[0]["study_id"],
            current_text,
            current_rows,
            {"prior_count": len(prior_rows), "count": len(current_rows), "prior_report": prior_text},
        )
        if chain is None:
            continue
        conversations, answer, template_id = chain
        rows = prior_rows + current_rows
        target = {
            **answer,
            "prior_study_id": prior_rows[0]["study_id"],
            "study_id": current_rows[0]["study_id"],
            "prior_report": prior_text,
        }
        result.append(
            group_row(
                profile, MULTI_STUDY, rows, "multi_study", _images_first(conversations, len(rows)), target, template_id
            )
        )
    return result


TASKS = (
    Task(name=MULTI_IMAGE, unit="study", template_sets=("report_multi_m4cxr",), generate=generate_multi_image),
    Task(name=MULTI_STUDY, unit="patient", template_sets=("report_multi_m4cxr",), generate=generate_multi_study),
)
