"""The JSON exports of a small synthetic build: every row once, in the layout its framework reads, with
its images; coordinates in the frame asked for and true to the row's target; the train split sampled
by the profile's weights on request; DEST replaced only by a whole export whose export.json checks out.

The frameworks' own loaders read these files in tests/consumers (their own environment); the chexmix
export is tested in test_export_chexmix.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from pathlib import Path

import cv2
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from pipelines.output.manifest import pools_without_rows
from pipelines.training import export_json
from pipelines.training.export import JSON_FORMATS, CoordinateOptions, export, export_command
from pipelines.training.export_source import Mixture
from pipelines.training.loader import MixtureStream
from transforms.coordinate_frames import CoordinateFrame, find_in_frame, target_geometry
from transforms.export_records import (
    ExportError,
    RecordError,
    image_file_name,
    llava_record,
    messages_record,
    role_record,
)
from transforms.geometry import find_coordinates


@pytest.fixture(scope="module")
def build_out(clean_build) -> Path:
    return clean_build.out


def instruction_rows(out: Path, profile: str, split: str | None = None) -> list[dict]:
    pattern = f"*/{split}-*.parquet" if split else "*/*.parquet"
    return [
        row
        for path in sorted((out / "instructions" / profile).glob(pattern))
        for row in pq.read_table(path).to_pylist()
    ]


def read_split(dest: Path, fmt: str, split: str) -> list[dict]:
    if JSON_FORMATS[fmt].lines:
        return [json.loads(line) for line in (dest / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    return json.loads((dest / f"{split}.json").read_text(encoding="utf-8"))


def image_names(fmt: str, item: dict) -> list[str]:
    """The images of an exported item, as paths relative to DEST."""
    if fmt in ("llava", "qwen-vl"):
        named = item.get("image", [])
        return [f"images/{name}" for name in ([named] if isinstance(named, str) else named)]
    return list(item["images"])  # relative to DEST


def turn_texts(fmt: str, item: dict) -> list[str]:
    if fmt in ("llava", "qwen-vl"):
        return [turn["value"] for turn in item["conversations"]]
    if fmt == "messages":
        return [
            "".join("<image>" if part["type"] == "image" else part["text"] for part in message["content"])
            for message in item["messages"]
        ]
    return [message["content"] for message in item["messages"]]


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ row layouts


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
    with pytest.raises(RecordError):
        image_file_name("no-source")


MULTI = {
    "id": "r1",
    "task": "t",
    "source": "mimic",
    "split": "train",
    "image_keys": ["mimic/frontal", "mimic/lateral"],
    "conversations": [
        {"from": "human", "value": "reference: <image>, main: <image>\nWhat changed?"},
        {"from": "gpt", "value": "Nothing."},
    ],
}


def test_each_layout_keeps_images_in_slot_order():
    assert llava_record(MULTI)["image"] == ["mimic/frontal.png", "mimic/lateral.png"]  # LLaVA-NeXT / OneVision
    assert (
        llava_record(
            {
                **MULTI,
                "image_keys": ["mimic/frontal"],
                "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "Clear."}],
            }
        )["image"]
        == "mimic/frontal.png"
    )
    assert role_record(MULTI, "images/") == {
        "id": "r1",
        "images": ["images/mimic/frontal.png", "images/mimic/lateral.png"],
        "messages": [
            {"role": "user", "content": "reference: <image>, main: <image>\nWhat changed?"},
            {"role": "assistant", "content": "Nothing."},
        ],
    }
    assert messages_record(MULTI)["messages"][0]["content"] == [
        {"type": "text", "text": "reference:"},
        {"type": "image"},
        {"type": "text", "text": ", main:"},
        {"type": "image"},
        {"type": "text", "text": "What changed?"},
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_keys": ["mimic/frontal"]}, "2 <image> slots for 1 images"),
        (
            {"conversations": [{"from": "gpt", "value": "<image><image>"}, {"from": "human", "value": "x"}]},
            "expected 'human'",
        ),
        ({"conversations": [{"from": "human", "value": "<image><image>"}]}, "question/answer pairs"),
        (
            {"conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "<image>"}]},
            "answer turn",
        ),
    ],
)
def test_rows_no_format_can_write_raise(change, message):
    for convert in (llava_record, role_record, messages_record):
        with pytest.raises(RecordError, match=message):
            convert({**MULTI, **change})


# ------------------------------------------------------------------ the exports


@pytest.mark.parametrize("fmt", sorted(JSON_FORMATS))
def test_every_row_is_exported_once_with_its_images(build_out, tmp_path, fmt):
    rows = {row["id"]: row for row in instruction_rows(build_out, "m4cxr")}
    report = export(build_out, "m4cxr", fmt, tmp_path / fmt)
    dest = tmp_path / fmt
    seen = []
    for split, count in report["rows"].items():
        items = read_split(dest, fmt, split)
        assert len(items) == count
        for item in items:
            row = rows[item["id"]]
            assert row["split"] == split
            assert image_names(fmt, item) == [f"images/{image_file_name(k)}" for k in row["image_keys"]]
            texts = turn_texts(fmt, item)
            assert sum(text.count("<image>") for text in texts) == len(row["image_keys"])
            if fmt != "qwen-vl":  # the profile's own frame: the text as built (messages: stripped around images)
                assert [t.replace(" ", "").replace("\n", "") for t in texts] == [
                    t["value"].replace(" ", "").replace("\n", "") for t in row["conversations"]
                ]
            seen.append(item["id"])
    assert sorted(seen) == sorted(rows)
    referenced = {image_file_name(k) for row in rows.values() for k in row["image_keys"]}
    on_disk = {str(p.relative_to(dest / "images")) for p in (dest / "images").rglob("*.png")}
    assert on_disk == referenced and report["images"] == len(referenced)
    assert all(cv2.imread(str(dest / "images" / name), cv2.IMREAD_UNCHANGED).shape == (512, 512) for name in on_disk)
    if fmt in ("llava", "qwen-vl"):
        kinds = {type(item["image"]).__name__ for split in report["rows"] for item in read_split(dest, fmt, split)}
        assert kinds == {"str", "list"}  # one image: a string; several: a list under the same key


def test_llamafactory_export_names_its_datasets(build_out, tmp_path):
    report = export(build_out, "imt-cxr", "llamafactory", tmp_path / "lf")
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text(encoding="utf-8"))
    assert sorted(info) == [f"cxr_instruct_imt-cxr_{split}" for split in sorted(report["rows"])]
    entry = info["cxr_instruct_imt-cxr_train"]
    assert entry["file_name"] == "train.json" and entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "images": "images"}
    first = read_split(tmp_path / "lf", "llamafactory", "train")[0]
    assert all((tmp_path / "lf" / name).is_file() for name in first["images"])  # relative to dataset_dir


def outside_spans(text: str, spans) -> list[str]:
    """The text between coordinates: what reframing must leave alone."""
    cuts = [0, *(edge for span in spans for edge in (span.start, span.end)), len(text)]
    return [text[a:b] for a, b in zip(cuts[0::2], cuts[1::2])]


def frame_of(report: dict) -> CoordinateFrame:
    frame = report["coordinates"]
    return CoordinateFrame(frame["frame"], frame.get("width"), frame.get("height"))


@pytest.mark.parametrize(
    "profile, coordinates, written_as",
    [
        ("m4cxr", None, "pixels 504x504"),  # Qwen2.5-VL: 512 canvas -> 504 after its resize
        ("imt-cxr", "norm1000", "norm1000"),  # Qwen2-VL / Qwen3-VL
        ("medivlm", None, "pixels 224x224"),  # MediVLM's 224 images need no resize
        ("imt-cxr", "percent", "percent"),
    ],
)
def test_qwen_vl_coordinates_land_on_the_canonical_geometry(build_out, tmp_path, profile, coordinates, written_as):
    report = export(build_out, profile, "qwen-vl", tmp_path / "q", coordinates=CoordinateOptions(coordinates))
    assert report["coordinates"]["written_as"] == written_as and report["coordinates"]["from_text"] == 0
    frame = frame_of(report)
    tx, ty = frame.tolerance()
    convention = report["coordinates"]["profile"]
    rows = {row["id"]: row for row in instruction_rows(build_out, profile)}
    spans = 0
    for split in report["rows"]:
        for item in read_split(tmp_path / "q", "qwen-vl", split):
            row = rows[item["id"]]
            candidates = list(target_geometry(json.loads(row["target"]), convention, 30).values())
            for built, exported in zip(row["conversations"], item["conversations"]):
                found = find_in_frame(exported["value"], frame)
                originals = find_coordinates(built["value"], convention)
                assert len(found) == len(originals)
                assert outside_spans(exported["value"], found) == outside_spans(built["value"], originals)
                for span, original in zip(found, originals):
                    spans += 1
                    assert span.kind == original.kind
                    if span.kind == "box":
                        assert any(
                            kind == "box" and all(abs(a - b) <= t for a, b, t in zip(span.box, value, (tx, ty) * 2))
                            for kind, value in candidates
                        ), (item["id"], exported["value"])
                    else:  # vertex by vertex, in order, against the simplified ring the profile wrote
                        profile_tx, profile_ty = CoordinateFrame(convention).tolerance()
                        assert [len(ring) for ring in span.rings] == [len(ring) for ring in original.rings]
                        for ring, written in zip(span.rings, original.rings):
                            for (x, y), (wx, wy) in zip(ring, written):
                                assert abs(x - wx) <= tx + profile_tx and abs(y - wy) <= ty + profile_ty
    assert spans == report["coordinates"]["rewritten"] > 0


def test_the_pixels_frame_is_qwens_in_every_format(build_out, tmp_path):
    report = export(
        build_out, "m4cxr", "swift", tmp_path / "s", splits=("test",), coordinates=CoordinateOptions("pixels")
    )
    assert report["coordinates"]["written_as"] == "pixels 504x504"
    small = export(
        build_out,
        "m4cxr",
        "qwen-vl",
        tmp_path / "q",
        splits=("test",),
        coordinates=CoordinateOptions(None, max_pixels=300 * 300),
    )
    assert small["coordinates"]["written_as"] == "pixels 280x280"  # the processor shrinks the 512 canvas
    assert small["coordinates"]["max_pixels"] == 90000
    with pytest.raises(ExportError, match="--max-pixels set the pixels frame"):
        export(build_out, "m4cxr", "llava", tmp_path / "l", coordinates=CoordinateOptions(None, max_pixels=90000))


def test_a_bins_frame_exports_its_tokens(build_out, tmp_path):
    export(build_out, "imt-cxr", "llava", tmp_path / "imt")
    tokens = (tmp_path / "imt" / "coordinate_tokens.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert tokens == [f"<bin_{k}>" for k in range(1, 1001)]
    used = {
        token
        for split in ("train", "validation", "test")
        if (tmp_path / "imt" / f"{split}.json").exists()
        for item in read_split(tmp_path / "imt", "llava", split)
        for turn in item["conversations"]
        for token in re.findall(r"<bin_\d+>", turn["value"])
    }
    assert used and used <= set(tokens)
    report = export(build_out, "m4cxr", "llava", tmp_path / "m4", coordinates=CoordinateOptions("bins1000"))
    assert report["coordinates"]["rewritten"] > 0 and (tmp_path / "m4" / "coordinate_tokens.txt").is_file()
    export(build_out, "m4cxr", "llava", tmp_path / "m4-plain")
    assert not (tmp_path / "m4-plain" / "coordinate_tokens.txt").exists()  # percent needs no new tokens


def test_profiles_with_an_input_size_export_their_images_at_it(build_out, tmp_path):
    for profile in ("radixpert", "medivlm"):
        report = export(build_out, profile, "messages", tmp_path / profile)
        assert report["image_size"] == 224 and report["images"] > 0
        shapes = {
            cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in (tmp_path / profile / "images").rglob("*.png")
        }
        assert shapes == {(224, 224)}
        assert sum(report["rows"].values()) == len(instruction_rows(build_out, profile))


def test_split_filter_and_missing_profile(build_out, tmp_path):
    report = export(build_out, "m4cxr", "swift", tmp_path / "t", splits=("test",))
    assert list(report["rows"]) == ["test"] and not (tmp_path / "t" / "train.jsonl").exists()
    with pytest.raises(ExportError, match="no profile"):
        export(build_out, "nope", "llava", tmp_path / "n")


# ------------------------------------------------------------------ export.json and atomic replacement


def test_export_json_lists_every_file_with_its_checksum_and_rows(build_out, tmp_path):
    report = export(build_out, "m4cxr", "llamafactory", tmp_path / "a")
    on_disk = file_digests(tmp_path / "a")
    assert on_disk.pop("export.json") and {f["path"]: f["sha256"] for f in report["files"]} == on_disk
    for entry in report["files"]:
        assert entry["bytes"] == (tmp_path / "a" / entry["path"]).stat().st_size
    counted = {f["path"]: f["rows"] for f in report["files"] if "rows" in f}
    assert counted == {f"{split}.json": n for split, n in report["rows"].items()}
    assert json.loads((tmp_path / "a" / "export.json").read_text(encoding="utf-8")) == report
    export(build_out, "m4cxr", "llamafactory", tmp_path / "b")
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")  # byte-identical rerun


def test_a_failed_export_leaves_the_previous_one_whole(build_out, tmp_path, monkeypatch):
    dest = tmp_path / "dest"
    export(build_out, "m4cxr", "llava", dest)
    before = file_digests(dest)

    def broken(*args, **kwargs):
        raise ExportError("disk full")

    monkeypatch.setattr(export_json, "copy_images", broken)
    with pytest.raises(ExportError, match="disk full"):
        export(build_out, "m4cxr", "llava", dest, coordinates=CoordinateOptions("bins1000"))
    assert file_digests(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dest.lock", "dest"]  # no staged folder left behind
    with pytest.raises(ExportError, match="disk full"):
        export(build_out, "m4cxr", "llava", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # nothing a loader would read


def test_an_export_replaces_only_an_earlier_export(build_out, tmp_path):
    dest = tmp_path / "dest"
    export(build_out, "m4cxr", "llava", dest, splits=("test",))
    report = export(build_out, "m4cxr", "swift", dest, splits=("validation",))  # replaced whole
    assert sorted(p.name for p in dest.iterdir()) == ["export.json", "images", "validation.jsonl"]
    assert report["format"] == "swift"
    (dest / "output" / "checkpoint-100").mkdir(parents=True)  # a trainer wrote into the export
    (dest / "output" / "checkpoint-100" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ExportError, match=r"does not list.*output/checkpoint-100/model.safetensors"):
        export(build_out, "m4cxr", "swift", dest, splits=("validation",))
    assert (dest / "output" / "checkpoint-100" / "model.safetensors").read_bytes() == b"weights"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ExportError, match="not an export"):
        export(build_out, "m4cxr", "llava", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_refused_destinations(build_out, tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(ExportError, match="symbolic link"):
        export(build_out, "m4cxr", "llava", tmp_path / "link")
    with pytest.raises(ExportError, match="inside the build output"):
        export(build_out, "m4cxr", "llava", build_out / "exports" / "m4")
    assert not (build_out / "exports").exists()
    with open(tmp_path / ".busy.lock", "w") as lock:  # another export holds DEST
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ExportError, match="another export is writing"):
            export(build_out, "m4cxr", "llava", tmp_path / "busy")
    with pytest.raises(ExportError, match="chexmix format writes coordinates as the profile does"):
        export(build_out, "m4cxr", "chexmix", tmp_path / "c", chexmix=object(), coordinates=CoordinateOptions("pixels"))


def test_what_a_killed_export_left_is_cleaned_or_put_back(build_out, tmp_path, monkeypatch):
    dest = tmp_path / "run[1]"
    export(build_out, "m4cxr", "llava", dest, splits=("test",))
    before = file_digests(dest)
    (tmp_path / ".run[1].partial-dead").mkdir()  # staged by a killed export
    (tmp_path / ".run1.partial-live").mkdir()  # another DEST's, matched by a careless glob of "run[1]"
    dest.rename(tmp_path / ".run[1].previous")  # killed between moving the old export aside and renaming
    monkeypatch.setattr(export_json, "copy_images", lambda *a, **k: (_ for _ in ()).throw(ExportError("stop")))
    with pytest.raises(ExportError, match="stop"):
        export(build_out, "m4cxr", "llava", dest, splits=("test",))
    assert file_digests(dest) == before  # the previous export is back
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run1.partial-live", ".run[1].lock", "run[1]"]


# ------------------------------------------------------------------ mixtures


def test_a_mixture_follows_the_loaders_draw_and_reports_shares(build_out, tmp_path):
    report = export(build_out, "m4cxr", "swift", tmp_path / "mix", mixture=Mixture(samples=400, seed=5))
    items = read_split(tmp_path / "mix", "swift", "train")
    stream = MixtureStream(build_out, "m4cxr", split="train", seed=5, samples_per_epoch=400, decode_images=False)
    assert [item["id"] for item in items] == [stream.row(p)["id"] for p in range(400)]
    shares = report["mixture"]["tasks"]
    assert sum(s["samples"] for s in shares.values()) == 400 == report["rows"]["train"]
    assert sum(s["expected"] for s in shares.values()) == pytest.approx(1.0, abs=1e-5)
    tasks = {row["id"]: row["task"] for row in instruction_rows(build_out, "m4cxr", "train")}
    for task, share in shares.items():
        assert share["samples"] == sum(tasks[item["id"]] == task for item in items)
    weights = json.loads((build_out / "instructions" / "m4cxr" / "weights.json").read_text(encoding="utf-8"))
    assert sorted(shares) == sorted(task for task, spec in weights["tasks"].items() if spec["weight"] > 0)
    for task, share in shares.items():
        has_rows = any(n.get("train") for n in weights["tasks"][task]["rows"].values())
        assert share.get("no_weighted_rows", False) == (share["expected"] == 0) and (has_rows or share["expected"] == 0)
    assert report["mixture"]["rows_without_weight"] == [
        {"task": task, "source": source, "rows": splits["train"]}
        for task, spec in sorted(weights["tasks"].items())
        if "source_weights" in spec
        for source, splits in sorted(spec["rows"].items())
        if splits.get("train") and not spec["source_weights"].get(source)
    ]
    heaviest = max(shares, key=lambda t: shares[t]["expected"])
    assert heaviest == "report_generation_cot" and shares[heaviest]["realised"] > 0.25
    plain = {row["id"] for row in instruction_rows(build_out, "m4cxr", "test")}
    exported_test = {item["id"] for item in read_split(tmp_path / "mix", "swift", "test")}
    assert exported_test == plain  # the other splits: each row once
    export(build_out, "m4cxr", "swift", tmp_path / "again", mixture=Mixture(samples=400, seed=5))
    assert file_digests(tmp_path / "mix") == file_digests(tmp_path / "again")
    export(build_out, "m4cxr", "swift", tmp_path / "other", mixture=Mixture(samples=400, seed=6))
    assert read_split(tmp_path / "other", "swift", "train") != items
    with pytest.raises(ExportError, match="does not write"):
        export(build_out, "m4cxr", "swift", tmp_path / "x", splits=("test",), mixture=Mixture())


def test_weights_json_reports_weighted_pools_without_rows(build_out):
    weights = json.loads((build_out / "instructions" / "m4cxr" / "weights.json").read_text(encoding="utf-8"))
    assert weights["coordinates"] == "percent" and weights["canvas"] == 512
    for pool in weights["pools_without_rows"]:
        rows = weights["tasks"][pool["task"]]["rows"]
        assert not (rows.get(pool["source"]) if pool["source"] else rows)
    for task, spec in weights["tasks"].items():
        for source, share in spec.get("source_weights", {}).items():
            if share > 0 and not spec["rows"].get(source):
                assert {"task": task, "source": source} in [
                    {k: p[k] for k in ("task", "source")} for p in weights["pools_without_rows"]
                ]


def test_pools_without_rows_names_each_unused_weight():
    rows = {"grounding": {"vindr": {"train": 3}}, "vqa": {}}
    empty = pools_without_rows(
        {"grounding": 6.0, "vqa": 2.0, "off": 0.0}, {"grounding": {"vindr": 2.0, "siim": 4.0}}, rows
    )
    assert empty == [
        {"task": "grounding", "source": "siim", "weight": 4.0},
        {"task": "vqa", "source": None, "weight": 2.0},
    ]


# ------------------------------------------------------------------ command line


def test_cli(build_out, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        export_command,
        [
            str(build_out),
            "--profile",
            "m4cxr",
            "--format",
            "qwen-vl",
            "--dest",
            str(tmp_path / "q"),
            "--mixture",
            "--samples",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.splitlines()[0])
    assert printed["format"] == "qwen-vl" and printed["coordinates"]["written_as"] == "pixels 504x504"
    assert "report_generation_cot" in result.output and "files with sha256 in export.json" in result.output
    result = runner.invoke(
        export_command,
        [str(build_out), "--profile", "m4cxr", "--format", "llava", "--dest", str(tmp_path / "l"), "--samples", "5"],
    )
    assert result.exit_code == 2 and "--samples and --seed go with --mixture" in result.output
