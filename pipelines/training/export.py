"""``cxr-instruct export``: one profile of a build written as the files a training framework reads.

=================  ==========================================================  ================================
format             files under DEST                                            read by
=================  ==========================================================  ================================
``llava``          ``<split>.json`` (JSON list), ``images/``                   LLaVA ``--data_path``/``--image_folder``
                                                                               (several images: LLaVA-NeXT, OneVision)
``qwen-vl``        ``<split>.json`` as ``llava``, ``images/``; boxes in         Qwen2.5-VL ``qwen-vl-finetune``
                   absolute pixels of the image as Qwen2.5-VL resizes it
``llamafactory``   ``<split>.json`` (sharegpt), ``dataset_info.json``,          LLaMA-Factory ``dataset_dir: DEST``
                   ``images/``
``swift``          ``<split>.jsonl`` (messages / images), ``images/``           ms-swift ``--dataset <split>.jsonl``
``messages``       ``<split>.jsonl`` (chat format, content parts), ``images/``  transformers, TRL
``chexmix``        token sequences with a loss mask (:mod:`pipelines.training.export_chexmix`)  CheXmix-style trainers
=================  ==========================================================  ================================

Row layouts are in :mod:`transforms.export_records`; :mod:`pipelines.training.export_json` writes them. ``--coordinates`` picks the frame boxes and polygons
are written in (:mod:`transforms.coordinate_frames`): the profile's own by default, Qwen2.5-VL's pixels
for ``qwen-vl``. A frame of ``<bin_k>`` tokens adds ``coordinate_tokens.txt``, the tokens to add to the
tokenizer. ``--mixture`` writes the train split as a sample drawn by the profile's weights instead of
each row once (:class:`pipelines.training.export_source.Mixture`).

Every export streams the instruction shards one row group at a time, writes into a staged folder that
becomes DEST only when it is whole, and ends with ``DEST/export.json``: the options, rows per split, and
every file with its rows, size and sha256. Same build and options give byte-identical files. A row whose
turns or ``<image>`` slots are wrong, or a missing image, stops the export; no row is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.output.paths import BUILD_OUTPUT, LOCAL_FOLDER
from pipelines.training import export_chexmix
from pipelines.training.export_json import (
    FORMAT_COORDINATES,
    IMAGES,
    CoordinateOptions,
    JsonFormat,
    write_json_format,
)
from pipelines.training.export_source import Mixture, build_identity, build_manifest, staged_folder, write_report
from transforms.chexmix_tokens import ChexmixOptions
from transforms.coordinate_frames import FRAMES, QWEN_MAX_PIXELS, QWEN_MIN_PIXELS
from transforms.export_records import ExportError, llava_record, messages_record, role_record

JSON_FORMATS = {
    "llava": JsonFormat(llava_record, lines=False, image_prefix=""),
    "qwen-vl": JsonFormat(llava_record, lines=False, image_prefix="", frame="pixels"),
    "llamafactory": JsonFormat(role_record, lines=False, image_prefix=f"{IMAGES}/", dataset_info=True),
    "swift": JsonFormat(role_record, lines=True, image_prefix=f"{IMAGES}/"),
    "messages": JsonFormat(messages_record, lines=True, image_prefix=f"{IMAGES}/"),
}
"""The JSON formats by name (the table above): a new one is a row layout in :mod:`transforms.export_records`
and an entry here."""
FORMATS = (*JSON_FORMATS, "chexmix")


# ------------------------------------------------------------------ entry points


def export(
    out: str | Path,
    profile: str,
    fmt: str,
    dest: str | Path,
    splits: tuple[str, ...] = (),
    chexmix: ChexmixOptions | None = None,
    mixture: Mixture | None = None,
    coordinates: CoordinateOptions = FORMAT_COORDINATES,
) -> dict:
    """Export one profile of a build into DEST (replaced only when whole); returns ``export.json``."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; one of {list(FORMATS)}")
    if coordinates.frame not in (None, "profile", *FRAMES):
        raise ExportError(f"unknown --coordinates {coordinates.frame!r}; one of {['profile', *FRAMES]}")
    if fmt == "chexmix" and chexmix is None:
        raise ExportError("the chexmix format needs its options (a tokenizer file at least)")
    if fmt == "chexmix" and coordinates.frame not in (None, "profile"):
        raise ExportError(
            "the chexmix format writes coordinates as the profile does; --coordinates is for the "
            f"other formats ({', '.join(JSON_FORMATS)})"
        )
    head = {
        "format": fmt,
        "profile": profile,
        "splits": list(splits) or "all",
        "build": build_identity(build_manifest(out)),
    }
    with staged_folder(dest, out) as staging:
        if fmt == "chexmix":
            assert chexmix is not None  # refused above without options
            report, rows_per_file = export_chexmix.write_chexmix(out, profile, staging, chexmix, splits, mixture)
        else:
            report, rows_per_file = write_json_format(
                out, profile, JSON_FORMATS[fmt], staging, splits, mixture, coordinates
            )
        return write_report(staging, {**head, **report}, rows_per_file)


def summary(report: dict) -> str:
    """What the CLI prints: the report without the file list (and chexmix's length table apart)."""
    brief = {key: value for key, value in report.items() if key != "files"}
    lines = []
    if "chexmix" in brief:
        brief["chexmix"] = {key: value for key, value in brief["chexmix"].items() if key != "lengths"}
        lines.append(export_chexmix.format_lengths(report["chexmix"]["lengths"]))
    return "\n".join(
        [json.dumps(brief, sort_keys=True), *lines, f"{len(report['files'])} files with sha256 in export.json"]
    )


@click.command("export")
@click.argument("out", type=BUILD_OUTPUT)
@click.option("--profile", required=True, help="Profile folder under OUT/instructions, e.g. m4cxr.")
@click.option("--format", "fmt", required=True, type=click.Choice(FORMATS))
@click.option(
    "--dest",
    required=True,
    type=LOCAL_FOLDER,
    help="Local folder to write (replaced only by a whole export; refused if it holds other files).",
)
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable); default all.")
@click.option(
    "--coordinates",
    type=click.Choice(["profile", *FRAMES]),
    default=None,
    help="Frame of boxes and polygons; default: the profile's own (qwen-vl: pixels of the image as "
    "Qwen2.5-VL resizes it; Qwen2-VL and Qwen3-VL: norm1000).",
)
@click.option(
    "--min-pixels",
    type=click.IntRange(min=1),
    default=None,
    help=f"pixels frame: the Qwen processor's min_pixels [default: {QWEN_MIN_PIXELS}].",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    help=f"pixels frame: the Qwen processor's max_pixels [default: {QWEN_MAX_PIXELS}].",
)
@click.option("--mixture", is_flag=True, help="Write the train split as a sample drawn by the profile's weights.json.")
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=None,
    help="--mixture: rows to draw (default: the train split's row count).",
)
@click.option("--seed", type=int, default=None, help="--mixture: seed of the draw [default: 0].")
@export_chexmix.with_cli_options
def export_command(
    out, profile, fmt, dest, splits, coordinates, min_pixels, max_pixels, mixture, samples, seed, **chexmix_params
) -> None:
    """Export one profile of the build in OUT (a local folder or gs:// URI) into the local folder DEST, in
    the file layout of a training framework (docs/training.md)."""
    options = export_chexmix.options_from_cli(chexmix_params) if fmt == "chexmix" else None
    if not mixture and (samples is not None or seed is not None):
        raise click.UsageError("--samples and --seed go with --mixture")
    sampled = Mixture(samples=samples, seed=seed or 0) if mixture else None
    try:
        report = export(
            out,
            profile,
            fmt,
            dest,
            tuple(splits),
            options,
            sampled,
            CoordinateOptions(coordinates, min_pixels, max_pixels),
        )
    except ExportError as error:
        raise click.ClickException(str(error)) from error
    click.echo(summary(report))
    if "mixture" in report:
        click.echo(
            f"mixture of {report['mixture']['samples']} {report['mixture']['split']} rows (seed "
            f"{report['mixture']['seed']}): task, share by weights.json, share drawn"
        )
        for task, share in report["mixture"]["tasks"].items():
            note = "  (no weighted rows in this split)" if share.get("no_weighted_rows") else ""
            click.echo(f"  {task:<34} {share['expected']:8.2%} {share['realised']:8.2%}{note}")
        for pool in report["mixture"]["rows_without_weight"]:
            click.echo(f"  never drawn: {pool['rows']} {pool['task']} rows of {pool['source']} (no source weight)")
