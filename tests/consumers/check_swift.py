"""The ``swift`` export through ms-swift 4.6.0's own dataset loading and template (``.venv-swift``).

Each split file is loaded as ``swift sft --dataset DEST/<split>.jsonl`` loads it (``load_dataset``:
its messages/images preprocessor) and every row is encoded by the ``llava1_5_hf`` template in train
mode (``template.encode``, what swift's lazy training dataset calls per row), with the processor of a
tiny LLaVA-1.5-HF model folder built here (``get_processor``, no weights).

Where images resolve: ms-swift opens a relative image path against the working directory, then under
``ROOT_IMAGE_DIR`` if that is set; never against the dataset file's folder. A row whose image is not
found is dropped at encoding with a warning (``EncodePreprocessor`` and the lazy training dataset,
``strict=False`` by default), so a wrong working directory trains on nothing. The checks run from an
empty folder with ``ROOT_IMAGE_DIR`` set to the folder ``export.json`` says the paths are relative to,
and (M4CXR, the profile with multi-image rows) from that folder itself, as docs/training.md runs it.
"""

from __future__ import annotations

import pytest
from kit import (
    IMAGE,
    IMAGE_TOKENS,
    PROFILES,
    answers,
    corpus,
    destinations,
    image_base,
    llava_hf_model,
    read_export,
    row_images,
)

IGNORE_INDEX = -100


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    from swift import get_processor, get_template

    texts = [text for _, dest in destinations("swift") for text in corpus(read_export(dest)[1])]
    model_dir = llava_hf_model(tmp_path_factory.mktemp("tiny-llava-hf"), texts)
    processor = get_processor(str(model_dir), model_type="llava1_5_hf", download_model=False)
    template = get_template(processor, template_type="llava1_5_hf")
    template.set_mode("train")
    return template


def check_split(template, dest, meta, split, rows, where_from):
    from swift import load_dataset

    loaded, _ = load_dataset([str(dest / f"{split}.jsonl")], load_from_cache_file=False)
    assert len(loaded) == len(rows), f"{where_from}: {len(rows)} rows in, {len(loaded)} loaded"
    tokenizer = template.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    for row, example in zip(rows, loaded, strict=True):
        where = f"{where_from} row {row['id']}"
        images = row_images(row)
        assert [image["path"] for image in example["images"] or []] == images, where
        encoded = template.encode(example)
        assert encoded["input_ids"].count(image_id) == IMAGE_TOKENS * len(images), where
        assert encoded["pixel_values"].shape[0] == len(images), where
        learned = [label for label in encoded["labels"] if label != IGNORE_INDEX]
        assert tokenizer.decode(learned, skip_special_tokens=True) == "".join(answers(row)), where
        assert learned.count(tokenizer.eos_token_id) == len(answers(row)), where


@pytest.mark.parametrize("profile", PROFILES)
def test_every_row_loads_with_root_image_dir(profile, template, tmp_path, monkeypatch):
    dest = dict(destinations("swift"))[profile]
    meta, splits = read_export(dest)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROOT_IMAGE_DIR", str(image_base(dest, meta)))
    for split, rows in splits.items():
        check_split(template, dest, meta, split, rows, f"{profile}/{split}")


def test_every_row_loads_from_the_image_folder(template, monkeypatch):
    monkeypatch.delenv("ROOT_IMAGE_DIR", raising=False)
    dest = dict(destinations("swift"))["m4cxr"]
    meta, splits = read_export(dest)
    monkeypatch.chdir(image_base(dest, meta))
    for split, rows in splits.items():
        check_split(template, dest, meta, split, rows, f"m4cxr/{split} (from {meta['image_paths_relative_to']})")
