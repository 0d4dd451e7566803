"""A fresh nano starting checkpoint whose decoder has first learned to copy a name from its question.

    python benchmarks/nano_copy_init.py --out runs/copyfirst/init-plain
    python benchmarks/nano_copy_init.py --out runs/copyfirst/init-copy --copy-steps 600

Both start like `internvl.nano.init`: the shipped nano's encoder (stage 1's, frozen ever since) and tokenizer,
a random projector and decoder (seed 0; token embeddings at std 0.02). With `--copy-steps N` the decoder then
trains N steps on `benchmarks/nano_recall_probe.py`'s synthetic bar-chart text with 0-30 filler words before
the answer, where a fresh decoder learns to copy the question's name in about 200 steps and the shipped one
does not (docs/nano/README.md#copying-the-question). The warm-up and SFT stages then start from either folder,
so that one can see whether the copying survives them and what it buys.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nano_recall_probe import train_recall

import internvl
from internvl.model.internvl import InternVL
from internvl.shipped import SHIPPED
from internvl.weights import save_model


def fresh_nano(seed: int, embed_std: float) -> tuple[InternVL, object]:
    """(model, tokenizer): the shipped encoder and tokenizer, a random projector and decoder."""
    shipped = internvl.load(None)
    torch.manual_seed(seed)
    model = InternVL(shipped.model.config)
    model.vision.load_state_dict(shipped.model.vision.state_dict())
    model.image_token_id = shipped.model.image_token_id
    torch.nn.init.normal_(model.language.embed.weight, std=embed_std)
    return model.float(), shipped.tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--copy-steps", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embed-std", type=float, default=0.02)
    args = parser.parse_args()
    model, tokenizer = fresh_nano(args.seed, args.embed_std)
    if args.copy_steps:
        train_recall(model.language, tokenizer, args.copy_steps, batch=32, lr=1e-3, every=100, filler=30, label="copy")
    save_model(model, args.out, layout="original", overwrite=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SHIPPED["nano"] / name, args.out / name)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
