"""One writer per output folder: ``OUT/.cxr-instruct.lock`` (JSON) while ``build`` or ``tokenize``
writes into OUT.

The lock file names its holder (host, pid, start time). Taking it is one atomic create that fails
when the file exists: locally ``open(O_CREAT | O_EXCL)``; on ``gs://`` an upload with the generation
precondition ``if_generation_match=0`` (the object must not exist yet), so two launchers racing for
one bucket prefix cannot both win. Other object stores get a best effort through Beam FileSystems
(look, then create): the guarantee there is only as good as the gap between the two.

A lock left by a killed run is stale and taken over with a warning:

- on this host, when the holder's pid is no longer alive;
- from another host, or on an object store (where a pid means nothing to this machine), when it is
  older than :data:`STALE_AFTER_S` (``CXR_INSTRUCT_LOCK_STALE_S`` overrides it, in seconds).

Any other held lock refuses the run with :class:`OutputLocked`, whose message is one line naming the
holder. The lock is re-entrant within one process (``build`` runs ``tokenize`` inside its own lock)
and removed when the run ends, also when it fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime

from apache_beam.io.filesystems import FileSystems

from pipelines.output.paths import work_dir
from transforms import io

FILE = ".cxr-instruct.lock"  # hidden and *.lock: publish never uploads it (pipelines/tools/publish.py)
STALE_AFTER_S = 24 * 3600
"""Age past which a lock another host (or an object store) holds counts as left by a killed run."""

log = logging.getLogger(__name__)
_held: dict[str, list] = {}  # lock path -> [depth, holder document], for this process


class OutputRefused(RuntimeError):
    """The output folder cannot take this run; the message is one line saying why and what to do."""


class OutputLocked(OutputRefused):
    """Another run writes into the output folder; the message is one line naming it."""


class OtherBuildInOutput(OutputRefused):
    """The output folder holds a build of another config (and ``--replace`` was not given)."""


def lock_path(out_dir: str) -> str:
    return io.join(out_dir, FILE)


def stale_after_s() -> float:
    return float(os.environ.get("CXR_INSTRUCT_LOCK_STALE_S", STALE_AFTER_S))


def holder_document(command: str) -> dict:
    now = time.time()
    return {
        "command": command,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_s": now,
        "started": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _create_exclusive(path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; False when it exists."""
    if not io.is_object_store(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True
    if path.startswith("gs://"):
        from google.api_core.exceptions import PreconditionFailed

        bucket, _, name = path[len("gs://") :].partition("/")
        blob = io._gcs().client.bucket(bucket).blob(name)
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=0)
        except PreconditionFailed:
            return False
        return True
    if FileSystems.exists(path):  # best effort: another store, no conditional create
        return False
    with FileSystems.create(path) as handle:
        handle.write(data)
    return True


def _read_holder(path: str) -> dict | None:
    """The lock's holder; {} when the file is unreadable (a lock torn by a kill), None when it is gone."""
    try:
        return json.loads(io.read_bytes(path))
    except (OSError, ValueError):
        return None if not io.exists(path) else {}
    except Exception:
        return None if not io.exists(path) else {}


def is_stale(holder: dict, path: str, now: float | None = None) -> bool:
    """Whether a held lock was left by a run that no longer runs (see the module docstring)."""
    now = time.time() if now is None else now
    if not holder:  # unreadable: it cannot name a live run; the create it came from was killed midway
        return True
    local_host = not io.is_object_store(path) and holder.get("host") == socket.gethostname()
    if local_host and isinstance(holder.get("pid"), int):
        return not pid_alive(holder["pid"])
    return now - float(holder.get("started_s", 0)) > stale_after_s()


def describe(holder: dict) -> str:
    if not holder:
        return "an unreadable lock"
    return (
        f"`{holder.get('command', '?')}` on host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
        f"started {holder.get('started', '?')}"
    )


def acquire(out_dir: str, command: str = "build") -> None:
    """Take the lock on ``out_dir`` or raise :class:`OutputLocked`."""
    path = lock_path(out_dir)
    if path in _held:
        _held[path][0] += 1
        return
    mine = holder_document(command)
    data = json.dumps(mine, indent=2).encode() + b"\n"
    for _ in range(3):  # a stale lock removed by us may be taken by another run in between: look again
        if _create_exclusive(path, data):
            _held[path] = [1, mine]
            return
        holder = _read_holder(path)
        if holder is None:
            continue  # released in between
        if not is_stale(holder, path):
            raise OutputLocked(
                f"{out_dir} is in use by {describe(holder)} (lock {path}); wait for it to "
                f"finish or pick another output folder"
            )
        log.warning("%s: taking over a stale lock of %s (that run is gone)", path, describe(holder))
        with contextlib.suppress(Exception):
            FileSystems.delete([path])
    raise OutputLocked(f"{out_dir}: could not take the lock {path} (other runs keep taking it)")


def release(out_dir: str) -> None:
    path = lock_path(out_dir)
    if path not in _held:
        return
    _held[path][0] -= 1
    if _held[path][0]:
        return
    _, mine = _held.pop(path)
    if _read_holder(path) != mine:  # taken over meanwhile (this run was thought dead): not ours to remove
        log.warning("%s: the lock is no longer this run's; leaving it", path)
        return
    with contextlib.suppress(Exception):
        FileSystems.delete([path])


@contextlib.contextmanager
def locked(out_dir: str, command: str = "build"):
    """Hold the lock on ``out_dir`` for the duration of the block."""
    acquire(out_dir, command)
    try:
        yield
    finally:
        release(out_dir)


# ------------------------------------------------------------------ an older build in the folder


def owned_files(manifest: dict) -> list[str]:
    """The files an earlier build owns, relative to its folder: what its manifest.json lists (shards
    under ``outputs``, other files under ``files``, and each profile's weights.json, which manifests
    written before ``files`` existed did not list)."""
    listed = {entry["path"] for entry in [*manifest.get("outputs", []), *manifest.get("files", [])]}
    listed |= {f"instructions/{profile}/weights.json" for profile in manifest.get("profiles", [])}
    return sorted(listed)


def clear_previous_build(out_dir: str, config_doc: dict, replace: bool = False) -> list[str]:
    """Make room for a build in ``out_dir``; returns the files removed (relative paths).

    - No ``manifest.json``: nothing to do (a killed build's shards and ``_work/`` are resumed from).
    - A ``manifest.json`` of the same config (inputs fixed or changed, another version), or of any
      config with ``replace``: the files it lists are deleted, then ``_work/``, then manifest.json
      itself (last, so a kill midway leaves a manifest that still names what is left to remove).
    - A ``manifest.json`` of another config without ``replace``, or one that cannot be read (what it
      owns is unknown): :class:`OtherBuildInOutput`.

    Nothing else in the folder is touched (the card, preview, run.json and any file of the user's).
    """
    from pipelines.output.manifest import Manifest, ManifestUnreadable, same_config

    path = io.join(out_dir, Manifest.FILE)
    if not io.exists(path):
        return []
    try:
        manifest = Manifest.read(out_dir)
    except ManifestUnreadable as unreadable:
        raise OtherBuildInOutput(
            f"{unreadable}: cannot tell which files the older build in {out_dir} owns; "
            f"pick another output folder or remove that build"
        ) from None
    if not same_config(manifest.get("config"), config_doc) and not replace:
        raise OtherBuildInOutput(
            f"{out_dir} holds a build of another config (its manifest.json): pick another "
            f"output folder, or pass --replace to delete that build's files first"
        )
    removed = []
    for relative in owned_files(manifest):
        target = io.join(out_dir, relative)
        if io.exists(target):
            FileSystems.delete([target])
            removed.append(relative)
    io.remove_tree(work_dir(out_dir))
    FileSystems.delete([path])
    log.info("%s: removed %d files of the earlier build", out_dir, len(removed))
    return removed + [Manifest.FILE]


def remove_orphan_shards(out_dir: str, manifest: dict) -> list[str]:
    """``images/`` shards an earlier, killed run of this build wrote (named by its completion markers in
    ``_work/images/``) that this run's manifest does not list (the shard count changed in between):
    removed, so no ``<split>-*.parquet`` glob loads an image twice. Returns their relative paths."""
    listed = {entry["path"] for entry in manifest["outputs"]}
    removed = []
    for marker in io.glob(io.join(work_dir(out_dir), "images", "*.json")):
        try:
            doc = json.loads(io.read_bytes(marker))
            shard = doc["outputs"][0]["path"] if "outputs" in doc else doc["shard"]["path"]  # 0.1: "shard"
        except (ValueError, KeyError, TypeError, IndexError):
            continue
        if not isinstance(shard, str):
            continue
        if shard not in listed and io.exists(io.join(out_dir, shard)):
            FileSystems.delete([io.join(out_dir, shard)])
            removed.append(shard)
    return sorted(removed)
