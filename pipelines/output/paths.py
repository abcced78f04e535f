"""The names inside a build's output folder, and the command-line types for the folders the commands
read and write (no Beam at import).

A build's output may be a local folder or a ``gs://`` URI (any ``scheme://`` Beam's FileSystems knows):
:data:`BUILD_OUTPUT` passes a URI on as it is and checks that a local path is an existing folder, with
one ``Error:`` line and exit status 2 otherwise. :data:`LOCAL_FOLDER` is for what only makes sense on
this machine (a preview opened from ``file://``, an export a trainer reads): a URI is refused.
"""

from __future__ import annotations

from pathlib import Path

import click

from transforms import io

WORK_DIR = "_work"
"""A build's internal folder in OUT: images-stage checkpoints and completion markers, task fragments.
Removed once ``manifest.json`` is written; a killed build resumes from it."""


def work_dir(out_dir: str) -> str:
    return io.join(out_dir, WORK_DIR)


def shard_name(split: str, shard: int, num_shards: int) -> str:
    """``train-00003-of-00010``: a shard's file name without ``.parquet``, the same in every table."""
    return f"{split}-{shard:05d}-of-{num_shards:05d}"


def split_of(shard: str | Path) -> str:
    """``.../train-00000-of-00002.parquet`` -> ``train``."""
    return io.basename(str(shard)).rsplit("-", 3)[0]


class PathError(click.ClickException):
    """A bad folder argument: one ``Error:`` line (no usage text) and exit status 2, as for a usage error."""

    exit_code = 2


def is_uri(value: str) -> bool:
    """``gs://bucket/out`` and the like: no local existence check is possible (or needed) for it."""
    return "://" in value


class BuildOutput(click.ParamType):
    """A build's output folder: a ``gs://`` URI as given, or a local folder that exists (as a str)."""

    name = "OUT"

    def convert(self, value, param, ctx) -> str:
        value = str(value)
        if is_uri(value):
            return value.rstrip("/")
        path = Path(value)
        if not path.exists():
            raise PathError(f"{value}: no such folder (OUT is a build's output: a local folder or gs:// URI)")
        if not path.is_dir():
            raise PathError(f"{value}: is a file, not a build's output folder")
        return value


class LocalFolder(click.ParamType):
    """A local folder to write into (created when missing); a URI is refused."""

    name = "DIR"

    def convert(self, value, param, ctx) -> Path:
        value = str(value)
        flag = f"{param.opts[0]} " if param is not None and param.opts else ""
        if is_uri(value):
            raise PathError(f"{flag}{value}: must be a local folder, not a URI")
        path = Path(value)
        if path.exists() and not path.is_dir():
            raise PathError(f"{flag}{value}: is a file, not a folder")
        return path


BUILD_OUTPUT = BuildOutput()
LOCAL_FOLDER = LocalFolder()
