"""A synthetic corpus built end to end: what ``make demo``, the benchmarks and the tests start from."""

from __future__ import annotations

from pathlib import Path

from pipelines.beam.build import run_build
from pipelines.synth import generate
from schemas.config import load_config


def synthetic_build(
    corpus_dir: Path, out_dir: Path, studies: int, seed: int = 0, without: tuple[str, ...] = ()
) -> Path:
    """``cxr-instruct synth`` into ``corpus_dir`` then ``cxr-instruct build`` into ``out_dir`` (the sources
    in ``without`` disabled); returns ``out_dir``."""
    corpus = generate(corpus_dir, studies=studies, seed=seed)
    config = load_config(corpus / "build.yaml")
    for name in without:
        config.sources[name].enabled = False
    run_build(config, str(out_dir))
    return Path(out_dir)
