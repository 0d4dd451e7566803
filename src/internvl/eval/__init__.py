"""Evaluation harness: benchmark files -> answers -> scores -> reports.

formats   VLMEvalKit TSV and internvl JSONL readers -> EvalItem
prompts   the text prompt of each kind of question (MCQ, short answer, chain-of-thought)
scoring   pure scorers: exact, multiple choice, yes/no, numeric, ANLS, IoU
judge     LLM judge (MM-Vet style) over any OpenAI-compatible endpoint
runner    restartable runs: settings.json, predictions.jsonl, scores, summary
report    tables, charts, comparison of runs
cli       `internvl eval run | score | compare`
"""

from internvl.eval.formats import EvalItem, load_items, read_jsonl, read_tsv
from internvl.eval.judge import JUDGE_PROMPT, Judge, JudgeError, JudgeSettings
from internvl.eval.report import compare, format_compare_table, format_table, summarize
from internvl.eval.runner import Answerer, RunError, RunSettings, rescore, run_eval
from internvl.eval.scoring import METRICS, Score, ScoringSettings, score_answer

__all__ = [
    "JUDGE_PROMPT",
    "METRICS",
    "Answerer",
    "EvalItem",
    "Judge",
    "JudgeSettings",
    "JudgeError",
    "RunError",
    "RunSettings",
    "Score",
    "ScoringSettings",
    "compare",
    "format_compare_table",
    "format_table",
    "load_items",
    "read_jsonl",
    "read_tsv",
    "rescore",
    "run_eval",
    "score_answer",
    "summarize",
]
