"""``cxr-instruct publish OUT --repo user/name``: push a verified build to the Hugging Face Hub.

Private by default. A public push is refused while any source that contributed rows (or rejects)
has an access class that forbids public release (``manifests/sources.yaml``), unless the user names
each such source's licence id with ``--accept-licence``. The output is verified against its manifest
and must carry its dataset card before anything is sent. The token comes from ``HF_TOKEN`` or the
standard token file (``huggingface_hub.get_token``) and is never printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, get_token

from pipelines.card import contributing_sources, load_sources
from pipelines.manifest import Manifest
from pipelines.verify import verify

IGNORE_PATTERNS = [".*", "*/.*"]  # hidden files and folders stay local (fnmatch: "*" spans "/")


class LicenceError(RuntimeError):
    """A public push of rows whose licences forbid it, without the licences being accepted."""


class PublishError(RuntimeError):
    """The output is not fit to publish, or the Hub repository is not in the expected state."""


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    files: list[str]
    private: bool
    dry_run: bool
    commit_url: str | None = None


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
        raise LicenceError(f"--accept-licence {', '.join(unknown)}: not a licence id of manifests/sources.yaml "
                           f"(known: {', '.join(sorted(known))})")
    if not public:
        return
    blocking = {name: entry for name, entry in restricted_sources(manifest, sources).items()
                if entry["licence_id"] not in accepted}
    if blocking:
        lines = [f"  {entry['name']} ({entry['access']}): {entry['licence']} -> --accept-licence {entry['licence_id']}"
                 for entry in blocking.values()]
        raise LicenceError("refusing a public push: rows derive from sources whose terms forbid public release:\n"
                           + "\n".join(lines)
                           + "\nPush privately (the default), or pass --accept-licence for each licence you accept.")


def upload_plan(out_dir: Path) -> list[str]:
    """Files that ``upload_folder`` will send: every file under the output except hidden ones."""
    return sorted(path.relative_to(out_dir).as_posix() for path in out_dir.rglob("*")
                  if path.is_file() and not any(part.startswith(".") for part in path.relative_to(out_dir).parts))


def require_token() -> str:
    token = get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    return token


def publish(out_dir: str | Path, repo_id: str, *, public: bool = False, accepted: tuple[str, ...] = (),
            dry_run: bool = False, api: HfApi | None = None) -> PublishResult:
    """Verify, guard the licences, then create the dataset repo (if needed) and upload the folder.

    With ``dry_run`` nothing leaves the machine: the result lists the files that would be sent.
    """
    out = Path(out_dir)
    problems = verify(out)
    if problems:
        raise PublishError(f"{out} does not verify against its manifest:\n  " + "\n  ".join(problems))
    if not (out / "README.md").is_file():
        raise PublishError(f"{out / 'README.md'} is missing: write the dataset card with `cxr-instruct card {out}`")
    licence_guard(Manifest.read(str(out)), load_sources(), public, tuple(accepted))
    files = upload_plan(out)
    if dry_run:
        return PublishResult(repo_id=repo_id, files=files, private=not public, dry_run=True)
    api = api or HfApi(token=require_token())
    api.create_repo(repo_id, repo_type="dataset", private=not public, exist_ok=True)
    info = api.dataset_info(repo_id)
    if info.private is False and not public:
        raise PublishError(f"{repo_id} already exists and is public; a private push was asked for. "
                           "Make the repository private first, or choose another name.")
    commit = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(out),
                               commit_message="cxr-instruct build", ignore_patterns=IGNORE_PATTERNS)
    return PublishResult(repo_id=repo_id, files=files, private=bool(info.private), dry_run=False,
                         commit_url=commit.commit_url)
