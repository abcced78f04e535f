"""Whole files written atomically, locally and on object stores: every file of a build, its manifest,
run record, card, audit, recipe and the tokenizer's files go through :func:`write_atomically`."""

from __future__ import annotations

import contextlib

from apache_beam.io.filesystems import FileSystems


def write_atomically(path: str, write):
    """``write(handle)`` into ``path.partial``, then rename: a killed run never leaves a torn file
    under a final name, and a write that fails (disk full) leaves the file that was there intact (the
    partial file is removed and the error raised). Returns what ``write`` returns.

    Locally the rename replaces the old file in one step. An object store's rename is a copy and a
    delete that will not overwrite, so there the old object is deleted just before: a kill in that gap
    leaves no file under the final name (never a torn one)."""
    partial = path + ".partial"
    try:
        with FileSystems.create(partial) as handle:
            written = write(handle)
    except BaseException:
        with contextlib.suppress(Exception):
            remove_if_exists(partial)
        raise
    if "://" in path and FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([partial], [path])
    return written


def write_bytes_atomically(path: str, data: bytes) -> None:
    """``data`` as the whole of ``path``, through :func:`write_atomically`."""
    write_atomically(path, lambda handle: handle.write(data))


def remove_if_exists(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])
