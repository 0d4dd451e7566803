"""GSPO (`internvl train gspo`): rewards, advantages, the prompt source, and the recipe end to end on a
tiny original-layout checkpoint: the reward rises on a task the model can learn, a run interrupted in
the middle of a rollout resumes exactly, and bad recipes stop with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from internvl.data.mmpr import Question
from internvl.errors import ConfigError
from internvl.train import gspo
from internvl.train.metrics import read_metrics
from internvl.train.rewards import accuracy, answer_format, final_answer, load_reward
from tests.test_train_support import single_thread  # noqa: F401 (fixture: one intra-op thread)
from tests.tiny import build_chat_model_folder

PARITY = {"red": "even", "blue": "odd"}


def parity_reward(response: str, question: Question) -> float:
    """The toy task: the answer's first character must have the parity the picture's colour names (red:
    an even code point, blue: odd). A random policy scores about 1/2, and only the picture tells which."""
    if not response:
        return 0.0
    return float(ord(response[0]) % 2 == (0 if question.answer == "even" else 1))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_chat_model_folder(tmp_path_factory.mktemp("gspo") / "model")


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("questions")
    lines = []
    for colour, parity in PARITY.items():
        Image.new("RGB", (112, 112), colour).save(root / f"{colour}.png")
        lines.append({"image": f"{colour}.png", "question": "<image>\nWhich colour?", "answer": parity})
    path = root / "questions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines * 2))
    return path


def recipe(model_dir: Path, questions: Path, run: Path, *overrides: str) -> gspo.GSPOSettings:
    return gspo.load_config(
        None,
        [
            f"model.path={model_dir}",
            "data.source=internvl.data.prompts:prompt_batches",
            f"data.options.questions={questions}",
            "data.options.prompts_per_batch=4",
            "data.options.max_tiles=1",
            "data.options.chain_of_thought=false",
            f"output_dir={run}",
            "train.max_steps=6",
            "train.precision=fp32",
            "optim.lr=3e-3",
            "optim.warmup_steps=1",
            "optim.min_lr_ratio=1.0",
            "gspo.group_size=8",
            "gspo.max_new_tokens=2",
            "gspo.updates_per_rollout=2",
            "gspo.epsilon_low=0.2",
            "gspo.epsilon_high=0.28",
            "gspo.rewards={tests.test_gspo:parity_reward: 1.0}",
            "log.progress_bar=false",
            "log.plot=false",
            "log.every_steps=1",
            "checkpoint.every_steps=3",
            "checkpoint.keep_last=3",
            *overrides,
        ],
    )


# -- rewards --------------------------------------------------------------------------------------------


def test_rewards_read_the_marked_answer():
    q = Question("k", [], "How many?", "4")
    assert final_answer("Two and two.\nSo four.\nFinal answer: 4") == "4"
    assert final_answer("2 + 2 = \\boxed{4}") == "4"
    assert final_answer("<think>Final answer: 5</think>It is 4") is None
    assert accuracy("Two and two.\nSo four.\nFinal answer: 4", q) == 1.0
    assert accuracy("4", q) == 1.0  # a direct answer is the whole response
    assert accuracy("Two and two.\nSo five.\nFinal answer: 5", q) == 0.0
    assert answer_format("Two and two.\nSo four.\nFinal answer: 4", q) == 1.0
    assert answer_format("4", q) == 0.0


def test_accuracy_uses_the_worlds_scorer():
    import dataclasses

    from internvl.data.world import generate_sample

    sample = dataclasses.replace(generate_sample("counting", "train", 3), images=["x.png"])
    record = sample.to_record()
    q = Question("k", ["x.png"], sample.question, sample.answer, record)
    assert accuracy(f"I count.\nThey are there.\nFinal answer: {sample.answer}", q) == 1.0
    wrong = next(d for d in sample.distractors if d != sample.answer)
    assert accuracy(f"I count.\nThey are there.\nFinal answer: {wrong}", q) == 0.0


def test_a_reward_that_cannot_be_imported_is_one_line():
    with pytest.raises(ConfigError, match="reward 'no.such:thing': cannot import it"):
        load_reward("no.such:thing")
    with pytest.raises(ConfigError, match="expected 'package.module:function'"):
        load_reward("accuracy")


# -- the loss on hand-made numbers ----------------------------------------------------------------------


def test_sequence_ratio_is_the_exponent_of_the_mean_token_log_ratio():
    old = torch.zeros(2, 3)
    new = torch.tensor([[0.3, -0.1, 0.1], [0.2, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    result = gspo.gspo_loss(new, old, mask, torch.tensor([1.0, -1.0]), "sequence", 0.5, 0.5)
    s = torch.exp(torch.tensor([0.1, 0.1]))  # mean log-ratios: 0.3/3 and 0.2/2
    assert torch.allclose(result.loss, (-(s[0] * 1.0) + s[1] * 1.0) / 2)
    clipped = gspo.gspo_loss(new, old, mask, torch.tensor([1.0, -1.0]), "sequence", 0.01, 0.01)
    assert torch.allclose(clipped.loss, torch.tensor((-1.01 + 1.0 * s[1].item()) / 2))  # A > 0 clipped, A < 0 not
    assert clipped.clipped_share == 0.5


# -- the prompt source ----------------------------------------------------------------------------------


def test_prompt_batches_repeat_each_batch_and_resume(model_dir, questions):
    from internvl.config import read_config
    from internvl.data.prompts import prompt_batches
    from internvl.train.data import BatchStream

    options = {"questions": str(questions), "tokenizer": str(model_dir), "prompts_per_batch": 3, "repeat_each": 2}
    config, _ = read_config(model_dir)
    stream = BatchStream(prompt_batches(options, config, 0, 1, seed=0))
    seen = [(b["rollout"], b["part"], [q.key for q in b["questions"]]) for b in (next(stream) for _ in range(5))]
    assert [(r, p) for r, p, _ in seen] == [("0:0", 0), ("0:0", 1), ("0:1", 0), ("0:1", 1), ("1:0", 0)]
    assert seen[0][2] == seen[1][2] and len(seen[0][2]) == 3 and len(seen[2][2]) == 1
    state = BatchStream(prompt_batches(options, config, 0, 1, seed=0))
    for _ in range(3):
        next(state)
    resumed = BatchStream(prompt_batches(options, config, 0, 1, seed=0))
    resumed.load_state_dict(state.state_dict())
    b = next(resumed)
    assert (b["rollout"], b["part"], [q.key for q in b["questions"]]) == seen[3]


# -- the recipe -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("single_thread")
def test_the_reward_rises_on_a_learnable_task(model_dir, questions, tmp_path):
    config = recipe(model_dir, questions, tmp_path / "run", "train.max_steps=40", "checkpoint.enabled=false")
    gspo.run(config)
    rows = read_metrics(tmp_path / "run")
    rewards = [r["reward_mean"] for r in rows]
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert first < 0.75 and last > first + 0.2, rewards
    for name in ("clipped_share", "entropy", "response_length", "reward_std", "rollout_s", "sampled_tokens_per_s"):
        assert name in rows[-1], name
    # each reward function's own mean is logged (here the only one, weight 1: the mean reward itself)
    assert [r["reward_parity_reward"] for r in rows] == pytest.approx(rewards)
    from PIL import Image as PILImage

    from internvl.train.metrics import plot_metrics

    with PILImage.open(plot_metrics(tmp_path / "run")) as plot:
        assert plot.height == 1600  # loss, rewards, shares, policy, answer tokens, learning rate


@pytest.mark.usefixtures("single_thread")
def test_resume_in_the_middle_of_a_rollout_is_exact(model_dir, questions, tmp_path):
    whole = gspo.run(recipe(model_dir, questions, tmp_path / "whole"))
    # Step 3 starts the second rollout; its second micro-batch (step 4) must come from the saved rollout.
    gspo.run(recipe(model_dir, questions, tmp_path / "cut", "train.stop_at_step=3"))
    state = json.loads((tmp_path / "cut" / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert state["objective"]["rollout"]["key"] == "1:0"  # the rollout of steps 3 and 4 (epoch 1), saved between them
    resumed = gspo.run(recipe(model_dir, questions, tmp_path / "cut"))
    assert resumed["step"] == whole["step"] == 6
    a, b = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "cut")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["reward_mean"] for r in a] == [r["reward_mean"] for r in b]
    assert [r["reward_parity_reward"] for r in a] == [r["reward_parity_reward"] for r in b]  # restored with the rollout


@pytest.mark.parametrize(
    "override,message",
    [
        ("gspo.group_size=1", "gspo.group_size must be at least 2"),
        ("gspo.temperature=0", "gspo.temperature must be above 0"),
        ("data.options.repeat_each=3", "must equal gspo.updates_per_rollout"),
        ("gspo.rewards={no.such:reward: 1.0}", "cannot import it"),
        ("data.source=internvl.data.loader:packed_batches", "data.source for GSPO is"),
        ("distributed.strategy=fsdp", "use distributed.strategy=ddp"),
    ],
)
def test_bad_recipes_stop_with_one_line(model_dir, questions, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        gspo.validate(recipe(model_dir, questions, tmp_path / "run", override))


@pytest.mark.usefixtures("single_thread")
def test_lora_trains_adapters_and_exports(model_dir, questions, tmp_path):
    from internvl.train.sft import export_model
    from internvl.weights import load_model

    overrides = ("lora.language_rank=4", "freeze.vision=true", "freeze.projector=true", "train.max_steps=2")
    result = gspo.run(recipe(model_dir, questions, tmp_path / "lora", *overrides))
    exported = export_model(result["checkpoint"], tmp_path / "model")
    base, tuned = load_model(model_dir).state_dict(), load_model(exported).state_dict()
    changed = [name for name in base if not torch.equal(base[name], tuned[name])]
    assert changed and all(name.startswith("language.") for name in changed)
