"""Recipes and hydration, on one synthetic build (module fixtures: one corpus, one build, one recipe).

- a copy of the corpus (new file times, as on another machine) hydrates into files byte-identical to
  the build's, checked file by file here, not only by the recipe's word;
- one changed input file is named and its cost localised to the one image, row and output file;
- ``--check-only`` names missing, changed and extra files without building;
- partial hydration (VinDr + SIIM + CheXmask, then without CheXmask) verifies row by row exactly
  the rows the original build made from those sources (compared here with the build's own rows);
- a recipe holds no report text, label, coordinate, image byte or row id of the corpus or the build, and
  no plain SHA-256 of any input file but the sources' tables (the anchors): a differing anchor is said
  as such, and the files sealed with its key are then not called changed;
- whole-input problems stop ``recipe`` and ``hydrate`` with one line and exit status 2.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from pipelines.beam.build import run_build
from pipelines.cli import main
from pipelines.synth import generate
from pipelines.tools.recipe import SEALED_FILE, canonical, make_recipe, read_recipe, recipe_problems
from pipelines.tools.verify import verify
from schemas.config import load_config
from transforms.tasks import instruction_id

STUDIES, SEED = 8, 0
GROUNDING = (
    "m4cxr/finding_grounding",
    "m4cxr/grounded_finding",
    "m4cxr/multi_finding_grounding",
    "m4cxr/abnormality_detection",
    "imt-cxr/lesion_localization",
)


@pytest.fixture(scope="module", autouse=True)
def one_code_fingerprint():
    """The code fingerprint taken once: a working tree edited while the module runs would otherwise
    make hydrate refuse its own recipe as made by other code."""
    import pipelines.output.manifest as manifest

    fixed = manifest.code_fingerprint()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(manifest, "code_fingerprint", lambda: fixed)
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("corpus") / "corpus", studies=STUDIES, seed=SEED)


@pytest.fixture(scope="module")
def build(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build") / "out"
    run_build(load_config(corpus / "build.yaml"), str(out))
    return out


@pytest.fixture(scope="module")
def recipe(build, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("recipe") / "recipe"
    make_recipe(str(build), dest)
    return dest


def copy_of(corpus: Path, dest: Path) -> Path:
    """The corpus as another lab downloads it: same bytes, new modification times."""
    shutil.copytree(corpus, dest, copy_function=shutil.copy)
    for path in dest.rglob("*"):
        if path.is_file():
            os.utime(path, (1.7e9, 1.7e9))
    return dest


def hydrate(recipe: Path, sources: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, ["hydrate", str(recipe), "--sources", str(sources), "--out", str(out), *extra])


def build_yaml(corpus: Path, path: Path, sources: tuple[str, ...]) -> Path:
    roots = {
        name: entry["root"] for name, entry in yaml.safe_load((corpus / "build.yaml").read_text())["sources"].items()
    }
    path.write_text("sources:\n" + "".join(f"  {name}: {{root: {corpus / roots[name]}}}\n" for name in sources))
    return path


def rows_of(out: Path, table_dir: str) -> set[bytes]:
    return {
        canonical(row)
        for path in sorted((out / table_dir).glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    }


def sealed_dirs(out: Path) -> list[str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return sorted({entry["path"].rsplit("/", 1)[0] for entry in manifest["outputs"] if entry["table"] != "rejects"})


# ------------------------------------------------------------------------------------ round trip


def test_a_copy_of_the_corpus_hydrates_byte_identically(corpus, build, recipe, tmp_path):
    sources = copy_of(corpus, tmp_path / "theirs")
    out = tmp_path / "out"
    result = hydrate(recipe, sources / "build.yaml", out)
    assert result.exit_code == 0, result.output
    assert "result: byte-identical" in result.output
    built = json.loads((build / "manifest.json").read_text())
    for entry in [*built["outputs"], *built["files"]]:
        assert (out / entry["path"]).read_bytes() == (build / entry["path"]).read_bytes(), entry["path"]
    ours = json.loads((out / "manifest.json").read_text())
    assert sorted(e["path"] for e in ours["outputs"]) == sorted(e["path"] for e in built["outputs"])
    assert ours["hydration"]["outcome"] == "byte-identical" and ours["hydration"]["shards_not_verified"] == []
    assert ours["hydration"]["rows_verified"] == ours["hydration"]["rows_in_recipe"] > 0
    assert verify(out) == []  # hydrate.json is recorded among the manifest's files
    again = hydrate(recipe, sources / "build.yaml", out)  # a finished hydration is verified, not rebuilt
    assert again.exit_code == 0 and "already built" in again.output, again.output
    tampered = tamper_keeping_size(out)  # one row changed, the file's size and manifest.json left as they were
    again = hydrate(recipe, sources / "build.yaml", out)
    assert again.exit_code == 1 and "result: DIFFERS" in again.output, again.output
    assert "byte-identical: every output file" not in again.output
    hydration = json.loads((out / "manifest.json").read_text())["hydration"]
    assert hydration["outcome"] == "differs" and hydration["byte_identical"] is False and not hydration["verified"]
    assert tampered in hydration["shards_not_verified"]
    report = json.loads((out / "hydrate.json").read_text())
    assert [r["kind"] for r in report["reasons"] if not r["expected"]] == ["unexplained"]


def tamper_keeping_size(out: Path) -> str:
    """Change one digit of one instruction row's answer and rewrite its shard with the build's writer, until
    the file keeps its size (so only hashing its bytes can tell); returns the shard's path."""
    from pipelines.beam.write import stream_parquet

    for path in sorted((out / "instructions").rglob("*.parquet")):
        rows, size = pq.read_table(path).to_pylist(), path.stat().st_size
        for i, row in enumerate(rows[:3]):
            value = row["conversations"][-1]["value"]
            at = next((j for j, c in enumerate(value) if c.isdigit()), None)
            if at is None:
                continue
            for digit in "0123456789":
                if digit == value[at]:
                    continue
                turns = [dict(turn) for turn in row["conversations"]]
                turns[-1]["value"] = value[:at] + digit + value[at + 1 :]
                trial = path.with_suffix(".trial")
                stream_parquet(
                    str(trial), "instructions", [[*rows[:i], {**row, "conversations": turns}, *rows[i + 1 :]]]
                )
                if trial.stat().st_size == size:
                    trial.replace(path)
                    return path.relative_to(out).as_posix()
                trial.unlink()
    raise AssertionError("no instruction shard could be changed keeping its size")


def test_one_changed_input_file_is_named_and_its_cost_localised(corpus, build, recipe, tmp_path):
    sources = copy_of(corpus, tmp_path / "theirs")
    victim = sorted((sources / "vindr-cxr" / "train").glob("*.dicom"))[0]
    data = bytearray(victim.read_bytes())
    data[-1500:-500] = bytes(b ^ 0x5A for b in data[-1500:-500])  # pixel data: the image changes
    victim.write_bytes(bytes(data))
    relative, key = f"train/{victim.name}", f"vindr/{victim.stem}"
    out = tmp_path / "out"
    result = hydrate(recipe, sources / "build.yaml", out)
    assert result.exit_code == 1, result.output
    assert f"changed 1 ({relative})" in result.output
    assert "result: DIFFERS" in result.output
    report = json.loads((out / "hydrate.json").read_text())
    assert report["inputs"]["vindr"]["changed"] == [relative]
    assert [(r["kind"], r["image_keys"]) for r in report["reasons"]] == [("file", [key])]
    assert relative in report["reasons"][0]["text"]
    # the image's secret changed with its pixels: its rows, and the files holding them (whose SHA-256s are
    # sealed with their images' secrets), cannot be vouched for; everything else verifies
    on_it: dict[str, int] = defaultdict(int)
    holding = []
    for table_dir in sealed_dirs(build):
        for path in sorted((build / table_dir).glob("*.parquet")):
            n = sum(key in (row.get("image_keys") or [row.get("image_key")]) for row in pq.read_table(path).to_pylist())
            if n:
                on_it[table_dir] += n
                holding.append(path.relative_to(build).as_posix())
    assert on_it["images"] == 1
    for path in sorted((build / "rejects").glob("*.parquet")):  # keyed by every written image of its sources
        named = set(pq.read_table(path, columns=["source"]).column("source").to_pylist())
        if "vindr" in named or not named <= {"mimic", "vindr", "siim", "padchest"}:
            holding.append(path.relative_to(build).as_posix())
    assert sorted(s["path"] for s in report["shards"]["files"] if s["state"] != "verified") == sorted(holding)
    unverified = {
        group: sum(entry["recipe"].values()) - sum(entry["verified"].values())
        for group, entry in report["tables"].items()
    }
    assert {group: n for group, n in unverified.items() if n} == dict(on_it), unverified
    assert json.loads((out / "manifest.json").read_text())["hydration"]["outcome"] == "differs"


def test_check_only_names_missing_changed_and_extra_files(corpus, recipe, tmp_path):
    sources = copy_of(corpus, tmp_path / "theirs")
    report = sorted((sources / "mimic-cxr" / "files").rglob("s*.txt"))[0]
    report.unlink()
    rle = sources / "siim-acr" / "train-rle.csv"
    rle.write_text(rle.read_text() + "\n")
    extra = sources / "vindr-cxr" / "train" / ("0" * 32 + ".dicom")
    shutil.copy(sorted((sources / "vindr-cxr" / "train").glob("*.dicom"))[0], extra)
    out = tmp_path / "out"
    result = hydrate(recipe, sources / "build.yaml", out, "--check-only")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"missing 1 ({report.relative_to(sources / 'mimic-cxr').as_posix()})" in text
    assert "changed 1 (train-rle.csv)" in text
    assert f"extra 1 (train/{extra.name})" in text
    # train-rle.csv is SIIM's anchor: said first, and its DICOMs (sealed with the key it gives) not called changed
    assert "siim anchor train-rle.csv (differs): another release of SIIM-ACR" in text
    assert "or a modified copy; so its other 8 files cannot be checked one by one" in text
    assert "siim 0/9 files match the recipe's: changed 1 (train-rle.csv); not checkable 8" in text
    assert not out.exists()  # nothing built


def test_an_anchor_that_differs_is_reported_as_such_and_not_as_changed_files(corpus, recipe, tmp_path):
    sources = copy_of(corpus, tmp_path / "theirs")
    table = sources / "vindr-cxr" / "annotations" / "image_labels_train.csv"
    table.write_bytes(table.read_bytes().replace(b"\n", b"\r\n", 1))  # a re-saved copy: another line ending
    victim = sorted((sources / "vindr-cxr" / "train").glob("*.dicom"))[0]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")  # changed too, but no longer checkable one by one
    (sources / "vindr-cxr" / "train" / victim.name.replace(victim.stem, "f" * 32)).write_bytes(b"x")
    result = hydrate(recipe, sources / "build.yaml", tmp_path / "out", "--check-only")
    assert result.exit_code == 1, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines() if line.strip().startswith("vindr")]
    assert lines[0].startswith(
        "vindr anchor annotations/image_labels_train.csv (differs): another release of VinDr-CXR"
    ), lines
    assert "or a modified copy; so its other 8 files cannot be checked one by one" in lines[0]
    assert lines[1] == (
        f"vindr 3/12 files match the recipe's: changed 1 (annotations/image_labels_train.csv); "
        f"extra 1 (train/{'f' * 32}.dicom); not checkable 8"
    ), lines
    assert victim.name not in result.output
    assert "siim 9/9 files match the recipe's: all match" in " ".join(result.output.split())


# ------------------------------------------------------------------------------------ partial


def test_partial_hydration_verifies_exactly_the_rows_of_the_present_sources(corpus, build, recipe, tmp_path):
    present = ("vindr", "siim", "chexmask")
    out = tmp_path / "out"
    result = hydrate(recipe, build_yaml(corpus, tmp_path / "build.yaml", present), out)
    assert result.exit_code == 0, result.output
    assert "result: partial and verified" in result.output
    report = json.loads((out / "hydrate.json").read_text())
    assert report["outcome"] == "partial-verified" and not [r for r in report["reasons"] if not r["expected"]]
    for group, entry in report["tables"].items():
        for source in ("vindr", "siim"):
            assert entry["verified"].get(source, 0) == entry["recipe"].get(source, 0), (group, source)
    for task in GROUNDING:  # the grounding tasks rest on VinDr and SIIM alone: every row and file verified
        entry = report["tables"][f"instructions/{task}"]
        assert sum(entry["verified"].values()) == sum(entry["recipe"].values()) > 0, task
        assert all(
            s["state"] == "verified" for s in report["shards"]["files"] if s["path"].startswith(f"instructions/{task}/")
        ), task
    # the verification tells the truth: the rows it verified are the build's own rows of those sources
    for table_dir in sealed_dirs(out):
        theirs = {row for row in rows_of(build, table_dir) if re.search(rb'"(vindr|siim)/', row)}
        assert rows_of(out, table_dir) == theirs, table_dir
    assert report["left_out"]["mimic"]["images"] > 0 and "left out: mimic" in result.output


def test_partial_hydration_without_an_annotation_source_says_which_rows_need_it(corpus, build, recipe, tmp_path):
    out = tmp_path / "out"
    result = hydrate(recipe, build_yaml(corpus, tmp_path / "build.yaml", ("vindr", "siim")), out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "hydrate.json").read_text())
    needs = [r for r in report["reasons"] if r["kind"] == "absent"]
    assert needs and all(r["expected"] and "chexmask" in r["text"] for r in needs)
    assert all(key.startswith("vindr/") for r in needs for key in r["image_keys"])
    annotations = report["tables"]["annotations"]
    assert annotations["verified"].get("siim") == annotations["recipe"]["siim"]  # CheXmask annotates no SIIM image
    assert annotations["verified"].get("vindr", 0) < annotations["recipe"]["vindr"]
    for task in ("m4cxr/finding_grounding", "m4cxr/abnormality_detection"):
        entry = report["tables"][f"instructions/{task}"]
        assert sum(entry["verified"].values()) == sum(entry["recipe"].values()), task


# ------------------------------------------------------------------------------------ protected content


def _corpus_protected(corpus: Path) -> tuple[set[str], set[str], list[bytes]]:
    """Text fragments (with a space, 12+ characters), decimal numbers (5+ characters) and image byte
    windows of every source file of the corpus."""
    texts, numbers, windows = set(), set(), []
    for path in sorted(corpus.rglob("*")):
        if not path.is_file() or path.name in ("build.yaml", "SYNTHETIC_TRUTH.json"):
            continue
        if path.suffix in (".dcm", ".dicom", ".png"):
            data = path.read_bytes()
            windows += [data[at : at + 24] for at in (len(data) // 2, len(data) * 3 // 4, len(data) - 64)]
            continue
        data = path.read_bytes()
        text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8", "replace")
        texts |= {
            part.strip()
            for part in re.split(r"[.;\n\"\[\]{}]|,(?=\S)", text)
            if " " in part.strip() and len(part.strip()) >= 12
        }
        numbers |= set(re.findall(r"(?<![\d.])\d+\.\d+(?![\d.])", text))
    return texts, {n for n in numbers if len(n) >= 5}, windows


def _build_protected(build: Path) -> tuple[set[str], set[str], set[str], set[str], list[bytes]]:
    """From the build's tables: text values, coordinates, label names, instruction row ids, PNG windows."""
    texts, numbers, labels, ids, windows = set(), set(), set(), set(), []

    def walk(value, column):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, key)
        elif isinstance(value, list):
            for item in value:
                walk(item, column)
        elif isinstance(value, float):
            text = repr(value)
            if len(text) >= 5:
                numbers.add(text)
        elif isinstance(value, str):
            for part in re.split(r"[.;\n]", value):
                if " " in part.strip() and len(part.strip()) >= 12:
                    texts.add(part.strip())

    for path in sorted(build.rglob("*.parquet")):
        table = path.relative_to(build).parts[0]
        for row in pq.read_table(path).to_pylist():
            if table == "images":
                png = row["image"]["bytes"]
                windows += [png[at : at + 24] for at in (len(png) // 3, len(png) // 2, len(png) - 40)]
            elif table == "instructions":
                ids.add(row["id"])
                for turn in row["conversations"]:
                    walk(turn["value"], "value")
                walk(json.loads(row["target"]), "target")
            elif table == "annotations":
                labels.update(box[field] for box in row["boxes"] for field in ("label", "finding") if box[field])
                labels.update(f["name"] for f in row["findings"] if f["presence"] is not None)
                labels.update(label["name"] for label in row["raw_labels"])
                labels.update(polygon["label"] for polygon in row["polygons"])
                walk({k: v for k, v in row.items() if k not in ("image_key", "subject_id", "study_id")}, None)
    return texts, numbers, {label for label in labels if len(label) >= 5}, ids, windows


def leaks(text: str, protected: dict) -> list[str]:
    """Every protected thing found in ``text``: text fragments, decimal numbers (as whole tokens), label
    names (after taking out the datasets' own descriptions, manifests/sources.yaml: a title such as
    "SIIM-ACR Pneumothorax Segmentation" is not a row's label), row ids, and image byte windows raw,
    as hex or as base64 at any of the three alignments."""
    described = text
    for entry in yaml.safe_load(Path("manifests/sources.yaml").read_text())["sources"].values():
        for value in sorted((v for v in entry.values() if isinstance(v, str)), key=len, reverse=True):
            described = described.replace(value.strip(), "").replace(" ".join(value.split()), "")
    found = [f"text {t!r}" for t in sorted(protected["texts"]) if t in text]
    decimals = set(re.findall(r"(?<![\d.])\d+\.\d+(?![\d.])", text))
    found += [f"number {n}" for n in sorted(protected["numbers"] & decimals)]
    found += [f"label {label!r}" for label in sorted(protected["labels"]) if label in described]
    found += [f"row id {i}" for i in sorted(protected["ids"]) if i in text]
    raw = text.encode("utf-8", "surrogateescape")
    for window in protected["windows"]:
        encodings = [window.hex(), *(base64.b64encode(window[a : a + 18]).decode() for a in range(3))]
        if window in raw or any(encoded in text for encoded in encodings):
            found.append(f"image bytes {window.hex()[:16]}...")
    return found


@pytest.fixture(scope="module")
def protected(corpus, build) -> dict:
    corpus_texts, corpus_numbers, corpus_windows = _corpus_protected(corpus)
    build_texts, build_numbers, labels, ids, png_windows = _build_protected(build)
    assert len(corpus_texts) > 100 and len(build_texts) > 100 and len(corpus_numbers) > 50 and len(build_numbers) > 100
    assert len(labels) > 10 and len(ids) > 500 and len(corpus_windows) > 100 and len(png_windows) > 100
    return {
        "texts": corpus_texts | build_texts,
        "numbers": corpus_numbers | build_numbers,
        "labels": labels,
        "ids": ids,
        "windows": corpus_windows + png_windows,
    }


def test_a_recipe_holds_nothing_protected(recipe, protected):
    files = {
        path.relative_to(recipe).as_posix(): path.read_bytes() for path in sorted(recipe.rglob("*")) if path.is_file()
    }
    text = b"\n".join(files.values()).decode("utf-8")
    assert leaks(text, protected) == []
    assert recipe_problems(recipe) == []
    # the scan finds each kind when it is there
    planted = {
        "texts": sorted(protected["texts"])[0],
        "numbers": sorted(protected["numbers"])[0],
        "labels": sorted(protected["labels"])[0],
        "ids": sorted(protected["ids"])[0],
    }
    for kind, value in planted.items():
        assert len(leaks(text + f"\n{value}\n", protected)) >= 1, kind
    window = protected["windows"][0]
    for encoded in (window.hex(), base64.b64encode(b"xy" + window).decode()):
        assert leaks(text + encoded, protected), encoded


def test_a_recipe_holds_no_plain_sha256_of_a_report_or_any_other_file_but_the_anchors(corpus, recipe):
    """A plain SHA-256 of a short report confirms a guessed one byte for byte (a normal study is one
    sentence): every input file but the sources' tables (the anchors) is listed sealed."""
    from pipelines.tools.recipe import parse_inputs

    text = "\n".join(path.read_text() for path in sorted(recipe.rglob("*")) if path.is_file())
    doc = read_recipe(recipe)
    roots = {
        name: entry["root"] for name, entry in yaml.safe_load((corpus / "build.yaml").read_text())["sources"].items()
    }
    reports = sorted((corpus / roots["mimic"] / "files").rglob("*.txt"))
    assert len(reports) >= STUDIES
    for path in reports:
        assert hashlib.sha256(path.read_bytes()).hexdigest() not in text, path
    anchors = {}
    for name in doc.sources:
        listing = parse_inputs((recipe / "inputs" / f"{name}.sha256").read_text(), name)
        assert listing.anchors and not set(listing.anchors) & set(listing.sealed), name
        anchors.update({(corpus / roots[name] / rel).resolve(): digest for rel, digest in listing.anchors.items()})
    assert {path.relative_to(corpus).parts[0] for path in anchors} == set(roots.values())
    for path in sorted(corpus.rglob("*")):
        if path.is_file() and path.resolve() not in anchors:
            assert hashlib.sha256(path.read_bytes()).hexdigest() not in text, path
    for path, digest in anchors.items():  # the tables are published plain: sha256sum -c checks them
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest and not path.name.endswith((".txt", ".dcm"))
    sealed = [
        line for line in (recipe / "inputs" / "mimic.sha256").read_text().splitlines() if line.startswith("sealed:")
    ]
    assert len(sealed) == len(reports) + 15 and all(re.fullmatch(r"sealed:[0-9a-f]{32}  files/\S+", s) for s in sealed)


def test_row_ids_tell_labels_which_is_why_a_recipe_lists_none(build):
    """The issue asked for row ids in the recipe; an id hashes its variant (``abnormality_detection``
    rows are ``all`` or ``none``), so anyone with the image keys would read each image's answer."""
    rows = [
        row
        for path in sorted((build / "instructions/m4cxr/abnormality_detection").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]
    assert rows
    for row in rows:
        guessed = next(
            v
            for v in ("all", "none")
            if instruction_id("m4cxr", "abnormality_detection", row["image_keys"], v) == row["id"]
        )
        assert (guessed == "all") == json.loads(row["target"])["abnormal"]


# ------------------------------------------------------------------------------------ refusals


def test_recipe_is_deterministic_and_refuses_what_it_cannot_vouch_for(corpus, build, recipe, tmp_path):
    again = tmp_path / "again"
    result = CliRunner().invoke(main, ["recipe", str(build), "--dest", str(again)])
    assert result.exit_code == 0, result.output
    assert "hashed" in result.output and "MB/s" in result.output
    assert {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()} == {
        p.relative_to(recipe): p.read_bytes() for p in recipe.rglob("*") if p.is_file()
    }
    assert CliRunner().invoke(main, ["recipe", str(build), "--dest", str(again)]).exit_code == 0  # replaces itself
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(main, ["recipe", str(build), "--dest", str(foreign)])
    assert refused.exit_code == 2 and "no recipe" in refused.output and (foreign / "notes.txt").exists()
    touched = sorted((corpus / "vindr-cxr" / "train").glob("*.dicom"))[0]
    stat = touched.stat()
    os.utime(touched, (stat.st_atime, stat.st_mtime + 60))
    try:
        refused = CliRunner().invoke(main, ["recipe", str(build), "--dest", str(tmp_path / "late")])
    finally:
        os.utime(touched, (stat.st_atime, stat.st_mtime))
    assert refused.exit_code == 2 and "inputs of vindr are not the ones the build read" in refused.output


def test_hydrate_refuses_a_torn_recipe_other_versions_and_foreign_sources(corpus, recipe, tmp_path, monkeypatch):
    torn = tmp_path / "torn"
    shutil.copytree(recipe, torn)
    sealed = torn / SEALED_FILE
    sealed.write_text(sealed.read_text()[:-40])
    result = hydrate(torn, corpus / "build.yaml", tmp_path / "out")
    assert result.exit_code == 2 and "sealed.tsv is not the file recipe.json lists" in result.output, result.output
    with pytest.raises(Exception, match="make or download the recipe again"):
        read_recipe(torn)
    import pipelines.tools.hydrate as module

    monkeypatch.setattr(module, "versions", lambda: {**read_recipe(recipe).doc["versions"], "pyarrow": "0.0.1"})
    result = hydrate(recipe, corpus / "build.yaml", tmp_path / "out")
    assert result.exit_code == 2 and "pyarrow" in result.output and "--other-versions" in result.output
    result = hydrate(recipe, corpus / "build.yaml", tmp_path / "out", "--check-only")  # inputs need no versions
    assert result.exit_code == 0 and "all match" in result.output, result.output
    monkeypatch.undo()
    malformed = tmp_path / "malformed"
    shutil.copytree(recipe, malformed)
    doc = json.loads((malformed / "recipe.json").read_text())
    del doc["sealed"]
    (malformed / "recipe.json").write_text(json.dumps(doc))
    result = hydrate(malformed, corpus / "build.yaml", tmp_path / "out")
    assert result.exit_code == 2 and "lacks ['sealed']" in result.output and result.exception is not None
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text("sources:\n  chexmask: {root: %s}\n" % (corpus / "chexmask"))
    result = hydrate(recipe, nothing, tmp_path / "out")
    assert result.exit_code == 2 and "only annotate other" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_sealed_lines_are_not_in_image_order_and_carry_no_ids(recipe):
    doc = read_recipe(recipe)
    lines = (recipe / SEALED_FILE).read_text().splitlines()[1:]
    tags = [line.split("\t")[0] for line in lines]
    assert tags == sorted(tags) and len(set(tags)) == len(tags) == doc.doc["sealed"]["images"]
    keys = {key for name in doc.sources for key in doc.image_keys(name)}
    assert not any(key.split("/", 1)[1] in "\n".join(lines) for key in keys)
    # every line has the same shape: 16 hex digits per cell, every cell filled, no source or task pattern in clear
    assert {tuple(len(cell) for cell in line.split("\t")) for line in lines} == {
        (16,) * (len(doc.doc["sealed"]["groups"]) + 2)
    }
    assert all(re.fullmatch(r"[0-9a-f\t]+", line) for line in lines)
    assert hashlib.sha256((recipe / "recipe.json").read_bytes()).hexdigest() == doc.sha256


def test_sealed_lines_of_images_with_different_task_patterns_look_alike(build, recipe):
    """Which tasks have rows on an image, and what its rows rest on, is sealed: two images with different
    patterns give lines of one shape, and only each image's own secret opens its rests_on."""
    from pipelines.tools.recipe import hex64, open_rests_on, seal_build

    sealed = seal_build(str(build), json.loads((build / "manifest.json").read_text()))
    patterns = {tuple(sealed.present[i]): i for i in range(len(sealed.keys))}
    assert len(patterns) >= 2
    first, second = list(patterns.values())[:2]
    lines = {line.split("\t")[0]: line for line in (recipe / SEALED_FILE).read_text().splitlines()[1:]}
    a, b = (lines[hex64(int(sealed.tags[i]))].split("\t") for i in (first, second))
    assert [len(cell) for cell in a] == [len(cell) for cell in b] and all(
        re.fullmatch("[0-9a-f]{16}", c) for c in a + b
    )
    assert sealed.rests_on[sealed.keys[first]] == open_rests_on(sealed.secrets[sealed.keys[first]], int(a[1], 16))
    assert open_rests_on(sealed.secrets[sealed.keys[second]], int(a[1], 16)) != sealed.rests_on[sealed.keys[first]]


def test_a_local_path_is_found_whole_not_inside_a_url():
    from pipelines.tools.recipe import names_local_path

    assert not names_local_path("https://physionet.org/content/mimic-cxr/2.0.0/", "/content/mimic-cxr")
    assert names_local_path("/content/mimic-cxr", "/content/mimic-cxr")
    assert names_local_path("read from /content/mimic-cxr/files", "/content/mimic-cxr")
    assert not names_local_path("/content/mimic-cxr-jpg", "/content/mimic-cxr")
