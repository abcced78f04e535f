"""Builds for the tests: a synthetic corpus built by the real pipeline (for the tests of what comes
after the build), and a build run as a child process to be killed midway (for the resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.beam.image_stage import WORK_DIR
from pipelines.synth.demo import synthetic_build as build_into

VQA_DATASETS = ("mimic_cxr_vqa", "mimic_diff_vqa")
"""The optional sources whose questions replace generated VQA where present: left out by the tests of
the generated questions (the tests of the native ones build with them)."""


def synthetic_build(tmp_path_factory, studies: int, seed: int, without: tuple[str, ...] = ()) -> Path:
    """``cxr-instruct synth`` + ``cxr-instruct build`` (the sources in ``without`` disabled) into fresh
    temporary folders; the output folder."""
    return build_into(tmp_path_factory.mktemp("corpus"), tmp_path_factory.mktemp("out"), studies, seed, without)


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
            pytest.fail(
                f"build ended before {waiting_for} (rc {child.returncode}): {child.stderr.read().decode()[-2000:]}"
            )
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"no {waiting_for} in time")
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
