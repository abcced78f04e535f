"""The tokenize stage: a finished build's images table -> Chameleon VQ-GAN codes (the ``vq`` table).

images/<split>-SSSSS-of-NNNNN.parquet -> Reshuffle -> read + decode (bad images -> rejects)
-> Reshuffle -> RunInference (fixed batch, one shared model per worker) -> rows -> one vq shard
per images shard, written with its rejects and then a completion marker.

Output, beside the build's tables:

- ``vq/<split>-SSSSS-of-NNNNN.parquet``: image_key, codes int16[1024], lm_ids int32[1024], tokenizer
  (the fingerprint id); same shard names as ``images/``, rows sorted by image_key.
- ``vq/_rejects/<split>-SSSSS-of-NNNNN.parquet``: images that could not be tokenized (rejects schema,
  stage ``tokenize``), for the shards that have any. Neither file is written with zero rows
  (``datasets`` cannot load a zero-row Parquet file).
- ``vq/_complete/<split>-SSSSS-of-NNNNN.json``: written last per shard, the build's completion marker
  (pipelines/beam/write.py: ``CompletionMarker``): both files it wrote with their sha256 (null for a file
  it did not write), the sha256 of the images shard it read, and the tokenizer's fingerprint id as its
  settings; a rerun skips a shard only when all of them still match, so a crash costs at most the
  unfinished shards and a rebuilt or damaged shard is tokenized again. An internal marker:
  ``cxr-instruct publish`` does not upload it.

Both Parquet files go through the build's shard writer (pipelines/beam/write.py: streamed a row group
at a time, under a temporary name, checksummed), with the row group size of ``manifests/tokenizer.yaml``.
- ``vq/tokenizer.json``: the full tokenizer fingerprint (config, weights hash, precision, id mapping).

torch and transformers are imported only inside the stage (the ``tokenizer`` extra), so the command
line loads without them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import apache_beam as beam
import click
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from rich.console import Console

from pipelines.beam.progress import Progress, watching
from pipelines.beam.write import (
    CompletionMarker,
    ShardFile,
    batched,
    finished,
    read_marker,
    write_marker,
    write_shard_file,
)
from pipelines.output.atomic import write_bytes_atomically
from pipelines.output.manifest import Manifest, record_vq_outputs
from pipelines.output.out_lock import OutputLocked, locked
from pipelines.output.paths import BUILD_OUTPUT, split_of
from schemas.rows import RejectRow, VqRow
from schemas.tables import CODES_PER_IMAGE, arrow_schema
from transforms.enrich import kebab
from transforms.io import sha256_if_exists, sha256_of

DEFAULT_BEAM_ARGS = ["--runner=FnApiRunner"]
STAGE = "tokenize"
REJECT_DIR = "_rejects"
MARKER_DIR = "_complete"
FINGERPRINT_FILE = "tokenizer.json"

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ shard bookkeeping


def image_shards(out_dir: str) -> list[str]:
    """File names of the images table's shards, sorted."""
    matches = FileSystems.match([FileSystems.join(out_dir, "images", "*.parquet")])[0].metadata_list
    names = sorted(Path(m.path).name for m in matches)
    if not names:
        raise FileNotFoundError(f"no images/*.parquet under {out_dir}: run `cxr-instruct build` first")
    return names


def image_rows(out_dir: str, shard: str) -> int:
    """Rows of one images shard, from its Parquet footer."""
    with FileSystems.open(FileSystems.join(out_dir, "images", shard)) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def vq_path(out_dir: str, *parts: str) -> str:
    return FileSystems.join(out_dir, "vq", *parts)


def marker_path(out_dir: str, shard: str) -> str:
    return vq_path(out_dir, MARKER_DIR, shard.removesuffix(".parquet") + ".json")


def shard_settings(fingerprint_id: str) -> dict[str, str]:
    """What a vq shard was made with, as its completion marker records it."""
    return {"tokenizer": fingerprint_id}


def marker_of_version_0_1(out_dir: str, shard: str, old: dict) -> CompletionMarker:
    """The vq marker of ``shard`` as cxr-instruct 0.1 wrote it (``tokenizer``, ``images_sha256``,
    ``sha256``, ``rows``, ``rejects_sha256``, ``rejects`` at the top level) in today's shape, so the
    shards it proves finished are kept rather than encoded again on the GPU. Raises KeyError when a
    field is missing."""
    split = split_of(shard)

    def entry(path: str, table: str, rows: int, sha256: str) -> ShardFile:
        found = FileSystems.match([FileSystems.join(out_dir, path)])[0].metadata_list
        size = found[0].size_in_bytes if found else 0
        return ShardFile(path=path, table=table, split=split, rows=rows, bytes=size, sha256=sha256)

    return CompletionMarker(
        outputs=[
            entry(f"vq/{shard}", "vq", old["rows"], old["sha256"]),
            entry(f"vq/{REJECT_DIR}/{shard}", "rejects", old["rejects"], old["rejects_sha256"]),
        ],
        inputs_sha256=old["images_sha256"],
        settings=shard_settings(old["tokenizer"]),
    )


def completed_shards(out_dir: str, shards: list[str], fingerprint_id: str) -> list[str]:
    """Shards whose completion marker still holds: the images shard it read and the two files it
    wrote unchanged, by sha256. A marker from another tokenizer raises: one vq table never mixes codes
    of two tokenizers (write to a fresh output or delete ``vq/``)."""
    done = []
    for shard in shards:
        path = marker_path(out_dir, shard)
        marker = read_marker(path, 2, upgrade=partial(marker_of_version_0_1, out_dir, shard))
        if marker is None:
            continue
        written_by = marker["settings"].get("tokenizer")
        if written_by != fingerprint_id:
            raise RuntimeError(
                f"{path} was written by tokenizer {written_by}, this run is "
                f"{fingerprint_id}: delete {vq_path(out_dir)} to re-tokenize"
            )
        images_sha256 = sha256_if_exists(FileSystems.join(out_dir, "images", shard))
        if finished(out_dir, path, marker, images_sha256, shard_settings(fingerprint_id)):
            done.append(shard)
    return done


# ------------------------------------------------------------------ elements


def read_images(shard: str, out_dir: str):
    """One images shard -> ``(shard, image_key, png bytes)``, a row group at a time."""
    with FileSystems.open(FileSystems.join(out_dir, "images", shard)) as handle:
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(columns=["image_key", "image"], batch_size=64):
            keys = batch.column("image_key").to_pylist()
            images = batch.column("image").field("bytes").to_pylist()
            for key, png in zip(keys, images):
                yield shard, key, png


def decode(element, size: int):
    """``(shard, image_key, png)`` -> ``((shard, image_key), uint8 (size, size))``; raises on bad images."""
    from transforms.vqgan import tokenizer_input

    shard, key, png = element
    return (shard, key), tokenizer_input(png, size)


def failure_reject(failure) -> tuple[str, RejectRow]:
    """A dead-letter element of the decode step -> ``(shard, rejects row)``."""
    (shard, key, _png), (exc_type, exc_repr, _traceback) = failure
    return shard, RejectRow(
        key=key,
        source=key.split("/", 1)[0],
        stage=STAGE,
        kind="rejected",
        level="record",
        reason=kebab(exc_type.__name__),
        detail=exc_repr,
    )


def vq_row(result, lm_ids: np.ndarray, fingerprint_id: str) -> tuple[str, VqRow]:
    """``((shard, image_key), codes)`` -> ``(shard, vq row)``."""
    (shard, key), codes = result
    return shard, VqRow(image_key=key, codes=codes, lm_ids=lm_ids[codes.astype(np.int64)], tokenizer=fingerprint_id)


def vq_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """VQ rows as an Arrow table: the code arrays become fixed-size lists without a Python loop per code."""
    columns = {
        "image_key": pa.array([r["image_key"] for r in rows], pa.string()),
        "codes": fixed_lists([r["codes"] for r in rows], pa.int16()),
        "lm_ids": fixed_lists([r["lm_ids"] for r in rows], pa.int32()),
        "tokenizer": pa.array([r["tokenizer"] for r in rows], pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=arrow_schema("vq"))


def fixed_lists(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.FixedSizeListArray:
    """Equal-length 1-D arrays -> an Arrow fixed_size_list column, without a Python loop per value."""
    flat = np.concatenate(arrays) if arrays else np.zeros(0, value_type.to_pandas_dtype())
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, value_type), CODES_PER_IMAGE)


def write_shard(element, out_dir: str, fingerprint_id: str, row_group_rows: int) -> CompletionMarker:
    """All results of one images shard -> its vq shard, its rejects, then its completion marker."""
    shard, tagged = element
    rows: list[VqRow] = sorted((row for tag, row in tagged if tag == "row"), key=lambda r: r["image_key"])
    rejects: list[RejectRow] = sorted(
        (row for tag, row in tagged if tag == "reject"), key=lambda r: (r["key"], r["reason"])
    )
    keys = [r["image_key"] for r in rows] + [r["key"] for r in rejects]
    if len(keys) != len(set(keys)):
        raise ValueError(f"images/{shard}: an image_key occurs more than once")
    split = split_of(shard)
    outputs = [
        write_shard_file(out_dir, f"vq/{shard}", "vq", split, batched(rows, row_group_rows), vq_table),
        write_shard_file(out_dir, f"vq/{REJECT_DIR}/{shard}", "rejects", split, batched(rejects, row_group_rows)),
    ]
    images_sha256 = sha256_of(FileSystems.join(out_dir, "images", shard))
    marker = CompletionMarker(outputs=outputs, inputs_sha256=images_sha256, settings=shard_settings(fingerprint_id))
    write_marker(marker_path(out_dir, shard), marker)
    return marker


def tokenized(marker: CompletionMarker) -> tuple[int, int]:
    """(images encoded, images rejected) of a shard, from its completion marker."""
    vq, rejects = marker["outputs"]
    return vq["rows"], rejects["rows"]


# ------------------------------------------------------------------ RunInference handler


class VqganModelHandler(ModelHandler[np.ndarray, np.ndarray, Any]):
    """uint8 (H, W) images -> int16 (1024,) codes, batched at exactly ``batch_size``.

    ``large_model=True``: one model per worker machine, shared by all its SDK processes through
    Beam's proxy; the loaded object is a ``transforms.vqgan.Tokenizer`` (numpy in, numpy out).
    On ``cuda`` the step carries a Dataflow accelerator resource hint (right fitting), so only this
    step asks for a GPU; local runners ignore the hint.
    """

    def __init__(
        self, model_dir: str, device: str, batch_size: int, precision: str | None = None, accelerator: str | None = None
    ):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size, large_model=True)
        self.batch_size = batch_size
        self.model_dir = model_dir
        self.device = device
        self.precision = precision
        self.accelerator = accelerator

    def load_model(self):
        from transforms.vqgan import load_tokenizer

        return load_tokenizer(self.model_dir, self.device, self.precision)

    def run_inference(self, batch, model, inference_args=None):
        return list(model.encode_codes(np.stack(batch), fixed_batch=self.batch_size))

    def get_num_bytes(self, batch) -> int:
        return sum(array.nbytes for array in batch)

    def get_resource_hints(self) -> dict:
        return {"accelerator": self.accelerator} if self.device.startswith("cuda") and self.accelerator else {}

    def get_metrics_namespace(self) -> str:
        return "cxr_instruct_vqgan"


# ------------------------------------------------------------------ graph and entry point


def build_graph(
    p: beam.Pipeline,
    out_dir: str,
    shards: list[str],
    handler: VqganModelHandler,
    lm_ids: np.ndarray,
    fingerprint_id: str,
    image_size: int,
    row_group_rows: int,
    progress: Progress | None = None,
) -> None:
    progress = progress or Progress(None)
    planned = p | "Pending shards" >> beam.Create(shards)
    images = planned | "Spread shards" >> beam.Reshuffle() | "Read images" >> beam.FlatMap(read_images, out_dir)
    decoded, failed = images | "Decode" >> beam.Map(decode, image_size).with_exception_handling()
    codes = decoded | "Spread images" >> beam.Reshuffle() | "Encode" >> RunInference(KeyedModelHandler(handler))
    tagged = (
        planned | "Plan" >> beam.Map(lambda shard: (shard, ("plan", None))),
        codes
        | "Rows" >> beam.Map(vq_row, lm_ids, fingerprint_id)
        | "Tag rows" >> beam.Map(lambda kv: (kv[0], ("row", kv[1]))),
        failed
        | "Reject rows" >> beam.Map(failure_reject)
        | "Tag rejects" >> beam.Map(lambda kv: (kv[0], ("reject", kv[1]))),
    )
    (
        tagged
        | "Merge" >> beam.Flatten()
        | "Group shard" >> beam.GroupByKey()
        | "Write shard" >> beam.Map(write_shard, out_dir, fingerprint_id, row_group_rows)
        | "Report progress" >> beam.Map(lambda marker: progress.add("tokenize", sum(tokenized(marker))))
    )


def run_tokenize(
    out_dir: str,
    model_dir: str,
    device: str = "cpu",
    batch_size: int | None = None,
    beam_args: list[str] | None = None,
    precision: str | None = None,
    vocabulary: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Tokenize every not-yet-complete images shard of a build output; return a summary.

    ``vocabulary``: Chameleon's ``text_tokenizer.json`` for the code -> LM id map (default code + 4).
    Holds the output folder's lock (pipelines/output/out_lock.py) while it writes.
    """
    with locked(out_dir, "tokenize"):
        return _run_tokenize(
            out_dir, model_dir, device, batch_size, beam_args, precision, vocabulary, progress or Progress(None)
        )


def _run_tokenize(
    out_dir: str,
    model_dir: str,
    device: str,
    batch_size: int | None,
    beam_args: list[str] | None,
    precision: str | None,
    vocabulary: str | None,
    progress: Progress,
) -> dict:
    from transforms import vqgan

    vqgan.require_device(device)
    config = vqgan.settings()
    precision = precision or vqgan.default_precision(device)
    fingerprint, mapping = vqgan.fingerprint(model_dir, precision, vocabulary)
    shards = image_shards(out_dir)
    done = completed_shards(out_dir, shards, fingerprint["id"])
    pending = [shard for shard in shards if shard not in done]
    write_bytes_atomically(
        vq_path(out_dir, FINGERPRINT_FILE), json.dumps(fingerprint, indent=2, sort_keys=True).encode() + b"\n"
    )
    if pending:
        progress.started("tokenize")
        progress.add("tokenize", total=sum(image_rows(out_dir, shard) for shard in pending))
        handler = VqganModelHandler(
            str(model_dir), device, batch_size or config["batch_size"], precision, config["accelerator_hint"]
        )
        with beam.Pipeline(options=PipelineOptions(beam_args if beam_args else DEFAULT_BEAM_ARGS)) as p:
            build_graph(
                p,
                out_dir,
                pending,
                handler,
                mapping.ids,
                fingerprint["id"],
                config["image_size"],
                config["row_group_rows"],
                progress,
            )
    counts = []
    for shard in pending:
        marker = read_marker(marker_path(out_dir, shard), 2)
        if marker is None:
            raise RuntimeError(f"images/{shard}: tokenized without a completion marker")
        counts.append(tokenized(marker))
    if FileSystems.exists(FileSystems.join(out_dir, Manifest.FILE)):  # a build's output: list vq/ in its manifest
        record_vq_outputs(out_dir)
    return {
        "tokenizer": fingerprint["id"],
        "skipped": done,
        "written": pending,
        "images": sum(encoded for encoded, _ in counts),
        "rejects": sum(rejected for _, rejected in counts),
    }


# ------------------------------------------------------------------ command line


@click.command("tokenize", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--out",
    "out",
    required=True,
    type=BUILD_OUTPUT,
    help="A build's output folder (local or gs://): reads images/, writes vq/ beside them.",
)
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Local HF-format ChameleonVQVAE folder (see `cxr-instruct tokenizer convert`).",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda[:N] (fails if CUDA is unusable).")
@click.option("--batch-size", type=int, default=None, help="Images per model call (default: manifests/tokenizer.yaml).")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default=None,
    help="Trunk precision (default bf16 on CUDA, fp32 on CPU); distances always fp32.",
)
@click.option(
    "--vocabulary",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Chameleon text_tokenizer.json for lm_ids (default: code + 4).",
)
@click.option("--runner", default="FnApiRunner", show_default=True)
@click.option("--workers", default=1, show_default=True, help="Local worker processes (multi_processing when > 1).")
@click.pass_context
def tokenize_command(
    ctx: click.Context,
    out: str,
    model_dir: str,
    device: str,
    batch_size: int | None,
    precision: str | None,
    vocabulary: str | None,
    runner: str,
    workers: int,
) -> None:
    """Encode the images table into VQ-GAN codes (OUT/vq). Extra arguments go to Beam."""
    beam_args = [f"--runner={runner}"]
    if workers > 1:
        beam_args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    try:
        with watching(runner, Console()) as display:
            summary = run_tokenize(
                out,
                model_dir,
                device,
                batch_size,
                beam_args + list(ctx.args),
                precision,
                vocabulary,
                progress=display.reporter if display else Progress(None),
            )
    except OutputLocked as in_use:
        click.echo(f"tokenize: {in_use}", err=True)
        raise SystemExit(2) from None
    click.echo(
        f"tokenizer {summary['tokenizer']}: {summary['images']} images encoded, "
        f"{summary['rejects']} rejected, {len(summary['written'])} shards written, "
        f"{len(summary['skipped'])} already complete"
    )


@click.group("tokenizer")
def tokenizer_group() -> None:
    """Prepare a local tokenizer model folder."""


@tokenizer_group.command("convert")
@click.option("--ckpt", required=True, type=click.Path(exists=True, dir_okay=False), help="Meta's vqgan.ckpt")
@click.option(
    "--yaml", "yaml_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Meta's vqgan.yaml"
)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option(
    "--allow-unsafe-pickle",
    is_flag=True,
    help="Fall back to torch.load(weights_only=False) if needed (trusted files only).",
)
def convert_command(ckpt: str, yaml_path: str, out: str, allow_unsafe_pickle: bool) -> None:
    """Convert vqgan.ckpt + vqgan.yaml into an HF-format encoder folder (decoder keys dropped)."""
    from transforms.vqgan import convert_checkpoint

    summary = convert_checkpoint(ckpt, yaml_path, out, allow_unsafe_pickle)
    click.echo(
        f"wrote {out}: {summary['kept_keys']} keys kept, {summary['dropped_keys']} dropped "
        f"({', '.join(summary['dropped_prefixes']) or 'none'})"
    )


@tokenizer_group.command("tiny")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--seed", default=0, show_default=True)
def tiny_command(out: str, seed: int) -> None:
    """Write a tiny randomly initialised model (demo/tests; its codes are marked untrained)."""
    from transforms.vqgan import write_tiny_model

    click.echo(f"wrote untrained tiny tokenizer to {write_tiny_model(out, seed)}")
