"""File access through Beam ``FileSystems`` so every path may be local or ``gs://``.

Readers and stages use these helpers instead of ``open()`` / ``os.walk`` on input paths.

Beam is imported by the helpers that use it, on their first call, not with this module: the readers
and transforms that read through here import without Beam (``transforms/`` never loads it by being
imported; tests/test_layers.py checks).
"""

from __future__ import annotations

import bz2
import ctypes
import functools
import gzip
import hashlib
import io
import logging
import os
import posixpath
import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, NamedTuple, cast

if TYPE_CHECKING:
    from apache_beam.io.filesystem import FileMetadata

log = logging.getLogger(__name__)


def _filesystems():
    """Beam's ``FileSystems`` (imported here, on first use: see the module docstring)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _open_uncompressed(path: str) -> IO[bytes]:
    """``FileSystems.open`` of a file's raw bytes, never decompressed."""
    from apache_beam.io.filesystem import CompressionTypes

    return _filesystems().open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _matcher(pattern: str):
    """The ``match`` of the regular expression Beam translates a glob pattern into."""
    from apache_beam.io.filesystem import FileSystem

    return re.compile(FileSystem.translate_pattern(pattern)).match


def join(base: str, *parts: str) -> str:
    return _filesystems().join(base, *parts)


def exists(path: str) -> bool:
    return _filesystems().exists(path)


class Unlisted(NamedTuple):
    """Something a local listing found but could not list: a folder it could not enter
    (``unreadable-folder``) or a link whose target is missing (``broken-link``); ``detail`` says why."""

    path: str
    reason: str
    detail: str


class ListingError(OSError):
    """A listing met a folder it could not enter or a broken link, and its caller asked for no report."""


def match(pattern: str, limit: int | None = None, problems: list[Unlisted] | None = None) -> list[FileMetadata]:
    """Path, size and modification time of the files matching a glob pattern, in Beam's syntax
    (``*`` and ``?`` stay inside one path part, ``**`` crosses them, ``[...]`` a character class);
    at most ``limit`` of them. A pattern without wildcards matches the file of that name, never a folder.

    On an object store this is Beam's listing of the pattern's literal prefix. Locally Beam walks and
    stats the whole folder above the prefix for every pattern, so prefix shards of one folder would
    each stat all of it; here only the folders that can hold a match are walked and only matching
    files are stat'ed.

    Locally, unlike Beam, links to folders are followed (a tree of links to study folders is read like
    the tree they point into); a folder reached a second time (a link cycle, or two links to one
    folder) is listed once, at the first path reached in sorted order, with a warning naming both.
    Nothing under the walked folders is left out silently: a folder that cannot be entered (no
    permission) and a link whose target is missing are each an :class:`Unlisted`, appended to
    ``problems`` when it is given; without it the first of them raises :class:`ListingError`. A
    folder that does not exist (the top, or one removed during the walk) is simply empty."""
    from apache_beam.io.filesystem import FileMetadata

    if is_object_store(pattern):
        return _filesystems().match([pattern], [limit] if limit is not None else None)[0].metadata_list
    prefix = re.split(r"[\[*?]", pattern, maxsplit=1)[0]  # the part before the first wildcard
    if prefix == pattern:
        return (
            [FileMetadata(pattern, os.path.getsize(pattern), os.path.getmtime(pattern))]
            if os.path.isfile(pattern)
            else []
        )
    matches = _matcher(pattern)

    def report(problem: Unlisted) -> None:
        if problems is None:
            raise ListingError(f"{problem.path}: {problem.reason}: {problem.detail}")
        problems.append(problem)

    found = []
    for folder, names in _walk(os.path.dirname(prefix) or ".", _folder_filter(pattern, prefix), report):
        for name in names:
            path = os.path.join(folder, name)
            if path.startswith(prefix) and matches(path):
                try:
                    found.append(FileMetadata(path, os.path.getsize(path), os.path.getmtime(path)))
                except FileNotFoundError:
                    if not os.path.lexists(path):
                        continue  # removed since it was listed
                    report(Unlisted(path, "broken-link", f"a link to {os.readlink(path)}, which does not exist"))
                    continue
                if limit is not None and len(found) >= limit:
                    return found
    return found


def _parts(pattern: str) -> list[str]:
    """A glob pattern split at each ``/`` outside a ``[...]`` character class."""
    parts, current, in_class = [], "", False
    for char in pattern:
        if char == "/" and not in_class:
            parts.append(current)
            current = ""
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        current += char
    return [*parts, current]


def _may_cross(part: str) -> bool:
    """Whether a pattern part may cross folders, as Beam translates it: ``**``, ``?`` (any character) or
    a ``[...]`` class that can match ``/`` (``[!a]`` can, ``[!a/]`` cannot)."""
    classes = re.findall(r"\[(!?)([^]]*)\]", part)
    return "**" in part or "?" in part or any((negated == "!") == ("/" not in members) for negated, members in classes)


def _folder_filter(pattern: str, prefix: str):
    """Whether a folder (its path) can hold a file matching ``pattern``: it starts like the pattern's
    literal ``prefix``, and each of its path parts matches the pattern's part at that depth, up to the
    first part holding ``**`` (which may cross folders). So a walk enters, and reports the problems of,
    only the folders its pattern can reach (prefix shards of one tree each report their own)."""
    *complete, last = _parts(pattern)
    checks, unbounded = [], _may_cross(last)
    for part in complete:
        if _may_cross(part):
            unbounded = True
            break
        checks.append(_matcher(part))

    def may_hold(folder: str) -> bool:
        if not _may_hold(folder + os.sep, prefix):
            return False
        if folder.startswith("./") and not pattern.startswith("./"):
            return True  # a relative pattern without a folder in front, walked from "."
        names = folder.split("/")
        if len(names) > len(checks) and not unbounded:
            return False
        return all(check(name) for check, name in zip(checks, names))

    return may_hold


def _walk(top: str, may_hold, report) -> Iterator[tuple[str, list[str]]]:
    """``(folder, names of what is not a folder in it)`` for ``top`` and the folders below it for which
    ``may_hold`` is true, top-down, subfolders in name order, links to folders followed
    (each folder once: by device and inode). What cannot be entered goes to ``report``."""
    seen: dict[tuple[int, int], str] = {}
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            status = os.stat(folder)
            with os.scandir(folder) as found:
                entries = list(found)
        except (FileNotFoundError, NotADirectoryError):  # no such folder (the top may name a file): empty
            continue
        except OSError as error:
            report(Unlisted(folder, "unreadable-folder", f"cannot be listed: {error.strerror or error}"))
            continue
        identity = (status.st_dev, status.st_ino)
        if identity in seen:
            log.warning(
                "listing: %s is the folder %s again (through a link); listed once, as %s",
                folder,
                seen[identity],
                seen[identity],
            )
            continue
        seen[identity] = folder
        names, subfolders = [], []
        for entry in entries:
            try:
                is_folder = entry.is_dir()  # follows links
            except OSError:
                is_folder = False
            if is_folder:
                if may_hold(entry.path):
                    subfolders.append(entry.path)
            else:
                names.append(entry.name)
        yield folder, names
        stack.extend(sorted(subfolders, reverse=True))


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
    with _open_uncompressed(path) as f:
        return f.read()


def read_image_bytes(path: str) -> bytes:
    """The bytes of an image file, a ``.gz`` one decompressed (MIMIC-CXR's older ``<dicom_id>.dcm.gz``);
    any other file raw, as :func:`read_bytes`. A ``.gz`` file that is not gzip raises ``OSError``
    (``gzip.BadGzipFile``), which the image stage turns into the image's reject."""
    data = read_bytes(path)
    return gzip.decompress(data) if path.endswith(".gz") else data


def is_object_store(path: str) -> bool:
    """True for ``gs://`` (and other non-local schemes): no directories, listing is by prefix."""
    return "://" in path


@functools.cache
def _gcs():
    """One GCS client per process (building one costs an authentication round trip)."""
    from apache_beam.io.gcp import gcsio

    return gcsio.GcsIO()


def _open_raw(path: str, read_buffer: int) -> IO[bytes]:
    """A file's raw bytes as a seekable stream; on ``gs://`` each read past the buffer is one ranged GET
    of what was asked plus ``read_buffer`` (Beam opens objects with a 16 MiB buffer)."""
    if path.startswith("gs://"):
        return _gcs().open(path, read_buffer_size=read_buffer)
    return _open_uncompressed(path)


def read_head(path: str, length: int) -> bytes:
    """The first ``length`` bytes of a file (all of it when shorter), without fetching the rest: on
    ``gs://`` one ranged GET of that size (through ``FileSystems.open`` a DICOM header costs the whole file)."""
    with _open_raw(path, length) as handle:
        return handle.read(length)


RANDOM_READ_BUFFER = 1 << 20


def open_file(path: str) -> IO[bytes]:
    """A seekable binary stream of a file's raw bytes, never decompressed, for random access (what
    pyarrow reads Parquet from: ``pq.ParquetFile(handle)``); close it when done.

    On ``gs://`` the read buffer is ``RANDOM_READ_BUFFER`` (Beam's 16 MiB would fetch 16 MiB for every
    few-KB Parquet footer or column chunk)."""
    return _open_raw(path, RANDOM_READ_BUFFER)


def read_text(path: str, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def size_of(path: str) -> int:
    """A file's size in bytes (one metadata request on an object store)."""
    return _filesystems().match([path])[0].metadata_list[0].size_in_bytes


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
            _filesystems().delete([folder])
        return len(files)
    if folder.startswith("gs://"):
        failed = [(path, status) for path, status in _gcs().delete_batch(files) if status is not None]
        if failed:
            raise OSError(
                f"could not delete {len(failed)} of {len(files)} objects under {folder}, "
                f"e.g. {failed[0][0]} (HTTP {failed[0][1]})"
            )
    elif files:
        _filesystems().delete(files)
    return len(files)


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file's raw bytes, read in blocks."""
    digest = hashlib.sha256()
    with _open_uncompressed(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_if_exists(path: str) -> str | None:
    """Hex SHA-256 of a file, or None when there is no such file (for checking completion markers)."""
    return sha256_of(path) if exists(path) else None


def open_binary(path: str) -> IO[bytes]:
    """A binary stream; ``.gz`` and ``.bz2`` files are decompressed by their extension."""
    raw = _open_uncompressed(path)
    if path.endswith(".gz"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))  # a binary stream, typed as a BufferedIOBase
    if path.endswith(".bz2"):
        return bz2.BZ2File(raw, mode="rb")
    return raw


def open_text(path: str, encoding: str = "utf-8", errors: str = "strict") -> IO[str]:
    """A text stream (newlines untranslated, as the csv module wants) of a possibly compressed file;
    ``errors`` is the codec error handler, as for ``open``."""
    return io.TextIOWrapper(open_binary(path), encoding=encoding, errors=errors, newline="")


class AmbiguousInputError(ValueError):
    """Both ``x.csv`` and ``x.csv.gz`` exist: which one holds the data is not for the build to guess."""


def csv_file(folder: str, stem: str) -> str | None:
    """``folder/stem.csv`` or ``folder/stem.csv.gz``, whichever exists; None when neither does.

    When both exist one of them is most likely a partial copy (an interrupted download or
    decompression), and reading either could lose rows without a trace, so this refuses:
    :class:`AmbiguousInputError` naming both (after a warning naming both), before anything is read.
    Every reader finds its CSVs through here, so the rule is the same for all of them."""
    plain, packed = join(folder, f"{stem}.csv"), join(folder, f"{stem}.csv.gz")
    found = [path for path in (plain, packed) if exists(path)]
    if len(found) == 2:
        log.warning("both %s and %s exist; one is probably partial", plain, packed)
        raise AmbiguousInputError(
            f"{plain} and {packed} both exist; keep the complete one and remove the other "
            "(one of them is probably a partial copy)"
        )
    return found[0] if found else None


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def relative(path: str, root: str) -> str:
    root = root.rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else path


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
