"""Running a build from the command line, for ``cxr-instruct build`` and ``hydrate``: the whole-input
checks as one line each (exit 2), Beam's arguments, Ctrl-C as a resumable stop (exit 130), and the
run's summary tables."""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.table import Table

console = Console()


@contextmanager
def resumable_on_ctrl_c(what: str, verbose: bool) -> Iterator[None]:
    """Ctrl-C inside the block: one line saying how to resume, exit status 130 (finished images shards
    are kept, so the same command resumes)."""
    interrupted = []

    def on_interrupt(signum, frame):
        # Beam re-raises a KeyboardInterrupt from inside a step as a RuntimeError and logs it with its
        # traceback first: the flag says it was Ctrl-C, and logging is silenced for the one line below.
        interrupted.append(signum)
        if not verbose:
            logging.disable(logging.CRITICAL)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    except (KeyboardInterrupt, Exception) as error:
        if not (interrupted or isinstance(error, KeyboardInterrupt)):
            raise
        command = shlex.join(["cxr-instruct", *sys.argv[1:]])
        console.print(
            f"{what} interrupted; finished images shards are kept, run the same command to resume: {command}",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, previous)


def beam_arguments(runner: str, workers: int, extra) -> list[str]:
    """Beam's options for a run: the runner, ``workers`` local processes when more than one, then the
    unknown command-line options as given (Dataflow's ``--project``, ``--region``, ...)."""
    arguments = [f"--runner={runner}"]
    if workers > 1:
        arguments += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    return arguments + list(extra)


def run_build_command(
    ctx: click.Context, config_path: str, out: str, runner: str, workers: int, replace: bool, verbose: bool
) -> None:
    import time

    from pipelines.beam.progress import Progress, watching
    from pipelines.output.manifest import finished_build, input_fingerprints
    from pipelines.output.run_record import run_record, write_run_record

    started = time.time()
    config, plans = preflight(config_path, out, verbose)
    beam_args = beam_arguments(runner, workers, ctx.args)
    with console.status("listing the inputs"):
        inputs = input_fingerprints(config, plans)
    finished = finished_build(out, config, inputs)
    if finished is not None:
        console.print(
            f"{out} is already built from these inputs and this config (manifest.json); nothing to do",
            markup=False,
            highlight=False,
        )
        record = run_record(out, finished, {}, started, time.time(), outcome="already built")
    else:
        from pipelines.beam.build import run_build
        from pipelines.output.out_lock import OutputRefused

        try:
            with watching(runner, console) as display:
                manifest = run_build(
                    config,
                    out,
                    beam_args,
                    progress=display.reporter if display else Progress(None),
                    inputs=inputs,
                    plans=plans,
                    replace=replace,
                )
        except OutputRefused as refused:  # another run holds OUT, or OUT holds another build
            console.print(f"build: {refused}", style="red", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        record = run_record(out, manifest, display.state.record() if display else {}, started, time.time())
        write_run_record(out, record)
    print_summary(record)
    if not (record["checks"]["reconciled"] and record["checks"]["leakage_free"]):
        console.print("[red]build checks failed: see manifest.json 'checks' and 'counts'[/red]")
        sys.exit(1)


def preflight(config_path: str, out: str, verbose: bool):
    """The config and the read plans, after every whole-input check (pipelines/beam/preflight.py); a problem
    is printed as one line per fault (with its traceback when ``verbose``) and exits with status 2."""
    from pipelines.beam import preflight as checks
    from schemas.config import check_config
    from transforms.sources import read_plans

    try:
        checks.check_config_file(config_path)
        checks.check_out(out)
        config = check_config(config_path)
        checks.check_config(config, config_path)
        checks.check_roots(config, config_path)
        with console.status("checking the inputs"):
            plans = read_plans(config)  # required files and headers; nothing listed, no pipeline
            checks.check_compressed_tables(plans)
    except (FileNotFoundError, ValueError) as unusable:
        if verbose:
            console.print(traceback.format_exc(), markup=False, highlight=False, soft_wrap=True)
        for line in str(unusable).splitlines():
            console.print(f"build: {line}", style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    return config, plans


def print_summary(record: dict) -> None:
    """The run record (pipelines/output/run_record.py) as tables: sources, reject reasons, stages, outputs."""
    counts = Table(
        title="per source: read = written + rejected + filtered (records); items rejected or "
        "filtered inside written records",
        title_justify="left",
    )
    columns = ("source", "read", "written", "rejected", "filtered", "items rejected", "items filtered", "ok")
    for column in columns:
        counts.add_column(column, justify="left" if column == "source" else "right")
    for source, entry in record["sources"].items():
        counts.add_row(
            source,
            *(
                f"{entry[key]:,}"
                for key in ("read", "written", "rejected", "filtered", "rejected_items", "filtered_items")
            ),
            "yes" if entry["reconciled"] else "NO",
        )
    console.print(counts)
    if record["top_reject_reasons"]:
        reasons = Table(title="most frequent reject reasons (all of them: the rejects table)", title_justify="left")
        for column in ("count", "source", "stage", "kind", "reason"):
            reasons.add_column(column, justify="right" if column == "count" else "left")
        for entry in record["top_reject_reasons"]:
            reasons.add_row(f"{entry['count']:,}", entry["source"], entry["stage"], entry["kind"], entry["reason"])
        console.print(reasons)
    if record["stages"]:
        stages = Table(title="wall time per stage (stages overlap)", title_justify="left")
        for column in ("stage", "items", "seconds"):
            stages.add_column(column, justify="left" if column == "stage" else "right")
        for stage, entry in record["stages"].items():
            stages.add_row(stage, f"{entry['items']:,}", f"{entry['seconds']:.1f}")
        stages.add_row("whole run", "", f"{record['wall_seconds']:.1f}")
        console.print(stages)
    tables = Table(title="tables (rows per split)", title_justify="left")
    tables.add_column("table")
    tables.add_column("rows per split")
    for name, splits in record["tables"].items():
        tables.add_row(name, ", ".join(f"{split} {n:,}" for split, n in splits.items()))
    console.print(tables)
    if record.get("pools_without_rows"):
        empty = Table(
            title="weighted pools without rows (their weight goes unused; the mixture renormalises over the rest)",
            title_justify="left",
        )
        for column in ("profile", "task", "source", "weight"):
            empty.add_column(column, justify="right" if column == "weight" else "left")
        for profile, pools in record["pools_without_rows"].items():
            for pool in pools:
                empty.add_row(profile, pool["task"], pool["source"] or "(any)", f"{pool['weight']:g}")
        console.print(empty)
    outputs = record["outputs"]
    console.print(
        f"output: {outputs['folder']}  (manifest: {outputs['manifest']}; this run: {outputs['run']})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"next: cxr-instruct audit {outputs['folder']}  (every row against its images), "
        f"cxr-instruct preview {outputs['folder']}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
