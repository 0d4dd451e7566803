"""LLM judge in the MM-Vet style: a chat model grades each open answer 0.0-1.0 against the ground truth.

The whole grading prompt is `JUDGE_PROMPT` below (our wording of the MM-Vet few-shot table as the official
MM-Vet grader uses it: `<AND>` / `<OR>` in the ground truth, scores in steps of 0.1, "complete the last cell"). It
is not the official MM-Vet text, so scores are close to, not identical with, official MM-Vet numbers;
to reproduce those, replace this constant with the official prompt.

Any OpenAI-compatible chat endpoint works (OpenAI, vLLM, `internvl serve`, ...): `base_url` and
`api_key` come from the arguments, else from `OPENAI_BASE_URL` / `OPENAI_API_KEY`. A reply must
start with a number in [0, 1]; otherwise the judge asks again with a higher temperature (0.0, then
+`temperature_step` per attempt, at most 1.0) up to `max_attempts` times, then gives 0.0 and keeps
the reply so the failure is visible. Judgements are cached in a JSONL file next to the predictions
(`JudgeCache`), so re-scoring a run never pays twice for the same (item, prediction, judge model).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from internvl.errors import InputError, InternVLError
from internvl.eval.jsonl import append_records, read_records

JUDGE_PROMPT = """\
Compare the ground truth with the prediction of an AI model and give the prediction a correctness \
score. In the ground truth, <AND> means the prediction is totally right only if it contains every \
element, and <OR> means it is totally right if it contains any one of the elements. The score is \
one of 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 or 1.0 (totally right). \
Complete only the empty last cell of the table: reply with the score and nothing else.

| Question | Ground truth | Prediction | Correctness |
| --- | --- | --- | --- |
| What values of x solve the equation in the image? | -1 <AND> -5 | x = 3 | 0.0 |
| What values of x solve the equation in the image? | -1 <AND> -5 | x = -1 | 0.5 |
| What values of x solve the equation in the image? | -1 <AND> -5 | x = -5 | 0.5 |
| What values of x solve the equation in the image? | -1 <AND> -5 | x = -5 or 5 | 0.5 |
| What values of x solve the equation in the image? | -1 <AND> -5 | x = -1 or x = -5 | 1.0 |
| Which city is shown in the photo? | Paris <OR> Paris, France | The photo shows Paris, the capital of France. | 1.0 |
| What colour is the bus? | red | The bus is blue with a red stripe. | 0.0 |
| What does the sign ask drivers to do? | slow down because children cross the road here | It asks drivers to slow down. | 0.6 |
| Why is the chart's last bar so low? | sales dropped in 2022 because the store closed for six months | The store sold less in the last year. | 0.4 |
| Explain why this comic is funny. | The cat ignores the expensive bed it was given and sleeps in the cardboard box the bed came in, which is what cat owners often see. | The cat prefers the box to the new bed, a familiar situation for cat owners. | 1.0 |
| {question} | {answer} | {prediction} | """

OK_SCORE = re.compile(r"(?:0(?:\.\d*)?|1(?:\.0*)?|\.\d+)")


class JudgeError(InternVLError):
    """The judge endpoint cannot be reached or refuses the request."""


@dataclass(frozen=True)
class JudgeSettings:
    """Where the judge lives and how hard it tries; `api_key`/`base_url` None: from the environment."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    max_attempts: int = 5
    temperature_step: float = 0.25
    max_tokens: int = 16
    timeout_s: float = 60.0
    max_retries: int = 2  # the client's own retries of failed requests (connection errors, 429, 5xx)


@dataclass(frozen=True)
class Judgement:
    """One grade: `score` in [0, 1] (0.0 when no reply could be parsed), the last reply, attempts made."""

    score: float
    reply: str
    attempts: int
    parsed: bool


def _cell(text: str) -> str:
    """A value that stays inside one markdown table cell."""
    return " ".join(text.replace("|", "/").split())


def build_judge_prompt(question: str, answer: str, prediction: str) -> str:
    """The full grading prompt for one item."""
    return JUDGE_PROMPT.format(question=_cell(question), answer=_cell(answer), prediction=_cell(prediction))


def parse_judge_reply(reply: str) -> float | None:
    """The score a reply starts with ("0.7", "1.0.", "| 0.3 |"), or None when it starts with none in [0, 1]."""
    text = reply.strip().strip("|*` \n")
    if not text:
        return None
    token = text.split()[0].rstrip(".,;|")
    if not OK_SCORE.fullmatch(token):
        return None
    value = float(token)
    return value if 0.0 <= value <= 1.0 else None


class Judge:
    """Grades answers through an OpenAI-compatible chat endpoint."""

    def __init__(self, config: JudgeSettings) -> None:
        try:
            import openai
        except ImportError as error:  # the judge is optional; everything else works without it
            raise JudgeError("the LLM judge needs the openai client: pip install 'openai>=1.30,<4'") from error
        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL")
        api_key = config.api_key or os.environ.get("OPENAI_API_KEY")
        if api_key is None:
            if base_url is None:
                raise JudgeError(
                    "no judge endpoint: pass a base URL for a local server, or set OPENAI_API_KEY for OpenAI"
                )
            api_key = "EMPTY"  # local OpenAI-compatible servers usually take any key
        self.config = config
        self.endpoint = base_url or "https://api.openai.com/v1"
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=config.timeout_s, max_retries=config.max_retries
        )

    def grade(self, question: str, answers: Sequence[str], prediction: str) -> Judgement:
        """Grade one prediction; several accepted answers are joined with <OR>."""
        prompt = build_judge_prompt(question, " <OR> ".join(answers), prediction)
        reply = ""
        for attempt in range(self.config.max_attempts):
            temperature = min(1.0, attempt * self.config.temperature_step)
            reply = self._ask(prompt, temperature)
            score = parse_judge_reply(reply)
            if score is not None:
                return Judgement(score, reply, attempt + 1, True)
        return Judgement(0.0, reply, self.config.max_attempts, False)

    def _ask(self, prompt: str, temperature: float) -> str:
        try:
            response = self._client.chat.completions.create(
                model=self.config.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=temperature,
                max_tokens=self.config.max_tokens,
            )
        except self._openai.OpenAIError as error:
            raise JudgeError(
                f"judge request to {self.endpoint} (model {self.config.model!r}) failed: {error}"
            ) from error
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""


class JudgeCache:
    """Judgements already paid for, keyed by (item id, judge model, answers, prediction), in a JSONL file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._done: dict[str, Judgement] = {}
        for number, record in enumerate(read_records(self.path, repair=True), start=1):
            try:
                self._done[record["key"]] = Judgement(**record["judgement"])
            except (KeyError, TypeError) as error:
                raise InputError(f"{self.path}: record {number}: not a judge cache record ({error})") from error

    @staticmethod
    def key(item_id: str, model: str, answers: Sequence[str], prediction: str) -> str:
        return json.dumps([item_id, model, list(answers), prediction], ensure_ascii=False)

    def get(self, key: str) -> Judgement | None:
        return self._done.get(key)

    def put(self, key: str, judgement: Judgement) -> None:
        self._done[key] = judgement
        with open(self.path, "a", encoding="utf-8") as file:
            append_records(file, [{"key": key, "judgement": asdict(judgement)}])
