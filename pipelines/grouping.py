"""GroupByKey whose values cross the shuffle as compressed pickled bytes.

Beam's local FnApiRunner keeps every value of a GroupByKey as a live Python object until the
groups are read, and a dict of rows or a pydantic record costs several times its pickle. Packing
values into compressed bytes before the grouping and unpacking them in the consumer keeps a local build's
peak memory close to the size of its data (benchmarks/bench_scale.py). On Dataflow the values are
serialised for the shuffle anyway, so packing costs nothing there.
"""

from __future__ import annotations

import pickle
import zlib

import apache_beam as beam

PROTOCOL = 5


def pack(value) -> bytes:
    """Pickled and zlib-compressed (level 1): rows of text and coordinates shrink 3-5x for ~1 us/KB."""
    return zlib.compress(pickle.dumps(value, protocol=PROTOCOL), 1)


def unpack(packed: bytes):
    return pickle.loads(zlib.decompress(packed))


def unpack_all(values) -> list:
    """The values of one group, unpacked."""
    return [unpack(value) for value in values]


class GroupPacked(beam.PTransform):
    """``(key, value)`` -> ``(key, [values])``, like GroupByKey, with the values packed in between.

    The GroupByKey inside is labelled ``GroupByKey``, so a step named ``"Group studies"`` shows as
    ``Group studies/GroupByKey`` in the graph."""

    def expand(self, pcoll):
        return (
            pcoll
            | "Pack" >> beam.MapTuple(lambda key, value: (key, pack(value)))
            | "GroupByKey" >> beam.GroupByKey()
            | "Unpack" >> beam.MapTuple(lambda key, values: (key, unpack_all(values)))
        )
