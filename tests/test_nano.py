"""The nano pipeline and the embedded default: world -> tokenizer + init -> packed SFT batches -> the
recipe; the shipped nano model loads without arguments and answers; the answer-prior baseline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from internvl.chat import load
from internvl.cli import main as cli_main
from internvl.data.world import export_sft, generate_sample
from internvl.shipped import model_folder
from internvl.weights import load_model


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    export_sft(out, 24, split="train", families=["recognition", "counting", "video", "detail"], progress=False)
    return out


def test_nano_init_and_two_recipe_steps(world, tmp_path):
    from internvl.nano.init import init_nano
    from internvl.train.sft import load_config, run

    init = init_nano(world, tmp_path / "init", vocab_size=400)
    assert (init / "tokenizer.json").exists() and (init / "model.safetensors").exists()
    config = load_config(
        Path(__file__).parents[1] / "configs" / "nano_sft.yaml",
        [
            f"model.path={init}",
            f"data.options.meta_path={world / 'meta.json'}",
            "data.options.tokenizer=",  # empty: the recipe takes the model's own tokenizer
            f"output_dir={tmp_path / 'run'}",
            "train.max_steps=2",
            "data.options.num_workers=0",
            "checkpoint.enabled=false",
            "log.progress_bar=false",
            "log.plot=false",
            "optim.warmup_steps=1",
        ],
    )
    result = run(config)
    assert result["step"] == 2
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["samples"] > 0 and metrics[-1]["padding_share"] < 0.5


def test_shipped_model_by_name(tmp_path):
    from internvl.inputs.tokens import load_tokenizer

    assert model_folder("nano") == Path(__file__).parents[1] / "src" / "internvl" / "assets" / "nano"
    assert model_folder("./nano") == Path("nano")  # a path, not the name
    assert model_folder(tmp_path) == tmp_path
    assert load_tokenizer("nano").convert_tokens_to_ids("<IMG_CONTEXT>") is not None


def test_embedded_nano_model_answers_without_arguments(capsys, tmp_path):
    assert model_folder("nano").is_dir()
    chat = load()
    sample = generate_sample("recognition", "test", 0)
    answer = chat.ask(sample.prompt, images=sample.images, max_new_tokens=16)
    assert isinstance(answer, str) and answer
    image = tmp_path / "x.png"
    sample.images[0].save(image)
    assert cli_main(["chat", "--image", str(image), "--max-new-tokens", "16", sample.prompt]) == 0
    assert capsys.readouterr().out == answer + "\n"


def test_demo_runs_over_every_family(monkeypatch, capsys):
    from internvl.nano import demo

    monkeypatch.setattr(sys, "argv", ["demo", "--n", "1"])
    demo.main()
    out = capsys.readouterr().out
    assert "[detail]" in out and "[video]" in out and out.rstrip().endswith("s in all)")


def test_answer_prior_baseline(world):
    from internvl.nano.baselines import answer_prior

    prior = answer_prior(world)
    assert ("recognition", "word") in prior or ("recognition", "choice") in prior
    assert all(isinstance(answer, str) and answer for answer in prior.values())


def test_answer_prior_counts_every_question_of_a_conversation_with_its_own_type(tmp_path):
    from internvl.nano.baselines import answer_prior

    export_sft(tmp_path, 40, split="train", families=["recognition"], progress=False, questions_per_image=3)
    prior = answer_prior(tmp_path)
    assert set(prior) == {("recognition", "choice"), ("recognition", "word")}
    assert prior[("recognition", "choice")] in {"A", "B", "C", "D"}
    assert prior[("recognition", "word")] not in {"A", "B", "C", "D"}


def test_fast_paths_keep_the_nano_models_greedy_answers():
    """The CPU fast paths against the plain fp32 model on real (trained) logits: load's CPU default (our
    fp32 decoding kernel, RMS norm and one-call decoder layer steps where built, else oneDNN-packed
    weights; the vision encoder's projections on oneDNN) gives the same greedy tokens on every family's
    questions."""
    import dataclasses

    import torch

    from internvl.chat import Chat
    from internvl.model.cpu_kernels import block_kernels
    from internvl.model.kernel_layer import KernelDecoderLayer
    from internvl.model.linear import KernelLinear, KernelRMSNorm, PackedLinear, can_pack

    fast = load(max_tiles=2)
    vision_qkv = fast.model.vision.layers[0].attn.qkv
    if block_kernels() is not None:
        assert isinstance(fast.model.language.lm_head, KernelLinear) and isinstance(vision_qkv, KernelLinear)
        assert isinstance(fast.model.language.norm, KernelRMSNorm)
        assert all(isinstance(layer, KernelDecoderLayer) for layer in fast.model.language.layers)
    elif can_pack():
        assert isinstance(fast.model.language.lm_head, PackedLinear) and isinstance(vision_qkv, PackedLinear)
    plain_model = load_model("nano", dtype=torch.float32).eval()  # the shipped model by name
    plain_model.image_token_id = fast.model.image_token_id
    plain = dataclasses.replace(fast, model=plain_model)
    assert isinstance(plain, Chat)
    families = ["recognition", "counting", "spatial", "reading", "charts", "grounding", "reasoning"]
    for i, family in enumerate(families):
        sample = generate_sample(family, "test", i)
        answers = [chat.ask(sample.prompt, images=sample.images, max_new_tokens=24) for chat in (fast, plain)]
        assert answers[0] == answers[1], family


def test_world_readers_name_the_folder_or_line_at_fault(tmp_path):
    from internvl.data.sft import folder_records
    from internvl.errors import InputError
    from internvl.nano.baselines import answer_prior

    with pytest.raises(InputError, match="no \\*.jsonl annotation files"):
        list(folder_records(tmp_path / "missing"))
    good = json.dumps({"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hi."}]})
    (tmp_path / "a.jsonl").write_text(good + '\n\n{"conversations": [\n')
    with pytest.raises(InputError, match=r"a\.jsonl:3: not valid JSON"):
        list(folder_records(tmp_path))
    (tmp_path / "a.jsonl").write_text(good + '\n{"conversations": []}\n')
    with pytest.raises(InputError, match=r"a\.jsonl:2: missing 'conversations'"):
        list(folder_records(tmp_path))
    (tmp_path / "a.jsonl").write_text(good + "\n")
    with pytest.raises(InputError, match="without its `world` question"):
        answer_prior(tmp_path)


def test_nano_scripts_end_in_one_line_on_bad_input(monkeypatch, capsys, tmp_path):
    from internvl.nano import baselines, init

    monkeypatch.setattr(sys, "argv", ["init", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        init.main()
    assert exit_info.value.code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert err.startswith("nano.init: error: ") and "missing" in err and err.count("\n") == 1

    monkeypatch.setattr(
        sys,
        "argv",
        [
            "baselines",
            "prior",
            "--train",
            str(tmp_path),
            "--data",
            str(tmp_path / "none.tsv"),
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        baselines.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nano.baselines: error: ") and "none.tsv" in err and err.count("\n") == 1


def test_train_nano_script_parses_and_refuses_an_unknown_flag():
    import subprocess

    script = Path(__file__).parents[1] / "scripts" / "train_nano.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    refused = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True)
    assert refused.returncode == 2 and "unknown argument --fast" in refused.stderr
