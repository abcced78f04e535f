"""The per-image stages (image -> geometry -> language), run one images shard at a time.

Units are grouped by the ``images/`` shard they belong to: a split's shard count follows from its
unit count (``rows_per_shard.images``), a unit's shard from a stable hash of its patient (of its
study, or of the image itself, when the source has no patient ids), so every study and patient is
whole inside one shard and the task stage (pipelines/beam/task_stage.py) can build them there. One call
takes every unit of a shard in key order through decode, geometry and language, streams the image
rows straight into the shard's Parquet file and keeps the annotation rows in the shard's checkpoint.

- Memory: neither PNG bytes nor annotation rows travel through the pipeline. The stage sends on a
  reference to its checkpoint, per-shard counts, the patients it saw and the severity
  terms of its train documents, so what a local runner holds past the join is per shard, not per image
  (benchmarks/bench_scale.py).
- Resume: after the shard file the stage writes a checkpoint (annotation rows, rejects, counts,
  patients, pickled) and then a completion marker (pipelines/beam/write.py: ``CompletionMarker``, the
  tokenizer's format too) with both files' sha256, the stage settings and a digest of the shard's
  input units, their image files' fingerprints included (size and mtime, or
  content hash, per ``config.fingerprint``: a broken image fixed under the same name is read again and
  its old reject is gone). A rerun that finds a marker whose checksums, settings and
  inputs all match sends the checkpoint on without decoding anything, so a build killed midway
  restarts from its last finished shard and writes byte-identical output.

Checkpoints and markers live in ``<out>/_work/images/``; the build deletes ``_work`` when it
has written manifest.json.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from pipelines.beam.grouping import pack, unpack_all
from pipelines.beam.progress import Progress
from pipelines.beam.write import (
    ROW_GROUP_ROWS,
    CompletionMarker,
    ShardFile,
    finished,
    read_marker,
    write_marker,
    write_shard_file,
)
from pipelines.output.atomic import write_bytes_atomically
from pipelines.output.paths import WORK_DIR, shard_name, work_dir
from schemas.config import TranslationConfig
from schemas.records import Reject
from schemas.rows import AnnotationRow, ImageRow
from transforms import enrich, geometry_stage, io, language_stage, output_rows, padchest_english, translation
from transforms.hashing import shard_of
from transforms.splits import patient_key
from transforms.units import ImageUnit

OUTPUTS = ("rejects", "events", "patients", "shards", "severity_terms")  # tagged outputs besides the checkpoints


def shard_group(image) -> str:
    """What decides an image's shard: its patient, else its study, else the image itself, so studies
    and patients never span two shards of a split."""
    if image.subject_id:
        return patient_key(image)
    if image.study_id:
        return f"{image.source}/study/{image.study_id}"
    return image.image_key


def unit_entry(unit: ImageUnit) -> tuple[str, str, bytes]:
    """A unit as the image stage takes it: ``(split, shard group, packed unit)``, so the runner moves
    compact bytes and the shard assignment needs nothing unpacked."""
    return unit.split, shard_group(unit.record.image), pack(unit)


@dataclass(frozen=True)
class Checkpoint:
    """Where one images shard's annotation rows are (what the task stage reads)."""

    split: str
    name: str  # "<split>-SSSSS-of-NNNNN", as the images shard
    path: str


@dataclass
class ShardResult:
    """What one images shard made besides its image rows (pickled as the shard's checkpoint): the
    annotation rows the task stage reads, and the rejects, events and patients the stage sends on."""

    annotation_rows: list[AnnotationRow] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (source, "written")
    patients: list[tuple[str, str]] = field(default_factory=list)  # (patient key, split)


def file_fingerprint(uri: str, fingerprint: str) -> str:
    """What an input file is now: ``size<TAB>mtime`` (``fingerprint`` "size-mtime") or the hash of its
    bytes ("sha256"), as ``BuildConfig.fingerprint`` says; "missing" when there is no such file."""
    try:
        if fingerprint == "sha256":
            return io.sha256_of(uri)
        found = io.match(uri)
    except Exception:
        return "missing"
    if len(found) != 1:
        return "missing"
    return f"{found[0].size_in_bytes}\t{found[0].last_updated_in_seconds:.6f}"


def units_digest(units: list[ImageUnit], fingerprint: str = "size-mtime") -> str:
    """SHA-256 over the units of a shard (records, annotations, split), in key order, and over what
    each unit's image file is now (:func:`file_fingerprint`): a record holds only the image's URI, so a
    file fixed or replaced under the same name changes the digest and the shard is redone. (Tables
    and annotation files are parsed into the records and annotations themselves, so a change to them
    shows in those.)"""
    digest = hashlib.sha256()
    for unit in units:
        digest.update(unit.record.model_dump_json().encode())
        digest.update(f"\0{file_fingerprint(unit.record.image.uri, fingerprint)}\0".encode())
        for ann in unit.annotations:
            digest.update(ann.model_dump_json().encode())
        digest.update(f"\0{unit.split}\0{unit.split_authority}\n".encode())
    return digest.hexdigest()


def unit_rejects(unit: ImageUnit, stage: str, exc: Exception, where: str, annotations) -> list[Reject]:
    """A failed unit: a reject for the image (detail starts with its file) and for each annotation riding on it."""
    reason = enrich.kebab(type(exc).__name__)
    rejects = [
        Reject(key=unit.key, source=unit.record.image.source, stage=stage, reason=reason, detail=f"{where}: {exc}")
    ]
    for ann in annotations:
        rejects.append(
            Reject(
                key=ann.target_key,
                source=ann.source,
                stage=stage,
                reason="target-image-rejected",
                detail=f"{ann.native_id}: {unit.key} ({where}): {reason}",
            )
        )
    return rejects


def run_unit(
    unit: ImageUnit,
    image_size: int,
    max_vertices: int,
    where: str,
    png_compression: int,
    translations: Mapping[str, str] | None = None,
) -> tuple[ImageRow | None, ShardResult]:
    """One unit through image, geometry and language: ``(image_row | None, ShardResult part)``; the
    image is stored as a PNG at zlib level ``png_compression``; ``translations`` maps PadChest report
    texts to their English translation when the build translates."""
    result = ShardResult()
    stage, annotations = "image", unit.annotations
    try:
        decoded = enrich.decode_unit(unit, image_size, png_compression)
        stage = "geometry"
        enriched, item_rejects = geometry_stage.geometry_unit(decoded, max_vertices=max_vertices)
        result.rejects += item_rejects
        stage, annotations = "language", enriched.annotations  # the others were rejected by geometry
        report = unit.record.report
        try:
            enriched = language_stage.language_unit(enriched)
        except MemoryError:
            raise
        except Exception as exc:
            if report is None:
                raise
            reason = enrich.kebab(type(exc).__name__)
            result.rejects.append(
                Reject(
                    key=unit.key,
                    source=unit.record.image.source,
                    stage="language",
                    level="item",
                    reason=reason,
                    detail=f"{report.origin}: {exc}",
                )
            )
            enriched = language_stage.language_unit(language_stage.without_report(enriched, reason))
        try:
            enriched = language_stage.english_unit(enriched, translations)
        except padchest_english.UnknownPhrase as exc:  # costs the English statements only
            result.rejects.append(
                Reject(
                    key=unit.key,
                    source=unit.record.image.source,
                    stage="language",
                    level="item",
                    reason="unknown-padchest-phrase",
                    detail=str(exc),
                )
            )
    except MemoryError:  # the worker's state, not the image's: the bundle fails and the runner retries it
        raise  # (a reject would be written into the shard's checkpoint and never retried)
    except Exception as exc:
        result.rejects += unit_rejects(unit, stage, exc, where, annotations)
        return None, result
    result.annotation_rows.append(output_rows.annotation_row(enriched))
    result.events.append((unit.record.image.source, "written"))
    result.events += [(ann.source, "written") for ann in enriched.annotations]
    result.patients.append((patient_key(unit.record.image), unit.split))
    return output_rows.image_row(enriched), result


def translation_fingerprint(options: TranslationConfig) -> dict:
    """What decides a build's translations (model files' digest and decoding options): part of the
    image stage's settings, so a shard made with another model is made again, and of manifest.json."""
    return translation.translator(options).fingerprint()


class ProcessImageShard(beam.DoFn):
    """``((split, shard, num_shards), packed units)`` -> the shard's :class:`Checkpoint`; as tagged outputs
    its rejects, ``((source, event), count)`` pairs, distinct ``(patient, split)`` pairs, the severity
    terms of its train documents (:func:`transforms.output_rows.train_severity_documents`) and the shard's
    description (none when every image of the shard was rejected: then no images file is written).
    Reuses a verified checkpoint when there is one (made with the same settings: image size, vertex
    limit, PNG compression level, English statements version and translation model). With
    ``translation`` options, the PadChest reports of a shard are translated together before its units
    run (:mod:`transforms.translation`: batched, each distinct sentence once)."""

    def __init__(
        self,
        out_dir: str,
        image_size: int,
        max_vertices: int,
        roots: dict[str, str],
        progress: Progress | None = None,
        *,
        png_compression: int,
        fingerprint: str = "size-mtime",
        translation: TranslationConfig | None = None,
    ):
        self.out_dir = out_dir
        self.settings: dict[str, Any] = {
            "image_size": image_size,
            "max_vertices": max_vertices,
            "png_compression": png_compression,
            "english_statements": padchest_english.VERSION,
            "translation": None if translation is None else translation_fingerprint(translation),
        }
        self.translation = translation
        self.fingerprint = fingerprint
        self.roots = roots
        self.progress = progress or Progress(None)
        self.reused = Metrics.counter("image_stage", "shards_reused")
        self.processed = Metrics.counter("image_stage", "shards_processed")

    def setup(self):
        io.map_large_allocations()  # decoded images go back to the OS when freed
        self.translator = None if self.translation is None else translation.translator(self.translation)
        try:
            self.settings["version"] = metadata.version("cxr-instruct")
        except metadata.PackageNotFoundError:
            self.settings["version"] = "unknown"

    def process(self, element):
        (split, shard, num_shards), packed_units = element
        self.progress.started("image")
        units = sorted(unpack_all(packed_units), key=lambda u: u.key)
        name = shard_name(split, shard, num_shards)
        marker_path = io.join(work_dir(self.out_dir), "images", f"{name}.json")
        digest = units_digest(units, self.fingerprint)
        marker = read_marker(marker_path, 2)  # the images shard and the checkpoint
        if marker is not None and finished(self.out_dir, marker_path, marker, digest, self.settings):
            self.reused.inc()
            image_file, checkpoint = marker["outputs"]
            with io.open_binary(io.join(self.out_dir, checkpoint["path"])) as handle:
                result = pickle.load(handle)
            self.progress.add("image", len(units))  # done by an earlier run
        else:
            self.processed.inc()
            image_file, checkpoint, result = self._process(units, split, name)
            write_marker(
                marker_path,
                CompletionMarker(outputs=[image_file, checkpoint], inputs_sha256=digest, settings=self.settings),
            )
        yield Checkpoint(split, name, io.join(self.out_dir, checkpoint["path"]))
        for reject in result.rejects:
            yield TaggedOutput("rejects", reject)
        for event, count in sorted(Counter(result.events).items()):
            yield TaggedOutput("events", (event, count))
        for patient in sorted(set(result.patients)):
            yield TaggedOutput("patients", patient)
        for terms in output_rows.train_severity_documents(result.annotation_rows):
            yield TaggedOutput("severity_terms", terms)
        if image_file["rows"]:  # every image rejected: no file (no zero-row shard), no manifest entry
            yield TaggedOutput("shards", image_file)

    def _where(self, unit: ImageUnit) -> str:
        ref = unit.record.image
        return io.relative(ref.uri, self.roots.get(ref.source, ""))

    def _translations(self, units: list[ImageUnit]) -> dict[str, str]:
        """The English translation of each PadChest report text of the shard, in one batched call;
        none without a translation model."""
        if self.translator is None:
            return {}
        texts = sorted(
            {
                unit.record.report.text
                for unit in units
                if unit.record.image.source == "padchest" and unit.record.report is not None
            }
        )
        return dict(zip(texts, self.translator.translate(texts), strict=True))

    def _process(self, units: list[ImageUnit], split: str, name: str) -> tuple[ShardFile, ShardFile, ShardResult]:
        """Decode, geometry and language for every unit: the images shard (streamed a row group at a
        time) and the checkpoint, each described; and what the shard made besides image rows."""
        result = ShardResult()
        translations = self._translations(units)

        def image_rows() -> Iterator[list[ImageRow]]:
            """One row group at a time; the shard's other outputs collect in ``result``."""
            batch: list[ImageRow] = []
            for unit in units:
                row, part = run_unit(
                    unit,
                    self.settings["image_size"],
                    self.settings["max_vertices"],
                    self._where(unit),
                    self.settings["png_compression"],
                    translations,
                )
                self.progress.add("image", 1)
                for attr in ("annotation_rows", "rejects", "events", "patients"):
                    getattr(result, attr).extend(getattr(part, attr))
                if row is not None:
                    batch.append(row)
                if len(batch) == ROW_GROUP_ROWS["images"]:
                    yield batch
                    batch = []
            yield batch

        image_file = write_shard_file(self.out_dir, f"images/{name}.parquet", "images", split, image_rows())
        payload = pickle.dumps(result, protocol=5)
        checkpoint = ShardFile(
            path=f"{WORK_DIR}/images/{name}.pkl",
            table=f"{WORK_DIR}/images",
            split=split,
            rows=len(result.annotation_rows),
            bytes=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
        )
        write_bytes_atomically(io.join(self.out_dir, checkpoint["path"]), payload)
        return image_file, checkpoint, result


class ImageStage(beam.PTransform):
    """Unit entries (:func:`unit_entry`) -> checkpoints (main) plus ``rejects``, ``events``,
    ``patients``, ``severity_terms`` and ``shards`` (see :class:`ProcessImageShard`). Images are stored
    as PNGs at zlib level ``png_compression`` (``BuildConfig.png_compression``)."""

    def __init__(
        self,
        out_dir: str,
        rows_per_shard: int,
        image_size: int,
        max_vertices: int,
        roots: dict[str, str],
        progress: Progress | None = None,
        *,
        png_compression: int,
        fingerprint: str = "size-mtime",
        translation: TranslationConfig | None = None,
    ):
        super().__init__()
        self.fingerprint = fingerprint
        self.translation = translation
        self.out_dir = out_dir
        self.rows_per_shard = rows_per_shard
        self.image_size = image_size
        self.max_vertices = max_vertices
        self.roots = roots
        self.progress = progress or Progress(None)
        self.png_compression = png_compression

    def expand(self, entries):
        rows_per_shard, progress = self.rows_per_shard, self.progress

        def shards_of(split_count):
            split, count = split_count
            progress.add("image", total=count)  # the images this stage will process, split by split
            return split, max(1, math.ceil(count / rows_per_shard))

        shards_per_split = (
            entries
            | "Unit split" >> beam.Map(lambda entry: (entry[0], 1))
            | "Units per split" >> beam.CombinePerKey(sum)
            | "Shards per split" >> beam.Map(shards_of)
        )

        def assign(entry: tuple[str, str, bytes], shards: dict[str, int]):
            split, group, packed = entry
            n = shards[split]
            return (split, shard_of(group, n), n), packed

        return (
            entries
            | "Assign images shard" >> beam.Map(assign, shards=beam.pvalue.AsDict(shards_per_split))
            | "Group images shard" >> beam.GroupByKey()
            | "Process images shard"
            >> beam.ParDo(
                ProcessImageShard(
                    self.out_dir,
                    self.image_size,
                    self.max_vertices,
                    self.roots,
                    progress,
                    png_compression=self.png_compression,
                    fingerprint=self.fingerprint,
                    translation=self.translation,
                )
            ).with_outputs(*OUTPUTS, main="checkpoints")
        )
