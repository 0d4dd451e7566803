"""The nano tokenizer trains, saves as real checkpoint files and loads through transformers."""

from __future__ import annotations

from transformers import AutoTokenizer

from internvl.inputs.tokens import IMG_CONTEXT, SPECIAL_TOKENS
from internvl.nano.tokenizer import CHATML_TOKENS, save_tokenizer, train_tokenizer

TEXTS = [
    "What colour is the circle? The circle is red.",
    "How many triangles are there? There are 3 triangles.",
    "Which way does the red square move? It moves left.",
] * 50


def test_trains_saves_and_loads(tmp_path):
    tokenizer = train_tokenizer(TEXTS, vocab_size=400)
    save_tokenizer(tokenizer, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = [loaded.convert_tokens_to_ids(t) for t in CHATML_TOKENS + SPECIAL_TOKENS]
    assert ids == list(range(len(ids)))  # ChatML first, then the nine InternVL tokens in official order
    text = "<|im_start|>user\n<img>" + IMG_CONTEXT * 3 + "</img>\nHow many triangles?<|im_end|>\n"
    encoded = loaded(text, add_special_tokens=False).input_ids
    assert encoded.count(loaded.convert_tokens_to_ids(IMG_CONTEXT)) == 3
    assert loaded.decode(encoded) == text
    assert loaded.eos_token == "<|im_end|>" and loaded.pad_token == "<|endoftext|>"
    assert loaded.decode(loaded("moves left. 12 ünïcode").input_ids) == "moves left. 12 ünïcode"


def test_world_texts_make_the_system_message_a_few_tokens(tmp_path):
    """Every training sequence opens with the template's system message: the tokenizer must learn it
    (counted once it stayed byte-level, 137 tokens per sample)."""
    import json

    from internvl.inputs.template import get_template
    from internvl.nano.init import world_texts

    line = {
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the circle?"},
            {"from": "gpt", "value": "red"},
        ]
    }
    (tmp_path / "train.jsonl").write_text((json.dumps(line) + "\n") * 50)
    tokenizer = train_tokenizer(world_texts(tmp_path), vocab_size=600)
    assert len(tokenizer.encode(get_template("internvl2_5").system_message).ids) <= 12
