"""Segmentation as polygons (IMT-CXR): heart and lungs from CheXmask landmark contours, pneumothorax
from the SIIM mask polygons.

A structure (``manifests/grounding.yaml`` ``segmentation.structures``) is the rings of its part
polygons, in the listed part order; it is asked only when every part is on the image. Each ring is
rendered with :func:`transforms.geometry.render_polygon` under the profile's convention with at most
``profile.polygon_max_vertices`` vertices. Profiles listed in ``random_start_profiles`` start each ring
at a seeded random vertex (the cyclic order and so the orientation are kept). The ``target`` holds
the canonical unit rings as stored in the annotation row, and the start vertex chosen per ring.
"""

from __future__ import annotations

import manifests
from transforms.geometry import UnitRing, render_polygon
from transforms.hashing import seeded_rng
from transforms.tasks import Profile, Task, instruction_row
from transforms.templates import load_template_set, render

TASK = "segmentation"
CONFIG = manifests.load("grounding.yaml")["segmentation"]


def structure_rings(row: dict, parts: list[dict]) -> list[UnitRing] | None:
    """The unit rings of a structure's parts in part order, or None when a part is missing."""
    by_part = {(p["label"], p["origin"]): p["rings_unit"] for p in row["polygons"]}
    if any((part["label"], part["origin"]) not in by_part for part in parts):
        return None
    return [ring for part in parts for ring in by_part[(part["label"], part["origin"])]]


def generate(row: dict, profile: Profile, seed: int) -> list[dict]:
    templates = load_template_set(profile.tasks[TASK].template_set)
    rng = seeded_rng(seed, profile.name, TASK, templates.version, row["image_key"])
    random_start = profile.name in CONFIG["random_start_profiles"]
    rows = []
    for structure, spec in CONFIG["structures"].items():
        rings = structure_rings(row, spec["parts"])
        if rings is None:
            continue
        starts = [rng.randrange(len(ring)) if random_start else 0 for ring in rings]
        rotated = [ring[start:] + ring[:start] for ring, start in zip(rings, starts)]
        template = templates.pick("segment", rng)
        polygon = render_polygon(rotated, profile.coordinates, profile.polygon_max_vertices)
        rows.append(
            instruction_row(
                profile=profile.name,
                task=TASK,
                row=row,
                variant=structure,
                conversations=render(template, structure=spec["name"], polygon=polygon),
                target={"structure": structure, "rings": rings, "start_vertices": starts},
                template_id=template.id,
            )
        )
    return rows


TASKS = (Task(name=TASK, unit="image", template_sets=("segmentation_imt",), generate=generate),)
