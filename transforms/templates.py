"""Instruction templates as data (``manifests/templates/<set>.yaml``) and seeded rendering."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

import manifests


@dataclass(frozen=True)
class Template:
    id: str
    human: str
    gpt: str


@dataclass(frozen=True)
class TemplateSet:
    name: str
    version: int
    kinds: dict[str, tuple[Template, ...]]
    answers: dict[str, str]

    def pick(self, kind: str, rng: random.Random) -> Template:
        """One paraphrase of ``kind``, chosen by the caller's seeded generator."""
        choices = self.kinds[kind]
        return choices[rng.randrange(len(choices))]


@cache
def load_template_set(name: str) -> TemplateSet:
    data = manifests.load(f"templates/{name}.yaml")
    kinds = {
        kind: tuple(Template(id=t["id"], human=t["human"], gpt=t["gpt"]) for t in items)
        for kind, items in data["templates"].items()
    }
    for kind, items in kinds.items():
        if not items:
            raise ValueError(f"template set {name!r} has no templates of kind {kind!r}")
    return TemplateSet(name=name, version=int(data["version"]), kinds=kinds, answers=dict(data.get("answers", {})))


def render(template: Template, **fields: str) -> list[dict[str, str]]:
    """A two-turn conversation ``[{from: human, value}, {from: gpt, value}]``."""
    return [
        {"from": "human", "value": template.human.format(**fields)},
        {"from": "gpt", "value": template.gpt.format(**fields)},
    ]
