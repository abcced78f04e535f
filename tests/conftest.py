"""Test-wide settings. In CI, property tests draw the same examples on every run (derandomized), so
a landing is never decided by a new random draw; locally they explore fresh examples each run. No
test looks for Google credentials. The session's shared builds (a clean and a faulted corpus, each
built once) and the fast tier (`make test-fast`) are defined here."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings
from tiers import is_slow

if TYPE_CHECKING:
    from builds import SharedBuild

settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Nothing in the tests may reach Google: google-auth would otherwise probe the GCE metadata server
# (169.254.169.254) when it looks for credentials (the gs:// tests use a local emulator).
os.environ.setdefault("NO_GCE_CHECK", "true")


@pytest.fixture
def unreadable_folder(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """``unreadable_folder(path)``: from then on, listing ``path`` fails as it does for a folder without
    read permission. The tests run as root, who may list any folder, so the failure is simulated where
    a walk meets it (``os.scandir``)."""
    refused: set[Path] = set()
    scandir = os.scandir

    def guarded(path: str | os.PathLike[str] = ".") -> Iterator[os.DirEntry[str]]:
        if isinstance(path, (str, os.PathLike)) and Path(path) in refused:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)
    return refused.add


# ------------------------------------------------------------------ the session's shared builds
# Each is built once per session, on first use, and is read-only for the tests (see builds.SharedBuild).
# Imported on first use: the fast tier never loads Beam for them.


def _shared(tmp_path_factory, name: str, make: Callable[[Path], tuple[Path, Path]]) -> Iterator[SharedBuild]:
    """``make(root)`` -> (corpus, out) under a fresh folder, frozen while the session shares it."""
    from builds import SharedBuild

    root = tmp_path_factory.mktemp(name)
    build = SharedBuild(*make(root))
    build.freeze()
    try:
        yield build
    finally:
        build.thaw()  # pytest removes old temporary folders later; it may, as any user


@pytest.fixture(scope="session")
def clean_build(tmp_path_factory) -> Iterator[SharedBuild]:
    """The clean synthetic corpus (``builds.CLEAN``) and its build."""
    from builds import CLEAN

    from pipelines.synth.demo import synthetic_build

    def make(root: Path) -> tuple[Path, Path]:
        return root / "corpus", synthetic_build(root / "corpus", root / "out", CLEAN.studies, CLEAN.seed)

    yield from _shared(tmp_path_factory, "clean", make)


@pytest.fixture(scope="session")
def tiny_vqgan(tmp_path_factory) -> Path:
    """A tiny VQGAN model folder (random weights, seed 0)."""
    from transforms import vqgan

    return vqgan.write_tiny_model(tmp_path_factory.mktemp("tiny-vqgan"), seed=0)


@pytest.fixture(scope="session")
def faulted_build(tmp_path_factory, tiny_vqgan) -> Iterator[SharedBuild]:
    """The faulted corpus (``builds.FAULTED``) built with tiny shards and the tokenizer."""
    from builds import tiny_shard_build

    yield from _shared(tmp_path_factory, "faulted", lambda root: tiny_shard_build(root, tiny_vqgan))


SHARED_BUILDS = ("clean_build", "faulted_build")


@pytest.fixture(autouse=True)
def shared_builds_stay_unchanged(request) -> Iterator[None]:
    """A test that used a shared build fails if it changed it (the tests run as root: ``chmod a-w`` alone
    would not stop a write)."""
    used = [request.getfixturevalue(name) for name in SHARED_BUILDS if name in request.fixturenames]
    yield
    for build in used:
        if changed := build.changes():
            build.freeze()  # as it is now: the next test is not blamed for this one's change
            pytest.fail(f"the test changed the shared build under {build.out.parent}: {changed[:5]}", pytrace=False)


# ------------------------------------------------------------------ the fast tier (tests/tiers.py)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
