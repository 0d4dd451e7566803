"""Where training batches come from: the batch contract, a resumable stream, and a synthetic source.

The contract (what the SFT data pipeline's collator emits, one micro-batch of one rank):

    input_ids     (B, T) long
    labels        (B, T) long, -100 = not supervised; NOT shifted (the loss shifts)
    loss_weight   (B, T) float, per-token weight, 0 where not supervised (token/sample/square applied)
    attention_mask(B, T) 1 = token, 0 = padding                       (optional: no padding)
    position_ids  (B, T) restarting at 0 for every packed sub-sample  (optional)
    document_ids  (B, T) packed sub-sample index of each token        (optional: one sample per row)
    pixel_values  (N, 3, H, W) every tile of the micro-batch, in token order   (optional)
    image_flags   (N,) 1 = real tile, 0 = dummy tile of a text-only sample      (optional)
    num_samples, num_tokens, num_padding_tokens   statistics (ints)

A *batch source* is any object with `__iter__` yielding such dicts for this rank, one pass (epoch) per
`iter()`. Optional: `__len__` (micro-batches per pass, lets `max_steps: 0` mean "epochs"),
`set_epoch(epoch)` (re-shuffle), `state_dict()` / `load_state_dict()` (resume without replaying).
Sources are named in the recipe by `data.source`: `synthetic`, or `package.module:function`, called as
`function(options=dict, model_config=InternVLConfig, rank=int, world_size=int, seed=int)`.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Iterator

import torch

from internvl.config import InternVLConfig
from internvl.errors import ConfigError

TENSOR_KEYS = (
    "input_ids",
    "labels",
    "loss_weight",
    "attention_mask",
    "position_ids",
    "document_ids",
    "pixel_values",
    "image_flags",
)


def build_batch_source(
    source: str, options: dict[str, Any], model_config: InternVLConfig, rank: int, world_size: int, seed: int
) -> Any:
    if not source:
        raise ConfigError(
            "data.source is not set: use internvl.data.loader:packed_batches with data.options.meta_path for your "
            "SFT data (docs/sft.md), or 'synthetic' for random smoke-test batches"
        )
    if source == "synthetic":
        try:
            return SyntheticPackedBatches(model_config, rank=rank, world_size=world_size, seed=seed, **options)
        except TypeError as exc:
            raise ConfigError(f"data.options for the synthetic source: {exc}") from exc
    if ":" not in source:
        raise ConfigError(f"data.source {source!r}: expected 'synthetic' or 'package.module:function'")
    module_name, _, function_name = source.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"data.source {source!r}: cannot import it ({exc})") from exc
    return function(options=dict(options), model_config=model_config, rank=rank, world_size=world_size, seed=seed)


class BatchStream:
    """Endless micro-batches from a source, passing through its epochs, with a resumable position.

    The position is (epoch, batches already taken in that epoch). Resuming hands the source its saved
    `state_dict`, or tells a source with `skip_batches(n)` where to start, or, for any other source,
    replays and drops the batches already consumed (exact for any source whose order depends only on its
    seed and epoch, but it reads every one of them).
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self.epoch = 0
        self.index = 0
        self._iterator: Iterator[dict] | None = None

    def _start_epoch(self) -> None:
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(self.epoch)
        self._iterator = iter(self.source)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> dict:
        if self._iterator is None:
            self._start_epoch()
        for attempt in range(2):
            try:
                batch = next(self._iterator)  # type: ignore[arg-type]
                self.index += 1
                return batch
            except StopIteration:
                if attempt == 1 or self.index == 0:
                    raise ConfigError("the data source yielded no batches for this rank (empty dataset?)") from None
                self.epoch += 1
                self.index = 0
                self._start_epoch()
        raise AssertionError("unreachable")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": self.epoch, "index": self.index}
        if hasattr(self.source, "state_dict"):
            state["source"] = self.source.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._start_epoch()
        if "source" in state and hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state["source"])
            self._iterator = iter(self.source)
            return
        if hasattr(self.source, "skip_batches"):
            self.source.skip_batches(self.index)
            self._iterator = iter(self.source)
            return
        for _ in range(self.index):
            next(self._iterator)  # type: ignore[arg-type]


class SyntheticPackedBatches:
    """Random packed micro-batches in the exact shape of the SFT contract, for tests, smoke runs and benchmarks.

    Each row of `seq_len` tokens packs `samples_per_row` documents; each document is prompt text, an
    image (`<IMG_CONTEXT>` x tokens_per_tile per tile) for the first `tiles_per_row` tiles spread over the
    documents, more prompt, then a supervised answer. Weights are square-root (1/sqrt(#answer tokens)).
    `padding` tokens of right padding end every row; `dummy_tiles` tiles with image_flags 0 are added.
    The global stream of micro-batches depends only on (seed, index); rank r takes indices r, r+W, ...
    so that W ranks × 1 micro-batch see exactly what 1 rank × W accumulated micro-batches sees.
    """

    def __init__(
        self,
        model_config: InternVLConfig,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        batches: int = 1000,
        rows: int = 1,
        seq_len: int = 256,
        samples_per_row: int = 2,
        tiles_per_row: int = 1,
        padding: int = 0,
        dummy_tiles: int = 0,
        answer_share: float = 0.3,
        shuffle: bool = False,
    ) -> None:
        if model_config.image_token_id is None and tiles_per_row > 0:
            raise ConfigError("synthetic data with tiles needs model.image_token_id")
        self.config = model_config
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.batches, self.rows, self.seq_len = batches, rows, seq_len
        self.samples_per_row, self.tiles_per_row = samples_per_row, tiles_per_row
        self.padding, self.dummy_tiles, self.answer_share = padding, dummy_tiles, answer_share
        self.shuffle = shuffle
        self.epoch = 0
        self.tokens_per_tile = model_config.num_image_token
        image_tokens = tiles_per_row * self.tokens_per_tile
        if image_tokens + samples_per_row * 4 + padding > seq_len:
            raise ConfigError(
                f"synthetic data: {tiles_per_row} tiles x {self.tokens_per_tile} tokens + {samples_per_row} samples "
                f"+ {padding} padding do not fit seq_len {seq_len}"
            )

    def __len__(self) -> int:
        return self.batches // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        order = list(range(len(self) * self.world_size))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(len(order), generator=g).tolist()
        for position in range(self.rank, len(order), self.world_size):
            yield self.make_batch(order[position])

    def make_batch(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        text_high = (
            self.config.image_token_id if self.config.image_token_id is not None else self.config.text.vocab_size
        )
        text_high = min(text_high, self.config.text.vocab_size)
        rows = [self._row(g, text_high) for _ in range(self.rows)]
        batch: dict[str, Any] = {
            key: torch.stack([r[key] for r in rows])
            for key in ("input_ids", "labels", "loss_weight", "attention_mask", "position_ids", "document_ids")
        }
        tiles = self.rows * self.tiles_per_row
        size = self.config.vision.image_size
        if tiles + self.dummy_tiles > 0:
            batch["pixel_values"] = torch.randn(tiles + self.dummy_tiles, 3, size, size, generator=g)
            batch["image_flags"] = torch.cat(
                [torch.ones(tiles, dtype=torch.long), torch.zeros(self.dummy_tiles, dtype=torch.long)]
            )
        real = int(batch["attention_mask"].sum())
        batch["num_samples"] = self.rows * self.samples_per_row
        batch["num_tokens"] = real
        batch["num_padding_tokens"] = batch["input_ids"].numel() - real
        return batch

    def _row(self, g: torch.Generator, text_high: int) -> dict[str, torch.Tensor]:
        n = self.samples_per_row
        budget = self.seq_len - self.padding - self.tiles_per_row * self.tokens_per_tile
        # split the text budget into n documents of at least 4 tokens
        free = budget - 4 * n
        cuts = sorted(torch.randint(0, free + 1, (n - 1,), generator=g).tolist())
        lengths = [b - a + 4 for a, b in zip([0] + cuts, cuts + [free])]
        tiles = [self.tiles_per_row // n + (1 if i < self.tiles_per_row % n else 0) for i in range(n)]
        ids, labels, weights, positions, documents = [], [], [], [], []
        for doc, (text_len, doc_tiles) in enumerate(zip(lengths, tiles)):
            answer = max(1, int(text_len * self.answer_share))
            prompt = text_len - answer
            head = prompt // 2
            doc_ids = torch.randint(0, text_high, (text_len,), generator=g).tolist()
            image = [self.config.image_token_id] * (doc_tiles * self.tokens_per_tile)
            tokens = doc_ids[:head] + image + doc_ids[head:]
            supervised = [False] * (len(tokens) - answer) + [True] * answer
            ids += tokens
            labels += [t if s else -100 for t, s in zip(tokens, supervised)]
            weights += [1.0 / math.sqrt(answer) if s else 0.0 for s in supervised]
            positions += list(range(len(tokens)))
            documents += [doc] * len(tokens)
        pad = self.padding
        mask = [1] * len(ids) + [0] * pad
        ids += [0] * pad
        labels += [-100] * pad
        weights += [0.0] * pad
        positions += [0] * pad
        documents += [n] * pad
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "loss_weight": torch.tensor(weights),
            "attention_mask": torch.tensor(mask),
            "position_ids": torch.tensor(positions),
            "document_ids": torch.tensor(documents),
        }
