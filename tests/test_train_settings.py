"""Recipe settings: YAML + dotted overrides, typed by the dataclass fields; unknown keys are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from internvl import ConfigError
from internvl.settings import dump_yaml
from internvl.train.sft import SFTSettings, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_yaml_and_overrides_are_typed(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("output_dir: runs/x\noptim:\n  lr: 2.0e-5\n  betas: [0.9, 0.95]\ntrain:\n  max_steps: 10\n")
    config = load_config(
        recipe,
        [
            "optim.lr=1e-4",
            "train.max_steps=7",
            "train.activation_checkpointing=true",
            "optim.lr_vision=null",
            "optim.lr_projector=2e-4",
            "lora.language_rank=16",
            "data.options.max_packed_tokens=8192",
            "train.precision=fp32",
        ],
    )
    assert isinstance(config, SFTSettings)
    assert config.optim.lr == 1e-4 and isinstance(config.optim.lr, float)  # "1e-4" is a string to YAML 1.1
    assert config.optim.betas == [0.9, 0.95]
    assert config.train.max_steps == 7 and config.train.activation_checkpointing is True
    assert config.optim.lr_vision is None and config.optim.lr_projector == 2e-4
    assert config.lora.language_rank == 16
    assert config.data.options == {"max_packed_tokens": 8192}
    assert config.output_dir == "runs/x" and config.checkpoint.keep_last == 2  # untouched default
    assert load_config(None, [f"{k}={v}" for k, v in []]).optim.lr == SFTSettings().optim.lr
    # the dump reads back to the same settings
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(config))
    assert load_config(again) == config


@pytest.mark.parametrize(
    "override,named",
    [
        ("optim.lrr=1", "optim.lrr"),
        ("trian.max_steps=3", "trian.max_steps"),
        ("optim=3", "optim"),
    ],
)
def test_unknown_or_misplaced_override_names_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_yaml_key_names_the_dotted_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  max_step: 10\n")
    with pytest.raises(ConfigError, match=r"'train\.max_step'.*known settings in 'train'.*max_steps"):
        load_config(recipe)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.max_steps=ten", "must be an integer"),
        ("train.precision=fp8", "must be one of"),
        ("train.activation_checkpointing=maybe", "true or false"),
        ("optim.betas=0.9", "must be a list"),
        ("train.max_steps", "dotted.key=value"),
    ],
)
def test_bad_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("sft_*.yaml")), ids=lambda p: p.name)
def test_example_recipes_parse(recipe):
    config = load_config(recipe, ["train.max_steps=1"])
    assert config.train.max_steps == 1
    assert bool(config.model.path) != bool(config.model.preset)


def test_there_are_example_recipes():
    assert len(list(CONFIGS.glob("sft_*.yaml"))) >= 2
