"""Builds for the tests: the synthetic corpora built by the real pipeline (for the tests of what comes
after the build), the session's shared builds and the guard that keeps them unchanged, and a build run
as a child process to be killed midway (for the resume tests)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pipelines.beam.build import run_build
from pipelines.output.paths import WORK_DIR
from pipelines.synth import generate
from pipelines.synth.demo import synthetic_build as build_into
from schemas.config import load_config

VQA_DATASETS = ("mimic_cxr_vqa", "mimic_diff_vqa")
"""The optional sources whose questions replace generated VQA where present: left out by the tests of
the generated questions (the tests of the native ones build with them)."""


@dataclass(frozen=True)
class SynthArgs:
    """The ``cxr-instruct synth`` arguments of a shared corpus."""

    studies: int
    seed: int


CLEAN = SynthArgs(studies=7, seed=0)
"""The clean corpus shared by the tests that read a build (``clean_build``): seed 0 has patients with
consecutive FINDINGS-bearing studies, and 7 studies plant every kind of report PHI."""
FAULTED = SynthArgs(studies=8, seed=0)
"""The corpus with one planted bad input of every kind (``synth --faults``), shared as ``faulted_build``."""
TINY_SHARDS = {"images": 2, "annotations": 3, "instructions": 4, "rejects": 2}
"""Rows per shard of the faulted build: many shards, some hash buckets left empty."""


def synthetic_build(tmp_path_factory, studies: int, seed: int, without: tuple[str, ...] = ()) -> Path:
    """``cxr-instruct synth`` + ``cxr-instruct build`` (the sources in ``without`` disabled) into fresh
    temporary folders; the output folder."""
    return build_into(tmp_path_factory.mktemp("corpus"), tmp_path_factory.mktemp("out"), studies, seed, without)


def tiny_shard_build(root: Path, model: Path) -> tuple[Path, Path]:
    """The faulted corpus generated into ``root/corpus`` and built into ``root/out`` with tiny shards and
    the VQGAN tokenizer at ``model``; the corpus and the output folder. The build's config lies beside the
    corpus (``root/build.yaml``, absolute source roots), so the corpus holds exactly what ``synth`` wrote."""
    corpus = generate(root / "corpus", FAULTED.studies, FAULTED.seed, faults=True)
    config = yaml.safe_load((corpus / "build.yaml").read_text())
    for entry in config["sources"].values():
        entry["root"] = str((corpus / entry["root"]).resolve())
    config["rows_per_shard"] = TINY_SHARDS
    config["tokenizer"] = {"model": str(model), "batch_size": 4}
    (root / "build.yaml").write_text(yaml.safe_dump(config))
    run_build(load_config(root / "build.yaml"), str(root / "out"))
    return corpus, root / "out"


def writable_copy(source: Path, target: Path) -> Path:
    """A copy of ``source`` at ``target`` that the test may change (a shared build is read-only, and
    ``copytree`` would copy its modes); ``target``."""
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return target


def _state(roots: Iterable[Path]) -> dict[str, tuple[int, int, int]]:
    """Every file and folder under ``roots`` -> (mode, size, mtime) of the file, (mode, 0, 0) of a folder
    (a folder's time changes when a lock comes and goes; what it holds is listed)."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            info = path.lstat()
            kept = (info.st_size, info.st_mtime_ns) if not stat.S_ISDIR(info.st_mode) else (0, 0)
            state[str(path)] = (info.st_mode, *kept)
    return state


def _set_writable(roots: Iterable[Path], writable: bool) -> None:
    for root in roots:
        for path in [root, *root.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@dataclass
class SharedBuild:
    """A corpus and its build output made once per session and shared by every test that only reads
    them. Both are read-only while shared (``chmod a-w``; the tests run as root, who writes anyway, so
    each test that used one is also checked against the state taken when it was frozen): a test that
    needs to change one takes a :func:`writable_copy`."""

    corpus: Path
    out: Path
    _frozen: dict[str, tuple[int, int, int]] = field(default_factory=dict, repr=False)

    def freeze(self) -> None:
        _set_writable((self.corpus, self.out), writable=False)
        self._frozen = _state((self.corpus, self.out))

    def thaw(self) -> None:
        _set_writable((self.corpus, self.out), writable=True)

    def changes(self) -> list[str]:
        """What differs from the frozen state: paths added, removed or written."""
        now = _state((self.corpus, self.out))
        return sorted(path for path in now.keys() | self._frozen.keys() if now.get(path) != self._frozen.get(path))


def completion_markers(out: Path) -> list[Path]:
    """The completion markers of the finished images shards of a build in progress."""
    return sorted((out / WORK_DIR / "images").glob("*.json"))


def kill_build_when(
    config_path: Path, out: Path, ready: Callable[[], bool], waiting_for: str, timeout_s: float = 300
) -> None:
    """Run ``cxr-instruct build`` in a child process and SIGKILL it as soon as ``ready()`` holds."""
    child = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "build", "--config", str(config_path), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout_s
    while not ready():
        if child.poll() is not None:
            said = child.stderr.read().decode() if child.stderr else ""
            pytest.fail(f"build ended before {waiting_for} (rc {child.returncode}): {said[-2000:]}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"no {waiting_for} in time")
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
