"""``cxr-instruct preview OUT``: a static viewer of a finished build, in ``OUT/preview/``.

What a researcher checks with it, row by row: the image with only that row's answer drawn, decoded
from the answer text in the profile's coordinate convention (:func:`transforms.geometry.find_coordinates`:
``<bin_k>`` tokens, ``[x1, y1, x2, y2]`` percents, three-decimal floats), plus the boxes written in
the question (the "box -> name" tasks); the prompt and answer as text with each coordinate run
highlighted in the colour of its shape; the structured target; whether the decoded boxes are the
target's boxes; the image's source annotations (every box and polygon of its ``annotations`` row)
on a toggle, off by default. Negative answers ("Not present.", "Not found.", "No abnormality.": the
task template sets' ``answers`` ``absent`` / ``none_found`` / ``no_abnormality``) show the image with
nothing drawn and say so.

Layout (``OUT/preview/``), small enough to stay fast at many thousand rows::

    index.html                 the page: markup and styles only (a few kB)
    data-<digest>/app.js       the viewer (renders on demand, filters client-side, paginates)
    data-<digest>/index.js     one compact entry per previewed row (task, source, split, kind, check,
                               id), build counts per profile/task/source/split, images, rejects
    data-<digest>/rows-NNNNN.js    the previewed rows, CHUNK_ROWS per file, loaded when a page needs them
    data-<digest>/ann/<h>.js   an image's source annotations, loaded when toggled on
    data-<digest>/rejects-NNNNN.js rejects (a stable sample per source/stage/reason), loaded on their page
    images/<sha256>.png        each image once, the stored PNG bytes unchanged, named by content

Data files are JavaScript (``PREVIEW.chunk(...)`` calls) rather than JSON so the page works from
``file://``, where browsers refuse ``fetch``. Everything is deterministic: the same build gives
byte-identical files. Writing is atomic: the data files go to a staging folder renamed to
``data-<digest>`` (the digest of their contents), images are written to a temporary name and
renamed, ``index.html`` is replaced last, then older ``data-*`` folders and unreferenced images are
removed. Nothing is written outside the preview folder.

Where: ``OUT/preview/`` for a local build. The build is read through :mod:`transforms.io` (Beam's
FileSystems), so OUT may also be a ``gs://`` URI; the preview itself is always a local folder (it is
opened from ``file://``), so a ``gs://`` build needs ``dest`` (``--dest`` on the command line).

Sampling: up to ``rows_per_task`` rows per profile/task, the smallest stable hashes of the row ids
taken round-robin over the task's sources (so every source of a task shows up first).
"""

from __future__ import annotations

import hashlib
import heapq
import html
import json
import os
import re
import shutil
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.output.manifest import record_view_files
from pipelines.output.table_files import count_by, table_files
from transforms import io
from transforms.geometry import CoordinateConvention, find_coordinates, render_box
from transforms.hashing import stable_hash

DEFAULT_ROWS = 20  # rows per profile/task
DEFAULT_REJECTS = 100  # rejects shown per (source, stage, reason)
CHUNK_ROWS = 50  # previewed rows per rows-NNNNN.js
CHUNK_REJECTS = 1000  # rejects per rejects-NNNNN.js
NEGATIVE_ANSWER_KEYS = ("absent", "none_found", "no_abnormality")  # template-set answers meaning "nothing"
KINDS = ("answer", "question", "negative", "text", "error")  # what a row's image shows (see row_record)
PRESENCE_TEXT = {1: "present", 0: "absent", -1: "uncertain"}


@dataclass(frozen=True)
class PreviewResult:
    path: Path  # OUT/preview/index.html
    items: int  # instruction rows previewed
    images: int  # image panels (an image shown by two rows counts twice)
    shapes: int  # boxes + polygons decoded from the previewed rows' questions and answers
    negatives: int  # rows answered "nothing there" (drawn empty)
    decode_errors: int  # rows whose coordinates do not parse under their profile's convention
    mismatches: int  # rows whose decoded boxes are not their target's boxes
    rejects: int  # rejects listed (of all rejects, counted in the overview)
    files: int  # files under OUT/preview
    bytes: int  # their total size


# ------------------------------------------------------------------------------------ reading the build


def read_columns(paths: list[str], columns: list[str]) -> pa.Table | None:
    """Only ``columns`` of every file, concatenated in file order (None without files)."""
    tables = []
    for path in paths:
        with io.open_file(str(path)) as handle:
            tables.append(pq.ParquetFile(handle).read(columns=columns))
    return pa.concat_tables(tables) if tables else None


def rows_where(paths: list[str], column: str, values: list[str], columns: list[str] | None = None) -> dict[str, dict]:
    """Rows whose ``column`` is in ``values``, keyed by that column. Each row group's ``column`` is read
    first, and the other columns only of the row groups that hold a wanted value."""
    if not paths or not values:
        return {}
    found = {}
    for path in paths:
        with io.open_file(str(path)) as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                keys = parquet.read_row_group(group, columns=[column]).column(column)
                wanted = pc.is_in(keys, value_set=pa.array(values, type=keys.type))
                if not pc.any(wanted).as_py():
                    continue
                for row in parquet.read_row_group(group, columns=columns).filter(wanted).to_pylist():
                    found[row[column]] = row
    return found


def sample_ids(ids: list[str], n: int, sources: list[str] | None = None) -> list[str]:
    """Up to ``n`` ids: per source the smallest stable hashes, taken round-robin over the sources in
    name order. The same rows in the same order for the same table, whatever its row order."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for row_id, source in zip(ids, sources if sources is not None else [""] * len(ids)):
        by_source[source].append(row_id)
    queues = [
        heapq.nsmallest(n, set(group), key=lambda row_id: (stable_hash("preview", row_id), row_id))
        for _, group in sorted(by_source.items())
    ]
    chosen: list[str] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        chosen += [q[depth] for q in queues if depth < len(q)]
    return chosen[:n]


@cache
def profile_convention(profile: str) -> CoordinateConvention | None:
    from transforms.tasks import load_profile

    try:
        return load_profile(profile).coordinates
    except (FileNotFoundError, ValueError, KeyError):
        return None


@cache
def negative_answers(profile: str, task: str) -> frozenset[str]:
    """The answers of the task's template set that mean "nothing there" (``NEGATIVE_ANSWER_KEYS``)."""
    from transforms.tasks import load_profile
    from transforms.templates import load_template_set

    try:
        answers = load_template_set(load_profile(profile).tasks[task].template_set).answers
    except (FileNotFoundError, ValueError, KeyError):
        return frozenset()
    return frozenset(answers[key].strip() for key in NEGATIVE_ANSWER_KEYS if key in answers)


# ------------------------------------------------------------------------------------ one row


def utf16_offset(text: str, index: int) -> int:
    """A Python string index as the UTF-16 index JavaScript uses."""
    return len(text[:index].encode("utf-16-le")) // 2


def _px(value: float, canvas: int) -> float:
    return round(value * canvas, 2)


_LABEL_BEFORE = re.compile(r"(?:^|[;\n]\s*)([^;:\n\[\]<>]{1,80}?):\s*$")


def _span_label(gap: str, previous: str | None) -> str | None:
    """The label written before a coordinate run ("Cardiomegaly: [..]"), or the previous run's label
    when only a box separator stands between them ("Cardiomegaly: [..], [..]")."""
    match = _LABEL_BEFORE.search(gap)
    if match:
        return match.group(1).strip()
    return previous if gap.strip() in ("", ",") else None


def decode_conversation(
    conversations: list[dict], convention: CoordinateConvention | None, canvas: int
) -> tuple[list[dict], str | None]:
    """The boxes and polygons written in each turn, as drawable shapes: role (``question`` for a
    human turn, ``answer`` for a gpt turn), turn number, UTF-16 span in the turn's text, label
    written before it, and canvas coordinates (``box`` [x1, y1, x2, y2]; ``rings`` [[x, y, x, y, ...]]).
    The second value is the first decoding error (None when every turn decodes)."""
    shapes: list[dict] = []
    error = None
    if convention is None:
        return shapes, "the row's profile has no known coordinate convention"
    for number, turn in enumerate(conversations):
        text = turn["value"]
        try:
            spans = find_coordinates(text, convention)
        except ValueError as exc:
            error = error or f"turn {number + 1}: {exc}"
            continue
        previous_end, label = 0, None
        for span in spans:
            label = _span_label(text[previous_end : span.start], label)
            previous_end = span.end
            shape: dict[str, Any] = {
                "role": "question" if turn["from"] == "human" else "answer",
                "turn": number,
                "span": [utf16_offset(text, span.start), utf16_offset(text, span.end)],
                "label": label,
                "kind": span.kind,
            }
            if span.box is not None:  # a box span carries its box, a polygon span its rings
                shape["box"] = [_px(v, canvas) for v in span.box]
            elif span.rings is not None:
                shape["rings"] = [[_px(v, canvas) for point in ring for v in point] for ring in span.rings]
            shapes.append(shape)
    return shapes, error


def _target_label(target: dict) -> str | None:
    for key in ("label", "region", "structure", "finding"):
        if isinstance(target.get(key), str):
            return target[key]
    return None


def target_check(target: dict, conversations: list[dict], convention: CoordinateConvention | None) -> tuple[int, str]:
    """Whether the coordinates written in the row are its target's: 1 (they are), 0 (they are not),
    -1 (the target holds no geometry and none is written); and a sentence saying what was compared.
    Boxes compare as the sets of their renderings under the convention (so within the rendering's
    rounding); polygons by their number of rings (rings are simplified when rendered)."""
    boxes = [tuple(b["box"]) for b in target.get("boxes") or [] if isinstance(b, dict) and b.get("box")]
    if isinstance(target.get("box"), list):
        boxes.append(tuple(target["box"]))
    rings = target.get("rings") if isinstance(target.get("rings"), list) else None
    has_geometry = "boxes" in target or "box" in target or rings is not None
    try:
        spans = [s for turn in conversations for s in find_coordinates(turn["value"], convention)] if convention else []
        rendering = cast(CoordinateConvention, convention)  # None: render_box refuses it with a ValueError
        written = {render_box(s.box, rendering) for s in spans if s.box is not None}  # the box spans
        wanted = {render_box(box, rendering) for box in boxes}
    except ValueError as exc:
        return 0, f"does not decode: {exc}"
    written_rings = sum(len(s.rings) for s in spans if s.rings is not None)  # the polygon spans
    if not has_geometry:
        if spans:
            return 0, f"{len(spans)} coordinate run(s) written, the target holds no geometry"
        return -1, "no geometry"
    if written != wanted:
        return 0, (f"boxes written {sorted(written)} differ from the target's {sorted(wanted)}")
    if rings is not None and written_rings != len(rings):
        return 0, f"{written_rings} ring(s) written, {len(rings)} in the target"
    parts = [f"{len(wanted)} box(es)"] if (wanted or rings is None) else []
    if rings is not None:
        parts.append(f"{len(rings)} ring(s)")
    return 1, " and ".join(parts) + " as in the target"


def row_record(row: dict, canvas: int) -> dict:
    """A previewed row as the viewer reads it (see the module docstring)."""
    convention = profile_convention(row["profile"])
    conversations = [{"from": t["from"], "value": t["value"]} for t in row["conversations"]]
    shapes, error = decode_conversation(conversations, convention, canvas)
    target_text = row["target"]
    try:
        target = json.loads(target_text)
    except ValueError:
        target = None
    if not isinstance(target, dict):
        target, error = {}, error or "target is not a JSON object"
    check, check_text = target_check(target, conversations, convention)
    answers = [s for s in shapes if s["role"] == "answer"]
    target_boxes = [b for b in target.get("boxes") or [] if isinstance(b, dict)]
    for i, shape in enumerate(answers):  # an answer that writes no label: the target's
        if shape["label"] is None:
            if len(target_boxes) == len(answers):
                shape["label"] = target_boxes[i].get("label")
            else:
                shape["label"] = _target_label(target)
    questions = [s for s in shapes if s["role"] == "question"]
    if len(questions) == 1 and questions[0]["label"] is None:  # "what is at [box]?": the target names it
        questions[0]["label"] = _target_label(target) or ", ".join(target.get("labels") or []) or None
    gpt = [t["value"].strip() for t in conversations if t["from"] == "gpt"]
    negative = bool(gpt) and gpt[-1] in negative_answers(row["profile"], row["task"])
    if error:
        kind = "error"
    elif answers:
        kind = "answer"
    elif negative:
        kind = "negative"
    elif shapes:
        kind = "question"
    else:
        kind = "text"
    return {
        "id": row["id"],
        "task": f"{row['profile']}/{row['task']}",
        "source": row["source"],
        "split": row["split"],
        "template_id": row["template_id"],
        "convention": convention,
        "image_keys": list(row["image_keys"]),
        "conversations": conversations,
        "target": target_text,
        "shapes": shapes,
        "kind": kind,
        "error": error,
        "check": check,
        "check_text": check_text,
    }


def findings_text(annotation: dict | None) -> str:
    """Stated findings, e.g. ``Cardiomegaly: present; Edema: absent`` (not-annotated ones left out)."""
    stated = [
        f"{f['name']}: {PRESENCE_TEXT[f['presence']]}"
        for f in (annotation or {}).get("findings") or []
        if f["presence"] is not None
    ]
    return "; ".join(stated) or "none annotated"


def annotation_record(annotation: dict | None, canvas: int) -> dict:
    """Every box and polygon of an image's annotations row, in canvas coordinates (its findings are
    in the image's entry, :func:`collect`)."""
    annotation = annotation or {}
    boxes = [
        {
            "label": b["label"],
            "origin": b.get("origin"),
            "reader": b.get("reader"),
            "box": [_px(b[k], canvas) for k in ("u1", "v1", "u2", "v2")],
        }
        for b in annotation.get("boxes") or []
    ]
    polygons = [
        {
            "label": p["label"],
            "origin": p.get("origin"),
            "rings": [[round(v * canvas, 1) for point in ring for v in point] for ring in p["rings_unit"]],
        }
        for p in annotation.get("polygons") or []
    ]
    return {"boxes": boxes, "polygons": polygons}


def image_file_name(image_bytes: bytes) -> str:
    return f"{hashlib.sha256(image_bytes).hexdigest()[:20]}.png"


def annotation_file_name(image_key: str) -> str:
    return f"ann/{stable_hash('preview-annotations', image_key):016x}.js"


# ------------------------------------------------------------------------------------ collecting


@dataclass
class Collected:
    canvas: int
    rows_per_task: int
    rows: list[dict]  # row_record()s in display order
    images: dict[str, dict]  # image_key -> {file, annotations file, view, source, split, findings}
    image_bytes: dict[str, bytes]  # file name -> PNG bytes
    annotations: dict[str, dict]  # annotations file -> annotation_record()
    instruction_counts: list[list]  # [task, source, split, rows] over the whole build
    image_counts: list[list]  # [source, split, images]
    rejects: list[list]  # [key, source, stage, kind, level, reason, detail] shown
    reject_counts: list[list]  # [source, stage, reason, all, shown]
    profiles: list[list]  # [profile, method it follows, what its rows are, input size or None]


def collect(out: str | Path, rows_per_task: int = DEFAULT_ROWS, rejects_per_reason: int = DEFAULT_REJECTS) -> Collected:
    """Read what the preview shows from a finished build (a local folder or a ``gs://`` URI)."""
    out = str(out)
    manifest_path = io.join(out, "manifest.json")
    if not io.exists(manifest_path):
        raise FileNotFoundError(f"{out} has no manifest.json: not a finished build")
    manifest = json.loads(io.read_text(manifest_path))
    canvas = int(manifest["config"]["image_size"])  # the build's letterbox canvas (BuildConfig.image_size)
    task_tables = sorted(t for t in manifest["tables"] if t.startswith("instructions/"))
    image_files, annotation_files = table_files(out, "images"), table_files(out, "annotations")

    rows: list[dict] = []
    instruction_counts: Counter = Counter()
    for table_dir in task_tables:
        shards = table_files(out, table_dir)
        table = read_columns(shards, ["id", "source", "split"])
        if table is None:
            continue
        profile_task = table_dir.removeprefix("instructions/")
        ids, sources, splits = (table.column(c).to_pylist() for c in ("id", "source", "split"))
        instruction_counts.update((profile_task, source, split) for source, split in zip(sources, splits))
        chosen = sample_ids(ids, rows_per_task, sources)
        found = rows_where(shards, "id", chosen)
        rows += [row_record(found[row_id], canvas) for row_id in chosen]

    keys = sorted({key for row in rows for key in row["image_keys"]})
    image_rows = rows_where(image_files, "image_key", keys, ["image_key", "source", "split", "view", "image"])
    annotation_rows = rows_where(annotation_files, "image_key", keys)
    missing = [(row["id"], key) for row in rows for key in row["image_keys"] if key not in image_rows]
    if missing:
        row_id, key = missing[0]
        raise ValueError(f"instruction {row_id} names image {key!r}, which is not in the images table")
    images, image_bytes, annotations = {}, {}, {}
    for key in keys:
        image, annotation = image_rows[key], annotation_rows.get(key)
        data = image["image"]["bytes"]
        file, annotation_file = image_file_name(data), annotation_file_name(key)
        image_bytes[file] = data
        annotations[annotation_file] = annotation_record(annotation, canvas)
        images[key] = {
            "file": file,
            "annotations": annotation_file,
            "view": image["view"],
            "source": image["source"],
            "split": image["split"],
            "findings": findings_text(annotation),
        }

    image_counts = count_by(image_files, ["source", "split"])

    reject_columns = ["key", "source", "stage", "kind", "level", "reason", "detail"]
    reject_table = read_columns(table_files(out, "rejects"), reject_columns)
    groups: dict[tuple, list[list]] = defaultdict(list)
    for r in reject_table.to_pylist() if reject_table is not None else []:
        groups[(r["source"], r["stage"], r["reason"])].append([r[c] for c in reject_columns])
    rejects, reject_counts = [], []
    for group in sorted(groups, key=lambda g: tuple(v or "" for v in g)):
        members = groups[group]
        shown = sorted(
            heapq.nsmallest(rejects_per_reason, members, key=lambda r: (stable_hash("preview-reject", *r), r)),
            key=lambda r: (r[0] or "", r[6] or ""),
        )
        rejects += shown
        reject_counts.append([*group, len(members), len(shown)])

    return Collected(
        canvas=canvas,
        rows_per_task=rows_per_task,
        rows=rows,
        images=images,
        image_bytes=image_bytes,
        annotations=annotations,
        instruction_counts=[
            [*k, n] for k, n in sorted(instruction_counts.items(), key=lambda kv: tuple(v or "" for v in kv[0]))
        ],
        image_counts=[[*k, n] for k, n in sorted(image_counts.items(), key=lambda kv: tuple(v or "" for v in kv[0]))],
        rejects=rejects,
        reject_counts=reject_counts,
        profiles=profile_entries(manifest),
    )


def profile_entries(manifest: dict) -> list[list]:
    """One entry per profile of the build: name, the method it follows, its description, image size."""
    from transforms.tasks import load_profile, method_name

    entries = []
    for name in manifest["profiles"]:
        profile = load_profile(name)
        entries.append([name, method_name(name), " ".join(profile.description.split()), profile.image_size])
    return entries


# ------------------------------------------------------------------------------------ writing


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def data_files(data: Collected) -> dict[str, str]:
    """Every file of ``data-<digest>/`` by relative name (the viewer, the index, the chunks)."""
    names = {
        "tasks": sorted({r["task"] for r in data.rows} | {c[0] for c in data.instruction_counts}),
        "sources": sorted(
            {r["source"] for r in data.rows}
            | {c[1] for c in data.instruction_counts}
            | {c[0] for c in data.image_counts}
            | {c[1] for c in data.reject_counts}
        ),
        "splits": sorted(
            {r["split"] for r in data.rows}
            | {c[2] for c in data.instruction_counts}
            | {c[1] for c in data.image_counts}
        ),
    }
    position = {field: {name: i for i, name in enumerate(values)} for field, values in names.items()}
    files: dict[str, str] = {"app.js": APP_JS}
    index = {
        "canvas": data.canvas,
        "rows_per_task": data.rows_per_task,
        "chunk_rows": CHUNK_ROWS,
        "chunk_rejects": CHUNK_REJECTS,
        "kinds": list(KINDS),
        **names,
        # one entry per previewed row, in display order: task, source, split, kind, check, id
        "rows": [
            [
                position["tasks"][r["task"]],
                position["sources"][r["source"]],
                position["splits"][r["split"]],
                KINDS.index(r["kind"]),
                r["check"],
                r["id"],
            ]
            for r in data.rows
        ],
        "instruction_counts": data.instruction_counts,
        "image_counts": data.image_counts,
        "reject_counts": data.reject_counts,
        "rejects": len(data.rejects),
        "profiles": data.profiles,
    }
    files["index.js"] = f"PREVIEW.index({_json(index)});\n"
    for start in range(0, len(data.rows), CHUNK_ROWS):
        chunk_rows = data.rows[start : start + CHUNK_ROWS]
        keys = sorted({key for row in chunk_rows for key in row["image_keys"]})
        chunk = {"rows": chunk_rows, "images": {key: data.images[key] for key in keys}}
        files[f"rows-{start // CHUNK_ROWS:05d}.js"] = f"PREVIEW.chunk({start // CHUNK_ROWS},{_json(chunk)});\n"
    for name, record in sorted(data.annotations.items()):
        files[name] = f"PREVIEW.annotations({_json(name)},{_json(record)});\n"
    for start in range(0, len(data.rejects), CHUNK_REJECTS):
        part = data.rejects[start : start + CHUNK_REJECTS]
        number = start // CHUNK_REJECTS
        files[f"rejects-{number:05d}.js"] = f"PREVIEW.rejects({number},{_json(part)});\n"
    return files


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_files(data: Collected, preview_dir: Path) -> Path:
    """Write ``data`` into ``preview_dir`` atomically (see the module docstring); the page's path."""
    preview_dir.mkdir(parents=True, exist_ok=True)
    files = {name: text.encode("utf-8") for name, text in data_files(data).items()}
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    data_dir_name = f"data-{digest.hexdigest()[:16]}"
    data_dir = preview_dir / data_dir_name
    if not data_dir.is_dir():
        staging = preview_dir / f".staging-{uuid.uuid4().hex}"
        for name, content in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(content)
        try:
            os.rename(staging, data_dir)
        except OSError:  # another writer put the same generation there first
            shutil.rmtree(staging, ignore_errors=True)
    (preview_dir / "images").mkdir(exist_ok=True)
    for name, content in sorted(data.image_bytes.items()):
        path = preview_dir / "images" / name
        if not path.exists():
            _write_atomic(path, content)
    page = PAGE.replace("{data}", html.escape(data_dir_name + "/")).replace("{canvas}", str(data.canvas))
    index = preview_dir / "index.html"
    _write_atomic(index, page.encode("utf-8"))
    for old in sorted(preview_dir.iterdir()):  # what this generation no longer references
        if old.is_dir() and old.name.startswith(("data-", ".staging-")) and old.name != data_dir_name:
            shutil.rmtree(old, ignore_errors=True)
        elif old.is_file() and old.name not in ("index.html",):
            old.unlink()
    for old in sorted((preview_dir / "images").iterdir()):
        if old.name not in data.image_bytes:
            old.unlink()
    return index


def write_preview(
    out_dir: str | Path,
    rows_per_task: int = DEFAULT_ROWS,
    rejects_per_reason: int = DEFAULT_REJECTS,
    dest: str | Path | None = None,
) -> PreviewResult:
    """Write the preview of a finished build into the local folder ``dest`` (default ``OUT/preview/``,
    which a ``gs://`` build does not have: it must name ``dest``); what it holds."""
    out = str(out_dir)
    if dest is None:
        if io.is_object_store(out):
            raise ValueError(
                f"{out} is not a local folder: the preview is written to a local folder, name it (--dest DIR)"
            )
        dest = Path(out) / "preview"
    if io.is_object_store(str(dest)):
        raise ValueError(f"{dest}: the preview is opened from file://, so it goes to a local folder")
    data = collect(out, rows_per_task, rejects_per_reason)
    result = summarise(data, write_files(data, Path(dest)))
    inside = Path(dest).resolve()
    if not io.is_object_store(out) and inside.is_relative_to(Path(out).resolve()):  # written into OUT: listed
        root = Path(out).resolve()
        record_view_files(
            out, "preview", [p.resolve().relative_to(root).as_posix() for p in inside.rglob("*") if p.is_file()]
        )
    return result


def summarise(data: Collected, index: Path) -> PreviewResult:
    written = [p for p in index.parent.rglob("*") if p.is_file()]
    return PreviewResult(
        path=index,
        items=len(data.rows),
        images=sum(len(r["image_keys"]) for r in data.rows),
        shapes=sum(len(r["shapes"]) for r in data.rows),
        negatives=sum(r["kind"] == "negative" for r in data.rows),
        decode_errors=sum(r["kind"] == "error" for r in data.rows),
        mismatches=sum(r["check"] == 0 for r in data.rows),
        rejects=len(data.rejects),
        files=len(written),
        bytes=sum(p.stat().st_size for p in written),
    )


# ------------------------------------------------------------------------------------ the page and viewer

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cxr-instruct preview</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f4f4f4; color: #222; }
header { position: sticky; top: 0; z-index: 2; background: #263238; color: #fff; padding: 0.4em 1em;
  display: flex; gap: 1.5em; align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 1.1em; margin: 0; } header a { color: #cfe8ff; } header nav a { margin-right: 1em; }
header nav a.on { color: #fff; font-weight: bold; text-decoration: none; }
#summary { font-size: 0.8em; color: #b0bec5; margin: 0; }
main { padding: 0.8em 1em; }
.controls { display: flex; gap: 0.8em; flex-wrap: wrap; align-items: center; margin: 0 0 0.8em; font-size: 0.9em; }
.pager { margin: 0.6em 0; font-size: 0.9em; } .pager a, .pager span { margin-right: 0.6em; }
table.counts { border-collapse: collapse; font-size: 0.82em; background: #fff; margin: 0 0 1.2em; }
table.counts td, table.counts th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
table.counts th, table.counts td:first-child, table.counts td.text { text-align: left; }
table.rejects td { text-align: left; white-space: nowrap; }
table.rejects td:first-child { white-space: normal; word-break: break-all; min-width: 14em; max-width: 22em; }
table.rejects td:last-child { white-space: normal; overflow-wrap: anywhere; max-width: 50em; }
article.item { border: 1px solid #ccc; background: #fff; margin: 0 0 0.8em; padding: 0.5em 0.7em; }
article.item h3 { margin: 0 0 0.4em; font-size: 0.95em; } article.item h3 small { color: #666; font-weight: normal; }
.badge { display: inline-block; font-size: 0.75em; padding: 0 0.5em; border-radius: 0.8em; margin-left: 0.4em;
  background: #e0e0e0; font-weight: normal; }
.badge.answer { background: #c8e6c9; } .badge.negative { background: #ffe0b2; } .badge.question { background: #b3e5fc; }
.badge.error, .badge.bad { background: #ef5350; color: #fff; } .badge.ok { background: #a5d6a7; }
.body { display: flex; gap: 1em; align-items: flex-start; }
.images { display: flex; gap: 0.5em; flex-wrap: wrap; flex: none; max-width: 660px; }
figure.view { margin: 0; width: 320px; } figcaption { font-size: 0.72em; color: #555; overflow-wrap: anywhere; }
.canvas { position: relative; width: 320px; height: 320px; background: #000; }
.canvas img, .canvas svg { position: absolute; left: 0; top: 0; width: 320px; height: 320px; }
svg.overlay .shape { fill-opacity: 0.12; stroke-width: 2px; vector-effect: non-scaling-stroke; }
svg.overlay .shape.question { stroke-dasharray: 6 3; fill: none; }
svg.overlay .shape.source { stroke-width: 1px; fill-opacity: 0.06; stroke-opacity: 0.85; }
.nothing { font-size: 0.8em; color: #bf360c; font-weight: bold; }
.text { flex: 1; min-width: 18em; font-size: 0.85em; }
.turn pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0.1em 0 0.4em; background: #f3f3f3; padding: 0.3em; }
.turn mark { background: none; border-bottom: 3px solid; }
ul.legend { list-style: none; padding: 0; margin: 0.2em 0; font-size: 0.85em; }
ul.legend li { margin: 0.1em 0; } .swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em;
  vertical-align: middle; border: 2px solid; } .swatch.question { border-style: dashed; }
details pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 0.9em; max-height: 24em; overflow: auto; }
</style></head>
<body>
<header><h1>cxr-instruct preview</h1>
<nav><a href="#overview" data-view="overview">Overview</a><a href="#rows" data-view="rows">Rows</a><a href="#rejects" data-view="rejects">Rejects</a></nav>
<p id="summary">loading…</p></header>
<main id="view"><noscript>The preview needs JavaScript.</noscript></main>
<script>window.PREVIEW_DATA = "{data}"; window.PREVIEW_CANVAS = {canvas};</script>
<script src="{data}app.js"></script>
<script src="{data}index.js"></script>
</body></html>
"""

APP_JS = r"""// cxr-instruct preview viewer: renders the previewed rows on demand from data files beside it.
"use strict";
(function () {
  var P = window.PREVIEW = {};
  var DATA = window.PREVIEW_DATA;
  var ANSWER = ["#ff1744", "#00e676", "#ff9100", "#d500f9", "#ffea00", "#2979ff", "#f50057", "#76ff03"];
  var QUESTION = "#00e5ff";
  var SOURCE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
                "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#aaffc3", "#ffd8b1"];
  var KIND_TEXT = {answer: "answer drawn", question: "question box drawn", negative: "negative: nothing drawn",
                   text: "text answer", error: "coordinates do not decode"};
  var errors = [], INDEX = null, chunks = {}, annotations = {}, rejectChunks = {}, loading = {};
  var current = Promise.resolve(null), renderSeq = 0, lastHash = null;
  P.errors = errors;
  window.addEventListener("error", function (e) {
    var t = e.target && (e.target.src || e.target.href);
    errors.push((e.message || "resource failed to load") + (t ? " " + t : ""));
  }, true);

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function load(name) {
    if (!loading[name]) loading[name] = new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = DATA + name;
      s.onload = function () { resolve(); };
      s.onerror = function () { reject(new Error("could not load " + DATA + name)); };
      document.head.appendChild(s);
    });
    return loading[name];
  }
  function pad(n) { return ("0000" + n).slice(-5); }
  function labelColour(label) {
    var h = 0;
    for (var i = 0; i < label.length; i++) h = (h * 31 + label.charCodeAt(i)) >>> 0;
    return SOURCE[h % SOURCE.length];
  }
  function params(obj) {
    var parts = [];
    Object.keys(obj).forEach(function (k) {
      if (obj[k] !== null && obj[k] !== undefined && obj[k] !== "") parts.push(k + "=" + encodeURIComponent(obj[k]));
    });
    return parts.join("&");
  }
  function link(view, obj) { var q = params(obj || {}); return "#" + view + (q ? "?" + q : ""); }
  function parseHash() {
    var h = location.hash.replace(/^#/, ""), q = h.indexOf("?");
    var p = new URLSearchParams(q < 0 ? "" : h.slice(q + 1)), out = {};
    p.forEach(function (v, k) { out[k] = v; });
    return {view: (q < 0 ? h : h.slice(0, q)) || "overview", p: out};
  }
  function pager(view, p, page, pages, text) {
    return '<div class="pager">' +
      (page > 1 ? '<a class="prev" href="' + link(view, Object.assign({}, p, {page: page - 1})) + '">‹ previous</a>' : "") +
      "<span>" + text + "</span>" +
      (page < pages ? '<a class="next" href="' + link(view, Object.assign({}, p, {page: page + 1})) + '">next ›</a>' : "") + "</div>";
  }
  function options(values, selected, allText, counts) {
    return '<option value="">' + esc(allText) + "</option>" + values.map(function (v) {
      return '<option value="' + esc(v) + '"' + (v === selected ? " selected" : "") + ">" + esc(v) +
        (counts ? " (" + (counts[v] || 0) + ")" : "") + "</option>";
    }).join("");
  }

  // ---------------------------------------------------------------- drawing
  function points(flat) {
    var out = [];
    for (var i = 0; i + 1 < flat.length; i += 2) out.push(flat[i] + "," + flat[i + 1]);
    return out.join(" ");
  }
  function shapeSvg(shape, colour, cls, title) {
    var t = "<title>" + esc(title) + "</title>";
    if (shape.box) {
      var b = shape.box;
      return '<rect class="shape ' + cls + '" x="' + b[0] + '" y="' + b[1] + '" width="' + (b[2] - b[0]).toFixed(2) +
        '" height="' + (b[3] - b[1]).toFixed(2) + '" stroke="' + colour + '" fill="' + colour + '">' + t + "</rect>";
    }
    return shape.rings.map(function (ring) {
      return '<polygon class="shape ' + cls + '" points="' + points(ring) + '" stroke="' + colour + '" fill="' +
        colour + '">' + t + "</polygon>";
    }).join("");
  }
  function colourOf(row, shape) {
    if (shape.role === "question") return QUESTION;
    return ANSWER[row.shapes.filter(function (s) { return s.role === "answer"; }).indexOf(shape) % ANSWER.length];
  }
  function shapeTitle(shape) {
    return shape.role + " " + shape.kind + (shape.label ? ": " + shape.label : "");
  }
  function turnHtml(row, number, text) {
    var spans = row.shapes.filter(function (s) { return s.turn === number; }), html = "", pos = 0;
    spans.forEach(function (s) {
      html += esc(text.slice(pos, s.span[0])) + '<mark style="border-color:' + colourOf(row, s) + '" title="' +
        esc(shapeTitle(s)) + '">' + esc(text.slice(s.span[0], s.span[1])) + "</mark>";
      pos = s.span[1];
    });
    return html + esc(text.slice(pos));
  }
  function figureHtml(row, key, image) {
    var c = INDEX.canvas, svg = "";
    row.shapes.forEach(function (s) { svg += shapeSvg(s, colourOf(row, s), s.role, shapeTitle(s)); });
    return '<figure class="view" data-key="' + esc(key) + '" data-annotations="' + esc(image.annotations) + '">' +
      '<div class="canvas"><img class="xray" src="images/' + esc(image.file) + '" width="' + c + '" height="' + c +
      '" alt="' + esc(key) + '"><svg class="overlay" viewBox="0 0 ' + c + " " + c +
      '" xmlns="http://www.w3.org/2000/svg"><g class="source-layer"></g><g class="row-layer">' + svg + "</g></svg></div>" +
      "<figcaption>" + esc(key) + " · " + esc(image.view || "view unknown") + " · " + esc(image.source) + "/" +
      esc(image.split) + '<br><label><input type="checkbox" class="ann-toggle"> source annotations</label> <span class="ann-note"></span>' +
      "<details><summary>findings</summary>" + esc(image.findings) + "</details></figcaption></figure>";
  }
  function rowHtml(row, images) {
    var kind = row.kind, answerShapes = row.shapes.filter(function (s) { return s.role === "answer"; }).length;
    var single = row.image_keys.length === 1;
    var figures = row.image_keys.map(function (k) { return figureHtml(row, k, images[k]); });
    var note = "";
    if (kind === "negative") note = '<p class="nothing">Negative answer: nothing is drawn on the image.</p>';
    else if (kind === "text" && row.image_keys.length) note = '<p class="nothing" style="color:#555">The answer writes no coordinates: nothing is drawn.</p>';
    else if (kind === "error") note = '<p class="nothing">' + esc(row.error) + "</p>";
    if (!single && row.shapes.length) note += '<p class="nothing">Shapes are drawn on every image of the row (the text does not say which).</p>';
    var turns = row.conversations.map(function (t, i) {
      return '<div class="turn ' + esc(t.from) + '"><b>' + esc(t.from) + "</b><pre>" + turnHtml(row, i, t.value) + "</pre></div>";
    }).join("");
    var legend = row.shapes.map(function (s) {
      var where = s.box ? "[" + s.box.join(", ") + "] px" : s.rings.length + " ring(s), " +
        s.rings.map(function (r) { return r.length / 2; }).join("+") + " vertices";
      return '<li><span class="swatch ' + s.role + '" style="border-color:' + colourOf(row, s) + '"></span>' +
        esc(shapeTitle(s)) + " <small>" + esc(where) + "</small></li>";
    }).join("");
    var target;
    try { target = JSON.stringify(JSON.parse(row.target), null, 1); } catch (e) { target = row.target; }
    var check = row.check === 1 ? '<span class="badge ok" title="' + esc(row.check_text) + '">target ✓</span>' :
      row.check === 0 ? '<span class="badge bad" title="' + esc(row.check_text) + '">target ✗</span>' : "";
    return '<article class="item" id="row-' + esc(row.id) + '" data-id="' + esc(row.id) + '" data-kind="' + kind + '">' +
      "<h3>" + esc(row.task) + ' <small><a href="' + link("row", {id: row.id}) + '">' + esc(row.id) + "</a> · " +
      esc(row.source) + " · " + esc(row.split) + " · " + esc(row.template_id) + " · " + esc(row.convention) + "</small>" +
      '<span class="badge ' + kind + '">' + esc(KIND_TEXT[kind]) + (answerShapes ? " (" + answerShapes + ")" : "") + "</span>" +
      check + "</h3>" +
      '<div class="body"><div class="images">' + figures.join("") + "</div>" +
      '<div class="text">' + note + '<div class="conversation">' + turns + "</div>" +
      (legend ? '<ul class="legend">' + legend + "</ul>" : "") +
      (row.check !== -1 ? '<p class="check"><small>check: ' + esc(row.check_text) + "</small></p>" : "") +
      "<details><summary>target</summary><pre>" + esc(target) + "</pre></details></div></div></article>";
  }
  function showAnnotations(figure, on) {
    var layer = figure.querySelector(".source-layer"), note = figure.querySelector(".ann-note");
    figure.querySelector(".ann-toggle").checked = on;
    if (!on) { layer.innerHTML = ""; note.textContent = ""; return Promise.resolve(); }
    var name = figure.dataset.annotations;
    return load(name).then(function () {
      var a = annotations[name], svg = "";
      a.polygons.forEach(function (p) { svg += shapeSvg(p, labelColour(p.label), "source", "source polygon: " + p.label); });
      a.boxes.forEach(function (b) {
        svg += shapeSvg(b, labelColour(b.label), "source", "source box: " + b.label + (b.reader ? " (" + b.reader + ")" : ""));
      });
      if (figure.querySelector(".ann-toggle").checked) {
        layer.innerHTML = svg;
        note.textContent = a.boxes.length + " boxes, " + a.polygons.length + " polygons";
      }
    });
  }
  function wireToggles(root) {
    Array.prototype.forEach.call(root.querySelectorAll("figure.view"), function (figure) {
      figure.querySelector(".ann-toggle").addEventListener("change", function (e) {
        showAnnotations(figure, e.target.checked).catch(function (err) { errors.push(String(err)); });
      });
    });
  }
  function renderRows(container, indices, annotationsOn) {
    var size = INDEX.chunk_rows, needed = {};
    indices.forEach(function (i) { needed[Math.floor(i / size)] = true; });
    return Promise.all(Object.keys(needed).map(function (n) { return load("rows-" + pad(+n) + ".js"); })).then(function () {
      container.innerHTML = indices.map(function (i) {
        var chunk = chunks[Math.floor(i / size)];
        return rowHtml(chunk.rows[i % size], chunk.images);
      }).join("");
      wireToggles(container);
      if (!annotationsOn) return null;
      return Promise.all(Array.prototype.map.call(container.querySelectorAll("figure.view"), function (f) {
        return showAnnotations(f, true);
      }));
    });
  }

  // ---------------------------------------------------------------- views
  function countBy(list, key) {
    var out = {};
    list.forEach(function (x) { out[key(x)] = (out[key(x)] || 0) + 1; });
    return out;
  }
  function matches(entry, p) {
    return (!p.task || INDEX.tasks[entry[0]] === p.task) && (!p.source || INDEX.sources[entry[1]] === p.source) &&
      (!p.split || INDEX.splits[entry[2]] === p.split) &&
      (!p.kind || (p.kind === "mismatch" ? entry[4] === 0 : INDEX.kinds[entry[3]] === p.kind));
  }
  function viewOverview(main) {
    var counts = {}, splits = INDEX.splits, sources = INDEX.sources, shown = countBy(INDEX.rows, function (r) { return INDEX.tasks[r[0]]; });
    var flagged = {};
    INDEX.rows.forEach(function (r) {
      var t = INDEX.tasks[r[0]], f = flagged[t] = flagged[t] || {negative: 0, error: 0, mismatch: 0};
      if (INDEX.kinds[r[3]] === "negative") f.negative++;
      if (INDEX.kinds[r[3]] === "error") f.error++;
      if (r[4] === 0) f.mismatch++;
    });
    INDEX.instruction_counts.forEach(function (c) {
      var t = counts[c[0]] = counts[c[0]] || {all: 0, split: {}, source: {}};
      t.all += c[3]; t.split[c[2]] = (t.split[c[2]] || 0) + c[3]; t.source[c[1]] = (t.source[c[1]] || 0) + c[3];
    });
    var usedSources = sources.filter(function (s) { return INDEX.instruction_counts.some(function (c) { return c[1] === s; }); });
    var usedSplits = splits.filter(function (s) { return INDEX.instruction_counts.some(function (c) { return c[2] === s; }); });
    var head = "<tr><th>profile/task</th><th>previewed</th><th>negative</th><th>decode errors</th><th>target ✗</th><th>rows in build</th>" +
      usedSplits.map(function (s) { return "<th>" + esc(s) + "</th>"; }).join("") +
      usedSources.map(function (s) { return "<th>" + esc(s) + "</th>"; }).join("") + "</tr>";
    var body = INDEX.tasks.map(function (t) {
      var c = counts[t] || {all: 0, split: {}, source: {}}, f = flagged[t] || {negative: 0, error: 0, mismatch: 0};
      return '<tr data-task="' + esc(t) + '"><td><a href="' + link("rows", {task: t}) + '">' + esc(t) + "</a></td>" +
        '<td><a href="' + link("rows", {task: t}) + '">' + (shown[t] || 0) + "</a></td>" +
        "<td>" + (f.negative ? '<a href="' + link("rows", {task: t, kind: "negative"}) + '">' + f.negative + "</a>" : 0) + "</td>" +
        "<td>" + (f.error ? '<a href="' + link("rows", {task: t, kind: "error"}) + '">' + f.error + "</a>" : 0) + "</td>" +
        "<td>" + (f.mismatch ? '<a href="' + link("rows", {task: t, kind: "mismatch"}) + '">' + f.mismatch + "</a>" : 0) + "</td>" +
        "<td>" + c.all + "</td>" +
        usedSplits.map(function (s) {
          return "<td>" + (c.split[s] ? '<a href="' + link("rows", {task: t, split: s}) + '">' + c.split[s] + "</a>" : "") + "</td>";
        }).join("") +
        usedSources.map(function (s) {
          return "<td>" + (c.source[s] ? '<a href="' + link("rows", {task: t, source: s}) + '">' + c.source[s] + "</a>" : "") + "</td>";
        }).join("") + "</tr>";
    }).join("");
    var imageSplits = splits.filter(function (s) { return INDEX.image_counts.some(function (c) { return c[1] === s; }); });
    var imageSources = sources.filter(function (s) { return INDEX.image_counts.some(function (c) { return c[0] === s; }); });
    var images = "<tr><th>source</th>" + imageSplits.map(function (s) { return "<th>" + esc(s) + "</th>"; }).join("") + "<th>all</th></tr>" +
      imageSources.map(function (src) {
        var all = 0;
        return "<tr><td>" + esc(src) + "</td>" + imageSplits.map(function (s) {
          var n = 0;
          INDEX.image_counts.forEach(function (c) { if (c[0] === src && c[1] === s) n += c[2]; });
          all += n;
          return "<td>" + n + "</td>";
        }).join("") + "<td>" + all + "</td></tr>";
      }).join("");
    var rejects = "<tr><th>source</th><th>stage</th><th>reason</th><th>rejects</th><th>listed</th></tr>" +
      INDEX.reject_counts.map(function (c) {
        return '<tr><td class="text">' + esc(c[0]) + '</td><td class="text">' + esc(c[1]) + '</td><td class="text"><a href="' +
          link("rejects", {source: c[0], stage: c[1], reason: c[2]}) + '">' + esc(c[2]) + "</a></td><td>" + c[3] + "</td><td>" + c[4] + "</td></tr>";
      }).join("");
    var profiles = "<tr><th>profile</th><th>follows</th><th>input size</th><th>rows</th></tr>" +
      INDEX.profiles.map(function (p) {
        return '<tr data-profile="' + esc(p[0]) + '"><td>' + esc(p[0]) + "</td><td>" + esc(p[1]) + "</td><td>" +
          (p[3] ? p[3] + "x" + p[3] : "as built") + '</td><td class="text">' + esc(p[2]) + "</td></tr>";
      }).join("");
    main.innerHTML = "<p>" + INDEX.rows.length + " rows previewed, up to " + INDEX.rows_per_task +
      " per profile/task (the smallest stable hashes of the row ids, round-robin over sources). Each row shows only what its " +
      "question and answer write, decoded in the profile's coordinate convention; the image's source annotations are on a toggle.</p>" +
      '<h2>Profiles</h2><table class="counts" id="profiles">' + profiles + "</table>" +
      '<h2>Instruction rows</h2><table class="counts" id="task-counts">' + head + body + "</table>" +
      '<h2>Images</h2><table class="counts" id="image-counts">' + images + "</table>" +
      '<h2>Rejects</h2><table class="counts" id="reject-counts">' + rejects + "</table>";
    return Promise.resolve({rows: 0});
  }
  function viewRows(main, p) {
    var all = [];
    INDEX.rows.forEach(function (r, i) { if (matches(r, p)) all.push(i); });
    var size = Math.max(1, +(p.size || 20)), pages = Math.max(1, Math.ceil(all.length / size));
    var page = Math.min(Math.max(1, +(p.page || 1)), pages), from = (page - 1) * size;
    var mine = all.slice(from, from + size);
    var sub = function (f) { return INDEX.rows.filter(function (r) { return matches(r, Object.assign({}, p, f)); }); };
    var taskCounts = countBy(sub({task: ""}), function (r) { return INDEX.tasks[r[0]]; });
    var sourceCounts = countBy(sub({source: ""}), function (r) { return INDEX.sources[r[1]]; });
    var splitCounts = countBy(sub({split: ""}), function (r) { return INDEX.splits[r[2]]; });
    var anyKind = sub({kind: ""}), kindCounts = countBy(anyKind, function (r) { return INDEX.kinds[r[3]]; });
    kindCounts.mismatch = anyKind.filter(function (r) { return r[4] === 0; }).length;
    var nav = pager("rows", p, page, pages,
      "rows " + (all.length ? from + 1 : 0) + "–" + (from + mine.length) + " of " + all.length + " · page " + page + " of " + pages);
    main.innerHTML = '<form class="controls" id="filters">' +
      '<label>task <select name="task">' + options(INDEX.tasks, p.task, "all tasks", taskCounts) + "</select></label>" +
      '<label>source <select name="source">' + options(INDEX.sources, p.source, "all sources", sourceCounts) + "</select></label>" +
      '<label>split <select name="split">' + options(INDEX.splits, p.split, "all splits", splitCounts) + "</select></label>" +
      '<label>shows <select name="kind">' + options(INDEX.kinds.concat(["mismatch"]), p.kind, "everything", kindCounts) + "</select></label>" +
      '<label>per page <select name="size">' + [10, 20, 50, 100].map(function (n) {
        return '<option' + (n === size ? " selected" : "") + ">" + n + "</option>";
      }).join("") + "</select></label>" +
      '<label><input type="checkbox" name="ann"' + (p.ann === "1" ? " checked" : "") + "> source annotations on every image</label></form>" +
      nav + '<div id="rows"></div>' + nav;
    var form = main.querySelector("#filters");
    form.addEventListener("change", function () {
      var f = {};
      ["task", "source", "split", "kind"].forEach(function (k) { f[k] = form.elements[k].value; });
      f.size = form.elements.size.value === "20" ? "" : form.elements.size.value;
      f.ann = form.elements.ann.checked ? "1" : "";
      P.go(link("rows", f));
    });
    return renderRows(main.querySelector("#rows"), mine, p.ann === "1").then(function () { return {rows: mine.length, matching: all.length}; });
  }
  function viewRow(main, p) {
    var at = -1;
    INDEX.rows.some(function (r, i) { if (r[5] === p.id) { at = i; return true; } return false; });
    if (at < 0) { main.innerHTML = "<p>No previewed row has id " + esc(p.id) + ".</p>"; return Promise.resolve({rows: 0}); }
    main.innerHTML = '<p><a href="' + link("rows", {task: INDEX.tasks[INDEX.rows[at][0]]}) + '">‹ all rows of this task</a></p><div id="rows"></div>';
    return renderRows(main.querySelector("#rows"), [at], p.ann === "1").then(function () { return {rows: 1, matching: 1}; });
  }
  function viewRejects(main, p) {
    var n = Math.ceil(INDEX.rejects / INDEX.chunk_rejects), names = [];
    for (var i = 0; i < n; i++) names.push(load("rejects-" + pad(i) + ".js"));
    return Promise.all(names).then(function () {
      var all = [];
      for (var i = 0; i < n; i++) all = all.concat(rejectChunks[i]);
      var keep = function (r, f) {
        var q = Object.assign({}, p, f || {});
        return (!q.source || r[1] === q.source) && (!q.stage || r[2] === q.stage) && (!q.reason || r[5] === q.reason);
      };
      var list = all.filter(function (r) { return keep(r); });
      var uniq = function (k) { return Object.keys(countBy(all, function (r) { return r[k]; })).sort(); };
      var size = 50, pages = Math.max(1, Math.ceil(list.length / size)), page = Math.min(Math.max(1, +(p.page || 1)), pages);
      var mine = list.slice((page - 1) * size, page * size), total = 0;
      INDEX.reject_counts.forEach(function (c) {
        if ((!p.source || c[0] === p.source) && (!p.stage || c[1] === p.stage) && (!p.reason || c[2] === p.reason)) total += c[3];
      });
      var nav = pager("rejects", p, page, pages, list.length + " listed of " + total + " rejects · page " + page + " of " + pages);
      main.innerHTML = '<form class="controls" id="filters">' +
        '<label>source <select name="source">' + options(uniq(1), p.source, "all sources", countBy(all.filter(function (r) { return keep(r, {source: ""}); }), function (r) { return r[1]; })) + "</select></label>" +
        '<label>stage <select name="stage">' + options(uniq(2), p.stage, "all stages", countBy(all.filter(function (r) { return keep(r, {stage: ""}); }), function (r) { return r[2]; })) + "</select></label>" +
        '<label>reason <select name="reason">' + options(uniq(5), p.reason, "all reasons", countBy(all.filter(function (r) { return keep(r, {reason: ""}); }), function (r) { return r[5]; })) + "</select></label></form>" +
        nav + '<table class="counts rejects" id="reject-list"><tr><th>key</th><th>source</th><th>stage</th><th>kind</th><th>level</th><th>reason</th><th>detail</th></tr>' +
        mine.map(function (r) { return "<tr>" + r.map(function (v) { return "<td>" + esc(v) + "</td>"; }).join("") + "</tr>"; }).join("") +
        "</table>" + nav;
      var form = main.querySelector("#filters");
      form.addEventListener("change", function () {
        P.go(link("rejects", {source: form.elements.source.value, stage: form.elements.stage.value, reason: form.elements.reason.value}));
      });
      return {rows: mine.length, matching: list.length};
    });
  }

  // ---------------------------------------------------------------- routing and the ready signal
  function settle(seq, view, result) {
    var imgs = Array.prototype.slice.call(document.querySelectorAll("#view img"));
    return Promise.all(imgs.map(function (img) {
      if (img.complete) return null;
      return new Promise(function (res) { img.addEventListener("load", res); img.addEventListener("error", res); });
    })).then(function () {
      var main = document.getElementById("view"), summary = document.getElementById("summary");
      var state = {seq: seq, view: view, rows: (result && result.rows) || 0, matching: (result && result.matching) || 0,
        images: imgs.length, loaded: imgs.filter(function (i) { return i.naturalWidth > 0; }).length,
        answer: main.querySelectorAll("svg .shape.answer").length, question: main.querySelectorAll("svg .shape.question").length,
        source: main.querySelectorAll("svg .shape.source").length, errors: errors.length, ms: Math.round(performance.now())};
      if (P.firstReadyMs === undefined) P.firstReadyMs = state.ms;
      P.state = state;
      Object.keys(state).forEach(function (k) { summary.dataset[k] = state[k]; });
      summary.textContent = view + ": " + state.rows + " shown" + (view === "rows" || view === "rejects" ? " of " + state.matching : "") +
        " · " + state.loaded + "/" + state.images + " images · " + (state.answer + state.question) + " shapes drawn · " +
        state.errors + " errors" + (errors.length ? ": " + errors.join("; ") : "");
      document.title = "cxr-instruct preview: " + summary.textContent;
      document.body.dataset.ready = seq;
      return state;
    });
  }
  function route() {
    var seq = ++renderSeq, h = parseHash(), main = document.getElementById("view");
    lastHash = location.hash;
    delete document.body.dataset.ready;
    Array.prototype.forEach.call(document.querySelectorAll("header nav a"), function (a) {
      a.className = a.dataset.view === h.view || (h.view === "row" && a.dataset.view === "rows") ? "on" : "";
    });
    var views = {overview: viewOverview, rows: viewRows, row: viewRow, rejects: viewRejects};
    var run = views[h.view] || viewOverview;
    current = Promise.resolve().then(function () { return run(main, h.p); }).then(function (result) {
      return settle(seq, h.view, result);
    }, function (err) {
      errors.push(String(err));
      return settle(seq, h.view, null);
    });
    return current;
  }
  P.go = function (hash) { if (location.hash !== hash) location.hash = hash; return route(); };
  P.whenReady = function () { return current; };
  P.chunk = function (n, data) { chunks[n] = data; };
  P.annotations = function (name, data) { annotations[name] = data; };
  P.rejects = function (n, data) { rejectChunks[n] = data; };
  P.index = function (data) {
    INDEX = data;
    window.addEventListener("hashchange", function () { if (location.hash !== lastHash) route(); });
    route();
  };
})();
"""
