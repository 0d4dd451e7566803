"""Conversation -> prompt -> token ids: the rules shared by inference and training (docs/prompts.md#one-prompt-for-both).

The chat API (`inputs/processor.py`) and the SFT data (`data/sft.py`) both build their prompts from
the pieces below, so that a model is asked at inference exactly what it was taught:

* **Image placement.** Images that no `<image>` placeholder places go before the first user text,
  one line each: `<image>\\n`, or `Image-k: <image>\\n` when the conversation holds several images
  (`media_lines`). The official model cards write the labels in multi-image prompts; the official SFT
  code adds nothing and takes the data's text as written.
* **Video.** The frames of a video become `Frame-k: <image>\\n` lines, one tile each (`frame_lines`),
  as the official SFT code writes them. The official model cards and evaluation write `Frame{k}: `
  instead; pass your own frame lines with the frames as images to get that form.
* **Image-token expansion.** Each `<image>` of the user text, left to right, becomes
  `<img>` + `<IMG_CONTEXT>` x (tokens per tile x tiles) + `</img>` (`expand_images`).
* **The context check.** The token ids hold exactly the image tokens the tiles need
  (`ImageTokenIds.check`): user text that itself spells `<img>` or `<IMG_CONTEXT>` is refused.
* **Tokenisation.** Inference renders the template and tokenises the prompt in one call
  (`encode_prompt`). Training tokenises the system block and each turn on its own and masks the labels
  (`ConversationEncoder`). For every template the ids of a training conversation start with the ids
  of its inference prompt (tests/test_prompt.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from internvl.errors import ConfigError, InputError
from internvl.inputs.template import Role, Template
from internvl.inputs.tokens import IMAGE_PLACEHOLDER, IMG_CONTEXT, IMG_END, IMG_START, SPECIAL_TOKENS, image_block

IGNORE_INDEX = -100  # the label of a token that is not supervised


class Tokenizer(Protocol):
    """What prompt building needs of a `transformers` tokenizer (`PreTrainedTokenizerFast` has it)."""

    pad_token_id: int | None

    def __call__(self, text: Any, add_special_tokens: bool = ..., **kwargs: Any) -> Any: ...
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def convert_tokens_to_ids(self, tokens: str) -> int | None: ...


def single_token_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of `token`, which the tokenizer must keep as one token (InternVL's special tokens)."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or tokenizer.encode(token, add_special_tokens=False) != [token_id]:
        raise ConfigError(f"the tokenizer has no single token for {token!r}: is it an InternVL tokenizer?")
    return token_id


# ------------------------------------------------------------------------------ media in the text


def image_label(k: int, n_images: int) -> str:
    """What precedes the k-th (1-based) image placed by us: `Image-k: ` when there are several."""
    return f"Image-{k}: " if n_images > 1 else ""


def media_lines(n_images: int) -> str:
    """The lines that announce `n_images` images before the first question."""
    return "".join(f"{image_label(k, n_images)}{IMAGE_PLACEHOLDER}\n" for k in range(1, n_images + 1))


def frame_lines(num_frames: int) -> str:
    """`Frame-1: <image>\\nFrame-2: <image>\\n…`: the frames of one video, one tile each."""
    return "".join(f"Frame-{k}: {IMAGE_PLACEHOLDER}\n" for k in range(1, num_frames + 1))


def expand_images(texts: Sequence[str], tiles_per_image: Sequence[int], num_image_token: int) -> list[str]:
    """`texts` (the user turns, in order) with each `<image>`, left to right, replaced by its image block."""
    found = sum(text.count(IMAGE_PLACEHOLDER) for text in texts)
    if found != len(tiles_per_image):
        raise InputError(
            f"the user turns hold {found} {IMAGE_PLACEHOLDER} placeholder(s) for {len(tiles_per_image)} image(s)"
        )
    tiles = iter(tiles_per_image)
    out = []
    for text in texts:
        pieces = text.split(IMAGE_PLACEHOLDER)
        blocks = [image_block(next(tiles), num_image_token) for _ in pieces[1:]]
        out.append("".join(p + b for p, b in zip(pieces, [*blocks, ""])))
    return out


@dataclass(frozen=True)
class ImageTokenIds:
    """Ids of `<img>`, `<IMG_CONTEXT>` and `</img>` in one tokenizer."""

    start: int
    context: int
    end: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> ImageTokenIds:
        return cls(*(single_token_id(tokenizer, t) for t in (IMG_START, IMG_CONTEXT, IMG_END)))

    def check(self, input_ids: torch.Tensor, tiles_per_image: Sequence[int], num_image_token: int) -> None:
        """The context check: `input_ids` hold one image block per image, of the right length."""
        found = [int((input_ids == t).sum()) for t in (self.start, self.context, self.end)]
        n = len(tiles_per_image)
        needed = [n, num_image_token * sum(tiles_per_image), n]
        if found != needed:
            raise InputError(
                f"the text holds {found} {IMG_START}/{IMG_CONTEXT}/{IMG_END} tokens where its {n} image(s) need "
                f"{needed}: the message text must not contain these tokens itself"
            )


# ------------------------------------------------------------------------------ tokenisation


def structural_tokens(tokenizer: Tokenizer) -> tuple[str, ...]:
    """The tokenizer's special tokens that shape a conversation (`<|im_start|>`, `<|im_end|>`,
    `<|endoftext|>`, ...): every special added token except InternVL's nine, which messages may hold
    (`<ref>`/`<box>` in grounding prompts; image tokens are checked by `ImageTokenIds.check`)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found = {token.content for token in added.values() if getattr(token, "special", False)}
    found |= set(getattr(tokenizer, "all_special_tokens", ()) or ())
    return tuple(sorted(found - set(SPECIAL_TOKENS), key=len, reverse=True))


def guarded_segments(pieces: Sequence[tuple[str, bool]], guarded: Sequence[str]) -> list[tuple[str, bool]]:
    """Rendered pieces -> (text, literal) segments: each structural token written inside a message becomes
    a literal segment (tokenised as plain characters); everything else joins into ordinary segments, cut
    only there, so their tokens are those of the whole prompt."""
    pattern = re.compile("|".join(re.escape(token) for token in guarded)) if guarded else None
    segments: list[tuple[str, bool]] = []
    buffer = ""
    for text, is_message in pieces:
        if not is_message or pattern is None:
            buffer += text
            continue
        last = 0
        for match in pattern.finditer(text):
            buffer += text[last : match.start()]
            if buffer:
                segments.append((buffer, False))
            segments.append((match.group(), True))
            buffer, last = "", match.end()
        buffer += text[last:]
    if buffer:
        segments.append((buffer, False))
    return segments


def encode_prompt(
    tokenizer: Tokenizer,
    template: Template,
    turns: Sequence[tuple[Role, str | None]],
    system_message: str | None = None,
    trusted: bool = False,
) -> torch.Tensor:
    """Inference: the rendered prompt (a None message is the generation slot) tokenised -> (L,).

    Message text cannot add conversation structure (docs/prompts.md#untrusted-text): a `<|im_end|>` or
    `<|im_start|>` written in a message is encoded as the characters it is made of, not as the special
    token. Prompts without such text are tokenised in one call, as the official code does. `trusted=True`
    parses special tokens everywhere (for callers who build structure into their messages on purpose)."""
    pieces = template.render_pieces(turns, system_message=system_message)
    guarded = () if trusted else structural_tokens(tokenizer)
    segments = guarded_segments(pieces, guarded)
    if len(segments) <= 1:
        prompt = "".join(text for text, _ in pieces)
        return torch.tensor(tokenizer(prompt, add_special_tokens=True)["input_ids"], dtype=torch.long)
    ids: list[int] = list(tokenizer("", add_special_tokens=True)["input_ids"])  # a BOS, for tokenizers that add one
    for text, literal in segments:
        ids += tokenizer(text, add_special_tokens=False, split_special_tokens=literal)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


class ConversationEncoder:
    """Training: (system, turns) -> token ids and labels for one template (docs/sft.md#masking).

    Segments: `system_template.format(system) + sep`, then `role + value + sep` per turn, each tokenised
    on its own. An assistant segment is supervised except its role prefix and what follows the end
    token in `sep` (the `\\n` of `<|im_end|>\\n`): the answer and `<|im_end|>` (or `<|end|>`) are learnt.
    If the tokenizer adds a BOS (InternLM2), one BOS starts the sequence: the official effect of its
    prepend-then-drop dance. When a prefix or suffix merges with the answer into one token (a rare BPE
    edge case), the three parts are tokenised apart instead of mislabelling the merged token.
    """

    def __init__(self, tokenizer: Tokenizer, template: Template) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.stop = template.sep.strip()
        if not template.sep.startswith(self.stop):
            raise ConfigError(f"template {template.name!r}: sep {template.sep!r} must start with its end token")
        self.strip_values = template.name == "internlm2-chat"  # official preprocess_internlm strips
        add_bos = bool(getattr(tokenizer, "add_bos_token", False))
        self.bos_id: int | None = getattr(tokenizer, "bos_token_id", None) if add_bos else None
        self.prefix_ids = self._tokenize([template.roles[1]])[0]
        self.guarded = structural_tokens(tokenizer)
        tail = template.sep[len(self.stop) :]
        self.tail_ids = self._tokenize([tail])[0] if tail else []

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode(self, system: str, turns: Sequence[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """(input_ids, labels) for `turns` of ("human" | "gpt", text); not truncated. As at inference
        (`encode_prompt`), a structural token written in a message is encoded as plain characters."""
        t = self.template
        head, _, tail = t.system_template.partition("{system_message}")
        pieces = [[(head, False), (system, True), (tail + t.sep, False)]]
        pieces += [
            [(t.roles[0] if role == "human" else t.roles[1], False), (value, True), (t.sep, False)]
            for role, value in turns
        ]
        texts = ["".join(text for text, _ in segment) for segment in pieces]
        segments = self._tokenize(texts)
        for k, segment in enumerate(pieces):
            guarded = guarded_segments(segment, self.guarded)
            if len(guarded) > 1:  # rare: a message holding <|im_end|> and the like
                segments[k] = [
                    i
                    for text, literal in guarded
                    for i in self.tokenizer(text, add_special_tokens=False, split_special_tokens=literal)["input_ids"]
                ]
        input_ids = [self.bos_id] if self.bos_id is not None else []
        labels = [IGNORE_INDEX] * len(input_ids)
        input_ids += segments[0]
        labels += [IGNORE_INDEX] * len(segments[0])
        p, q = len(self.prefix_ids), len(self.tail_ids)
        for (role, value), ids in zip(turns, segments[1:]):
            if role == "human":
                input_ids += ids
                labels += [IGNORE_INDEX] * len(ids)
                continue
            if len(ids) < p + q or ids[:p] != self.prefix_ids or ids[len(ids) - q :] != self.tail_ids:
                ids = self.prefix_ids + self._tokenize([value + self.stop])[0] + self.tail_ids
            input_ids += ids
            labels += [IGNORE_INDEX] * p + ids[p : len(ids) - q] + [IGNORE_INDEX] * q
        return input_ids, labels
