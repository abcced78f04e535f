"""Whole-input problems stop ``cxr-instruct build`` before the pipeline starts: exit status 2, at most
three lines naming the file or key at fault, no traceback (unless --verbose). Ctrl-C exits 130 with
the command that resumes. Each case runs the real command line (in this process; Ctrl-C in a
subprocess) on a synthetic corpus with one thing broken."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from click.testing import CliRunner

from pipelines.beam import preflight
from pipelines.cli import main
from pipelines.synth import generate
from schemas.config import load_config
from transforms.sources import read_plans

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("pristine"), studies=2, seed=0)


@pytest.fixture
def corpus(pristine, tmp_path) -> Path:
    """A fresh copy of the synthetic corpus to break."""
    return Path(shutil.copytree(pristine, tmp_path / "corpus"))


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def cxr(*args: str) -> Ran:
    """The command line, run in this process by click's runner (a subprocess per case cost ~4 s of
    imports); an exception that escapes the command is added to the output as the traceback it prints."""
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += "".join(traceback.format_exception(result.exception))
    return Ran(result.exit_code, output, "")


def build(corpus: Path, out: Path | str | None = None, *extra: str) -> Ran:
    return cxr("build", "--config", str(corpus / "build.yaml"), "--out", str(out or corpus.parent / "out"), *extra)


def assert_one_clear_line(result: Ran, *named: str) -> str:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert len(output.splitlines()) <= 3, output
    for name in named:
        assert name in output, output
    return output


def edit_config(corpus: Path, **changes) -> None:
    path = corpus / "build.yaml"
    document = yaml.safe_load(path.read_text())
    document.update(changes)
    path.write_text(yaml.safe_dump(document))


def test_truncated_csv_gz_is_named_before_the_run(corpus):
    path = corpus / "mimic-cxr" / "mimic-cxr-2.0.0-metadata.csv.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_one_clear_line(build(corpus), str(path), "cut short")
    assert not (corpus.parent / "out").exists()


def test_truncated_csv_gz_that_breaks_the_header_is_named(corpus):
    path = corpus / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
    path.write_bytes(path.read_bytes()[:30])
    assert_one_clear_line(build(corpus), str(path), "download it again")


def test_small_compressed_tables_are_read_through_at_plan_time(pristine):
    checked = preflight.check_compressed_tables(read_plans(load_config(pristine / "build.yaml")))
    names = {Path(path).name for path in checked}
    assert "mimic-cxr-2.0.0-metadata.csv.gz" in names
    assert "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz" in names
    assert all(path.endswith(".gz") for path in checked)


def test_zero_byte_csv(corpus):
    path = corpus / "siim-acr" / "train-rle.csv"
    path.write_bytes(b"")
    assert_one_clear_line(build(corpus), str(path), "empty file")


def test_missing_root(corpus):
    shutil.rmtree(corpus / "vindr-cxr")
    assert_one_clear_line(build(corpus), "sources.vindr.root", str(corpus / "vindr-cxr"), "no such folder")


def test_root_that_is_a_file(corpus):
    shutil.rmtree(corpus / "padchest")
    (corpus / "padchest").write_text("not a folder")
    assert_one_clear_line(build(corpus), "sources.padchest.root", "is a file")


def test_both_siim_stage_files(corpus):
    shutil.copy(corpus / "siim-acr" / "train-rle.csv", corpus / "siim-acr" / "stage_2_train.csv")
    assert_one_clear_line(build(corpus), "train-rle.csv", "stage_2_train.csv", "keep only one")


def test_out_that_is_a_file(corpus, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("a file")
    assert_one_clear_line(build(corpus, out), f"--out {out}", "is a file")
    assert out.read_text() == "a file"


def test_out_under_a_file(corpus, tmp_path):
    (tmp_path / "blocker").write_text("a file")
    assert_one_clear_line(build(corpus, tmp_path / "blocker" / "out"), str(tmp_path / "blocker"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_out_in_a_read_only_folder(corpus, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_one_clear_line(build(corpus, locked / "out"), str(locked), "not writable")
    finally:
        locked.chmod(0o700)


def test_yaml_syntax_error_names_the_file_and_line(corpus):
    config = corpus / "build.yaml"
    config.write_text("sources:\n  mimic: {root: mimic-cxr\nimage_size: [\n")
    output = assert_one_clear_line(build(corpus), str(config), "line 3", "not valid YAML")
    assert "<unicode string>" not in output


def test_config_that_is_not_a_mapping(corpus):
    (corpus / "build.yaml").write_text("- mimic\n- vindr\n")
    assert_one_clear_line(build(corpus), str(corpus / "build.yaml"), "expected a mapping")


def test_rows_per_shard_zero(corpus):
    edit_config(corpus, rows_per_shard={"images": 0})
    assert_one_clear_line(build(corpus), "rows_per_shard.images", "greater than or equal to 1")


def test_misspelled_key_suggests_the_spelling(corpus):
    edit_config(corpus, image_szie=256)
    assert_one_clear_line(build(corpus), "'image_szie'", "did you mean 'image_size'")


def test_misspelled_nested_key_and_source(corpus):
    edit_config(corpus, rows_per_shard={"imagse": 10})
    assert_one_clear_line(build(corpus), "rows_per_shard.imagse", "did you mean 'images'")
    document = yaml.safe_load((corpus / "build.yaml").read_text())
    document.pop("rows_per_shard")
    document["sources"]["padchets"] = document["sources"].pop("padchest")
    (corpus / "build.yaml").write_text(yaml.safe_dump(document))
    assert_one_clear_line(build(corpus), "padchets", "did you mean 'padchest'")


def test_several_problems_one_line_each(corpus):
    edit_config(corpus, image_size=8, seed="zero")
    output = assert_one_clear_line(build(corpus), "image_size", "seed")
    assert len(output.splitlines()) == 2


def test_image_size_far_too_large(corpus):
    edit_config(corpus, image_size=51200)
    assert_one_clear_line(build(corpus), "image_size", "51200", "4096")


def test_no_sources(corpus, tmp_path):
    edit_config(corpus, sources={})
    assert_one_clear_line(build(corpus, tmp_path / "out"), "sources", "no enabled source")
    assert not (tmp_path / "out").exists()


def test_every_source_disabled(corpus):
    document = yaml.safe_load((corpus / "build.yaml").read_text())
    edit_config(corpus, sources={name: {**entry, "enabled": False} for name, entry in document["sources"].items()})
    assert_one_clear_line(build(corpus), "no enabled source")


def test_only_annotation_sources_would_write_no_image(corpus):
    document = yaml.safe_load((corpus / "build.yaml").read_text())
    edit_config(corpus, sources={name: document["sources"][name] for name in ("chexmask", "imagenome")})
    assert_one_clear_line(build(corpus), "chexmask", "imagenome", "no image")


def test_missing_config_file(tmp_path):
    result = cxr("build", "--config", str(tmp_path / "nowhere.yaml"), "--out", str(tmp_path / "out"))
    assert_one_clear_line(result, f"--config {tmp_path / 'nowhere.yaml'}", "no such file")


@pytest.mark.parametrize("where", [("--verbose", "build"), ("build", "--verbose")])
def test_verbose_shows_the_traceback(corpus, where):
    edit_config(corpus, rows_per_shard={"images": 0})
    first, second = where
    result = cxr(first, second, "--config", str(corpus / "build.yaml"), "--out", str(corpus.parent / "out"))
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "Traceback" in output
    assert "rows_per_shard.images" in output.strip().splitlines()[-1]


def test_ctrl_c_names_the_command_that_resumes(pristine, tmp_path):
    """SIGINT once the pipeline has started (its work folder exists): one line with the same command, 130."""
    corpus = Path(shutil.copytree(pristine, tmp_path / "corpus"))
    out = tmp_path / "out"
    args = ["build", "--config", str(corpus / "build.yaml"), "--out", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    deadline = time.time() + 120
    while not (out / "_work").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the build finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("build interrupted")
    assert last.endswith("cxr-instruct " + " ".join(args))


def test_config_that_is_a_folder(corpus):
    assert_one_clear_line(
        cxr("build", "--config", str(corpus), "--out", str(corpus.parent / "out")), f"--config {corpus}", "is a folder"
    )


def test_an_unknown_column_in_a_label_file(corpus):
    """An extra column in one VinDr label CSV stopped everything with a traceback; now one line naming it."""
    path = corpus / "vindr-cxr" / "annotations" / "image_labels_train.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",Extra", *(line + ",0" for line in lines[1:])]) + "\n")
    assert_one_clear_line(build(corpus), str(path), "Extra")


def test_a_csv_beside_its_gzipped_copy(corpus):
    """One of the two is probably partial: the build refuses, naming both."""
    path = corpus / "siim-acr" / "train-rle.csv"
    with gzip.open(path.with_suffix(".csv.gz"), "wt") as copy:
        copy.write(path.read_text())
    assert_one_clear_line(build(corpus), str(path), str(path.with_suffix(".csv.gz")))
