"""Which views show the patient's left and right apart (``manifests/views.yaml``)."""

from __future__ import annotations

import manifests

FRONTAL: frozenset[str] = frozenset(manifests.load("views.yaml")["frontal"])


def is_frontal(view: str | None) -> bool:
    """True for a frontal view, where left, right and location are defined; False for lateral,
    oblique, unknown (None) and unlisted views."""
    return view in FRONTAL
