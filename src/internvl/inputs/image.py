"""From an image file to InternVL tiles: safe loading, dynamic high-resolution tiling, normalisation.

The pipeline reproduces the official one (docs/images-and-video.md) pixel for pixel:

    file --load_image--> RGB PIL image --split_into_tiles--> PIL tiles (grid in raster order,
    thumbnail last when >1 tile) --tiles_to_tensor--> (tiles, 3, S, S) float32, normalised

`image_to_tiles` runs all three. The tile size S (448 for every released model) is a parameter.
"""

import io
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from PIL import Image

from internvl.errors import InputError

Normalization = Literal["imagenet", "clip", "siglip"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.4814546, 0.4578275, 0.40821073)
CLIP_STD = (0.2686295, 0.2613025, 0.2757711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

# The official `normalize_type` values; every released model uses "imagenet".
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "clip": (CLIP_MEAN, CLIP_STD),
    "siglip": (SIGLIP_MEAN, SIGLIP_STD),
}

DEFAULT_TILE_SIZE = 448
# The largest image PIL opens with its default settings (beyond 2 * PIL.Image.MAX_IMAGE_PIXELS it
# raises DecompressionBombError), i.e. what the official inference code (`Image.open`) accepts.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

ImageSource = str | os.PathLike[str] | bytes | Image.Image


# ---------------------------------------------------------------------------------------- loading


def load_image(
    source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None
) -> Image.Image:
    """Open `source` (a path, encoded bytes or a PIL image) as a fully decoded RGB image.

    Every failure is an `InputError` whose one-line message starts with the file name (or `name`):
    missing or empty file, not an image, truncated data, more than `max_pixels` pixels (checked from
    the header, before anything is decoded; None = no limit of ours). PIL keeps its own global guard
    (`PIL.Image.MAX_IMAGE_PIXELS`, twice which it refuses): raise that too for larger limits.

    Conversion to RGB is `PIL.Image.convert("RGB")`, as in the official code, with its consequences:
    * RGBA / LA / PA and palette transparency: alpha is dropped, not composited (the colours stored
      under transparent pixels show, often black);
    * P (palette) and 1 (bilevel): looked up / expanded to RGB;
    * CMYK: PIL's plain formula, no ICC colour management (same for every embedded ICC profile);
    * 16-bit grey (I;16, I) and float (F): values are clipped to 0..255, NOT rescaled, so a typical
      16-bit image comes out nearly white — faithful to the official pipeline, on purpose;
      16-bit RGB PNGs are reduced to 8 bits by PIL when decoding (high byte), which is fine;
    * animated GIF/PNG/WebP: the first frame;
    * EXIF orientation is ignored (the official code does not apply it either).
    Truncated files are an error here, whereas official training sets `LOAD_TRUNCATED_IMAGES=True`
    (and `MAX_IMAGE_PIXELS=None`) globally and silently uses whatever part decodes: we prefer to say so.
    """
    if isinstance(source, Image.Image):
        label = name or "<PIL image>"
        _check_pixels(label, source.size, max_pixels)
        return _to_rgb(label, source)
    if isinstance(source, bytes):
        label = name or "<image bytes>"
        if not source:
            raise InputError(f"{label}: empty data (0 bytes), not an image")
        return _decode(label, io.BytesIO(source), max_pixels)
    label = name or os.fspath(source)
    if not os.path.exists(source):
        raise InputError(f"{label}: no such image file")
    if os.path.isdir(source):
        raise InputError(f"{label}: is a directory, not an image file")
    if os.path.getsize(source) == 0:
        raise InputError(f"{label}: empty file (0 bytes), not an image")
    return _decode(label, source, max_pixels)


def _decode(label: str, fp: str | os.PathLike[str] | io.BytesIO, max_pixels: int | None) -> Image.Image:
    try:
        with Image.open(fp) as image:  # reads the header only
            _check_pixels(label, image.size, max_pixels)
            image.load()  # decodes the first frame; raises on truncated data
            return _to_rgb(label, image)
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(
            f"{label}: exceeds PIL's pixel limit, a possible decompression bomb ({e}); if the image is trusted, "
            "raise PIL.Image.MAX_IMAGE_PIXELS and max_pixels"
        ) from e
    except Image.UnidentifiedImageError as e:
        raise InputError(f"{label}: not an image file PIL can read") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{label}: cannot decode image (truncated or corrupt: {reason})") from e


def _check_pixels(label: str, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"{label}: image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(
            f"{label}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(possible decompression bomb; raise max_pixels if the image is trusted)"
        )


def _to_rgb(label: str, image: Image.Image) -> Image.Image:
    try:
        return image.convert("RGB")  # a copy even when already RGB, detached from the file
    except (OSError, ValueError) as e:
        raise InputError(f"{label}: cannot convert mode {image.mode} to RGB ({e})") from e


# ---------------------------------------------------------------------------------------- tiling


@lru_cache(maxsize=64)
def candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """All (cols, rows) grids with min_tiles <= cols*rows <= max_tiles, in the official order.

    The official code builds a Python `set` and sorts it by tile count; the order among grids with
    the same count is CPython's set iteration order, which matters when two such grids tie exactly
    (`choose_grid`). We build the very same set with the same insertion sequence, so the order is the
    same (tuple-of-int hashes are not randomised by PYTHONHASHSEED).
    """
    _check_tile_budget(min_tiles, max_tiles)
    grids = set(
        (i, j)
        for n in range(min_tiles, max_tiles + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_tiles and i * j >= min_tiles
    )
    return tuple(sorted(grids, key=lambda grid: grid[0] * grid[1]))


def choose_grid(
    width: int, height: int, *, min_tiles: int = 1, max_tiles: int = 12, tile_size: int = DEFAULT_TILE_SIZE
) -> tuple[int, int]:
    """The (cols, rows) grid the official `find_closest_aspect_ratio` picks for a width x height image.

    The grid whose cols/rows is closest to width/height wins; on an exact tie the later candidate
    (more tiles) wins only while the image area exceeds half of its canvas (docs/images-and-video.md#dynamic-tiling). Small images
    can therefore be upscaled onto many tiles (300x200 -> 3x2).
    """
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def count_tiles(
    width: int,
    height: int,
    *,
    min_tiles: int = 1,
    max_tiles: int = 12,
    tile_size: int = DEFAULT_TILE_SIZE,
    use_thumbnail: bool = True,
) -> int:
    """How many tiles `split_into_tiles` makes for a width x height image, without touching pixels."""
    cols, rows = choose_grid(width, height, min_tiles=min_tiles, max_tiles=max_tiles, tile_size=tile_size)
    n = cols * rows
    return n + 1 if use_thumbnail and n > 1 else n


def split_into_tiles(
    image: Image.Image,
    *,
    min_tiles: int = 1,
    max_tiles: int = 12,
    tile_size: int = DEFAULT_TILE_SIZE,
    use_thumbnail: bool = True,
) -> list[Image.Image]:
    """Official `dynamic_preprocess`: resize onto the chosen grid, cut it in raster order, and add a
    whole-image thumbnail as the LAST tile when there is more than one tile.

    Both resizes are PIL bicubic (PIL's default for RGB, made explicit); the thumbnail is resized
    from the original image, not from the grid canvas. `max_tiles` does not count the thumbnail.
    """
    if image.mode != "RGB":
        raise InputError(f"split_into_tiles needs an RGB image, got mode {image.mode}: use load_image first")
    width, height = image.size
    cols, rows = choose_grid(width, height, min_tiles=min_tiles, max_tiles=max_tiles, tile_size=tile_size)
    canvas = image.resize((tile_size * cols, tile_size * rows), Image.Resampling.BICUBIC)
    tiles = []
    for k in range(cols * rows):
        left, top = (k % cols) * tile_size, (k // cols) * tile_size
        tiles.append(canvas.crop((left, top, left + tile_size, top + tile_size)))
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((tile_size, tile_size), Image.Resampling.BICUBIC))
    return tiles


def _check_tile_budget(min_tiles: int, max_tiles: int) -> None:
    if not (isinstance(min_tiles, int) and isinstance(max_tiles, int)) or not 1 <= min_tiles <= max_tiles:
        raise InputError(f"tile budget must satisfy 1 <= min_tiles <= max_tiles, got min={min_tiles} max={max_tiles}")


# ---------------------------------------------------------------------------------------- tensors


def tiles_to_tensor(tiles: Sequence[Image.Image], normalize: Normalization = "imagenet") -> torch.Tensor:
    """Stack RGB tiles into a normalised (tiles, 3, S, S) float32 tensor.

    Same arithmetic as the official torchvision `ToTensor()` + `Normalize(mean, std)` (uint8 -> /255
    in float32, then (x - mean) / std in float32), so the result is bit-identical. The official
    per-tile `Resize((S, S))` is a no-op on S x S tiles and is skipped.
    """
    if normalize not in NORMALIZATIONS:
        raise InputError(f"unknown normalisation {normalize!r}; known: {', '.join(NORMALIZATIONS)}")
    if not tiles:
        raise InputError("no tiles to stack")
    mean, std = NORMALIZATIONS[normalize]
    pixels = torch.from_numpy(np.stack([np.asarray(tile, dtype=np.uint8) for tile in tiles]))  # (T, S, S, 3)
    x = pixels.permute(0, 3, 1, 2).to(torch.float32).div(255)  # (T, 3, S, S) in [0, 1]
    mean_t = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return x.sub(mean_t).div(std_t).contiguous()


def image_to_tiles(
    source: ImageSource,
    *,
    min_tiles: int = 1,
    max_tiles: int = 12,
    tile_size: int = DEFAULT_TILE_SIZE,
    use_thumbnail: bool = True,
    normalize: Normalization = "imagenet",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Load, tile and normalise one image: (tiles, 3, tile_size, tile_size) float32.

    Official inference defaults: 1..12 tiles + thumbnail, 448 px, ImageNet statistics.
    """
    image = load_image(source, max_pixels=max_pixels)
    tiles = split_into_tiles(
        image, min_tiles=min_tiles, max_tiles=max_tiles, tile_size=tile_size, use_thumbnail=use_thumbnail
    )
    return tiles_to_tensor(tiles, normalize)


def dummy_tile(
    tile_size: int = DEFAULT_TILE_SIZE,
    normalize: Normalization = "imagenet",
    *,
    fill: Literal["white", "zeros"] = "white",
) -> torch.Tensor:
    """The one placeholder tile fed with text-only training samples (with image flag 0): (1, 3, S, S).

    "white" is the official training recipe (a white 224x224 image through the tiling with one tile,
    i.e. (1 - mean) / std per channel). "zeros" is an all-zero tensor, which is what the official
    reference fixture `text_only_dummy_tile.pixel_values` holds. The values never reach the language
    model (flag-0 tiles are dropped after the vision encoder), so either gives identical logits.
    """
    if fill == "zeros":
        return torch.zeros(1, 3, tile_size, tile_size, dtype=torch.float32)
    white = Image.new("RGB", (224, 224), (255, 255, 255))
    return tiles_to_tensor(split_into_tiles(white, max_tiles=1, tile_size=tile_size), normalize)
