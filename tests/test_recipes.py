"""Every shipped recipe loads, and says what data it trains on: no SFT recipe trains on the synthetic
source (which is noise for a real checkpoint), and the general recipes refuse to start without a meta file."""

from __future__ import annotations

from pathlib import Path

import pytest

from internvl.data.loader import PackedDataOptions, packed_batches
from internvl.errors import ConfigError
from internvl.nano.vision_pretrain import VisionPretrainSettings
from internvl.presets import nano
from internvl.settings import from_dict, load_settings
from internvl.train.sft import SFTSettings

CONFIGS = Path(__file__).parents[1] / "configs"
SFT_RECIPES = sorted(
    p.name
    for p in CONFIGS.glob("*.yaml")
    if p.name != "nano_vision.yaml" and not p.name.startswith(("mpo", "gspo", "vico"))
)
DATA_OF_NANO_RECIPES = {
    "nano_sft.yaml": "runs/nano/warmup/mix.json",
    "nano_finetune_shapes.yaml": "runs/shapes/meta.json",
    "nano_warmup.yaml": "runs/nano/warmup/meta.json",
    "nano_sft_more.yaml": "runs/nano/more-mix.json",
    "nano_text.yaml": "runs/nano/text-mix.json",
    "v2pe_world.yaml": "runs/v2pe-world/mix.json",
    "prm_world.yaml": "runs/prm-world/data/meta_prm.json",
}


def test_the_vision_stage_recipe_loads():
    assert load_settings(VisionPretrainSettings, CONFIGS / "nano_vision.yaml").steps > 0


@pytest.mark.parametrize("name", SFT_RECIPES)
def test_every_sft_recipe_reads_official_format_data(name):
    recipe = load_settings(SFTSettings, CONFIGS / name)
    assert recipe.data.source == "internvl.data.loader:packed_batches"
    options = from_dict(PackedDataOptions, recipe.data.options, source=name)  # typed: unknown keys fail here
    assert options.meta_path == DATA_OF_NANO_RECIPES.get(name, "")


@pytest.mark.parametrize("name", sorted(set(SFT_RECIPES) - set(DATA_OF_NANO_RECIPES)))
def test_general_recipes_refuse_to_start_without_a_meta_file(name):
    recipe = load_settings(SFTSettings, CONFIGS / name)
    with pytest.raises(ConfigError, match=r"data.options.meta_path is required .*meta JSON"):
        packed_batches(recipe.data.options, nano(vocab_size=64), rank=0, world_size=1, seed=0)


def test_data_options_are_typed_and_named_when_wrong():
    with pytest.raises(ConfigError, match="unknown setting 'max_packed_token'"):
        from_dict(PackedDataOptions, {"max_packed_token": 10}, source="data.options")
    with pytest.raises(ConfigError, match="loss_reduction"):
        from_dict(PackedDataOptions, {"loss_reduction": "mean"}, source="data.options")
    assert PackedDataOptions().max_packed_tokens == 16384  # one default, the official packing scripts'


def test_a_recipe_without_a_data_source_is_an_error_not_noise():
    from internvl.train.data import build_batch_source

    assert SFTSettings().data.source == ""
    with pytest.raises(ConfigError, match="data.source is not set: use internvl.data.loader:packed_batches"):
        build_batch_source("", {}, nano(vocab_size=64), rank=0, world_size=1, seed=0)


def test_recipes_are_checked_before_the_model_loads(tmp_path):
    """`validate` (run first, and by --print-config): the shipped model by name, data.options typos, the meta file."""
    from internvl.train.sft import validate

    meta = tmp_path / "meta.json"
    meta.write_text("{}")
    recipe = CONFIGS / "nano_finetune_shapes.yaml"
    validate(load_settings(SFTSettings, recipe, [f"data.options.meta_path={meta}"]))  # model.path: nano
    with pytest.raises(ConfigError, match="unknown setting 'max_tile'"):
        validate(load_settings(SFTSettings, recipe, [f"data.options.meta_path={meta}", "data.options.max_tile=1"]))
    with pytest.raises(ConfigError, match="meta_path .*no such file"):
        validate(load_settings(SFTSettings, recipe, [f"data.options.meta_path={tmp_path / 'missing.json'}"]))
    with pytest.raises(ConfigError, match="is not a folder"):
        validate(load_settings(SFTSettings, recipe, ["model.path=nano-typo", f"data.options.meta_path={meta}"]))


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=-1", "optim.lr must be a finite number >= 0, got -1"),
        ("optim.lr=.nan", "optim.lr must be a finite number >= 0, got nan"),
        ("optim.lr=0", "optim.lr must be positive"),
        ("optim.lr_vision=.inf", "optim.lr_vision must be a finite"),
        ("optim.weight_decay=-0.1", "optim.weight_decay must be"),
        ("optim.betas=[0.9, 1.5]", "optim.betas must lie in"),
        ("optim.warmup_steps=-3", "optim.warmup_steps must be >= 0"),
    ],
)
def test_bad_optimiser_numbers_are_refused_before_training(override, message):
    from internvl.train.sft import check_optim

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        check_optim(load_settings(SFTSettings, None, [override]).optim)


def test_the_mpo_recipe_loads_and_refuses_to_start_without_pairs():
    from internvl.train import mpo

    recipe = mpo.load_config(CONFIGS / "mpo.yaml")
    assert recipe.data.source == "internvl.data.preference:pair_batches"
    assert (recipe.mpo.beta, recipe.mpo.loss_weights) == (0.1, [0.8, 0.2, 1.0])
    with pytest.raises(ConfigError, match="data.options.meta_path is required"):
        from internvl.data.preference import check_pair_options

        check_pair_options({**recipe.data.options, "tokenizer": "x"})


@pytest.mark.parametrize("name", ["vico_consistency.yaml", "vico_router.yaml"])
def test_the_vico_recipes_load_with_typed_data_and_refuse_to_start_without_a_meta_file(name):
    from internvl.train import vico

    recipe = vico.load_config(CONFIGS / name)
    assert recipe.vico.stage == name.removeprefix("vico_").removesuffix(".yaml")
    assert from_dict(PackedDataOptions, recipe.data.options, source=name).meta_path == ""
    if not recipe.model.path:  # the router stage starts from stage 1's export, which the recipe cannot name
        with pytest.raises(ConfigError, match="model.path"):
            vico.validate(recipe)
        recipe.model.path = "nano"
    with pytest.raises(ConfigError, match="meta_path"):
        vico.validate(recipe)


@pytest.mark.parametrize("name", ["gspo.yaml", "gspo_world.yaml"])
def test_the_gspo_recipes_validate_with_questions(tmp_path, name):
    from internvl.train import gspo

    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question": "2+2?", "answer": "4"}\n')
    recipe = gspo.load_config(CONFIGS / name, ["model.path=nano", f"data.options.questions={questions}"])
    gspo.validate(recipe)
    assert recipe.gspo.importance_level == "sequence" and recipe.data.options["repeat_each"] == 2
    with pytest.raises(ConfigError, match="data.options.questions is required"):
        gspo.validate(gspo.load_config(CONFIGS / name, ["model.path=nano", "data.options.questions="]))
