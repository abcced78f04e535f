"""The ``llava`` export through LLaVA-1.5's own dataset class (``llava-torch`` 1.2.2.post1, the LLaVA
repository's package, in ``.venv-llava`` with the transformers 4.36.2 it pins).

Each split file is opened by ``llava.train.train.LazySupervisedDataset`` set up as ``train.py`` sets it
up for the LLaVA-1.5 fine-tuning script (``--version v1 --image_aspect_ratio pad --image_folder``, a
slow Llama tokenizer with ``pad = unk``, ``mm_use_im_start_end`` off), with a tiny SentencePiece Llama
tokenizer and a 56 x 56 CLIP image processor built here.

LLaVA-1.5 reads one image a row (``image``: a file name). A row with several images writes ``image``
as a list (the LLaVA-NeXT / OneVision convention), which LLaVA-1.5 cannot open (``os.path.join`` of a
list): those rows are checked against that convention instead (one ``<image>`` per file, in the human
turns, every file under the image folder). LLaVA-NeXT and OneVision are not on PyPI.
"""

from __future__ import annotations

import contextlib
import io

import pytest
from kit import (
    IMAGE,
    PROFILES,
    VISION_SIZE,
    answers,
    corpus,
    destinations,
    image_base,
    llama_sentencepiece,
    read_export,
    row_images,
    squash,
    turns,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from llava import conversation as conversation_lib
    from transformers import AutoTokenizer

    texts = [text for _, dest in destinations("llava") for text in corpus(read_export(dest)[1])]
    folder = llama_sentencepiece(tmp_path_factory.mktemp("tiny-llama"), texts)
    tokenizer = AutoTokenizer.from_pretrained(folder, model_max_length=2048, padding_side="right", use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token  # train.py, any --version but v0
    conversation_lib.default_conversation = conversation_lib.conv_templates["v1"]
    return tokenizer


def dataset(path, image_folder, tokenizer):
    from llava.train.train import DataArguments, LazySupervisedDataset
    from transformers import CLIPImageProcessor

    args = DataArguments(
        data_path=str(path),
        lazy_preprocess=True,
        is_multimodal=True,
        image_folder=str(image_folder),
        image_aspect_ratio="pad",
    )
    args.image_processor = CLIPImageProcessor(
        size={"shortest_edge": VISION_SIZE}, crop_size={"height": VISION_SIZE, "width": VISION_SIZE}
    )
    args.mm_use_im_start_end = False
    return LazySupervisedDataset(str(path), tokenizer, args)


def check_several_images(row, image_folder, where):
    """LLaVA-NeXT / OneVision: ``image`` a list of files, one ``<image>`` per file in the human turns."""
    assert isinstance(row["image"], list) and all(isinstance(name, str) for name in row["image"]), where
    assert all((image_folder / name).is_file() for name in row["image"]), where
    conversation = row["conversations"]
    assert conversation[0]["from"] == "human", where
    assert sum(turn["value"].count(IMAGE) for turn in conversation if turn["from"] == "human") == len(row["image"])
    assert not any(IMAGE in turn["value"] for turn in conversation if turn["from"] == "gpt"), where


@pytest.mark.parametrize("profile", PROFILES)
def test_every_row_loads_in_llava(profile, tokenizer):
    from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

    dest = dict(destinations("llava"))[profile]
    meta, splits = read_export(dest)
    image_folder = image_base(dest, meta)
    for split, rows in splits.items():
        data = dataset(dest / f"{split}.json", image_folder, tokenizer)
        assert len(data) == len(rows) and len(data.modality_lengths) == len(rows)
        for index, row in enumerate(rows):
            where = f"{profile}/{split} row {row['id']}"
            assert sum(text.count(IMAGE) for _, text in turns(row)) == len(row_images(row)), where
            if isinstance(row.get("image"), list):
                check_several_images(row, image_folder, where)
                continue
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                item = data[index]
            assert "mismatch" not in printed.getvalue(), f"{where}: {printed.getvalue()}"
            ids = item["input_ids"].tolist()
            assert ids.count(IMAGE_TOKEN_INDEX) == (1 if "image" in row else 0), where
            assert IMAGE not in tokenizer.decode([token for token in ids if token >= 0]), where
            assert tuple(item["image"].shape) == (3, VISION_SIZE, VISION_SIZE), where
            learned = [label for label in item["labels"].tolist() if label != IGNORE_INDEX]
            assert squash(tokenizer.decode(learned, skip_special_tokens=True)) == squash("".join(answers(row))), where
            assert learned.count(tokenizer.eos_token_id) == len(answers(row)), where


def test_rows_with_several_images_exist():
    """The multi-image path above is exercised: M4CXR has study-with-prior rows."""
    _, splits = read_export(dict(destinations("llava"))["m4cxr"])
    assert any(isinstance(row.get("image"), list) for rows in splits.values() for row in rows)
