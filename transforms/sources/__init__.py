"""One reader module per source dataset, all with the same small interface.

Each module ``transforms/sources/<name>.py`` (``<name>`` one of ``schemas.records.ALL_SOURCES``) is a
:class:`SourceReader`: ``NAME``, ``plan`` and ``read`` (tests/test_source_readers.py holds every one to it).

``plan`` checks the whole input (required files, header columns, layout) and says how the source's
files and CSV rows are keyed and joined (:mod:`transforms.sources.plan`); the build runs it as a
Beam graph (pipelines/beam/read.py), ``read`` runs the same plan in one process. The native layout under
``root`` may be a local path or ``gs://`` (all file access goes through :mod:`transforms.io`); for
every unit of input a plan yields exactly one of:

- :class:`schemas.records.SourceRecord` — one per image the source owns (MIMIC, VinDr, SIIM, PadChest);
- :class:`schemas.records.AnnotationRecord` — one per annotation unit that lands on another source's
  image (a CheXmask row, an ImaGenome scene graph), keyed by that image's ``image_key``;
- :class:`schemas.records.Reject` — the unit could not be read (``kind="rejected"``) or a documented
  rule left it out (``kind="filtered"``), with ``stage="read"`` and a short reason.

A reject's ``detail`` names the file it comes from, relative to ``root``, and for a CSV the 1-based
data row (``"annotations/annotations_train.csv row 17: ..."``). CSVs are read through
:mod:`transforms.sources.csvrows`: a row with missing or extra cells, or with bytes that are not
UTF-8, becomes a reject of its own (or of the image it names) and the rest of the file is read.

So ``units read == records + rejects`` per source, which the manifest reconciles. A reader never
opens another source's files, never decodes pixels (that is the image stage) and keeps geometry
in original pixels. ``image_sources`` tells annotation readers which image sources are ingested,
so they can skip (and count as filtered) rows for images that will not exist.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterator
from typing import Protocol, cast, runtime_checkable

from schemas.config import BuildConfig
from schemas.records import ALL_SOURCES, IMAGE_SOURCES, ReaderOutput
from transforms.sources.plan import ReadPlan


@runtime_checkable
class SourceReader(Protocol):
    """What a reader module provides (the module itself is the reader)."""

    NAME: str
    """The source's name in ``build.yaml`` and in every key and reject it makes (``"mimic"``)."""

    def plan(self, root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> ReadPlan:
        """The whole-input checks, then how the files and CSV rows are keyed and joined."""
        ...

    def read(self, root: str, image_sources: Collection[str] = IMAGE_SOURCES) -> Iterator[ReaderOutput]:
        """The plan run in one process: ``run_serially(plan(root, image_sources))``."""
        ...


def reader(name: str) -> SourceReader:
    """The reader module of a source, e.g. ``reader("mimic").plan(root)``."""
    if name not in ALL_SOURCES:
        raise KeyError(f"unknown source {name!r}; expected one of {list(ALL_SOURCES)}")
    return cast(SourceReader, importlib.import_module(f"transforms.sources.{name}"))


def read_plans(config: BuildConfig) -> dict[str, ReadPlan]:
    """``{source: ReadPlan}`` for the config's enabled sources. Whole-input problems (a required file
    or column missing, an unknown layout) raise here, before any pipeline starts."""
    sources = config.enabled_sources()
    image_sources = tuple(name for name in IMAGE_SOURCES if name in sources)
    return {name: reader(name).plan(source.root, image_sources) for name, source in sorted(sources.items())}
