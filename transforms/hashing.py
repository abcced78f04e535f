"""Stable hashes: every random choice and every shard assignment derives from these.

Python's ``hash()`` is salted per process, so it never appears in this project's outputs.
"""

from __future__ import annotations

import hashlib
import random

_SEPARATOR = "\x1f"


def stable_hash(*parts: object) -> int:
    """A 64-bit integer from the SHA-256 of the parts' string forms."""
    text = _SEPARATOR.join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def stable_fraction(*parts: object) -> float:
    """A float in [0, 1), uniform over keys."""
    return stable_hash(*parts) / 2**64


def seeded_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded from the parts (e.g. record key, template version, build seed)."""
    return random.Random(stable_hash(*parts))


def shard_of(key: str, num_shards: int) -> int:
    return stable_hash("shard", key) % num_shards
