"""The special-token strings of InternVL: the one place they are spelled out.

The nine tokens below are added to the language model's tokenizer by the official training code,
in this order, as special tokens (docs/prompts.md#special-tokens); their ids depend on the tokenizer family, so code looks
them up by string (`tokenizer.convert_tokens_to_ids(IMG_CONTEXT)`) and never hard-codes ids.
`<image>` and `<video>` are plain-text placeholders, not tokens: the processor replaces them before
tokenisation.
"""

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
VIDEO_PLACEHOLDER = "<video>"  # replaced by one "Frame{i}: <image>\n" line per sampled frame


def image_block(num_tiles: int, num_image_token: int) -> str:
    """The text that stands for one image of `num_tiles` tiles (docs/prompts.md#image-expansion): no spaces, no newlines."""
    return IMG_START + IMG_CONTEXT * (num_image_token * num_tiles) + IMG_END
