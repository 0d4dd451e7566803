"""Conversation templates (docs/prompts.md#templates): exact strings, MPT rendering, stop tokens, thinking mode."""

import pytest

from internvl.errors import ConfigError, InputError
from internvl.inputs import tokens
from internvl.inputs.template import TEMPLATES, THINKING_SYSTEM_PROMPT, get_template
from tests.inputs_fixtures import INTERNVL_ADDED_TOKENS

# The official default system message (conversation.py), written here, not imported from our module.
SYS_2_5 = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
SYS_LEGACY = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)

TURNS = [("user", "<image>\nWhat is it?"), ("assistant", "A cat."), ("user", "Its colour?"), ("assistant", None)]


def test_registered_templates():
    assert set(TEMPLATES) == {"internvl2_5", "Hermes-2", "internlm2-chat", "phi3-chat"}


def test_internvl2_5_multi_turn():
    t = get_template("internvl2_5")
    assert t.system_message == SYS_2_5
    assert t.render(TURNS) == (
        f"<|im_start|>system\n{SYS_2_5}<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\nIts colour?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert t.stop_token == "<|im_end|>" and t.stop_str is None


@pytest.mark.parametrize("name", ["Hermes-2", "internlm2-chat"])
def test_chatml_without_newline(name):
    t = get_template(name)
    assert t.system_message == SYS_LEGACY
    assert t.render(TURNS) == (
        f"<|im_start|>system\n{SYS_LEGACY}<|im_end|>"
        "<|im_start|>user\n<image>\nWhat is it?<|im_end|>"
        "<|im_start|>assistant\nA cat.<|im_end|>"
        "<|im_start|>user\nIts colour?<|im_end|>"
        "<|im_start|>assistant\n"
    )
    assert t.stop_token == "<|im_end|>"
    assert t.stop_str == ("<|endoftext|>" if name == "Hermes-2" else None)


def test_phi3_chat():
    t = get_template("phi3-chat")
    assert t.system_message == SYS_LEGACY
    assert t.render(TURNS[:2]) == (
        f"<|system|>\n{SYS_LEGACY}<|end|><|user|>\n<image>\nWhat is it?<|end|><|assistant|>\nA cat.<|end|>"
    )
    assert t.stop_token == "<|end|>"


def test_system_message_override_and_empty_message_is_generation_slot():
    t = get_template("internvl2_5", system_message="Be brief.")
    assert t.render([("user", "Hi"), ("assistant", "")]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert t.render([("user", "Hi")], system_message="") == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    assert TEMPLATES["internvl2_5"].system_message == SYS_2_5  # the registry is untouched


def test_thinking_mode():
    t = get_template("internvl2_5", thinking=True)
    assert t.system_message == THINKING_SYSTEM_PROMPT
    assert "<think>" in THINKING_SYSTEM_PROMPT and "</think>" in THINKING_SYSTEM_PROMPT
    assert t.render([("user", "2+2?"), ("assistant", None)]).startswith(
        f"<|im_start|>system\n{THINKING_SYSTEM_PROMPT}<|im_end|>\n"
    )
    # Thinking mode replaces any system message (the config's, say), like the official assignment.
    assert get_template("internvl2_5", thinking=True, system_message="x").system_message == THINKING_SYSTEM_PROMPT


def test_errors():
    with pytest.raises(ConfigError, match="unknown conversation template 'chatml'"):
        get_template("chatml")
    with pytest.raises(InputError, match="unknown role 'system'"):
        get_template("internvl2_5").render([("system", "x")])


def test_stop_token_ids(qwen2_tokenizer):
    assert qwen2_tokenizer.convert_tokens_to_ids(get_template("internvl2_5").stop_token) == 151645
    assert qwen2_tokenizer.convert_tokens_to_ids(get_template("Hermes-2").stop_str) == 151643


def test_special_token_strings():
    assert tokens.SPECIAL_TOKENS == INTERNVL_ADDED_TOKENS
    assert (tokens.IMAGE_PLACEHOLDER, tokens.VIDEO_PLACEHOLDER) == ("<image>", "<video>")
    assert tokens.image_block(2, 3) == "<img>" + "<IMG_CONTEXT>" * 6 + "</img>"
