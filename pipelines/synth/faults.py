"""Bad inputs for ``cxr-instruct synth --faults``: the clean corpus, then one damage per fault kind.

The kinds, and the stage and reason the build must reject each with, are data in
``manifests/faults.yaml``; this module only knows how to plant each kind in the native files. Each
victim is chosen from a ranking by SHA-256 of ``(seed, kind, key)``, victims are disjoint (except that a scene-graph fault may hit an image whose study lost only its report or labels), and every
write is byte-stable, so the same ``(studies, seed)`` give the same faulted corpus. Faults that damage
input rewrite an existing file; faults that add input (a row for an image that does not exist, a
repeated id, an out-of-image box) append a row or an object.

:func:`inject` returns what goes into ``SYNTHETIC_TRUTH.json``:

- ``faults``: one entry per kind: ``kind``, ``source``, ``stage``, ``reason``, ``level``, ``loses``,
  ``file`` (relative to the corpus root), ``row`` (1-based data row of a CSV, None for a whole file),
  ``where`` (the object inside a JSON file, e.g. ``objects[41]``, else None), ``key`` (the reject key
  expected) and ``keys`` (every key the fault hits: a report is shared by the images of its study).
- ``faulted``: ``images``, the truth images a fault loses, and ``annotations``, the
  ``"<source>:<image key>"`` CheXmask rows, scene graphs and VQA questions lost (their own fault, or
  riding on a lost image). Every other truth image and annotation must come out of the build.

The VQA kinds add a copied question or ``mimic_all.csv`` row, made bad, beside the good ones (they
lose nothing); ``where`` of a MIMIC-CXR-VQA fault is the array position, ``#<n>``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

import manifests
from pipelines.synth import output, vqa_datasets

KINDS: dict[str, dict] = manifests.load("faults.yaml")["kinds"]
CHEXMASK_FILES = {
    "mimic": ("MIMIC-CXR-JPG", "dicom_id"),
    "vindr": ("VinDr-CXR", "image_id"),
    "padchest": ("Padchest", "ImageID"),
}
PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
VQA_SOURCES = ("mimic_cxr_vqa", "mimic_diff_vqa")


class NotEnoughVictims(ValueError):
    """The corpus is too small to give every fault kind its own victim."""


@dataclass
class Corpus:
    """The clean corpus being damaged: its folders, its truth, and the keys already hit."""

    out: Path
    roots: dict[str, str]  # source -> folder name under out
    images: dict[str, dict]  # the truth's images
    seed: int
    used: set[str] = field(default_factory=set)
    shareable: set[str] = field(default_factory=set)  # used only by a report or label fault of its study
    questions: dict[str, list[dict]] = field(default_factory=dict)  # source -> the truth's VQA questions

    def path(self, source: str, *parts: str) -> Path:
        return self.out.joinpath(self.roots[source], *parts)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def pick(self, kind: str, candidates: Iterable[str], share: bool = False) -> str:
        """The first unused candidate in the kind's hash ranking; it becomes used. With ``share`` (a
        scene-graph fault) an image whose study only lost its report or labels is free too, once."""
        free = [key for key in candidates if key not in self.used or (share and key in self.shareable)]
        if not free:
            raise NotEnoughVictims(f"no victim left for fault {kind!r}: generate more studies (8 or more)")
        victim = min(free, key=lambda key: hashlib.sha256(f"{self.seed}|{kind}|{key}".encode()).hexdigest())
        self.used.add(victim)
        self.shareable.discard(victim)
        return victim

    def study_hit(self, keys: Iterable[str]) -> None:
        """The images of a study whose report or label rows are damaged (they are still written)."""
        self.used.update(keys)
        self.shareable.update(keys)

    def of_source(self, source: str, test: Callable[[dict], object] = lambda entry: True) -> list[str]:
        return sorted(key for key, entry in self.images.items() if entry["source"] == source and test(entry))


def _native(key: str) -> str:
    return key.split("/", 1)[1]


# ---------------------------------------------------------------- file helpers


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data rows of a (possibly gzipped) CSV."""
    data = path.read_bytes()
    text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
    header, *rows = csv.reader(io.StringIO(text, newline=""))
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """As pandas wrote it: minimal quoting, ``\\n`` line ends, gzip with mtime 0 for ``.gz``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    output.write_text(path, buffer.getvalue())


def row_of(header: list[str], rows: list[list[str]], column: str, value: str) -> int:
    """The index in ``rows`` of the first row whose ``column`` (stripped) is ``value``."""
    position = [name.strip() for name in header].index(column)
    return next(i for i, row in enumerate(rows) if row[position].strip() == value)


def mimic_image(corpus: Corpus, key: str) -> Path:
    entry = corpus.images[key]
    subject, study = entry["subject_id"], entry["study_id"]
    return corpus.path("mimic", "files", f"p{subject[:2]}", f"p{subject}", f"s{study}", f"{_native(key)}.dcm")


def vindr_image(corpus: Corpus, key: str) -> Path:
    return corpus.path("vindr", corpus.images[key]["split"], f"{_native(key)}.dicom")


def siim_image(corpus: Corpus, key: str) -> Path:
    (path,) = corpus.path("siim").glob(f"dicom-images-*/*/*/{_native(key)}.dcm")
    return path


def padchest_image(corpus: Corpus, key: str) -> Path:
    return corpus.path("padchest", str(corpus.images[key]["image_dir"]), _native(key))


def fault(
    corpus: Corpus, kind: str, path: Path, keys: list[str], row: int | None = None, where: str | None = None
) -> dict:
    spec = KINDS[kind]
    return {
        "kind": kind,
        "source": spec["source"],
        "stage": spec["stage"],
        "reason": spec["reason"],
        "level": spec["level"],
        "loses": spec["loses"],
        "file": corpus.relative(path),
        "row": row,
        "where": where,
        "key": keys[0],
        "keys": keys,
    }


# ---------------------------------------------------------------- image files


def truncated_dicom(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(kind, corpus.of_source("mimic"))
    path = mimic_image(corpus, key)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 5])
    return fault(corpus, kind, path, [key])


def dicom_without_pixel_data(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(kind, corpus.of_source("vindr"))
    path = vindr_image(corpus, key)
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    with output.deliberate_invalid_values():
        output.save_dicom(dataset, path)
    return fault(corpus, kind, path, [key])


def wrong_transfer_syntax(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(kind, corpus.of_source("siim"))
    path = siim_image(corpus, key)
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the pixel data stays JPEG
    dataset.save_as(path, enforce_file_format=False)
    return fault(corpus, kind, path, [key])


def zero_byte_png(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(kind, corpus.of_source("padchest"))
    path = padchest_image(corpus, key)
    path.write_bytes(b"")
    return fault(corpus, kind, path, [key])


def _png_depth(path: Path) -> int:
    return path.read_bytes()[24]  # IHDR: 8 signature + 8 chunk head + 8 width/height bytes


def bad_16bit_png_header(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(kind, [k for k in corpus.of_source("padchest") if _png_depth(padchest_image(corpus, k)) == 16])
    path = padchest_image(corpus, key)
    data = bytearray(path.read_bytes())
    data[24] = 8  # the header now claims 8 bits per sample; the image data stays 16-bit
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # a valid checksum over the lie
    path.write_bytes(bytes(data))
    return fault(corpus, kind, path, [key])


# ---------------------------------------------------------------- label and annotation files


def _siim_rle_row(corpus: Corpus, kind: str, damage: Callable[[str, dict], str]) -> dict:
    key = corpus.pick(kind, corpus.of_source("siim"))
    path = corpus.path("siim", "train-rle.csv")
    header, rows = read_csv(path)
    index = row_of(header, rows, "ImageId", _native(key))
    rle_at = [name.strip() for name in header].index("EncodedPixels")
    rows[index][rle_at] = " " + damage(rows[index][rle_at].strip(), corpus.images[key])
    write_csv(path, header, rows)
    return fault(corpus, kind, path, [key], row=index + 1)


def malformed_rle_siim(corpus: Corpus, kind: str) -> dict:
    """An odd number of integers: a run start without its length."""
    return _siim_rle_row(corpus, kind, lambda rle, _: "5 10 20" if rle == "-1" else " ".join(rle.split()[:-1]))


def rle_past_image_end(corpus: Corpus, kind: str) -> dict:
    return _siim_rle_row(corpus, kind, lambda _, entry: f"{entry['width'] * entry['height'] - 10} 50")


def malformed_rle_chexmask(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(
        kind,
        [
            k
            for k, e in sorted(corpus.images.items())
            if (e.get("chexmask") or {}).get("passes") and e["source"] in CHEXMASK_FILES
        ],
    )
    stem, id_column = CHEXMASK_FILES[corpus.images[key]["source"]]
    (path,) = corpus.path("chexmask", "OriginalResolution").glob(f"{stem}.csv*")
    header, rows = read_csv(path)
    index = row_of(header, rows, id_column, _native(key))
    heart = header.index("Heart")
    rows[index][heart] = f"{rows[index][heart]} 12x"
    write_csv(path, header, rows)
    return fault(corpus, kind, path, [key], row=index + 1)


def _vindr_box_rows(corpus: Corpus, key: str) -> tuple[Path, list[str], list[list[str]]]:
    path = corpus.path("vindr", "annotations", f"annotations_{corpus.images[key]['split']}.csv")
    return (path, *read_csv(path))


def box_outside_image(corpus: Corpus, kind: str) -> dict:
    def boxes(key: str) -> tuple[Path, list[str], list[list[str]], list[list[str]]]:
        path, header, rows = _vindr_box_rows(corpus, key)
        image_id, x_min = header.index("image_id"), header.index("x_min")
        return path, header, rows, [row for row in rows if row[image_id] == _native(key) and row[x_min]]

    key = corpus.pick(kind, [k for k in corpus.of_source("vindr") if boxes(k)[3]])
    path, header, rows, own = boxes(key)
    x_min, x_max = header.index("x_min"), header.index("x_max")
    copy = list(own[0])
    width = corpus.images[key]["width"]
    copy[x_min], copy[x_max] = f"{width + 10:.1f}", f"{width + 60:.1f}"
    write_csv(path, header, rows + [copy])
    return fault(corpus, kind, path, [key], row=len(rows) + 1)


def missing_image(corpus: Corpus, kind: str) -> dict:
    image_id = hashlib.md5(f"{corpus.seed}|{kind}".encode()).hexdigest()  # VinDr ids are 32 hex digits
    path = corpus.path("vindr", "annotations", "annotations_train.csv")
    header, rows = read_csv(path)
    write_csv(path, header, rows + [[image_id, *rows[0][1:]]])
    return fault(corpus, kind, path, [f"vindr/{image_id}"], row=len(rows) + 1)


def _scene_graph_object(corpus: Corpus, kind: str, width: float) -> dict:
    """A copy of the graph's first object added with ``x2 = x1 - width`` (in both coordinate spaces)."""
    key = corpus.pick(
        kind, corpus.of_source("mimic", lambda e: e.get("imagenome") and not e.get("imagenome_gold")), share=True
    )
    path = corpus.path("imagenome", "silver_dataset", "scene_graph", f"{_native(key)}_SceneGraph.json")
    graph = json.loads(path.read_text())
    added = dict(graph["objects"][0])
    added["original_x2"] = added["original_x1"] - width
    added["x2"] = max(0, added["x1"] - round(width * 224 / max(corpus.images[key]["width"], 1)))
    graph["objects"].append(added)
    output.write_text(path, json.dumps(graph, indent=1))
    return fault(corpus, kind, path, [key], where=f"objects[{len(graph['objects']) - 1}]")


def zero_area_box(corpus: Corpus, kind: str) -> dict:
    return _scene_graph_object(corpus, kind, 0)


def negative_box(corpus: Corpus, kind: str) -> dict:
    return _scene_graph_object(corpus, kind, 50)


def _padchest_rows(corpus: Corpus) -> tuple[Path, list[str], list[list[str]]]:
    path = corpus.path("padchest", PADCHEST_CSV)
    return (path, *read_csv(path))


def duplicate_id(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(kind, corpus.of_source("padchest"))
    path, header, rows = _padchest_rows(corpus)
    write_csv(path, header, rows + [list(rows[row_of(header, rows, "ImageID", _native(key))])])
    return fault(corpus, kind, path, [key], row=len(rows) + 1)


def unparseable_label_list(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(kind, corpus.of_source("padchest"))
    path, header, rows = _padchest_rows(corpus)
    index, labels = row_of(header, rows, "ImageID", _native(key)), header.index("Labels")
    cell = rows[index][labels].strip()
    rows[index][labels] = cell[:-1] if cell.endswith("]") else "['normal'"  # the closing bracket lost
    write_csv(path, header, rows)
    return fault(corpus, kind, path, [key], row=index + 1)


def csv_missing_columns(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(kind, corpus.of_source("mimic"))
    path = corpus.path("mimic", "mimic-cxr-2.0.0-metadata.csv.gz")
    header, rows = read_csv(path)
    index = row_of(header, rows, "dicom_id", _native(key))
    rows[index] = rows[index][:4]
    write_csv(path, header, rows)
    return fault(corpus, kind, path, [key], row=index + 1)


# ---------------------------------------------------------------- more rows, headers and graphs


def _mimic_metadata_cell(corpus: Corpus, kind: str, column: str, value: str) -> dict:
    key = corpus.pick(kind, corpus.of_source("mimic"))
    path = corpus.path("mimic", "mimic-cxr-2.0.0-metadata.csv.gz")
    header, rows = read_csv(path)
    index = row_of(header, rows, "dicom_id", _native(key))
    rows[index][header.index(column)] = value
    write_csv(path, header, rows)
    return fault(corpus, kind, path, [key], row=index + 1)


def study_time_not_a_time(corpus: Corpus, kind: str) -> dict:
    """StudyTime written with colons (``12:30:05``), not MIMIC's numeric HHMMSS.ffffff."""
    return _mimic_metadata_cell(corpus, kind, "StudyTime", "12:30:05")


def _fewest_images(studies: dict[str, list[str]], free: list[str]) -> list[str]:
    """The free studies with the fewest images: a study fault leaves the most images to the others."""
    fewest = min((len(studies[s]) for s in free), default=0)
    return [s for s in free if len(studies[s]) == fewest]


def _study_keys(corpus: Corpus) -> dict[str, list[str]]:
    studies: dict[str, list[str]] = {}
    for key in corpus.of_source("mimic"):
        studies.setdefault(corpus.images[key]["study_id"], []).append(key)
    return studies


def conflicting_label_rows(corpus: Corpus, kind: str) -> dict:
    """A study's CheXpert row repeated at the end of the CSV with one label changed."""
    path = corpus.path("mimic", "mimic-cxr-2.0.0-chexpert.csv.gz")
    header, rows = read_csv(path)
    studies = _study_keys(corpus)
    listed = {row[header.index("study_id")] for row in rows}
    free = _fewest_images(
        studies, [s for s, keys in sorted(studies.items()) if s in listed and not corpus.used & set(keys)]
    )
    study = corpus.pick(kind, free)
    corpus.study_hit(studies[study])
    index = row_of(header, rows, "study_id", study)
    repeat = list(rows[index])
    edema = header.index("Edema")
    repeat[edema] = "0.0" if repeat[edema] == "1.0" else "1.0"
    write_csv(path, header, rows + [repeat])
    return fault(corpus, kind, path, sorted(studies[study]), row=index + 1)


def _vindr_train_box(corpus: Corpus, kind: str) -> tuple[str, Path, list[str], list[list[str]], int]:
    """A train image with a box row: its key, the boxes CSV, its header and rows, and the index of the
    image's first box row."""

    def first_box(key: str) -> tuple[Path, list[str], list[list[str]], int | None]:
        path, header, rows = _vindr_box_rows(corpus, key)
        image_id, x_min = header.index("image_id"), header.index("x_min")
        found = [i for i, row in enumerate(rows) if row[image_id] == _native(key) and row[x_min]]
        return path, header, rows, (found[0] if found else None)

    key = corpus.pick(
        kind, [k for k in corpus.of_source("vindr", lambda e: e["split"] == "train") if first_box(k)[3] is not None]
    )
    path, header, rows, index = first_box(key)
    assert index is not None  # picked among the images with a box row
    return key, path, header, rows, index


def blank_reader_id(corpus: Corpus, kind: str) -> dict:
    """A copy of one of a train image's box rows added with a blank rad_id (it would read as consensus)."""
    key, path, header, rows, index = _vindr_train_box(corpus, kind)
    copy = list(rows[index])
    copy[header.index("rad_id")] = ""
    write_csv(path, header, rows + [copy])
    return fault(corpus, kind, path, [key], row=len(rows) + 1)


def box_with_nan(corpus: Corpus, kind: str) -> dict:
    """A VinDr box row whose x_min is ``nan``."""
    key, path, header, rows, index = _vindr_train_box(corpus, kind)
    rows[index][header.index("x_min")] = "nan"
    write_csv(path, header, rows)
    return fault(corpus, kind, path, [key], row=index + 1)


def bad_image_label_value(corpus: Corpus, kind: str) -> dict:
    """A VinDr image-level label cell that says 2 (the cells are 0 or 1)."""
    key = corpus.pick(kind, corpus.of_source("vindr", lambda e: e["split"] == "train"))
    path = corpus.path("vindr", "annotations", "image_labels_train.csv")
    header, rows = read_csv(path)
    index = row_of(header, rows, "image_id", _native(key))
    rows[index][header.index("Cardiomegaly")] = "2"
    write_csv(path, header, rows)
    return fault(corpus, kind, path, [key], row=index + 1)


def zero_byte_dicom(corpus: Corpus, kind: str) -> dict:
    key = corpus.pick(kind, corpus.of_source("vindr"))
    path = vindr_image(corpus, key)
    path.write_bytes(b"")
    return fault(corpus, kind, path, [key])


def dicom_without_patient_id(corpus: Corpus, kind: str) -> dict:
    """A SIIM DICOM saved again without PatientID (the patient-wise split needs it)."""
    key = corpus.pick(kind, corpus.of_source("siim"))
    path = siim_image(corpus, key)
    dataset = pydicom.dcmread(path)
    del dataset.PatientID
    dataset.save_as(path, enforce_file_format=False)
    return fault(corpus, kind, path, [key])


def invalid_study_date(corpus: Corpus, kind: str) -> dict:
    """A PadChest StudyDate_DICOM of 31 February."""
    key = corpus.pick(kind, corpus.of_source("padchest"))
    path, header, rows = _padchest_rows(corpus)
    index = row_of(header, rows, "ImageID", _native(key))
    rows[index][header.index("StudyDate_DICOM")] = "20150231"
    write_csv(path, header, rows)
    return fault(corpus, kind, path, [key], row=index + 1)


def _chexmask_row(corpus: Corpus, kind: str) -> tuple[str, Path, list[str], list[list[str]], int]:
    key = corpus.pick(
        kind,
        [
            k
            for k, e in sorted(corpus.images.items())
            if (e.get("chexmask") or {}).get("passes") and e["source"] in CHEXMASK_FILES
        ],
    )
    stem, id_column = CHEXMASK_FILES[corpus.images[key]["source"]]
    (path,) = corpus.path("chexmask", "OriginalResolution").glob(f"{stem}.csv*")
    header, rows = read_csv(path)
    return key, path, header, rows, row_of(header, rows, id_column, _native(key))


def wrong_landmark_count(corpus: Corpus, kind: str) -> dict:
    """A CheXmask Landmarks cell with its last point lost (119 of the 120 points)."""
    key, path, header, rows, index = _chexmask_row(corpus, kind)
    landmarks = header.index("Landmarks")
    numbers = re.findall(r"-?\d+", rows[index][landmarks])
    rows[index][landmarks] = ",".join(numbers[:-2])
    write_csv(path, header, rows)
    return fault(corpus, kind, path, [key], row=index + 1)


def repeated_chexmask_row(corpus: Corpus, kind: str) -> dict:
    """A CheXmask row repeated at the end of its file (the first is read, the repeat rejected)."""
    key, path, header, rows, index = _chexmask_row(corpus, kind)
    write_csv(path, header, rows + [list(rows[index])])
    return fault(corpus, kind, path, [key], row=len(rows) + 1)


def _scene_graph(corpus: Corpus, kind: str, gold: bool = False) -> tuple[str, Path, dict]:
    """A scene graph's key, path and content; off the gold list unless ``gold`` (a fault that loses the
    whole graph may hit a gold image's too)."""
    key = corpus.pick(
        kind,
        corpus.of_source("mimic", lambda e: e.get("imagenome") and (gold or not e.get("imagenome_gold"))),
        share=True,
    )
    path = corpus.path("imagenome", "silver_dataset", "scene_graph", f"{_native(key)}_SceneGraph.json")
    return key, path, json.loads(path.read_text())


def scene_graph_not_json(corpus: Corpus, kind: str) -> dict:
    """A scene graph cut in half, as by an interrupted unzip."""
    key, path, _ = _scene_graph(corpus, kind, gold=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return fault(corpus, kind, path, [key])


def scene_graph_objects_not_a_list(corpus: Corpus, kind: str) -> dict:
    """A scene graph whose ``objects`` is one object instead of a list of them."""
    key, path, graph = _scene_graph(corpus, kind, gold=True)
    graph["objects"] = graph["objects"][0]
    output.write_text(path, json.dumps(graph, indent=1))
    return fault(corpus, kind, path, [key])


def region_name_not_a_string(corpus: Corpus, kind: str) -> dict:
    """A scene graph whose first ``attributes`` entry names its region with a list, not a string."""
    key, path, graph = _scene_graph(corpus, kind)
    entry = graph["attributes"][0]
    entry["bbox_name"] = [entry["bbox_name"]]
    output.write_text(path, json.dumps(graph, indent=1))
    return fault(corpus, kind, path, [key], where="attributes[0]")


# ---------------------------------------------------------------- reports


def _study_report(corpus: Corpus, kind: str) -> tuple[Path, list[str]]:
    """A MIMIC study with a report file and no image hit yet; its report path and image keys."""
    studies: dict[str, list[str]] = {}
    for key in corpus.of_source("mimic"):
        studies.setdefault(corpus.images[key]["study_id"], []).append(key)

    def report(study: str) -> Path:
        subject = corpus.images[studies[study][0]]["subject_id"]
        return corpus.path("mimic", "files", f"p{subject[:2]}", f"p{subject}", f"s{study}.txt")

    free = _fewest_images(
        studies, [s for s, keys in studies.items() if report(s).exists() and not corpus.used & set(keys)]
    )
    study = corpus.pick(kind, free)
    corpus.study_hit(studies[study])
    return report(study), sorted(studies[study])


def non_utf8_report(corpus: Corpus, kind: str) -> dict:
    path, keys = _study_report(corpus, kind)
    text = path.read_text(encoding="utf-8") + " Réévaluation demandée.\n"
    path.write_bytes(text.encode("latin-1", errors="replace"))
    return fault(corpus, kind, path, keys)


def empty_report(corpus: Corpus, kind: str) -> dict:
    path, keys = _study_report(corpus, kind)
    path.write_bytes(b"")
    return fault(corpus, kind, path, keys)


def oversized_report(corpus: Corpus, kind: str) -> dict:
    """A study report with 1.5 MB of repeated text added, as when a log is pasted into the report file."""
    path, keys = _study_report(corpus, kind)
    filler = "Comparison with the prior study shows no interval change. " * 26000
    output.write_text(path, path.read_text(encoding="utf-8") + filler)
    return fault(corpus, kind, path, keys)


# ---------------------------------------------------------------- VQA question files


def _vqa_question(corpus: Corpus, kind: str) -> tuple[str, dict]:
    """A MIMIC-CXR-VQA question the build keeps (its file and its row as written)."""
    kept = {f"{q['file']}#{q['idx']}": q for q in corpus.questions.get("mimic_cxr_vqa", []) if q["expected"] is None}
    question = kept[corpus.pick(kind, sorted(kept))]
    rows = json.loads(corpus.path("mimic_cxr_vqa", question["file"]).read_text())
    return question["file"], rows[question["idx"]]


def _append_vqa_row(corpus: Corpus, kind: str, name: str, row: dict) -> dict:
    """``row`` added at the end of ``dataset/<name>.json`` with the next idx."""
    path = corpus.path("mimic_cxr_vqa", "dataset", f"{name}.json")
    rows = json.loads(path.read_text())
    rows.append({**row, "idx": len(rows)})
    output.write_text(path, vqa_datasets.dump_questions(rows))
    return fault(corpus, kind, path, [f"mimic/{row['image_id']}"], where=f"#{len(rows) - 1}")


def vqa_question_without_answer(corpus: Corpus, kind: str) -> dict:
    """A copy of a MIMIC-CXR-VQA question added to its file without its ``answer`` key."""
    file, row = _vqa_question(corpus, kind)
    copy = {key: value for key, value in row.items() if key != "answer"}
    return _append_vqa_row(corpus, kind, Path(file).stem, copy)


def vqa_question_in_another_split_file(corpus: Corpus, kind: str) -> dict:
    """A copy of a MIMIC-CXR-VQA question added to the next split's file, its ``split`` unchanged."""
    file, row = _vqa_question(corpus, kind)
    names = vqa_datasets.VQA_SPLIT_FILES
    other = names[(names.index(Path(file).stem) + 1) % len(names)]
    return _append_vqa_row(corpus, kind, other, row)


def _diff_question(corpus: Corpus, kind: str) -> tuple[Path, list[str], list[list[str]], list[str]]:
    """The Diff-VQA question file (path, header, rows) and a copy of one question row the build keeps."""
    path = corpus.path("mimic_diff_vqa", vqa_datasets.QUESTIONS_FILE)
    header, rows = read_csv(path)
    kept = [str(q["row"]) for q in corpus.questions.get("mimic_diff_vqa", []) if q["expected"] is None]
    return path, header, rows, list(rows[int(corpus.pick(kind, kept)) - 1])


def _append_diff_question(corpus: Corpus, kind: str, column: str, value: str) -> dict:
    """A copy of a Diff-VQA question row added at the end with ``column`` set to ``value``."""
    path, header, rows, copy = _diff_question(corpus, kind)
    copy[header.index(column)] = value
    write_csv(path, header, rows + [copy])
    return fault(corpus, kind, path, [f"mimic/s{copy[header.index('study_id')]}"], row=len(rows) + 1)


def _unused_number(corpus: Corpus, kind: str, low: int, taken: set[str]) -> str:
    """A number in ``[low, low + 10**7)`` that is not in ``taken``, from a hash of (seed, kind)."""
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{corpus.seed}|{kind}|{attempt}".encode()).hexdigest()
        value = str(low + int(digest, 16) % 10_000_000)
        if value not in taken:
            return value
        attempt += 1


def diff_question_study_not_in_mimic_all(corpus: Corpus, kind: str) -> dict:
    """A copy of a Diff-VQA question whose study_id is one mimic_all.csv does not list."""
    header, rows = read_csv(corpus.path("mimic_diff_vqa", vqa_datasets.STUDIES_FILE))
    listed = {row[header.index("study_id")] for row in rows}
    return _append_diff_question(corpus, kind, "study_id", _unused_number(corpus, kind, 50_000_000, listed))


def diff_question_of_another_subject(corpus: Corpus, kind: str) -> dict:
    """A copy of a Diff-VQA question naming a subject that is not its study's."""
    subjects = {entry["subject_id"] for entry in corpus.images.values() if entry["source"] == "mimic"}
    return _append_diff_question(corpus, kind, "subject_id", _unused_number(corpus, kind, 10_000_000, subjects))


def diff_question_of_unknown_type(corpus: Corpus, kind: str) -> dict:
    """A copy of a Diff-VQA question whose question_type is none of the seven."""
    return _append_diff_question(corpus, kind, "question_type", "comparison")


def repeated_mimic_all_row(corpus: Corpus, kind: str) -> dict:
    """A mimic_all.csv row of a study the questions use, repeated at the end (the first row is kept)."""
    path = corpus.path("mimic_diff_vqa", vqa_datasets.STUDIES_FILE)
    header, rows = read_csv(path)
    used = {q[name] for q in corpus.questions.get("mimic_diff_vqa", []) for name in ("study_id", "ref_id")}
    index = row_of(header, rows, "study_id", corpus.pick(kind, sorted(used)))
    write_csv(path, header, rows + [list(rows[index])])
    return fault(corpus, kind, path, [f"mimic/{rows[index][header.index('dicom_id')]}"], row=len(rows) + 1)


INJECTORS: dict[str, Callable[[Corpus, str], dict]] = {
    # the most constrained victims first (whole studies, whose images a scene-graph fault may share;
    # scene graphs off the gold list, then any; CheXmask rows that pass), so a small corpus still has
    # one for every kind
    "non-utf8-report": non_utf8_report,
    "empty-report": empty_report,
    "oversized-report": oversized_report,
    "conflicting-label-rows": conflicting_label_rows,
    "zero-area-box": zero_area_box,
    "negative-box": negative_box,
    "region-name-not-a-string": region_name_not_a_string,
    "scene-graph-not-json": scene_graph_not_json,
    "scene-graph-objects-not-a-list": scene_graph_objects_not_a_list,
    "malformed-rle-chexmask": malformed_rle_chexmask,
    "wrong-landmark-count": wrong_landmark_count,
    "repeated-chexmask-row": repeated_chexmask_row,
    "blank-reader-id": blank_reader_id,
    "box-with-nan": box_with_nan,
    "bad-image-label-value": bad_image_label_value,
    "box-outside-image": box_outside_image,
    "bad-16bit-png-header": bad_16bit_png_header,
    "truncated-dicom": truncated_dicom,
    "csv-missing-columns": csv_missing_columns,
    "dicom-without-pixel-data": dicom_without_pixel_data,
    "missing-image": missing_image,
    "wrong-transfer-syntax": wrong_transfer_syntax,
    "malformed-rle-siim": malformed_rle_siim,
    "rle-past-image-end": rle_past_image_end,
    "zero-byte-png": zero_byte_png,
    "unparseable-label-list": unparseable_label_list,
    "duplicate-id": duplicate_id,
    "study-time-not-a-time": study_time_not_a_time,
    "zero-byte-dicom": zero_byte_dicom,
    "dicom-without-patient-id": dicom_without_patient_id,
    "invalid-study-date": invalid_study_date,
    "vqa-question-without-answer": vqa_question_without_answer,
    "vqa-question-in-another-split-file": vqa_question_in_another_split_file,
    "diff-question-study-not-in-mimic-all": diff_question_study_not_in_mimic_all,
    "diff-question-of-another-subject": diff_question_of_another_subject,
    "diff-question-of-unknown-type": diff_question_of_unknown_type,
    "repeated-mimic-all-row": repeated_mimic_all_row,
}


def inject(out: Path, roots: dict[str, str], images: dict[str, dict], seed: int, questions: dict | None = None) -> dict:
    """Plant one fault of every kind in ``manifests/faults.yaml`` into the clean corpus at ``out``;
    returns ``{"faults": [...], "faulted": {"images": [...], "annotations": [...]}}`` for the truth file.
    ``questions``: the truth's ``mimic_cxr_vqa`` and ``mimic_diff_vqa`` sections (the VQA faults copy
    their rows)."""
    unknown = sorted(set(KINDS) ^ set(INJECTORS))
    if unknown:
        raise KeyError(f"fault kinds without an injector or without a manifest entry: {unknown}")
    questions = {source: (questions or {}).get(source, {}).get("questions", []) for source in VQA_SOURCES}
    corpus = Corpus(out=Path(out), roots=roots, images=images, seed=seed, questions=questions)
    faults = sorted((INJECTORS[kind](corpus, kind) for kind in INJECTORS), key=lambda f: f["kind"])
    lost_images = sorted({f["key"] for f in faults if f["loses"] == "image"})
    lost_annotations = {f"{f['source']}:{f['key']}" for f in faults if f["loses"] == "annotation"}
    asked = {
        source: {image for q in rows for image in (q["image"], q.get("reference_image")) if image}
        for source, rows in questions.items()
    }
    for key in lost_images:  # CheXmask rows, scene graphs and questions cannot outlive their image
        entry = images[key]
        if entry.get("chexmask") is not None:
            lost_annotations.add(f"chexmask:{key}")
        if entry.get("imagenome"):
            lost_annotations.add(f"imagenome:{key}")
        lost_annotations.update(f"{source}:{key}" for source in VQA_SOURCES if key in asked[source])
    return {"faults": faults, "faulted": {"images": lost_images, "annotations": sorted(lost_annotations)}}
