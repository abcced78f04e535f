"""The chexmix export (pipelines/training/export_chexmix.py) on a small synthetic build with a fake but deterministic
VQ table, read back with tokenizers built here (no hub): a RadPhi-2-like byte-level BPE whose ids start at
0 (CheXmix's base model), and a Chameleon-like vocabulary whose image tokens sit at 4..8195."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builds import writable_copy
from click.testing import CliRunner
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pipelines.training.export_chexmix import (
    VqCodes,
    length_report,
    lengths_command,
    options_from_cli,
    percentile,
    write_chexmix,
)
from pipelines.training.export_source import Mixture, mixture_rows
from transforms.chexmix_tokens import (
    CODES_PER_IMAGE,
    IGNORE,
    ChexmixOptions,
    chexmix_sequence,
    preset_options,
    prompt_units,
    remove_units,
    resolve_layout,
    shortened_rows,
)
from transforms.export_records import ExportError
from transforms.hashing import stable_hash

tokenizers = pytest.importorskip("tokenizers")

CODEBOOK = 8192


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def build_out(clean_build, tmp_path_factory) -> Path:
    out = writable_copy(clean_build.out, tmp_path_factory.mktemp("chexmix") / "out")
    write_vq_table(out)
    return out


def write_vq_table(out: Path, fingerprint: str = "test-vqgan") -> None:
    """``OUT/vq`` with the tokenize stage's schema: codes drawn from the image key, ``lm_ids`` code + 4."""
    schema = pa.schema(
        [
            ("image_key", pa.string()),
            ("codes", pa.list_(pa.int16(), CODES_PER_IMAGE)),
            ("lm_ids", pa.list_(pa.int32(), CODES_PER_IMAGE)),
            ("tokenizer", pa.string()),
        ]
    )
    (out / "vq").mkdir(exist_ok=True)
    for shard in sorted((out / "images").glob("*.parquet")):
        keys = sorted(pq.read_table(shard, columns=["image_key"])["image_key"].to_pylist())
        codes = [fake_codes(key) for key in keys]
        pq.write_table(
            pa.table(
                {
                    "image_key": keys,
                    "codes": [c.tolist() for c in codes],
                    "lm_ids": [(c.astype(np.int32) + 4).tolist() for c in codes],
                    "tokenizer": [fingerprint] * len(keys),
                },
                schema=schema,
            ),
            out / "vq" / shard.name,
            row_group_size=8,
        )


def fake_codes(key: str) -> np.ndarray:
    return np.random.default_rng(stable_hash("vq", key)).integers(0, CODEBOOK, CODES_PER_IMAGE).astype(np.int16)


def all_rows(out: Path, profile: str) -> list[dict]:
    return [
        row
        for path in sorted((out / "instructions" / profile).glob("*/*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]


def build_texts(out: Path) -> list[str]:
    return [
        turn["value"].replace("<image>", " ")
        for path in sorted((out / "instructions").glob("*/*/*.parquet"))
        for row in pq.read_table(path, columns=["conversations"]).to_pylist()
        for turn in row["conversations"]
    ]


@pytest.fixture(scope="module")
def radphi(build_out, tmp_path_factory) -> Path:
    """A byte-level BPE like Phi-2's (ids from 0, ``<|endoftext|>`` its only special token) with
    RadPhi-2's ``<|img|>`` / ``<|/img|>`` added, trained on the build's texts."""
    path = tmp_path_factory.mktemp("tok") / "radphi.json"
    bpe = byte_level_bpe(build_texts(build_out))
    bpe.add_special_tokens(["<|img|>", "<|/img|>"])
    bpe.save(str(path))
    return path


@pytest.fixture(scope="module")
def phi_base(build_out, tmp_path_factory) -> Path:
    """The same without the image tokens (Phi-2 itself)."""
    path = tmp_path_factory.mktemp("tok") / "phi.json"
    byte_level_bpe(build_texts(build_out)).save(str(path))
    return path


def byte_level_bpe(texts: list[str]):
    from tokenizers import decoders, models, pre_tokenizers, trainers

    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=700,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return bpe


def chameleon_vocabulary(words: list[str], misplace: bool = False) -> dict[str, int]:
    """Chameleon's id layout: <s> <pad> </s> <unk>, IMGIMG<code>Z at 4 + code, <eoss> 8196,
    <racm3:break> 8197, reserved tokens up to <reserved08706> = 8710, then words."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for code in range(CODEBOOK):
        vocab["IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"] = 4 + code
    if misplace:  # two image tokens swapped: the map is not code + 4
        a, b = "IMGIMGAZ", "IMGIMGBZ"
        vocab[a], vocab[b] = vocab[b], vocab[a]
    vocab["<eoss>"], vocab["<racm3:break>"] = 8196, 8197
    for number in range(8194, 8707):
        vocab[f"<reserved{number:05d}>"] = number + 4
    for word in words:
        vocab.setdefault(word, len(vocab))
    return vocab


@pytest.fixture(scope="module")
def chameleon(build_out, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "chameleon.json"
    words = sorted({w for text in build_texts(build_out) for w in re.findall(r"\w+|[^\w\s]", text)})
    vocab = chameleon_vocabulary(words)
    word = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    word.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    word.save(str(path))
    return path


def export_to(out: Path, folder: Path, profile: str, options: ChexmixOptions, splits=(), mixture=None):
    folder.mkdir(parents=True)
    report, files = write_chexmix(out, profile, folder, options, splits, mixture)
    return report, files


def read_records(folder: Path) -> list[dict]:
    return [row for path in sorted(folder.rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def m4cxr_export(build_out, radphi, tmp_path_factory):
    folder = tmp_path_factory.mktemp("m4cxr") / "dest"
    report, files = export_to(build_out, folder, "m4cxr", preset_options("chexmix", str(radphi)))
    return folder, report, files


# ------------------------------------------------------------------ vocabulary layouts


def test_after_text_layout_with_a_vocabulary_starting_at_zero(radphi):
    bpe = tokenizers.Tokenizer.from_file(str(radphi))
    vocab = bpe.get_vocab(with_added_tokens=True)
    assert min(vocab.values()) == 0
    layout = resolve_layout(vocab, preset_options("chexmix", str(radphi)))
    size = max(vocab.values()) + 1
    assert layout.placement == "after-text" and layout.text_size == size == layout.image_offset
    assert layout.ids["begin_image"] == vocab["<|img|>"] and layout.ids["end_image"] == vocab["<|/img|>"]
    assert layout.ids["text_start"] == layout.ids["eos"] == vocab["<|endoftext|>"]
    # CheXmix: the mask token right after the codes (58560 for RadPhi-2's 50,368 text ids), then the separator
    assert layout.added == (("<|mask|>", size + CODEBOOK), ("<|answer|>", size + CODEBOOK + 1))
    assert layout.embedding_rows == size + CODEBOOK + 2


def test_the_chameleon_offset_refuses_a_vocabulary_whose_ids_start_there(radphi):
    vocab = tokenizers.Tokenizer.from_file(str(radphi)).get_vocab(with_added_tokens=True)
    with pytest.raises(ExportError, match=r"image ids 4\.\.8195 overlap the text vocabulary.*after-text"):
        resolve_layout(vocab, preset_options("chameleon", str(radphi)))
    # the same tokenizer with Chameleon's begin/end ids but codes after the text is fine
    layout = resolve_layout(
        vocab, preset_options("chameleon", str(radphi), image_offset=None, begin_image="<|img|>", end_image="<|/img|>")
    )
    assert layout.image_offset == max(vocab.values()) + 1


def test_chameleon_layout_accepts_its_own_image_tokens(chameleon):
    vocab = tokenizers.Tokenizer.from_file(str(chameleon)).get_vocab(with_added_tokens=True)
    layout = resolve_layout(vocab, preset_options("chameleon", str(chameleon)))
    assert (layout.image_offset, layout.ids["begin_image"], layout.ids["end_image"]) == (4, 8197, 8196)
    assert layout.ids["separator"] == 8710 and layout.ids["bos"] == 0 and layout.ids["eos"] == 2
    assert layout.ids["text_start"] is None and layout.ids["mask"] is None
    assert layout.image_tokens_in_text == CODEBOOK and layout.added == ()
    assert layout.embedding_rows == max(vocab.values()) + 1
    with pytest.raises(ExportError, match="overlap"):  # an image token whose id is not 4 + its code
        resolve_layout(chameleon_vocabulary(["word"], misplace=True), preset_options("chameleon", str(chameleon)))


def test_missing_special_tokens_are_added_after_the_codes(phi_base):
    vocab = tokenizers.Tokenizer.from_file(str(phi_base)).get_vocab(with_added_tokens=True)
    layout = resolve_layout(vocab, preset_options("chexmix", str(phi_base), bin_tokens=True))
    first = len(vocab) + CODEBOOK
    assert [token for token, _ in layout.added[:4]] == ["<|mask|>", "<|answer|>", "<|img|>", "<|/img|>"]
    assert [token_id for _, token_id in layout.added] == list(range(first, first + len(layout.added)))
    assert len(layout.added) == 4 + 1000 and layout.added[-1] == ("<bin_1000>", layout.embedding_rows - 1)


def test_a_gpt2_style_tokenizer_folder_loads_with_its_added_tokens(build_out, phi_base, tmp_path):
    """RadPhi-2 ships vocab.json + merges.txt + added_tokens.json (no tokenizer.json)."""
    from pipelines.training.export_chexmix import load_tokenizer

    base = tokenizers.Tokenizer.from_file(str(phi_base))
    base.model.save(str(tmp_path))
    size = base.get_vocab_size()
    added = {"  ": size, "<|img|>": size + 1, "<|/img|>": size + 2}
    (tmp_path / "added_tokens.json").write_text(json.dumps(added))
    loaded, defined_by = load_tokenizer(tmp_path)
    assert defined_by == tmp_path / "vocab.json"
    texts = build_texts(build_out)[:200]
    assert [e.ids for e in loaded.encode_batch(texts)] == [e.ids for e in base.encode_batch(texts)]
    ids = loaded.encode("a  b<|img|>", add_special_tokens=False).ids
    assert ids[1] == size and ids[-1] == size + 1 and loaded.decode(ids[:-1]) == "a  b"
    layout = resolve_layout(loaded.get_vocab(with_added_tokens=True), preset_options("chexmix", str(tmp_path)))
    assert (layout.ids["begin_image"], layout.image_offset) == (size + 1, size + 3)
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<|img|>": size + 5}))
    with pytest.raises(ExportError, match="next free id"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"image_offset": 4, "begin_image": "id:5"}, "overlap"),
        ({"image_offset": 100_000, "begin_image": "id:100005"}, "begin_image token id 100005 lies among the image ids"),
        ({"separator": "<|endoftext|>"}, "must be different tokens"),
    ],
)
def test_bad_layouts_are_refused(radphi, changes, message):
    vocab = tokenizers.Tokenizer.from_file(str(radphi)).get_vocab(with_added_tokens=True)
    with pytest.raises(ExportError, match=message):
        resolve_layout(vocab, preset_options("chexmix", str(radphi), **changes))


def test_required_tokens_cannot_be_none(radphi):
    with pytest.raises(ExportError, match="separator token cannot be none"):
        ChexmixOptions(tokenizer_path=str(radphi), separator="none")


# ------------------------------------------------------------------ the export


def decoded_answers(record: dict, bpe, eos: int) -> list[str]:
    """The learned ids of a sequence cut at each eos and decoded."""
    learned = [label for label in record["labels"] if label != IGNORE]
    answers, current = [], []
    for token in learned:
        if token == eos:
            answers.append(bpe.decode(current))
            current = []
        else:
            current.append(token)
    assert current == [], "learned tokens after the last eos"
    return answers


def test_instruction_sequences_mask_the_prompt_and_learn_the_answers(build_out, radphi, m4cxr_export):
    folder, report, files = m4cxr_export
    bpe = tokenizers.Tokenizer.from_file(str(radphi))
    vocabulary = json.loads((folder / "vocabulary.json").read_text())
    special = {role: (entry or {}).get("id") for role, entry in vocabulary["special_tokens"].items()}
    offset = vocabulary["image_codes"]["first_id"]
    rows = {row["id"]: row for row in all_rows(build_out, "m4cxr")}
    records = read_records(folder)
    assert records and {r["id"] for r in records} <= set(rows)
    for record in records:
        row = rows[record["id"]]
        ids, labels = record["input_ids"], record["labels"]
        assert len(ids) == len(labels) == record["num_tokens"] <= 1300
        assert all(label in (IGNORE, token) for token, label in zip(ids, labels))
        # every image is begin-image, offset + its 1024 codes, end-image, and the run ends with text-start
        starts = [i for i, token in enumerate(ids) if token == special["begin_image"]]
        assert len(starts) == len(row["image_keys"])
        for start, key in zip(starts, row["image_keys"]):
            assert ids[start + 1 : start + 1 + CODES_PER_IMAGE] == (fake_codes(key).astype(int) + offset).tolist()
            assert ids[start + 1 + CODES_PER_IMAGE] == special["end_image"]
        assert ids[starts[-1] + CODES_PER_IMAGE + 2] == special["text_start"]
        assert record["num_image_tokens"] == len(starts) * (CODES_PER_IMAGE + 2)
        # the learned tokens are exactly the answers, each closed by eos; nothing of the prompt is learned
        answers = [t["value"].strip() for t in row["conversations"] if t["from"] == "gpt"]
        assert decoded_answers(record, bpe, special["eos"]) == answers
        assert ids.count(special["separator"]) == len(answers)
        for position in (i for i, token in enumerate(ids) if token == special["separator"]):
            assert labels[position] == IGNORE and labels[position + 1] != IGNORE
        assert record["num_loss_tokens"] == sum(label != IGNORE for label in labels)
        assert record["prompt_tokens_removed"] == 0
    assert sum(files.values()) == len(records) == sum(report["rows"].values())


def test_a_phi_model_resized_by_vocabulary_json_trains_on_the_sequences(m4cxr_export):
    """CheXmix's recipe on a tiny randomly initialised Phi: resize the embedding to the export's
    ``embedding_rows``, pad ``input_ids`` with its pad id and ``labels`` with -100, take the loss."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder, _, _ = m4cxr_export
    vocabulary = json.loads((folder / "vocabulary.json").read_text())
    records = sorted(read_records(folder), key=lambda r: r["id"])[:4]
    assert max(max(r["input_ids"]) for r in records) < vocabulary["embedding_rows"]
    torch.manual_seed(0)
    config = transformers.PhiConfig(
        vocab_size=vocabulary["text"]["size"],
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=1300,
    )
    model = transformers.PhiForCausalLM(config)
    model.resize_token_embeddings(vocabulary["embedding_rows"])
    pad = vocabulary["special_tokens"]["pad"]["id"]
    ids = [torch.tensor(r["input_ids"]) for r in records]
    batch = {
        "input_ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=pad),
        "labels": torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(r["labels"]) for r in records], batch_first=True, padding_value=IGNORE
        ),
        "attention_mask": torch.nn.utils.rnn.pad_sequence([torch.ones_like(i) for i in ids], batch_first=True),
    }
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.get_input_embeddings().weight.grad.shape[0] == vocabulary["embedding_rows"]


def test_rows_in_equal_rows_written_plus_dropped(build_out, m4cxr_export):
    folder, report, _ = m4cxr_export
    rows = all_rows(build_out, "m4cxr")
    written = {r["id"] for r in read_records(folder)}
    dropped = [json.loads(line) for line in (folder / "dropped.jsonl").read_text().splitlines()]
    assert len(written) + len(dropped) == len(rows) and written.isdisjoint(d["id"] for d in dropped)
    assert {d["id"] for d in dropped} | written == {r["id"] for r in rows}
    for split in report["read"]:
        assert report["read"][split] == report["rows"][split] + report["dropped"][split]
    # m4cxr's multi-image rows (2 to 5 images of 1026 tokens) cannot fit 1300 tokens: dropped, not an error
    multi = {r["id"] for r in rows if len(r["image_keys"]) > 1}
    assert multi and multi <= {d["id"] for d in dropped}
    assert all(
        d["reason"] == "images alone exceed max_length" and d["tokens"] > 1300 for d in dropped if d["id"] in multi
    )
    lengths = report["chexmix"]["lengths"]
    assert lengths["totals"]["rows"] == len(rows) and lengths["totals"]["dropped"] == len(dropped)
    for task, numbers in lengths["tasks"].items():
        assert numbers["rows"] == numbers["written"] + numbers["dropped"] == numbers["fitting"] + numbers["dropped"]
        assert numbers["dropped"] == sum(1 for d in dropped if d["task"] == task)
        assert (
            numbers["dropped_examples"]
            == [{k: d[k] for k in ("id", "split", "tokens", "images")} for d in dropped if d["task"] == task][:10]
        )


def test_the_length_report_matches_the_written_sequences(build_out, radphi, m4cxr_export):
    folder, report, _ = m4cxr_export
    records = read_records(folder)
    dropped = [json.loads(line) for line in (folder / "dropped.jsonl").read_text().splitlines()]
    tasks = report["chexmix"]["lengths"]["tasks"]
    assert sorted(tasks) == sorted({r["task"] for r in all_rows(build_out, "m4cxr")})
    for task, numbers in tasks.items():
        written = sorted(r["num_tokens"] for r in records if r["task"] == task)
        full = sorted(written + [d["tokens"] for d in dropped if d["task"] == task])
        assert numbers["written_tokens"] == {
            "p50": percentile(written, 50),
            "p95": percentile(written, 95),
            "max": written[-1] if written else None,
        }
        assert numbers["tokens"] == {"p50": percentile(full, 50), "p95": percentile(full, 95), "max": full[-1]}
        assert numbers["fitting"] == len(written)
    # the lengths-only report, which reads no VQ codes, gives the same numbers
    assert length_report(build_out, "m4cxr", preset_options("chexmix", str(radphi))) == report["chexmix"]["lengths"]


def test_pretraining_rows_follow_chexmix_and_learn_everything(build_out, radphi, tmp_path):
    bpe = tokenizers.Tokenizer.from_file(str(radphi))
    vocab = bpe.get_vocab(with_added_tokens=True)
    img, end, eot = vocab["<|img|>"], vocab["<|/img|>"], vocab["<|endoftext|>"]
    offset = max(vocab.values()) + 1
    rows = {row["id"]: row for row in all_rows(build_out, "chexmix")}
    report, _ = export_to(build_out, tmp_path / "a", "chexmix", preset_options("chexmix", str(radphi)))
    records = read_records(tmp_path / "a")
    assert len(records) == len(rows) == sum(report["rows"].values())
    for record in records:
        row = rows[record["id"]]
        text = bpe.encode(row["conversations"][1]["value"].strip(), add_special_tokens=False).ids
        codes = (fake_codes(row["image_keys"][0]).astype(int) + offset).tolist()
        assert record["input_ids"] == [img, *codes, end, eot, *text, eot]  # CheXmix's generate() prefix + report
        assert record["labels"] == record["input_ids"]
    options = preset_options("chexmix", str(radphi), pretraining_image_loss=False)
    export_to(build_out, tmp_path / "b", "chexmix", options)
    for record in read_records(tmp_path / "b"):
        assert record["labels"][: CODES_PER_IMAGE + 2] == [IGNORE] * (CODES_PER_IMAGE + 2)
        assert record["labels"][CODES_PER_IMAGE + 2 :] == record["input_ids"][CODES_PER_IMAGE + 2 :]


def test_chameleon_layout_export(build_out, chameleon, tmp_path):
    bpe = tokenizers.Tokenizer.from_file(str(chameleon))
    report, _ = export_to(build_out, tmp_path / "c", "radixpert", preset_options("chameleon", str(chameleon)))
    rows = {row["id"]: row for row in all_rows(build_out, "radixpert")}
    records = read_records(tmp_path / "c")
    assert len(records) == len(rows) and report["chexmix"]["placement"] == "offset"
    for record in records:
        ids = record["input_ids"]
        key = rows[record["id"]]["image_keys"][0]
        assert ids[:2] == [0, 8197] and ids[2 : 2 + CODES_PER_IMAGE] == (fake_codes(key).astype(int) + 4).tolist()
        assert ids[2 + CODES_PER_IMAGE] == 8196 and ids[-1] == 2
        separator = ids.index(8710)
        assert record["labels"][: separator + 1] == [IGNORE] * (separator + 1)
        answer = rows[record["id"]]["conversations"][1]["value"]
        assert ids[separator + 1 : -1] == bpe.encode(answer.strip(), add_special_tokens=False).ids


def test_reruns_are_byte_identical_and_a_mixture_keeps_stream_order(build_out, radphi, m4cxr_export, tmp_path):
    folder, _, _ = m4cxr_export
    export_to(build_out, tmp_path / "again", "m4cxr", preset_options("chexmix", str(radphi)))
    assert digests(tmp_path / "again") == digests(folder)

    mixture = Mixture(samples=60, seed=1)
    options = preset_options("chexmix", str(radphi))
    report, files = export_to(build_out, tmp_path / "mix", "m4cxr", options, ("train", "test"), mixture)
    sampled, _ = mixture_rows(build_out, "m4cxr", mixture)
    kept = [row["id"] for row in sampled if len(row["image_keys"]) == 1]  # m4cxr's long rows are the multi-image
    mixed = [r["id"] for r in read_records(tmp_path / "mix" / "mixture")]
    assert mixed == kept and report["rows"]["train"] == len(kept)
    assert files["mixture/train-00000-of-00001.parquet"] == len(kept)
    others = [f for f in files if not f.startswith("mixture/")]
    assert others and all(f.split("/")[1].startswith("test-") for f in others)  # the other split mirrors shards
    assert report["mixture"]["samples"] == 60
    assert sum(report["mixture"]["written_after_length_limit"].values()) == len(kept)
    export_to(build_out, tmp_path / "mix2", "m4cxr", options, ("train", "test"), mixture)
    assert digests(tmp_path / "mix2") == digests(tmp_path / "mix")

    # every sampled row dropped: no mixture folder, no file, the draws counted as dropped
    tiny = preset_options("chexmix", str(radphi), max_length=50)
    report, files = export_to(build_out, tmp_path / "none", "m4cxr", tiny, ("train",), Mixture(samples=10))
    assert not (tmp_path / "none" / "mixture").exists() and not files
    assert report["rows"] == {"train": 0} and report["dropped"] == {"train": 10}


def test_rows_are_sequenced_and_written_in_batches(build_out, radphi, m4cxr_export, tmp_path, monkeypatch):
    """With BATCH_ROWS = 3 every output row group holds at most 3 rows and the rows are those of the
    one-batch export, in the same order."""
    from pipelines.training import export_chexmix

    folder, _, files = m4cxr_export
    assert max(pq.ParquetFile(folder / name).metadata.num_rows for name in files) > 3
    monkeypatch.setattr(export_chexmix, "BATCH_ROWS", 3)
    _, batched = export_to(build_out, tmp_path / "b", "m4cxr", preset_options("chexmix", str(radphi)))
    assert batched == files and read_records(tmp_path / "b") == read_records(folder)
    for name in batched:
        metadata = pq.ParquetFile(tmp_path / "b" / name).metadata
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        assert max(sizes) <= 3 and sum(sizes) == batched[name]


# ------------------------------------------------------------------ never cutting an answer


def test_shortening_removes_whole_list_items_and_keeps_the_instruction(build_out, radphi, tmp_path):
    rows = [r for r in all_rows(build_out, "medivlm") if r["task"] == "report_severity_regions"]
    text = max(rows, key=lambda r: len(r["conversations"][0]["value"]))["conversations"][0]["value"]
    lines = text.split("\n")
    units = prompt_units(text)
    assert units and all(lines[line].strip() and line != len(lines) - 1 for line, _ in units)
    shorter = remove_units(text, set(units[-3:]))
    assert shorter.split("\n")[-1] == lines[-1] and shorter.startswith("<image>\n")
    items = lines[2].split("; ")
    assert shorter.split("\n")[2] == "; ".join(items[:-3]) + "."
    assert remove_units(text, set(units)) == "\n".join([lines[0], lines[-1]])

    options = preset_options("chexmix", str(radphi), overflow="shorten", max_length=1180)
    report, _ = export_to(build_out, tmp_path / "s", "medivlm", options)
    records = read_records(tmp_path / "s")
    short = [r for r in records if r["prompt_tokens_removed"] > 0]
    assert len(short) == report["chexmix"]["lengths"]["totals"]["shortened"] == sum(report["shortened"].values()) > 0
    bpe = tokenizers.Tokenizer.from_file(str(radphi))
    eos = bpe.token_to_id("<|endoftext|>")
    by_id = {r["id"]: r for r in all_rows(build_out, "medivlm")}
    for record in short:
        assert record["num_tokens"] <= 1180
        assert decoded_answers(record, bpe, eos) == [by_id[record["id"]]["conversations"][1]["value"].strip()]


def char_encoder(text: str) -> list[int]:
    return [200 + ord(c) % 300 for c in text]


def char_layout():
    vocab = {f"t{i}": i for i in range(500)}
    vocab.update({"<|endoftext|>": 3, "<|img|>": 4, "<|/img|>": 5})
    return resolve_layout(vocab, ChexmixOptions(tokenizer_path="unused"))


_words = st.text(alphabet="abcdefgh .", min_size=1, max_size=25).filter(lambda s: s.strip())


@st.composite
def rows(draw):
    images = draw(st.integers(0, 3))
    context = draw(st.lists(st.lists(_words, min_size=1, max_size=5).map("; ".join), max_size=4))
    question = draw(_words)
    prompt = "\n".join(["<image>"] * images + context + [question]) if images or context else question
    pairs = [(prompt, draw(_words))] + [(draw(_words), draw(_words)) for _ in range(draw(st.integers(0, 2)))]
    task = draw(st.sampled_from(["vqa", "report_pretraining"])) if images == 1 and len(pairs) == 1 else "vqa"
    return {
        "id": "r",
        "task": task,
        "source": "s",
        "split": "train",
        "image_keys": [f"mimic/{i}" for i in range(images)],
        "conversations": [
            turn for q, a in pairs for turn in ({"from": "human", "value": q}, {"from": "gpt", "value": a})
        ],
    }


@settings(max_examples=200, deadline=None)
@given(
    row=rows(),
    shortfall=st.one_of(st.integers(-20, 120), st.integers(-3000, 3000)),
    overflow=st.sampled_from(["drop", "shorten"]),
)
def test_no_answer_is_ever_cut(row, shortfall, overflow):
    """Any row at any limit (mostly near its length): written whole with its answers learned exactly, or
    shortened in its prompt only, or dropped; never cut."""
    layout = char_layout()
    codes = {key: [(n * 7 + i) % CODEBOOK for n in range(CODES_PER_IMAGE)] for i, key in enumerate(row["image_keys"])}
    whole = chexmix_sequence(
        row, codes.__getitem__, char_encoder, layout, ChexmixOptions(tokenizer_path="unused", max_length=10**6)
    )
    max_length = max(1, whole.tokens - shortfall)
    options = ChexmixOptions(tokenizer_path="unused", max_length=max_length, overflow=overflow)
    result = chexmix_sequence(row, codes.__getitem__, char_encoder, layout, options)
    event(result.status)
    assert whole.status == "fits" and result.full_tokens == whole.tokens
    if result.record is None:
        assert result.status == "dropped" and result.full_tokens > max_length
        return
    ids, labels = result.record["input_ids"], result.record["labels"]
    assert len(ids) == len(labels) <= max_length
    assert result.status == ("fits" if whole.tokens <= max_length else "shortened")
    if result.status == "shortened":
        assert overflow == "shorten" and row["task"] != "report_pretraining"
        assert result.record["prompt_tokens_removed"] == whole.tokens - len(ids) > 0
    # image blocks whole and in order
    starts = [i for i, t in enumerate(ids) if t == layout.ids["begin_image"]]
    assert len(starts) == len(row["image_keys"])
    for start, key in zip(starts, row["image_keys"]):
        assert ids[start + 1 : start + 1 + CODES_PER_IMAGE] == [layout.image_offset + c for c in codes[key]]
        assert ids[start + 1 + CODES_PER_IMAGE] == layout.ids["end_image"]
    answers = [t["value"].strip() for t in row["conversations"] if t["from"] == "gpt"]
    eos = layout.ids["eos"]
    if row["task"] == "report_pretraining":
        assert labels == ids and ids[-len(answers[0]) - 1 :] == [*char_encoder(answers[0]), eos]
    else:
        learned = [t for t in labels if t != IGNORE]
        assert learned == [t for answer in answers for t in (*char_encoder(answer), eos)]
        separators = [i for i, t in enumerate(ids) if t == layout.ids["separator"]]
        assert len(separators) == len(answers)
        for position, answer in zip(separators, answers):  # each answer and its eos directly follow a separator
            closed = [*char_encoder(answer), eos]
            assert ids[position + 1 : position + 1 + len(closed)] == closed
            assert labels[position] == IGNORE and labels[position + 1 : position + 1 + len(closed)] == closed


def test_shortened_rows_never_touch_images_or_answers():
    row = {
        "id": "x",
        "task": "vqa",
        "source": "s",
        "split": "train",
        "image_keys": ["a/1"],
        "conversations": [
            {"from": "human", "value": "<image>\nOne: [1]; two: [2]; three: [3].\nFirst. Second.\nAsk?"},
            {"from": "gpt", "value": "Answer; with: parts. Two."},
        ],
    }
    variants = [shorter for _, shorter in shortened_rows(row)]
    assert [v["conversations"][0]["value"] for v in variants] == [
        "<image>\nOne: [1]; two: [2]; three: [3].\nFirst.\nAsk?",
        "<image>\nOne: [1]; two: [2]; three: [3].\nAsk?",
        "<image>\nOne: [1]; two: [2].\nAsk?",
        "<image>\nOne: [1].\nAsk?",
        "<image>\nAsk?",
    ]
    assert all(v["conversations"][1] == row["conversations"][1] for v in variants)


# ------------------------------------------------------------------ the VQ table and bad input


def vq_copy(build_out: Path, tmp_path: Path) -> Path:
    """An OUT with the build's images shard names (empty files) and a copy of its VQ table."""
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    for shard in (build_out / "images").glob("*.parquet"):
        (out / "images" / shard.name).touch()
    shutil.copytree(build_out / "vq", out / "vq")
    return out


def some_keys(out: Path, count: int = 3) -> list[str]:
    return sorted(pq.read_table(sorted((out / "vq").glob("*.parquet"))[0])["image_key"].to_pylist())[:count]


def test_vq_lookup_finds_codes_by_its_key_index(build_out):
    vq = VqCodes(build_out)
    keys = [
        key
        for path in sorted((build_out / "vq").glob("*.parquet"))
        for key in pq.read_table(path)["image_key"].to_pylist()
    ]
    found = vq.lookup(keys[::-1], CODEBOOK)
    assert len(found) == len(keys) and all(found[k].tolist() == fake_codes(k).tolist() for k in keys)
    assert vq.fingerprints == {"test-vqgan"}
    with pytest.raises(ExportError, match="expected 'other'"):
        VqCodes(build_out, expected_fingerprint="other").lookup(keys[:1], CODEBOOK)
    with pytest.raises(ExportError, match="no VQ codes for image mimic/absent"):
        vq.lookup(["mimic/absent"], CODEBOOK)
    with pytest.raises(ExportError, match=r"1024 codes in 0..1023"):
        vq.lookup(keys[:5], 1024)


def test_vq_lookup_reads_each_needed_row_group_once(tmp_path, monkeypatch):
    """Keys spread over 4 shards x 4 row groups (images shards are cut by patient, so every shard spans the
    whole key range): building the index reads only the image_key column, and a lookup reads the codes of
    exactly the row groups that hold a wanted key, each once."""
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "vq").mkdir()
    rng = np.random.default_rng(5)
    keys = [f"mimic/{n:04d}" for n in range(128)]
    shard_of = rng.integers(0, 4, len(keys))
    schema = pa.schema(
        [("image_key", pa.string()), ("codes", pa.list_(pa.int16(), CODES_PER_IMAGE)), ("tokenizer", pa.string())]
    )
    group_of = {}
    for shard in range(4):
        name = f"train-{shard:05d}-of-00004.parquet"
        mine = sorted(k for k, s in zip(keys, shard_of) if s == shard)
        (out / "images" / name).touch()
        pq.write_table(
            pa.table(
                {
                    "image_key": mine,
                    "codes": [fake_codes(k).tolist() for k in mine],
                    "tokenizer": ["test-vqgan"] * len(mine),
                },
                schema=schema,
            ),
            out / "vq" / name,
            row_group_size=-(-len(mine) // 4),
        )
        group_of.update({k: (name, i // -(-len(mine) // 4)) for i, k in enumerate(mine)})
    assert len(set(group_of.values())) == 16

    reads: list[tuple] = []
    read_row_group = pq.ParquetFile.read_row_group

    def counted(self, i, columns=None, **kwargs):
        first_key = self.metadata.row_group(i).column(0).statistics.min  # names the group
        reads.append((first_key, i, tuple(columns or ())))
        return read_row_group(self, i, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    vq = VqCodes(out)
    assert len(reads) == 16 and {columns for *_, columns in reads} == {("image_key",)}
    for batch in (keys[::3], keys[1:40], keys[-2:]):
        reads.clear()
        found = vq.lookup(batch * 2, CODEBOOK)  # a key asked twice is read once
        assert {k: v.tolist() for k, v in found.items()} == {k: fake_codes(k).tolist() for k in batch}
        groups = [(first, group) for first, group, _ in reads]
        assert len(groups) == len(set(groups)) == len({group_of[k] for k in batch})
        assert all("codes" in columns for *_, columns in reads)


def test_vq_table_problems_are_named(build_out, tmp_path):
    out = vq_copy(build_out, tmp_path)
    key = some_keys(out, 1)[0]
    first = sorted((out / "vq").glob("*.parquet"))[0]
    table = pq.read_table(first)
    mixed = table.set_column(3, "tokenizer", pa.array(["other"] + ["test-vqgan"] * (len(table) - 1)))
    pq.write_table(mixed, first)
    with pytest.raises(ExportError, match="2 different tokenizers"):
        VqCodes(out).lookup(table["image_key"].to_pylist(), CODEBOOK)
    pq.write_table(table, first)
    (out / "vq" / "_rejects").mkdir()
    pq.write_table(pa.table({"key": ["mimic/rejected"]}), out / "vq" / "_rejects" / first.name)
    assert VqCodes(out).lookup([key, "mimic/rejected"], CODEBOOK).keys() == {key}
    first.unlink()
    with pytest.raises(ExportError, match="lacks 1 of the"):
        VqCodes(out)


def test_text_holding_a_marker_token_is_refused(radphi):
    from pipelines.training.export_chexmix import prepare

    layout, encoder, _ = prepare(preset_options("chexmix", str(radphi)))
    row = {
        "id": "m",
        "task": "vqa",
        "source": "s",
        "split": "train",
        "image_keys": [],
        "conversations": [{"from": "human", "value": "Is <|img|> here?"}, {"from": "gpt", "value": "no"}],
    }
    with pytest.raises(ExportError, match="begin_image token"):
        chexmix_sequence(row, {}.__getitem__, encoder, layout, preset_options("chexmix", str(radphi)))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_keys": []}, "1 <image> slots for 0 images"),
        ({"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}, "expected 'human'"),
    ],
)
def test_bad_rows_raise(change, message):
    row = {
        "id": "b",
        "task": "vqa",
        "source": "s",
        "split": "train",
        "image_keys": ["a/1"],
        "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
        **change,
    }
    with pytest.raises(ExportError, match=message):
        chexmix_sequence(
            row, lambda key: [0] * CODES_PER_IMAGE, char_encoder, char_layout(), ChexmixOptions(tokenizer_path="unused")
        )


# ------------------------------------------------------------------ command line


def test_the_export_command_writes_dest_with_checksums(build_out, radphi, tmp_path):
    from pipelines.training.export import export_command

    dest = tmp_path / "dest"
    result = CliRunner().invoke(
        export_command,
        [
            str(build_out),
            "--profile",
            "chexmix",
            "--format",
            "chexmix",
            "--dest",
            str(dest),
            "--tokenizer",
            str(radphi),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((dest / "export.json").read_text())
    files = {entry["path"]: entry for entry in report["files"]}
    assert {"vocabulary.json", "dropped.jsonl"} <= set(files)
    for path, entry in files.items():
        assert hashlib.sha256((dest / path).read_bytes()).hexdigest() == entry["sha256"]
        if path.endswith(".parquet"):
            assert entry["rows"] == pq.ParquetFile(dest / path).metadata.num_rows
    assert (
        sum(e.get("rows", 0) for e in files.values())
        == sum(report["rows"].values())
        == len(all_rows(build_out, "chexmix"))
    )
    assert report["chexmix"]["vq_tokenizer"] == "test-vqgan" and report["format"] == "chexmix"
    missing = CliRunner().invoke(
        export_command, [str(build_out), "--profile", "chexmix", "--format", "chexmix", "--dest", str(tmp_path / "x")]
    )
    assert missing.exit_code != 0 and "--tokenizer" in missing.output and not (tmp_path / "x").exists()


def test_cli_options_and_the_lengths_command(build_out, radphi, tmp_path):
    import click

    with pytest.raises(click.UsageError, match="--tokenizer"):
        options_from_cli({"tokenizer_path": None})
    options = options_from_cli(
        {
            "tokenizer_path": str(radphi),
            "max_length": 900,
            "chexmix_preset": "chameleon",
            "chexmix_image_offset": "after-text",
            "chexmix_begin_image": "<|img|>",
            "chexmix_end_image": "<|/img|>",
            "chexmix_separator": "<|answer|>",
            "chexmix_eos": "<|endoftext|>",
            "chexmix_overflow": "shorten",
            "chexmix_pretraining_tasks": ("vqa",),
            "chexmix_image_loss": False,
        }
    )
    assert options == ChexmixOptions(
        tokenizer_path=str(radphi),
        max_length=900,
        image_offset=None,
        begin_image="<|img|>",
        end_image="<|/img|>",
        text_start="none",
        separator="<|answer|>",
        eos="<|endoftext|>",
        bos="<s>",
        pad="<pad>",
        mask="none",
        overflow="shorten",
        pretraining_tasks=("vqa",),
        pretraining_image_loss=False,
    )
    result = CliRunner().invoke(
        lengths_command,
        [
            str(build_out),
            "--tokenizer",
            str(radphi),
            "--profile",
            "m4cxr",
            "--profile",
            "chexmix",
            "--json",
            str(tmp_path / "l.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "m4cxr at 1300 tokens (drop)" in result.output and "report_generation_multi_image" in result.output
    reports = json.loads((tmp_path / "l.json").read_text())
    assert [r["profile"] for r in reports] == ["m4cxr", "chexmix"]
    m4 = reports[0]["tasks"]
    assert m4["report_generation_multi_image"]["dropped"] == m4["report_generation_multi_image"]["rows"] > 0
    assert Counter(t["max_images"] > 1 for t in m4.values())[True] >= 2
