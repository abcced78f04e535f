"""Chest ImaGenome (1.0.0) silver scene graphs: one AnnotationRecord per ``<dicom_id>_SceneGraph.json``.

``root`` is the ``chest-imagenome`` folder. Scene graphs are read from ``silver_dataset/scene_graph/``
and one level down (``silver_dataset/scene_graph/scene_graph/``, how the zip often unpacks). Splits come
from ``silver_dataset/splits/{train,valid,test}.csv`` and gold images from ``images_to_avoid.csv``
(``.csv`` or ``.csv.gz``). See ``docs/formats/chest-imagenome.md``.

Mapping into :class:`AnnotationRecord` (target ``mimic/<dicom_id>``):

- ``objects`` -> one :class:`Box` per object from ``original_x1/y1/x2/y2`` (original pixels), kept
  exactly as stated: negative, out-of-bounds and zero-area boxes are for the geometry stage to judge.
  An object without numeric original coordinates is an item Reject (``bad-box``).
- ``attributes`` -> one :class:`RegionAttributes` per (entry, phrase index), with the parallel
  ``attributes`` / ``comparison_cues`` / ``temporal_cues`` / ``severity_cues`` lists of that phrase.
  Entries whose own ``<bbox_name>`` flag is ``false`` are left out as in the official utilities
  (item Reject, filtered ``region-flag-false``); lists that are not parallel give an item Reject.
- ``relationships`` (comparisons with a previous image) -> ``provenance["relationships"]``, a JSON
  list of ``{"region", "relation", "previous_key", "phrase"}`` in file order, because the record
  has no typed slot for links to another image. Left out when the file has none.
- ``split_hint`` = ``train`` / ``valid`` / ``test`` (ImaGenome's own split, not authoritative);
  an image listed in several split files gets no hint and ``provenance["split_conflict"]``;
  ``provenance["images_to_avoid"] = "true"`` for gold images, which must never be trained on;
  ``provenance["file"]`` is the scene graph's path relative to ``root``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field


from schemas.records import (
    IMAGE_SOURCES,
    AnnotationRecord,
    Box,
    ReaderOutput,
    RegionAttributes,
    Reject,
)
from transforms import io
from transforms.sources import csvrows

log = logging.getLogger(__name__)

NAME = "imagenome"
TARGET_SOURCE = "mimic"
BOX_ORIGIN = "imagenome-scene-graph"
SPLIT_FILES = ("train", "valid", "test")
AVOID_FILE = "images_to_avoid"
SCENE_GRAPH_SUFFIX = "_SceneGraph.json"
CUE_LISTS = ("comparison_cues", "temporal_cues", "severity_cues")
"""Per-phrase cue lists that :class:`RegionAttributes` carries (``texture_cues`` has no field)."""
_PREVIOUS_IMAGE = re.compile(r"^([^_]+)_")
"""The image part of a relationship's ``object_id`` ``"<previous dicom_id>_<bbox_name>"``."""


class ImaGenomeInputError(ValueError):
    """A required ImaGenome file is missing or malformed as a whole."""


@dataclass(frozen=True)
class SplitTables:
    split_of: Mapping[str, str]  # dicom_id -> "train" | "valid" | "test"
    conflicting: Mapping[str, list[str]]  # dicom_id -> the several splits that list it
    to_avoid: frozenset[str]  # gold dicom_ids
    bad_rows: Mapping[str, list[str]] = field(default_factory=dict)  # dicom_id -> "<file> row N: ..."
    unattributed: list[str] = field(default_factory=list)  # bad split rows that name no readable dicom_id


def strip_dcm(image_id: str) -> str:
    """``"<dicom_id>.dcm"`` -> ``"<dicom_id>"`` (ImaGenome writes ids both ways)."""
    return image_id[: -len(".dcm")] if image_id.endswith(".dcm") else image_id


def _dicom_ids(path: str, root: str = "") -> tuple[list[str], dict[str, list[str]], list[str]]:
    """The ``dicom_id`` column of a split CSV (selected by name; the unnamed index column is ignored),
    and its unreadable rows (wrong cell count, not UTF-8): by the dicom_id they name, and those naming none."""
    table = csvrows.read_table(path)
    position = next((i for i, name in enumerate(table.header) if name.lower() == "dicom_id"), None)
    if position is None:
        raise ImaGenomeInputError(f"{path}: no dicom_id column")
    name = io.relative(path, root) if root else path
    bad: dict[str, list[str]] = {}
    unnamed: list[str] = []
    for row in table.bad:
        dicom_id = strip_dcm(row.cell(position))
        (bad.setdefault(dicom_id, []) if dicom_id else unnamed).append(row.where(name))
    return [strip_dcm(cells[position].strip()) for _, cells in table.rows], bad, unnamed


def load_splits(root: str) -> SplitTables:
    """ImaGenome's split of every listed image and the gold images to avoid; all four files required.

    An unreadable row that still names its dicom_id is filed in ``bad_rows`` (and, in
    ``images_to_avoid``, still counts as gold); one that names none cannot be attributed: in a split
    file it is ``unattributed``, in ``images_to_avoid`` it is an error, since a gold image could leak."""
    splits_dir = io.join(root, "silver_dataset", "splits")

    def required(stem: str) -> str:
        path = io.first_existing(splits_dir, f"{stem}.csv", f"{stem}.csv.gz")
        if path is None:
            raise ImaGenomeInputError(f"{io.join(splits_dir, stem)}.csv(.gz) not found; it is required")
        return path

    listed: dict[str, list[str]] = {}
    bad_rows: dict[str, list[str]] = {}
    unattributed: list[str] = []
    for split in SPLIT_FILES:
        ids, bad, unnamed = _dicom_ids(required(split), root)
        for dicom_id in ids:
            splits = listed.setdefault(dicom_id, [])
            if split not in splits:
                splits.append(split)
        for dicom_id, details in bad.items():
            bad_rows.setdefault(dicom_id, []).extend(details)
        unattributed += unnamed
    avoid, bad, unnamed = _dicom_ids(required(AVOID_FILE), root)
    if unnamed:
        raise ImaGenomeInputError(f"{'; '.join(unnamed)}: an images_to_avoid row names no dicom_id, so a gold "
                                  "image could enter training")
    for dicom_id, details in bad.items():
        bad_rows.setdefault(dicom_id, []).extend(details)
    return SplitTables(
        split_of={dicom_id: splits[0] for dicom_id, splits in listed.items() if len(splits) == 1},
        conflicting={dicom_id: splits for dicom_id, splits in listed.items() if len(splits) > 1},
        to_avoid=frozenset(avoid) | frozenset(bad),
        bad_rows=bad_rows,
        unattributed=unattributed,
    )


def scene_graph_files(root: str) -> dict[str, str]:
    """dicom_id -> scene-graph path; the top folder wins over the nested one for the same id."""
    base = io.join(root, "silver_dataset", "scene_graph")
    found: dict[str, str] = {}
    for folder in (base, io.join(base, "scene_graph")):
        for path in io.glob(io.join(folder, f"*{SCENE_GRAPH_SUFFIX}")):
            found.setdefault(io.basename(path)[: -len(SCENE_GRAPH_SUFFIX)], path)
    if not found:
        raise ImaGenomeInputError(
            f"no *{SCENE_GRAPH_SUFFIX} under {base} (or {base}/scene_graph); is scene_graph.zip extracted?"
        )
    return found


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """One AnnotationRecord or Reject per scene-graph file, sorted by target key (plus item rejects)."""
    files = scene_graph_files(root)
    if TARGET_SOURCE not in image_sources:
        for dicom_id in sorted(files):
            yield Reject(key=f"{TARGET_SOURCE}/{dicom_id}", source=NAME, stage="read",
                         reason="image-source-not-ingested",
                         detail=f"{TARGET_SOURCE} is not among the ingested image sources", kind="filtered")
        return
    splits = load_splits(root)
    for detail in splits.unattributed:  # a split row too broken to name its image is a unit of its own
        yield Reject(key=f"{TARGET_SOURCE}/", source=NAME, stage="read", reason="malformed-row", detail=detail)
    orphans = sorted(set(splits.bad_rows) - set(files))
    if orphans:
        log.warning("imagenome: unreadable split rows for %d image(s) without a scene graph: %s",
                    len(orphans), "; ".join(d for dicom_id in orphans[:5] for d in splits.bad_rows[dicom_id]))
    for dicom_id in sorted(files):
        yield from parse_scene_graph(dicom_id, io.read_bytes(files[dicom_id]), io.relative(files[dicom_id], root),
                                     splits)


def parse_scene_graph(dicom_id: str, data: bytes, origin: str, splits: SplitTables) -> Iterator[ReaderOutput]:
    """The AnnotationRecord of one scene-graph file (then its item rejects), or one Reject."""
    key = f"{TARGET_SOURCE}/{dicom_id}"

    def reject(reason: str, detail: str, **kwargs) -> Reject:
        return Reject(key=key, source=NAME, stage="read", reason=reason, detail=f"{origin}: {detail}", **kwargs)

    try:
        graph = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        yield reject("unparseable-json", str(error))
        return
    if not isinstance(graph, dict):
        yield reject("unexpected-json-structure", f"top level is {type(graph).__name__}, not an object")
        return
    stated_id = strip_dcm(str(graph.get("image_id", dicom_id)))
    if stated_id != dicom_id:
        yield reject("image-id-mismatch", f"file name says {dicom_id}, image_id says {stated_id}")
        return
    sections = {name: graph.get(name, []) for name in ("objects", "attributes", "relationships")}
    for name, value in sections.items():
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            yield reject("unexpected-json-structure", f"{name!r} is not a list of objects")
            return

    item_rejects: list[Reject] = [
        Reject(key=key, source=NAME, stage="read", reason="malformed-row", detail=detail, level="item")
        for detail in splits.bad_rows.get(dicom_id, [])]
    boxes = []
    for index, obj in enumerate(sections["objects"]):
        try:
            boxes.append(_box(obj, f"{origin} objects[{index}]"))
        except (KeyError, TypeError, ValueError) as error:
            item_rejects.append(reject("bad-box", f"objects[{index}]: {error}", level="item"))
    regions = []
    for index, entry in enumerate(sections["attributes"]):
        region = entry.get("bbox_name")
        if entry.get(region) is False:
            item_rejects.append(reject("region-flag-false", f"attributes[{index}] ({region}) flagged false",
                                       level="item", kind="filtered"))
            continue
        try:
            regions.extend(_region_phrases(entry))
        except (KeyError, TypeError, ValueError) as error:
            item_rejects.append(reject("bad-attributes", f"attributes[{index}]: {error}", level="item"))

    provenance = {"file": origin}
    if dicom_id in splits.to_avoid:
        provenance["images_to_avoid"] = "true"
    if dicom_id in splits.conflicting:
        provenance["split_conflict"] = ",".join(splits.conflicting[dicom_id])
    if sections["relationships"]:
        provenance["relationships"] = json.dumps(
            [_relationship(rel) for rel in sections["relationships"]], ensure_ascii=False
        )
    yield AnnotationRecord(
        target_key=key,
        source=NAME,
        native_id=dicom_id,
        boxes=boxes,
        regions=regions,
        split_hint=splits.split_of.get(dicom_id),
        provenance=provenance,
    )
    yield from item_rejects


def _coordinate(obj: Mapping, name: str) -> float:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{name} is {value!r}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} is {value!r}, not a finite number")
    return number


def _box(obj: Mapping, where: str | None = None) -> Box:
    """The object's box in original pixels, unclipped; ``where`` names the object for reject details."""
    label = obj["bbox_name"]
    if not isinstance(label, str) or not label:
        raise ValueError(f"bbox_name is {label!r}")
    x1, y1, x2, y2 = (_coordinate(obj, f"original_{axis}") for axis in ("x1", "y1", "x2", "y2"))
    return Box(label=label, x1=x1, y1=y1, x2=x2, y2=y2, origin=BOX_ORIGIN, where=where)


def _string_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"{what} is not a list of strings")
    return list(value)


def _region_phrases(entry: Mapping) -> list[RegionAttributes]:
    """One RegionAttributes per phrase of an ``attributes`` entry; the per-phrase lists must align."""
    region = entry["bbox_name"]
    if not isinstance(region, str) or not region:
        raise ValueError(f"bbox_name is {region!r}")
    phrases = _string_list(entry["phrases"], "phrases")
    per_phrase = {"attributes": entry["attributes"]} | {name: entry.get(name, [[]] * len(phrases))
                                                        for name in CUE_LISTS}
    for name, lists in per_phrase.items():
        if not isinstance(lists, list) or len(lists) != len(phrases):
            raise ValueError(f"{name} has {len(lists) if isinstance(lists, list) else lists!r} items "
                             f"for {len(phrases)} phrases")
    return [
        RegionAttributes(
            region=region,
            phrase=phrase,
            **{name: _string_list(lists[index], f"{name}[{index}]") for name, lists in per_phrase.items()},
        )
        for index, phrase in enumerate(phrases)
    ]



def _relationship(rel: Mapping) -> dict[str, object]:
    """A comparison as ``{"region", "relation", "previous_key", "phrase"}``; unknown parts as None."""
    previous = _PREVIOUS_IMAGE.match(str(rel.get("object_id", "")))
    names = rel.get("relationship_names")
    return {
        "region": rel.get("bbox_name"),
        "relation": names if isinstance(names, list) else None,
        "previous_key": f"{TARGET_SOURCE}/{strip_dcm(previous.group(1))}" if previous else None,
        "phrase": rel.get("phrase"),
    }
