"""The build: one Beam graph from the six native sources to the output tables.

read (pipelines/beam/read.py: each source's plan, in parallel over files and keys) -> join (CoGroupByKey
on image_key) -> split -> group by images shard -> image -> geometry
-> language (pipelines/beam/image_stage.py: writes ``images/`` and a checkpoint per shard) -> severity
IDF (fitted on train) -> tasks per images shard (pipelines/beam/task_stage.py: studies and patients are
whole inside a shard; rows go to fragment files) -> write (pipelines/beam/write.py: fragments cut into
Parquet shards) -> manifest.json [-> tokenize, when configured]

Stage logic lives in ``transforms``; this module only routes, groups, guards and writes. Past the
join, per-image data stays in files: the PCollections carry shard references, counts and rejects
(before it, packed records), so a local run's memory grows little with the corpus. Every failure
becomes a reject row with its stage; ``manifest.json`` reconciles ``read = written + rejected +
filtered`` per source. A build killed midway and run again reuses the images shards it finished
(see pipelines/beam/image_stage.py).
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput

from pipelines.beam.grouping import unpack_all
from pipelines.beam.image_stage import ImageStage, translation_fingerprint, unit_entry
from pipelines.beam.progress import PROGRESS_EVERY, Progress
from pipelines.beam.read import ReadSources
from pipelines.beam.severity_fit import FitSeverityIdf
from pipelines.beam.task_stage import RunTasks
from pipelines.beam.write import WriteFragments, WriteTables, prepare
from pipelines.output.manifest import Manifest, input_fingerprints
from pipelines.output.out_lock import clear_previous_build, locked, remove_orphan_shards
from pipelines.output.paths import work_dir
from schemas.config import BuildConfig
from schemas.records import Reject
from schemas.rows import reject_row
from transforms import io
from transforms.sources import read_plans
from transforms.sources.plan import ReadPlan
from transforms.tasks import load_profile
from transforms.units import join_image

log = logging.getLogger(__name__)

DEFAULT_BEAM_ARGS = ["--runner=FnApiRunner"]


# ------------------------------------------------------------------ DoFns


class JoinUnits(beam.DoFn):
    """One image_key's packed records and annotations -> its unit (as the image stage's entry), or
    rejects for what cannot join."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.joined = 0

    def start_bundle(self):
        self.progress.started("join")

    def process(self, element):
        key, grouped = element
        for item in join_image(key, unpack_all(grouped["images"]), unpack_all(grouped["annotations"])):
            yield TaggedOutput("rejects", item) if isinstance(item, Reject) else unit_entry(item)
        self.joined += 1
        if self.joined == PROGRESS_EVERY:
            self.finish_bundle()

    def finish_bundle(self):
        self.progress.add("join", self.joined)
        self.joined = 0


# ------------------------------------------------------------------ graph


def build_graph(
    p: beam.Pipeline,
    config: BuildConfig,
    out_dir: str,
    inputs: dict,
    progress: Progress | None = None,
    plans: dict[str, ReadPlan] | None = None,
) -> None:
    progress = progress or Progress(None)
    sources = config.enabled_sources()
    plans = plans if plans is not None else read_plans(config)
    profiles = [load_profile(name) for name in config.profiles]
    max_vertices = min(profile.polygon_max_vertices for profile in profiles) if profiles else 30

    read = p | "Read" >> ReadSources(plans, progress)
    rejects, events = [read["rejects"]], [read["events"]]
    joined = (
        {"images": read["records"], "annotations": read["annotations"]}
        | "Join on image_key" >> beam.CoGroupByKey()
        | "Units and split" >> beam.ParDo(JoinUnits(progress)).with_outputs("rejects", main="units")
    )
    rejects.append(joined.rejects)
    roots = {name: src.root for name, src in sources.items()}
    per_image = joined.units | "Per-image stages" >> ImageStage(
        out_dir,
        config.rows_per_shard.images,
        config.image_size,
        max_vertices,
        roots,
        progress,
        png_compression=config.png_compression,
        fingerprint=config.fingerprint,
        translation=config.translation,
    )
    rejects.append(per_image.rejects)
    events.append(per_image.events)
    # MediVLM's severity: the IDF table is fitted on the train split only, then applied to all rows.
    severity_idf = per_image.severity_terms | "Fit severity IDF" >> beam.CombineGlobally(FitSeverityIdf())
    tasks = per_image.checkpoints | "Tasks per images shard" >> beam.ParDo(
        RunTasks(out_dir, profiles, config.seed, progress),
        idf_table=beam.pvalue.AsSingleton(severity_idf),
    ).with_outputs("rejects", "instruction_counts", main="fragments")
    rejects.append(tasks.rejects)

    all_rejects = rejects | "All rejects" >> beam.Flatten()
    events.append(
        all_rejects
        | "Reject events"
        >> beam.Map(
            lambda r: (
                (r.source, f"{r.kind}:{r.stage}" if r.level == "record" else f"item-{r.kind}:{r.stage}:{r.reason}"),
                1,
            )
        )
    )
    written_rows = tasks.fragments | "Write" >> WriteFragments(out_dir, config.rows_per_shard.model_dump(), progress)
    written_rejects = (
        all_rejects
        | "Reject rows" >> beam.Map(lambda r: prepare("rejects", "rejects", reject_row(r)))
        | "Write rejects" >> WriteTables(out_dir, config.rows_per_shard.model_dump())
    )
    shards = (written_rows, written_rejects, per_image.shards) | "All shards" >> beam.Flatten()

    counts = events | "All events" >> beam.Flatten() | "Count events" >> beam.CombinePerKey(sum)
    instruction_counts = tasks.instruction_counts | "Count instructions" >> beam.CombinePerKey(sum)
    straddling = (
        per_image.patients
        | "Distinct patient splits" >> beam.Distinct()
        | "Splits per patient" >> beam.combiners.Count.PerKey()
        | "Patients in several splits" >> beam.Filter(lambda kv: kv[1] > 1)
        | "Patient keys" >> beam.Keys()
    )
    manifest = Manifest(
        config=config,
        inputs=inputs,
        profiles=profiles,
        translation=None if config.translation is None else translation_fingerprint(config.translation),
    )
    (
        p
        | "Manifest seed" >> beam.Create([None])
        | "Manifest"
        >> beam.Map(
            lambda _, counts, shards, straddling, instruction_counts, severity_idf: manifest.write(
                out_dir, counts, shards, straddling, instruction_counts, severity_idf
            ),
            counts=beam.pvalue.AsList(counts),
            shards=beam.pvalue.AsList(shards),
            straddling=beam.pvalue.AsList(straddling),
            instruction_counts=beam.pvalue.AsList(instruction_counts),
            severity_idf=beam.pvalue.AsSingleton(severity_idf),
        )
    )


def run_build(
    config: BuildConfig,
    out_dir: str,
    beam_args: list[str] | None = None,
    progress: Progress | None = None,
    inputs: dict | None = None,
    plans: dict[str, ReadPlan] | None = None,
    replace: bool = False,
) -> dict:
    """Run the build (and the tokenizer stage when the config has one); return the manifest. The
    stages report what they finish through ``progress`` (pipelines/beam/progress.py); ``plans`` and
    ``inputs`` are the read plans and input fingerprints when the caller has already made them.

    The build holds ``out_dir``'s lock throughout (another build or tokenize there raises
    :class:`pipelines.output.out_lock.OutputLocked`). An older finished build in ``out_dir`` is cleared first
    when it has this config (or ``replace``), else :class:`pipelines.output.out_lock.OtherBuildInOutput` is
    raised (:func:`pipelines.output.out_lock.clear_previous_build`)."""
    progress = progress or Progress(None)
    plans = plans if plans is not None else read_plans(config)
    inputs = inputs if inputs is not None else input_fingerprints(config, plans)
    with locked(out_dir, "build"):
        clear_previous_build(out_dir, config.model_dump(mode="json"), replace)
        io.map_large_allocations()  # a local runner's big PCollection buffers go back to the OS when spent
        options = PipelineOptions(beam_args if beam_args else DEFAULT_BEAM_ARGS)
        with beam.Pipeline(options=options) as p:
            build_graph(p, config, out_dir, inputs, progress, plans)
        # manifest.json is written: the per-shard checkpoints and row fragments are spent (images shards a
        # killed earlier run wrote under other names go first). On gs:// there is no _work folder to test
        # for, only objects under the prefix; remove_tree lists and deletes them all.
        remove_orphan_shards(out_dir, Manifest.read(out_dir))
        io.remove_tree(work_dir(out_dir))
        if config.tokenizer is not None:
            from pipelines.beam.tokenize import run_tokenize

            tok = config.tokenizer
            run_tokenize(
                out_dir,
                tok.model,
                device=tok.device,
                batch_size=tok.batch_size,
                beam_args=beam_args,
                precision=tok.precision,
                vocabulary=tok.vocabulary,
                progress=progress,
            )
        return Manifest.read(out_dir)
