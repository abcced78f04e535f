"""The Dataflow path, checked without submitting: options parse (no ``[gcp]`` extra needed), the build
and tokenize graphs construct against ``gs://`` outputs, every stage pickles, and no step gathers a
whole source into one element.

Aggregations the build graph is allowed to have (anything else fails ``test_every_grouping_...``):

- The read (pipelines/beam/read.py), all sources together: reshuffles of the listing shards and CSV tables
  (inside ``Read/Listing shards`` and ``Read/Tables``) and of the listed files (``Read/Spread files``),
  and a GroupByKey per join round (``Read/Group round N``: one source's image, study or row id).
- GroupByKey on fine keys: ``Join on image_key`` (one image + its CheXmask/ImaGenome annotations),
  ``Per-image stages/Group images shard`` ((split, shard, n): the packed units of ~rows_per_shard.images
  images, no pixels), ``Write/Group fragments`` ((table, split): one fragment reference per images
  shard, no rows), ``Write rejects/Group shard`` ((table, split, shard, n): at most ~rows_per_shard
  rejects), and the reshuffle ``Write/Spread shards`` (one slice plan per output shard).
- Combiners (lifted: partial accumulators per bundle, so a key's values are never listed):
  ``Fit severity IDF`` (the only global combine: a Counter of seed-term signatures, bounded by the
  seed-term vocabulary, not by the corpus), ``Write rejects/Sum per split`` and ``Per-image
  stages/Units per split`` (an int per (table, split)), ``Count events`` / ``Count instructions`` (an
  int per (source, stage, reason) / (profile, task, source, split)), ``Distinct patient splits`` /
  ``Splits per patient`` (per patient).
- Side inputs, each a small table: the IDF table, the shard plan, per-key counts, one description per
  written shard, and the keys of patients found in two splits (empty when the build is correct).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, SetupOptions, WorkerOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

import manifests
from pipelines.beam import tokenize
from pipelines.beam.build import build_graph
from pipelines.beam.severity_fit import FitSeverityIdf
from pipelines.synth import generate
from schemas.config import load_config
from transforms.severity import TERMS
from transforms.sources import read_plans

DATAFLOW_ARGS = [
    "--runner=DataflowRunner",
    "--project=cxr-instruct-test",
    "--region=us-central1",
    "--temp_location=gs://bucket/tmp",
    "--machine_type=n2-highmem-4",
    "--sdk_container_image=us-central1-docker.pkg.dev/cxr-instruct-test/beam/cxr-instruct:0.1.0",
    "--experiments=use_runner_v2",
    # Graphs are built, never submitted: without it, validating the options asks GCS whether the temp
    # bucket has a soft-delete policy, which (with the [gcp] extra of the test extra installed) looks for
    # Google credentials first: retries for minutes and probes the GCE metadata server.
    "--dry_run=True",
]
OUT = "gs://bucket/out"

FINE_KEY_GROUPS = {
    "Join on image_key",
    "Per-image stages/Group images shard",
    "Write/Group fragments",
    "Write rejects/Group shard",
    "Write/Spread shards",
}
READ_STEPS = {"ListPattern", "KeyFiles", "KeyRows", "JoinRound"}
"""The read's DoFns (pipelines/beam/read.py): one listing shard, one listed file, one CSV streamed, one key."""


def read_groups(plans) -> set[str]:
    """The read's groupings: reshuffles spreading the listing shards, the tables (Create spreads two
    or more elements) and the listed files, and one GroupByKey per join round (by source and key)."""
    groups = {"Read/Spread files"} | {
        f"Read/Group round {n}" for n in range(max(len(p.rounds) for p in plans.values()))
    }
    if sum(len(listing.patterns()) for plan in plans.values() for listing in plan.listings) > 1:
        groups.add("Read/Listing shards")
    if sum(len(plan.tables) for plan in plans.values()) > 1:
        groups.add("Read/Tables")
    return groups


COMBINES = {
    "Fit severity IDF": "FitSeverityIdf",
    "Write rejects/Sum per split": "NoSideInputsCallableWrapperCombineFn",
    "Per-image stages/Units per split": "NoSideInputsCallableWrapperCombineFn",
    "Count events": "NoSideInputsCallableWrapperCombineFn",
    "Count instructions": "NoSideInputsCallableWrapperCombineFn",
    "Distinct patient splits": "NoSideInputsCallableWrapperCombineFn",
    "Splits per patient": "CountCombineFn",
}
GLOBAL_COMBINES = {"Fit severity IDF"}
SIDE_INPUT_PRODUCERS = {
    "Fit severity IDF",
    "Write rejects/Shards per split",
    "Per-image stages/Shards per split",
    "Count events",
    "Count instructions",
    "All shards",
    "Patient keys",
}


class GraphWalk(PipelineVisitor):
    """Collects leaf transforms, composite combines, GroupByKeys outside a combine, and side inputs."""

    def __init__(self):
        self.leaves = []
        self.combines = []  # (full label, composite type name, CombineFn type name)
        self.groupings = []  # full labels of GroupByKey leaves
        self.side_inputs = []  # (consumer label, view type, producer label)

    def enter_composite_transform(self, node):
        transform = node.transform
        if isinstance(transform, (beam.CombineGlobally, beam.CombinePerKey)):
            self.combines.append((node.full_label, type(transform).__name__, type(transform.fn).__name__))
        elif transform is not None and "ToList" in type(transform).__name__:
            self.combines.append((node.full_label, type(transform).__name__, "ToList"))

    def visit_transform(self, node):
        self.leaves.append(node)
        if isinstance(node.transform, beam.GroupByKey):
            self.groupings.append(node.full_label)
        for view in getattr(node.transform, "side_inputs", None) or ():
            self.side_inputs.append((node.full_label, type(view).__name__, view.pvalue.producer.full_label))


def top_label(full_label: str, known: set[str]) -> str | None:
    """The longest known label that ``full_label`` is, or is nested in."""
    matches = [label for label in known if full_label == label or full_label.startswith(label + "/")]
    return max(matches, key=len) if matches else None


@pytest.fixture(scope="module")
def options() -> PipelineOptions:
    return PipelineOptions(DATAFLOW_ARGS)


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    corpus = generate(tmp_path_factory.mktemp("corpus"), studies=2, seed=0)
    config = load_config(corpus / "build.yaml")
    return config, read_plans(config)


@pytest.fixture(scope="module")
def build_pipeline(plans, options) -> tuple[beam.Pipeline, GraphWalk]:
    config, source_plans = plans
    pipeline = beam.Pipeline(options=options)
    build_graph(pipeline, config, OUT, inputs={}, plans=source_plans)
    walk = GraphWalk()
    pipeline.visit(walk)
    return pipeline, walk


def test_dataflow_options_parse_without_the_gcp_extra(options):
    assert options.view_as(GoogleCloudOptions).project == "cxr-instruct-test"
    assert options.view_as(GoogleCloudOptions).region == "us-central1"
    assert options.view_as(GoogleCloudOptions).temp_location == "gs://bucket/tmp"
    assert options.view_as(WorkerOptions).machine_type == "n2-highmem-4"
    assert options.view_as(WorkerOptions).sdk_container_image.endswith("/cxr-instruct:0.1.0")
    assert options.view_as(SetupOptions).setup_file is None  # the container carries the package
    assert isinstance(beam.Pipeline(options=options).runner, DataflowRunner)


def test_build_graph_translates_to_a_runner_api_proto(build_pipeline):
    pipeline, walk = build_pipeline
    proto = pipeline.to_runner_api()
    urns = Counter(transform.spec.urn for transform in proto.components.transforms.values())
    assert urns["beam:transform:group_by_key:v1"] == len(walk.groupings)
    assert urns["beam:transform:pardo:v1"] > 0


@pytest.mark.parametrize("library", ["cloudpickle", "dill"])
def test_every_stage_pickles_with_the_beam_pickler(build_pipeline, library):
    """Every leaf transform, its DoFn and its arguments round-trip with either ``--pickle_library``."""
    _, walk = build_pipeline
    failures = []
    pickler.set_library(library)
    try:
        for node in walk.leaves:
            parts = {"transform": node.transform}
            if isinstance(node.transform, beam.ParDo):
                parts.update(fn=node.transform.fn, args=(node.transform.args, node.transform.kwargs))
            for part, value in parts.items():
                try:
                    pickler.loads(pickler.dumps(value))
                except Exception as error:  # collected so the message lists every offender at once
                    failures.append(f"{node.full_label} ({part}): {type(error).__name__}: {error}")
    finally:
        pickler.set_library()
    assert len(walk.leaves) > 50
    assert not failures, "\n".join(failures)


# What a worker does with the submitted graph: unpickle every DoFn and CombineFn payload, in a fresh
# interpreter that has only the installed package (not the tests, not the launcher's session).
WORKER_UNPICKLE = """
import sys
from apache_beam.internal import pickler
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2 as api
proto = api.Pipeline.FromString(open(sys.argv[1], "rb").read())
combines = {common_urns.composites.COMBINE_PER_KEY.urn, common_urns.composites.COMBINE_GLOBALLY.urn,
            common_urns.combine_components.COMBINE_GROUPED_VALUES.urn}
loaded = 0
for transform in proto.components.transforms.values():
    if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
        fn = api.ParDoPayload.FromString(transform.spec.payload).do_fn
    elif transform.spec.urn in combines:
        fn = api.CombinePayload.FromString(transform.spec.payload).combine_fn
    else:
        continue
    if "pickled_python" in fn.urn:
        pickler.loads(fn.payload)
        loaded += 1
print(loaded)
"""


def test_a_fresh_interpreter_unpickles_every_fn_of_the_submitted_graph(build_pipeline, tmp_path):
    pipeline, walk = build_pipeline
    graph = tmp_path / "pipeline.pb"
    graph.write_bytes(pipeline.to_runner_api().SerializeToString())
    result = subprocess.run(
        [sys.executable, "-c", WORKER_UNPICKLE, str(graph)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pardos = sum(isinstance(node.transform, beam.ParDo) for node in walk.leaves)
    assert int(result.stdout.split()[-1]) >= pardos - 1  # all but Beam's key-with-none URN DoFn


def test_every_grouping_is_by_a_fine_key_or_inside_a_combiner(build_pipeline, plans):
    _, walk = build_pipeline
    fine = FINE_KEY_GROUPS | read_groups(plans[1])
    combine_labels = {label for label, _, _ in walk.combines}
    unexplained = [
        label for label in walk.groupings if top_label(label, fine) is None and top_label(label, combine_labels) is None
    ]
    assert not unexplained, f"GroupByKey not on a fine key nor inside a CombineFn: {unexplained}"
    assert {top_label(label, fine) for label in walk.groupings} - {None} == fine


def test_no_step_reads_a_whole_source_in_one_element(build_pipeline, plans):
    """Every DoFn of the read handles one listing shard, one file, one CSV (rows streamed, each its own
    element after) or one key's items; the joins, where files are opened, follow a GroupByKey."""
    _, walk = build_pipeline
    ours = {
        node.full_label: type(node.transform.fn)
        for node in walk.leaves
        if isinstance(node.transform, beam.ParDo)
        and node.full_label.startswith("Read/")
        and type(node.transform.fn).__module__.split(".")[0] in ("pipelines", "transforms")
    }
    assert {fn.__name__ for fn in ours.values()} == READ_STEPS
    for node in walk.leaves:
        if node.full_label in ours and ours[node.full_label].__name__ == "JoinRound":
            assert "/Group round " in node.inputs[0].producer.full_label, node.full_label
    config, source_plans = plans
    join = next(node for node in walk.leaves if node.full_label.startswith("Read/Join round 0"))
    assert set(join.transform.fn.plans) == set(source_plans) == set(config.enabled_sources())
    mimic_listing = source_plans["mimic"].listings
    assert sum(len(listing.patterns()) for listing in mimic_listing) >= 10  # files/p10 .. files/p19 apart


def test_combines_are_the_documented_small_ones(build_pipeline):
    _, walk = build_pipeline
    outermost = {
        (label, kind, fn)
        for label, kind, fn in walk.combines
        if top_label(label, {other for other, _, _ in walk.combines if other != label}) is None
    }
    named = {(top_label(label, set(COMBINES)) or label, kind, fn) for label, kind, fn in outermost}
    assert {label: fn for label, _, fn in named} == COMBINES
    assert len(named) == len(COMBINES)
    assert {label for label, kind, _ in named if kind == "CombineGlobally"} == GLOBAL_COMBINES
    assert all(fn != "ToList" for _, _, fn in walk.combines)


def test_side_inputs_come_only_from_small_tables(build_pipeline):
    _, walk = build_pipeline
    producers = {top_label(producer, SIDE_INPUT_PRODUCERS) or producer for _, _, producer in walk.side_inputs}
    # "Fit severity IDF/UnKey" feeds its own InjectDefault: Beam's CombineGlobally internals.
    assert producers == SIDE_INPUT_PRODUCERS


def test_the_global_combine_accumulator_is_bounded_by_the_term_signatures():
    """FitSeverityIdf over many reports keeps one counter entry per distinct term signature."""
    fn = FitSeverityIdf()
    rng = np.random.default_rng(0)
    terms = list(TERMS)[:3]
    accumulator = fn.create_accumulator()
    for _ in range(5000):
        accumulator = fn.add_input(accumulator, [t for t in terms if rng.random() < 0.5])
    assert sum(accumulator.values()) == 5000
    assert len(accumulator) <= 2 ** len(terms)


def test_decoding_is_not_fused_with_the_per_source_read(build_pipeline):
    """A GroupByKey on the images shard sits between the read's joins and the image stage, so Dataflow
    spreads decoding over all workers by shard, whatever the read's keys were."""
    _, walk = build_pipeline
    image = next(node for node in walk.leaves if node.full_label.startswith("Per-image stages/Process images shard"))
    assert image.inputs[0].producer.full_label.startswith("Per-image stages/Group images shard")


def test_only_the_tokenizer_step_asks_for_a_gpu(build_pipeline, options):
    build, _ = build_pipeline
    assert not any(env.resource_hints for env in build.to_runner_api().components.environments.values())

    settings = manifests.load("tokenizer.yaml")
    handler = tokenize.VqganModelHandler("/opt/cxr-instruct/vqgan", "cuda", 16, "bf16", settings["accelerator_hint"])
    pipeline = beam.Pipeline(options=options)
    tokenize.build_graph(
        pipeline,
        OUT,
        ["train-00000-of-00001.parquet"],
        handler,
        np.arange(8192, dtype=np.int32),
        "fingerprint",
        512,
        settings["row_group_rows"],
    )
    proto = pipeline.to_runner_api()
    hinted = {
        env_id
        for env_id, env in proto.components.environments.items()
        if env.resource_hints.get("beam:resources:accelerator:v1") == settings["accelerator_hint"].encode()
    }
    assert len(hinted) == 1
    gpu_steps = {
        transform.unique_name
        for transform in proto.components.transforms.values()
        if transform.environment_id in hinted and not transform.subtransforms
    }
    assert gpu_steps and all(name.startswith("Encode/") for name in gpu_steps)
