"""The read stage: each source's read plan (transforms/sources/plan.py) as a Beam graph.

Per source::

    listing patterns (spread) -> List (one pattern per element) -> Reshuffle -> Key files ─┐
    CSV tables (spread) -> Key rows (one file per element, rows streamed) ──────────────────┼─> round 0
    round r: (key, (tag, item)) -> GroupByKey -> Join (per-file reads: headers, reports, ...) -> outputs
             and keyed items of round r + 1

Every tree is listed once, in prefix shards that run in parallel; the per-file reads run in the
joins, spread over keys (images, studies), so the read scales with the workers. What a join yields:
image records on the main output as ``(image_key, packed record)``, annotation records on
``annotations`` the same way, rejects on ``rejects``, and ``((source, "emitted"), 1)`` per record on
``events`` for the manifest's reconciliation.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from pipelines.grouping import pack, unpack
from pipelines.progress import Progress
from schemas.records import AnnotationRecord, Reject, SourceRecord
from transforms import io
from transforms.sources.plan import Keyed, ReadPlan, order_items, table_rows

PROGRESS_EVERY = 500
"""Records read between two progress reports of one DoFn instance."""

OUTPUTS = ("annotations", "rejects", "events")


class _Routed(beam.DoFn):
    """Sends a plan's products to their outputs: keyed items (packed) to ``keyed``, the rest as the
    module docstring says; reports progress every :data:`PROGRESS_EVERY` records."""

    def __init__(self, plan: ReadPlan, progress: Progress):
        self.plan, self.progress = plan, progress
        self.records = 0

    def start_bundle(self):
        self.progress.started("read")

    def route(self, produced):
        for item in produced:
            if isinstance(item, Keyed):
                yield TaggedOutput("keyed", (item.key, (item.tag, pack(item.item))))
            elif isinstance(item, Reject):
                yield TaggedOutput("rejects", item)
            else:
                if isinstance(item, SourceRecord):
                    yield item.key, pack(item)
                    source = item.image.source
                elif isinstance(item, AnnotationRecord):
                    yield TaggedOutput("annotations", (item.key, pack(item)))
                    source = item.source
                else:
                    raise TypeError(f"{self.plan.source} plan produced {type(item).__name__}")
                yield TaggedOutput("events", ((source, "emitted"), 1))
                self.records += 1
                if self.records == PROGRESS_EVERY:
                    self.finish_bundle()

    def finish_bundle(self):
        self.progress.add("read", self.records)
        self.records = 0


class ListPattern(beam.DoFn):
    """One listing pattern -> ``(tag, path)`` of every file it matches."""

    def process(self, element: tuple[str, str]):
        tag, pattern = element
        for path in io.glob(pattern):
            yield tag, path


class KeyFiles(_Routed):
    def process(self, element: tuple[str, str]):
        yield from self.route(self.plan.key_file(*element))


class KeyRows(_Routed):
    """One CSV table, its data rows streamed through the plan's ``key_row``."""

    def process(self, element: tuple[str, str]):
        tag, path = element
        for row in table_rows(path):
            yield from self.route(self.plan.key_row(tag, row))


class JoinRound(_Routed):
    def __init__(self, plan: ReadPlan, progress: Progress, round_number: int):
        super().__init__(plan, progress)
        self.round_number = round_number

    def process(self, element: tuple[str, list[tuple[str, bytes]]]):
        key, tagged = element
        items = order_items(self.plan, self.round_number, ((tag, unpack(packed)) for tag, packed in tagged))
        yield from self.route(self.plan.join(key, items))


def _with_outputs(transform: beam.DoFn):
    return beam.ParDo(transform).with_outputs("keyed", *OUTPUTS, main="records")


class ReadSource(beam.PTransform):
    """One source's plan as a graph; the result has the outputs ``records``, ``annotations``,
    ``rejects`` and ``events`` (each a PCollection, possibly empty)."""

    def __init__(self, plan: ReadPlan, progress: Progress = Progress(None)):
        super().__init__()
        self.plan, self.progress = plan, progress

    def expand(self, pbegin):
        plan, progress = self.plan, self.progress
        produced = []
        patterns = [(listing.tag, pattern) for listing in plan.listings for pattern in listing.patterns()]
        if patterns:
            produced.append(
                pbegin
                | "Listing shards" >> beam.Create(patterns)  # Create spreads two or more elements itself
                | "List" >> beam.ParDo(ListPattern())
                | "Spread files" >> beam.Reshuffle()
                | "Key files" >> _with_outputs(KeyFiles(plan, progress)))
        if plan.tables:
            produced.append(
                pbegin
                | "Tables" >> beam.Create([(table.tag, table.path) for table in plan.tables])
                | "Key rows" >> _with_outputs(KeyRows(plan, progress)))
        for number in range(len(plan.rounds)):
            keyed = [outputs.keyed for outputs in produced]
            if len(plan.rounds) > 1:  # each round takes its own tags; a later round's items wait
                keyed = [
                    collection | f"Round {number} items of step {index}" >> beam.Filter(
                        lambda kv, tags=plan.rounds[number]: kv[1][0] in tags)
                    for index, collection in enumerate(keyed)]
            produced.append(
                keyed
                | f"Round {number} items" >> beam.Flatten(pipeline=pbegin.pipeline)
                | f"Group round {number}" >> beam.GroupByKey()
                | f"Join round {number}" >> _with_outputs(JoinRound(plan, progress, number)))
        return {name: [getattr(outputs, name) for outputs in produced]
                | f"All {name}" >> beam.Flatten(pipeline=pbegin.pipeline)  # a plan may read nothing
                for name in ("records", *OUTPUTS)}
