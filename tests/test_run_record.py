"""A build from the command line: live progress per stage, OUT/run.json and its summary, and a rerun of
a finished build that stops at once."""

from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

from pipelines.beam.progress import STAGES, Progress, ProgressState, StageState, stage_line
from pipelines.cli import main
from pipelines.synth import generate


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    corpus = generate(tmp_path_factory.mktemp("corpus"), studies=6, seed=4)
    out = tmp_path_factory.mktemp("out") / "out"
    result = CliRunner().invoke(main, ["build", "--config", str(corpus / "build.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return corpus, out, result.output


def test_the_build_reports_every_stage_and_records_the_run(built):
    _, out, output = built
    record = json.loads((out / "run.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert record["outcome"] == "built" and record["wall_seconds"] > 0
    assert list(record["stages"]) == ["read", "join", "image", "tasks", "write"]  # no tokenizer configured
    images = sum(manifest["tables"]["images"].values())
    assert record["stages"]["image"]["items"] == record["stages"]["image"]["total"] == images
    assert record["stages"]["tasks"]["items"] == images
    shards = [entry for entry in manifest["outputs"] if not entry["table"].startswith(("images", "rejects"))]
    assert record["stages"]["write"]["items"] == record["stages"]["write"]["total"] == len(shards)
    assert all(entry["seconds"] >= 0 for entry in record["stages"].values())
    for source, entry in record["sources"].items():
        counted = manifest["counts"][source]
        assert entry["read"] == counted["read"] == entry["written"] + entry["rejected"] + entry["filtered"]
    rejects = sum(manifest["tables"].get("rejects", {}).values())
    item_rejects = sum(e["rejected_items"] + e["filtered_items"] for e in record["sources"].values())
    record_rejects = sum(e["rejected"] + e["filtered"] for e in record["sources"].values())
    assert item_rejects + record_rejects == rejects > 0  # every row of the rejects table is in the summary
    assert sum(reason["count"] for reason in record["top_reject_reasons"]) <= rejects
    assert record["top_reject_reasons"] == sorted(record["top_reject_reasons"], key=lambda r: -r["count"])
    # not a terminal: plain progress lines per stage, then the summary with reasons and where things are
    assert "image: " in output and " images, " in output and "ETA" in output
    assert record["top_reject_reasons"][0]["reason"] in output and str(out / "run.json") in output


def test_a_finished_build_rerun_with_the_same_inputs_stops_at_once(built):
    corpus, out, _ = built
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    started = time.monotonic()
    result = CliRunner().invoke(main, ["build", "--config", str(corpus / "build.yaml"), "--out", str(out)])
    assert result.exit_code == 0 and "already built" in result.output
    assert time.monotonic() - started < 10
    assert before == {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    notes, labels = corpus / "siim-acr" / "notes.txt", corpus / "siim-acr" / "train-rle.csv"
    notes.write_text("not an input: no read plan lists it")
    stat = labels.stat()
    try:
        again = CliRunner().invoke(main, ["build", "--config", str(corpus / "build.yaml"), "--out", str(out)])
        assert again.exit_code == 0 and "already built" in again.output
        os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an input changed: the build runs
        rerun = CliRunner().invoke(main, ["build", "--config", str(corpus / "build.yaml"), "--out", str(out)])
        assert rerun.exit_code == 0 and "already built" not in rerun.output
    finally:
        notes.unlink()
        os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_progress_events_are_read_whole_and_summed_per_stage(tmp_path):
    progress = Progress(str(tmp_path))
    progress.started("image")
    progress.add("image", total=10)
    progress.add("image", 4)
    progress.add("tasks", 4)
    state = ProgressState(tmp_path)
    events = next(tmp_path.glob("events-*.jsonl"))
    with events.open("a") as handle:
        handle.write('{"stage": "image", "done": 3')  # a line still being written is not read yet
    state.poll()
    assert (state.stages["image"].done, state.stages["image"].total) == (4, 10)
    with events.open("a") as handle:
        handle.write(f', "total": 0, "at": {time.time():f}}}\n')
    state.poll()
    assert state.stages["image"].done == 7 and state.view("tasks").total == 10  # tasks see every image
    assert set(state.record()) == {"image", "tasks"} and set(state.record()) <= set(STAGES)
    with pytest.raises(ValueError, match="unknown progress stage"):
        progress.add("painting", 1)
    Progress(None).add("image", 5)  # disabled: nothing written, no error


def test_a_stage_line_shows_rate_and_eta_once_a_total_is_known():
    now = 1000.0
    assert stage_line("image", StageState(), now, 0.0)[1] == "waiting"
    _, count, rate, elapsed, eta = stage_line(
        "image", StageState(done=50, total=200, first=990.0, last=1000.0), now, 0.0
    )
    assert (count, rate, elapsed, eta) == ("50 / 200 images", "5.0/s", "0:10", "0:30")
    assert stage_line("read", StageState(done=9, first=997.0, last=1000.0), now, 0.0)[4] == "-"
    idle = stage_line("read", StageState(done=30, first=900.0, last=910.0), now, 0.0)  # done 90 s ago
    assert idle[2:4] == ["3.0/s", "0:10"]  # its rate and time over its own span, not until now
