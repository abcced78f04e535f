"""Memory bound and worker scaling of the whole build, measured side by side in one run.

    .venv/bin/python benchmarks/bench_scale.py [--studies 40] [--factor 10] [--workdir DIR]

Writes two synthetic corpora, 1x (``--studies``) and ``--factor``x, then runs ``cxr-instruct build``
as a child process (FnApiRunner):

1. peak RSS of the whole run, 1x vs 10x corpus, in one process (FnApiRunner in-memory: all stages
   in the launcher; peak from the kernel's ``ru_maxrss`` of the child, and the sampled total over
   its process tree); target: 10x <= 1.2x the peak of 1x;
2. wall time per image on the 10x corpus with 1 and 2 worker processes (FnApiRunner
   multi_processing, ``--direct_num_workers`` 1 and 2: like for like), and of the in-process run
   beside them; target: >= 1.7x speed-up with 2 workers.

Both corpora are built with ``rows_per_shard.images`` = ``--images-per-shard`` (default 64): the
per-image stages run one images shard per element, so the shard count is the parallelism a runner
can use (1M images at the default 500 give ~2,000 shards; a 2,000-image corpus at 500 would give 5).
Corpus generation is not timed. Linux only (the process-tree sampler reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from pipelines.synth import generate

PAGE = os.sysconf("SC_PAGE_SIZE")
MEMORY_TARGET = 1.2
SPEEDUP_TARGET = 1.7


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (walking /proc/PID/task/TID/children, so a
    sample costs a few reads, not a scan of every process: the sampler must not steal the build's CPU)."""
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    frontier += [int(child) for child in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def timed_build(config: Path, out: Path, workers: int | None) -> dict:
    """One ``cxr-instruct build`` in a child process: wall seconds, peak RSS (kernel and sampled tree).
    ``workers`` None runs every stage in the launcher; a number runs that many worker processes."""
    command = [sys.executable, "-m", "pipelines.cli", "build", "--config", str(config), "--out", str(out)]
    if workers is not None:
        command += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_tree, done = 0, threading.Event()

    def sample():
        nonlocal peak_tree
        while not done.is_set():
            peak_tree = max(peak_tree, tree_rss(child.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"build failed ({child.returncode}): {child.stderr.read().decode()[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    images = sum(
        entry["read"] for name, entry in manifest["counts"].items() if name in ("mimic", "vindr", "siim", "padchest")
    )
    written = sum(manifest["tables"]["images"].values())
    return {
        "wall_s": wall,
        "peak_rss": usage.ru_maxrss * 1024,
        "peak_tree_rss": peak_tree,
        "images": images,
        "written": written,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=40, help="MIMIC studies of the 1x corpus")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--images-per-shard", type=int, default=64, help="rows_per_shard.images of both builds")
    parser.add_argument("--workdir", type=Path, default=None, help="keep corpora and outputs here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    corpora = {}
    for label, studies in (("1x", args.studies), (f"{args.factor}x", args.studies * args.factor)):
        started = time.perf_counter()
        corpus = workdir / f"corpus-{label}"
        if (
            not (corpus / "SYNTHETIC_TRUTH.json").exists()
            or json.loads((corpus / "SYNTHETIC_TRUTH.json").read_text())["studies"] != studies
        ):
            generate(corpus, studies=studies, seed=0)
        config = yaml.safe_load((corpus / "build.yaml").read_text())
        config["rows_per_shard"] = {"images": args.images_per_shard}
        corpora[label] = corpus / "build-bench.yaml"
        corpora[label].write_text(yaml.safe_dump(config))
        print(f"corpus {label}: {studies} studies ready in {time.perf_counter() - started:.0f} s (not timed)")
    big = f"{args.factor}x"
    runs = [("1x", None), (big, None), (big, 1), (big, 2)]
    results = {}
    for label, workers in runs:
        out = workdir / f"out-{label}-w{workers or 0}"
        shutil.rmtree(out, ignore_errors=True)
        results[(label, workers)] = r = timed_build(corpora[label], out, workers)
        mode = "in one process   " if workers is None else f"{workers} worker process{'es' if workers > 1 else '  '}"
        print(
            f"build {label:>4} {mode}: {r['images']:5d} images ({r['written']} written)  "
            f"{r['wall_s']:6.1f} s  {1000 * r['wall_s'] / r['images']:6.1f} ms/image  "
            f"peak RSS {r['peak_rss'] / 2**30:.2f} GiB (process tree {r['peak_tree_rss'] / 2**30:.2f} GiB)"
        )

    small, large = results[("1x", None)], results[(big, None)]
    memory_ratio = large["peak_rss"] / small["peak_rss"]

    def per_image(r: dict) -> float:
        return r["wall_s"] / r["images"]

    speedup = per_image(results[(big, 1)]) / per_image(results[(big, 2)])
    in_process = per_image(large) / per_image(results[(big, 2)])
    print()
    print(
        f"peak RSS {big} / 1x (one process): {memory_ratio:.2f}x for {large['images'] / small['images']:.1f}x the "
        f"images (target <= {MEMORY_TARGET}x): {'met' if memory_ratio <= MEMORY_TARGET else 'NOT met'}"
    )
    print(
        f"speed-up 2 worker processes vs 1 on {big}: {speedup:.2f}x (target >= {SPEEDUP_TARGET}x): "
        f"{'met' if speedup >= SPEEDUP_TARGET else 'NOT met'}  [{os.cpu_count()} CPUs]"
    )
    print(f"  (2 worker processes vs everything in one process: {in_process:.2f}x)")


if __name__ == "__main__":
    main()
