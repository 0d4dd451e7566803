"""Restartable runs, reports, comparison and the CLI, with deterministic fake answerers (no model)."""

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import internvl
from internvl.errors import InputError
from internvl.eval.cli import main
from internvl.eval.formats import EvalItem, read_jsonl, read_tsv
from internvl.eval.prompts import COT_TEMPLATE
from internvl.eval.report import compare, format_compare_table
from internvl.eval.runner import RunError, RunSettings, read_predictions, rescore, run_eval

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_bytes(colour=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def data_file(tmp_path) -> Path:
    """12 items: q0-q3 animals (mcq), q4-q7 counting (numeric), q8-q11 colours (yes/no)."""
    (tmp_path / "img.png").write_bytes(png_bytes())
    records = []
    for i in range(4):
        records.append(
            {
                "id": f"q{i}",
                "question": f"Animal {i}?",
                "options": ["cat", "dog", "cow"],
                "answer": "ABC"[i % 3],
                "image": "img.png",
                "category": "animals",
            }
        )
    for i in range(4, 8):
        records.append(
            {
                "id": f"q{i}",
                "question": f"How many {i}?",
                "answer": str(i),
                "metric": "numeric",
                "image": "img.png",
                "category": "counting",
            }
        )
    for i in range(8, 12):
        records.append(
            {"id": f"q{i}", "question": f"Red {i}?", "answer": "yes" if i % 2 else "no", "category": "colours"}
        )
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def right(item: EvalItem) -> str:
    """A correct answer in the verbose forms the scorers must understand."""
    if item.metric == "mcq":
        return f"The answer is ({item.answer})."
    if item.metric == "numeric":
        return f"There are {item.answer} items."
    return f"{item.answer.capitalize()}."


def wrong(item: EvalItem) -> str:
    return {"mcq": "E", "numeric": "1000", "yorn": "Maybe"}[item.metric]


CORRECT = {"q0", "q1", "q2", "q3", "q4", "q5", "q8"}  # animals 4/4, counting 2/4, colours 1/4 -> 7/12


class Recorder:
    """Answers from a fixed correct set; records the batches it saw; can stop after `fail_after` calls."""

    def __init__(self, correct=CORRECT, fail_after=None, error=KeyboardInterrupt):
        self.correct, self.fail_after, self.error = correct, fail_after, error
        self.batches: list[list[str]] = []

    def __call__(self, items):
        if self.fail_after is not None and len(self.batches) == self.fail_after:
            raise self.error()
        self.batches.append([item.id for item in items])
        for item in items:
            assert all(im.size == (8, 8) for im in item.load_images())
        return [right(item) if item.id in self.correct else wrong(item) for item in items]

    @property
    def seen(self):
        return [i for batch in self.batches for i in batch]


def run(data_file, out, answerer, **kwargs):
    kwargs.setdefault("progress", False)
    return run_eval(read_jsonl(data_file), answerer, out, data_path=str(data_file), **kwargs)


# --- one run -------------------------------------------------------------------------------------------------


def test_run_writes_predictions_settings_summary_chart_and_table(data_file, tmp_path, capsys):
    settings = RunSettings(model="tiny", max_tiles=4, template="internvl2_5", system_prompt="Be brief.")
    answerer = Recorder()
    summary = run(data_file, tmp_path / "run", answerer, settings=settings, batch_size=5)

    assert answerer.batches == [["q0", "q1", "q2", "q3", "q4"], ["q5", "q6", "q7", "q8", "q9"], ["q10", "q11"]]
    assert summary["overall"] == round(100 * 7 / 12, 2) == 58.33
    assert {k: v["score"] for k, v in summary["categories"].items()} == {
        "animals": 100.0,
        "colours": 25.0,
        "counting": 50.0,
    }
    assert summary["metrics"]["numeric"] == {"n": 4, "n_scored": 4, "score": 50.0}
    run_dir = tmp_path / "run"
    saved = json.loads((run_dir / "settings.json").read_text())
    assert saved["settings"] == {**settings.to_json()} and saved["settings"]["template"] == "internvl2_5"
    assert saved["settings"]["generation"]["do_sample"] is False
    assert saved["data"]["items"] == 12 and saved["data"]["path"] == str(data_file)
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 12 and json.loads(lines[0])["prediction"] == "The answer is (A)."
    scores = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert scores[0]["extracted"] == "A" and scores[0]["score"] == 1.0
    assert (run_dir / "chart.png").read_bytes().startswith(PNG_MAGIC)
    table = capsys.readouterr().out
    assert "animals" in table and "100.00" in table and "overall" in table and "58.33" in table


def test_half_right_answerer_scores_fifty(data_file, tmp_path):
    half = {f"q{i}" for i in range(0, 12, 2)}
    summary = run(data_file, tmp_path / "run", Recorder(correct=half), print_table=False)
    assert summary["overall"] == 50.0
    assert all(group["score"] == 50.0 for group in summary["categories"].values())


def test_run_over_a_vlmevalkit_tsv(tmp_path):
    image = base64.b64encode(png_bytes()).decode()
    header = "index\tquestion\tA\tB\tanswer\tcategory\timage\n"
    rows = "".join(f"{i}\tQ{i}?\tcat\tdog\t{'AB'[i % 2]}\tc{i % 2}\t{image if i == 0 else '0'}\n" for i in range(4))
    (tmp_path / "split.tsv").write_text(header + rows, encoding="utf-8")
    items = read_tsv(tmp_path / "split.tsv")
    summary = run_eval(
        items, lambda batch: ["B. dog"] * len(batch), tmp_path / "run", progress=False, print_table=False
    )
    assert summary["overall"] == 50.0 and summary["categories"]["c1"]["score"] == 100.0


# --- restart -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_restart_after_an_interrupted_run(data_file, tmp_path, error):
    out = tmp_path / "run"
    first = Recorder(fail_after=2, error=error)
    with pytest.raises(error):
        run(data_file, out, first, batch_size=3)
    done = read_predictions(out / "predictions.jsonl")
    assert sorted(done) == sorted(first.seen) and len(done) == 6  # two batches saved before the failure
    assert not (out / "summary.json").exists()

    second = Recorder()
    summary = run(data_file, out, second, batch_size=3, print_table=False)
    assert second.seen == [f"q{i}" for i in range(6, 12)]  # only what was missing
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(f"q{i}" for i in range(12))
    assert summary["overall"] == 58.33

    third = Recorder()
    run(data_file, out, third, print_table=False)  # complete: nothing to answer, scored again
    assert third.seen == []


def test_restart_repairs_a_torn_last_line(data_file, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(data_file, out, Recorder(fail_after=1), batch_size=2)
    with open(out / "predictions.jsonl", "a", encoding="utf-8") as file:
        file.write('{"id": "q2", "predic')  # the process died mid-write
    second = Recorder()
    run(data_file, out, second, batch_size=20, print_table=False)
    assert second.seen == [f"q{i}" for i in range(2, 12)]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 12


def test_a_malformed_line_inside_the_predictions_is_an_error(data_file, tmp_path):
    out = tmp_path / "run"
    run(data_file, out, Recorder(), limit=2, print_table=False)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    (out / "predictions.jsonl").write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(InputError, match="predictions.jsonl: line 2: malformed record"):
        run(data_file, out, Recorder(), print_table=False)


def test_a_run_with_other_settings_or_data_is_refused(data_file, tmp_path):
    out = tmp_path / "run"
    run(data_file, out, Recorder(), limit=3, print_table=False)
    with pytest.raises(RunError, match=r"chain_of_thought: False -> True.*generation.max_new_tokens: 1024 -> 64"):
        run(
            data_file,
            out,
            Recorder(),
            settings=RunSettings(chain_of_thought=True, generation={**RunSettings().generation, "max_new_tokens": 64}),
        )
    items = read_jsonl(data_file)[:5]
    with pytest.raises(RunError, match="data: .*other items or prompts"):
        run_eval(items, Recorder(), out, progress=False)


def test_limit_then_extend_in_the_same_folder(data_file, tmp_path):
    out = tmp_path / "run"
    summary = run(data_file, out, Recorder(), limit=4, print_table=False)
    assert summary["n"] == 4 and summary["overall"] == 100.0
    rest = Recorder()
    summary = run(data_file, out, rest, print_table=False)
    assert rest.seen == [f"q{i}" for i in range(4, 12)] and summary["n"] == 12


def test_answerer_must_return_one_string_per_item(data_file, tmp_path):
    with pytest.raises(RunError, match="returned 1 answers for a batch of 2"):
        run(data_file, tmp_path / "run", lambda batch: ["x"], batch_size=2)


def test_duplicate_ids_are_refused(tmp_path):
    items = [EvalItem(id="1", question="a"), EvalItem(id="1", question="b")]
    with pytest.raises(RunError, match="two items have the id '1'"):
        run_eval(items, lambda b: ["x"] * len(b), tmp_path / "run", progress=False)


def test_chain_of_thought_wraps_prompts(data_file, tmp_path):
    prompts = []

    def answerer(items):
        prompts.extend(item.prompt for item in items)
        return [f"Let me think.\nFinal answer: {item.answer}" for item in items]

    summary = run(data_file, tmp_path / "run", answerer, settings=RunSettings(chain_of_thought=True), print_table=False)
    assert all(p.startswith(COT_TEMPLATE.split("{")[0]) for p in prompts)
    assert "Answer with the option's letter" not in prompts[0] and "A. cat" in prompts[0]
    assert summary["overall"] == 100.0
    record = json.loads((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()[0])
    assert record["prompt"] == prompts[0]


def test_progress_bar_on_stderr(data_file, tmp_path, capsys):
    run(data_file, tmp_path / "run", Recorder(), progress=True, print_table=False)
    err = capsys.readouterr().err
    assert "12/12" in err and "item/s" in err


# --- rescore and compare ---------------------------------------------------------------------------------------


def test_rescore_with_other_tolerance_and_corrected_answers(data_file, tmp_path):
    from internvl.eval.scoring import ScoringSettings

    out = tmp_path / "run"
    run(
        data_file,
        out,
        lambda items: ["There are 5 items." if i.metric == "numeric" else right(i) for i in items],
        print_table=False,
    )
    assert json.loads((out / "summary.json").read_text())["categories"]["counting"]["score"] == 25.0  # only q5 (gold 5)
    tolerant = rescore(out / "predictions.jsonl", scoring=ScoringSettings(numeric_rel_tol=0.25), print_table=False)
    assert tolerant["categories"]["counting"]["score"] == 75.0  # 5 is within 25 % of gold 4, 5 and 6, not of gold 7
    assert tolerant["scoring"]["numeric_rel_tol"] == 0.25 and tolerant["settings"]["model"] is None
    assert json.loads((out / "summary.json").read_text()) == tolerant  # rewritten in place

    corrected = data_file.parent / "corrected.jsonl"
    corrected.write_text(data_file.read_text().replace('"answer": "7"', '"answer": "5"'), encoding="utf-8")
    fixed = rescore(out / "predictions.jsonl", tmp_path / "rescored", items=read_jsonl(corrected), print_table=False)
    assert fixed["categories"]["counting"]["score"] == 50.0  # q5 and the corrected q7
    assert (tmp_path / "rescored" / "chart.png").exists() and (tmp_path / "rescored" / "scores.jsonl").exists()


def test_rescore_refuses_predictions_for_unknown_ids(data_file, tmp_path):
    run(data_file, tmp_path / "run", Recorder(), print_table=False)
    with pytest.raises(RunError, match="12 predictions have ids not in the data"):
        rescore(tmp_path / "run" / "predictions.jsonl", items=[EvalItem(id="other", question="q")], print_table=False)


def test_compare_runs_side_by_side(data_file, tmp_path):
    run(data_file, tmp_path / "a" / "run", Recorder(), print_table=False)
    run(data_file, tmp_path / "b" / "run", Recorder(correct={"q6", "q7"}), print_table=False)
    comparison = compare([tmp_path / "a" / "run", tmp_path / "b" / "run"])
    assert comparison["runs"] == ["a/run", "b/run"]  # same folder names: parents added
    assert comparison["rows"]["counting"] == {"a/run": 50.0, "b/run": 50.0}
    assert comparison["rows"]["overall"] == {"a/run": 58.33, "b/run": 16.67}
    table = format_compare_table(comparison).splitlines()
    assert table[0].split() == ["category", "a/run", "b/run"]
    assert table[-1].split() == ["overall", "58.33", "16.67"]


def test_compare_needs_scored_runs(tmp_path):
    with pytest.raises(InputError, match="no summary.json"):
        compare([tmp_path])


# --- CLI ---------------------------------------------------------------------------------------------------------


def test_cli_score_and_compare(data_file, tmp_path, capsys):
    run(data_file, tmp_path / "one", Recorder(), print_table=False)
    run(data_file, tmp_path / "two", Recorder(correct=set()), print_table=False)
    assert main(["score", str(tmp_path / "one"), "--tolerance", "0.2"]) == 0
    assert "overall" in capsys.readouterr().out
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["scoring"]["numeric_rel_tol"] == 0.2
    assert (
        main(
            [
                "score",
                str(tmp_path / "two" / "predictions.jsonl"),
                "--data",
                str(data_file),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    assert (tmp_path / "s" / "summary.json").exists()

    assert main(["compare", str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "one" in out and "two" in out and "overall" in out
    assert (tmp_path / "cmp" / "compare.png").read_bytes().startswith(PNG_MAGIC)
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"] == ["one", "two"]


def test_cli_run_without_a_model_hook_says_so(data_file, tmp_path, capsys):
    assert main(["run", "--data", str(data_file), "--out", str(tmp_path / "r")]) == 2
    assert "not wired in yet" in capsys.readouterr().err


def test_cli_run_with_a_factory_is_restartable(data_file, tmp_path, capsys):
    made = []

    def factory(settings: RunSettings):
        made.append(settings)
        return Recorder(fail_after=1 if len(made) == 1 else None)

    argv = [
        "run",
        "--data",
        str(data_file),
        "--out",
        str(tmp_path / "r"),
        "--model",
        "m",
        "--batch-size",
        "4",
        "--max-tiles",
        "2",
        "--cot",
        "--max-new-tokens",
        "64",
        "--no-progress",
    ]
    assert main(argv, answerer_factory=factory) == 130  # the fake model is interrupted after one batch
    assert len(read_predictions(tmp_path / "r" / "predictions.jsonl")) == 4
    assert main(argv, answerer_factory=factory) == 0
    assert (
        made[0] == made[1]
        and made[0].model == str(Path("m").resolve())
        and made[0].max_tiles == 2
        and made[0].chain_of_thought
    )
    assert made[0].generation["max_new_tokens"] == 64
    assert main([*argv[:-3], "--no-progress"], answerer_factory=factory) == 1  # other settings
    assert "other settings" in capsys.readouterr().err


def test_cli_reports_bad_data_with_its_line(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    assert (
        main(
            ["run", "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "r")],
            answerer_factory=lambda s: None,
        )
        == 1
    )
    assert "bad.jsonl: line 1: 'question' must be a string" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    src = str(Path(internvl.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "internvl.eval", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0 and "run" in result.stdout and "compare" in result.stdout


def test_add_eval_commands_plugs_into_a_top_level_cli(data_file, tmp_path):
    import argparse

    from internvl.eval.cli import add_eval_commands

    parser = argparse.ArgumentParser(prog="internvl")
    add_eval_commands(
        parser.add_subparsers(dest="command", required=True), answerer_factory=lambda settings: Recorder()
    )
    args = parser.parse_args(["eval", "run", "--data", str(data_file), "--out", str(tmp_path / "r"), "--no-progress"])
    assert args.command == "eval" and args.eval_command == "run"
    assert args.func(args) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["overall"] == 58.33


def test_an_item_the_model_cannot_take_scores_zero_and_the_run_goes_on(data_file, tmp_path, capsys):
    """A prompt over the model's context (an InputError) in a batch: the others are answered, the item
    scores 0 and keeps its error; the run is not stopped."""

    class TooLong(Recorder):
        def __call__(self, items):
            if any(item.id == "q3" for item in items):
                raise InputError("the prompt is 9000 tokens long and the model's context is 4096")
            return super().__call__(items)

    answerer = TooLong()
    summary = run(data_file, tmp_path / "run", answerer, batch_size=4, print_table=False)
    assert summary["n"] == 12 and summary["overall"] == pytest.approx(100 * 6 / 12)  # q3 was right, now 0
    assert "q3" not in answerer.seen and len(answerer.seen) == 11
    records = read_predictions(tmp_path / "run" / "predictions.jsonl")
    assert records["q3"]["prediction"] == "" and "context is 4096" in records["q3"]["error"]
    assert "item q3: the prompt is 9000 tokens long" in capsys.readouterr().err
