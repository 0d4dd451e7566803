"""The SFT recipe's batch source for official-format data: meta JSON -> packed, collated micro-batches.

Named in a recipe as `data.source: internvl.data.loader:packed_batches`, with `data.options`:

    meta_path          the meta JSON (docs/sft.md#meta-file)                                  (required)
    tokenizer          folder with the tokenizer files                            (required)
    max_packed_tokens  tokens per pack (one pack = one micro-batch row)           (default 4096)
    num_images_expected  tiles per pack                                           (default 48)
    max_tiles          dynamic-tiling limit per image (a meta entry may override) (default 6)
    max_length         longest sample in tokens, before packing                   (default 4096)
    loss_reduction     token | sample | square                                    (default square)
    min_num_frame, max_num_frame  frames sampled per video                         (default 8, 32)
    num_workers        DataLoader worker processes                                (default 1)
    on_bad_line        error | skip                                               (default error)

Tokens per tile and tile size come from the model config, so data and model always agree.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

from torch.utils.data import DataLoader

from internvl.config import InternVLConfig
from internvl.data.collate import Collator
from internvl.data.packing import PackedDataset, PackingSettings
from internvl.data.sft import SFTSettings, build_datasets
from internvl.errors import ConfigError

KNOWN_OPTIONS = {"meta_path", "tokenizer", "max_packed_tokens", "num_images_expected", "max_tiles", "max_length",
                 "loss_reduction", "num_workers", "on_bad_line", "min_num_frame", "max_num_frame"}


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
        loader = DataLoader(self.packed, batch_size=1, collate_fn=self.collator, num_workers=self.num_workers,
                            persistent_workers=False)
        return iter(loader)


def packed_batches(
    options: dict[str, Any], model_config: InternVLConfig, rank: int, world_size: int, seed: int
) -> PackedBatches:
    """Build this rank's source (see the module docstring for the options)."""
    from internvl.chat import load_tokenizer

    unknown = set(options) - KNOWN_OPTIONS
    if unknown:
        raise ConfigError(f"data.options: unknown option(s) {sorted(unknown)}; known: {sorted(KNOWN_OPTIONS)}")
    for required in ("meta_path", "tokenizer"):
        if required not in options:
            raise ConfigError(f"data.options.{required} is required for internvl.data.loader:packed_batches")
    tokenizer = load_tokenizer(options["tokenizer"])
    settings = SFTSettings(
        template=model_config.template,
        num_image_token=model_config.num_image_token,
        tile_size=model_config.vision.image_size,
        max_tiles=int(options.get("max_tiles", 6)),
        use_thumbnail=model_config.use_thumbnail,
        max_length=int(options.get("max_length", 4096)),
        on_bad_line=options.get("on_bad_line", "error"),
        min_num_frame=int(options.get("min_num_frame", 8)),
        max_num_frame=int(options.get("max_num_frame", 32)),
        seed=seed,
    )
    datasets = build_datasets(options["meta_path"], tokenizer, settings)
    packing = PackingSettings(
        num_images_expected=int(options.get("num_images_expected", 48)),
        max_packed_tokens=int(options.get("max_packed_tokens", 4096)),
        seed=seed,
    )
    packed = PackedDataset(datasets, packing, rank=rank, world_size=world_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    collator = Collator(pad_id, options.get("loss_reduction", "square"))
    return PackedBatches(packed, collator, int(options.get("num_workers", 1)))
