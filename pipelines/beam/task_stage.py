"""The task stage: one images shard's annotation rows -> every table row it makes, staged as fragments.

It runs once per images shard, after the severity IDF table is fitted on the train split. It reads
the shard's checkpoint (pipelines/beam/image_stage.py), adds each row's MediVLM severity score, builds
the shard's studies and patients (``task_groups``, transforms/units.py; whole inside one shard, by
how the image stage shards) and runs every profile task on its image, study or patient groups.
Rows are not sent through the pipeline:
each (table, split) gets one fragment file per images shard, its rows packed and sorted by key, and
the stage sends on a :class:`Fragment` reference that ``WriteFragments`` (pipelines/beam/write.py) turns
into output shards. A task that fails on a group becomes a ``tasks`` reject for that group only.
"""

from __future__ import annotations

import pickle
from collections import Counter, defaultdict
from typing import cast

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from pipelines.beam.image_stage import Checkpoint
from pipelines.beam.progress import Progress
from pipelines.beam.write import Fragment, PreparedRow, prepare, write_fragment
from pipelines.output.paths import work_dir
from schemas.records import Reject
from schemas.rows import AnnotationRow, InstructionRow
from transforms import enrich, io, output_rows
from transforms.tasks import generator, registry
from transforms.units import group_rows, task_groups

InstructionCell = tuple[str, str, str, str]
"""Where an instruction row is counted in the manifest: (profile, task, source, split)."""


def task_rows(
    group, unit: str, profiles: list, seed: int
) -> tuple[list[tuple[InstructionCell, PreparedRow]], list[Reject]]:
    """Instruction rows of every profile task that consumes this kind of unit: one annotation row
    ("image"), the rows of one study ("study"), or the studies of one patient ("patient"). Each as
    ``((profile, task, source, split), prepared row)``: its manifest cell and the row for the writer;
    and the rejects the generators gave for inputs they could not use (a native question, ...).
    The generators' rows are typed here, where they leave the task framework (schemas/rows.py)."""
    rows: list[tuple[InstructionCell, PreparedRow]] = []
    rejects: list[Reject] = []
    for profile in profiles:
        for task in profile.tasks:
            if registry()[task].unit != unit:
                continue
            for made in generator(task)(group, profile, seed):
                if isinstance(made, Reject):
                    rejects.append(made)
                    continue
                row = cast(InstructionRow, made)
                cell = (profile.name, task, row["source"], row["split"])
                rows.append((cell, prepare(f"instructions/{profile.name}/{task}", row["split"], row)))
    return rows, rejects


def fragment_path(out_dir: str, table_dir: str, split: str, shard: str) -> str:
    return io.join(work_dir(out_dir), "rows", table_dir, split, f"{shard}.pkl")


class RunTasks(beam.DoFn):
    """:class:`Checkpoint` -> one :class:`Fragment` per (table_dir, split) with rows; tagged outputs
    ``rejects`` (failed task groups) and ``instruction_counts`` (``((profile, task, source, split), n)``)."""

    def __init__(self, out_dir: str, profiles: list, seed: int, progress: Progress | None = None):
        self.out_dir = out_dir
        self.profiles = profiles
        self.seed = seed
        self.progress = progress or Progress(None)

    def process(self, checkpoint: Checkpoint, idf_table: dict):
        self.progress.started("tasks")
        with io.open_binary(checkpoint.path) as handle:
            annotation_rows: list[AnnotationRow] = pickle.load(handle).annotation_rows
        rows = sorted(
            (output_rows.add_severity_tfidf(row, idf_table) for row in annotation_rows), key=lambda a: a["image_key"]
        )
        tables: defaultdict[tuple[str, str], list[PreparedRow]] = defaultdict(list)
        cells: Counter[InstructionCell] = Counter()
        for row in rows:
            tables[("annotations", row["split"])].append(prepare("annotations", row["split"], row))
        for unit, group in task_groups(cast(list[dict], rows)):  # the task modules read rows as plain dicts
            try:
                made, rejects = task_rows(group, unit, self.profiles, self.seed)
            except Exception as exc:
                members = group_rows(group)
                for member in members:  # each image of the group loses the group's rows: an item reject each
                    yield TaggedOutput(
                        "rejects",
                        Reject(
                            key=member["image_key"],
                            source=member["source"],
                            stage="tasks",
                            level="item",
                            reason=enrich.kebab(type(exc).__name__),
                            detail=f"{unit} of {len(members)} image(s) from {members[0]['image_key']}: {exc!r}",
                        ),
                    )
                continue
            for reject in rejects:
                yield TaggedOutput("rejects", reject)
            for cell, prepared in made:
                cells[cell] += 1
                tables[(prepared.table_dir, prepared.split)].append(prepared)
        for (table_dir, split), prepared_rows in sorted(tables.items()):
            path = fragment_path(self.out_dir, table_dir, split, checkpoint.name)
            write_fragment(path, prepared_rows)
            yield Fragment(table_dir, split, checkpoint.name, path, len(prepared_rows))
        for cell, count in sorted(cells.items()):
            yield TaggedOutput("instruction_counts", (cell, count))
        self.progress.add("tasks", len(rows))
