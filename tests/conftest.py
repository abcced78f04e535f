"""Test-wide settings. In CI, property tests draw the same examples on every run (derandomized), so
a landing is never decided by a new random draw; locally they explore fresh examples each run. No
test looks for Google credentials."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Nothing in the tests may reach Google: google-auth would otherwise probe the GCE metadata server
# (169.254.169.254) when it looks for credentials (the gs:// tests use a local emulator).
os.environ.setdefault("NO_GCE_CHECK", "true")


@pytest.fixture
def unreadable_folder(monkeypatch):
    """``unreadable_folder(path)``: from then on, listing ``path`` fails as it does for a folder without
    read permission. The tests run as root, who may list any folder, so the failure is simulated where
    a walk meets it (``os.scandir``)."""
    refused: set[Path] = set()
    scandir = os.scandir

    def guarded(path="."):
        if isinstance(path, (str, os.PathLike)) and Path(path) in refused:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)
    return refused.add
