"""Conversation templates by name: how a system message and turns become one prompt string.

Every template InternVL 2.x/3/3.5 (non-GPT-OSS) uses has the official `sep_style=MPT` (docs/prompts.md#templates):

    prompt = system_template.format(system_message=...) + sep
    for each (role, message):  role + message + sep   if message   else   role   (the generation slot)

The strings below are copied from the official `conversation.py`; `THINKING_SYSTEM_PROMPT` is not
(see its docstring).
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from internvl.errors import ConfigError, InputError

Role = Literal["user", "assistant"]

INTERNVL2_5_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)
LEGACY_SYSTEM_MESSAGE = (  # Hermes-2, internlm2-chat and phi3-chat (InternVL2 era)
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)

THINKING_SYSTEM_PROMPT = (
    "You are an AI assistant that answers by following a fixed protocol.\n\n"
    "1. First think the question through in detail: look at it from several angles, weigh possible "
    "solutions and reason step by step. Put this whole thinking process between <think> and </think> "
    "tags.\n\n"
    "2. After the thinking section, on a new line, give a clear, concise and direct answer to the "
    "question.\n\n"
    "Keep the thinking thorough but focused on the question; the final answer must stand on its own "
    "without referring to the thinking section."
)
"""System prompt for the InternVL3.5 "thinking mode" (model cards: set it as the system message and
sample with temperature 0.6).

The official text (`R1_SYSTEM_PROMPT` in the official repository's reasoning-data tools) is not
reproduced here. This is OUR paraphrase of what it asks for: reasoning inside `<think>…</think>`, then a
standalone answer after a newline. The models were trained with the official wording, so answers may
differ slightly from runs that use it; pass the official text as `system_message` if you have it.
"""


@dataclass(frozen=True)
class Template:
    """One MPT-style conversation template.

    `roles` are the literal prefixes of a user and an assistant turn; `sep` ends the system block and
    every finished turn. `stop_str` is an extra stop string some templates declare (Hermes-2).
    """

    name: str
    system_template: str  # contains "{system_message}"
    system_message: str
    roles: tuple[str, str]  # (user prefix, assistant prefix)
    sep: str
    stop_str: str | None = None

    @property
    def stop_token(self) -> str:
        """The string whose token id ends generation: `sep.strip()` (official `chat()`), e.g. `<|im_end|>`."""
        return self.sep.strip()

    def with_system_message(self, system_message: str) -> "Template":
        return replace(self, system_message=system_message)

    def render(self, turns: Sequence[tuple[Role, str | None]], system_message: str | None = None) -> str:
        """The prompt for `turns` (role, message) in order, exactly as the official `get_prompt()` (MPT).

        A message that is None or "" renders as the bare role prefix: the official generation slot
        (so an empty assistant answer cannot be rendered — the official code behaves the same).
        """
        return "".join(text for text, _ in self.render_pieces(turns, system_message))

    def render_pieces(
        self, turns: Sequence[tuple[Role, str | None]], system_message: str | None = None
    ) -> list[tuple[str, bool]]:
        """`render` as (text, is_message) pieces: the template's own text, and the caller's messages
        (the system message included), so that tokenisation can treat message text as untrusted."""
        system = self.system_message if system_message is None else system_message
        head, _, tail = self.system_template.partition("{system_message}")
        pieces = [(head, False), (system, True), (tail + self.sep, False)]
        prefix = {"user": self.roles[0], "assistant": self.roles[1]}
        for role, message in turns:
            if role not in prefix:
                raise InputError(f"unknown role {role!r} in a conversation: use 'user' or 'assistant'")
            if message:
                pieces += [(prefix[role], False), (message, True), (self.sep, False)]
            else:
                pieces.append((prefix[role], False))  # the generation slot
        return [(text, is_message) for text, is_message in pieces if text]


_CHATML_SYSTEM = "<|im_start|>system\n{system_message}"
_CHATML_ROLES = ("<|im_start|>user\n", "<|im_start|>assistant\n")

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        # InternVL2.5, 3 and 3.5 (Qwen3): ChatML with a newline after every <|im_end|>.
        Template("internvl2_5", _CHATML_SYSTEM, INTERNVL2_5_SYSTEM_MESSAGE, _CHATML_ROLES, "<|im_end|>\n"),
        # InternVL2-1B/40B: ChatML without the newline; the official template also stops on <|endoftext|>.
        Template("Hermes-2", _CHATML_SYSTEM, LEGACY_SYSTEM_MESSAGE, _CHATML_ROLES, "<|im_end|>", "<|endoftext|>"),
        # InternVL2-2B/8B/26B/76B (InternLM2 chat models).
        Template("internlm2-chat", _CHATML_SYSTEM, LEGACY_SYSTEM_MESSAGE, _CHATML_ROLES, "<|im_end|>"),
        # InternVL2-4B (Phi-3).
        Template(
            "phi3-chat",
            "<|system|>\n{system_message}",
            LEGACY_SYSTEM_MESSAGE,
            ("<|user|>\n", "<|assistant|>\n"),
            "<|end|>",
        ),
    )
}


def get_template(name: str, *, system_message: str | None = None, thinking: bool = False) -> Template:
    """The template registered as `name` (the `template` field of a model config).

    `system_message` replaces the template default (the config's `system_message`, when it has one);
    `thinking=True` (InternVL3.5 thinking mode) uses `THINKING_SYSTEM_PROMPT` instead, whatever
    `system_message` says — as the official recipe assigns `model.system_message = R1_SYSTEM_PROMPT`.
    """
    if name not in TEMPLATES:
        raise ConfigError(f"unknown conversation template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    template = TEMPLATES[name]
    if thinking:
        return template.with_system_message(THINKING_SYSTEM_PROMPT)
    if system_message is not None:
        return template.with_system_message(system_message)
    return template
