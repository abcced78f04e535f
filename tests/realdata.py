"""Real files read at test time, never committed: the torchxrayvision 1.5.7 wheel's label files and
the reference samples beside the repository (``../shared/reference``).

``make test`` downloads the wheel (``pip download --no-deps torchxrayvision==1.5.7``) and points
``TORCHXRAYVISION_WHEEL`` at it; without it the real-data tests skip with that message.
"""

from __future__ import annotations

import csv
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def wheel_member(name: str, target: Path) -> Path:
    """Extract ``torchxrayvision/data/<name>`` from the wheel to ``target`` (skips the test without it)."""
    wheel = os.environ.get("TORCHXRAYVISION_WHEEL")
    if not wheel or not Path(wheel).is_file():
        pytest.skip("TORCHXRAYVISION_WHEEL is not set to the torchxrayvision 1.5.7 wheel (pip download --no-deps)")
    with zipfile.ZipFile(wheel) as archive:
        target.write_bytes(archive.read(f"torchxrayvision/data/{name}"))
    return target


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
            reports.append(IUReport(id=int(member.name.rsplit("/", 1)[-1][:-4]), findings=texts.get("FINDINGS"),
                                    impression=texts.get("IMPRESSION"), comparison=texts.get("COMPARISON"),
                                    indication=texts.get("INDICATION"), mesh_major=major))
    return sorted(reports, key=lambda r: r.id)


def negbio_openi_development_gold() -> dict[int, dict[str, int]]:
    """NegBio's OpenI gold labels (ChestX-ray14 names + ``normal``) for even ids only."""
    gold = {}
    with (REFERENCE / "reports" / "negbio_openi_gld_std14.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if is_development_id(row["filename"]):
                gold[int(row["filename"][3:])] = {k: int(v) for k, v in row.items() if k != "filename"}
    return gold
