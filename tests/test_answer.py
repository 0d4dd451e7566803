"""The one answer policy (internvl.answer) on Qwen2's real tokenizer: stop rules, the official
decoding and shaping, and streams whose pieces join to the same answer."""

from __future__ import annotations

import pytest

from internvl.answer import AnswerPolicy
from internvl.generate import GenerationConfig


@pytest.fixture()
def policy(qwen2_tokenizer):
    im_end = qwen2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    return AnswerPolicy(qwen2_tokenizer, "<|im_end|>", im_end, stop_str="<|endoftext|>")


def test_settings_always_stop_at_the_templates_token_and_string(policy):
    config = policy.settings(GenerationConfig(), stop_strings=("END",), max_new_tokens=5)
    assert config.stop_token_ids[-1] == policy.stop_token_id and config.max_new_tokens == 5
    assert config.stop_strings == ("END", "<|endoftext|>")
    assert policy.settings(config).stop_token_ids.count(policy.stop_token_id) == 1  # not added twice


def test_a_stop_string_that_is_one_special_token_is_a_stop_id(policy, qwen2_tokenizer):
    config = policy.settings(GenerationConfig(), stop_strings=("END",))
    assert policy.stop_ids(config) == {policy.stop_token_id, qwen2_tokenizer.convert_tokens_to_ids("<|endoftext|>")}


@pytest.mark.parametrize("text", ["  A red circle. ", "Two.\n\nThree", "3 END 4", "héllo wörld  "])
def test_streamed_pieces_join_to_the_answer(policy, qwen2_tokenizer, text):
    config = policy.settings(GenerationConfig(), stop_strings=("END",))
    tokens = qwen2_tokenizer.encode(text) + [policy.stop_token_id]
    expected = text.split("END")[0].strip()
    assert policy.answer(tokens, config) == expected
    stream = policy.stream(config)
    pieces = [stream.push(t) for t in tokens if t != policy.stop_token_id] + [stream.finish()]
    assert "".join(pieces) == expected
