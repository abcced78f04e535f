"""Loader throughput on one core: samples/s of the mixture loader with PNG decode, side by side with
the same stream without decode (row lookup only) and with a one-group cache.

    .venv/bin/python benchmarks/bench_loader.py [--out BUILD] [--profile imt-cxr] [--samples 2000]

Without ``--out`` it writes a synthetic corpus (``--studies``, default 20) and builds it in a
temporary folder first (not timed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2

from pipelines.training.loader import MixtureStream


def throughput(out: Path, profile: str, samples: int, **options) -> float:
    """Samples per second over ``samples`` draws (index build excluded)."""
    stream = MixtureStream(out, profile, samples_per_epoch=samples, epochs=1, **options)
    start = time.perf_counter()
    count = sum(1 for _ in stream)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", default="imt-cxr")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--studies", type=int, default=20)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out
        if out is None:
            from pipelines.synth.demo import synthetic_build

            out = synthetic_build(Path(tmp) / "corpus", Path(tmp) / "out", args.studies)
        index_start = time.perf_counter()
        stream = MixtureStream(out, args.profile)
        index_seconds = time.perf_counter() - index_start
        decoded = throughput(out, args.profile, args.samples)
        raw = throughput(out, args.profile, args.samples, decode_images=False)
        one_group = throughput(out, args.profile, args.samples, cache_groups=1)
    print(
        f"profile {args.profile}: {stream.samples_per_epoch} train rows, {len(stream.image_location)} images, "
        f"index built in {index_seconds:.2f} s; {args.samples} samples each, one core"
    )
    print(f"with PNG decode (512x512)     {decoded:9.1f} samples/s")
    print(f"without decode (bytes only)   {raw:9.1f} samples/s   decode costs {raw / decoded:.2f}x")
    print(
        f"decode, 1-row-group cache     {one_group:9.1f} samples/s   ratio to 4-group cache {one_group / decoded:.2f}"
    )


if __name__ == "__main__":
    main()
