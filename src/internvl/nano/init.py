"""Start the nano model: train its tokenizer on the world's text and write a random-weight checkpoint.

    python -m internvl.nano.init --data runs/nano/world-train --out runs/nano/init

The result is an original-layout checkpoint folder (config, safetensors, tokenizer files) that the
SFT recipe trains from (`model.path`). `--vision FILE` starts the encoder from stage 1's export
(`python -m internvl.nano.vision_pretrain`) instead of random weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

import torch

from internvl.data.sft import folder_records
from internvl.errors import InternVLError
from internvl.inputs.template import get_template
from internvl.model.internvl import InternVL
from internvl.nano.tokenizer import save_tokenizer, train_tokenizer
from internvl.nano.vision_pretrain import load_encoder
from internvl.presets import nano
from internvl.weights import save_model


def world_texts(data: Path) -> Iterator[str]:
    """Every conversation turn of the exported SFT JSONL files, each conversation with the template's
    system message: the system message opens every training sequence, so counting it once per
    conversation lets BPE merge it into a few tokens (counted once, it costs 137 tokens per sample)."""
    system = get_template("internvl2_5").system_message or ""
    for record in folder_records(data):
        yield system
        for turn in record["conversations"]:
            yield turn["value"]


def init_nano(data: Path, out: Path, vocab_size: int = 2048, seed: int = 0, vision: Path | None = None) -> Path:
    """Tokenizer trained on ``data``, random weights; the encoder from ``vision`` (stage 1's export) if given."""
    encoder = load_encoder(vision) if vision is not None else None
    tokenizer = train_tokenizer(world_texts(data), vocab_size=vocab_size)
    save_tokenizer(tokenizer, out)
    torch.manual_seed(seed)
    model = InternVL(nano(tokenizer.get_vocab_size(), encoder[0] if encoder else None))
    if encoder is not None:
        model.vision.load_state_dict(encoder[1])
    model.image_token_id = tokenizer.token_to_id("<IMG_CONTEXT>")
    save_model(model, out, layout="original")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of `internvl world generate` output")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vision", type=Path, help="pre-trained encoder (vision.safetensors of the vision stage)")
    args = parser.parse_args()
    try:
        init_nano(args.data, args.out, args.vocab_size, args.seed, args.vision)
    except InternVLError as exc:
        parser.exit(2, f"nano.init: error: {exc}\n")
    print(f"wrote the untrained nano model and its tokenizer to {args.out}")


if __name__ == "__main__":
    main()
