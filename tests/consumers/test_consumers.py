"""Every export format through its consumer's own loading code (see conftest.py here for the map).

A synthetic corpus of 4 studies (every profile, rows with several images, multi-turn rows) is built
and exported once in every format; ``test_consumer_venv`` runs each ``check_*.py`` module in its own
virtualenv on that folder. TRL (``messages``) and the Qwen2-VL image processor (``qwen-vl``) live in
the main ``.venv`` and are checked here directly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from builds import synthetic_build
from click.testing import CliRunner
from kit import (
    EXPORTS_ENV,
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
    squash,
    turns,
)

from pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

LAYOUTS = {  # folder under the export root: (format, options)
    **{fmt: (fmt, []) for fmt in ("llava", "qwen-vl", "llamafactory", "swift", "messages")},
    "qwen-vl-norm1000": ("qwen-vl", ["--coordinates", "norm1000"]),  # Qwen2-VL, Qwen3-VL
    "llava-fixed3": ("llava", ["--coordinates", "fixed3"]),  # three-decimal fractions: the pixel frames' reference
}
VENVS = {"llamafactory": ".venv-llamafactory", "swift": ".venv-swift", "llava": ".venv-llava"}

# Qwen2.5-VL-7B-Instruct's preprocessor_config.json (also the export's --min-pixels / --max-pixels defaults)
QWEN25_MIN_PIXELS = 56 * 56
QWEN25_MAX_PIXELS = 12845056
QWEN_PATCH = 14


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    out = synthetic_build(tmp_path_factory, studies=4, seed=3)
    root = tmp_path_factory.mktemp("exports")
    runner = CliRunner()
    for layout, (fmt, options) in LAYOUTS.items():
        for profile in PROFILES:
            result = runner.invoke(
                main,
                [
                    "export",
                    str(out),
                    "--profile",
                    profile,
                    "--format",
                    fmt,
                    "--dest",
                    str(root / layout / profile),
                    *options,
                ],
            )
            assert result.exit_code == 0, (layout, profile, result.output, result.exception)
    return root


def consumer_env(root: Path, scratch: Path) -> dict:
    """The check's environment: offline, its caches in ``scratch``, nothing of the main venv."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        {
            EXPORTS_ENV: str(root),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(scratch / "hf"),
            "MODELSCOPE_CACHE": str(scratch / "ms"),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


@pytest.mark.parametrize("consumer", sorted(VENVS))
def test_consumer_venv(consumer, export_root, tmp_path):
    python = REPO / VENVS[consumer] / "bin" / "python"
    if not python.exists():
        message = f"{VENVS[consumer]}/ is missing: `make consumers` builds it (`make test` does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    check = HERE / f"check_{consumer}.py"
    run = subprocess.run(
        [str(python), "-m", "pytest", "-c", str(HERE / "checks.ini"), str(check), "-q", "-p", "no:logging"],
        cwd=tmp_path,
        env=consumer_env(export_root, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = run.stdout + run.stderr
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    assert run.returncode == 0, f"{check.name} in {VENVS[consumer]} failed:\n{output[-6000:]}"
    assert re.fullmatch(r"=* ?\d+ passed in [\d.]+s.*", summary) and "skipped" not in summary, summary


# ------------------------------------------------------------------ TRL: the messages export


def test_messages_export_collates_in_trl(export_root, tmp_path):
    """TRL 1.16's vision collator as ``SFTTrainer(assistant_only_loss=True)`` sets it up (the processor's chat
    template, TRL's own LLaVA-NeXT one, swapped for its training variant with generation marks), on the
    rows loaded as a user loads them: ``datasets`` JSON, the image names joined to the image folder and the
    column cast to images (decoded to PIL on access; PIL images put in by ``map`` come back as
    ``{"bytes", "path"}`` dicts, which the collator refuses)."""
    import datasets
    from transformers import AutoProcessor
    from trl.chat_template_utils import get_training_chat_template, llava_next_chat_template
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    exports = destinations("messages", export_root)
    texts = [text for _, dest in exports for text in corpus(read_export(dest)[1])]
    processor = AutoProcessor.from_pretrained(llava_hf_model(tmp_path / "model", texts, llava_next_chat_template))
    collator = DataCollatorForVisionLanguageModeling(
        processor, assistant_only_loss=True, chat_template=get_training_chat_template(processor)
    )
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    for profile, dest in exports:
        meta, splits = read_export(dest)
        folder = image_base(dest, meta)
        for split, rows in splits.items():
            loaded = datasets.load_dataset(
                "json", data_files=str(dest / f"{split}.jsonl"), split="train", cache_dir=str(tmp_path / "cache")
            )
            loaded = loaded.map(lambda item, folder=folder: {"images": [str(folder / name) for name in item["images"]]})
            loaded = loaded.cast_column("images", datasets.List(datasets.Image()))
            assert len(loaded) == len(rows), f"{profile}/{split}"
            for row, example in zip(rows, loaded, strict=True):
                where = f"{profile}/{split} row {row['id']}"
                assert not any(
                    IMAGE in (part.get("text") or "") for message in row["messages"] for part in message["content"]
                ), where
                batch = collator([dict(example)])
                images = row_images(row)
                assert batch["pixel_values"].shape[0] == len(images), where
                assert batch["input_ids"][0].tolist().count(image_id) == IMAGE_TOKENS * len(images), where
                learned = [label for label in batch["labels"][0].tolist() if label != -100]
                assert squash(tokenizer.decode(learned, skip_special_tokens=True)) == squash("".join(answers(row)))
                assert learned.count(tokenizer.eos_token_id) == len(answers(row)), where


# ------------------------------------------------------------------ Qwen2.5-VL / Qwen3-VL: the qwen-vl export

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
BRACKETED = re.compile(r"\[\[?[-\d.,\s\[\]]*\]")


def coordinates(text: str) -> list[float]:
    """Every number inside a bracketed list (a box, or a polygon's nested pairs), in order."""
    return [float(number) for group in BRACKETED.findall(text) for number in NUMBER.findall(group)]


def reference_rows(root: Path, profile: str) -> dict[str, dict]:
    return {row["id"]: row for rows in read_export(root / "llava-fixed3" / profile)[1].values() for row in rows}


def check_qwen_layout(row: dict, image_folder: Path, where: str) -> None:
    """Qwen's qwen-vl-finetune reads LLaVA's layout: ``image`` a file or a list, one ``<image>`` each."""
    images = row_images(row)
    assert all((image_folder / name).is_file() for name in images), where
    assert sum(text.count(IMAGE) for role, text in turns(row) if role == "user") == len(images), where
    assert not any(IMAGE in text for role, text in turns(row) if role == "assistant"), where


def test_qwen_vl_boxes_are_pixels_of_the_image_as_qwen_resizes_it(export_root):
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    checked = 0
    for profile, dest in destinations("qwen-vl", export_root):
        meta, splits = read_export(dest)
        frame = meta["coordinates"]
        assert frame["frame"] == "pixels", frame
        width, height = frame["width"], frame["height"]
        processor = Qwen2VLImageProcessor(
            min_pixels=frame.get("min_pixels", QWEN25_MIN_PIXELS),
            max_pixels=frame.get("max_pixels", QWEN25_MAX_PIXELS),
            patch_size=QWEN_PATCH,
            merge_size=2,
        )
        image_folder = image_base(dest, meta)
        for name in sorted({name for rows in splits.values() for row in rows for name in row_images(row)}):
            grid = processor(images=[Image.open(image_folder / name)], return_tensors="np")["image_grid_thw"][0]
            assert (grid[1] * QWEN_PATCH, grid[2] * QWEN_PATCH) == (height, width), (profile, name, grid)
        reference = reference_rows(export_root, profile)
        for split, rows in splits.items():
            for row in rows:
                where = f"{profile}/{split} row {row['id']}"
                check_qwen_layout(row, image_folder, where)
                pixels = [value for _, text in turns(row) for value in coordinates(text)]
                fractions = [value for _, text in turns(reference[row["id"]]) for value in coordinates(text)]
                assert len(pixels) == len(fractions), where
                for index, (pixel, fraction) in enumerate(zip(pixels, fractions)):
                    size = width if index % 2 == 0 else height
                    assert pixel == int(pixel) and 0 <= pixel <= size, where
                    assert abs(pixel / size - fraction) <= 0.5 / size + 0.0005 + 1e-9, (where, index, pixel, fraction)
                checked += len(pixels)
    assert checked > 0


def test_qwen3_norm1000_boxes_land_on_the_same_geometry(export_root):
    checked = 0
    for profile, dest in destinations("qwen-vl-norm1000", export_root):
        meta, splits = read_export(dest)
        assert meta["coordinates"]["frame"] == "norm1000"
        reference = reference_rows(export_root, profile)
        for rows in splits.values():
            for row in rows:
                values = [value for _, text in turns(row) for value in coordinates(text)]
                fractions = [value for _, text in turns(reference[row["id"]]) for value in coordinates(text)]
                assert len(values) == len(fractions), row["id"]
                for value, fraction in zip(values, fractions):
                    assert value == int(value) and 0 <= value <= 1000, row["id"]
                    assert abs(value / 1000 - fraction) <= 0.001 + 1e-9, (row["id"], value, fraction)
                checked += len(values)
    assert checked > 0


def test_the_exports_hold_what_the_checks_need(export_root):
    """Rows with several images and multi-turn rows are there, so the checks above exercise them."""
    _, splits = read_export(export_root / "llava" / "m4cxr")
    rows = [row for rows in splits.values() for row in rows]
    assert any(len(row_images(row)) > 1 for row in rows)
    assert any(len(answers(row)) > 1 for row in rows)
    assert json.loads((export_root / "llamafactory" / "m4cxr" / "dataset_info.json").read_text())
