"""Text prompts sent to the model for each kind of question, in one place.

The wording follows the InternVL evaluation code and VLMEvalKit's InternVL prompts (docs/evaluation.md): a
multiple-choice question is `[hint\\n]question\\nA. ...\\nB. ...\\n` + the letter instruction; a short
answer question gets the "single word or phrase" instruction; open questions (judged, grounding) go
as they are. Chain-of-thought uses the MMPR `en` instruction (docs/preference-and-rewards.md#reasoning-instruction), whose "Final answer:"
trigger is what `scoring.find_final_answer` looks for.
"""

from __future__ import annotations

from collections.abc import Mapping

MCQ_SUFFIX = "Answer with the option's letter from the given choices directly."
MCQ_SUFFIX_ZH = "请直接回答选项字母。"
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
YES_NO_SUFFIX = "Please answer Yes or No."
BOXED_SUFFIX = "Please answer the question and put the final answer within \\boxed{}."

# Short-answer instructions removed before a question is wrapped for chain-of-thought (docs/preference-and-rewards.md#reasoning-instruction).
SHORT_ANSWER_INSTRUCTIONS = (SHORT_ANSWER_SUFFIX, MCQ_SUFFIX, YES_NO_SUFFIX, BOXED_SUFFIX, MCQ_SUFFIX_ZH)

COT_TEMPLATE = (
    "Your task is to answer the question below. Give step by step reasoning before you answer, "
    'and when you\'re ready to answer, please use the format "Final answer: .."'
    "\n\nQuestion:\n\n{question}"
)

# Metrics whose questions get the short-answer instruction; the others ("judge", "iou") are
# open-ended and are sent unchanged.
SHORT_ANSWER_METRICS = frozenset({"exact", "yorn", "numeric", "anls"})


def has_cjk(text: str) -> bool:
    """True when the text holds CJK ideographs (VLMEvalKit then asks for the letter in Chinese)."""
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def build_prompt(question: str, metric: str, options: Mapping[str, str] | None = None, hint: str | None = None) -> str:
    """The text prompt for one question (images are passed separately, never as placeholders)."""
    text = question.strip()
    if hint:
        text = f"{hint.strip()}\n{text}"
    if metric == "mcq":
        for letter, option in (options or {}).items():
            text += f"\n{letter}. {option}"
        suffix = MCQ_SUFFIX_ZH if has_cjk(text) else MCQ_SUFFIX
    elif metric in SHORT_ANSWER_METRICS:
        suffix = SHORT_ANSWER_SUFFIX
    else:
        return text
    if text.endswith(suffix):
        return text
    return f"{text}\n{suffix}"


def build_cot_prompt(prompt: str) -> str:
    """Wrap a prompt for chain-of-thought: drop a trailing short-answer instruction, ask for reasoning.

    A prompt that already asks for reasoning (the world's reasoning family does) is returned unchanged,
    so that `--cot` never wraps the instruction twice."""
    text = prompt.rstrip()
    for instruction in SHORT_ANSWER_INSTRUCTIONS:
        if text.endswith(instruction):
            text = text[: -len(instruction)].rstrip()
            break
    if text.startswith(COT_TEMPLATE.split("{question}")[0]):
        return text
    return COT_TEMPLATE.format(question=text)
