"""Exports of a small synthetic build, each read back by a consumer of that format.

``llava``: a re-implementation of what LLaVA's ``LazySupervisedDataset`` requires of its JSON;
``messages``: rendered through a chat template with a tokenizer built here (no hub access);
``chexmix``: token layout checked against the VQ table and the tokenizer that made it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from builds import synthetic_build
from schemas.config import PROFILES
from pipelines.export import (ChexmixOptions, ExportError, chexmix_ids, export, export_command, image_file_name,
                              llava_record, messages_record, vq_lookup)
from transforms.hashing import stable_hash

BEGIN, END = 8197, 8196
# LLaVA-1.5 style (as in llava-hf processors): images of a turn first, then its text.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@pytest.fixture(scope="module")
def build_out(tmp_path_factory) -> Path:
    out = synthetic_build(tmp_path_factory, studies=4, seed=3)
    write_vq_table(out)
    return out


def write_vq_table(out: Path, fingerprint_column: str = "tokenizer") -> None:
    """``OUT/vq`` with the tokenizer stage's schema: fake but deterministic codes for every image."""
    schema = pa.schema([("image_key", pa.string()), ("codes", pa.list_(pa.int16(), 1024)),
                        ("lm_ids", pa.list_(pa.int32(), 1024)), (fingerprint_column, pa.string())])
    (out / "vq").mkdir()
    for shard in sorted((out / "images").glob("*.parquet")):
        keys = pq.read_table(shard, columns=["image_key"])["image_key"].to_pylist()
        codes = [np.random.default_rng(stable_hash("vq", key)).integers(0, 8192, 1024).astype(np.int16) for key in keys]
        table = pa.table({"image_key": keys, "codes": [c.tolist() for c in codes],
                          "lm_ids": [(c.astype(np.int32) + 4).tolist() for c in codes],
                          fingerprint_column: ["test-vqgan"] * len(keys)}, schema=schema)
        pq.write_table(table, out / "vq" / shard.name)


def instruction_rows(out: Path, profile: str) -> list[dict]:
    return [row for path in sorted((out / "instructions" / profile).glob("*/*.parquet"))
            for row in pq.read_table(path).to_pylist()]


def word_tokenizer(out: Path, path: Path):
    """A word-level tokenizer over the build's texts; ids 0..8197 are reserved like Chameleon's image range."""
    tokenizers = pytest.importorskip("tokenizers")
    words = sorted({w for profile in PROFILES for row in instruction_rows(out, profile)
                    for turn in row["conversations"] for w in re.findall(r"\w+|[^\w\s]", turn["value"])})
    vocab = {f"<reserved{i:05d}>": i for i in range(8198)}
    for token in ["<unk>", "<s>", "</s>", *words]:
        vocab.setdefault(token, len(vocab))
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<image>"])
    tokenizer.save(str(path))
    return tokenizer


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ file names


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=20, unique=True))
def test_image_file_names_are_safe_and_unique(natives):
    names = [image_file_name(f"padchest/{native}") for native in natives]
    assert len(set(names)) == len(names)
    for name in names:
        source, _, file = name.partition("/")
        assert source == "padchest" and re.fullmatch(r"[A-Za-z0-9._-]+\.png", file) and not file.startswith(".")


def test_image_file_names_keep_readable_ids():
    assert image_file_name("mimic/02aa804e-bde0afdd") == "mimic/02aa804e-bde0afdd.png"
    assert image_file_name("padchest/216840111366964.png") == "padchest/216840111366964.png.png"
    assert re.fullmatch(r"siim/a_b-[0-9a-f]{8}\.png", image_file_name("siim/a b"))
    with pytest.raises(ExportError):
        image_file_name("no-source")


# ------------------------------------------------------------------ llava


def llava_items(json_path: Path, image_folder: Path, size: int = 512) -> list[dict]:
    """What LLaVA's training data loader demands: ``<image>`` slots matched by existing images, and
    human/gpt turns alternating from a human turn. Returns the items with their images decoded."""
    items = json.loads(json_path.read_text(encoding="utf-8"))
    assert isinstance(items, list)
    loaded = []
    for item in items:
        files = [item["image"]] if "image" in item else item.get("images", [])
        assert not ("image" in item and "images" in item)
        turns = item["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) + ["human"] * (len(turns) % 2)
        assert sum(t["value"].count("<image>") for t in turns) == len(files)
        assert all("<image>" not in t["value"] for t in turns if t["from"] == "gpt")
        pixels = [cv2.imread(str(image_folder / name), cv2.IMREAD_UNCHANGED) for name in files]
        assert all(p is not None and p.shape == (size, size) for p in pixels)
        loaded.append({**item, "pixels": pixels})
    return loaded


def test_llava_export_is_read_by_the_llava_contract(build_out, tmp_path):
    report = export(build_out, "m4cxr", "llava", tmp_path / "a")
    rows = instruction_rows(build_out, "m4cxr")
    by_id = {row["id"]: row for row in rows}
    total = 0
    for split, count in report["rows"].items():
        items = llava_items(tmp_path / "a" / f"{split}.json", tmp_path / "a" / "images")
        assert len(items) == count
        for item in items:
            row = by_id[item["id"]]
            assert item["conversations"] == row["conversations"]
            named = [item["image"]] if "image" in item else item["images"]  # multi-image rows list them all
            assert named == [image_file_name(key) for key in row["image_keys"]]
        total += count
    assert total == len(rows) and report["images"] == len({k for row in rows for k in row["image_keys"]})
    export(build_out, "m4cxr", "llava", tmp_path / "b")
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")


def test_a_profile_with_an_input_size_exports_its_images_at_that_size(build_out, tmp_path):
    report = export(build_out, "medivlm", "llava", tmp_path / "m")
    assert report["image_size"] == 224 and report["images"] > 0
    shapes = {cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape for path in (tmp_path / "m" / "images").rglob("*.png")}
    assert shapes == {(224, 224)}
    assert export(build_out, "m4cxr", "llava", tmp_path / "a")["image_size"] is None  # m4cxr keeps 512


def test_llava_split_filter_and_missing_profile(build_out, tmp_path):
    report = export(build_out, "m4cxr", "llava", tmp_path / "t", splits=("test",))
    assert list(report["rows"]) == ["test"] and not (tmp_path / "t" / "train.json").exists()
    with pytest.raises(ExportError, match="no profile"):
        export(build_out, "nope", "llava", tmp_path / "n")


MULTI = {"id": "r1", "task": "t", "source": "mimic", "split": "train",
         "image_keys": ["mimic/frontal", "mimic/lateral"],
         "conversations": [{"from": "human", "value": "<image>\n<image>\nDescribe the study."},
                           {"from": "gpt", "value": "No acute findings."}]}


def test_multi_image_rows_list_images_in_order():
    assert llava_record(MULTI)["images"] == ["mimic/frontal.png", "mimic/lateral.png"]
    assert messages_record(MULTI)["messages"][0]["content"] == [
        {"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe the study."}]


@pytest.mark.parametrize("change, message", [
    ({"image_keys": ["mimic/frontal"]}, "2 <image> slots for 1 images"),
    ({"conversations": [{"from": "gpt", "value": "<image><image>"}]}, "expected 'human'"),
])
def test_bad_rows_raise(change, message):
    with pytest.raises(ExportError, match=message):
        llava_record({**MULTI, **change})


# ------------------------------------------------------------------ messages


def test_messages_render_through_a_chat_template(build_out, tmp_path):
    transformers = pytest.importorskip("transformers")
    word_tokenizer(build_out, tmp_path / "tokenizer.json")
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                                                     unk_token="<unk>", chat_template=CHAT_TEMPLATE)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    report = export(build_out, "imt-cxr", "messages", tmp_path / "m")
    seen = 0
    for split in report["rows"]:
        for line in (tmp_path / "m" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            text = tokenizer.apply_chat_template(item["messages"], tokenize=False)
            ids = tokenizer.apply_chat_template(item["messages"], tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
            assert text.count("<image>") == len(item["images"]) == ids.count(image_id) == 1
            assert text.startswith("USER: <image>\n") and "ASSISTANT: " in text
            assert all((tmp_path / "m" / "images" / name).is_file() for name in item["images"])
            seen += 1
    assert seen == sum(report["rows"].values()) == len(instruction_rows(build_out, "imt-cxr"))


# ------------------------------------------------------------------ chexmix


def test_chexmix_sequences_interleave_vq_codes_and_report_tokens(build_out, tmp_path):
    tokenizer = word_tokenizer(build_out, tmp_path / "tokenizer.json")
    vq = {row["image_key"]: row["lm_ids"] for path in sorted((build_out / "vq").glob("*.parquet"))
          for row in pq.read_table(path).to_pylist()}
    options = ChexmixOptions(tokenizer_path=str(tmp_path / "tokenizer.json"))
    report = export(build_out, "chexmix", "chexmix", tmp_path / "c", chexmix=options)
    assert report["truncated_rows"] == 0 and report["tokenizer_fingerprint"] == "test-vqgan"
    rows = {row["id"]: row for row in instruction_rows(build_out, "chexmix")}
    sequences = [r for p in sorted((tmp_path / "c").rglob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(sequences) == len(rows) == sum(report["rows"].values())
    for seq in sequences:
        ids, key = seq["input_ids"], seq["image_keys"][0]
        report_text = rows[seq["id"]]["conversations"][1]["value"]
        assert ids[0] == BEGIN and ids[1:1025] == vq[key] and ids[1025] == END
        assert ids[1026:] == tokenizer.encode(report_text, add_special_tokens=False).ids
        assert seq["num_tokens"] == len(ids) <= 1300 and seq["num_image_tokens"] == 1026

    short = ChexmixOptions(tokenizer_path=str(tmp_path / "tokenizer.json"), max_length=1040, eos_token="</s>")
    cut = export(build_out, "chexmix", "chexmix", tmp_path / "s", chexmix=short)
    cut_rows = [r for p in sorted((tmp_path / "s").rglob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    full = {s["id"]: s["input_ids"] for s in sequences}
    assert cut["truncated_rows"] == sum(r["truncated_tokens"] > 0 for r in cut_rows) > 0
    for row in cut_rows:
        assert row["num_tokens"] <= 1040 and row["input_ids"][:1026] == full[row["id"]][:1026]
        assert row["num_tokens"] + row["truncated_tokens"] == len(full[row["id"]]) + 1  # + EOS
    export(build_out, "chexmix", "chexmix", tmp_path / "c2", chexmix=options)
    assert file_digests(tmp_path / "c") == file_digests(tmp_path / "c2")

    with pytest.raises(ExportError, match="exceed max_length"):
        export(build_out, "chexmix", "chexmix", tmp_path / "x",
               chexmix=ChexmixOptions(tokenizer_path=str(tmp_path / "tokenizer.json"), max_length=1000))


@pytest.mark.parametrize("profile", ["radixpert", "medivlm"])
def test_the_new_profiles_export_in_every_format(build_out, tmp_path, profile):
    rows = {row["id"]: row for row in instruction_rows(build_out, profile)}
    assert rows
    llava = export(build_out, profile, "llava", tmp_path / "l")
    items = [item for split in llava["rows"] for item in llava_items(tmp_path / "l" / f"{split}.json",
                                                                      tmp_path / "l" / "images", size=224)]
    assert sorted(item["id"] for item in items) == sorted(rows)
    messages = export(build_out, profile, "messages", tmp_path / "m")
    assert messages["rows"] == llava["rows"] and messages["image_size"] == 224
    word_tokenizer(build_out, tmp_path / "tokenizer.json")
    chexmix = export(build_out, profile, "chexmix", tmp_path / "c",
                     chexmix=ChexmixOptions(tokenizer_path=str(tmp_path / "tokenizer.json")))
    sequences = [r for p in sorted((tmp_path / "c").rglob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert sorted(s["id"] for s in sequences) == sorted(rows)  # region prompts may be cut at 1300 tokens
    assert chexmix["truncated_rows"] == sum(s["truncated_tokens"] > 0 for s in sequences)


def test_vq_lookup_reads_either_fingerprint_column(build_out, tmp_path):
    shutil.copytree(build_out / "images", tmp_path / "images")
    write_vq_table(tmp_path, "tokenizer_fingerprint")
    key = pq.read_table(sorted((tmp_path / "images").glob("*.parquet"))[0])["image_key"][0].as_py()
    assert vq_lookup(tmp_path, [key]) == vq_lookup(build_out, [key])
    assert vq_lookup(tmp_path, ["mimic/absent"]) == ({}, set())


def test_chexmix_rejects_missing_codes_and_clashing_vocabulary():
    row = {**MULTI, "image_keys": ["mimic/frontal"], "conversations": [
        {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "clear"}]}
    options = ChexmixOptions(tokenizer_path="unused")
    with pytest.raises(ExportError, match="no VQ codes"):
        chexmix_ids(row, {}, lambda text: [9000], options)
    with pytest.raises(ExportError, match="image id range"):
        chexmix_ids(row, {"mimic/frontal": [4] * 1024}, lambda text: [17], options)
    good = chexmix_ids(row, {"mimic/frontal": [4] * 1024}, lambda text: [9000, 9001], options, bos_id=8300)
    assert good["input_ids"][:2] == [8300, BEGIN] and good["input_ids"][-2:] == [9000, 9001]


def test_cli(build_out, tmp_path):
    runner = CliRunner()
    result = runner.invoke(export_command, [str(build_out), "--profile", "m4cxr", "--format", "llava",
                                            "--dest", str(tmp_path / "l")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["format"] == "llava"
    result = runner.invoke(export_command, [str(build_out), "--profile", "chexmix", "--format", "chexmix",
                                            "--dest", str(tmp_path / "c")])
    assert result.exit_code != 0 and "--tokenizer" in result.output
