"""The task families, by name. Each module defines ``FAMILY`` (see ``base.Family``)."""

from __future__ import annotations

from internvl.data.world.families import (
    charts,
    counting,
    detail,
    grounding,
    multi_image,
    needle,
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
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)  # the default mix of `world generate` and `export-tsv`
# Long multimodal contexts (V2PE): generated only when named with --families.
LONG_CONTEXT_FAMILIES: dict[str, Family] = {
    f.name: f for f in (needle.FAMILY, *needle.LONGER, needle.COLOUR, *needle.COLOUR_LONGER)
}
FAMILIES.update(LONG_CONTEXT_FAMILIES)
ALL_FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)

__all__ = ["ALL_FAMILY_NAMES", "FAMILIES", "FAMILY_NAMES", "LONG_CONTEXT_FAMILIES", "Family", "Scene"]
