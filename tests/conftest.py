"""Test-wide settings. In CI, property tests draw the same examples on every run (derandomized), so
a landing is never decided by a new random draw; locally they explore fresh examples each run."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
