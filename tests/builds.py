"""A synthetic corpus built by the real pipeline, for the tests of what comes after the build."""

from __future__ import annotations

from pathlib import Path

from pipelines.build import run_build
from pipelines.synth import generate
from schemas.config import load_config


def synthetic_build(tmp_path_factory, studies: int, seed: int) -> Path:
    """``cxr-instruct synth`` + ``cxr-instruct build`` into fresh temporary folders; the output folder."""
    corpus = generate(tmp_path_factory.mktemp("corpus"), studies=studies, seed=seed)
    out = tmp_path_factory.mktemp("out")
    run_build(load_config(corpus / "build.yaml"), str(out))
    return out
