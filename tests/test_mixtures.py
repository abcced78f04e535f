"""Each mixture profile as a training repo sees it: a small synthetic build's instructions loaded with
``datasets`` and rendered through a chat template, and the template sets of the mixtures fully used."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from builds import VQA_DATASETS

from schemas.config import PROFILES
from transforms.tasks import generator, load_profile, registry
from transforms.templates import load_template_set

IMAGE = "<image>"
# Images of a turn first, then its text, the way llava-hf chat templates place them.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' }}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] }}{% endfor %}"
    "{{ '</s>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# Templates the synthetic corpus cannot reach: IMT-CXR's "X, in the lower left lung" localisation needs
# an image with both a finding box and a report mentioning where that finding is, and the synthetic
# boxed images (VinDr-CXR, SIIM-ACR) have no reports. tests/test_task_grounding.py covers them on
# crafted rows; the set is asserted exactly, so a corpus that reaches them makes this fail until removed.
UNREACHED_IN_SYNTH = {("grounding_imt", f"imt-loc-located-{i}") for i in (1, 2, 3)}


@pytest.fixture(scope="module")
def build_out(clean_build) -> Path:
    return clean_build.out


def load_profile_dataset(out: Path, profile: str, cache: Path):
    """One profile's instruction shards of every task, a ``DatasetDict`` by split, as a training repo loads them."""
    datasets = pytest.importorskip("datasets")
    files: dict[str, list[str]] = {}
    for path in sorted((out / "instructions" / profile).glob("*/*.parquet")):
        files.setdefault(path.name.split("-")[0], []).append(str(path))
    assert files, f"no instructions written for {profile}"
    return datasets.load_dataset("parquet", data_files=files, cache_dir=str(cache))


def chat_messages(conversations: list[dict]) -> list[dict]:
    """ShareGPT turns -> chat messages, each ``<image>`` slot of a turn an image part before its text."""
    roles = {"human": "user", "gpt": "assistant"}
    messages = []
    for turn in conversations:
        images = turn["value"].count(IMAGE)
        text = turn["value"].replace(IMAGE, "").strip()
        messages.append(
            {"role": roles[turn["from"]], "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}
        )
    return messages


def chat_tokenizer(rows: list[dict], path: Path):
    """A word-level tokenizer over the rows' texts, ``<image>`` a special token, with a chat template."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = sorted(
        {w for row in rows for turn in row["conversations"] for w in re.findall(r"\w+|[^\w\s]+", turn["value"])}
    )  # as Whitespace splits
    vocab = {token: i for i, token in enumerate(["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", *words])}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    model.add_special_tokens(["<image>", "<|user|>", "<|assistant|>", "</s>"])
    model.save(str(path))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(path), unk_token="<unk>", eos_token="</s>", chat_template=CHAT_TEMPLATE
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_every_task_renders_through_a_chat_template(build_out, tmp_path, profile):
    splits = load_profile_dataset(build_out, profile, tmp_path / "hf")
    rows = [row for split in sorted(splits) for row in splits[split].to_list()]
    assert all(row["split"] == split for split in splits for row in splits[split])
    tokenizer = chat_tokenizer(rows, tmp_path / "tokenizer.json")
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    first_of_task = {}
    for row in rows:
        first_of_task.setdefault(row["task"], row)
    assert set(first_of_task) == {p.parent.name for p in (build_out / "instructions" / profile).glob("*/*.parquet")}
    for task, row in sorted(first_of_task.items()):
        messages = chat_messages(row["conversations"])
        assert [m["role"] for m in messages[:2]] == ["user", "assistant"], task
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer.apply_chat_template(messages, tokenize=True)
        if not isinstance(ids, list):  # newer transformers return a BatchEncoding
            ids = ids["input_ids"]
        assert text.count(IMAGE) == len(row["image_keys"]) >= 1, task
        assert list(ids).count(image_id) == len(row["image_keys"]), task
        assert tokenizer.unk_token_id not in ids, (task, text)  # every word reached the model's vocabulary
        assert messages[-1]["content"][-1]["text"] in text, task


def build_rows(out: Path, table: str) -> list[dict]:
    return [row for path in sorted((out / table).glob("**/*.parquet")) for row in pq.read_table(path).to_pylist()]


def test_templates_of_the_mixtures_are_all_used_and_filled(build_out):
    """Over the build's instruction rows, and its annotation rows regenerated with other seeds, every
    template of the image-level tasks' template sets is chosen and no placeholder is left unfilled."""
    used, defined = set(), set()
    annotations = build_rows(build_out, "annotations")
    # the rows again without the VQA datasets, so every image also gets generated questions
    generated = [
        {**a, "questions": [], "annotation_sources": [s for s in a["annotation_sources"] if s not in VQA_DATASETS]}
        for a in annotations
    ]
    built = build_rows(build_out, "instructions")
    assert built
    for name in PROFILES:
        profile = load_profile(name)
        for task, spec in profile.tasks.items():
            if registry()[task].unit != "image":  # study or patient groups: checked by their generators' tests
                continue
            templates = load_template_set(spec.template_set)
            defined |= {(spec.template_set, t.id) for kind in templates.kinds.values() for t in kind}
            rows = [r for r in built if r["profile"] == name and r["task"] == task]
            rows += [
                r
                for seed in range(1, 25)
                for a in generated
                for r in generator(task)(a, profile, seed)
                if isinstance(r, dict)
            ]  # a generator's rejects name no template
            # a multi-turn row names each turn's template, joined by "+"
            used |= {(spec.template_set, t) for r in rows for t in r["template_id"].split("+")}
    for row in built:
        for turn in row["conversations"]:
            assert not re.search(r"\{\w*\}", turn["value"]), (row["task"], turn["value"])
    assert used <= defined
    assert defined - used == UNREACHED_IN_SYNTH


def test_imt_cxr_follows_the_papers_mixture_groups():
    from transforms.tasks import Profile

    profile = load_profile("imt-cxr")
    groups = {name: group.weight for name, group in profile.groups.items()}
    assert groups == {
        "classification": 0.15,
        "lesion_localization": 0.20,
        "segmentation": 0.15,
        "report_generation": 0.50,
    }
    assert profile.tasks["lesion_localization"].weight == 0.20 and profile.tasks["segmentation"].weight == 0.15
    document = profile.model_dump()
    document["tasks"]["segmentation"]["weight"] = 0.075  # the group's tasks no longer add up to its weight
    with pytest.raises(ValueError, match="group 'segmentation'"):
        Profile.model_validate(document)
    document = profile.model_dump()
    document["groups"]["segmentation"]["tasks"] = []  # a task in no group
    with pytest.raises(ValueError, match="each task in exactly one group"):
        Profile.model_validate(document)
