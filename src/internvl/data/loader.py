"""The SFT recipe's batch source for official-format data: meta JSON -> packed, collated micro-batches.

Named in a recipe as `data.source: internvl.data.loader:packed_batches`; its `data.options` are the
typed `PackedDataOptions` below (an unknown or mistyped option is an error that names it). Defaults
are the official fine-tuning scripts' and live in one place: `SampleSettings` (samples) and
`PackingSettings` (packs). Tokens per tile and tile size come from the model config, so data and
model always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from torch.utils.data import DataLoader

from internvl.config import InternVLConfig
from internvl.data.collate import Collator, LossReduction
from internvl.data.packing import PackedDataset, PackingSettings
from internvl.data.sft import BadLinePolicy, SampleSettings, build_datasets, model_sample_settings
from internvl.errors import ConfigError
from internvl.inputs.tokens import load_tokenizer
from internvl.settings import from_dict


@dataclass
class PackedDataOptions:
    """`data.options` of `internvl.data.loader:packed_batches` (docs/sft.md)."""

    meta_path: str = ""  # the meta JSON naming the datasets (docs/sft.md#meta-file); required
    tokenizer: str = ""  # folder with the tokenizer files; the SFT recipe defaults it to model.path
    max_packed_tokens: int = PackingSettings.max_packed_tokens  # tokens per pack (one pack = one micro-batch row)
    num_images_expected: int = PackingSettings.num_images_expected  # tiles per pack
    max_tiles: int = SampleSettings.max_tiles  # dynamic-tiling limit per image (a meta entry may override it)
    max_length: int | None = SampleSettings.max_length  # longest sample in tokens, before packing
    loss_reduction: LossReduction = Collator.loss_reduction  # token | sample | square (docs/sft.md#loss-weights)
    min_num_frame: int = SampleSettings.min_num_frame  # frames sampled per video: randint(min, max)
    max_num_frame: int = SampleSettings.max_num_frame
    num_workers: int = 1  # DataLoader worker processes
    on_bad_line: BadLinePolicy = SampleSettings.on_bad_line  # error | skip


class PackedBatches:
    """One pass over the packed data per `iter()`; `set_epoch` reshuffles deterministically."""

    def __init__(self, packed: PackedDataset, collator: Collator, num_workers: int) -> None:
        self.packed = packed
        self.collator = collator
        self.num_workers = num_workers
        self.base_seed = packed.settings.seed

    def set_epoch(self, epoch: int) -> None:
        self.packed.settings = replace(self.packed.settings, seed=self.base_seed + epoch)
        for dataset in self.packed.datasets:
            dataset.settings = replace(dataset.settings, seed=self.base_seed + epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loader = DataLoader(
            self.packed, batch_size=1, collate_fn=self.collator, num_workers=self.num_workers, persistent_workers=False
        )
        return iter(loader)


SOURCE = "internvl.data.loader:packed_batches"  # how recipes name this loader (`data.source`)


def check_options(options: dict[str, Any]) -> PackedDataOptions:
    """`data.options` typed and checked before anything loads: unknown keys, bad types, missing paths."""
    settings = from_dict(PackedDataOptions, options, source="data.options")
    for required in ("meta_path", "tokenizer"):
        if not getattr(settings, required):
            raise ConfigError(f"data.options.{required} is required for {SOURCE} ({_HELP[required]})")
    if not Path(settings.meta_path).is_file():
        raise ConfigError(f"data.options.meta_path {settings.meta_path!r}: no such file ({_HELP['meta_path']})")
    return settings


def packed_batches(
    options: dict[str, Any], model_config: InternVLConfig, rank: int, world_size: int, seed: int
) -> PackedBatches:
    """Build this rank's source from `data.options` (see `PackedDataOptions`)."""
    settings = check_options(options)
    tokenizer = load_tokenizer(settings.tokenizer)
    samples = model_sample_settings(model_config, settings, seed)
    datasets = build_datasets(settings.meta_path, tokenizer, samples)
    packing = PackingSettings(
        num_images_expected=settings.num_images_expected, max_packed_tokens=settings.max_packed_tokens, seed=seed
    )
    packed = PackedDataset(datasets, packing, rank=rank, world_size=world_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return PackedBatches(packed, Collator(pad_id, settings.loss_reduction), settings.num_workers)


_HELP = {
    "meta_path": "the meta JSON of your SFT data, docs/sft.md#meta-file",
    "tokenizer": "the folder with the tokenizer files, usually the checkpoint's",
}
