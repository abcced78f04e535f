"""A local file system with an object store's round trips: ``slow:///abs/path`` (benchmarks only).

Every open of a file waits :data:`OPEN_LATENCY` seconds before the first byte (a GCS GET's time to
first byte is ~20-50 ms); every listing waits the same per call and per :data:`PAGE` names returned
(GCS lists 1,000 objects per page). Reads themselves run at local disk speed, so what the benchmark
measures is how many round trips a stage makes and how many run at once.

When ``CXR_ACTIVITY_DIR`` is set, every process appends the time of each round trip to a file there,
so a benchmark can take the span of the stage's I/O without the runner's start-up and shutdown.

Beam finds a file system by importing its module; benchmarks/bench_read.py has every process of a
run import this one at start-up. ``CXR_OPEN_LATENCY_MS`` sets the latency (default 20).
"""

from __future__ import annotations

import os
import time

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "slow"
PREFIX = f"{SCHEME}://"
OPEN_LATENCY = float(os.environ.get("CXR_OPEN_LATENCY_MS", "20")) / 1000
PAGE = 1000
ACTIVITY_DIR = os.environ.get("CXR_ACTIVITY_DIR")


def round_trip() -> None:
    """Wait one latency; note when it started and ended (when ``CXR_ACTIVITY_DIR`` is set)."""
    started = time.time()
    time.sleep(OPEN_LATENCY)
    if ACTIVITY_DIR:
        with open(os.path.join(ACTIVITY_DIR, str(os.getpid())), "a", encoding="ascii") as log:
            log.write(f"{started:.6f} {time.time():.6f}\n")


def local(path: str) -> str:
    return path[len(PREFIX) :] if path.startswith(PREFIX) else path


class LatencyFileSystem(LocalFileSystem):
    """LocalFileSystem under the ``slow://`` scheme, with a round trip per open and per listing page."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return PREFIX + super().join(local(basepath), *paths)

    def has_dirs(self):
        return False  # like an object store: a listing is of every name under a prefix

    def _list(self, dir_or_prefix):
        prefix = local(dir_or_prefix)
        round_trip()
        listed = 0
        for folder, subfolders, names in os.walk(os.path.dirname(prefix)):
            subfolders[:] = [
                name
                for name in subfolders
                if (os.path.join(folder, name) + os.sep).startswith(prefix)
                or prefix.startswith(os.path.join(folder, name) + os.sep)
            ]
            for name in names:
                path = os.path.join(folder, name)
                if path.startswith(prefix):
                    listed += 1
                    if listed % PAGE == 0:
                        round_trip()
                    yield FileMetadata(PREFIX + path, os.path.getsize(path), os.path.getmtime(path))

    def open(self, path, *args, **kwargs):
        round_trip()
        return super().open(local(path), *args, **kwargs)

    def create(self, path, *args, **kwargs):
        return super().create(local(path), *args, **kwargs)

    def exists(self, path):
        round_trip()
        return super().exists(local(path))

    def size(self, path):
        return super().size(local(path))

    def last_updated(self, path):
        return super().last_updated(local(path))

    def metadata(self, path):
        found = super().metadata(local(path))
        return FileMetadata(PREFIX + found.path, found.size_in_bytes, found.last_updated_in_seconds)

    def checksum(self, path):
        return super().checksum(local(path))

    def delete(self, paths):
        return super().delete([local(path) for path in paths])
