"""Process reward models (VisualPRM, docs/prm.md): an InternVL that judges each step of a solution.

    prm = ProcessRewardModel.load("runs/prm-model")          # or an official VisualPRM folder
    prm.score(question, ["a.png"], candidates)                 # one score per candidate (mean of steps)

The conversation is the official one (`internvl_chat/tools/reasoning_data_pipeline`): the PRM system
prompt, then one user turn per step, the first one "### Question:\\n{question}\\n\\n### Solution
Process:\\n{step 1}", and after each step an assistant turn that is "+" (right so far) or "-". To score,
every assistant slot but the last is filled with "+" and the conversation ends with the generation
prompt of the last one; one forward pass gives, at the position that predicts each slot,
P(+) / (P(+) + P(-)). A solution's score combines its step scores: the mean (the VisualPRM paper), the
minimum or the last one. An outcome reward model (ORM) is the same with the whole solution as one step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from internvl.errors import CheckpointError, InputError
from internvl.inputs.image import ImageSource

# The official `PRM_SYSTEM_PROMPT` (internvl_chat/tools/reasoning_data_pipeline/utils/constants.py), kept
# verbatim: official VisualPRM checkpoints were trained with it.
PRM_SYSTEM_PROMPT = """You are an advanced AI assistant, designed to serve as a process supervision model. In this task, I will provide a problem statement followed by the first step of the solution process. For each subsequent turn, I will give you a new step in the solution. Your role is to assess whether the solution process is correct up to the current step.

- In the **first round**, I will input the problem and the first step of the solution process.
- In **each subsequent round**, I will provide the next step in the solution.

For each step, you should:

- Respond with **"+"** if you believe the solution process is correct up to this step.
- Respond with **"-"** if you detect any issues or errors in the process up to this step.

Please note:
- Only respond with **"+"** or **"-"**. Do not provide any additional explanations, comments, or justifications.

Your task is to verify the accuracy and correctness of each step in the given solution process."""  # noqa: E501

STEP_SEPARATOR = "\n\n"
UNREADABLE = -1.0  # the rank score of a candidate the model cannot read: below any P(+)
Combine = Literal["mean", "min", "last"]


def split_steps(response: str, max_steps: int | None = None) -> list[str]:
    """A solution's steps: its pieces between blank lines; with `max_steps`, consecutive pieces merged in
    groups of ceil(n / max_steps) so that at most `max_steps` remain (the official `split_response`).
    Blank pieces (from three or more newlines in a row, or a trailing blank line) are left out: a step turn
    must have text, and a sampled answer often ends with a blank line."""
    pieces = [piece for piece in response.split(STEP_SEPARATOR) if piece.strip()] or [response]
    if max_steps is None:
        return pieces
    size = math.ceil(len(pieces) / max_steps)
    return [STEP_SEPARATOR.join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def step_turns(question: str, steps: Sequence[str]) -> list[str]:
    """The user turns of the PRM conversation: the question with the first step, then one step each."""
    if not steps:
        raise InputError("a solution needs at least one step")
    return [f"### Question:\n{question}\n\n### Solution Process:\n{steps[0]}", *steps[1:]]


def prm_record(question: str, steps: Sequence[str], labels: Sequence[bool], media: dict[str, Any]) -> dict[str, Any]:
    """One training line in the official SFT conversation format (system, then human step / gpt +|-)."""
    conversations = [{"from": "system", "value": PRM_SYSTEM_PROMPT}]
    for turn, right in zip(step_turns(question, steps), labels):
        conversations += [{"from": "human", "value": turn}, {"from": "gpt", "value": "+" if right else "-"}]
    return {**media, "conversations": conversations}


def combine(step_scores: Sequence[float], how: Combine = "mean") -> float:
    if not step_scores:
        raise InputError("no step scores to combine")
    if how == "mean":
        return sum(step_scores) / len(step_scores)
    if how == "min":
        return min(step_scores)
    if how == "last":
        return step_scores[-1]
    raise InputError(f"unknown way to combine step scores {how!r}; choose mean, min or last")


@dataclass
class ProcessRewardModel:
    """A PRM (or ORM) around a loaded `Chat`: its tokenizer's "+" and "-" tokens and the assistant prefix."""

    chat: Any  # internvl.chat.Chat
    plus_id: int
    minus_id: int
    max_steps: int | None = 12

    @classmethod
    def load(cls, folder: str | Path, max_steps: int | None = 12, **load_options: Any) -> "ProcessRewardModel":
        """Load a PRM checkpoint (either layout, through `internvl.load`); `max_steps` merges longer
        solutions as the training data did (None: one step per blank-line piece)."""
        from internvl.chat import load

        return cls.around(load(folder, system_message=PRM_SYSTEM_PROMPT, **load_options), max_steps)

    @classmethod
    def around(cls, chat: Any, max_steps: int | None = 12) -> "ProcessRewardModel":
        ids = []
        for sign in ("+", "-"):
            encoded = chat.tokenizer(sign, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                raise CheckpointError(f"the tokenizer splits {sign!r} into {len(encoded)} tokens; a PRM needs one")
            ids.append(int(encoded[0]))
        return cls(chat, ids[0], ids[1], max_steps)

    def conversation(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = [{"role": "system", "content": PRM_SYSTEM_PROMPT}]
        for k, turn in enumerate(step_turns(question, steps)):
            if k:
                messages.append({"role": "assistant", "content": "+"})
            messages.append({"role": "user", "content": turn})
        return messages

    @torch.no_grad()
    def step_scores(
        self,
        question: str,
        images: Sequence[ImageSource],
        solutions: Sequence[str | Sequence[str]],
        max_tiles: int | None = None,
    ) -> list[list[float]]:
        """P(+)/(P(+)+P(-)) for every step of every solution (a string is split into steps, a list is
        taken as its steps), all solutions in one batched forward pass. `question` is the text the
        solutions answered, `<image>` placeholders included (without any, the images go in front)."""
        chat = self.chat
        limit = chat.model.config.text.max_position_embeddings
        rows, slots, tiles = [], [], []
        for number, solution in enumerate(solutions):
            steps = split_steps(solution, self.max_steps) if isinstance(solution, str) else list(solution)
            inputs = chat.processor(self.conversation(question, steps), images=images, max_tiles=max_tiles)
            ids = inputs.input_ids
            if ids.shape[0] > limit:
                raise InputError(
                    f"solution {number}: its PRM conversation is {ids.shape[0]} tokens and the model's context is {limit}"
                )
            rows.append(ids)
            slots.append(self._slot_positions(ids, len(steps)))
            if inputs.pixel_values is not None:
                tiles.append(inputs.pixel_values)
        length = max(int(r.shape[0]) for r in rows)
        ids = torch.full((len(rows), length), chat.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, : row.shape[0]] = row
            mask[r, : row.shape[0]] = 1
        model = chat.model
        device = next(model.parameters()).device
        pixels = torch.cat(tiles).to(device) if tiles else None
        hidden = model(ids.to(device), pixels, attention_mask=mask.to(device), return_hidden=True)
        scores = []
        for r, positions in enumerate(slots):
            logits = model.language.lm_head(hidden[r, positions]).float()  # (steps, vocab)
            pair = logits[:, [self.plus_id, self.minus_id]]
            scores.append(torch.softmax(pair, dim=-1)[:, 0].tolist())
        return scores

    def score(
        self,
        question: str,
        images: Sequence[ImageSource],
        solutions: Sequence[str | Sequence[str]],
        how: Combine = "mean",
        max_tiles: int | None = None,
    ) -> list[float]:
        """One score per solution: its step scores combined (`combine`)."""
        return [combine(s, how) for s in self.step_scores(question, images, solutions, max_tiles)]

    def rank_scores(
        self,
        question: str,
        images: Sequence[ImageSource],
        solutions: Sequence[str | Sequence[str]],
        how: Combine = "mean",
        max_tiles: int | None = None,
    ) -> list[float]:
        """`score` for choosing among candidates: one the model cannot read (its conversation beyond the
        context) gets UNREADABLE instead of failing the others, which are then scored one by one."""
        try:
            return self.score(question, images, solutions, how, max_tiles)
        except InputError:
            scores = []
            for solution in solutions:
                try:
                    scores.append(self.score(question, images, [solution], how, max_tiles)[0])
                except InputError:
                    scores.append(UNREADABLE)
            return scores

    def _slot_positions(self, ids: torch.Tensor, num_steps: int) -> list[int]:
        """The positions whose next token is an assistant slot: before each filled "+" (which follows the
        assistant's role prefix), and the last position (the generation prompt of the last slot)."""
        prefix = self.chat.tokenizer(self.chat.processor.template.roles[1], add_special_tokens=False)["input_ids"]
        n, tokens = len(prefix), ids.tolist()
        positions = [
            i + n - 1 for i in range(len(tokens) - n) if tokens[i : i + n] == prefix and tokens[i + n] == self.plus_id
        ]
        positions.append(len(tokens) - 1)
        if len(positions) != num_steps:
            raise InputError(
                f"found {len(positions)} assistant slots for {num_steps} steps: a step's text holds the "
                "assistant's role prefix"
            )
        return positions
