"""Dataset-card statistics read column-wise against reading the whole tables, side by side.

Run: ``python benchmarks/bench_card_stats.py [--studies N]``. Builds a synthetic corpus (default 40
studies) once, then times, on the same output:

- columns: ``pipelines.tools.card.card_statistics`` (only the columns the card needs, batch by batch);
- whole tables: ``pyarrow.parquet.read_table`` of images, annotations and rejects, image bytes included,
  which is what a card written with ``datasets`` or pandas would load.

Both give the same image count (checked). Prints seconds (best of 5), bytes decoded and the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.beam.build import run_build
from pipelines.synth import generate
from pipelines.tools.card import card_statistics
from schemas.config import load_config

REPEATS = 5


def best_of(fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def whole_tables(out: Path) -> dict:
    return {name: pq.read_table(out / name) for name in ("images", "annotations", "rejects")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = generate(Path(tmp) / "corpus", studies=args.studies, seed=0)
        out = Path(tmp) / "out"
        run_build(load_config(corpus / "build.yaml"), str(out))
        columns_s, stats = best_of(lambda: card_statistics(out))
        whole_s, tables = best_of(lambda: whole_tables(out))
        assert sum(stats.images.values()) == tables["images"].num_rows
        whole_bytes = sum(t.nbytes for t in tables.values())
        column_bytes = (
            tables["images"].select(["source", "split"]).nbytes
            + tables["annotations"].select(["findings", "boxes", "ctr", "report_language"]).nbytes
            + tables["rejects"].select(["source", "stage", "kind", "reason"]).nbytes
        )
        print(
            f"studies {args.studies}: {tables['images'].num_rows} images, "
            f"{tables['annotations'].num_rows} annotation rows"
        )
        print(f"columns (card_statistics): {columns_s * 1000:8.1f} ms  {column_bytes / 1e6:8.2f} MB decoded")
        print(f"whole tables (read_table): {whole_s * 1000:8.1f} ms  {whole_bytes / 1e6:8.2f} MB decoded")
        print(f"ratio whole/columns: time x{whole_s / columns_s:.1f}, memory x{whole_bytes / column_bytes:.1f}")


if __name__ == "__main__":
    main()
