"""The build: one Beam graph from the six native sources to the output tables.

read -> join (CoGroupByKey on image_key) -> split -> group by images shard -> image -> geometry
-> language (pipelines/image_stage.py: writes ``images/`` and a checkpoint per shard) -> severity
IDF (fitted on train) -> group by study and by patient -> tasks (per image, study, patient) ->
write (stable-hash Parquet shards) -> manifest.json [-> tokenize, when configured]

Stage logic lives in ``transforms``; this module only routes, groups, guards and writes. Every
failure becomes a reject row with its stage; ``manifest.json`` reconciles
``read = written + rejected + filtered`` per source. A build killed midway and run again reuses
the images shards it finished (see pipelines/image_stage.py).
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput

from pipelines.grouping import GroupPacked, pack, unpack_all
from pipelines.image_stage import ImageStage, work_dir
from pipelines.manifest import Manifest, input_fingerprints
from pipelines.write import WriteTables, prepare
from schemas.config import BuildConfig
from schemas.records import IMAGE_SOURCES, AnnotationRecord, Reject, SourceRecord
from transforms import enrich, io
from transforms.sources import reader
from transforms.severity import FitSeverityIdf
from transforms.tasks import generator, load_profile, multi
from transforms.units import join_image

log = logging.getLogger(__name__)

DEFAULT_BEAM_ARGS = ["--runner=FnApiRunner"]


# ------------------------------------------------------------------ DoFns


class ReadSource(beam.DoFn):
    """Runs one source's reader; routes records, annotations and rejects to their outputs."""

    def process(self, root: str, name: str, image_sources: tuple[str, ...]):
        for item in reader(name).read(root, image_sources=image_sources):
            if isinstance(item, Reject):
                yield TaggedOutput("rejects", item)
            elif isinstance(item, AnnotationRecord):
                yield TaggedOutput("annotations", (item.key, item))
            elif isinstance(item, SourceRecord):
                yield (item.key, item)
            else:
                raise TypeError(f"reader {name} yielded {type(item).__name__}, not a record or reject")


class JoinUnits(beam.DoFn):
    """One image_key's packed records and annotations -> its unit, or rejects for what cannot join."""

    def process(self, element):
        key, grouped = element
        for item in join_image(key, unpack_all(grouped["images"]), unpack_all(grouped["annotations"])):
            yield TaggedOutput("rejects", item) if isinstance(item, Reject) else item


def task_rows(group, unit: str, profiles: list, seed: int) -> list[tuple[tuple, tuple]]:
    """Instruction rows of every profile task that consumes this kind of unit: one annotation row
    ("image"), the rows of one study ("study"), or the studies of one patient ("patient"). Each as
    ``((profile, task, source, split), prepared row)``: its manifest cell and the row for the writer."""
    rows = []
    for profile in profiles:
        for task in profile.tasks:
            if multi.UNITS.get(task, "image") != unit:
                continue
            for row in generator(task)(group, profile, seed):
                cell = (profile.name, task, row["source"], row["split"])
                rows.append((cell, prepare(f"instructions/{profile.name}/{task}", row["split"], row)))
    return rows


def first_row(group) -> dict:
    """The first annotation row of an image, study or patient group."""
    while isinstance(group, list):
        group = group[0]
    return group


def task_failure_reject(failure) -> Reject:
    group, (exc_type, exc_repr, _traceback) = failure
    row = first_row(group)
    return Reject(key=row["image_key"], source=row["source"], stage="tasks", level="item",
                  reason=enrich.kebab(exc_type.__name__), detail=exc_repr)


# ------------------------------------------------------------------ graph


def build_graph(p: beam.Pipeline, config: BuildConfig, out_dir: str, inputs: dict) -> None:
    sources = config.enabled_sources()
    image_sources = tuple(name for name in IMAGE_SOURCES if name in sources)
    profiles = [load_profile(name) for name in config.profiles]
    max_vertices = min(profile.polygon_max_vertices for profile in profiles) if profiles else 30

    images, annotations, rejects, events = [], [], [], []
    for name in sorted(sources):
        read = (
            p
            | f"Root {name}" >> beam.Create([sources[name].root])
            | f"Read {name}" >> beam.ParDo(ReadSource(), name, image_sources).with_outputs(
                "annotations", "rejects", main="images")
        )
        images.append(read.images)
        annotations.append(read.annotations)
        rejects.append(read.rejects)
        events.append(read.images | f"Emitted {name}" >> beam.Map(lambda kv: (kv[1].image.source, "emitted")))
        events.append(read.annotations | f"Emitted {name} annotations" >> beam.Map(lambda kv: (kv[1].source, "emitted")))

    joined = (
        {
            "images": images | "All images" >> beam.Flatten()
            | "Pack images" >> beam.MapTuple(lambda key, record: (key, pack(record))),
            "annotations": annotations | "All annotations" >> beam.Flatten()
            | "Pack annotations" >> beam.MapTuple(lambda key, record: (key, pack(record))),
        }
        | "Join on image_key" >> beam.CoGroupByKey()
        | "Units and split" >> beam.ParDo(JoinUnits()).with_outputs("rejects", main="units")
    )
    rejects.append(joined.rejects)
    roots = {name: src.root for name, src in sources.items()}
    per_image = joined.units | "Per-image stages" >> ImageStage(
        out_dir, config.rows_per_shard.images, config.image_size, max_vertices, roots)
    rejects.append(per_image.rejects)
    events.append(per_image.events)
    # MediVLM-style severity: the IDF table is fitted on the train split only, then applied to all rows.
    severity_idf = (
        per_image.annotation_rows
        | "Train rows" >> beam.Filter(lambda a: a["split"] == "train")
        | "Severity terms" >> beam.Map(enrich.severity_terms_of)
        | "Fit severity IDF" >> beam.CombineGlobally(FitSeverityIdf())
    )
    annotation_rows = per_image.annotation_rows | "Severity TF-IDF" >> beam.Map(
        enrich.add_severity_tfidf, idf_table=beam.pvalue.AsSingleton(severity_idf))
    # Study and patient units for multi-image and multi-study tasks, in time order within a patient.
    studies = (
        annotation_rows
        | "Rows with a study" >> beam.Filter(lambda a: a["study_id"] is not None)
        | "Key by study" >> beam.Map(lambda a: ((a["source"], a["study_id"]), a))
        | "Group studies" >> GroupPacked()
        | "Study rows" >> beam.Map(lambda kv: sorted(kv[1], key=lambda a: a["image_key"]))
    )
    patients = (
        studies
        | "Rows with a patient" >> beam.Filter(lambda study: study[0]["subject_id"] is not None)
        | "Key by patient" >> beam.Map(lambda study: ((study[0]["source"], study[0]["subject_id"]), study))
        | "Group patients" >> GroupPacked()
        | "Patient studies" >> beam.Map(lambda kv: multi.in_time_order(list(kv[1])))
    )
    instruction_lists = []
    for unit, groups in (("image", annotation_rows), ("study", studies), ("patient", patients)):
        made, bad_tasks = groups | f"Tasks per {unit}" >> beam.Map(
            task_rows, unit, profiles, config.seed).with_exception_handling()
        instruction_lists.append(made)
        rejects.append(bad_tasks | f"Task rejects per {unit}" >> beam.Map(task_failure_reject))
    instructions = instruction_lists | "All instructions" >> beam.Flatten()

    all_rejects = rejects | "All rejects" >> beam.Flatten()
    reject_rows = all_rejects | "Reject rows" >> beam.Map(lambda r: prepare("rejects", "rejects", r.model_dump()))
    events.append(all_rejects | "Reject events" >> beam.Map(
        lambda r: (r.source, f"{r.kind}:{r.stage}" if r.level == "record" else f"item-{r.kind}:{r.stage}:{r.reason}")))

    table_rows = (
        annotation_rows | "Annotation rows" >> beam.Map(lambda a: prepare("annotations", a["split"], a)),
        instructions | "Instruction rows" >> beam.FlatMap(lambda rs: [prepared for _, prepared in rs]),
        reject_rows,
    ) | "All rows" >> beam.Flatten()
    written = table_rows | "Write" >> WriteTables(
        out_dir, config.rows_per_shard.model_dump(), always=[("rejects", "rejects")])
    shards = (written, per_image.shards) | "All shards" >> beam.Flatten()

    counts = events | "All events" >> beam.Flatten() | "Count events" >> beam.combiners.Count.PerElement()
    instruction_counts = (
        instructions
        | "Instruction cells" >> beam.FlatMap(lambda rs: [cell for cell, _ in rs])
        | "Count instructions" >> beam.combiners.Count.PerElement()
    )
    straddling = (
        per_image.patients
        | "Distinct patient splits" >> beam.Distinct()
        | "Splits per patient" >> beam.combiners.Count.PerKey()
        | "Patients in several splits" >> beam.Filter(lambda kv: kv[1] > 1)
        | "Patient keys" >> beam.Keys()
    )
    manifest = Manifest(config=config, inputs=inputs, profiles=profiles)
    (
        p
        | "Manifest seed" >> beam.Create([None])
        | "Manifest" >> beam.Map(
            lambda _, counts, shards, straddling, instruction_counts, severity_idf: manifest.write(
                out_dir, counts, shards, straddling, instruction_counts, severity_idf),
            counts=beam.pvalue.AsList(counts),
            shards=beam.pvalue.AsList(shards),
            straddling=beam.pvalue.AsList(straddling),
            instruction_counts=beam.pvalue.AsList(instruction_counts),
            severity_idf=beam.pvalue.AsSingleton(severity_idf),
        )
    )


def run_build(config: BuildConfig, out_dir: str, beam_args: list[str] | None = None) -> dict:
    """Run the build (and the tokenizer stage when the config has one); return the manifest."""
    inputs = input_fingerprints(config)
    options = PipelineOptions(beam_args if beam_args else DEFAULT_BEAM_ARGS)
    with beam.Pipeline(options=options) as p:
        build_graph(p, config, out_dir, inputs)
    if io.exists(work_dir(out_dir)):  # manifest.json is written: the per-shard checkpoints are spent
        FileSystems.delete([work_dir(out_dir)])
    if config.tokenizer is not None:
        from pipelines.tokenize import run_tokenize

        tok = config.tokenizer
        run_tokenize(out_dir, tok.model, device=tok.device, batch_size=tok.batch_size, beam_args=beam_args,
                     precision=tok.precision, vocabulary=tok.vocabulary)
    return Manifest.read(out_dir)
