"""Task generators, one module per task family, and the profiles that select and render them.

A generator is ``generate(annotation_row: dict, profile: Profile, seed: int) -> list[dict]`` (a module
serving several tasks names them in ``GENERATORS = {task: function}``): it
consumes one enriched annotation row (the ``annotations`` table schema) and returns instruction rows
(the ``instructions`` table schema). Generators never read raw source files.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict

import manifests

GROUNDING_TASKS = (
    "lesion_localization", "finding_grounding", "grounded_finding", "abnormality_detection",
    "multi_finding_grounding", "organ_grounding", "grounded_organ", "anatomical_region_grounding",
    "grounded_anatomical_region", "phrase_grounding", "grounded_phrase_generation",
)
TASK_MODULES = {
    "disease_classification": "transforms.tasks.classification",
    "report_pretraining": "transforms.tasks.pretraining",
    "segmentation": "transforms.tasks.segmentation",
    "severity_classification": "transforms.tasks.attributes",
    "location_classification": "transforms.tasks.attributes",
    "report_generation": "transforms.tasks.report",
    "report_generation_with_attributes": "transforms.tasks.report",
    "report_generation_cot": "transforms.tasks.report",
    "triage": "transforms.tasks.triage",
    **{task: "transforms.tasks.grounding" for task in GROUNDING_TASKS},
}


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template_set: str
    weight: float = 1.0


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    coordinates: Literal["bins1000", "percent", "fixed3"]
    polygon_max_vertices: int = 30
    uncertain: Literal["exclude", "positive", "negative"] = "exclude"
    tasks: dict[str, TaskSpec]


def load_profile(name: str) -> Profile:
    profile = Profile.model_validate(manifests.load(f"profiles/{name}.yaml"))
    unknown = sorted(set(profile.tasks) - set(TASK_MODULES))
    if unknown:
        raise ValueError(f"profile {name!r} names unknown task(s) {unknown}")
    return profile


def generator(task: str) -> Callable[[dict, Profile, int], list[dict]]:
    """A module serving several tasks maps them in ``GENERATORS``; otherwise its ``generate``."""
    module = importlib.import_module(TASK_MODULES[task])
    return getattr(module, "GENERATORS", {}).get(task) or module.generate


def instruction_id(profile: str, task: str, image_keys: list[str], variant: str) -> str:
    """Stable row id: the same inputs always give the same id."""
    text = json.dumps([profile, task, image_keys, variant], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def instruction_row(
    *, profile: str, task: str, row: dict, variant: str, conversations: list[dict], target: dict, template_id: str
) -> dict:
    image_keys = [row["image_key"]]
    return {
        "id": instruction_id(profile, task, image_keys, variant),
        "profile": profile,
        "task": task,
        "source": row["source"],
        "split": row["split"],
        "image_keys": image_keys,
        "conversations": conversations,
        "target": json.dumps(target, sort_keys=True),
        "template_id": template_id,
    }
