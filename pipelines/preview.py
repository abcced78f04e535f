"""``cxr-instruct preview OUT``: a static page, ``OUT/preview/index.html``, showing a deterministic sample
of instruction rows per profile/task with their images, the boxes and polygons of each image drawn as
an SVG overlay on the 512x512 canvas, the conversation and the source record.

Images are written beside the page as ``preview/images/<hash>.png`` (the stored PNG bytes, unchanged).
The page's own script writes a summary (items, images loaded, shapes drawn, script and resource
errors) into ``#summary`` and the title, which the headless-browser test reads.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipelines.card import column_batches, table_files
from pipelines.manifest import Manifest
from transforms.hashing import stable_hash

CANVAS = 512  # the letterboxed image size; unit coordinates are fractions of it
DISPLAY_PX = 320  # CSS size of each image; the SVG scales with it through its viewBox
PALETTE = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
           "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#aaffc3", "#ffd8b1")
PRESENCE_TEXT = {1: "present", 0: "absent", -1: "uncertain"}


@dataclass(frozen=True)
class PreviewResult:
    path: Path
    items: int  # instruction rows shown
    images: int  # image panels (an image shown by two rows counts twice)
    shapes: int  # boxes + polygons drawn


def sample_ids(ids: list[str], n: int) -> list[str]:
    """The ``n`` ids with the smallest stable hash: the same rows for the same table, on every run."""
    return sorted(ids, key=lambda row_id: stable_hash("preview", row_id))[:n]


def rows_where(files: list[Path], column: str, values: list[str]) -> dict[str, dict]:
    """Rows whose ``column`` is in ``values``, keyed by that column (Arrow pushes the filter down)."""
    if not files or not values:
        return {}
    table = ds.dataset([str(f) for f in files], format="parquet").to_table(
        filter=pc.field(column).isin(values))
    return {row[column]: row for row in table.to_pylist()}


def label_colour(label: str) -> str:
    return PALETTE[stable_hash("colour", label) % len(PALETTE)]


def overlay_svg(annotation: dict | None) -> tuple[str, int]:
    """SVG drawn over one image: boxes from ``u1..v2`` and polygon rings from ``rings_unit``, in the
    canvas coordinates (unit * 512). Returns the markup and the number of shapes."""
    shapes = []
    for polygon in (annotation or {}).get("polygons") or []:
        colour = label_colour(polygon["label"])
        for ring in polygon["rings_unit"]:
            points = " ".join(f"{x * CANVAS:.1f},{y * CANVAS:.1f}" for x, y in ring)
            shapes.append(f'<polygon class="shape" points="{points}" stroke="{colour}" fill="{colour}" '
                          f'fill-opacity="0.15"><title>{html.escape(polygon["label"])}</title></polygon>')
    for box in (annotation or {}).get("boxes") or []:
        colour = label_colour(box["label"])
        x, y = box["u1"] * CANVAS, box["v1"] * CANVAS
        w, h = (box["u2"] - box["u1"]) * CANVAS, (box["v2"] - box["v1"]) * CANVAS
        label = html.escape(box["label"])
        shapes.append(f'<g class="shape"><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                      f'stroke="{colour}" fill="none"><title>{label}</title></rect>'
                      f'<text x="{x + 2:.1f}" y="{y + 12:.1f}" fill="{colour}">{label}</text></g>')
    svg = (f'<svg class="overlay" viewBox="0 0 {CANVAS} {CANVAS}" xmlns="http://www.w3.org/2000/svg">'
           + "".join(shapes) + "</svg>")
    return svg, len(shapes)


def findings_text(annotation: dict | None) -> str:
    """Stated findings, e.g. ``Cardiomegaly: present; Edema: absent`` (not-annotated ones left out)."""
    stated = [f"{f['name']}: {PRESENCE_TEXT[f['presence']]}" for f in (annotation or {}).get("findings") or []
              if f["presence"] is not None]
    return "; ".join(stated) or "none annotated"


def image_file_name(image_key: str) -> str:
    return f"{stable_hash('preview-image', image_key):016x}.png"


def render_item(row: dict, images: dict[str, dict], annotations: dict[str, dict]) -> tuple[str, int]:
    """One ``<article class="item">`` and the number of shapes drawn in it."""
    panels, shape_count, record_rows = [], 0, []
    for key in row["image_keys"]:
        if key not in images:
            raise ValueError(f"instruction {row['id']} names image {key!r}, which is not in the images table")
        svg, n = overlay_svg(annotations.get(key))
        shape_count += n
        panels.append(
            f'<figure class="view"><div class="canvas"><img class="xray" src="images/{image_file_name(key)}" '
            f'width="{CANVAS}" height="{CANVAS}" alt="{html.escape(key)}">{svg}</div>'
            f"<figcaption>{html.escape(key)} ({n} shapes)</figcaption></figure>")
        image = images[key]
        record_rows.append(
            f"<tr><td>{html.escape(key)}</td><td>{html.escape(image['source'])}</td>"
            f"<td>{html.escape(image['split'])}</td><td>{html.escape(image['view'] or '')}</td>"
            f"<td>{html.escape(findings_text(annotations.get(key)))}</td></tr>")
    turns = "".join(f'<div class="turn {html.escape(t["from"])}"><b>{html.escape(t["from"])}</b>'
                    f"<pre>{html.escape(t['value'])}</pre></div>" for t in row["conversations"])
    target = json.dumps(json.loads(row["target"]), indent=1, ensure_ascii=False)
    article = (
        f'<article class="item" data-id="{html.escape(row["id"])}">'
        f"<h3>{html.escape(row['profile'])} / {html.escape(row['task'])} "
        f"<small>{html.escape(row['id'])} · {html.escape(row['source'])} · {html.escape(row['split'])} · "
        f"{html.escape(row['template_id'])}</small></h3>"
        f'<div class="body"><div class="images">{"".join(panels)}</div>'
        f'<div class="text"><div class="conversation">{turns}</div>'
        f"<details><summary>target</summary><pre>{html.escape(target)}</pre></details>"
        f'<table class="record"><tr><th>key</th><th>source</th><th>split</th><th>view</th><th>findings</th></tr>'
        f"{''.join(record_rows)}</table></div></div></article>")
    return article, shape_count


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cxr-instruct preview</title>
<script>
window.previewErrors = [];
window.addEventListener("error", function (event) {{
  var target = event.target && event.target.src ? " " + event.target.src : "";
  window.previewErrors.push((event.message || "resource failed to load") + target);
}}, true);
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.querySelectorAll("img.xray"));
  var loaded = images.filter(function (img) {{ return img.complete && img.naturalWidth === {canvas}; }}).length;
  var summary = document.getElementById("summary");
  summary.dataset.items = document.querySelectorAll("article.item").length;
  summary.dataset.images = images.length;
  summary.dataset.loaded = loaded;
  summary.dataset.shapes = document.querySelectorAll("svg.overlay .shape").length;
  summary.dataset.errors = window.previewErrors.length;
  summary.textContent = summary.dataset.items + " items, " + loaded + "/" + images.length +
    " images loaded, " + summary.dataset.shapes + " shapes, " + window.previewErrors.length + " errors" +
    (window.previewErrors.length ? ": " + window.previewErrors.join("; ") : "");
  document.title = "cxr-instruct preview: " + summary.textContent;
}});
</script>
<style>
body {{ font-family: sans-serif; margin: 1em; background: #fafafa; }}
article.item {{ border: 1px solid #ccc; background: #fff; margin: 0 0 1em; padding: 0.5em; }}
h2 {{ margin: 1em 0 0.3em; }} h3 {{ margin: 0 0 0.4em; font-size: 1em; }} h3 small {{ color: #666; font-weight: normal; }}
.body {{ display: flex; gap: 1em; align-items: flex-start; }}
.images {{ display: flex; gap: 0.5em; flex-wrap: wrap; }}
figure.view {{ margin: 0; }} figcaption {{ font-size: 0.7em; color: #555; max-width: {display}px; overflow-wrap: anywhere; }}
.canvas {{ position: relative; width: {display}px; height: {display}px; }}
.canvas img, .canvas svg {{ position: absolute; left: 0; top: 0; width: {display}px; height: {display}px; }}
svg.overlay rect, svg.overlay polygon {{ stroke-width: 1.5; }} svg.overlay text {{ font-size: 11px; }}
.text {{ flex: 1; min-width: 18em; font-size: 0.85em; }}
.turn pre {{ white-space: pre-wrap; margin: 0.1em 0 0.4em; background: #f3f3f3; padding: 0.3em; }}
table.record {{ border-collapse: collapse; font-size: 0.9em; }} table.record td, table.record th {{ border: 1px solid #ddd; padding: 2px 4px; }}
</style></head>
<body>
<h1>cxr-instruct preview</h1>
<p>{description}</p>
<p id="summary" data-expected-items="{items}">rendering…</p>
{sections}
</body></html>
"""


def write_preview(out_dir: str | Path, rows_per_task: int = 3) -> PreviewResult:
    """Write ``OUT/preview/index.html`` and its images for a finished build."""
    out = Path(out_dir)
    manifest = Manifest.read(str(out))
    task_tables = sorted(t for t in manifest["tables"] if t.startswith("instructions/"))
    preview_dir = out / "preview"
    (preview_dir / "images").mkdir(parents=True, exist_ok=True)
    image_files, annotation_files = table_files(out, "images"), table_files(out, "annotations")
    sections, items, panels, shapes = [], 0, 0, 0
    for table_dir in task_tables:
        files = table_files(out, table_dir)
        ids = [i for batch in column_batches(files, ["id"]) for i in batch.column("id").to_pylist()]
        chosen = sample_ids(ids, rows_per_task)
        rows = rows_where(files, "id", chosen)
        keys = sorted({key for row in rows.values() for key in row["image_keys"]})
        images = rows_where(image_files, "image_key", keys)
        annotations = rows_where(annotation_files, "image_key", keys)
        for key, image in images.items():
            (preview_dir / "images" / image_file_name(key)).write_bytes(image["image"]["bytes"])
        articles = []
        for row_id in chosen:
            article, n = render_item(rows[row_id], images, annotations)
            articles.append(article)
            shapes += n
            panels += len(rows[row_id]["image_keys"])
        items += len(chosen)
        profile_task = table_dir.removeprefix("instructions/")
        sections.append(f"<section><h2>{html.escape(profile_task)} "
                        f"<small>({len(chosen)} of {len(ids)} rows)</small></h2>{''.join(articles)}</section>")
    description = (f"{items} instruction rows, up to {rows_per_task} per profile/task, chosen by a stable hash "
                   f"of the row id. Boxes (u1..v2) and polygons (rings_unit) are drawn on the {CANVAS}x{CANVAS} "
                   "letterboxed canvas.")
    page = PAGE.format(canvas=CANVAS, display=DISPLAY_PX, description=html.escape(description), items=items,
                       sections="\n".join(sections))
    path = preview_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return PreviewResult(path=path, items=items, images=panels, shapes=shapes)
