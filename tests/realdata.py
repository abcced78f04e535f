"""Real files read at test time, never committed: the torchxrayvision 1.5.7 wheel's label files and
the reference samples beside the repository (``../shared/reference``).

``make test`` downloads the wheel (``pip download --no-deps torchxrayvision==1.5.7``) and points
``TORCHXRAYVISION_WHEEL`` at it; without it the real-data tests skip with that message.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

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
