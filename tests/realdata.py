"""Real data for the tests: small freely licensed files committed under ``tests/data/`` (each folder's
``SOURCES.md`` names origin and licence), and label files read at test time from the torchxrayvision
1.5.7 wheel, never copied into the repository (PadChest, SIIM and VinDr-Kaggle rows, IU X-ray reports).

``make test`` downloads the wheel (``pip download --no-deps torchxrayvision==1.5.7``) and points
``TORCHXRAYVISION_WHEEL`` at it; without it the tests that need it skip with that message.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

DATA = Path(__file__).resolve().parent / "data"


def wheel_path() -> Path:
    """The torchxrayvision 1.5.7 wheel named by ``TORCHXRAYVISION_WHEEL`` (skips the test without it)."""
    wheel = os.environ.get("TORCHXRAYVISION_WHEEL")
    if not wheel or not Path(wheel).is_file():
        pytest.skip("TORCHXRAYVISION_WHEEL is not set to the torchxrayvision 1.5.7 wheel (pip download --no-deps)")
    return Path(wheel)


def wheel_bytes(member: str) -> bytes:
    """The bytes of ``member`` (a path inside the wheel, e.g. ``torchxrayvision/datasets.py``)."""
    with zipfile.ZipFile(wheel_path()) as archive:
        return archive.read(member)


def wheel_member(name: str, target: Path) -> Path:
    """Extract ``torchxrayvision/data/<name>`` from the wheel to ``target`` (skips the test without it)."""
    target.write_bytes(wheel_bytes(f"torchxrayvision/data/{name}"))
    return target


def wheel_csv_text(name: str) -> str:
    """The text of the gzipped CSV ``torchxrayvision/data/<name>`` (read in memory, never written out)."""
    return gzip.decompress(wheel_bytes(f"torchxrayvision/data/{name}")).decode("utf-8")


def vindr_kaggle_rows(image_ids: set[str] | None = None) -> list[dict[str, str]]:
    """Rows of the VinBigData (Kaggle) ``train.csv`` copy in the wheel, in file order, as strings;
    only the rows of ``image_ids`` when given."""
    rows = csv.DictReader(io.StringIO(wheel_csv_text("vinbigdata-train.csv.gz"), newline=""))
    return [row for row in rows if image_ids is None or row["image_id"] in image_ids]


def siim_rle_lines() -> tuple[str, list[tuple[str, str]]]:
    """The SIIM ``train-rle.csv`` copy in the wheel: its header line and ``(ImageId, EncodedPixels)`` per
    line, exactly as written (that copy has ``' EncodedPixels'`` in the header, no space before values)."""
    header, *lines = wheel_csv_text("siim-pneumothorax-train-rle.csv.gz").splitlines()
    return header, [tuple(line.split(",", 1)) for line in lines if line]


def padchest_missing_image_ids() -> list[str]:
    """The ImageIDs torchxrayvision's ``PC_Dataset`` drops as missing or broken PNGs (the ``missing`` list
    in the wheel's ``torchxrayvision/datasets.py``), read from the source without importing it."""
    tree = ast.parse(wheel_bytes("torchxrayvision/datasets.py").decode("utf-8"))
    dataset = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "PC_Dataset")
    for node in ast.walk(dataset):
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["missing"]:
            return [ast.literal_eval(element) for element in node.value.elts]
    raise AssertionError("PC_Dataset in the wheel has no 'missing' list")


# ---------------------------------------------------------------- IU X-ray (Open-i) reports
# The even/odd rule: development and tuning use only reports whose numeric id is EVEN; odd ids are
# reserved for independent evaluation and are never read by this project. Every development test
# reads IU text and NegBio gold labels through the two functions below, which enforce it.


def is_development_id(report_id: str | int) -> bool:
    """True for even numeric ids (``"CXR12"``, ``"ecgen-radiology/12.xml"``, ``12``)."""
    digits = "".join(ch for ch in str(report_id).rsplit("/", 1)[-1] if ch.isdigit())
    if not digits:
        raise ValueError(f"no numeric id in {report_id!r}")
    return int(digits) % 2 == 0


@dataclass(frozen=True)
class IUReport:
    id: int
    findings: str | None
    impression: str | None
    comparison: str | None
    indication: str | None
    mesh_major: tuple[str, ...]  # human-coded MeSH terms, e.g. "Opacity/lung/base/left/mild"


def iu_development_reports(tmp_dir: Path) -> list[IUReport]:
    """The even-id IU X-ray reports (CC BY-NC-ND 4.0: read in memory, never edited or copied)."""
    archive_path = wheel_member("NLMCXR_reports.tgz", tmp_dir / "NLMCXR_reports.tgz")
    reports = []
    with tarfile.open(archive_path) as archive:
        for member in archive.getmembers():
            if not member.name.endswith(".xml") or not is_development_id(member.name):
                continue
            root = ElementTree.fromstring(archive.extractfile(member).read())
            texts = {node.get("Label"): (node.text or None) for node in root.iter("AbstractText")}
            major = tuple(node.text for node in root.iter("major") if node.text)
            reports.append(
                IUReport(
                    id=int(member.name.rsplit("/", 1)[-1][:-4]),
                    findings=texts.get("FINDINGS"),
                    impression=texts.get("IMPRESSION"),
                    comparison=texts.get("COMPARISON"),
                    indication=texts.get("INDICATION"),
                    mesh_major=major,
                )
            )
    return sorted(reports, key=lambda r: r.id)


def negbio_openi_development_gold() -> dict[int, dict[str, int]]:
    """NegBio's OpenI gold labels (ChestX-ray14 names + ``normal``) for even ids only (the committed copy
    holds no others; the filter stays as a second guard)."""
    gold = {}
    with (DATA / "reports" / "negbio_openi_gld_std14_even_ids.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if is_development_id(row["filename"]):
                gold[int(row["filename"][3:])] = {k: int(v) for k, v in row.items() if k != "filename"}
    return gold
