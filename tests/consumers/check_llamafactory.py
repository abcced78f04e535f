"""The ``llamafactory`` export through LLaMA-Factory 0.9.5's own data pipeline (``.venv-llamafactory``).

Each split is registered by the export's ``dataset_info.json`` and loaded as ``llamafactory-cli train``
loads it: ``get_train_args`` (stage ``sft``, ``dataset_dir`` DEST), ``load_tokenizer``,
``get_template_and_fix_tokenizer`` (template ``llava``) and ``get_dataset``; then each row goes through
the training collator (``MultiModalDataCollatorForSeq2Seq``) that turns its images into pixels. The
model folder is a tiny LLaVA-1.5-HF one built here (no weights). The working directory is an empty
folder, so images resolve through ``dataset_dir`` (LLaMA-Factory's ``media_dir``), as for a user who
trains from anywhere.
"""

from __future__ import annotations

import json

import pytest
from kit import IMAGE, IMAGE_TOKENS, PROFILES, corpus, destinations, llava_hf_model, read_export, row_images

IGNORE_INDEX = -100


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    texts = [text for _, dest in destinations("llamafactory") for text in corpus(read_export(dest)[1])]
    return llava_hf_model(tmp_path_factory.mktemp("tiny-llava-hf"), texts)


def load_split(model_dir, dest, name, output_dir):
    """``get_dataset`` as the trainer calls it: (train dataset, tokenizer, template, processor)."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(
        dict(
            model_name_or_path=str(model_dir),
            stage="sft",
            do_train=True,
            finetuning_type="full",
            dataset_dir=str(dest),
            dataset=name,
            template="llava",
            cutoff_len=1_000_000,
            overwrite_cache=True,
            output_dir=str(output_dir),
            report_to="none",
        )
    )
    modules = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(modules["tokenizer"], data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **modules)
    return dataset["train_dataset"], modules["tokenizer"], template, modules["processor"]


def test_dataset_info_registers_every_split():
    for profile, dest in destinations("llamafactory"):
        _, splits = read_export(dest)
        info = json.loads((dest / "dataset_info.json").read_text())
        assert set(info) == {f"cxr_instruct_{profile}_{split}" for split in splits}
        for split in splits:
            entry = info[f"cxr_instruct_{profile}_{split}"]
            assert entry["file_name"] == f"{split}.json" and entry["formatting"] == "sharegpt"
            assert entry["columns"] == {"messages": "messages", "images": "images"}
            assert entry["tags"] == {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            }


@pytest.mark.parametrize("profile", PROFILES)
def test_every_row_loads_with_its_images_and_only_answers_learned(profile, model_dir, tmp_path, monkeypatch):
    from llamafactory.data import MultiModalDataCollatorForSeq2Seq

    dest = dict(destinations("llamafactory"))[profile]
    _, splits = read_export(dest)
    monkeypatch.chdir(tmp_path)
    for split, rows in splits.items():
        dataset, tokenizer, template, processor = load_split(
            model_dir, dest, f"cxr_instruct_{profile}_{split}", tmp_path / "out"
        )
        assert len(dataset) == len(rows), f"{profile}/{split}: {len(rows)} rows in, {len(dataset)} loaded"
        image_id = tokenizer.convert_tokens_to_ids(IMAGE)
        collator = MultiModalDataCollatorForSeq2Seq(
            template=template, processor=processor, tokenizer=tokenizer, label_pad_token_id=IGNORE_INDEX
        )
        for row, example in zip(rows, dataset, strict=True):
            where = f"{profile}/{split} row {row['id']}"
            images = row_images(row)
            assert [str(path) for path in example["images"] or []] == [str(dest / path) for path in images], where
            assert example["input_ids"].count(image_id) == IMAGE_TOKENS * len(images), where
            learned = [label for label in example["labels"] if label != IGNORE_INDEX]
            answers = [message["content"] for message in row["messages"] if message["role"] == "assistant"]
            assert tokenizer.decode(learned, skip_special_tokens=True) == "".join(answers), where
            assert learned.count(tokenizer.eos_token_id) == len(answers), where
            batch = collator([example])
            assert batch["pixel_values"].shape[0] == len(images), where
