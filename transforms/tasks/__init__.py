"""Task generators, one module per task family, the task registry, and the mixture profiles
(``manifests/mixtures/``) that select and render the tasks.

Each module of this package declares the tasks it implements in ``TASKS``, a tuple of :class:`Task`
records (name, unit, template sets, generator); :func:`registry` collects them, and everything that
lists tasks reads it. A generator is ``generate(unit, profile: Profile, seed: int) -> list[dict]``: it
consumes one enriched annotation row (the ``annotations`` table schema), or the rows of a study or
patient (its task's ``unit``), and returns instruction rows (the ``instructions`` table schema), and a
:class:`schemas.records.Reject` (stage ``tasks``, item level) for each input it was given and could
not use (a VQA dataset's question without an answer, ...). Generators never read raw source files.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import manifests
from schemas.records import Reject

Unit = Literal["image", "study", "patient"]
"""What a generator consumes: one annotation row, the rows of one study, or the studies of one patient
(in time order). The build groups rows that way before calling it (``task_groups``, transforms/units.py)."""


@dataclass(frozen=True)
class Task:
    """One task, declared once, by the module that implements it (its ``TASKS``).

    ``name`` is the task's key in a mixture profile and its ``instructions/<profile>/<task>/`` folder;
    ``template_sets`` are the sets under ``manifests/templates/`` that can render it (a profile picks one);
    ``generate`` turns one unit into instruction rows and rejects.
    """

    name: str
    unit: Unit
    template_sets: tuple[str, ...]
    generate: Callable[[Any, Profile, int], Sequence[dict | Reject]]


@cache
def registry() -> dict[str, Task]:
    """Every task, by name: the ``TASKS`` of each module of this package (a new module is found by itself)."""
    tasks: dict[str, Task] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for task in module.TASKS:
            if task.name in tasks:
                raise ValueError(f"task {task.name!r} is declared twice ({module.__name__})")
            tasks[task.name] = task
    return tasks


FINDING_PHRASES: dict[str, str] = manifests.load("finding_phrases.yaml")
if missing := sorted(set(manifests.load("labels.yaml")["taxonomy"]) - set(FINDING_PHRASES)):
    raise ValueError(f"manifests/finding_phrases.yaml lacks taxonomy name(s) {missing}")


def finding_phrase(name: str) -> str:
    """How a taxonomy finding reads inside a sentence ("Pleural Other" -> "pleural thickening")."""
    return FINDING_PHRASES[name]


class TaskSpec(BaseModel):
    """One task of a mixture profile: its template set and sampling weight.

    ``source_weights`` ({source: weight}), when given, weighs the task's (task, source) pools: a pool
    is drawn with probability ``weight x source weight / sum of the task's source weights`` (over all
    tasks, renormalised over the pools with rows), and a source not named gets weight 0. Without it,
    sources share the task's weight in proportion to their rows.
    """

    model_config = ConfigDict(extra="forbid")
    template_set: str
    weight: float = Field(1.0, ge=0)
    source_weights: dict[str, float] | None = None

    @field_validator("source_weights")
    @classmethod
    def _known_sources(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is None:
            return None
        unknown = sorted(set(weights) - set(manifests.load("sources.yaml")["sources"]))
        if unknown:
            raise ValueError(f"source_weights names unknown source(s) {unknown}")
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"source_weights {weights} must be >= 0 with at least one > 0")
        return weights


class TaskGroup(BaseModel):
    """A task group of a paper's mixture ("classification 0.15"): its weight and the tasks that share it."""

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(ge=0)
    tasks: list[str]


class Profile(BaseModel):
    """A mixture profile. ``groups``, when given, writes down the paper's task groups: every task is in
    exactly one group and the weights of a group's tasks add up to the group's weight."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    coordinates: Literal["bins1000", "percent", "fixed3"]
    polygon_max_vertices: int = 30
    uncertain: Literal["exclude", "positive", "negative"] = "exclude"
    image_size: int | None = Field(None, ge=16, le=4096)
    """The square input size the paper trains at (Radixpert, MediVLM: 224), applied by ``export`` and the
    loader to the letterboxed canvas of the images table (which keeps the build's size); None: as built."""
    groups: dict[str, TaskGroup] | None = None
    tasks: dict[str, TaskSpec]

    @model_validator(mode="after")
    def _groups_cover_tasks(self) -> Profile:
        if self.groups is None:
            return self
        grouped = [task for group in self.groups.values() for task in group.tasks]
        if sorted(grouped) != sorted(self.tasks):
            raise ValueError(
                f"profile {self.name!r}: groups list tasks {sorted(grouped)}, "
                f"the profile has {sorted(self.tasks)} (each task in exactly one group)"
            )
        for name, group in self.groups.items():
            total = sum(self.tasks[task].weight for task in group.tasks)
            if abs(total - group.weight) > 1e-9:
                raise ValueError(
                    f"profile {self.name!r}: the tasks of group {name!r} weigh {total:g}, the group {group.weight:g}"
                )
        return self


def load_profile(name: str) -> Profile:
    """The mixture profile ``manifests/mixtures/<name>.yaml``."""
    profile = Profile.model_validate(manifests.load(f"mixtures/{name}.yaml"))
    if profile.name != name:
        raise ValueError(f"manifests/mixtures/{name}.yaml is named {profile.name!r}; a profile is named by its file")
    tasks = registry()
    unknown = sorted(set(profile.tasks) - set(tasks))
    if unknown:
        raise ValueError(f"profile {name!r} names unknown task(s) {unknown}")
    for task, spec in profile.tasks.items():
        if spec.template_set not in tasks[task].template_sets:
            raise ValueError(
                f"profile {name!r}: task {task!r} cannot be rendered by template set {spec.template_set!r}; "
                f"its sets are {list(tasks[task].template_sets)} (its Task in transforms/tasks/)"
            )
    return profile


def method_name(profile: str) -> str:
    """The name of the system a profile follows (``manifests/sources.yaml`` ``methods``), e.g. "MediVLM"."""
    return manifests.load("sources.yaml")["methods"].get(profile, {}).get("name", profile)


def generator(task: str) -> Callable[[Any, Profile, int], Sequence[dict | Reject]]:
    """The function that makes ``task``'s rows from one of its units."""
    return registry()[task].generate


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
