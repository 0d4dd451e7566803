"""Image loading, dynamic tiling and normalisation (docs/images-and-video.md) against independent references:
the official algorithm's test vectors, a literal re-implementation of the official algorithm, the official
preprocessing output, and transformers' GOT-OCR2 image processors."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from internvl.errors import InputError
from internvl.inputs.image import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    candidate_grids,
    choose_grid,
    count_tiles,
    dummy_tile,
    image_to_tiles,
    load_image,
    split_into_tiles,
    tiles_to_tensor,
)
from tests.inputs_fixtures import (
    OFFICIAL_IMAGES,
    hf_got_ocr2_processor,
    hf_optimal_grid,
    make_image,
    reference_candidates,
    reference_grid,
    reference_pixel_values,
)

# ------------------------------------------------------------------------------------ grid choice

SPEC_VECTORS = [  # docs/images-and-video.md#dynamic-tiling: (W, H, max_num) -> grid (cols, rows), total tiles incl. thumbnail
    (448, 448, 12, (1, 1), 1),
    (800, 600, 12, (4, 3), 13),
    (1024, 768, 6, (3, 2), 7),
    (1920, 1080, 12, (4, 2), 9),
    (500, 1500, 12, (1, 3), 4),
    (300, 200, 12, (3, 2), 7),
    (100, 100, 12, (1, 1), 1),
    (1000, 1000, 12, (3, 3), 10),
    (896, 448, 12, (2, 1), 3),
    (2000, 100, 12, (12, 1), 13),
]


@pytest.mark.parametrize(("width", "height", "max_num", "grid", "tiles"), SPEC_VECTORS)
def test_spec_test_vectors(width, height, max_num, grid, tiles):
    assert choose_grid(width, height, max_tiles=max_num) == grid
    assert count_tiles(width, height, max_tiles=max_num) == tiles
    assert len(split_into_tiles(make_image(width, height), max_tiles=max_num)) == tiles


SWEEP_SIDES = [1, 2, 3, 5, 7, 10, 16, 33, 100, 224, 300, 336, 447, 448, 449, 500, 640, 672, 700, 896, 1000,
               1024, 1344, 1500, 1920, 2000, 4000, 20000]  # fmt: skip
SWEEP_BUDGETS = [(1, 1), (1, 2), (1, 4), (1, 6), (1, 8), (1, 12), (1, 24), (1, 40), (2, 2), (2, 6), (3, 3),
                 (4, 4), (4, 12), (6, 6), (2, 40), (4, 24)]  # fmt: skip


def test_candidate_order_is_the_official_set_order():
    for min_num, max_num in SWEEP_BUDGETS:
        assert candidate_grids(min_num, max_num) == tuple(reference_candidates(min_num, max_num))


def test_grid_sweep_matches_literal_reference():
    """Every (W, H) pair of the sweep and every budget, including exact ties (many: equal ratios)."""
    ties = 0
    for min_num, max_num in SWEEP_BUDGETS:
        candidates = reference_candidates(min_num, max_num)
        for w in SWEEP_SIDES:
            for h in SWEEP_SIDES:
                assert choose_grid(w, h, min_tiles=min_num, max_tiles=max_num) == reference_grid(w, h, min_num, max_num)
                diffs = sorted(abs(w / h - c / r) for c, r in candidates)
                ties += len(diffs) > 1 and diffs[0] == diffs[1]
    assert ties > 100  # the tie rule really was exercised


def test_tile_size_enters_the_tie_rule():
    # 896x896 ties (1,1), (2,2), (3,3), ...: with 448 tiles area > half of the 2x2 canvas but not of 3x3.
    assert choose_grid(896, 896, tile_size=448) == (2, 2)
    assert choose_grid(896, 896, tile_size=224) == reference_grid(896, 896, 1, 12, image_size=224) == (3, 3)


def test_grids_match_transformers_got_ocr2_for_min_tiles_1():
    """HF enumerates width-major and sorts by area; with min_tiles=1 (every released config) the
    chosen grids are identical to the official set order over the whole sweep."""
    for max_num in (1, 2, 4, 6, 8, 12, 24, 40):
        for w in SWEEP_SIDES:
            for h in SWEEP_SIDES:
                assert choose_grid(w, h, max_tiles=max_num) == hf_optimal_grid(w, h, 1, max_num), (w, h, max_num)


def test_official_set_order_differs_from_transformers_on_some_exact_ties():
    """min=max=4, a 5x2 image: (2,2) and (4,1) are equally far from 2.5 and the image is small, so
    the first candidate wins. The official set order lists (4,1) first, HF's order (2,2). We follow
    the official code (checked by the literal reference)."""
    assert reference_grid(5, 2, 4, 4) == choose_grid(5, 2, min_tiles=4, max_tiles=4) == (4, 1)
    assert hf_optimal_grid(5, 2, 4, 4) == (2, 2)


def test_bad_tile_budget():
    for min_tiles, max_tiles in [(0, 4), (5, 4), (-1, -1)]:
        with pytest.raises(InputError, match="min_tiles"):
            choose_grid(100, 100, min_tiles=min_tiles, max_tiles=max_tiles)


# ------------------------------------------------------------------------------------ pixels


def test_official_pixel_values():
    """The official preprocessing of the two fixture images (max 12 tiles, thumbnail, 448 px)."""
    official = load_file(OFFICIAL_IMAGES / "pixel_values.safetensors")
    ours = torch.cat([image_to_tiles(OFFICIAL_IMAGES / "image1.png"), image_to_tiles(OFFICIAL_IMAGES / "image2.png")])
    expected = official["two_images.pixel_values"]
    assert ours.shape == expected.shape == (4, 3, 448, 448) and ours.dtype == torch.float32
    assert (ours - expected).abs().max().item() <= 1e-6


def test_dummy_tile():
    """The fixture's text-only dummy tile is all zeros (not a normalised white image, which is what
    the official training dataset feeds); `fill="zeros"` reproduces it, the default the recipe."""
    official = load_file(OFFICIAL_IMAGES / "pixel_values.safetensors")["text_only_dummy_tile.pixel_values"]
    assert official.shape == (1, 3, 448, 448) and not official.any()
    assert torch.equal(dummy_tile(fill="zeros"), official)
    white = dummy_tile()
    assert torch.equal(white, reference_pixel_values(Image.new("RGB", (224, 224), (255, 255, 255)), max_num=1))
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(white[0, :, 0, 0], torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (3, 1), (2, 3), (300, 200), (700, 340), (1500, 500)])
def test_pixels_match_reference(width, height):
    image = make_image(width, height, seed=width + height)
    assert (image_to_tiles(image) - reference_pixel_values(image)).abs().max().item() <= 1e-6


def test_raster_order_and_thumbnail_last():
    image = make_image(1000, 500)
    tiles = split_into_tiles(image, max_tiles=12)
    cols, rows = choose_grid(1000, 500)
    assert (cols, rows) == (2, 1) and len(tiles) == 3
    canvas = image.resize((896, 448), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(tiles[0]), np.asarray(canvas)[:, :448])
    assert np.array_equal(np.asarray(tiles[1]), np.asarray(canvas)[:, 448:])
    assert np.array_equal(np.asarray(tiles[2]), np.asarray(image.resize((448, 448), Image.Resampling.BICUBIC)))


def test_extreme_sizes():
    assert image_to_tiles(make_image(1, 1)).shape == (1, 3, 448, 448)
    assert image_to_tiles(make_image(1, 20000)).shape == (13, 3, 448, 448)  # 1 x 12 grid + thumbnail
    assert choose_grid(1, 20000) == (1, 12)
    assert image_to_tiles(make_image(20000, 1), max_tiles=6).shape == (7, 3, 448, 448)


def test_tile_budget_and_options():
    image = make_image(800, 600)
    assert image_to_tiles(image, max_tiles=1).shape[0] == 1  # one tile, no thumbnail
    assert image_to_tiles(image, max_tiles=12, use_thumbnail=False).shape[0] == 12
    assert image_to_tiles(make_image(448, 448), min_tiles=4, max_tiles=12).shape[0] == 5  # forced 2x2 + thumbnail
    assert image_to_tiles(image, max_tiles=6, tile_size=224).shape == (7, 3, 224, 224)


def test_normalisations():
    grey = Image.new("RGB", (448, 448), (128, 128, 128))
    siglip = (0.5, 0.5, 0.5)
    for name, mean, std in [
        ("imagenet", IMAGENET_MEAN, IMAGENET_STD),
        ("clip", CLIP_MEAN, CLIP_STD),
        ("siglip", siglip, siglip),
    ]:
        x = tiles_to_tensor([grey], name)
        expected = torch.tensor([(128 / 255 - m) / s for m, s in zip(mean, std)])
        assert torch.allclose(x[0, :, 7, 9], expected, atol=1e-6)
    with pytest.raises(InputError, match="normalisation"):
        tiles_to_tensor([grey], "bogus")


# ------------------------------------------------------------- transformers' GOT-OCR2 processors

HF_SIZES = [(1, 1), (3, 1), (2, 3), (16, 16), (300, 200), (447, 449), (448, 448), (700, 340), (500, 1500),
            (1920, 1080), (13, 1777), (2345, 17), (1, 20000), (20000, 1)]  # fmt: skip
HF_KWARGS = dict(
    size={"height": 448, "width": 448}, crop_to_patches=True, min_patches=1, max_patches=12,
    image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
)  # fmt: skip


def _hf_pixels(processor, image):
    return processor(images=[image], return_tensors="pt", input_data_format="channels_last")["pixel_values"]


def test_transformers_pil_processor_is_identical():
    """`GotOcr2ImageProcessorPil` (the PIL backend, what HF's InternVL uses without torchvision)
    resizes with PIL bicubic too: same tiles and, measured, bit-identical pixels (max diff 0)."""
    processor = hf_got_ocr2_processor("pil", **HF_KWARGS)
    for width, height in HF_SIZES:
        image = make_image(width, height, seed=width * 7 + height)
        ours, theirs = image_to_tiles(image), _hf_pixels(processor, image)
        assert theirs.shape == ours.shape, (width, height)
        assert (theirs - ours).abs().max().item() <= 1e-6, (width, height)


def test_transformers_torchvision_processor_bound():
    """`GotOcr2ImageProcessor` (torchvision backend) picks the same grids but resizes with
    torch's bicubic kernel (antialiased), which is not PIL's: we measured on this sweep (torch
    2.13, torchvision 0.28) max |diff| 0.349 after normalisation (about 20 of 255 grey levels, at
    447x449 -> 448x448) and 1-2 levels on most sizes; a 448x448 image (no resize) is within 1e-6.
    The issue hoped for 1e-6: that does not hold for this backend (docs/images-and-video.md#dynamic-tiling). The official
    fixture and the PIL backend above are the binding references."""
    processor = hf_got_ocr2_processor("torchvision", **HF_KWARGS)
    worst = 0.0
    for width, height in HF_SIZES:
        image = make_image(width, height, seed=width * 7 + height)
        ours, theirs = image_to_tiles(image), _hf_pixels(processor, image)
        assert theirs.shape == ours.shape, (width, height)
        worst = max(worst, (theirs - ours).abs().max().item())
    assert worst <= 0.35
    square = make_image(448, 448)
    assert (_hf_pixels(processor, square) - image_to_tiles(square)).abs().max().item() <= 1e-6


# ------------------------------------------------------------------------------------ loading


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.png: no such image file"):
        load_image(tmp_path / "nope.png")


def test_load_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(InputError, match="empty data"):
        load_image(b"")


def test_load_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_image(tmp_path)


def test_load_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("this is text, not a PNG\n")
    with pytest.raises(InputError, match=r"notes\.png: not an image file"):
        load_image(tmp_path / "notes.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_load_truncated(tmp_path, fmt):
    path = _save(make_image(200, 150), tmp_path / f"cut.{fmt.lower()}", format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.\w+: cannot decode image \(truncated or corrupt"):
        load_image(path)


def test_load_pixel_limit(tmp_path):
    path = _save(make_image(100, 100), tmp_path / "big.png")
    with pytest.raises(InputError, match=r"big\.png: 100x100 = 10000 pixels exceeds the limit of 5000"):
        load_image(path, max_pixels=5000)
    assert load_image(path, max_pixels=10000).size == (100, 100)
    assert load_image(path, max_pixels=None).size == (100, 100)


def _png(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A minimal PNG encoder (PIL cannot write every layout we need)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def test_load_decompression_bomb(tmp_path):
    """A 30000x30000 PNG header over a few bytes of data: refused before anything is decoded."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(30000, 30000, 8, 0, b"\x00" * 64))
    with pytest.raises(InputError, match=r"bomb\.png: exceeds PIL.s pixel limit, a possible decompression bomb"):
        load_image(path)
    small_limit = _png(5000, 5000, 8, 0, b"\x00" * 64)  # below PIL's own guard, above ours
    with pytest.raises(InputError, match=r"<image bytes>: 5000x5000 = 25000000 pixels exceeds the limit of 1000000"):
        load_image(small_limit, max_pixels=1_000_000)


def _official_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_modes_convert_like_official(tmp_path):
    """Every mode ends as `Image.open(f).convert("RGB")` (the official recipe), including the lossy
    choices documented in `load_image`."""
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA")
    la = Image.fromarray(rng.integers(0, 256, (20, 30, 2), dtype=np.uint8), "LA")
    palette = make_image(30, 20).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    cmyk = Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "CMYK")
    grey16 = Image.fromarray((np.arange(600).reshape(20, 30) * 100).astype(np.uint16))
    bilevel = make_image(30, 20).convert("1")
    cases = {
        "rgba.png": rgba, "la.png": la, "palette.png": palette, "cmyk.jpg": cmyk, "cmyk.tiff": cmyk,
        "grey16.png": grey16, "bilevel.png": bilevel, "rgba.webp": rgba,
    }  # fmt: skip
    for name, image in cases.items():
        path = _save(image, tmp_path / name, **({"lossless": True} if name.endswith(".webp") else {}))
        loaded = load_image(path)
        assert loaded.mode == "RGB" and loaded.size == (30, 20), name
        assert np.array_equal(np.asarray(loaded), _official_rgb(path)), name

    rgb_rgba = np.asarray(load_image(tmp_path / "rgba.png"))  # alpha dropped, colours kept as stored
    assert np.array_equal(rgb_rgba, np.asarray(rgba)[..., :3])
    grey = np.asarray(load_image(tmp_path / "grey16.png"))[..., 0]  # clipped at 255, not rescaled
    assert grey[0, 0] == 0 and grey[0, 2] == 200 and (grey[0, 3:] == 255).all()


def test_16_bit_rgb_png_keeps_high_byte(tmp_path):
    values = np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 3000  # (H, W, RGB)
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(2))
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png(3, 2, 16, 2, rows))
    loaded = np.asarray(load_image(path))
    assert np.array_equal(loaded, (values >> 8).astype(np.uint8))
    assert np.array_equal(loaded, _official_rgb(path))


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), color) for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    assert tuple(np.asarray(load_image(path))[0, 0]) == (255, 0, 0)


def test_exif_orientation_is_not_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(make_image(40, 20), tmp_path / "rotated.jpg", exif=exif)
    assert load_image(path).size == (40, 20)  # as stored, like the official code


def test_load_sources(tmp_path):
    image = make_image(30, 20)
    path = _save(image, tmp_path / "a.png")
    from_path = np.asarray(load_image(path))
    assert np.array_equal(np.asarray(load_image(str(path))), from_path)
    assert np.array_equal(np.asarray(load_image(path.read_bytes())), from_path)
    assert np.array_equal(np.asarray(load_image(image.convert("RGBA"))), from_path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert np.array_equal(np.asarray(load_image(buffer.getvalue())), from_path)
