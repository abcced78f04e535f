"""The dataset card, ``OUT/README.md``: Hugging Face YAML front matter (one config per table and per
profile/task), licences and citations from ``manifests/sources.yaml``, counts from ``manifest.json``,
statistics from the Parquet tables, and three PNG plots in ``OUT/card/``.

Statistics are read column by column, batch by batch (``pyarrow.ParquetFile.iter_batches`` with an
explicit column list): the image bytes are never read. The build may be local or on ``gs://``: the
tables are read and the card written through Beam's FileSystems (:mod:`transforms.io`).
"""

from __future__ import annotations

import io as stdio
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import manifests
from pipelines.output.atomic import write_atomically
from pipelines.output.manifest import Manifest, record_view_files
from pipelines.output.paths import split_of
from pipelines.output.table_files import column_batches, count_by, parquet_rows, table_files
from transforms import io
from transforms.splits import SPLIT_ORDER
from transforms.tasks import load_profile, method_name

SPLITS = SPLIT_ORDER  # train, validation, test: the split names `datasets` expects
PRESENCE_COLUMNS = ((1, "present (1)"), (-1, "uncertain (-1)"), (0, "absent (0)"), (None, "not annotated (null)"))
PRESENCE_COLOURS = {1: "#d62728", -1: "#ff7f0e", 0: "#2ca02c", None: "#c7c7c7"}
PLOT_DIR = "card"
PLOT_DPI = 100
PNG_METADATA = {"Software": None}  # no matplotlib version stamp: same data, same bytes
VQ_FINGERPRINT_COLUMN = "tokenizer"


def load_sources() -> dict:
    """``manifests/sources.yaml``: access classes, per-source licence/citation, method citations."""
    return manifests.load("sources.yaml")


def contributing_sources(manifest: dict) -> list[str]:
    """Sources with at least one input read: their rows, or their rejects, are in the output."""
    return sorted(source for source, entry in manifest["counts"].items() if entry["read"] > 0)


# ------------------------------------------------------------------ reading the tables


@dataclass
class CardStats:
    images: Counter = field(default_factory=Counter)  # (source, split) -> images
    findings: Counter = field(default_factory=Counter)  # (finding, presence) -> images
    finding_order: list[str] = field(default_factory=list)
    boxes_per_image: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ctr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    languages: list[str] = field(default_factory=list)
    rejects: Counter = field(default_factory=Counter)  # (source, stage, kind, reason) -> rows
    tokenizer_fingerprints: list[str] = field(default_factory=list)


def annotation_statistics(files: list[str], stats: CardStats) -> None:
    """Findings presence counts, boxes per image, CTR values and report languages, in place."""
    boxes, ctr, languages = [], [], set[str]()
    for batch in column_batches(files, ["findings", "boxes", "ctr", "report_language"]):
        flat = pc.list_flatten(batch.column("findings"))
        names, presence = flat.field("name"), flat.field("presence")
        for name in names.to_pylist():
            if name not in stats.finding_order:
                stats.finding_order.append(name)
        grouped = (
            pa.table({"name": names, "presence": presence})
            .group_by(["name", "presence"])
            .aggregate([([], "count_all")])
        )
        for row in grouped.to_pylist():
            stats.findings[(row["name"], row["presence"])] += row["count_all"]
        boxes.append(pc.list_value_length(batch.column("boxes")).fill_null(0).to_numpy())
        ctr.append(pc.drop_null(batch.column("ctr")).to_numpy())
        # "es-stemmed" (PadChest's stemmed Spanish) -> "es": the card lists ISO 639-1 codes
        languages.update(v.split("-")[0] for v in batch.column("report_language").to_pylist() if v)
    if boxes:
        stats.boxes_per_image = np.concatenate(boxes)
        stats.ctr = np.concatenate(ctr)
    stats.languages = sorted(languages)


def tokenizer_fingerprints(files: Sequence[str | Path]) -> list[str]:
    """Distinct fingerprint ids in the vq table's ``tokenizer`` column (``vq/tokenizer.json`` holds the
    full fingerprint; see pipelines/beam/tokenize.py)."""
    if not files:
        return []
    with io.open_file(str(files[0])) as handle:
        names = pq.ParquetFile(handle).schema_arrow.names
    if VQ_FINGERPRINT_COLUMN not in names:
        raise ValueError(f"{files[0]}: vq table has no {VQ_FINGERPRINT_COLUMN!r} column")
    return sorted({str(key[0]) for key in count_by(files, [VQ_FINGERPRINT_COLUMN])})


def card_statistics(out_dir: str | Path) -> CardStats:
    stats = CardStats()
    stats.images = count_by(table_files(out_dir, "images"), ["source", "split"])
    annotation_statistics(table_files(out_dir, "annotations"), stats)
    stats.rejects = count_by(table_files(out_dir, "rejects"), ["source", "stage", "kind", "reason"])
    stats.tokenizer_fingerprints = tokenizer_fingerprints(table_files(out_dir, "vq"))
    return stats


# ------------------------------------------------------------------ front matter


def config_name(table_dir: str) -> str:
    """The Hub config of a table folder: ``instructions/m4cxr/disease_classification`` ->
    ``m4cxr-disease_classification``, ``images`` -> ``images``, ``vq/_rejects`` -> ``vq-rejects``."""
    parts = table_dir.split("/")
    if parts[0] == "instructions":
        parts = parts[1:]
    return "-".join(part.lstrip("_") for part in parts)


def split_order(split: str) -> tuple:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def hf_configs(tables: dict[str, dict[str, int]]) -> list[dict]:
    """One ``configs`` entry per table folder with rows, one ``data_files`` glob per split with rows
    (``datasets`` cannot load a split without files). Config names are unique: ``datasets`` fails on a
    card that names one twice."""
    configs: list[dict] = []
    owner: dict[str, str] = {}
    for table_dir, splits in sorted(tables.items()):
        present = sorted((split for split, rows in splits.items() if rows), key=split_order)
        if not present:
            continue
        name = config_name(table_dir)
        if name in owner:
            raise ValueError(f"tables {owner[name]!r} and {table_dir!r} both make card config {name!r}")
        owner[name] = table_dir
        configs.append(
            {
                "config_name": name,
                "data_files": [{"split": split, "path": f"{table_dir}/{split}-*.parquet"} for split in present],
            }
        )
    for entry in configs:
        if entry["config_name"] == "images":
            entry["default"] = True
    return configs


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def tables_with_vq(out_dir: str | Path, tables: dict) -> dict:
    """The manifest's tables plus ``vq`` (written by the tokenize stage) when its shards exist."""
    vq: dict[str, int] = {}
    for path in table_files(out_dir, "vq"):
        split = split_of(path)
        vq[split] = vq.get(split, 0) + parquet_rows(path)
    return {**tables, "vq": vq} if vq else dict(tables)


def front_matter(manifest: dict, stats: CardStats, tables: dict) -> dict:
    images = sum(manifest["tables"].get("images", {}).values())
    return {
        "pretty_name": "cxr-instruct chest X-ray instruction data",
        "license": "other",
        "license_name": "source-dataset-terms",
        "language": stats.languages,
        "tags": ["medical", "radiology", "chest-x-ray", "instruction-tuning"],
        "task_categories": ["image-to-text", "visual-question-answering", "object-detection", "image-segmentation"],
        "size_categories": [size_category(images)],
        "configs": hf_configs(tables),
    }


# ------------------------------------------------------------------ markdown


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def split_columns(per_split: dict[str, int], splits: list[str]) -> list:
    return [per_split.get(split, 0) for split in splits] + [sum(per_split.values())]


def licence_section(sources: dict, used: list[str]) -> str:
    classes = sources["access_classes"]
    rows = []
    for name in used:
        entry = sources["sources"][name]
        public = "yes" if classes[entry["access"]]["public_ok"] else "no"
        rows.append([entry["name"], entry["access"], entry["licence"], public, f"`{entry['licence_id']}`"])
    notes = "\n".join(
        f"- **{sources['sources'][n]['name']}** ({sources['sources'][n]['url']}): "
        f"{sources['sources'][n]['access_note']}"
        for n in used
    )
    return "\n\n".join(
        [
            markdown_table(["source", "access", "licence", "public release allowed", "licence id"], rows),
            notes,
            "Every row carries the obligations of the sources it derives from. `cxr-instruct publish` pushes to "
            "a private repository by default and refuses a public one while any source above does not allow "
            "it, unless `--accept-licence <licence id>` names each such licence.",
        ]
    )


def instruction_rows(instructions: dict) -> list[list]:
    rows = []
    for profile, tasks in sorted(instructions.items()):
        for task, per_source in sorted(tasks.items()):
            for source, per_split in sorted(per_source.items()):
                rows.append([profile, task, source, *split_columns(per_split, list(SPLITS))])
    return rows


def profile_sections(manifest: dict) -> str:
    """One paragraph per profile of the build: the method it follows, what its rows are, its input
    size, and its tasks with their weights and rows; MediVLM's also the fitted severity table."""
    parts = []
    for name in manifest["profiles"]:
        profile = load_profile(name)
        method = method_name(name)
        rows = {
            task: sum(n for per_split in per_source.values() for n in per_split.values())
            for task, per_source in manifest["instructions"].get(name, {}).items()
        }
        tasks = ", ".join(
            f"`{task}` (weight {spec.weight:g}, {rows.get(task, 0):,} rows)" for task, spec in profile.tasks.items()
        )
        size = (
            f" Images at {profile.image_size}x{profile.image_size}, the paper's input size: `export` and the "
            "loader resize the letterboxed canvas."
            if profile.image_size
            else ""
        )
        text = f"### {name} ({method})\n\n{' '.join(profile.description.split())}{size} Tasks: {tasks}."
        idf = manifest.get("severity_idf")
        if name == "medivlm" and idf:
            text += (
                f" Severity scores: `{idf['version']}`, fitted on {idf['n_documents']:,} train reports "
                f"(raw TF-IDF sum {idf['min']:.3f} .. {idf['max']:.3f} mapped to 0 .. 1)."
            )
        parts.append(text)
    return "\n\n".join(parts)


def source_rows(manifest: dict, stats: CardStats) -> list[list]:
    rows = []
    for source, entry in manifest["counts"].items():
        images = {split: n for (src, split), n in stats.images.items() if src == source}
        rows.append(
            [
                source,
                entry["read"],
                entry["written"],
                sum(entry["rejected"].values()),
                sum(entry["filtered"].values()),
                *split_columns(images, list(SPLITS)),
            ]
        )
    return rows


def finding_rows(stats: CardStats) -> list[list]:
    return [
        [name, *(stats.findings.get((name, value), 0) for value, _ in PRESENCE_COLUMNS)] for name in stats.finding_order
    ]


def reject_rows(stats: CardStats) -> list[list]:
    return [[*key, n] for key, n in sorted(stats.rejects.items(), key=lambda kv: tuple(map(str, kv[0])))]


def fingerprint_text(stats: CardStats) -> str:
    if not stats.tokenizer_fingerprints:
        return "not tokenized (no `vq/` table in this output)."
    return (
        "VQ-GAN codes in `vq/`, tokenizer fingerprint id(s): "
        + ", ".join(f"`{fp}`" for fp in stats.tokenizer_fingerprints)
        + " (full fingerprint in `vq/tokenizer.json`)."
    )


def loading_section(configs: list[dict]) -> str:
    tables = ("images", "annotations", "rejects", "vq", "vq-rejects")
    instruction = next((c for c in configs if c["config_name"] not in tables), configs[0])
    glob = instruction["data_files"][0]["path"]
    split = instruction["data_files"][0]["split"]
    return textwrap.dedent(f"""\
        ```python
        import datasets

        # from a local copy of this folder: by config (splits train, validation, test where present) ...
        rows = datasets.load_dataset(".", "{instruction["config_name"]}", split="{split}")
        # ... or by file glob
        rows = datasets.load_dataset("parquet", data_files="{glob}", split="train")
        images = datasets.load_dataset("parquet", data_files="images/train-*.parquet", split="train")
        images[0]["image"]  # PIL image, 512x512, letterboxed

        # from the Hub (after `cxr-instruct publish`): one config per table and per profile/task
        rows = datasets.load_dataset("<user>/<repo>", "{instruction["config_name"]}", split="{split}")
        ```

        Instruction rows name their images in `image_keys`; join them to `images` and `annotations` on
        `image_key`. Boxes and polygons are stored in original pixels (`x1..y2`, `rings`) and in [0, 1] of
        the 512x512 letterboxed canvas (`u1..v2`, `rings_unit`).""")


def render_card(manifest: dict, stats: CardStats, sources: dict, tables: dict, plots: list[str]) -> str:
    """The README.md text (front matter + body); ``plots`` are paths relative to the output folder."""
    used = contributing_sources(manifest)
    unknown = [s for s in used if s not in sources["sources"]]
    if unknown:
        raise ValueError(f"sources {unknown} have no entry in manifests/sources.yaml")
    meta = front_matter(manifest, stats, tables)
    profiles = sorted(manifest["instructions"])
    body = [
        "# cxr-instruct chest X-ray instruction data",
        f"Built by cxr-instruct {manifest['versions'].get('cxr-instruct', '?')} from "
        f"{', '.join(sources['sources'][s]['name'] for s in used)}; profiles: {', '.join(profiles) or 'none'}. "
        f"Build checks: " + ", ".join(f"{k} = {v}" for k, v in manifest["checks"].items()) + ".",
        "## Licences and access",
        licence_section(sources, used),
        "## Contents",
        "Per source: inputs read, written, rejected and filtered (`read = written + rejected + filtered`), "
        "and images per split.",
        markdown_table(
            ["source", "read", "written", "rejected", "filtered", *(f"images {s}" for s in SPLITS), "images"],
            source_rows(manifest, stats),
        ),
        "Instruction rows per profile, task and source:",
        markdown_table(["profile", "task", "source", *SPLITS, "total"], instruction_rows(manifest["instructions"])),
        "Rows per table and split:",
        markdown_table(
            ["config", "table", "rows per split"],
            [
                [
                    config_name(t),
                    f"`{t}/`",
                    ", ".join(f"{s} {n}" for s, n in sorted(splits.items(), key=lambda kv: split_order(kv[0]))),
                ]
                for t, splits in sorted(tables.items())
            ],
        ),
        "## Profiles",
        profile_sections(manifest),
        "## Label distribution",
        "Harmonised findings (CheXpert-14 taxonomy), images per presence value. Null means the source did "
        "not annotate the finding; it is never counted as absent.",
        markdown_table(["finding", *(label for _, label in PRESENCE_COLUMNS)], finding_rows(stats)),
        *[f"![{Path(p).stem}]({p})" for p in plots],
        "## Rejects",
        "Every input that did not reach the tables, by source, stage, kind and reason "
        "(`rejects` config; `level` = record or item in the table).",
        markdown_table(["source", "stage", "kind", "reason", "rows"], reject_rows(stats))
        if stats.rejects
        else "No rejects.",
        "## Tokenizer",
        fingerprint_text(stats),
        "## Loading",
        loading_section(meta["configs"]),
        "## Citations",
        "Datasets:",
        "```bibtex\n" + "\n\n".join(sources["sources"][s]["citation"] for s in used) + "\n```",
        "Methods the profiles follow:",
        "```bibtex\n"
        + "\n\n".join(
            sources["methods"][p]["citation"] for p in profiles if sources["methods"].get(p, {}).get("citation")
        )
        + "\n```",
        *[
            f"{method_name(p)} (profile `{p}`) has no citation entry here; cite its authors' publication."
            for p in profiles
            if not sources["methods"].get(p, {}).get("citation")
        ],
    ]
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120)
    return f"---\n{header}---\n\n" + "\n\n".join(body) + "\n"


# ------------------------------------------------------------------ plots


def new_figure(width: float = 7.0, height: float = 4.0) -> Figure:
    figure = Figure(figsize=(width, height), dpi=PLOT_DPI)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str) -> None:
    """The figure as a PNG at ``path`` (local or ``gs://``), written under a temporary name then renamed."""
    figure.tight_layout()
    buffer = stdio.BytesIO()
    figure.savefig(buffer, dpi=PLOT_DPI, format="png", metadata=PNG_METADATA)
    png = buffer.getvalue()
    write_atomically(path, lambda handle: handle.write(png))


def plot_label_distribution(stats: CardStats, path: str) -> None:
    figure = new_figure(7.0, 0.35 * max(len(stats.finding_order), 4) + 1.2)
    axes = figure.add_subplot()
    names = stats.finding_order[::-1]
    left = np.zeros(len(names))
    for value, label in PRESENCE_COLUMNS:
        counts = np.array([stats.findings.get((name, value), 0) for name in names], dtype=float)
        axes.barh(names, counts, left=left, label=label, color=PRESENCE_COLOURS[value])
        left += counts
    axes.set_xlabel("images")
    axes.set_title("Harmonised findings by presence")
    axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.4, -0.08 - 0.4 / len(names)), ncol=4)
    save_figure(figure, path)


def plot_boxes_per_image(stats: CardStats, path: str) -> None:
    figure = new_figure()
    axes = figure.add_subplot()
    top = int(stats.boxes_per_image.max()) if stats.boxes_per_image.size else 0
    axes.hist(stats.boxes_per_image, bins=np.arange(top + 2) - 0.5)  # type: ignore[arg-type]  # an array is fine
    axes.set_xlabel("boxes per image")
    axes.set_ylabel("images")
    axes.set_title("Boxes per image")
    save_figure(figure, path)


def plot_ctr(stats: CardStats, path: str) -> None:
    figure = new_figure()
    axes = figure.add_subplot()
    axes.hist(stats.ctr, bins=np.linspace(0.2, 0.9, 36))  # type: ignore[arg-type]  # an array is fine
    for band in manifests.load("ctr_bands.yaml")["bands"][1:]:
        axes.axvline(band["from"], color="grey", linestyle="--", linewidth=1)
        axes.text(
            band["from"],
            0.98,
            f" {band['name']}",
            rotation=90,
            va="top",
            fontsize="small",
            transform=axes.get_xaxis_transform(),
        )
    axes.set_xlabel("cardiothoracic ratio")
    axes.set_ylabel("images")
    axes.set_title(f"Cardiothoracic ratio ({stats.ctr.size} images with both lungs and heart)")
    save_figure(figure, path)


def write_plots(stats: CardStats, out_dir: str | Path) -> list[str]:
    """The card's PNGs under ``OUT/card/``; returns their paths relative to ``out_dir``."""
    plots = [
        ("label_distribution.png", plot_label_distribution, bool(stats.finding_order)),
        ("boxes_per_image.png", plot_boxes_per_image, stats.boxes_per_image.size > 0),
        ("ctr_histogram.png", plot_ctr, stats.ctr.size > 0),
    ]
    written = []
    for name, plot, has_data in plots:
        if has_data:
            plot(stats, io.join(str(out_dir), PLOT_DIR, name))
            written.append(f"{PLOT_DIR}/{name}")
    return written


def write_card(out_dir: str | Path) -> str:
    """Write ``OUT/README.md`` and its plots for a finished build (local or ``gs://``); returns the
    README path."""
    out = str(out_dir)
    manifest = Manifest.read(out)
    stats = card_statistics(out)
    plots = write_plots(stats, out)
    text = render_card(manifest, stats, load_sources(), tables_with_vq(out, manifest["tables"]), plots)
    path = io.join(out, "README.md")
    data = text.encode("utf-8")
    write_atomically(path, lambda handle: handle.write(data))
    record_view_files(out, "card", ["README.md", *plots])
    return path
