"""Which split a scene belongs to: decided by a hash of what the picture shows.

``content`` (objects, positions, texts, values) fixes the picture up to nuisance (background, noise),
so two samples with the same picture always land in the same split and train/val/test can never
share an image, nor an (image, question) pair, whatever the seeds. ``test-ood`` needs no hash: its
scenes contain a held-out feature that train/val/test never draw (see ``vocab.py`` and each family).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Percent of the hash space per in-distribution split.
SHARES: tuple[tuple[str, int], ...] = (("train", 80), ("val", 10), ("test", 10))


def scene_hash(content: dict[str, Any]) -> str:
    """16 hex digits of BLAKE2b over the canonical JSON of ``content``."""
    key = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def split_of(content: dict[str, Any]) -> str:
    """``train`` / ``val`` / ``test`` for an in-distribution scene."""
    bucket = int(scene_hash(content), 16) % 100
    for name, share in SHARES:
        if bucket < share:
            return name
        bucket -= share
    raise AssertionError("SHARES must add up to 100")
