"""How the JSON formats of ``cxr-instruct export`` are written: each split's rows converted by the format's
row layout (:mod:`transforms.export_records`) with their boxes and polygons moved into the chosen coordinate
frame (:class:`Reframer`), one JSON list or JSON Lines file per split, the PNG of every image they use (resized
to the profile's ``image_size``), and the side files (``coordinate_tokens.txt``, LLaMA-Factory's
``dataset_info.json``). Which formats exist, and the command, are in :mod:`pipelines.training.export`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import manifests
from pipelines.output.paths import split_of
from pipelines.training.export_source import (
    Mixture,
    build_manifest,
    iter_rows,
    mixture_rows,
    profile_settings,
    shards_by_split,
)
from transforms import io
from transforms.coordinate_frames import (
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    CoordinateFrame,
    FrameKind,
    qwen_resized,
    reframe_text,
    target_geometry,
)
from transforms.export_records import ExportError, RecordError, image_file_name
from transforms.geometry import CoordinateConvention
from transforms.png import resize_png

IMAGES = "images"
COORDINATE_TOKENS = "coordinate_tokens.txt"
QWEN_FACTOR = 28  # Qwen2.5-VL: 14-pixel patches merged 2 x 2


@dataclass(frozen=True)
class JsonFormat:
    """A format of one JSON document per split (``lines=False``: a JSON list) or one object a line."""

    convert: Callable[[dict, str], dict]
    lines: bool
    image_prefix: str  # what an image's file name is relative to: DEST/images ("") or DEST ("images/")
    frame: str = "profile"  # the default --coordinates
    dataset_info: bool = False  # also write LLaMA-Factory's dataset_info.json


@dataclass(frozen=True)
class CoordinateOptions:
    """``--coordinates`` (a frame name or ``profile``) and the Qwen resize bounds of the ``pixels`` frame
    (None: the released Qwen2.5-VL checkpoints' ``preprocessor_config.json``)."""

    frame: str | None = None  # None: the format's default
    min_pixels: int | None = None
    max_pixels: int | None = None


FORMAT_COORDINATES = CoordinateOptions()
"""Each format's default frame and the released Qwen bounds."""


def image_size_of(settings: dict, manifest: dict) -> int:
    """The side of the exported images: the profile's ``image_size``, else the build's canvas."""
    return int(settings.get("image_size") or settings.get("canvas") or manifest["config"]["image_size"])


def copy_images(
    out: str | Path, keys: set[str], dest: Path, image_size: int | None = None, splits: tuple[str, ...] = ()
) -> int:
    """Write the PNG of every key into ``dest/images/<image_file_name>``, resized to ``image_size`` when
    given (:func:`transforms.png.resize_png`); all must exist. Only the images shards of ``splits``
    (all when empty) are searched, and image bytes are read only from row groups holding wanted keys."""
    remaining = set(keys)
    shards = io.glob(io.join(str(out), "images", "*.parquet"))
    if splits:
        shards = [shard for shard in shards if split_of(shard) in splits]
    for shard in shards:
        if not remaining:
            break
        with io.open_file(shard) as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                wanted = pc.is_in(
                    parquet.read_row_group(group, columns=["image_key"])["image_key"],
                    value_set=pa.array(sorted(remaining), pa.string()),
                )
                if not pc.any(wanted).as_py():
                    continue
                table = parquet.read_row_group(group, columns=["image_key", "image"]).filter(wanted)
                for row in table.to_pylist():
                    path = dest / IMAGES / image_file_name(row["image_key"])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    png = row["image"]["bytes"]
                    path.write_bytes(png if image_size is None else resize_png(png, image_size))
                    remaining.discard(row["image_key"])
    if remaining:
        raise ExportError(f"{len(remaining)} referenced images are not in {out}/images, e.g. {sorted(remaining)[:3]}")
    return len(keys)


# ------------------------------------------------------------------ coordinates


def profile_geometry(settings: dict, profile: str) -> tuple[CoordinateConvention, int]:
    """How the profile writes coordinates and polygons: from ``weights.json``, or, for a build made before
    it recorded them, from the profile's manifest."""
    if "coordinates" in settings:
        return settings["coordinates"], int(settings.get("polygon_max_vertices", 30))
    declared = manifests.load(f"mixtures/{profile}.yaml")
    return declared["coordinates"], int(declared.get("polygon_max_vertices", 30))


def resolve_frame(
    spec: JsonFormat, options: CoordinateOptions, settings: dict, profile: str, manifest: dict
) -> CoordinateFrame:
    """The frame the export writes. ``pixels`` is the exported image as Qwen2.5-VL's processor resizes it
    (:func:`transforms.coordinate_frames.qwen_resized` within ``--min-pixels`` / ``--max-pixels``), the
    only models that read absolute pixels."""
    choice = options.frame or spec.frame
    if choice != "pixels" and (options.min_pixels is not None or options.max_pixels is not None):
        raise ExportError(
            "--min-pixels / --max-pixels set the pixels frame; this export writes "
            f"{'the profile' if choice == 'profile' else choice}'s coordinates"
        )
    if choice == "profile":
        return CoordinateFrame(profile_geometry(settings, profile)[0])
    if choice != "pixels":
        return CoordinateFrame(cast(FrameKind, choice))  # one of FRAMES: export() checked --coordinates
    side = image_size_of(settings, manifest)
    height, width = qwen_resized(
        side, side, QWEN_FACTOR, options.min_pixels or QWEN_MIN_PIXELS, options.max_pixels or QWEN_MAX_PIXELS
    )
    return CoordinateFrame("pixels", width=width, height=height)


class Reframer:
    """Rewrites the coordinates of rows from the profile's convention into the export's frame and counts
    what it did (``from_text``: coordinates with no exact value in the row's target)."""

    def __init__(
        self, convention: CoordinateConvention, frame: CoordinateFrame, max_vertices: int, options: CoordinateOptions
    ):
        self.convention, self.frame, self.max_vertices = convention, frame, max_vertices
        self.bounds = {
            "min_pixels": options.min_pixels or QWEN_MIN_PIXELS,
            "max_pixels": options.max_pixels or QWEN_MAX_PIXELS,
            "factor": QWEN_FACTOR,
        }
        self.rewritten = self.from_text = 0

    def __call__(self, row: dict) -> dict:
        if self.frame.kind == self.convention:
            return row
        exact = target_geometry(json.loads(row["target"] or "{}"), self.convention, self.max_vertices)
        turns = []
        for turn in row["conversations"]:
            try:
                text, rewritten, from_text = reframe_text(
                    turn["value"], self.convention, self.frame, exact, self.max_vertices
                )
            except ValueError as error:
                raise ExportError(f"row {row['id']}: coordinates cannot be rewritten: {error}") from error
            self.rewritten += rewritten
            self.from_text += from_text
            turns.append({**turn, "value": text})
        return {**row, "conversations": turns}

    def report(self) -> dict:
        return {
            "frame": self.frame.kind,
            "written_as": self.frame.describe(),
            "profile": self.convention,
            **(
                {"width": self.frame.width, "height": self.frame.height, **self.bounds}
                if self.frame.kind == "pixels"
                else {}
            ),
            "rewritten": self.rewritten,
            "from_text": self.from_text,
        }


def write_coordinate_tokens(staging: Path, frame: CoordinateFrame) -> None:
    """``coordinate_tokens.txt`` for a ``bins1000`` frame: the 1000 ``<bin_k>`` tokens, one a line, to add to
    the tokenizer (each would otherwise split into several sub-word tokens); ms-swift reads the file as it
    is (``--new_special_tokens``), LLaMA-Factory as a comma-joined list (``--add_tokens``: ordinary added
    tokens, which decoding with ``skip_special_tokens`` keeps)."""
    if frame.kind == "bins1000":
        (staging / COORDINATE_TOKENS).write_text("".join(f"<bin_{k}>\n" for k in range(1, 1001)), encoding="utf-8")


# ------------------------------------------------------------------ the JSON formats


def split_streams(
    out: str | Path, profile: str, splits: tuple[str, ...], mixture: Mixture | None
) -> tuple[list[tuple[str, Callable[[], Iterator[dict]]]], dict | None]:
    """Per split to write, a function giving its rows in file order; the mixture's shares when sampled."""
    by_split = shards_by_split(out, profile, splits)
    if mixture is not None and mixture.split not in by_split:
        raise ExportError(
            f"--mixture samples the {mixture.split!r} split, which this export does not write "
            f"(splits: {sorted(by_split)})"
        )

    def sampled(rows: Iterator[dict]) -> Callable[[], Iterator[dict]]:
        return lambda: rows

    def in_file_order(shards: list[str]) -> Callable[[], Iterator[dict]]:
        return lambda: (row for shard in shards for row in iter_rows(shard))

    streams: list[tuple[str, Callable[[], Iterator[dict]]]] = []
    shares = None
    for split, shards in by_split.items():
        if mixture is not None and split == mixture.split:
            rows, shares = mixture_rows(out, profile, mixture)
            streams.append((split, sampled(rows)))
        else:
            streams.append((split, in_file_order(shards)))
    return streams, shares


def write_json_split(path: Path, rows: Iterable[dict], lines: bool) -> int:
    """A JSON list (one item a line inside it) or JSON Lines; the number of rows written."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("" if lines else "[\n")
        for record in rows:
            text = json.dumps(record, ensure_ascii=False)
            handle.write(text + "\n" if lines else ("" if count == 0 else ",\n") + text)
            count += 1
        handle.write("" if lines else ("\n]\n" if count else "]\n"))
    return count


def llamafactory_dataset_info(profile: str, files: dict[str, str]) -> dict:
    """``dataset_info.json`` entries, ``cxr_instruct_<profile>_<split>`` per split file."""
    return {
        f"cxr_instruct_{profile}_{split}": {
            "file_name": name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
        for split, name in sorted(files.items())
    }


def write_json_format(
    out: str | Path,
    profile: str,
    spec: JsonFormat,
    staging: Path,
    splits: tuple[str, ...],
    mixture: Mixture | None,
    coordinates: CoordinateOptions,
) -> tuple[dict, dict[str, int]]:
    """Split files, images and the side files of one JSON format into ``staging``; (report, rows per file)."""
    settings = profile_settings(out, profile)
    manifest = build_manifest(out)
    convention, max_vertices = profile_geometry(settings, profile)
    frame = resolve_frame(spec, coordinates, settings, profile, manifest)
    reframe = Reframer(convention, frame, max_vertices, coordinates)
    streams, shares = split_streams(out, profile, splits, mixture)
    keys: set[str] = set()
    rows: dict[str, int] = {}
    files: dict[str, str] = {}

    def converted(stream: Iterator[dict]) -> Iterator[dict]:
        for row in stream:
            keys.update(row["image_keys"])
            try:
                yield spec.convert(reframe(row), spec.image_prefix)
            except RecordError as error:
                raise ExportError(str(error)) from error

    for split, stream in streams:
        name = f"{split}.{'jsonl' if spec.lines else 'json'}"
        rows[split] = write_json_split(staging / name, converted(stream()), spec.lines)
        files[split] = name
    image_size = settings.get("image_size")
    images = copy_images(out, keys, staging, image_size, tuple(rows))
    write_coordinate_tokens(staging, frame)
    if spec.dataset_info:
        info = llamafactory_dataset_info(profile, files)
        (staging / "dataset_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    report = {
        "rows": rows,
        "images": images,
        "image_size": image_size_of(settings, manifest),
        "image_folder": IMAGES,
        "image_paths_relative_to": IMAGES if spec.image_prefix == "" else ".",
        "coordinates": reframe.report(),
        **({"mixture": shares} if shares else {}),
    }
    return report, {files[split]: count for split, count in rows.items()}
