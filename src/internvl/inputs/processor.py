"""Messages -> prompt text -> token ids + pixel values + tiles per image (docs/prompts.md).

A conversation is a list of messages `{"role": "system" | "user" | "assistant", "content": ...}`.
Content is a string, or a list of parts (interleaved, in order):

    "some text"  or  {"type": "text", "text": "..."}
    {"type": "image", "image": path | bytes | PIL.Image, "max_tiles": 6}    # max_tiles optional
    {"type": "video", "video": path, "num_frames": 8, "bound": (3.0, 9.5)}  # both optional

Images and videos may also be given to the call (`images=`, `videos=`) and referred to by `<image>`
and `<video>` placeholders in user text, filled left to right. The rules:

* An image part becomes `<image>\\n`, or `Image-{k}: <image>\\n` when the conversation holds more
  than one image (`label_images=False` turns labels off).
* A video part (or a `<video>` placeholder, with its newline) becomes `Frame-1: <image>\\n…Frame-N:
  <image>\\n`, each frame one tile.
* Images passed in `images=` while no user text has an `<image>` placeholder are put at the start of
  the first user message, as if they were image parts (the official `chat()` rule, which prepends
  `<image>\\n`). Likewise for `videos=`. Otherwise the number of placeholders must equal
  the number of images (and videos): an `InputError` says which differs.
* Each `<image>` then becomes `<img>` + `<IMG_CONTEXT>` x (num_image_token * tiles) + `</img>`,
  left to right, in user messages only (placeholders in system or assistant text stay literal).

These rules, the image-block expansion, the context check and the tokenisation are shared with the
SFT data (`internvl.inputs.prompt`, docs/prompts.md#one-prompt-for-both): a model is asked what it was taught.

`build_chat_prompt` is the official `chat(question, history)` prompt, for callers that already hold
tiles per image.
"""

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from internvl.errors import InputError
from internvl.inputs.image import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_TILE_SIZE,
    ImageSource,
    Normalization,
    count_tiles,
    image_to_tiles,
)
from internvl.inputs.prompt import ImageTokenIds, Tokenizer, encode_prompt, frame_lines, image_label, single_token_id
from internvl.inputs.template import Role, Template, get_template
from internvl.inputs.tokens import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, image_block
from internvl.inputs.video import DEFAULT_NUM_SEGMENTS, VideoFrames, load_video

Message = Mapping[str, Any]
VideoSource = str | os.PathLike[str]


@dataclass(frozen=True)
class ProcessedInputs:
    """One conversation, ready for the model."""

    prompt: str  # the exact text that was tokenised (image blocks expanded)
    input_ids: torch.Tensor  # (L,) int64
    pixel_values: torch.Tensor | None  # (sum(tiles_per_image), 3, S, S) float32; None without images
    tiles_per_image: list[int]  # tiles of each <img> block, left to right; a video frame is one block of 1

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.ones_like(self.input_ids)  # (L,)


@dataclass
class _ImageSlot:
    source: ImageSource
    max_tiles: int | None  # None: the call's budget


@dataclass
class _VideoSlot:
    source: VideoSource
    num_frames: int | None
    bound: tuple[float, float] | None


_Piece = str | _ImageSlot | _VideoSlot
_PLACEHOLDER_RE = re.compile(f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)}\n?)")


class Processor:
    """Turns conversations with images and videos into model inputs for one InternVL checkpoint.

    All settings are plain values from the model config: `num_image_token` (256 for 448 px tiles),
    `template` and `system_message` (None: the template default), `max_tiles` (config
    `max_dynamic_patch`), `min_tiles`, `use_thumbnail`, `tile_size` (`force_image_size`).
    `split_tiles_across_images=True` gives each of n images max(1, max_tiles // n) tiles (the
    official training rule); by default every image gets `max_tiles` (official multi-image inference).
    Message text is untrusted: a `<|im_start|>` or `<|im_end|>` typed in it is encoded as plain text, so
    it cannot add a turn (docs/prompts.md#untrusted-text); `trusted_text=True` parses it as the special token.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        num_image_token: int = 256,
        template: str = "internvl2_5",
        system_message: str | None = None,
        thinking: bool = False,
        min_tiles: int = 1,
        max_tiles: int = 12,
        use_thumbnail: bool = True,
        tile_size: int = DEFAULT_TILE_SIZE,
        normalize: Normalization = "imagenet",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        num_frames: int = DEFAULT_NUM_SEGMENTS,
        split_tiles_across_images: bool = False,
        label_images: bool = True,
        trusted_text: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.template: Template = get_template(template, system_message=system_message, thinking=thinking)
        self.num_image_token = num_image_token
        self.min_tiles = min_tiles
        self.max_tiles = max_tiles
        self.use_thumbnail = use_thumbnail
        self.tile_size = tile_size
        self.normalize: Normalization = normalize
        self.max_pixels = max_pixels
        self.num_frames = num_frames
        self.split_tiles_across_images = split_tiles_across_images
        self.label_images = label_images
        self.trusted_text = trusted_text
        self.image_ids = ImageTokenIds.from_tokenizer(tokenizer)
        self.stop_token_id = single_token_id(tokenizer, self.template.stop_token)

    def __call__(
        self,
        messages: Sequence[Message],
        *,
        images: Sequence[ImageSource] = (),
        videos: Sequence[VideoSource] = (),
        max_tiles: int | Sequence[int] | None = None,
        add_generation_prompt: bool = True,
    ) -> ProcessedInputs:
        """Process one conversation.

        `max_tiles` overrides the per-image budget for this call: one int for all images, or one per
        image in prompt order (an image part's own "max_tiles" wins). `add_generation_prompt` appends
        the assistant prefix when the last message is a user message.
        """
        system, turns = self._parse(messages, images, videos)
        image_slots = [p for _, pieces in turns for p in pieces if isinstance(p, _ImageSlot)]
        budgets = self._budgets(image_slots, max_tiles)

        pixel_chunks: list[torch.Tensor] = []
        tiles_per_image: list[int] = []
        rendered: list[tuple[Role, str | None]] = []
        image_index = 0
        for role, pieces in turns:
            text = []
            for piece in pieces:
                if isinstance(piece, str):
                    text.append(piece)
                elif isinstance(piece, _ImageSlot):
                    tiles = image_to_tiles(  # (tiles, 3, S, S)
                        piece.source,
                        min_tiles=min(self.min_tiles, budgets[image_index]),
                        max_tiles=budgets[image_index],
                        tile_size=self.tile_size,
                        use_thumbnail=self.use_thumbnail,
                        normalize=self.normalize,
                        max_pixels=self.max_pixels,
                    )
                    image_index += 1
                    pixel_chunks.append(tiles)
                    tiles_per_image.append(tiles.shape[0])
                    text.append(image_block(tiles.shape[0], self.num_image_token))
                else:
                    video = self._load_video(piece)
                    pixel_chunks.append(video.pixel_values)  # (frames, 3, S, S)
                    tiles_per_image.extend([1] * video.num_frames)
                    frames = frame_lines(video.num_frames)  # Frame-1: <image>\n…, one tile each
                    text.append(frames.replace(IMAGE_PLACEHOLDER, image_block(1, self.num_image_token)))
            rendered.append((role, "".join(text)))
        if add_generation_prompt and rendered[-1][0] == "user":
            rendered.append(("assistant", None))
        prompt = self.template.render(rendered, system_message=system)
        input_ids = encode_prompt(
            self.tokenizer, self.template, rendered, system_message=system, trusted=self.trusted_text
        )
        self.image_ids.check(input_ids, tiles_per_image, self.num_image_token)
        pixel_values = torch.cat(pixel_chunks) if pixel_chunks else None
        return ProcessedInputs(prompt, input_ids, pixel_values, tiles_per_image)

    # ------------------------------------------------------------------------------- parsing

    def _parse(
        self, messages: Sequence[Message], images: Sequence[ImageSource], videos: Sequence[VideoSource]
    ) -> tuple[str | None, list[tuple[Role, list[_Piece]]]]:
        """(system message or None, turns as text pieces and image/video slots), placeholders resolved."""
        if isinstance(messages, (str, Mapping)) or not messages:
            raise InputError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        system: str | None = None
        raw: list[tuple[int, Role, list[_Piece]]] = []  # (index in `messages`, role, pieces)
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                raise InputError(f"message {i} must be a dict with 'role' and 'content'")
            role, pieces = message["role"], self._parts(i, message["content"])
            if role not in ("system", "user", "assistant"):
                raise InputError(f"message {i}: unknown role {role!r}; use 'system', 'user' or 'assistant'")
            if role != "user" and any(not isinstance(p, str) for p in pieces):
                raise InputError(f"message {i}: images and videos may only appear in user messages")
            if role == "system":
                if i != 0:
                    raise InputError(f"message {i}: a system message may only come first")
                system = "".join(p for p in pieces if isinstance(p, str))
            else:
                raw.append((i, role, pieces))
        if not any(role == "user" for _, role, _ in raw):
            raise InputError("the conversation has no user message")

        # Placeholders in user text refer to `images` / `videos`, in order.
        user_text = "".join(p for _, role, ps in raw if role == "user" for p in ps if isinstance(p, str))
        n_image_ph, n_video_ph = user_text.count(IMAGE_PLACEHOLDER), user_text.count(VIDEO_PLACEHOLDER)
        announce: list[_Piece] = []  # put before the first question (the official chat() rule)
        if images and n_image_ph == 0:
            announce += [_ImageSlot(source, None) for source in images]
            images = ()
        if videos and n_video_ph == 0:
            announce += [_VideoSlot(source, None, None) for source in videos]
            videos = ()
        if n_image_ph != len(images):
            raise InputError(
                f"the user messages have {n_image_ph} {IMAGE_PLACEHOLDER} placeholder(s) but {len(images)} image(s) "
                "were given: use one placeholder per image, or none to put all images before the first question"
            )
        if n_video_ph != len(videos):
            raise InputError(
                f"the user messages have {n_video_ph} {VIDEO_PLACEHOLDER} placeholder(s) but {len(videos)} video(s) "
                "were given: use one placeholder per video, or none to put all videos before the first question"
            )
        first_user = next(k for k, (_, role, _) in enumerate(raw) if role == "user")
        i, _, pieces = raw[first_user]
        raw[first_user] = (i, "user", announce + pieces)

        # Image slots we place ourselves (parts, announced images) get a `<image>\n` line, labelled
        # `Image-k: ` when the conversation has several images; placeholders the user wrote stay as written.
        n_images = n_image_ph + sum(isinstance(p, _ImageSlot) for _, _, ps in raw for p in ps)
        image_iter, video_iter = iter(images), iter(videos)
        k = 0  # images so far, in prompt order
        turns: list[tuple[Role, list[_Piece]]] = []
        for i, role, pieces in raw:
            out: list[_Piece] = []
            for piece in pieces:
                if isinstance(piece, _ImageSlot):
                    k += 1
                    out += [image_label(k, n_images) if self.label_images else "", piece, "\n"]
                elif isinstance(piece, _VideoSlot) or role == "assistant":
                    out.append(piece)
                else:
                    for chunk in _PLACEHOLDER_RE.split(piece):
                        if chunk == IMAGE_PLACEHOLDER:
                            k += 1
                            out.append(_ImageSlot(next(image_iter), None))
                        elif chunk.startswith(VIDEO_PLACEHOLDER):
                            out.append(_VideoSlot(next(video_iter), None, None))
                        else:
                            out.append(chunk)
            if not any(p for p in out):
                raise InputError(f"message {i} is empty")
            turns.append((role, out))
        return system, turns

    def _parts(self, i: int, content: Any) -> list[_Piece]:
        if isinstance(content, str):
            return [content]
        if not isinstance(content, Sequence):
            raise InputError(f"message {i}: content must be a string or a list of parts")
        pieces: list[_Piece] = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
                continue
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text" and isinstance(part.get("text"), str):
                pieces.append(part["text"])
            elif kind == "image" and part.get("image") is not None:
                pieces.append(_ImageSlot(part["image"], part.get("max_tiles")))
            elif kind == "video" and part.get("video") is not None:
                pieces.append(_VideoSlot(part["video"], part.get("num_frames"), part.get("bound")))
            else:
                raise InputError(
                    f"message {i}: cannot use content part {part!r}; expected text, "
                    "{'type': 'image', 'image': ...} or {'type': 'video', 'video': ...}"
                )
        return pieces

    def _budgets(self, slots: list[_ImageSlot], max_tiles: int | Sequence[int] | None) -> list[int]:
        """Max tiles of each image: its part's own value, else the call's, else the processor's."""
        if isinstance(max_tiles, Sequence):
            if len(max_tiles) != len(slots):
                raise InputError(f"max_tiles has {len(max_tiles)} entries for {len(slots)} image(s)")
            defaults = list(max_tiles)
        else:
            defaults = [self._shared_budget(len(slots), max_tiles)] * len(slots)
        return [slot.max_tiles if slot.max_tiles is not None else d for slot, d in zip(slots, defaults)]

    def _shared_budget(self, num_images: int, max_tiles: int | None) -> int:
        """Max tiles of each of `num_images` images given one budget (the call's, else the processor's)."""
        base = self.max_tiles if max_tiles is None else max_tiles
        if self.split_tiles_across_images and num_images:
            base = max(1, base // num_images)
        return base

    def count_image_tiles(self, sizes: Sequence[tuple[int, int]], max_tiles: int | None = None) -> int:
        """The tiles images of these (width, height) sizes get from this processor, without their pixels
        (the server refuses a prompt that cannot fit before decoding anything)."""
        budget = self._shared_budget(len(sizes), max_tiles)
        return sum(
            count_tiles(
                width,
                height,
                min_tiles=min(self.min_tiles, budget),
                max_tiles=budget,
                tile_size=self.tile_size,
                use_thumbnail=self.use_thumbnail,
            )
            for width, height in sizes
        )

    def _load_video(self, slot: _VideoSlot) -> VideoFrames:
        return load_video(
            slot.source,
            num_segments=slot.num_frames or self.num_frames,
            bound=slot.bound,
            tile_size=self.tile_size,
            normalize=self.normalize,
        )


def build_chat_prompt(
    question: str,
    *,
    template: Template,
    num_image_token: int = 256,
    tiles_per_image: Sequence[int] = (),
    history: Sequence[tuple[str, str]] | None = None,
) -> str:
    """The prompt the official `chat()` builds (docs/prompts.md#chat), image blocks expanded.

    `history` is a list of (question, answer) pairs; `tiles_per_image` is the official
    `num_patches_list` and covers the `<image>` placeholders of the history and of the question.
    With no history (None, not []) and images, a question without `<image>` gets `<image>\\n` in
    front. Unlike the official code, a placeholder count that differs from `len(tiles_per_image)` is
    an `InputError` instead of a silent mismatch.
    """
    if history is None and tiles_per_image and IMAGE_PLACEHOLDER not in question:
        question = IMAGE_PLACEHOLDER + "\n" + question
    turns: list[tuple[Role, str | None]] = []
    for old_question, old_answer in history or ():
        turns += [("user", old_question), ("assistant", old_answer)]
    turns += [("user", question), ("assistant", None)]
    query = template.render(turns)
    if query.count(IMAGE_PLACEHOLDER) != len(tiles_per_image):
        raise InputError(
            f"the prompt has {query.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} placeholder(s) "
            f"for {len(tiles_per_image)} image(s)"
        )
    for n_tiles in tiles_per_image:
        query = query.replace(IMAGE_PLACEHOLDER, image_block(n_tiles, num_image_token), 1)
    return query
