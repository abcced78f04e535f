"""CheXmix-style pretraining rows: an image paired with its English report text.

The text is the findings section followed by the impression (official MIMIC section rules), each
cleaned (:func:`transforms.reports.clean_text`: the report's line layout goes, paragraphs stay). Sources
without English report text (VinDr, SIIM) or with stemmed Spanish (PadChest) yield nothing here.
The VQ codes are joined to these rows by ``image_key`` at export time.
"""

from __future__ import annotations

from transforms.reports import clean_text
from transforms.tasks import Profile, Task, instruction_row
from transforms.templates import load_template_set, render

TASK = "report_pretraining"
SECTIONS_USED = ("findings", "impression")


def used_sections(row: dict) -> dict[str, str]:
    """The non-empty findings / impression texts of the row's report, cleaned, in that order."""
    sections = {s["name"]: clean_text(s["text"]) for s in row["sections"]}
    return {name: sections[name] for name in SECTIONS_USED if sections.get(name)}


def generate(row: dict, profile: Profile, seed: int) -> list[dict]:
    if row["report_language"] != "en":
        return []
    sections = used_sections(row)
    if not sections:
        return []
    text = "\n".join(f"{name.upper()}: {body}" for name, body in sections.items())
    template = load_template_set(profile.tasks[TASK].template_set).kinds["report"][0]
    return [
        instruction_row(
            profile=profile.name,
            task=TASK,
            row=row,
            variant="report",
            conversations=render(template, report=text),
            target=sections,
            template_id=template.id,
        )
    ]


TASKS = (Task(name=TASK, unit="image", template_sets=("report_pretraining",), generate=generate),)
