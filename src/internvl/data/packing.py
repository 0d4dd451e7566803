"""The packed dataset (docs/sft.md#packing): many conversations per row, up to a token and a tile budget.

Samples stream in from several datasets (chosen at random by weight) and wait in a small list of
open buffers, kept sorted by descending tile count. Each new sample joins the first buffer it fits
(`tiles <= num_images_expected` and `tokens <= max_packed_tokens`), else opens a new one. A buffer is
emitted as a pack when its tile count reaches `num_images_expected`, when it is exactly
`max_packed_tokens` long, or, while more than `max_buffer_size` buffers are open, the one with the
most tiles (`evict="fullest"`: the one closest to either budget). A sample longer than
`max_packed_tokens` is cut at image boundaries (`split_buffer`).

Each pack is a `EncodedSample` whose `document_ids` number its conversations 0, 1, ... so that the model
attends block-diagonally; `internvl.data.collate` turns packs into batches.

Sharding and determinism: every DataLoader worker of every rank reads its own slice
(`[shard::num_shards]`, shard = num_workers * rank + worker id, as the official code) of each
dataset's seeded shuffle, and draws datasets with a generator seeded by (seed, shard): the same
settings, seed and worker count give the same packs.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from internvl.data.sft import EncodedSample, SupervisedDataset
from internvl.errors import ConfigError
from internvl.inputs.prompt import IGNORE_INDEX, ImageTokenIds

log = logging.getLogger(__name__)

MIN_SUPERVISED_FRACTION = 1 / 256  # a cut piece with fewer supervised tokens than this is dropped (official)


@dataclass(frozen=True)
class PackingSettings:
    """Official names and meanings (`--num_images_expected` ...); defaults of the InternVL2.5 scripts."""

    num_images_expected: int = 48  # most tiles (dummy tiles included) in one pack
    max_packed_tokens: int = 16384  # most tokens in one pack
    max_buffer_size: int = 20  # open buffers kept before the fullest (by tiles) is emitted
    strict_mode: bool = False  # pad every pack to exactly num_images_expected tiles (zeros, flag 0)
    replacement: bool = False  # restart an exhausted dataset (a new shuffle) instead of dropping it
    allow_overflow: bool = False  # official: with many open buffers, merge into one even past the token budget
    # Which buffer leaves when more than max_buffer_size are open: "most_tiles" (official: the head of the
    # list) or "fullest" (ours: the largest share of either budget; fuller packs when tokens bind first).
    evict: Literal["most_tiles", "fullest"] = "most_tiles"
    seed: int = 0


@dataclass
class PackingStats:
    """What the packer did, for logs and tests (per worker process)."""

    samples: int = 0  # samples received
    packs: int = 0  # packs emitted
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_dropped: int = 0  # text lost by cuts (split_buffer) and dropped samples
    samples_too_many_tiles: int = 0  # pieces dropped for holding more than num_images_expected tiles


# --------------------------------------------------------------------------------- row surgery


def concat(*samples: EncodedSample) -> EncodedSample:
    """The samples one after the other in one row: documents and tile positions renumbered."""
    documents = np.cumsum([0] + [s.num_documents for s in samples[:-1]])
    tokens = np.cumsum([0] + [s.num_tokens for s in samples[:-1]])
    return EncodedSample(
        input_ids=torch.cat([s.input_ids for s in samples]),
        labels=torch.cat([s.labels for s in samples]),
        pixel_values=torch.cat([s.pixel_values for s in samples]),
        image_flags=torch.cat([s.image_flags for s in samples]),
        document_ids=torch.cat([s.document_ids + int(d) for s, d in zip(samples, documents)]),
        tile_token_index=torch.cat([s.tile_token_index + int(t) for s, t in zip(samples, tokens)]),
        sources=[source for s in samples for source in s.sources],
    )


def cut(sample: EncodedSample, start: int, stop: int) -> EncodedSample:
    """Tokens [start, stop) and the tiles tied to them; documents renumbered from 0."""
    keep = (sample.tile_token_index >= start) & (sample.tile_token_index < stop)
    document_ids = sample.document_ids[start:stop]
    first = int(document_ids[0]) if len(document_ids) else 0
    last = int(document_ids[-1]) if len(document_ids) else -1
    return EncodedSample(
        input_ids=sample.input_ids[start:stop],
        labels=sample.labels[start:stop],
        pixel_values=sample.pixel_values[keep],
        image_flags=sample.image_flags[keep],
        document_ids=document_ids - first,
        tile_token_index=sample.tile_token_index[keep] - start,
        sources=sample.sources[first : last + 1],
    )


def has_enough_supervision(sample: EncodedSample) -> bool:
    """Official `check_valid`: more than 1/256 of the tokens are supervised."""
    supervised = int((sample.labels != IGNORE_INDEX).sum())
    return sample.num_tokens > 0 and supervised / sample.num_tokens > MIN_SUPERVISED_FRACTION


def split_buffer(buffer: EncodedSample, max_tokens: int, ids: ImageTokenIds) -> list[EncodedSample]:
    """Cut a row longer than `max_tokens` into pieces of at most `max_tokens` (official `split_buffer`).

    If position `max_tokens` falls inside an `<img>...</img>` block, the left piece ends just before
    that block's `<img>` and the rest starts there; otherwise the left piece ends at `max_tokens` and
    the rest starts at the next `<img>` (the text in between is lost; no further image: the rest is
    lost). Left pieces are kept only with at least one tile and enough supervision. Tiles follow their
    `<img>` token (the official code cuts tiles by image count, which is only right for 1-tile images).
    """
    if buffer.num_tokens <= max_tokens:
        return [buffer]
    pieces: list[EncodedSample] = []
    while buffer.num_tokens > max_tokens:
        input_ids = buffer.input_ids
        starts = torch.nonzero(input_ids == ids.start).flatten().tolist()
        at_cut = int(input_ids[max_tokens])
        if at_cut in (ids.start, ids.context, ids.end):  # the cut falls inside an image block
            k = bisect.bisect_left(starts, max_tokens)
            left_end = starts[k] if at_cut == ids.start else starts[k - 1]
            right_start: int | None = left_end
        else:
            k = bisect.bisect_right(starts, max_tokens)
            left_end = max_tokens
            right_start = starts[k] if k < len(starts) else None
        if right_start == 0:  # one image block alone is longer than max_tokens: nothing can be kept
            log.warning("dropping an image of more than %d tokens (%s)", max_tokens, ", ".join(buffer.sources))
            right_start = None
        left = cut(buffer, 0, left_end)
        right = cut(buffer, right_start, buffer.num_tokens) if right_start is not None else None
        if left.num_tiles >= 1 and has_enough_supervision(left):
            pieces.append(left)
        if right is None or right.num_tiles == 0:
            break
        buffer = right
        if buffer.num_tokens <= max_tokens and has_enough_supervision(buffer):
            pieces.append(buffer)
            break
    return pieces


def pad_tiles(sample: EncodedSample, num_tiles: int) -> EncodedSample:
    """Strict mode: append zero tiles with flag 0 up to `num_tiles`."""
    missing = num_tiles - sample.num_tiles
    if missing <= 0:
        return sample
    zeros = torch.zeros((missing, *sample.pixel_values.shape[1:]), dtype=sample.pixel_values.dtype)
    return EncodedSample(
        input_ids=sample.input_ids,
        labels=sample.labels,
        pixel_values=torch.cat([sample.pixel_values, zeros]),
        image_flags=torch.cat([sample.image_flags, torch.zeros(missing, dtype=torch.long)]),
        document_ids=sample.document_ids,
        tile_token_index=torch.cat([sample.tile_token_index, torch.full((missing,), sample.num_tokens)]),
        sources=sample.sources,
    )


# --------------------------------------------------------------------------------- the packer


class Buffer:
    """An open pack: its samples are kept apart and joined once, when it leaves (joining at every
    addition would copy up to num_images_expected tiles, ~100 MB at 448 px, per sample)."""

    def __init__(self, parts: list[EncodedSample]) -> None:
        self.parts = parts
        self.num_tokens = sum(p.num_tokens for p in parts)
        self.num_tiles = sum(p.num_tiles for p in parts)

    @property
    def sources(self) -> list[str]:
        return [source for p in self.parts for source in p.sources]

    def joined(self) -> EncodedSample:
        return self.parts[0] if len(self.parts) == 1 else concat(*self.parts)


class Packer:
    """The buffer logic alone: `add` samples, receive finished packs; `flush` at the end."""

    def __init__(self, settings: PackingSettings, ids: ImageTokenIds) -> None:
        if settings.evict not in ("most_tiles", "fullest"):
            raise ConfigError(f"evict must be 'most_tiles' or 'fullest', got {settings.evict!r}")
        if settings.num_images_expected < 1 or settings.max_packed_tokens < 1 or settings.max_buffer_size < 0:
            raise ConfigError("num_images_expected and max_packed_tokens must be >= 1, max_buffer_size >= 0")
        self.settings = settings
        self.ids = ids
        self.buffers: list[Buffer] = []  # sorted by descending tile count
        self.stats = PackingStats()

    def add(self, sample: EncodedSample) -> list[EncodedSample]:
        s = self.settings
        self.stats.samples += 1
        self.stats.tokens_in += sample.num_tokens
        buffer = self._find_buffer(sample)
        merged = Buffer([sample] if buffer is None else [*buffer.parts, sample])
        if merged.num_tokens <= s.max_packed_tokens:
            pieces = [merged]
        else:  # only a sample longer than a pack (or allow_overflow) gets here
            cuts = split_buffer(merged.joined(), s.max_packed_tokens, self.ids)
            self.stats.tokens_dropped += merged.num_tokens - sum(p.num_tokens for p in cuts)
            pieces = [Buffer([p]) for p in cuts]
        ready = []
        for piece in pieces:
            if piece.num_tiles > s.num_images_expected:
                self.stats.samples_too_many_tiles += 1
                self.stats.tokens_dropped += piece.num_tokens
                log.warning(
                    "dropping a sample with %d tiles, more than num_images_expected=%d (%s)",
                    piece.num_tiles,
                    s.num_images_expected,
                    ", ".join(piece.sources),
                )
            elif piece.num_tokens >= s.max_packed_tokens:
                ready.append(piece)  # exactly max_packed_tokens long: a full pack
            else:
                self._insert(piece)
        while self.buffers and self.buffers[0].num_tiles == s.num_images_expected:
            ready.append(self.buffers.pop(0))
        while len(self.buffers) > s.max_buffer_size:
            ready.append(self.buffers.pop(self._eviction_index()))
        return [self._emit(pack) for pack in ready]

    def flush(self) -> list[EncodedSample]:
        """The open buffers, fullest (by tiles) first; the packer is empty afterwards."""
        ready, self.buffers = self.buffers, []
        return [self._emit(pack) for pack in ready]

    def _find_buffer(self, sample: EncodedSample) -> Buffer | None:
        """Pop the first open buffer with room for `sample` (official `find_buffer`)."""
        s = self.settings
        found = None
        for k, buffer in enumerate(self.buffers):
            if buffer.num_tiles + sample.num_tiles <= s.num_images_expected:
                if buffer.num_tokens + sample.num_tokens <= s.max_packed_tokens:
                    found = k
                    break
                if s.allow_overflow and len(self.buffers) >= s.max_buffer_size // 2:
                    found = k  # official: remember it, a later buffer that truly fits still wins
        return None if found is None else self.buffers.pop(found)

    def _eviction_index(self) -> int:
        s = self.settings
        if s.evict == "most_tiles":
            return 0
        fill = [max(b.num_tokens / s.max_packed_tokens, b.num_tiles / s.num_images_expected) for b in self.buffers]
        return int(np.argmax(fill))  # the first of equals: among them the one with most tiles

    def _insert(self, piece: Buffer) -> None:
        """Before the first buffer with fewer tiles: the list stays sorted by descending tiles."""
        at = next((k for k, b in enumerate(self.buffers) if b.num_tiles < piece.num_tiles), len(self.buffers))
        self.buffers.insert(at, piece)

    def _emit(self, buffer: Buffer) -> EncodedSample:
        pack = buffer.joined()
        self.stats.packs += 1
        self.stats.tokens_out += pack.num_tokens
        return pad_tiles(pack, self.settings.num_images_expected) if self.settings.strict_mode else pack


# --------------------------------------------------------------------------------- the dataset


class PackedDataset(IterableDataset):
    """Packs from a weighted mix of datasets; works in DataLoader workers and across ranks.

    `weights` default to the dataset lengths (official); see `internvl.data.sft.dataset_weights`.
    Without `replacement` the stream ends when every dataset of this shard is used up (open buffers are
    flushed); with it the stream is endless and each restart of a dataset reshuffles it.
    """

    def __init__(
        self,
        datasets: Sequence[SupervisedDataset],
        settings: PackingSettings = PackingSettings(),
        *,
        weights: Sequence[float] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        if not datasets:
            raise ConfigError("PackedDataset needs at least one dataset")
        weights = [float(len(ds)) for ds in datasets] if weights is None else [float(w) for w in weights]
        if len(weights) != len(datasets) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"need one non-negative weight per dataset with a positive sum, got {weights}")
        names = [ds.name for ds in datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"dataset names must be unique, got {names}")
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        self.datasets = list(datasets)
        self.weights = weights
        self.settings = settings
        self.ids = datasets[0].image_ids
        self.stats = PackingStats()  # of the last iteration in this process

    def shard(self) -> tuple[int, int]:
        """(this reader's shard, number of shards) over ranks x DataLoader workers."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return workers * self.rank + worker, workers * self.world_size

    def __iter__(self) -> Iterator[EncodedSample]:
        shard, num_shards = self.shard()
        rng = np.random.default_rng((self.settings.seed, shard))
        packer = Packer(self.settings, self.ids)
        self.stats = packer.stats
        active = list(range(len(self.datasets)))
        epochs = [0] * len(self.datasets)
        streams = [ds.iter_shard(shard, num_shards) for ds in self.datasets]
        while active:
            weights = np.array([self.weights[k] for k in active])
            if weights.sum() <= 0:
                break
            k = active[int(rng.choice(len(active), p=weights / weights.sum()))]
            sample = next(streams[k], None)
            if sample is None and self.settings.replacement:
                epochs[k] += 1
                streams[k] = self.datasets[k].iter_shard(shard, num_shards, epoch=epochs[k])
                sample = next(streams[k], None)
            if sample is None:  # used up (or nothing usable in this shard)
                active.remove(k)
                continue
            yield from packer.add(sample)
        yield from packer.flush()
