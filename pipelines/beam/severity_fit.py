"""The Beam combine that fits MediVLM's severity table (transforms/severity.py) on the train split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import apache_beam as beam

from transforms import severity


class FitSeverityIdf(beam.CombineFn):
    """``severity_terms`` lists, one per training document -> the frozen table of :func:`severity.fit_table`."""

    def create_accumulator(self) -> Counter:
        return severity.new_accumulator()

    def add_input(self, accumulator: Counter, terms: Sequence[str]) -> Counter:
        return severity.add_document(accumulator, terms)

    def merge_accumulators(self, accumulators: Iterable[Counter]) -> Counter:
        return severity.merge_accumulators(accumulators)

    def extract_output(self, accumulator: Counter) -> dict:
        return severity.fit_table(accumulator)
