"""A synthetic corpus built by the real pipeline, for the tests of what comes after the build."""

from __future__ import annotations

from pathlib import Path

from pipelines.demo import synthetic_build as build_into


def synthetic_build(tmp_path_factory, studies: int, seed: int) -> Path:
    """``cxr-instruct synth`` + ``cxr-instruct build`` into fresh temporary folders; the output folder."""
    return build_into(tmp_path_factory.mktemp("corpus"), tmp_path_factory.mktemp("out"), studies, seed)
