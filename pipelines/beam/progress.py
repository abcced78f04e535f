"""Live progress of a local build: the stages count what they finish, the command line shows it.

The stages (read, join, image, tasks, write, tokenize) call :meth:`Progress.started` when they begin
work and :meth:`Progress.add` as they finish it:
records read, units joined, images through the per-image stages, annotation rows through the tasks,
shards written, images tokenized, and totals where a stage knows them. Each worker process appends
these events as JSON lines to a file of its own in a local folder; :class:`ProgressDisplay`, in the
launching process, reads the folder twice a second and shows per stage the items done, the rate, the
elapsed time and, where a total is known, the ETA: a live table on a terminal, a plain line per stage
every ``PLAIN_EVERY`` seconds otherwise (CI logs, pipes). When the run ends it has each stage's wall
time for ``run.json``.

Progress is for runners on this machine (FnApiRunner, in process or with worker processes). A
Dataflow job has its own monitoring page; there :class:`Progress` is disabled (``folder=None``) and
costs nothing. Events are best effort: a retried bundle may count twice; nothing else reads them.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

STAGES = ("read", "join", "image", "tasks", "write", "tokenize")
"""The stages in pipeline order, as shown and recorded."""
UNITS = {
    "read": "records",
    "join": "images",
    "image": "images",
    "tasks": "images",
    "write": "shards",
    "tokenize": "images",
}
SHARES_TOTAL = {"tasks": "image"}
"""The tasks run on every image the image stage processed: its total is theirs."""
PLAIN_EVERY = 10.0
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "PrismRunner")
"""Runners whose workers run on this machine and can report progress to it."""


PROGRESS_EVERY = 500
"""Items one DoFn instance handles (records read, units joined) between two progress reports."""


@dataclass(frozen=True)
class Progress:
    """What the stages report through; picklable (it crosses to Beam workers as a path)."""

    folder: str | None

    def add(self, stage: str, done: int = 0, total: int = 0) -> None:
        """``done`` more items of ``stage`` finished; ``total`` more items known to be coming."""
        if done or total:
            self._event(stage, done, total)

    def started(self, stage: str) -> None:
        """Work on ``stage`` begins here (its wall time counts from the first such event)."""
        self._event(stage, 0, 0)

    def _event(self, stage: str, done: int, total: int) -> None:
        if self.folder is None:
            return
        if stage not in STAGES:
            raise ValueError(f"unknown progress stage {stage!r}; stages are {STAGES}")
        line = json.dumps({"stage": stage, "done": done, "total": total, "at": time.time()}) + "\n"
        with open(
            os.path.join(self.folder, f"events-{os.getpid()}-{threading.get_ident()}.jsonl"), "a", encoding="utf-8"
        ) as handle:
            handle.write(line)


@dataclass
class StageState:
    done: int = 0
    total: int = 0
    first: float | None = None
    last: float | None = None

    def seconds(self) -> float:
        return 0.0 if self.first is None or self.last is None else self.last - self.first


@dataclass
class ProgressState:
    """The stages' counts so far, read incrementally from the event files."""

    folder: Path
    stages: dict[str, StageState] = field(default_factory=lambda: {stage: StageState() for stage in STAGES})
    offsets: dict[str, int] = field(default_factory=dict)

    def poll(self) -> None:
        for path in sorted(self.folder.glob("events-*.jsonl")):
            with path.open("rb") as handle:
                handle.seek(self.offsets.get(path.name, 0))
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
            self.offsets[path.name] = self.offsets.get(path.name, 0) + len(complete)
            for line in complete.splitlines():
                event = json.loads(line)
                state = self.stages[event["stage"]]
                state.done += event["done"]
                state.total += event["total"]
                state.first = event["at"] if state.first is None else min(state.first, event["at"])
                state.last = event["at"] if state.last is None else max(state.last, event["at"])

    def view(self, stage: str) -> StageState:
        """A stage's state, with the total of the stage whose items it goes on to handle when it has none."""
        state = self.stages[stage]
        if not state.total and stage in SHARES_TOTAL:
            return StageState(state.done, self.stages[SHARES_TOTAL[stage]].total, state.first, state.last)
        return state

    def record(self) -> dict[str, dict]:
        """Per stage that reported: items done, total when known, wall seconds first to last event."""
        return {
            stage: {"items": s.done, "total": self.view(stage).total or None, "seconds": round(s.seconds(), 3)}
            for stage, s in self.stages.items()
            if s.first is not None
        }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


IDLE = 2.0
"""Seconds without an event after which a stage's time stops at its last event (it is done or waiting)."""


def stage_line(stage: str, state: StageState, now: float, started: float) -> list[str]:
    """Stage, done (of total), rate, elapsed and ETA as display cells."""
    if state.first is None or state.last is None:  # both are set by a stage's first event
        return [stage, "waiting", "", "", ""]
    now = now if now - state.last < IDLE else state.last
    elapsed = max(now - state.first, 1e-9)
    rate = state.done / elapsed
    count = f"{state.done:,}" + (f" / {state.total:,}" if state.total else "") + f" {UNITS[stage]}"
    eta = (state.total - state.done) / rate if state.total and rate > 0 and state.done < state.total else None
    return [stage, count, f"{rate:,.1f}/s", _duration(now - state.first), _duration(eta) if eta else "-"]


class ProgressDisplay:
    """Shows a :class:`ProgressState` while a build runs (``with ProgressDisplay(...) as progress:``).

    ``progress.reporter`` goes to the pipeline; after the ``with`` block, ``progress.state.record()``
    holds each stage's counts and wall time. The event folder is the caller's (a temporary folder)."""

    def __init__(self, folder: Path, console: Console, interval: float = 0.5):
        self.state = ProgressState(folder)
        self.reporter = Progress(str(folder))
        self.console = console
        self.interval = interval
        self.started = time.time()
        self._stop = threading.Event()
        self._shown: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> ProgressDisplay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.state.poll()
        if not self.console.is_terminal:
            self._print_lines(force=True)

    def table(self) -> Table:
        now = time.time()
        table = Table(title=f"building ({_duration(now - self.started)} elapsed)", title_justify="left")
        for column in ("stage", "done", "rate", "elapsed", "ETA"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for stage in STAGES:
            table.add_row(*stage_line(stage, self.state.view(stage), now, self.started))
        return table

    def _run(self) -> None:
        if self.console.is_terminal:
            with Live(self.table(), console=self.console, refresh_per_second=4, transient=True) as live:
                while not self._stop.wait(self.interval):
                    self.state.poll()
                    live.update(self.table())
            return
        next_print = 0.0
        while not self._stop.wait(self.interval):
            self.state.poll()
            if time.time() >= next_print:
                next_print = time.time() + PLAIN_EVERY
                self._print_lines()

    def _print_lines(self, force: bool = False) -> None:
        """A plain line per stage whose count moved since the last one (every stage that ran, when ``force``)."""
        for stage in STAGES:
            state = self.state.view(stage)
            if state.first is None or state.last is None or (self._shown.get(stage) == state.done and not force):
                continue
            self._shown[stage] = state.done
            cells = stage_line(stage, state, state.last if force else time.time(), self.started)
            self.console.print(
                f"{cells[0]}: {cells[1]}, {cells[2]}, elapsed {cells[3]}, ETA {cells[4]}", markup=False, highlight=False
            )


@contextmanager
def watching(runner: str, console: Console) -> Iterator[ProgressDisplay | None]:
    """A :class:`ProgressDisplay` over a temporary event folder for a local runner; for any other
    runner (Dataflow has its own monitoring page) a status line, and None."""
    if runner not in LOCAL_RUNNERS:
        with console.status(f"{runner} job running: its progress is on the runner's own page"):
            yield None
        return
    with (
        tempfile.TemporaryDirectory(prefix="cxr-instruct-progress-") as folder,
        ProgressDisplay(Path(folder), console) as display,
    ):
        yield display
