"""The detail family needs dynamic tiling: its answer vanishes when the canvas is squeezed to one tile.

Checked through the project's own tiling (``internvl.inputs.image``, docs/images-and-video.md#dynamic-tiling): the native tiles
keep the detail, the thumbnail tile (what a single-tile model sees) does not.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image, ImageDraw

from internvl.data.world.families import detail
from internvl.data.world.generate import generate_sample, sample_rng
from internvl.data.world.render import TILE, font
from internvl.inputs.image import choose_grid, split_into_tiles


@pytest.mark.parametrize("canvas", [*detail.CANVASES, detail.OOD_CANVAS])
def test_tiling_keeps_native_pixels_within_the_declared_budget(canvas):
    width, height = canvas
    cols, rows = choose_grid(width, height, max_tiles=detail.MAX_DYNAMIC_PATCH)
    assert (cols * TILE, rows * TILE) == (width, height)  # tiles are crops, not resizes
    assert cols * rows <= detail.MAX_DYNAMIC_PATCH


def _pattern_scenes(n: int):
    found = []
    for k in range(200):
        scene = detail.draw(sample_rng(0, "train", "detail", k), ood=k % 3 == 0)
        if scene.content["items"][0]["kind"] == "pattern":
            found.append(scene)
        if len(found) == n:
            return found
    raise AssertionError("not enough pattern scenes")


def test_pattern_is_unmistakable_in_tiles_and_gone_in_the_thumbnail():
    """Render one scene with each of the three textures and tile it as the model would. In the native
    tiles the alternatives differ by ~100 grey levels over half the patch; in the thumbnail tile (the
    whole canvas squeezed to 448x448) by at most 20 levels anywhere, about the background noise."""
    for scene in _pattern_scenes(12):
        t = scene.task["target"]
        tiles, thumbs = [], []
        for name in detail.PATTERN_NAMES:
            content = copy.deepcopy(scene.content)
            content["items"][t]["pattern"] = name
            image = detail.render(content, scene.style)
            *native, thumb = split_into_tiles(image, max_tiles=detail.MAX_DYNAMIC_PATCH)
            assert native[0].tobytes() == image.crop((0, 0, TILE, TILE)).tobytes()  # native pixels
            assert thumb.tobytes() == split_into_tiles(image, max_tiles=1)[0].tobytes()  # = the single-tile view
            tiles.append(np.stack([np.asarray(tile, dtype=np.int16) for tile in native]))
            thumbs.append(np.asarray(thumb, dtype=np.int16))
        for i in range(3):
            for j in range(i + 1, 3):
                strong = (np.abs(tiles[i] - tiles[j]).max(axis=-1) >= 90).sum()
                assert strong >= detail.PATCH**2 // 2, scene.content["canvas"]
                assert np.abs(thumbs[i] - thumbs[j]).max() <= 20, scene.content["canvas"]


def test_tag_digits_are_legible_in_tiles_and_a_few_pixels_in_the_thumbnail():
    for width, height in [*detail.CANVASES, detail.OOD_CANVAS]:
        size = detail.tag_font_size(width)
        sx, sy = width / TILE, height / TILE  # the thumbnail's squeeze per axis
        for digit in "0123456789":
            probe = Image.new("L", (40, 40), 255)
            ImageDraw.Draw(probe).text((5, 5), digit, fill=0, font=font(size))
            ink = np.argwhere(np.asarray(probe) < 128)
            glyph_h = ink[:, 0].max() - ink[:, 0].min() + 1
            glyph_w = ink[:, 1].max() - ink[:, 1].min() + 1
            assert glyph_h >= 8  # in a native tile: an 8-9 px tall digit
            assert glyph_w / sx <= 3.5 and glyph_h / sy <= 9  # in the thumbnail: at most 3.5 px wide


def test_detail_samples_declare_the_tile_budget_and_stay_inside_one_tile():
    for k in range(10):
        s = generate_sample("detail", "train", k)
        assert s.max_dynamic_patch == detail.MAX_DYNAMIC_PATCH
        assert s.images[0].size in detail.CANVASES
        for item in s.meta["items"]:  # never cut by a tile edge
            assert item["x"] // TILE == (item["x"] + item["w"] - 1) // TILE
            assert item["y"] // TILE == (item["y"] + item["h"] - 1) // TILE
