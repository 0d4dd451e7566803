"""Prompt batches for online RL (`internvl train gspo`, docs/gspo.md): questions with their ground truth,
processed into model prompts, a few per micro-batch.

    data:
      source: internvl.data.prompts:prompt_batches
      options: {questions: data/world/questions.jsonl, prompts_per_batch: 4}

The questions file is the format `internvl data mmpr` reads (docs/mpo.md#building-pairs-mmpr): one JSON object per
line with `image` (a path or a list, relative to `media_root`), `question` and `answer`, or an SFT line
(first human turn, first gpt turn); a `world` record makes the world's scorer the judge. A malformed line
stops the run with its file and line number.

Each prompt batch is yielded `repeat_each` times in a row (part 0, 1, ...): the GSPO recipe sets it to
its `updates_per_rollout`, so that one rollout (answers sampled for the batch at part 0) feeds that many
micro-batches. The order is a pure function of (seed, epoch), so a resumed run sees what an uninterrupted
one sees; rank r takes questions r, r+W, ... of the shuffled list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from internvl.config import InternVLConfig
from internvl.errors import ConfigError
from internvl.inputs.tokens import load_tokenizer
from internvl.settings import from_dict

SOURCE = "internvl.data.prompts:prompt_batches"


@dataclass
class PromptOptions:
    """`data.options` of `internvl.data.prompts:prompt_batches`."""

    questions: str = ""  # the questions JSONL (required)
    media_root: str = ""  # images are relative to it; "" = the questions file's folder
    tokenizer: str = ""  # folder with the tokenizer files; the recipe defaults it to model.path
    prompts_per_batch: int = 4  # questions per micro-batch (each answered group_size times)
    repeat_each: int = 1  # micro-batches per prompt batch (the GSPO recipe sets it)
    max_tiles: int | None = None  # tiles per image; None = the model config's max_dynamic_patch
    chain_of_thought: bool = True  # ask in the `en` chain-of-thought instruction ("Final answer: ...")
    shuffle: bool = True  # a new order every epoch (seeded); false keeps file order


def check_prompt_options(options: dict[str, Any]) -> PromptOptions:
    settings = from_dict(PromptOptions, options, source="data.options")
    for required in ("questions", "tokenizer"):
        if not getattr(settings, required):
            raise ConfigError(f"data.options.{required} is required for {SOURCE}")
    if not Path(settings.questions).is_file():
        raise ConfigError(f"data.options.questions {settings.questions!r}: no such file (a JSONL of questions)")
    for name in ("prompts_per_batch", "repeat_each"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"data.options.{name} must be at least 1, got {getattr(settings, name)}")
    if settings.max_tiles is not None and settings.max_tiles < 1:
        raise ConfigError(f"data.options.max_tiles must be at least 1, got {settings.max_tiles}")
    return settings


class PromptBatches:
    """This rank's prompt micro-batches. A batch is a dict: `prompts` (ProcessedInputs, one per question),
    `questions` (mmpr.Question), `rollout` ("epoch:batch", the same for the repeats of one batch),
    `part` (0 .. repeat_each-1), and the prompts' left-padded `input_ids` / `attention_mask` and
    `num_samples` (for the trainer's token counts)."""

    def __init__(
        self, questions: list[Any], processor: Any, settings: PromptOptions, rank: int, world_size: int, seed: int
    ) -> None:
        self.questions = questions
        self.processor = processor
        self.settings = settings
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.media_root = Path(settings.media_root or Path(settings.questions).parent)
        self.epoch = 0
        self.consumed = 0  # micro-batches of this epoch handed out
        self.skip = 0  # micro-batches of this epoch to pass over (set on resume), without processing them
        mine = len(range(rank, len(questions), world_size))
        if mine == 0:
            raise ConfigError(f"{settings.questions}: {len(questions)} questions cannot feed {world_size} ranks")
        self.batches_per_epoch = -(-mine // settings.prompts_per_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch * self.settings.repeat_each

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.consumed, self.skip = epoch, 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume within the epoch `set_epoch` chose: the next batch is the one after `consumed`."""
        self.consumed = self.skip = int(state["consumed"])

    def order(self) -> list[int]:
        indices = np.arange(len(self.questions))
        if self.settings.shuffle:
            indices = np.random.default_rng([self.seed, self.epoch]).permutation(indices)
        return [int(i) for i in indices[self.rank :: self.world_size]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from internvl.chat import left_pad
        from internvl.data.mmpr import cot_question

        order, size, repeat = self.order(), self.settings.prompts_per_batch, self.settings.repeat_each
        for number in range(self.batches_per_epoch):
            if (number + 1) * repeat <= self.skip:
                continue
            questions = [self.questions[i] for i in order[number * size : (number + 1) * size]]
            prompts = []
            for q in questions:
                # without `<image>` placeholders the processor puts the images before the question
                text = cot_question(q.question, len(q.images)) if self.settings.chain_of_thought else q.question
                images = [str(self.media_root / path) for path in q.images]
                prompts.append(
                    self.processor(
                        [{"role": "user", "content": text}], images=images, max_tiles=self.settings.max_tiles
                    )
                )
            ids, mask = left_pad([p.input_ids for p in prompts], 0)
            for part in range(repeat):
                if number * repeat + part < self.skip:
                    continue
                self.consumed = number * repeat + part + 1
                yield {
                    "prompts": prompts,
                    "questions": questions,
                    "rollout": f"{self.epoch}:{number}",
                    "part": part,
                    "input_ids": ids,
                    "attention_mask": mask,
                    "num_samples": len(prompts),
                }
        self.skip = 0


def prompt_batches(
    options: dict[str, Any], model_config: InternVLConfig, rank: int, world_size: int, seed: int
) -> PromptBatches:
    """Build this rank's source from `data.options` (see `PromptOptions`)."""
    from internvl.chat import build_processor
    from internvl.data.mmpr import read_questions

    settings = check_prompt_options(options)
    processor = build_processor(model_config, load_tokenizer(settings.tokenizer), settings.max_tiles)
    return PromptBatches(read_questions(settings.questions), processor, settings, rank, world_size, seed)
