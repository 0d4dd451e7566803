"""Rule rewards for online RL (`internvl train gspo`, docs/gspo.md#rewards).

A reward is a plain function `(response: str, question: Question) -> float`, named in the recipe as
`package.module:function` with its weight; the total reward of an answer is the weighted sum. `question`
is `internvl.data.mmpr.Question`: its `answer` is the ground truth and `world` the world's record, when
the question comes from the procedural world.

    gspo:
      rewards: {internvl.train.rewards:accuracy: 1.0, internvl.train.rewards:answer_format: 0.5}
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from internvl.errors import ConfigError

Reward = Callable[[str, Any], float]

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def final_answer(response: str) -> str | None:
    """The marked final answer: after "Final answer:" (the `en` chain-of-thought rules), else the last
    `\\boxed{...}`; None when the response marks none. Text before a `</think>` does not count."""
    from internvl.data.mmpr import parse_answer

    response = response.rpartition("</think>")[2]
    answer = parse_answer(response)
    if answer is not None:
        return answer
    boxed = BOXED.findall(response)
    return boxed[-1].strip() if boxed else None


def accuracy(response: str, question: Any) -> float:
    """1 when the answer is right, else 0. The answer is the marked final answer, or the whole response
    when none is marked (direct answers). The world's scorer judges world questions; others are checked
    as `internvl data mmpr` checks them (text, option letter, or number within 1e-3)."""
    from internvl.data.mmpr import answer_checker

    answer = final_answer(response)
    if answer is None:
        answer = response.rpartition("</think>")[2].strip()
    return float(answer_checker(question)(answer))


def answer_format(response: str, question: Any) -> float:
    """1 when the response has the chain-of-thought shape (a rationale, then one "Final answer: X" line)
    or ends its reasoning in `\\boxed{X}`, else 0."""
    return float(final_answer(response) is not None)


def load_reward(name: str) -> Reward:
    """The function `package.module:function`, refused with one line when it cannot be imported."""
    module_name, colon, function_name = name.partition(":")
    if not colon or not module_name or not function_name:
        raise ConfigError(f"reward {name!r}: expected 'package.module:function'")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"reward {name!r}: cannot import it ({exc})") from exc
    if not callable(function):
        raise ConfigError(f"reward {name!r} is not a function")
    return function  # type: ignore[no-any-return]
