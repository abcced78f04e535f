"""Data, not code: label maps, templates, profiles, split ratios. ``load`` reads one YAML file."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

MANIFEST_DIR = Path(__file__).resolve().parent


@cache
def load(relative_path: str) -> Any:
    """Parsed YAML of ``manifests/<relative_path>`` (cached; treat the result as read-only)."""
    path = MANIFEST_DIR / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"manifest {relative_path!r} not found under {MANIFEST_DIR}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))
