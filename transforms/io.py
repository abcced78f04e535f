"""File access through Beam ``FileSystems`` so every path may be local or ``gs://``.

Readers and stages use these helpers instead of ``open()`` / ``os.walk`` on input paths.
"""

from __future__ import annotations

import bz2
import ctypes
import functools
import gzip
import hashlib
import io
import os
import posixpath
import re
from typing import IO

from apache_beam.io.filesystem import CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def match(pattern: str, limit: int | None = None) -> list[FileMetadata]:
    """Path, size and modification time of the files matching a glob pattern, in Beam's syntax
    (``*`` and ``?`` stay inside one path part, ``**`` crosses them, ``[...]`` a character class);
    at most ``limit`` of them. A pattern without wildcards matches the file of that name, never a folder.

    On an object store this is Beam's listing of the pattern's literal prefix. Locally Beam walks and
    stats the whole folder above the prefix for every pattern, so prefix shards of one folder would
    each stat all of it; here only the folders that can hold a match are walked and only matching
    files are stat'ed."""
    if is_object_store(pattern):
        return FileSystems.match([pattern], [limit] if limit is not None else None)[0].metadata_list
    prefix = re.match(r"[^[*?]*", pattern).group(0)
    if prefix == pattern:
        return [FileMetadata(pattern, os.path.getsize(pattern), os.path.getmtime(pattern))] \
            if os.path.isfile(pattern) else []
    matches = re.compile(FileSystem.translate_pattern(pattern)).match
    found = []
    for folder, subfolders, names in os.walk(os.path.dirname(prefix) or "."):
        subfolders[:] = [name for name in subfolders
                         if _may_hold(os.path.join(folder, name) + os.sep, prefix)]
        for name in names:
            path = os.path.join(folder, name)
            if path.startswith(prefix) and matches(path):
                found.append(FileMetadata(path, os.path.getsize(path), os.path.getmtime(path)))
                if limit is not None and len(found) >= limit:
                    return found
    return found


def _may_hold(folder: str, prefix: str) -> bool:
    """Whether files under ``folder`` (ending in a separator) can start with ``prefix``."""
    return folder.startswith(prefix) or prefix.startswith(folder)


def glob(pattern: str) -> list[str]:
    """Sorted paths matching a glob pattern (see :func:`match`)."""
    return sorted(m.path for m in match(pattern))


def any_match(pattern: str) -> bool:
    """Whether at least one file matches (stops at the first)."""
    return bool(match(pattern, limit=1))


def read_bytes(path: str) -> bytes:
    """Raw bytes of a file, never decompressed (images, DICOM)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def is_object_store(path: str) -> bool:
    """True for ``gs://`` (and other non-local schemes): no directories, listing is by prefix."""
    return "://" in path


@functools.cache
def _gcs():
    """One GCS client per process (building one costs an authentication round trip)."""
    from apache_beam.io.gcp import gcsio

    return gcsio.GcsIO()


def read_head(path: str, length: int) -> bytes:
    """The first ``length`` bytes of a file (all of it when shorter), without fetching the rest.

    Beam opens ``gs://`` objects with a 16 MiB read buffer, so reading a DICOM header through
    ``FileSystems.open`` downloads the whole file; here the read buffer is ``length``, one ranged GET."""
    if path.startswith("gs://"):
        with _gcs().open(path, read_buffer_size=length) as handle:
            return handle.read(length)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read(length)


RANDOM_READ_BUFFER = 1 << 20


def open_file(path: str) -> IO[bytes]:
    """A seekable binary stream of a file's raw bytes, never decompressed, for random access (what
    pyarrow reads Parquet from: ``pq.ParquetFile(handle)``); close it when done.

    On ``gs://`` each read past the buffer is one ranged GET of what was asked plus ``RANDOM_READ_BUFFER``
    (Beam's default, 16 MiB, would fetch 16 MiB for every few-KB Parquet footer or column chunk)."""
    if path.startswith("gs://"):
        return _gcs().open(path, read_buffer_size=RANDOM_READ_BUFFER)
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_text(path: str, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def size_of(path: str) -> int:
    """A file's size in bytes (one metadata request on an object store)."""
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def files_under(folder: str) -> list[str]:
    """Every file below a folder, at any depth, sorted; [] when there is none. On an object store the
    folder is the prefix ``folder/`` (so ``out/_work`` never takes in ``out/_work2/...``)."""
    return glob(join(folder, "**"))


def sizes_under(folder: str) -> dict[str, int]:
    """Every file below a folder -> its size in bytes, keyed by its path relative to the folder (``/``
    separated), in path order: one listing (on ``gs://`` a request per thousand objects)."""
    return {relative(m.path, folder): m.size_in_bytes for m in sorted(match(join(folder, "**")), key=lambda m: m.path)}


def remove_tree(folder: str) -> int:
    """Delete a folder and all it holds; returns the number of files removed (0, and nothing done, when
    there is nothing there).

    On an object store there are no folders, and ``exists()`` of a prefix is False, so every object
    under ``folder/`` is listed and deleted (on ``gs://`` a hundred per batch request); one that could
    not be deleted raises. Locally the folder itself is removed, empty subfolders included."""
    files = files_under(folder)
    if not is_object_store(folder):
        if exists(folder):
            FileSystems.delete([folder])
        return len(files)
    if folder.startswith("gs://"):
        failed = [(path, status) for path, status in _gcs().delete_batch(files) if status is not None]
        if failed:
            raise OSError(f"could not delete {len(failed)} of {len(files)} objects under {folder}, "
                          f"e.g. {failed[0][0]} (HTTP {failed[0][1]})")
    elif files:
        FileSystems.delete(files)
    return len(files)


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file's raw bytes, read in blocks."""
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_if_exists(path: str) -> str | None:
    """Hex SHA-256 of a file, or None when there is no such file (for checking completion markers)."""
    return sha256_of(path) if exists(path) else None


def open_binary(path: str) -> IO[bytes]:
    """A binary stream; ``.gz`` and ``.bz2`` files are decompressed by their extension."""
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if path.endswith(".bz2"):
        return bz2.BZ2File(raw, mode="rb")
    return raw


def open_text(path: str, encoding: str = "utf-8", errors: str = "strict") -> IO[str]:
    """A text stream (newlines untranslated, as the csv module wants) of a possibly compressed file;
    ``errors`` is the codec error handler, as for ``open``."""
    return io.TextIOWrapper(open_binary(path), encoding=encoding, errors=errors, newline="")


def first_existing(base: str, *names: str) -> str | None:
    """The first of ``base/name`` that exists, e.g. to accept ``x.csv`` and ``x.csv.gz``."""
    for name in names:
        path = join(base, name)
        if exists(path):
            return path
    return None


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def relative(path: str, root: str) -> str:
    root = root.rstrip("/") + "/"
    return path[len(root):] if path.startswith(root) else path


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def map_large_allocations(threshold: int = 1 << 20, keep_free: int = 64 << 20) -> bool:
    """Have glibc serve every allocation of ``threshold`` bytes or more with its own mmap.

    By default glibc raises that threshold after the first large free (up to 32 MiB), so the big
    buffers that follow (decoded images, a local runner's encoded PCollections) come from the heap,
    and their pages stay resident after they are freed: RSS creeps up with the corpus. A fixed
    threshold hands each such buffer back to the OS when it is freed. Fixing it also fixes the heap
    trim threshold, which would then return every 128 KiB freed at the heap's top and cost ~15% of
    the image stage's time in page faults, so up to ``keep_free`` bytes stay for reuse. Returns
    False (and changes nothing) where libc is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_TRIM_THRESHOLD, keep_free)) and bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
