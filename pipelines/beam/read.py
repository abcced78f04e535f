"""The read stage: every source's read plan (transforms/sources/plan.py) in one Beam graph.

::

    listing shards of all sources (spread) -> List (one pattern per element) -> Reshuffle -> Key files ─┐
    CSV tables of all sources (spread) -> Key rows (one file per element, rows streamed) ─────────────┼─> round 0
    round r: ((source, key), (tag, item)) -> GroupByKey -> Join (per-file reads: headers, reports, ...)
             -> records and rejects, and keyed items of round r + 1

The sources share the steps, each element naming its source, so the graph has a handful of steps
whatever the number of sources and every step's work is spread over all workers together: a join
worker may read a VinDr header, then the report of a MIMIC study. Every tree is listed once, in
prefix shards listed in parallel; the per-file reads run in the joins, spread over keys (images,
studies). The outputs: image records as ``(image_key, packed record)``, ``annotations`` the same
way, ``rejects``, and ``events``: ``((source, "emitted"), 1)`` per record, for the manifest's
reconciliation.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from pipelines.beam.grouping import pack, unpack
from pipelines.beam.progress import PROGRESS_EVERY, Progress
from schemas.records import AnnotationRecord, Reject, SourceRecord
from transforms.sources.plan import Keyed, ReadPlan, listed, order_items, table_rows

OUTPUTS = ("records", "annotations", "rejects", "events")


class _Routed(beam.DoFn):
    """Runs a source's plan step and sends what it produces to the outputs: keyed items (packed,
    under ``(source, key)``) to ``keyed``, the rest as the module docstring says; reports progress every
    :data:`PROGRESS_EVERY` records."""

    def __init__(self, plans: dict[str, ReadPlan], progress: Progress):
        self.plans, self.progress = plans, progress
        self.records = 0

    def start_bundle(self):
        self.progress.started("read")

    def route(self, source: str, produced):
        for item in produced:
            if isinstance(item, Keyed):
                round_number = self.plans[source].round_of(item.tag)
                yield TaggedOutput("keyed", (round_number, ((source, item.key), (item.tag, pack(item.item)))))
            elif isinstance(item, Reject):
                yield TaggedOutput("rejects", item)
            else:
                if isinstance(item, SourceRecord):
                    yield item.key, pack(item)
                    emitted_by = item.image.source
                elif isinstance(item, AnnotationRecord):
                    yield TaggedOutput("annotations", (item.key, pack(item)))
                    emitted_by = item.source
                else:
                    raise TypeError(f"the {source} read plan produced {type(item).__name__}")
                yield TaggedOutput("events", ((emitted_by, "emitted"), 1))
                self.records += 1
                if self.records == PROGRESS_EVERY:
                    self.finish_bundle()

    def finish_bundle(self):
        self.progress.add("read", self.records)
        self.records = 0


class ListPattern(beam.DoFn):
    """One listing shard ``(source, tag, root, folder, pattern)`` -> ``(source, tag, path)`` of every file it
    matches, and ``(source, tag, Reject)`` for each folder it could not enter or broken link it met
    (:func:`transforms.sources.plan.listed`)."""

    def process(self, element: tuple[str, str, str, str, str]):
        source, tag, root, folder, pattern = element
        for path in listed(source, root, folder, pattern):
            yield source, tag, path


class KeyFiles(_Routed):
    def process(self, element: tuple[str, str, str | Reject]):
        source, tag, path = element
        yield from self.route(source, [path] if isinstance(path, Reject) else self.plans[source].key_file(tag, path))


class KeyRows(_Routed):
    """One CSV table ``(source, tag, path)``, its data rows streamed through the plan's ``key_row``."""

    def process(self, element: tuple[str, str, str]):
        source, tag, path = element
        plan = self.plans[source]
        for row in table_rows(path):
            yield from self.route(source, plan.key_row(tag, row))


class JoinRound(_Routed):
    """One ``(source, key)`` of one round with its tagged items -> the plan's join."""

    def __init__(self, plans: dict[str, ReadPlan], progress: Progress, round_number: int):
        super().__init__(plans, progress)
        self.round_number = round_number

    def process(self, element: tuple[tuple[str, str], list[tuple[str, bytes]]]):
        (source, key), tagged = element
        plan = self.plans[source]
        items = order_items(plan, self.round_number, ((tag, unpack(packed)) for tag, packed in tagged))
        yield from self.route(source, plan.join(key, items))


def _with_outputs(transform: beam.DoFn):
    return beam.ParDo(transform).with_outputs("keyed", *OUTPUTS[1:], main="records")


class ReadSources(beam.PTransform):
    """The plans (``{source: ReadPlan}``) as one graph; the result is ``{output: PCollection}`` for
    each of :data:`OUTPUTS` (each possibly empty)."""

    def __init__(self, plans: dict[str, ReadPlan], progress: Progress | None = None):
        super().__init__()
        self.plans, self.progress = plans, progress or Progress(None)

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        plans, progress = self.plans, self.progress
        pipeline = pbegin.pipeline
        patterns = [
            (source, listing.tag, plan.root, listing.folder, pattern)
            for source, plan in sorted(plans.items())
            for listing in plan.listings
            for pattern in listing.patterns()
        ]
        tables = [(source, table.tag, table.path) for source, plan in sorted(plans.items()) for table in plan.tables]
        produced = [
            pbegin
            | "Listing shards" >> beam.Create(patterns)  # Create spreads two or more elements itself
            | "List" >> beam.ParDo(ListPattern())
            | "Spread files" >> beam.Reshuffle()
            | "Key files" >> _with_outputs(KeyFiles(plans, progress)),
            pbegin | "Tables" >> beam.Create(tables) | "Key rows" >> _with_outputs(KeyRows(plans, progress)),
        ]
        rounds = max((len(plan.rounds) for plan in plans.values()), default=0)
        waiting: list[list] = [[] for _ in range(rounds)]  # each round's keyed items, from every step

        def by_round(step, label: str) -> None:  # each keyed item is split off to its round once
            if rounds:
                parts = step.keyed | f"{label} by round" >> beam.Partition(
                    lambda element, _: element[0],  # type: ignore[arg-type]  # Beam wraps a function; the stub wants a PartitionFn
                    rounds,
                )
                for number in range(rounds):
                    waiting[number].append(parts[number])

        by_round(produced[0], "Files")
        by_round(produced[1], "Rows")
        for number in range(rounds):
            joined = (
                waiting[number]
                | f"Round {number} items" >> beam.Flatten(pipeline=pipeline)
                | f"Round {number} keys" >> beam.Map(lambda element: element[1])
                | f"Group round {number}" >> beam.GroupByKey()
                | f"Join round {number}" >> _with_outputs(JoinRound(plans, progress, number))
            )
            produced.append(joined)
            by_round(joined, f"Round {number} joins")
        return {
            name: [getattr(step, name) for step in produced] | f"All {name}" >> beam.Flatten(pipeline=pipeline)
            for name in OUTPUTS
        }
