"""Preference pairs for MPO (docs/mpo.md#data): the official MPO JSONL, read through the SFT pipeline.

A line is ``{"image": path | [paths], "question": "...", "chosen": "...", "rejected": "...",
"answer_gt": "...", "system_prompt": "..."}`` (``video`` instead of ``image``, or no media at all, also
work; ``answer_gt`` and ``system_prompt`` are optional). Chosen and rejected each become the two-turn
conversation [human: question, gpt: answer] and are encoded exactly as an SFT sample, with the same
tiles (the official `internvl_chat_mpo.py` does the same). A meta JSON names the files, as for SFT.

A micro-batch of B pairs is 2B rows, the chosen answers first, then the rejected ones in the same
order, padded on the right; its tiles follow the rows. ``pair_keys`` ("annotation:line" per pair) name
the pairs for the reference log-probability cache (`internvl.train.mpo`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from internvl.config import InternVLConfig
from internvl.data.collate import Collator
from internvl.data.sft import (
    BadLinePolicy,
    EncodedSample,
    SampleSettings,
    SupervisedDataset,
    model_sample_settings,
    read_meta,
)
from internvl.errors import ConfigError, InputError
from internvl.inputs.prompt import Tokenizer
from internvl.inputs.tokens import load_tokenizer
from internvl.settings import from_dict

log = logging.getLogger(__name__)

SOURCE = "internvl.data.preference:pair_batches"  # how recipes name this source (`data.source`)


@dataclass
class PairEncoding:
    chosen: EncodedSample
    rejected: EncodedSample
    key: str  # "annotation:line": stable across runs, names the pair in the reference cache


def pair_records(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An MPO line -> the SFT records of its chosen and rejected conversations."""
    for name in ("question", "chosen", "rejected"):
        if not isinstance(record.get(name), str):
            raise InputError(f"an MPO line needs a string {name!r}")
    system = record.get("system_prompt")
    if system is not None and not isinstance(system, str):
        raise InputError("'system_prompt' must be a string")
    media = {key: record[key] for key in ("image", "video", "clip") if record.get(key) is not None}
    head = [{"from": "system", "value": system}] if system else []

    def conversation(answer: str) -> dict[str, Any]:
        turns = head + [{"from": "human", "value": record["question"]}, {"from": "gpt", "value": answer}]
        return {**media, "conversations": turns}

    return conversation(record["chosen"]), conversation(record["rejected"])


class PreferencePairs(torch.utils.data.Dataset):
    """One meta entry of MPO lines: `self[i]` -> `PairEncoding`, read lazily; bad lines raise
    `InputError` naming annotation:line (or are skipped, as the SFT pipeline does, with `on_bad_line: skip`)."""

    def __init__(self, samples: SupervisedDataset) -> None:
        self.samples = samples  # reads, tokenises and tiles each conversation

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> PairEncoding:
        where = self.samples.where(i)
        try:
            chosen, rejected = pair_records(self.samples.record(i))
            # The same random stream for both: identical tiles and frame choices.
            encoded_chosen = self.samples.build_sample(chosen, self.samples.rng(i), where)
            encoded_rejected = self.samples.build_sample(rejected, self.samples.rng(i), where)
        except InputError as e:
            message = str(e)
            raise InputError(message if message.startswith(where) else f"{where}: {message}") from e
        if not torch.equal(encoded_chosen.pixel_values, encoded_rejected.pixel_values):
            raise InputError(f"{where}: chosen and rejected got different tiles")
        return PairEncoding(encoded_chosen, encoded_rejected, where)

    def __getitem__(self, i: int) -> PairEncoding | None:
        if self.samples.settings.on_bad_line == "error":
            return self.load(i)
        try:
            return self.load(i)
        except InputError as e:
            self.samples.bad_lines += 1
            log.warning("skipping a bad MPO line (%d so far in %s): %s", self.samples.bad_lines, self.samples.name, e)
            return None


def collate_pairs(pairs: list[PairEncoding], collator: Collator) -> dict[str, Any]:
    """B pairs -> the contract of `internvl.train.data` with 2B rows (chosen first) + `pair_keys`."""
    if not pairs:
        raise InputError("cannot collate an empty batch of pairs")
    batch = collator([p.chosen for p in pairs] + [p.rejected for p in pairs])
    batch["pair_keys"] = [p.key for p in pairs]
    batch["num_samples"] = len(pairs)
    return batch


@dataclass
class PairDataOptions:
    """`data.options` of `internvl.data.preference:pair_batches` (docs/mpo.md#recipe)."""

    meta_path: str = ""  # the meta JSON naming the MPO JSONL files (the SFT meta format); required
    tokenizer: str = ""  # folder with the tokenizer files; the recipe defaults it to model.path
    pairs_per_batch: int = 4  # pairs per micro-batch (2x rows)
    max_tiles: int = SampleSettings.max_tiles  # dynamic-tiling limit per image (a meta entry may override it)
    max_length: int | None = SampleSettings.max_length  # longest conversation in tokens
    min_num_frame: int = SampleSettings.min_num_frame
    max_num_frame: int = SampleSettings.max_num_frame
    shuffle: bool = True  # a new order every epoch (seeded); false keeps file order
    on_bad_line: BadLinePolicy = SampleSettings.on_bad_line  # error | skip


def check_pair_options(options: dict[str, Any]) -> PairDataOptions:
    settings = from_dict(PairDataOptions, options, source="data.options")
    for required in ("meta_path", "tokenizer"):
        if not getattr(settings, required):
            raise ConfigError(f"data.options.{required} is required for {SOURCE}")
    if not Path(settings.meta_path).is_file():
        raise ConfigError(f"data.options.meta_path {settings.meta_path!r}: no such file (the meta JSON of your pairs)")
    if settings.pairs_per_batch < 1:
        raise ConfigError(f"data.options.pairs_per_batch must be at least 1, got {settings.pairs_per_batch}")
    return settings


class PairBatches:
    """This rank's micro-batches of pairs: every dataset's lines in one (seeded, per-epoch) order,
    dealt round-robin to the ranks. Lengths are known, so `max_steps: 0` means epochs."""

    def __init__(
        self,
        datasets: list[PreferencePairs],
        collator: Collator,
        pairs_per_batch: int,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool,
    ) -> None:
        self.datasets = datasets
        self.collator = collator
        self.pairs_per_batch = pairs_per_batch
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.index = [(d, i) for d, dataset in enumerate(datasets) for i in range(len(dataset))]
        self.skip = 0  # micro-batches the next pass starts after (a resumed run), none of them loaded

    def __len__(self) -> int:
        per_rank = len(self.index) // self.world_size
        return per_rank // self.pairs_per_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[tuple[int, int]]:
        """(dataset, line) of this rank's pairs in this epoch, whole micro-batches only."""
        positions = np.arange(len(self.index))
        if self.shuffle:
            positions = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.index))
        mine = positions[self.rank :: self.world_size][: len(self) * self.pairs_per_batch]
        return [self.index[int(p)] for p in mine]

    def batches_in_file_order(self) -> Iterator[dict[str, Any]]:
        """Every pair of every dataset (all ranks' shares), in file order, in micro-batches; the last one
        may be smaller. The reference pass of MPO reads the data this way."""
        pairs = (dataset[i] for dataset in self.datasets for i in range(len(dataset)))
        return self._collated(pairs, keep_last=True)

    def skip_batches(self, count: int) -> None:
        """Make the next pass start `count` micro-batches into this epoch without reading them, so that a
        resumed run does not decode the images of every pair it already trained on. Exact unless bad lines
        were skipped before that point (they shift the micro-batch boundaries by the lines left out)."""
        self.skip = count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self.order()[self.skip * self.pairs_per_batch :]
        self.skip = 0
        return self._collated((self.datasets[d][i] for d, i in order), keep_last=False)

    def _collated(self, pairs: Iterable[PairEncoding | None], keep_last: bool) -> Iterator[dict[str, Any]]:
        """Micro-batches of `pairs_per_batch` pairs (skipped lines are None and left out)."""
        batch: list[PairEncoding] = []
        for pair in pairs:
            if pair is None:
                continue
            batch.append(pair)
            if len(batch) == self.pairs_per_batch:
                yield collate_pairs(batch, self.collator)
                batch = []
        if batch and keep_last:
            yield collate_pairs(batch, self.collator)


def build_pair_datasets(meta_path: str, tokenizer: Tokenizer, settings: SampleSettings) -> list[PreferencePairs]:
    return [
        PreferencePairs(SupervisedDataset(spec, tokenizer, settings, k)) for k, spec in enumerate(read_meta(meta_path))
    ]


def pair_batches(
    options: dict[str, Any], model_config: InternVLConfig, rank: int, world_size: int, seed: int
) -> PairBatches:
    """Build this rank's source from `data.options` (see `PairDataOptions`)."""
    settings = check_pair_options(options)
    tokenizer = load_tokenizer(settings.tokenizer)
    samples = model_sample_settings(model_config, settings, seed)
    datasets = build_pair_datasets(settings.meta_path, tokenizer, samples)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return PairBatches(
        datasets, Collator(pad_id, "token"), settings.pairs_per_batch, rank, world_size, seed, settings.shuffle
    )
