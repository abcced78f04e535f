"""Chest ImaGenome (1.0.0) silver scene graphs: one AnnotationRecord per ``<dicom_id>_SceneGraph.json``.

``root`` is the ``chest-imagenome`` folder. Scene graphs are read from ``silver_dataset/scene_graph/``
and one level down (``silver_dataset/scene_graph/scene_graph/``, how the zip often unpacks); the top
folder wins for an id found in both. Splits come from ``silver_dataset/splits/{train,valid,test}.csv``
and gold images from ``images_to_avoid.csv`` (``.csv`` or ``.csv.gz``). See
``docs/formats/chest-imagenome.md``.

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

An unreadable split row (missing cells, not UTF-8) that names its image is an item reject on that
image's record (one in ``images_to_avoid`` still marks the image gold); one that names no image is a
reject of its own (key ``mimic/``), except in ``images_to_avoid``, where it is an error before
anything is read: a gold image could leak into training. Without ``mimic`` among the ingested image
sources every scene graph is filtered (``image-source-not-ingested``) unopened.

How it is read (:class:`ImaGenomePlan`): both scene-graph folders are listed once, each in shards by
the first character of the file name (the 16 hex digits of dicom_ids, ``docs/formats/mimic-cxr.md``
§1, and one shard for any other), and the rows of the four split CSVs are keyed by dicom_id. One
join per dicom_id reads its scene graph with that image's split rows.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Collection, Iterator, Mapping
from functools import partial
from typing import NamedTuple

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
from transforms.sources.plan import HEX, Keyed, Listing, ReadPlan, Row, Table, read_reject, run_serially

log = logging.getLogger(__name__)

NAME = "imagenome"
TARGET_SOURCE = "mimic"
BOX_ORIGIN = "imagenome-scene-graph"
SPLIT_FILES = ("train", "valid", "test")
AVOID_FILE = "images_to_avoid"
SCENE_GRAPH_SUFFIX = "_SceneGraph.json"
CUE_LISTS = ("comparison_cues", "temporal_cues", "severity_cues")
"""Per-phrase cue lists that :class:`RegionAttributes` carries (``texture_cues`` has no field)."""
OTHER_NAMES = "[!0-9a-f/\\]"
"""The listing shard of file names that do not start with a lowercase hex digit (not MIMIC dicom_ids,
or ``_SceneGraph.json`` itself; read all the same): with :data:`plan.HEX` every name is in exactly one
shard (``/`` and ``\\`` are left out as ``*`` leaves them out). On an object store it lists the whole
folder, matching nothing there."""
_PREVIOUS_IMAGE = re.compile(r"^([^_]+)_")
"""The image part of a relationship's ``object_id`` ``"<previous dicom_id>_<bbox_name>"``."""


class ImaGenomeInputError(ValueError):
    """A required ImaGenome file is missing or malformed as a whole."""


class ImageSplits(NamedTuple):
    """What the split CSVs say about one image."""

    splits: tuple[str, ...]  # the split files that list it, each once, in file order
    to_avoid: bool  # a gold image
    bad_rows: tuple[str, ...]  # its unreadable rows, "<file> row N: ..."


def strip_dcm(image_id: str) -> str:
    """``"<dicom_id>.dcm"`` -> ``"<dicom_id>"`` (ImaGenome writes ids both ways)."""
    return image_id[: -len(".dcm")] if image_id.endswith(".dcm") else image_id


class _SplitFile(NamedTuple):
    number: int  # the order of the files: train, valid, test, images_to_avoid
    name: str  # as reject details cite it (relative to root)
    width: int
    position: int  # of the dicom_id column (selected by name; the unnamed index column is ignored)


def _split_file(root: str, stem: str, number: int) -> tuple[str, _SplitFile]:
    splits_dir = io.join(root, "silver_dataset", "splits")
    path = io.csv_file(splits_dir, stem)
    if path is None:
        raise ImaGenomeInputError(f"{io.join(splits_dir, stem)}.csv(.gz) not found; it is required")
    header = csvrows.read_header(path)
    position = next((i for i, name in enumerate(header) if name.lower() == "dicom_id"), None)
    if position is None:
        raise ImaGenomeInputError(f"{path}: no dicom_id column")
    return path, _SplitFile(number, io.relative(path, root), len(header), position)


def _unnamed_gold(details: list[str]) -> ImaGenomeInputError:
    return ImaGenomeInputError(
        f"{'; '.join(details)}: an images_to_avoid row names no dicom_id, so a gold image could enter training"
    )


class ImaGenomePlan(ReadPlan):
    """Scene graphs and split rows joined by dicom_id; the scene graph is read in the join.

    Whole input, at plan time: a scene graph exists; with ``mimic`` ingested, the four split CSVs
    exist and have a dicom_id column, and every unreadable ``images_to_avoid`` row names its image
    (that file, a few thousand rows, is read through for this; its rows are still joined as items)."""

    source = NAME
    rounds = (frozenset({"graph", "split", "avoid", "bad-row"}),)

    def __init__(self, root: str, mimic_ingested: bool):
        self.root, self.mimic_ingested = root, mimic_ingested
        base = io.join(root, "silver_dataset", "scene_graph")
        nested = io.join(base, "scene_graph")
        if not any(io.any_match(io.join(folder, f"*{SCENE_GRAPH_SUFFIX}")) for folder in (base, nested)):
            raise ImaGenomeInputError(
                f"no *{SCENE_GRAPH_SUFFIX} under {base} (or {base}/scene_graph); is scene_graph.zip extracted?"
            )
        # shards of "*": a shard of "*_SceneGraph.json" by first character would miss "_SceneGraph.json"
        self.listings = (
            Listing("graph", base, "*", (*HEX, OTHER_NAMES)),
            Listing("nested-graph", nested, "*", (*HEX, OTHER_NAMES)),
        )
        self.split_files: dict[str, _SplitFile] = {}
        if not mimic_ingested:  # every scene graph is filtered unopened; the split files are not needed
            return
        tables = []
        for number, stem in enumerate((*SPLIT_FILES, AVOID_FILE)):
            path, self.split_files[stem] = _split_file(root, stem, number)
            tables.append(Table(stem, path))
        self.tables = tuple(tables)
        avoid = self.split_files[AVOID_FILE]
        unnamed = [
            bad.where(avoid.name)
            for bad in (
                csvrows.bad_row(number, cells, problem, avoid.width)
                for number, cells, problem in csvrows.records(tables[-1].path)
                if problem is not None
            )
            if not strip_dcm(bad.cell(avoid.position))
        ]
        if unnamed:
            raise _unnamed_gold(unnamed)

    def key_file(self, tag: str, path: str) -> Iterator[Keyed]:
        name = io.basename(path)
        if name.endswith(SCENE_GRAPH_SUFFIX):
            yield Keyed(name[: -len(SCENE_GRAPH_SUFFIX)], "graph", (tag == "nested-graph", path))

    def key_row(self, tag: str, row: Row) -> Iterator[Keyed | Reject]:
        split_file = self.split_files[tag]
        order = (split_file.number, row.number)
        if row.problem is None:
            dicom_id = strip_dcm(row.cells[split_file.position].strip())
            yield Keyed(dicom_id, "avoid", (order,)) if tag == AVOID_FILE else Keyed(dicom_id, "split", (order, tag))
            return
        bad = csvrows.bad_row(row.number, row.cells, row.problem, split_file.width)
        dicom_id, where = strip_dcm(bad.cell(split_file.position)), bad.where(split_file.name)
        if dicom_id:
            yield Keyed(dicom_id, "bad-row", (order, where))
            if tag == AVOID_FILE:  # still a gold image
                yield Keyed(dicom_id, "avoid", (order,))
        elif tag == AVOID_FILE:  # checked at plan time; the file changed since
            raise _unnamed_gold([where])
        else:  # a split row too broken to name its image is a unit of its own
            yield read_reject(NAME, f"{TARGET_SOURCE}/", "malformed-row", where)

    def join(self, dicom_id: str, items: dict[str, list[tuple]]) -> Iterator[ReaderOutput]:
        graphs, bad_rows = items["graph"], tuple(where for _, where in items["bad-row"])
        if not graphs:
            if bad_rows:
                log.warning(
                    "imagenome: unreadable split rows for %s, which has no scene graph: %s",
                    dicom_id,
                    "; ".join(bad_rows),
                )
            return
        if not self.mimic_ingested:
            yield read_reject(
                NAME,
                f"{TARGET_SOURCE}/{dicom_id}",
                "image-source-not-ingested",
                f"{TARGET_SOURCE} is not among the ingested image sources",
                kind="filtered",
            )
            return
        _, path = graphs[0]  # the top folder's before the nested one's
        splits = ImageSplits(tuple(dict.fromkeys(split for _, split in items["split"])), bool(items["avoid"]), bad_rows)
        try:
            data = io.read_bytes(path)
        except OSError as error:  # no permission, a link to nothing, a read error
            yield read_reject(
                NAME,
                f"{TARGET_SOURCE}/{dicom_id}",
                "unreadable-file",
                f"{io.relative(path, self.root)}: cannot be read: {error}",
            )
            return
        yield from parse_scene_graph(dicom_id, data, io.relative(path, self.root), splits)


def plan(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> ImaGenomePlan:
    """The read plan of the ImaGenome tree under ``root``; :class:`ImaGenomeInputError` when there is no
    scene graph, or (with ``mimic`` ingested) a split CSV is missing or lacks its dicom_id column, or an
    ``images_to_avoid`` row names no image."""
    return ImaGenomePlan(root, TARGET_SOURCE in image_sources)


def read(root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
    """One AnnotationRecord or Reject per scene-graph file, sorted by target key (plus item rejects);
    split rows that name no image first."""
    return run_serially(plan(root, image_sources))


def parse_scene_graph(dicom_id: str, data: bytes, origin: str, splits: ImageSplits) -> Iterator[ReaderOutput]:
    """The AnnotationRecord of one scene-graph file (then its item rejects), or one Reject."""
    key = f"{TARGET_SOURCE}/{dicom_id}"
    reject = partial(read_reject, NAME, key)

    try:
        graph = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        yield reject("unparseable-json", f"{origin}: {error}")
        return
    if not isinstance(graph, dict):
        yield reject("unexpected-json-structure", f"{origin}: top level is {type(graph).__name__}, not an object")
        return
    stated_id = strip_dcm(str(graph.get("image_id", dicom_id)))
    if stated_id != dicom_id:
        yield reject("image-id-mismatch", f"{origin}: file name says {dicom_id}, image_id says {stated_id}")
        return
    sections = {name: graph.get(name, []) for name in ("objects", "attributes", "relationships")}
    for name, value in sections.items():
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            yield reject("unexpected-json-structure", f"{origin}: {name!r} is not a list of objects")
            return

    item_rejects: list[Reject] = [
        read_reject(NAME, key, "malformed-row", detail, level="item") for detail in splits.bad_rows
    ]
    boxes = []
    for index, obj in enumerate(sections["objects"]):
        try:
            boxes.append(_box(obj, f"{origin} objects[{index}]"))
        except (KeyError, TypeError, ValueError) as error:
            item_rejects.append(reject("bad-box", f"{origin}: objects[{index}]: {error}", level="item"))
    regions = []
    for index, entry in enumerate(sections["attributes"]):
        region = entry.get("bbox_name")
        if isinstance(region, str) and entry.get(region) is False:  # a list or dict name is bad-attributes below
            item_rejects.append(
                reject(
                    "region-flag-false",
                    f"{origin}: attributes[{index}] ({region}) flagged false",
                    level="item",
                    kind="filtered",
                )
            )
            continue
        try:
            regions.extend(_region_phrases(entry))
        except (KeyError, TypeError, ValueError) as error:
            item_rejects.append(reject("bad-attributes", f"{origin}: attributes[{index}]: {error}", level="item"))

    provenance = {"file": origin}
    if splits.to_avoid:
        provenance["images_to_avoid"] = "true"
    if len(splits.splits) > 1:
        provenance["split_conflict"] = ",".join(splits.splits)
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
        split_hint=splits.splits[0] if len(splits.splits) == 1 else None,
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
    per_phrase = {"attributes": entry["attributes"]} | {
        name: entry.get(name, [[]] * len(phrases)) for name in CUE_LISTS
    }
    for name, lists in per_phrase.items():
        if not isinstance(lists, list) or len(lists) != len(phrases):
            raise ValueError(
                f"{name} has {len(lists) if isinstance(lists, list) else lists!r} items for {len(phrases)} phrases"
            )
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
