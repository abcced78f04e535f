"""Values that cross a grouping as compressed pickled bytes.

Beam's local FnApiRunner keeps every PCollection between stages in memory, and a dict of rows or a
pydantic record costs several times its pickle there. Records, units and rows are packed where they
are made and unpacked where they are used, so what the runner holds is compact bytes
(benchmarks/bench_scale.py). On Dataflow values are serialised for the shuffle anyway, so packing
costs nothing there.
"""

from __future__ import annotations

import pickle
import zlib

PROTOCOL = 5


def pack(value) -> bytes:
    """Pickled and zlib-compressed (level 1): rows of text and coordinates shrink 3-5x for ~1 us/KB."""
    return zlib.compress(pickle.dumps(value, protocol=PROTOCOL), 1)


def unpack(packed: bytes):
    return pickle.loads(zlib.decompress(packed))


def unpack_all(values) -> list:
    """The values of one group, unpacked."""
    return [unpack(value) for value in values]
