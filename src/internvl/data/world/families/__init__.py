"""The task families, by name. Each module defines ``FAMILY`` (see ``base.Family``)."""

from __future__ import annotations

from internvl.data.world.families import (
    charts,
    counting,
    detail,
    grounding,
    multi_image,
    reading,
    reasoning,
    recognition,
    spatial,
    video,
)
from internvl.data.world.families.base import Family, Scene

FAMILIES: dict[str, Family] = {
    m.FAMILY.name: m.FAMILY
    for m in (recognition, counting, spatial, reading, charts, detail, multi_image, video, grounding, reasoning)
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)

__all__ = ["FAMILIES", "FAMILY_NAMES", "Family", "Scene"]
