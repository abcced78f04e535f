"""Checks a read plan's Beam graph (pipelines/beam/read.py) against its one-process run, for the source tests."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from pipelines.beam.grouping import unpack
from pipelines.beam.read import ReadSources
from transforms.sources.plan import ReadPlan, run_serially


def described(output) -> tuple[str, str]:
    return type(output).__name__, repr(output.model_dump())


def assert_beam_matches_serial(plan: ReadPlan) -> list:
    """Run ``plan`` both ways; the records, annotations and rejects must be the same (in any order),
    and the emitted events one per record. Returns the serial outputs."""
    serial = list(run_serially(plan))
    kinds = {"records": "SourceRecord", "annotations": "AnnotationRecord", "rejects": "Reject"}
    with beam.Pipeline(runner="FnApiRunner") as p:
        outputs = p | ReadSources({plan.source: plan})
        for name, kind in kinds.items():
            found = outputs[name] | f"Describe {name}" >> beam.Map(
                lambda element, name=name: described(unpack(element[1]) if name != "rejects" else element)
            )
            assert_that(
                found, equal_to([described(o) for o in serial if type(o).__name__ == kind]), label=f"Same {name}"
            )
        emitted = outputs["events"] | "Count emitted" >> beam.combiners.Count.Globally()
        assert_that(emitted, equal_to([sum(type(o).__name__ != "Reject" for o in serial)]), label="Same count")
    return serial
