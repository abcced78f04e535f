"""How a source is read: its files and CSV rows become keyed items, joined by key in one or more rounds.

A reader's ``plan(root, image_sources)`` checks what must hold for the whole input (required files,
header columns, the layout) and returns a :class:`ReadPlan`. Nothing per image is read at plan time.
The plan says:

- ``listings``: trees to list, each as glob patterns (one per prefix shard, listed independently, so
  in parallel on Dataflow); every listed path goes through :meth:`ReadPlan.key_file`;
- ``tables``: CSV files whose data rows (streamed, never held) go through :meth:`ReadPlan.key_row`;
- ``rounds``: the tags joined in each round. Items of one round are grouped by key, and
  :meth:`ReadPlan.join` turns one key's items into outputs: records and rejects, or :class:`Keyed`
  items for a later round (MIMIC joins files to metadata by dicom_id, then images to reports and
  labels by study).

Per-file reads (a DICOM header, a report, a scene graph) happen in ``join``, on whichever worker
holds the key: the work is spread over keys, not over sources. Keyed items are tuples whose first
element orders them (a row number or a path); ``join`` gets each tag's items sorted by it, so its
result does not depend on the order a shuffle delivers them in.

:func:`run_serially` runs a plan in one process (the readers' ``read``, tests, small local runs);
``pipelines/beam/read.py`` runs the same plan as a Beam graph. Both give the same outputs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

from schemas.records import ReaderOutput, Reject
from transforms import io
from transforms.sources import csvrows


class Keyed(NamedTuple):
    """An item waiting for the others of its key: ``tag`` says what it is, ``item`` is a tuple."""

    key: str
    tag: str
    item: tuple


class Row(NamedTuple):
    """A data row of a CSV as :func:`csvrows.records` gives it: ``problem`` is None for a good row."""

    number: int
    cells: list[str]
    problem: str | None


@dataclass(frozen=True)
class Listing:
    """A tree to list. ``folder`` is absolute; each of ``shards`` is prefixed to ``pattern`` to make one
    glob pattern (``("p10/", "p11/")`` and ``"**"``, or ``("0", "1", ...)`` and ``"*.dicom"``)."""

    tag: str
    folder: str
    pattern: str
    shards: tuple[str, ...] = ("",)

    def patterns(self) -> list[str]:
        return [io.join(self.folder, shard + self.pattern) for shard in self.shards]


@dataclass(frozen=True)
class Table:
    """A CSV file whose data rows are keyed one by one (its header was read at plan time)."""

    tag: str
    path: str


HEX = tuple("0123456789abcdef")
"""First characters of hexadecimal file names (VinDr image ids): prefix shards of a flat folder."""


class ReadPlan:
    """What one source reads and how its items join. Subclasses set the fields and the three methods."""

    source: str
    root: str = ""  # the source's root: reject details name files relative to it
    listings: tuple[Listing, ...] = ()
    tables: tuple[Table, ...] = ()
    rounds: tuple[frozenset[str], ...] = ()

    def key_file(self, tag: str, path: str) -> Iterable[Keyed | ReaderOutput]:
        raise NotImplementedError

    def key_row(self, tag: str, row: Row) -> Iterable[Keyed | ReaderOutput]:
        raise NotImplementedError

    def join(self, key: str, items: dict[str, list[tuple]]) -> Iterable[ReaderOutput | Keyed]:
        """One key's items of one round (every tag of the round present, possibly empty) -> outputs."""
        raise NotImplementedError

    def round_of(self, tag: str) -> int:
        for number, tags in enumerate(self.rounds):
            if tag in tags:
                return number
        raise KeyError(f"{type(self).__name__}: tag {tag!r} belongs to no round")


def read_reject(
    source: str,
    key: str,
    reason: str,
    detail: str = "",
    *,
    kind: Literal["rejected", "filtered"] = "rejected",
    level: Literal["record", "item"] = "record",
) -> Reject:
    """A reader's reject (stage ``read``): ``key`` is the image it costs (``<image source>/<id>``), ``detail``
    names the file (and CSV row) it comes from, relative to the source's root."""
    return Reject(key=key, source=source, stage="read", reason=reason, detail=detail, kind=kind, level=level)


def table_rows(path: str) -> Iterator[Row]:
    """The data rows of a CSV, streamed (the header is skipped: plans read it at plan time)."""
    for number, cells, problem in csvrows.records(path):
        if number:
            yield Row(number, cells, problem)


def listed(source: str, root: str, folder: str, pattern: str) -> Iterator[str | Reject]:
    """The paths one listing pattern matches, sorted, then a reject for each thing under it that could
    not be listed: a folder that cannot be entered (``unreadable-folder``) or a link whose target is
    missing (``broken-link``), keyed ``source/<its path under the listing's folder>``, the detail naming
    it relative to the source's ``root``. Both executors list through here, so both give the same rejects."""
    problems: list[io.Unlisted] = []
    yield from sorted(m.path for m in io.match(pattern, problems=problems))
    for problem in sorted(problems):
        yield read_reject(
            source,
            f"{source}/{io.relative(problem.path, folder)}",
            problem.reason,
            f"{io.relative(problem.path, root)}: {problem.detail}",
        )


def order_items(plan: ReadPlan, round_number: int, grouped: Iterable[tuple[str, tuple]]) -> dict[str, list[tuple]]:
    """``(tag, item)`` pairs of one key -> {tag: items sorted by their first element}, every tag of the round."""
    items: dict[str, list[tuple]] = {tag: [] for tag in plan.rounds[round_number]}
    for tag, item in grouped:
        items[tag].append(item)
    for values in items.values():
        values.sort(key=lambda item: item[0])
    return items


def run_serially(plan: ReadPlan) -> Iterator[ReaderOutput]:
    """Every output of ``plan`` in one process: keying rejects first, then each round's joins by key."""
    pending: list[dict[str, list[tuple[str, tuple]]]] = [defaultdict(list) for _ in plan.rounds]

    def route(produced: Iterable) -> Iterator[ReaderOutput]:
        for item in produced:
            if isinstance(item, Keyed):
                pending[plan.round_of(item.tag)][item.key].append((item.tag, item.item))
            else:
                yield item

    for listing in plan.listings:
        for pattern in listing.patterns():
            for path in listed(plan.source, plan.root, listing.folder, pattern):
                yield from route([path] if isinstance(path, Reject) else plan.key_file(listing.tag, path))
    for table in plan.tables:
        for row in table_rows(table.path):
            yield from route(plan.key_row(table.tag, row))
    for number, keys in enumerate(pending):
        for key in sorted(keys):
            yield from route(plan.join(key, order_items(plan, number, keys[key])))
