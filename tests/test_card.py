"""The dataset card: Hub configs whose globs load, counts that match the tables, licences and citations
for every contributing source, deterministic plots, and statistics read without the image column."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from builds import writable_copy

from pipelines.output.manifest import Manifest
from pipelines.tools import card


@pytest.fixture(scope="module")
def build(clean_build, tmp_path_factory) -> Path:
    out = writable_copy(clean_build.out, tmp_path_factory.mktemp("card") / "out")
    card.write_card(out)
    return out


def front_matter(out: Path) -> tuple[dict, str]:
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_every_config_glob_loads_the_rows_the_manifest_counts(build):
    meta, _ = front_matter(build)
    manifest = Manifest.read(str(build))
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert len(configs) == len(manifest["tables"])
    for table_dir, splits in manifest["tables"].items():
        entry = configs[card.config_name(table_dir)]
        assert {f["split"] for f in entry["data_files"]} == set(splits)
        for data_file in entry["data_files"]:
            files = sorted(str(p) for p in build.glob(data_file["path"]))
            rows = datasets.load_dataset("parquet", data_files=files, split="train").num_rows
            assert rows == splits[data_file["split"]], (table_dir, data_file)
    assert configs["rejects"]["data_files"] == [{"split": "rejects", "path": "rejects/rejects-*.parquet"}]


def test_licences_access_and_citations_of_every_contributing_source(build):
    meta, body = front_matter(build)
    sources = card.load_sources()
    manifest = Manifest.read(str(build))
    assert meta["license"] == "other"
    assert set(card.contributing_sources(manifest)) == {
        "mimic",
        "vindr",
        "chexmask",
        "siim",
        "imagenome",
        "padchest",
        "mimic_cxr_vqa",
        "mimic_diff_vqa",
    }
    for name in card.contributing_sources(manifest):
        entry = sources["sources"][name]
        assert entry["licence"] in body and entry["access_note"] in body
        assert entry["citation"].splitlines()[0] in body
    for profile in manifest["profiles"]:
        citation = sources["methods"][profile].get("citation")
        assert citation is None or citation.splitlines()[0] in body
    assert "citation" not in sources["methods"]["radixpert"]
    assert "Radixpert (profile `radixpert`) has no citation entry here" in body
    assert "credentialed" in body and "no sharing" in body and "Kaggle competition rules" in body
    assert "not tokenized" in body


def test_label_table_matches_a_direct_count_of_the_annotations(build):
    _, body = front_matter(build)
    table = pq.read_table(build / "annotations", columns=["findings"]).to_pylist()
    direct = Counter((f["name"], f["presence"]) for row in table for f in row["findings"])
    for name in ("Cardiomegaly", "Pleural Effusion", "No Finding"):
        cells = [direct[(name, value)] for value, _ in card.PRESENCE_COLUMNS]
        assert f"| {name} | " + " | ".join(map(str, cells)) + " |" in body


def test_reject_summary_and_counts_per_task(build):
    _, body = front_matter(build)
    rejects = pq.read_table(build / "rejects").to_pylist()
    by_reason = Counter((r["source"], r["stage"], r["kind"], r["reason"]) for r in rejects)
    for (source, stage, kind, reason), n in by_reason.items():
        assert f"| {source} | {stage} | {kind} | {reason} | {n} |" in body
    manifest = Manifest.read(str(build))
    mimic = manifest["instructions"]["m4cxr"]["disease_classification"]["mimic"]
    assert (
        "| m4cxr | disease_classification | mimic | "
        + " | ".join(str(mimic.get(s, 0)) for s in card.SPLITS)
        + f" | {sum(mimic.values())} |"
        in body
    )


def test_a_section_per_profile_with_its_method_size_tasks_and_rows(build):
    _, body = front_matter(build)
    manifest = Manifest.read(str(build))
    profiles = body.split("## Profiles\n\n", 1)[1].split("\n## ", 1)[0]
    assert [line for line in profiles.splitlines() if line.startswith("### ")] == [
        "### chexmix (CheXmix)",
        "### imt-cxr (IMT-CXR)",
        "### m4cxr (M4CXR)",
        "### medivlm (MediVLM)",
        "### radixpert (Radixpert)",
    ]
    rows = sum(
        manifest["instructions"]["medivlm"]["report_severity"][s][split]
        for s in manifest["instructions"]["medivlm"]["report_severity"]
        for split in manifest["instructions"]["medivlm"]["report_severity"][s]
    )
    assert f"`report_severity` (weight 0.5, {rows:,} rows)" in profiles
    assert "Images at 224x224" in profiles.split("### radixpert")[1]
    assert "Images at" not in profiles.split("### m4cxr")[1].split("###")[0]  # m4cxr keeps the build's canvas
    idf = manifest["severity_idf"]
    assert f"fitted on {idf['n_documents']:,} train reports" in profiles.split("### medivlm")[1]


def test_plots_are_embedded_and_byte_identical_on_a_second_write(build):
    _, body = front_matter(build)
    plots = sorted((build / "card").glob("*.png"))
    assert [p.name for p in plots] == ["boxes_per_image.png", "ctr_histogram.png", "label_distribution.png"]
    for plot in plots:
        assert f"](card/{plot.name})" in body
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"matplotlib" not in plot.read_bytes()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in plots}
    readme = (build / "README.md").read_bytes()
    card.write_card(build)
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in plots}
    assert readme == (build / "README.md").read_bytes()


def test_statistics_never_read_the_image_column(build, monkeypatch):
    asked: list[list[str]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, columns=None, **kwargs):
        asked.append(list(columns or []))
        return real(self, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("card read a whole table"))
    stats = card.card_statistics(build)
    assert asked and all(columns and "image" not in columns for columns in asked)
    assert sum(stats.images.values()) == sum(Manifest.read(str(build))["tables"]["images"].values())


def test_tokenizer_fingerprint_comes_from_the_vq_table(build, tmp_path):
    import pyarrow as pa

    files = []
    for split, fingerprint in (("train", "sha256:abc"), ("test", "sha256:abc")):
        path = tmp_path / f"{split}-00000-of-00001.parquet"
        pq.write_table(pa.table({"image_key": ["k"], "tokenizer": [fingerprint]}), path)
        files.append(path)
    assert card.tokenizer_fingerprints(files) == ["sha256:abc"]
    pq.write_table(pa.table({"image_key": ["k"]}), files[0])
    with pytest.raises(ValueError, match="'tokenizer'"):
        card.tokenizer_fingerprints(files)


def test_a_source_without_licence_facts_is_an_error(build):
    manifest = Manifest.read(str(build))
    manifest["counts"]["chexpert"] = {"read": 3, "written": 3, "rejected": {}, "filtered": {}}
    with pytest.raises(ValueError, match="chexpert"):
        card.render_card(manifest, card.card_statistics(build), card.load_sources(), manifest["tables"], [])


def test_a_vq_table_gets_a_config_and_its_fingerprint_in_the_card(build, tmp_path):
    import shutil

    import pyarrow as pa

    out = tmp_path / "out"
    shutil.copytree(build, out)
    (out / "vq" / "_rejects").mkdir(parents=True)
    pq.write_table(
        pa.table({"image_key": ["a", "b"], "tokenizer": ["chameleon-7b:1234abcd"] * 2}),
        out / "vq" / "train-00000-of-00001.parquet",
    )
    pq.write_table(pa.table({"key": ["c"]}), out / "vq" / "_rejects" / "train-00000-of-00001.parquet")
    card.write_card(out)
    meta, body = front_matter(out)
    vq = next(c for c in meta["configs"] if c["config_name"] == "vq")
    assert vq["data_files"] == [{"split": "train", "path": "vq/train-*.parquet"}]
    assert "`chameleon-7b:1234abcd`" in body and "not tokenized" not in body


def test_config_names_are_unique_and_name_only_splits_with_rows(build):
    """`datasets` fails on a card that names a config twice: ``vq/_rejects`` is ``vq-rejects``, not a second
    ``vq``; a split (or a whole table) without rows has no files, so it gets no data_files entry."""
    tables = {
        **Manifest.read(str(build))["tables"],
        "vq": {"train": 4, "validation": 2},
        "vq/_rejects": {"train": 1, "test": 0},
        "empty": {"train": 0},
    }
    configs = card.hf_configs(tables)
    names = [c["config_name"] for c in configs]
    assert len(names) == len(set(names)) and {"vq", "vq-rejects"} <= set(names) and "empty" not in names
    rejects = next(c for c in configs if c["config_name"] == "vq-rejects")
    assert rejects["data_files"] == [{"split": "train", "path": "vq/_rejects/train-*.parquet"}]
    vq = next(c for c in configs if c["config_name"] == "vq")
    assert [f["split"] for f in vq["data_files"]] == ["train", "validation"]
    assert card.SPLITS == ("train", "validation", "test")
    with pytest.raises(ValueError, match="both make card config 'vq'"):
        card.hf_configs({"vq": {"train": 1}, "_vq": {"train": 1}})


def test_a_tokenized_build_card_has_one_vq_config_per_table(build, tmp_path):
    """With tokenize rejects the manifest lists ``vq`` and ``vq/_rejects``: two configs, two names."""
    import shutil

    import pyarrow as pa

    from schemas.tables import REJECTS

    out = tmp_path / "out"
    shutil.copytree(build, out)
    (out / "vq" / "_rejects").mkdir(parents=True)
    pq.write_table(
        pa.table({"image_key": ["a"], "tokenizer": ["untrained-1234"]}), out / "vq" / "train-00000-of-00001.parquet"
    )
    reject = {
        "key": "mimic/x",
        "source": "mimic",
        "stage": "tokenize",
        "kind": "rejected",
        "level": "record",
        "reason": "value-error",
        "detail": "broken png",
    }
    pq.write_table(
        pa.Table.from_pylist([reject], schema=REJECTS.arrow_schema),
        out / "vq" / "_rejects" / "test-00000-of-00001.parquet",
    )
    (out / "vq" / "tokenizer.json").write_text('{"id": "untrained-1234"}')
    from pipelines.output.manifest import record_vq_outputs

    record_vq_outputs(str(out))
    card.write_card(out)
    meta, _ = front_matter(out)
    names = [c["config_name"] for c in meta["configs"]]
    assert names.count("vq") == 1 and names.count("vq-rejects") == 1 and len(names) == len(set(names))
    loaded = datasets.load_dataset(str(out), name="vq-rejects", split="test", cache_dir=str(tmp_path / "cache"))
    assert loaded["key"] == ["mimic/x"]
