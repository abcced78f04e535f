"""Task generator throughput on one core: instruction rows/s of each generator over the annotation
rows of a build, side by side with the 20,000 rows/s target.

    .venv/bin/python benchmarks/bench_tasks.py [--out BUILD] [--studies 20] [--repeat 20]

Without ``--out`` it writes a synthetic corpus and builds it in a temporary folder first (not
timed). Each generator runs ``--repeat`` times over every annotation row (seed = pass number, so
template and sample choices vary; the report text caches are cleared before each pass); a generator that yields no rows on these sources is reported so.
Rows/s counts instruction rows out; rows/s in counts annotation rows consumed.
To add a generator, append its (profile name, coordinates, task, template set) to ``CASES``. The
study- and patient-level generators (transforms/tasks/multi.py) are not in it: they run once per
study or patient, not per row.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from transforms.tasks import Profile, TaskSpec, attributes, generator, grounding, report, segmentation, triage

TARGET_ROWS_PER_S = 20_000
CASES: list[tuple[str, str, str, str]] = [
    ("imt-cxr", "bins1000", "lesion_localization", "grounding_imt"),
    ("imt-cxr", "bins1000", segmentation.TASK, "segmentation_imt"),
    *(("m4cxr", "percent", task, "grounding_m4cxr") for task in grounding.M4CXR_GROUNDING),
    ("imt-cxr", "bins1000", attributes.SEVERITY, "attributes_imt"),
    ("imt-cxr", "bins1000", attributes.LOCATION, "attributes_imt"),
    ("imt-cxr", "bins1000", report.REPORT, "report_imt"),
    ("imt-cxr", "bins1000", report.WITH_ATTRIBUTES, "report_imt"),
    ("m4cxr", "percent", report.COT, "report_cot_m4cxr"),
    ("m4cxr", "percent", triage.TASK, "triage"),
]


def annotation_rows(out: Path) -> list[dict]:
    return [row for path in sorted((out / "annotations").glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def throughput(
    rows: list[dict], profile_name: str, coordinates: str, task: str, template_set: str, repeat: int
) -> tuple[int, float]:
    """(instruction rows made, seconds) for ``repeat`` passes over ``rows``."""
    profile = Profile(name=profile_name, coordinates=coordinates, tasks={task: TaskSpec(template_set=template_set)})
    generate = generator(task)
    for row in rows:  # warm the manifest caches and load the labeller's models (not timed)
        generate(row, profile, 0)
    made = 0
    start = time.perf_counter()
    for seed in range(repeat):
        for cached in report.CACHED:  # each pass starts cold: only a study's shared report is reused
            cached.cache_clear()
        for row in rows:
            made += len(generate(row, profile, seed))
    return made, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out
        if out is None:
            from pipelines.synth.demo import synthetic_build

            out = synthetic_build(Path(tmp) / "corpus", Path(tmp) / "out", args.studies)
        rows = annotation_rows(out)
    print(f"{len(rows)} annotation rows x {args.repeat} passes, one core; target {TARGET_ROWS_PER_S:,} rows/s")
    print(f"{'profile':8} {'task':28} {'rows out':>9} {'rows/s out':>11} {'rows/s in':>10} {'/ target':>9}")
    all_made, all_seconds = 0, 0.0
    for profile_name, coordinates, task, template_set in CASES:
        made, seconds = throughput(rows, profile_name, coordinates, task, template_set, args.repeat)
        all_made, all_seconds = all_made + made, all_seconds + seconds
        consumed = len(rows) * args.repeat / seconds
        if made == 0:
            print(f"{profile_name:8} {task:28} {0:>9} {'-':>11} {consumed:10.0f} {'no rows':>9}")
            continue
        rate = made / seconds
        print(f"{profile_name:8} {task:28} {made:9d} {rate:11.0f} {consumed:10.0f} {rate / TARGET_ROWS_PER_S:8.2f}x")
    rate = all_made / all_seconds
    print(
        f"{'all':8} {'(every generator above)':28} {all_made:9d} {rate:11.0f} {'':>10} {rate / TARGET_ROWS_PER_S:8.2f}x"
    )


if __name__ == "__main__":
    main()
