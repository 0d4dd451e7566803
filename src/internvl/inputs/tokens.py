"""The special-token strings of InternVL: the one place they are spelled out.

The nine tokens below are added to the language model's tokenizer by the official training code,
in this order, as special tokens (docs/prompts.md#special-tokens); their ids depend on the tokenizer family, so code looks
them up by string (`tokenizer.convert_tokens_to_ids(IMG_CONTEXT)`) and never hard-codes ids.
`<image>` and `<video>` are plain-text placeholders, not tokens: the processor replaces them before
tokenisation.

`load_tokenizer` reads a checkpoint's tokenizer (with these tokens) through transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from internvl.errors import CheckpointError
from internvl.shipped import model_folder

IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"  # one per visual feature vector; the model overwrites its embedding
QUAD_START = "<quad>"
QUAD_END = "</quad>"
REF_START = "<ref>"  # <ref>a referring expression</ref>
REF_END = "</ref>"
BOX_START = "<box>"  # <box>[[x1, y1, x2, y2]]</box>, integers normalised to [0, 1000]
BOX_END = "</box>"

# In the order the official code adds them (so ids are consecutive: Qwen2 <img>=151665 … </box>=151673).
SPECIAL_TOKENS: tuple[str, ...] = (
    IMG_START,
    IMG_END,
    IMG_CONTEXT,
    QUAD_START,
    QUAD_END,
    REF_START,
    REF_END,
    BOX_START,
    BOX_END,
)

IMAGE_PLACEHOLDER = "<image>"  # replaced by IMG_START + IMG_CONTEXT * (num_image_token * tiles) + IMG_END
VIDEO_PLACEHOLDER = "<video>"  # replaced by one "Frame-{i}: <image>\n" line per sampled frame (inputs/prompt.py)


def image_block(num_tiles: int, num_image_token: int) -> str:
    """The text that stands for one image of `num_tiles` tiles (docs/prompts.md#image-expansion): no spaces, no newlines."""
    return IMG_START + IMG_CONTEXT * (num_image_token * num_tiles) + IMG_END


def load_tokenizer(folder: str | Path) -> Any:
    """The checkpoint's tokenizer (a folder or a shipped model's name) through transformers, never running
    code from the folder."""
    folder = model_folder(folder)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # it warns that `internvl_chat` is not a transformers model type
    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, use_fast=True)
    except Exception as exc:  # transformers raises many types for unusable tokenizer folders
        raise CheckpointError(
            f"{folder}: cannot load its tokenizer without running code from the folder ({type(exc).__name__}: {exc}); "
            "a tokenizer.json (or vocab.json + merges.txt) is needed"
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
