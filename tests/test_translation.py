"""The optional MarianMT translation (transforms/translation.py) on a tiny randomly initialised model of the
real architecture, with a real MarianTokenizer over two sentencepiece models trained here, loaded from a
folder with the network cut; its config key and the build's preflight check on that folder."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import socket
import sys
import warnings
from pathlib import Path

import pytest
import sentencepiece
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from test_whole_input_errors import assert_one_clear_line, cxr
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

from pipelines.beam import preflight
from schemas.config import ConfigError, check_config, load_config
from transforms import translation
from transforms.translation import Translator, model_files, sentences

# Stemmed, stop-worded Spanish in the style of PadChest's Report column (written for this test).
SPANISH = [
    "sin hallazg signific",
    "sin alter radiolog",
    "dentr normal",
    "cardiomegali",
    "elongacion aortic",
    "derram pleural izquierd",
    "derram pleural bilateral",
    "no apreci infiltr ni condens pulmonar",
    "sign radiolog epoc",
    "cifosis dorsal",
    "escoliosis dorsal",
    "atelectasi laminar bas derech",
    "nodul pulmonar lsi",
    "marcapas bicameral",
    "sond nasogastr",
    "aument densid hili",
    "engros pleural apical",
    "fractur costal antigu",
    "hern hiat",
    "granulom calcific",
]
ENGLISH = [
    "no significant findings",
    "no radiological alterations",
    "within normal limits",
    "cardiomegaly",
    "aortic elongation",
    "left pleural effusion",
    "bilateral pleural effusion",
    "no pulmonary infiltrate or consolidation is seen",
    "radiological signs of copd",
    "dorsal kyphosis",
    "dorsal scoliosis",
    "laminar atelectasis in the right base",
    "nodule in the left upper lobe",
    "dual chamber pacemaker",
    "nasogastric tube",
    "increased hilar density",
    "apical pleural thickening",
    "old rib fracture",
    "hiatal hernia",
    "calcified granuloma",
]
SHORT = 12
"""max_new_tokens for the tests that translate: the random model rarely ends a sentence by itself."""
REPORTS = [
    " sin hallazg signific .",
    " cardiomegali . elongacion aortic .",
    " . . derram pleural izquierd . no apreci infiltr ni condens pulmonar",
    " sign radiolog epoc . cifosis dorsal . escoliosis dorsal . hern hiat .",
    " nodul pulmonar lsi . granulom calcific .",
    " marcapas bicameral . sond nasogastr . . aument densid hili .",
]


def train_sentencepiece(lines: list[str], target: Path) -> list[str]:
    """A unigram sentencepiece model of the lines, as sentences are given to the model; its pieces."""
    written = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([text for line in lines for text in (line, line.capitalize() + ".")]),
        model_writer=written,
        vocab_size=80,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    target.write_bytes(written.getvalue())
    processor = sentencepiece.SentencePieceProcessor(model_file=str(target))
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


@pytest.fixture(scope="session")
def marian(tmp_path_factory) -> Path:
    """A MarianMT folder (save_pretrained) with random weights: d_model 16, one layer each side."""
    folder = tmp_path_factory.mktemp("models") / "opus-mt-tiny-es-en"
    folder.mkdir()
    pieces = train_sentencepiece(SPANISH, folder / "source.spm") + train_sentencepiece(ENGLISH, folder / "target.spm")
    vocab = {"</s>": 0, "<unk>": 1}  # Marian's layout: end of sentence first, padding last
    for piece in pieces:
        if piece != "<s>":  # Marian has no start token
            vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        MarianTokenizer(
            str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json")
        ).save_pretrained(folder)
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=512,
        pad_token_id=vocab["<pad>"],
        eos_token_id=0,
        decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=0,
        init_std=1.0,
    )  # wide weights: outputs that differ from sentence to sentence (0.02 gives one for all)
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's matrices are too small for torch's threads to help; on a busy machine they made
    each model call ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network connection attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def counting(instance: Translator) -> list[list[str]]:
    """The batches of sentences ``instance`` sends to its model from now on."""
    batches: list[list[str]] = []
    generate = instance._generate

    def recorded(batch: list[str]) -> list[str]:
        batches.append(list(batch))
        return generate(batch)

    instance._generate = recorded
    return batches


# ------------------------------------------------------------------ sentences


def test_padchest_reports_split_into_sentences():
    assert sentences(" sin hallazg signific . . cifosis dorsal .") == ["Sin hallazg signific.", "Cifosis dorsal."]
    assert sentences(" . . derram pleural izquierd . no apreci infiltr") == [
        "Derram pleural izquierd.",
        "No apreci infiltr.",
    ]
    assert sentences(" dentr normal") == ["Dentr normal."]
    assert sentences("") == sentences(" . . ") == []


@given(
    st.lists(
        st.one_of(
            st.just("."),
            st.sampled_from([w for line in SPANISH for w in line.split()]),
            st.text("abcdefghijklmnopqrstuvwxyzñáéíóú0123456789", min_size=1, max_size=8),
        ),
        max_size=30,
    )
)
def test_sentences_keep_every_word_in_order(tokens):
    report = " " + " ".join(tokens)
    found = sentences(report)
    assert all(sentence.endswith(".") and ". " not in sentence for sentence in found)
    words = [word for sentence in found for word in sentence[:-1].split()]
    assert [word.lower() for word in words] == [token for token in tokens if token != "."]
    assert len(found) == sum(1 for is_stop, _ in itertools.groupby(tokens, lambda token: token == ".") if not is_stop)


# ------------------------------------------------------------------ translating


def test_loads_from_the_folder_offline_and_translates_deterministically(marian, offline):
    first = Translator(marian, max_new_tokens=SHORT)
    english = first.translate(REPORTS)
    assert len(english) == len(REPORTS)
    assert all(isinstance(text, str) and text for text in english)
    assert len(set(english)) == len(REPORTS), "the tiny model should tell these reports apart"
    assert first.translate(REPORTS) == english
    assert Translator(marian, max_new_tokens=SHORT).translate(list(reversed(REPORTS))) == list(reversed(english))


def test_a_report_is_its_sentences_translated_and_joined(marian):
    instance = Translator(marian, max_new_tokens=SHORT)
    report = REPORTS[3]
    alone = [instance.translate([f" {sentence[:-1].lower()} ."])[0] for sentence in sentences(report)]
    assert len(alone) == 4
    assert instance.translate([report]) == [" ".join(alone)]
    assert instance.translate(["", " . ."]) == ["", ""]


def test_batches_give_what_one_by_one_gives(marian):
    batched = Translator(marian, batch_size=4, max_new_tokens=SHORT)
    batches = counting(batched)
    together = batched.translate(REPORTS)
    assert max(len(batch) for batch in batches) == 4 and len(batches) > 1
    single = Translator(marian, batch_size=1, max_new_tokens=SHORT)
    assert [single.translate([report])[0] for report in REPORTS] == together


def test_a_repeated_sentence_goes_to_the_model_once_per_call(marian):
    instance = Translator(marian, batch_size=3, max_new_tokens=SHORT)
    batches = counting(instance)
    study = REPORTS[1]  # a study's report repeats on each of its images
    rows = [study, study, study, " cardiomegali . derram pleural bilateral .", " elongacion aortic ."]
    english = instance.translate(rows)
    sent = [sentence for batch in batches for sentence in batch]
    assert sorted(sent) == ["Cardiomegali.", "Derram pleural bilateral.", "Elongacion aortic."]
    assert all(len(batch) <= 3 for batch in batches)
    assert english[0] == english[1] == english[2]
    heart, aorta, effusion = Translator(marian, max_new_tokens=SHORT).translate(
        [" cardiomegali .", " elongacion aortic .", " derram pleural bilateral ."]
    )
    assert english[0] == f"{heart} {aorta}" and english[3] == f"{heart} {effusion}" and english[4] == aorta
    before = len(batches)
    assert instance.translate(list(reversed(rows))) == list(reversed(english))
    assert batches[before:] == batches[:before], "a call's batches depend on its texts alone, not on earlier calls"


def test_decoding_options_reach_the_model(marian):
    greedy = Translator(marian, max_new_tokens=3).translate(REPORTS[:2])
    longer = Translator(marian, max_new_tokens=20).translate(REPORTS[:2])
    assert all(len(short) < len(long) for short, long in zip(greedy, longer))
    beams = Translator(marian, num_beams=3, max_new_tokens=SHORT).translate(REPORTS)
    assert beams == Translator(marian, num_beams=3, max_new_tokens=SHORT).translate(REPORTS)
    assert beams != Translator(marian, max_new_tokens=SHORT).translate(REPORTS)


def test_cuda_asked_for_without_a_device_says_so(marian, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda' but torch finds no CUDA device"):
        Translator(marian, device="cuda", max_new_tokens=SHORT).translate(REPORTS[:1])


def test_loading_without_the_packages_says_how_to_install_them(marian, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ImportError, match=r"\(pip install -e '\.\[translation\]'\); missing: transformers\."):
        Translator(marian, max_new_tokens=SHORT).translate(REPORTS[:1])


def test_one_translator_per_process_and_options(marian):
    options = load_options(marian)
    assert translation.translator(options) is translation.translator(options.model_copy())
    assert translation.translator(options) is not translation.translator(options.model_copy(update={"num_beams": 2}))


# ------------------------------------------------------------------ fingerprint


def test_fingerprint_is_stable_and_follows_the_weights(marian, tmp_path):
    reference = Translator(marian).fingerprint()
    assert reference == Translator(marian).fingerprint()
    assert reference["method"] == Translator(marian).method == "translation:opus-mt-tiny-es-en"
    assert reference["model"] == "opus-mt-tiny-es-en"
    assert reference["files"] == sorted(
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "source.spm",
            "target.spm",
            "tokenizer_config.json",
            "vocab.json",
        ]
    )
    assert (reference["num_beams"], reference["max_new_tokens"], reference["unit"]) == (1, 256, "sentence")
    assert Translator(marian, num_beams=2).fingerprint()["sha256"] == reference["sha256"]
    assert Translator(marian, num_beams=2).fingerprint() != reference

    changed = Path(shutil.copytree(marian, tmp_path / "opus-mt-tiny-es-en"))
    weights = load_file(changed / "model.safetensors")
    name = next(key for key in sorted(weights) if key.endswith("fc1.weight"))
    weights[name][0, 0] += 1.0
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    moved = Translator(changed).fingerprint()
    assert moved["sha256"] != reference["sha256"]
    assert {**moved, "sha256": None} == {**reference, "sha256": None}


# ------------------------------------------------------------------ unusable folders


def broken(marian: Path, tmp_path: Path, fault: str) -> Path:
    folder = Path(shutil.copytree(marian, tmp_path / "model"))
    if fault == "missing":
        shutil.rmtree(folder)
    elif fault == "no config":
        (folder / "config.json").unlink()
    elif fault == "bert":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    elif fault == "no weights":
        (folder / "model.safetensors").unlink()
    elif fault == "no tokenizer":
        (folder / "source.spm").unlink()
    return folder


@pytest.mark.parametrize(
    "fault, says",
    [
        ("missing", "no such folder"),
        ("no config", "lacks config.json"),
        ("bert", "model_type 'bert', not 'marian'"),
        ("no weights", "lacks the weights"),
        ("no tokenizer", "lacks source.spm"),
    ],
)
def test_an_unusable_folder_is_named_with_what_is_wrong(marian, tmp_path, fault, says):
    folder = broken(marian, tmp_path, fault)
    with pytest.raises(ValueError) as raised:
        Translator(folder)
    message = str(raised.value)
    assert str(folder) in message and says in message and "\n" not in message


def test_too_many_new_tokens_for_the_model(marian):
    with pytest.raises(ValueError, match=r"max_new_tokens 513 is more than the 512 positions of .*config\.json"):
        Translator(marian, max_new_tokens=513)


def test_a_uri_is_refused_as_the_model():
    with pytest.raises(ValueError, match="not a local folder"):
        model_files("gs://bucket/opus-mt-es-en")


# ------------------------------------------------------------------ config key and preflight


def write_config(folder: Path, translation_key: dict | None) -> Path:
    """A build.yaml in ``folder`` with one (empty) PadChest root and the given translation key."""
    (folder / "padchest").mkdir(exist_ok=True)
    document = {"sources": {"padchest": {"root": "padchest"}}}
    if translation_key is not None:
        document["translation"] = translation_key
    path = folder / "build.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def load_options(marian: Path):
    return load_config(write_config(marian.parent, {"model": marian.name})).translation


def test_the_translation_key(marian, tmp_path):
    assert load_config(write_config(tmp_path, None)).translation is None
    options = load_options(marian)
    assert options.model == str(marian)  # relative to the config file's folder
    assert (options.batch_size, options.num_beams, options.max_new_tokens, options.device) == (16, 1, 256, "cpu")
    path = write_config(
        tmp_path, {"model": "m", "batch_size": 0, "num_beams": 0, "max_new_tokens": 0, "device": "gpu", "beams": 2}
    )
    with pytest.raises(ConfigError) as raised:
        check_config(path)
    text = str(raised.value)
    assert len(text.splitlines()) == 5 and all(line.startswith(f"{path}: ") for line in text.splitlines())
    for key in ("batch_size", "num_beams", "max_new_tokens"):
        assert f"translation.{key}: Input should be greater than or equal to 1" in text
    assert "translation.device" in text and "'gpu'" in text
    assert "unknown key 'translation.beams': did you mean 'num_beams'?" in text
    with pytest.raises(ConfigError, match=r"translation.model: required, missing"):
        check_config(write_config(tmp_path, {"batch_size": 4}))


def test_preflight_accepts_a_marian_folder(marian):
    path = write_config(marian.parent, {"model": marian.name})
    preflight.check_roots(load_config(path), str(path))


@pytest.mark.parametrize("fault, says", [("missing", "no such folder"), ("bert", "not 'marian'")])
def test_build_stops_before_the_pipeline_on_an_unusable_model(marian, tmp_path, fault, says):
    folder = broken(marian, tmp_path, fault)
    config = write_config(tmp_path, {"model": "model"})
    out = tmp_path / "out"
    assert_one_clear_line(cxr("build", "--config", str(config), "--out", str(out)), str(config), str(folder), says)
    assert not out.exists()


def test_build_without_the_packages_says_how_to_install_them(marian, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # as if not installed
    config = write_config(tmp_path, {"model": str(marian)})
    output = assert_one_clear_line(
        cxr("build", "--config", str(config), "--out", str(tmp_path / "out")), str(config), "sentencepiece"
    )
    assert "pip install -e '.[translation]'" in output


# ------------------------------------------------------------------ in a build


def test_a_build_with_a_model_translates_padchest_reports_and_radixpert_uses_them(marian, tmp_path):
    """The build's language stage fills ``report_translation`` of every PadChest row that has a report,
    Radixpert's frontal rows take it as their target (method "translation"), lateral ones keep the
    rendered statements, and manifest.json records the model; a rebuild reuses every images shard."""
    import pyarrow.parquet as pq

    from pipelines.beam.build import run_build
    from pipelines.synth import generate

    corpus = generate(tmp_path / "corpus", studies=8, seed=4)
    config_path = corpus / "build.yaml"
    config = yaml.safe_load(config_path.read_text())
    config.update(profiles=["radixpert"], translation={"model": str(marian), "batch_size": 4, "max_new_tokens": 16})
    config["sources"] = {"padchest": config["sources"]["padchest"]}
    config_path.write_text(yaml.safe_dump(config))
    manifest = run_build(load_config(config_path), str(tmp_path / "out"))

    rows = [
        r for p in sorted((tmp_path / "out" / "annotations").glob("*.parquet")) for r in pq.read_table(p).to_pylist()
    ]
    with_report = [r for r in rows if r["report_text"]]
    assert with_report and all(r["report_translation"] for r in with_report)
    expected = Translator(marian, batch_size=4, max_new_tokens=16).translate([r["report_text"] for r in with_report])
    assert [r["report_translation"] for r in with_report] == expected
    assert manifest["translation"] == Translator(marian, batch_size=4, max_new_tokens=16).fingerprint()
    targets = [
        json.loads(r["target"])
        for p in sorted((tmp_path / "out" / "instructions").rglob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]
    assert {t["method"] for t in targets if t["frontal"]} == {"translation"}
    assert all(t["method"] == "padchest-structure" for t in targets if not t["frontal"])
