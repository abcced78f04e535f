"""Output tables: Hugging Face ``Features`` and the Arrow schemas (with the ``huggingface`` metadata
key) that every Parquet shard is written with, so ``datasets.load_dataset("parquet", ...)`` restores
``Image()`` columns and nested lists exactly.
"""

from __future__ import annotations

import pyarrow as pa
from datasets import Features, Image, List, Value

import manifests

_str = Value("string")
_f64 = Value("float64")
_i32 = Value("int32")

LETTERBOX = {"size": _i32, "scale": _f64, "pad_x": _f64, "pad_y": _f64}

IMAGES = Features(
    {
        "image_key": _str,
        "source": _str,
        "split": _str,
        "split_authority": _str,  # "official" or "patient-hash"
        "subject_id": _str,
        "study_id": _str,
        "view": _str,
        "study_datetime": _str,
        "image": Image(),  # PNG, image_size x image_size, 8-bit grayscale, letterboxed
        "orig_width": _i32,
        "orig_height": _i32,
        "letterbox": LETTERBOX,
        "photometric": _str,
        "bits_stored": _i32,
        "source_format": _str,
    }
)

# Coordinates: x1..y2 in original pixels; u1..v2 in [0, 1] of the letterboxed canvas.
BOX = {
    "label": _str,  # source spelling
    "finding": _str,  # harmonised name when the label maps to one, else null
    "origin": _str,
    "reader": _str,  # one reader's box, or "consensus" for a fused box
    "readers": List(_str),  # the readers behind the box (several for a consensus box)
    "x1": _f64,
    "y1": _f64,
    "x2": _f64,
    "y2": _f64,
    "u1": _f64,
    "v1": _f64,
    "u2": _f64,
    "v2": _f64,
}
# rings: list of rings, each a list of [x, y] points in original pixel indices (a vertex at a pixel
# centre); exterior rings have positive shoelace area, holes negative (transforms.masks.mask_to_polygons),
# landmark contours are single rings. rings_unit: the same points in [0, 1] of the canvas.
POLYGON = {
    "label": _str,
    "origin": _str,
    "rings": List(List(List(_f64))),
    "rings_unit": List(List(List(_f64))),
}
FINDING = {"name": _str, "presence": Value("int8"), "systems": List(_str), "raw": List(_str)}
RAW_LABEL = {"system": _str, "name": _str, "value": _f64, "reader": _str}
SECTION = {"name": _str, "text": _str}
REGION = {
    "region": _str,
    "phrase": _str,
    "attributes": List(_str),
    "comparison_cues": List(_str),
    "temporal_cues": List(_str),
    "severity_cues": List(_str),
}
# A question a VQA dataset asks of the image (schemas.records.NativeQuestion)
QUESTION = {
    "dataset": _str,  # "mimic-cxr-vqa" | "mimic-diff-vqa"
    "where": _str,
    "split": _str,  # the dataset's own split as written
    "question_type": _str,
    "semantic_type": _str,
    "template": _str,
    "question": _str,
    "answers": List(_str),
    "reference_study_id": _str,
}

# An attribute mention (schemas.records.AttributeMention); span offsets index ``report_text`` for
# English reports, and the sentence list of LabelsLocalizationsBySentence for PadChest.
MENTION = {
    "finding": _str,
    "presence": Value("int8"),
    "laterality": _str,
    "zones": List(_str),
    "severity_min": Value("int8"),  # ordinal 0 trace .. 3 large/severe; null when unstated
    "severity_max": Value("int8"),
    "severity_scale": _str,  # "size" | "severity"
    "temporal": _str,
    "sentence": _str,
    "span_start": _i32,
    "span_end": _i32,
}

ANNOTATIONS = Features(
    {
        "image_key": _str,
        "source": _str,
        "split": _str,
        "subject_id": _str,  # the study and patient fields travel with the row so that study- and
        "study_id": _str,  # patient-level tasks can group rows without the images table
        "view": _str,
        "study_datetime": _str,
        "annotation_sources": List(_str),  # e.g. ["chexmask", "imagenome"]
        "findings": List(FINDING),  # the 14 harmonised findings, presence 1/0/-1/null
        "raw_labels": List(RAW_LABEL),
        "boxes": List(BOX),
        "polygons": List(POLYGON),
        "regions": List(REGION),
        "questions": List(QUESTION),  # what MIMIC-CXR-VQA / Medical-Diff-VQA ask of this image, when ingested
        "report_text": _str,
        "report_language": _str,
        # English statements of a report that is not in English: PadChest's, rendered from its sentence
        # labels and localizations (transforms/padchest_english.py); null for English reports
        "report_english": _str,
        # the report machine-translated by the configured local model (config ``translation``), else null
        "report_translation": _str,
        "sections": List(SECTION),
        "mentions": List(MENTION),
        # transforms.labels.label_report on the FINDINGS section alone (chain-of-thought targets);
        # the harmonised "findings" above stay the source's official labels
        "findings_labels": List({"name": _str, "value": _f64}),
        "attribute_prompt": _str,  # IMT-CXR-style phrases of the positive mentions
        "severity_ordinal": _f64,  # [0, 1] from mention severities (transforms.severity)
        "severity_bucket": _str,
        "severity_tfidf": _f64,  # MediVLM's score of severity_document (transforms/tasks/severity_report.py), fitted on train
        "ctr": _f64,
        "ctr_band": _str,
        "ptx_ratio": _f64,  # pneumothorax area over its side's lung area (needs lung masks on the image)
        "ptx_side": _str,  # "right" | "left" | "both"
        "ptx_band": _str,
        "provenance": _str,  # JSON object
    }
)

INSTRUCTIONS = Features(
    {
        "id": _str,
        "profile": _str,
        "task": _str,
        "source": _str,
        "split": _str,
        "image_keys": List(_str),
        "conversations": List({"from": _str, "value": _str}),
        "target": _str,  # JSON, structured answer
        "template_id": _str,
    }
)

REJECTS = Features(
    {
        "key": _str,
        "source": _str,
        "stage": _str,
        "kind": _str,  # "rejected" | "filtered"
        "level": _str,  # "record" | "item"
        "reason": _str,
        "detail": _str,
    }
)

CODES_PER_IMAGE = manifests.load("tokenizer.yaml")["codes_per_image"]
VQ = Features(
    {
        "image_key": _str,
        "codes": List(Value("int16"), length=CODES_PER_IMAGE),  # row-major 32 x 32 grid, 0..8191
        "lm_ids": List(Value("int32"), length=CODES_PER_IMAGE),  # LM vocabulary ids of the codes
        "tokenizer": _str,  # fingerprint id; vq/tokenizer.json holds the full fingerprint
    }
)
"""Written by the tokenize stage (pipelines/beam/tokenize.py); ``List(..., length=N)`` is an Arrow fixed_size_list."""

TABLES: dict[str, Features] = {
    "images": IMAGES,
    "annotations": ANNOTATIONS,
    "instructions": INSTRUCTIONS,
    "rejects": REJECTS,
    "vq": VQ,
}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a table, carrying the Hugging Face features metadata."""
    return TABLES[table].arrow_schema


ROW_KEY = {"images": "image_key", "annotations": "image_key", "instructions": "id", "rejects": "key", "vq": "image_key"}
"""The column whose value names a row: rows are sorted by it inside a shard (and rejects shards are
chosen by its stable hash)."""
