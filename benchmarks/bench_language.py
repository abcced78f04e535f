"""Language-stage throughput on one core: report sections, CheXpert labels, attribute mentions.

Run: ``python benchmarks/bench_language.py`` (set TORCHXRAYVISION_WHEEL to use the even-id IU X-ray
reports; otherwise the MIMIC-style reports of a small synthetic corpus are used). The process is
pinned to one CPU. Prints reports/s for each step, side by side in the same run, each with its ratio
to the 500 reports/s target and to the sectioning step. Mentions
are timed only when ``transforms.phrases.extract_mentions`` exists.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from transforms.labeler import label_report  # noqa: E402
from transforms.reports import sections  # noqa: E402

TARGET = 500.0
REPEATS = 3


def iu_reports(tmp: Path) -> list[str]:
    """Even-id IU reports laid out with section headers (so sectioning has work to do)."""
    import realdata

    reports = realdata.iu_development_reports(tmp)
    return [
        "\n".join(
            f"{name}: {body}"
            for name, body in (
                ("INDICATION", r.indication),
                ("COMPARISON", r.comparison),
                ("FINDINGS", r.findings),
                ("IMPRESSION", r.impression),
            )
            if body
        )
        for r in reports
    ]


def synthetic_reports(tmp: Path) -> list[str]:
    """The MIMIC-style report files of a freshly synthesised corpus."""
    subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "synth", "--out", str(tmp / "corpus"), "--studies", "40"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return [path.read_text() for path in sorted((tmp / "corpus").rglob("s*.txt"))]


def throughput(step: Callable[[str], object], reports: list[str]) -> float:
    """Best of REPEATS passes over all reports, in reports per second (after one warm-up call)."""
    step(reports[0])
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for report in reports:
            step(report)
        best = min(best, time.perf_counter() - start)
    return len(reports) / best


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as tmp:
        use_iu = bool(os.environ.get("TORCHXRAYVISION_WHEEL"))
        reports = iu_reports(Path(tmp)) if use_iu else synthetic_reports(Path(tmp))
    source = "even-id IU X-ray reports" if use_iu else "synthetic MIMIC-style reports"
    steps: dict[str, Callable[[str], object]] = {
        "sections": lambda text: sections(text, tolerant=True),
        "labels (rules)": label_report,
    }
    if importlib.util.find_spec("transforms.phrases") is not None:
        from transforms import phrases

        if hasattr(phrases, "extract_mentions"):
            steps["mentions"] = phrases.extract_mentions
    steps["sections + labels"] = lambda text: label_report(" ".join(sections(text, tolerant=True).values()))
    print(f"{len(reports)} {source}, one core, best of {REPEATS}")
    print(f"{'step':20s} {'reports/s':>10s} {'/ target 500':>13s} {'/ sections':>11s}")
    rates = {name: throughput(step, reports) for name, step in steps.items()}
    for name, rate in rates.items():
        print(f"{name:20s} {rate:10.0f} {rate / TARGET:13.2f} {rate / rates['sections']:11.3f}")


if __name__ == "__main__":
    main()
