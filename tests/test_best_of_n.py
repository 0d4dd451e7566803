"""Best-of-N evaluation: the self-consistency vote, the answerer keeping the critic's best candidate and
recording all of them, and `internvl eval run --best-of-n N --critic prm:DIR` end to end with resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from internvl.cli import main as cli_main
from internvl.errors import InputError
from internvl.eval.best_of_n import best_of_n_answerer, parse_critic, self_consistency
from internvl.eval.formats import EvalItem
from internvl.eval.runner import RunSettings
from tests.test_eval_e2e import data_file, model_folder  # noqa: F401 (module fixtures: tiny model, 6 items)


def item(options: dict[str, str] | None = None) -> EvalItem:
    return EvalItem(id="x", question="q", answers=("4",), options=options or {}, prompt="q")


def test_self_consistency_votes_on_final_answers():
    candidates = ["So.\nFinal answer: 4", "Final answer: 5", "It is 4.\nFinal answer: 4", "no idea"]
    scores = self_consistency(item(), [], 1, candidates)
    assert scores[0] == scores[2] == 0.5 and scores[1] == 0.25
    letters = self_consistency(item({"A": "4", "B": "5"}), [], 1, ["B", "The answer is A.", "A", "B"])
    assert letters == [0.5, 0.5, 0.5, 0.5]


def test_critic_specs():
    assert parse_critic("self-consistency") == ("self-consistency", "")
    assert parse_critic("prm:/m") == ("prm", "/m")
    with pytest.raises(InputError, match="use prm:DIR, orm:DIR or self-consistency"):
        parse_critic("prm")


def test_the_answer_is_the_critics_best_and_every_candidate_is_kept(model_folder):  # noqa: F811
    import internvl

    chat = internvl.load(model_folder, max_tiles=1)
    settings = RunSettings(max_tiles=1, generation={"max_new_tokens": 6, "temperature": 0.0})
    longest = lambda item, pictures, budget, candidates: [float(len(c)) for c in candidates]  # noqa: E731
    answer = best_of_n_answerer(chat, settings, 4, longest)
    first = answer([item()])[0]
    assert len(first["candidates"]) == 4 and len(set(first["candidates"])) > 1  # sampled, not greedy
    assert first["prediction"] == max(first["candidates"], key=len)
    assert first["candidate_scores"] == [float(len(c)) for c in first["candidates"]]
    assert answer([item()])[0] == first  # seeded per item: a resumed run draws the same candidates


def test_eval_run_best_of_n_with_a_prm_resumes(model_folder, data_file, tmp_path):  # noqa: F811
    args = ["eval", "run", "--data", str(data_file), "--out", str(tmp_path / "run"), "--model", str(model_folder)]
    args += ["--max-tiles", "1", "--max-new-tokens", "6", "--no-progress", "--batch-size", "2"]
    args += ["--best-of-n", "3", "--critic", f"prm:{model_folder}"]
    assert cli_main(args) == 0
    lines = [json.loads(t) for t in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert len(line["candidates"]) == 3 and len(line["candidate_scores"]) == 3
        assert all(0.0 <= s <= 1.0 for s in line["candidate_scores"])
        best = max(range(3), key=lambda k: line["candidate_scores"][k])
        assert line["prediction"] == line["candidates"][best]
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    settings = settings.get("settings", settings)
    assert settings["extra"]["best_of_n"] == 3 and settings["extra"]["critic"] == f"prm:{Path(model_folder).resolve()}"
    assert cli_main(args) == 0  # finished: nothing is answered again
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 6


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--critic", "self-consistency"], "--critic needs --best-of-n"),
        (["--best-of-n", "4", "--critic", "judge"], "use prm:DIR, orm:DIR or self-consistency"),
        (["--best-of-n", "0"], "--best-of-n must be at least 1"),
    ],
)
def test_bad_best_of_n_flags_are_one_line(data_file, tmp_path, capsys, flags, message):  # noqa: F811
    args = ["eval", "run", "--data", str(data_file), "--out", str(tmp_path / "run"), *flags]
    assert cli_main(args) == 2
    assert message in capsys.readouterr().err


def test_a_candidate_the_prm_cannot_read_scores_lowest_and_the_others_as_alone(model_folder):  # noqa: F811
    from internvl.eval.best_of_n import reward_model_critic
    from internvl.reward import UNREADABLE, ProcessRewardModel

    prm = ProcessRewardModel.load(model_folder)
    limit = prm.chat.model.config.text.max_position_embeddings
    too_long = "a " * (limit + 10)  # beyond the context: refused with a line, not a failed allocation
    with pytest.raises(InputError, match=r"solution 0: .* tokens and the model's context is"):
        prm.score("q", [], [too_long])
    critic = reward_model_critic(str(model_folder), outcome=False)
    good = ["Step one.\n\nFinal answer: 4", "Final answer: 5"]
    scores = critic(item(), [], 1, [good[0], too_long, good[1]])
    assert scores[1] == UNREADABLE
    assert scores[0] == pytest.approx(prm.score("q", [], [good[0]])[0], abs=1e-5)
    assert scores[2] == pytest.approx(prm.score("q", [], [good[1]])[0], abs=1e-5)
    assert min(scores[0], scores[2]) > UNREADABLE
