"""``cxr-instruct publish OUT --repo user/name``: push a verified build, or a recipe, to the Hugging Face Hub.

Private by default. A public push is refused while any source that contributed rows (or rejects)
has an access class that forbids public release (``manifests/sources.yaml``), unless the user names
each such source's licence id with ``--accept-licence``. The output is verified against its manifest
and must carry its dataset card before anything is sent. The token comes from ``HF_TOKEN`` or the
standard token file (``huggingface_hub.get_token``) and is never printed.

What is sent is decided by one rule, :data:`IGNORE_PATTERNS` (:data:`INTERNAL_FILES` by kind: hidden
files, the build's ``_work/``, tokenize completion markers, ``*.partial`` writes, the local run record
``run.json``, lock files and caches), applied the way ``upload_folder`` applies it (``huggingface_hub``'s own
``filter_repo_objects``, with its default patterns): :func:`upload_plan` lists the files a dry run
shows and the real upload passes the same patterns to ``upload_folder``, so both send the same files.

A recipe folder (``cxr-instruct recipe``: ``recipe.json`` and no ``manifest.json``) holds nothing
derived from protected content, so it may go public without accepting any licence; instead its own
guard (pipelines/tools/recipe.py ``recipe_problems``) checks every file to be sent before any request: only
a recipe's files, each the one recipe.json lists, recipe.json of the allowlisted schema (every key
from a known vocabulary, every value of a known type and shape), hash, id and sealed lines of their
exact format, and the card the recipe makes. A recipe that
somehow holds more is refused (:class:`LicenceError`).

OUT may be a ``gs://`` URI: it is verified and listed through :mod:`transforms.io` (Beam's FileSystems)
where it is, and for a real upload the planned files are copied into a local staging folder (a
temporary one unless ``staging`` is given; ``upload_folder`` reads local files), which is uploaded
with the same patterns and then removed.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects

from pipelines.output.manifest import Manifest
from pipelines.tools.card import contributing_sources, load_sources
from pipelines.tools.recipe import RECIPE_FILE, recipe_problems
from pipelines.tools.verify import verify
from transforms import io

INTERNAL_FILES = {  # kind -> fnmatch patterns on paths relative to OUT ("*" spans "/")
    "hidden files and folders": [".*", "*/.*"],
    "build work files (_work/)": ["_work/*", "*/_work/*"],
    "tokenize completion markers (vq/_complete/)": ["_complete/*", "*/_complete/*"],
    "partial writes (*.partial, *.tmp)": ["*.partial", "*.tmp"],
    "the local run record (local paths and times)": ["run.json"],
    "lock files (*.lock)": ["*.lock", "*.lck"],
    "caches": ["__pycache__/*", "*/__pycache__/*", "*.pyc", "cache-*.arrow", "*/cache-*.arrow"],
}
"""Files of an output folder that stay local: internal to the build, never part of the dataset."""
IGNORE_PATTERNS = [pattern for patterns in INTERNAL_FILES.values() for pattern in patterns]


class LicenceError(RuntimeError):
    """A public push of rows whose licences forbid it, without the licences being accepted."""


class PublishError(RuntimeError):
    """The output is not fit to publish, or the Hub repository is not in the expected state."""


@dataclass(frozen=True)
class PlannedFile:
    path: str  # relative to the output folder, as in the repository
    bytes: int


@dataclass(frozen=True)
class UploadPlan:
    files: list[PlannedFile]  # what is sent, sorted by path
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (path, kind) of what stays local

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    plan: UploadPlan
    private: bool
    dry_run: bool
    commit_url: str | None = None

    @property
    def files(self) -> list[str]:
        return self.plan.paths


def restricted_sources(manifest: dict, sources: dict) -> dict[str, dict]:
    """Contributing sources whose access class does not allow a public release, by source name."""
    classes = sources["access_classes"]
    found = {}
    for name in contributing_sources(manifest):
        if name not in sources["sources"]:
            raise LicenceError(f"source {name!r} has no entry in manifests/sources.yaml: cannot judge its licence")
        entry = sources["sources"][name]
        if not classes[entry["access"]]["public_ok"]:
            found[name] = entry
    return found


def licence_guard(manifest: dict, sources: dict, public: bool, accepted: tuple[str, ...] = ()) -> None:
    """Raise unless the push is private, or every restricting licence is named in ``accepted``."""
    known = {entry["licence_id"] for entry in sources["sources"].values()}
    unknown = sorted(set(accepted) - known)
    if unknown:
        raise LicenceError(
            f"--accept-licence {', '.join(unknown)}: not a licence id of manifests/sources.yaml "
            f"(known: {', '.join(sorted(known))})"
        )
    if not public:
        return
    blocking = {
        name: entry
        for name, entry in restricted_sources(manifest, sources).items()
        if entry["licence_id"] not in accepted
    }
    if blocking:
        lines = [
            f"  {entry['name']} ({entry['access']}): {entry['licence']} -> --accept-licence {entry['licence_id']}"
            for entry in blocking.values()
        ]
        raise LicenceError(
            "refusing a public push: rows derive from sources whose terms forbid public release:\n"
            + "\n".join(lines)
            + "\nPush privately (the default), or pass --accept-licence for each licence you accept."
        )


def ignore_patterns() -> list[str]:
    """What ``upload_folder`` is given (a fresh list: it appends its own defaults to the one it gets)."""
    return list(IGNORE_PATTERNS)


def internal_kind(path: str) -> str | None:
    """The kind of internal file ``path`` (relative, posix) is, or None when it is part of the dataset."""
    for kind, patterns in {**INTERNAL_FILES, "huggingface_hub defaults": DEFAULT_IGNORE_PATTERNS}.items():
        if not list(filter_repo_objects([path], ignore_patterns=patterns)):
            return kind
    return None


def upload_plan(out_dir: str | Path) -> UploadPlan:
    """The files ``upload_folder`` sends with :func:`ignore_patterns` (listed and filtered as it does),
    with their sizes, and the internal files it leaves out."""
    found = io.sizes_under(str(out_dir))
    sent = set(filter_repo_objects(found, ignore_patterns=ignore_patterns() + DEFAULT_IGNORE_PATTERNS))
    return UploadPlan(
        files=[PlannedFile(path, found[path]) for path in sorted(sent)],
        excluded=[(path, internal_kind(path) or "?") for path in sorted(set(found) - sent)],
    )


def stage(out_dir: str, plan: UploadPlan, folder: Path) -> None:
    """Copy the planned files of ``out_dir`` (e.g. ``gs://``) into the local ``folder``, same layout."""
    for planned in plan.files:
        target = folder / planned.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with io.open_file(io.join(out_dir, planned.path)) as source, open(target, "wb") as copy:
            shutil.copyfileobj(source, copy, 1 << 24)


def human_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units; bytes below 1 KiB as ``512 B``)."""
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


def plan_lines(plan: UploadPlan) -> list[str]:
    """The dry run's listing: one line per file (human-readable size, bytes, path), the total, and
    the internal files left out, counted by kind."""
    width = max((len(str(f.bytes)) for f in plan.files), default=1)
    lines = [f"  {human_size(f.bytes):>10}  {f.bytes:>{width}}  {f.path}" for f in plan.files]
    lines.append(f"total: {len(plan.files)} files, {human_size(plan.total_bytes)} ({plan.total_bytes} bytes)")
    if plan.excluded:
        kinds: dict[str, int] = {}
        for _, kind in plan.excluded:
            kinds[kind] = kinds.get(kind, 0) + 1
        lines.append(
            f"left out: {len(plan.excluded)} internal files ("
            + ", ".join(f"{kind}: {n}" for kind, n in sorted(kinds.items()))
            + ")"
        )
    return lines


def require_token() -> str:
    token = get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    return token


def publish(
    out_dir: str | Path,
    repo_id: str,
    *,
    public: bool = False,
    accepted: tuple[str, ...] = (),
    dry_run: bool = False,
    api: HfApi | None = None,
    staging: str | Path | None = None,
) -> PublishResult:
    """Verify, guard the licences, then create the dataset repo (if needed) and upload the folder.

    With ``dry_run`` nothing leaves the machine: the result's plan lists the files that would be sent
    (with sizes) and the internal files that stay local. An object-store ``out_dir`` (``gs://``) is
    uploaded from a local copy of the planned files in a temporary folder inside ``staging`` (default:
    the system's temporary folder), removed afterwards.
    """
    out = str(out_dir)
    if is_recipe(out):
        plan = upload_plan(out)
        problems = recipe_problems(out, plan.paths)
        if problems:
            raise LicenceError(
                f"refusing to publish {out}: it holds what a public recipe may not:\n  " + "\n  ".join(problems)
            )
        return _push(out, repo_id, plan, public, dry_run, api, staging, "cxr-instruct recipe")
    problems = verify(out)
    if problems:
        raise PublishError(f"{out} does not verify against its manifest:\n  " + "\n  ".join(problems))
    readme = io.join(out, "README.md")
    if not io.exists(readme):
        raise PublishError(f"{readme} is missing: write the dataset card with `cxr-instruct card {out}`")
    licence_guard(Manifest.read(out), load_sources(), public, tuple(accepted))
    return _push(out, repo_id, upload_plan(out), public, dry_run, api, staging, "cxr-instruct build")


def is_recipe(out: str) -> bool:
    """A recipe folder: recipe.json and no build manifest beside it."""
    return io.exists(io.join(out, RECIPE_FILE)) and not io.exists(io.join(out, Manifest.FILE))


def _push(
    out: str,
    repo_id: str,
    plan: UploadPlan,
    public: bool,
    dry_run: bool,
    api: HfApi | None,
    staging: str | Path | None,
    message: str,
) -> PublishResult:
    if dry_run:
        return PublishResult(repo_id=repo_id, plan=plan, private=not public, dry_run=True)
    api = api or HfApi(token=require_token())
    api.create_repo(repo_id, repo_type="dataset", private=not public, exist_ok=True)
    info = api.dataset_info(repo_id)
    if info.private is False and not public:
        raise PublishError(
            f"{repo_id} already exists and is public; a private push was asked for. "
            "Make the repository private first, or choose another name."
        )
    if io.is_object_store(out):
        if staging is not None:
            Path(staging).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="cxr-instruct-publish-", dir=staging) as folder:
            stage(out, plan, Path(folder))
            commit = api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=folder,
                commit_message=message,
                ignore_patterns=ignore_patterns(),
            )
    else:
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=out,
            commit_message=message,
            ignore_patterns=ignore_patterns(),
        )
    return PublishResult(
        repo_id=repo_id, plan=plan, private=bool(info.private), dry_run=False, commit_url=commit.commit_url
    )
