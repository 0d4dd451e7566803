"""A small byte-level BPE tokenizer for the nano model, with the special tokens of the real models.

The nano model must exercise the same code paths as a released checkpoint, so its tokenizer is saved
as the files a Qwen2-based InternVL ships (`tokenizer.json`, `tokenizer_config.json`), loads through
`transformers.AutoTokenizer`, and has the ChatML tokens (`<|endoftext|>`, `<|im_start|>`,
`<|im_end|>`) followed by the nine InternVL tokens in the official order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from internvl.inputs.tokens import SPECIAL_TOKENS

CHATML_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> Tokenizer:
    """Byte-level BPE over `texts`; ids 0..2 are the ChatML tokens, then the InternVL tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    special = list(CHATML_TOKENS) + list(SPECIAL_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, folder: str | Path) -> None:
    """Write tokenizer.json + tokenizer_config.json the way a Qwen2-based checkpoint has them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    added = {}
    for token in CHATML_TOKENS + SPECIAL_TOKENS:
        index = tokenizer.token_to_id(token)
        added[str(index)] = {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "additional_special_tokens": list(SPECIAL_TOKENS),
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
