"""Checkpoint loading and saving: strictness, clear errors, sharding, .bin safety, atomic saves, convert."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from internvl import CheckpointError, ConfigError, weights
from internvl.cli import main as cli_main
from internvl.model.internvl import InternVL
from internvl.weights import load_model, save_model
from tests.tiny import build_hf_model, two_sample_batch

OFFICIAL = Path(__file__).parent / "fixtures" / "official"


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A writable copy of the official qwen2 checkpoint (original layout)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(OFFICIAL / "qwen2-300m" / name, folder / name)
    return folder


def rewrite_tensors(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def edit_config(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def logits(model: InternVL) -> torch.Tensor:
    ids, mask, pixels = two_sample_batch()
    ids = ids.clamp(max=model.config.text.vocab_size - 1)
    model.image_token_id = 317
    with torch.no_grad():
        return model(ids, pixels, attention_mask=mask)


def test_missing_tensor_is_named(checkpoint):
    rewrite_tensors(checkpoint, lambda t: t.pop("mlp1.1.weight"))
    with pytest.raises(CheckpointError, match=r"'mlp1\.1\.weight' is missing"):
        load_model(checkpoint)


def test_unexpected_tensor_is_named_with_its_file(checkpoint):
    rewrite_tensors(checkpoint, lambda t: t.update({"vision_model.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unexpected tensor 'vision_model\.extra\.weight'"):
        load_model(checkpoint)


def test_misshaped_tensor_is_named_with_its_file(checkpoint):
    key = "language_model.model.layers.0.self_attn.k_proj.weight"
    rewrite_tensors(checkpoint, lambda t: t.update({key: torch.zeros(32, 128)}))
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: tensor '.*k_proj\.weight' has shape \[32, 128\], expected \[64, 128\]",
    ):
        load_model(checkpoint)


def test_truncated_file(checkpoint):
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(checkpoint)


def test_corrupt_header(checkpoint):
    path = checkpoint / "model.safetensors"
    data = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    data[8 : 8 + 20] = b"#" * 20  # not JSON any more
    assert header_len > 20
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_model(checkpoint)


def test_not_a_safetensors_file(checkpoint):
    (checkpoint / "model.safetensors").write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(checkpoint)


def test_a_header_that_is_a_json_list_is_named(checkpoint):
    """Issue 16, defect 11: valid JSON of the wrong kind is a corrupt header, not an AttributeError."""
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    path.write_bytes(data[:8] + b"[1, 2]".ljust(header_len) + data[8 + header_len :])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt safetensors header \(a JSON list"):
        load_model(checkpoint)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"[1, 2]", "a config is a JSON object, got a list"),
        (b'{"model_type": "internvl_chat", "x": "\xff\xfe"}', "not UTF-8 text"),
    ],
)
def test_a_config_of_the_wrong_kind_is_one_line(checkpoint, content, message):
    (checkpoint / "config.json").write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_model(checkpoint)


def test_impossible_downsample_ratio_is_named(checkpoint):
    edit_config(checkpoint, lambda c: c.update(downsample_ratio=0))
    with pytest.raises(ConfigError, match="downsample_ratio must be in \\(0, 1\\]"):
        load_model(checkpoint)


def test_index_whose_weight_map_is_a_list_is_named(checkpoint):
    (checkpoint / "model.safetensors").rename(checkpoint / "model-00001-of-00001.safetensors")
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["a", "b"]}))
    with pytest.raises(CheckpointError, match="weight_map must map tensor names to shard files"):
        load_model(checkpoint)


def test_absurd_sizes_are_refused_before_anything_is_built(checkpoint, monkeypatch):
    """Defect 6: the config is checked against the weights' headers before the model is built or allocated."""

    def never(*args, **kwargs):
        raise AssertionError("the model was built before the layer count was checked")

    edit_config(checkpoint, lambda c: c["llm_config"].update(num_hidden_layers=100_000))
    with monkeypatch.context() as patch:
        patch.setattr(weights, "InternVL", never)
        with pytest.raises(CheckpointError, match="the config asks for 100000 decoder layers, the weights hold 2"):
            load_model(checkpoint)
    edit_config(checkpoint, lambda c: c["llm_config"].update(num_hidden_layers=2, vocab_size=2**40))
    with pytest.raises(CheckpointError, match=r"has shape \[\d+, \d+\], expected \[1099511627776, "):
        load_model(checkpoint)


def test_sharded_round_trip_and_missing_shard(checkpoint, tmp_path):
    model = load_model(checkpoint)
    save_model(model, tmp_path / "sharded", layout="original", max_shard_bytes=200_000)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    assert torch.equal(logits(load_model(tmp_path / "sharded")), logits(model))
    (tmp_path / "sharded" / shards[1]).unlink()
    with pytest.raises(CheckpointError, match=f"shard {shards[1]} is missing"):
        load_model(tmp_path / "sharded")


def test_unknown_architectures(checkpoint):
    edit_config(checkpoint, lambda c: c["llm_config"].update(architectures=["MistralForCausalLM"]))
    with pytest.raises(ConfigError, match="unknown language-model architecture 'MistralForCausalLM'"):
        load_model(checkpoint)
    edit_config(checkpoint, lambda c: c.update(model_type="llava", architectures=["LlavaForConditionalGeneration"]))
    with pytest.raises(ConfigError, match="unknown architecture"):
        load_model(checkpoint)


def test_config_without_ps_version_is_refused(checkpoint):
    edit_config(checkpoint, lambda c: c.pop("ps_version"))
    with pytest.raises(ConfigError, match=r"no 'ps_version'.*'v1'.*transposed"):
        load_model(checkpoint)


def test_missing_config_and_weights(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        load_model(tmp_path)
    shutil.copy(OFFICIAL / "qwen2-300m" / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no weights found"):
        load_model(tmp_path)


def test_bin_checkpoint_loads_with_weights_only(checkpoint):
    reference = logits(load_model(checkpoint))
    torch.save(load_file(str(checkpoint / "model.safetensors")), checkpoint / "pytorch_model.bin")
    (checkpoint / "model.safetensors").unlink()
    assert torch.equal(logits(load_model(checkpoint)), reference)


class NotATensor:
    """Pickling this needs code execution on load, which weights_only refuses."""


def test_bin_with_arbitrary_objects_is_refused(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    torch.save({"x": NotATensor()}, checkpoint / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot read PyTorch weights safely"):
        load_model(checkpoint)


def test_python_files_in_the_folder_are_never_run(checkpoint, tmp_path):
    marker = tmp_path / "executed"
    code = f"open({str(marker)!r}, 'w').write('x')\n"
    for name in ("modeling_internvl_chat.py", "configuration_internvl_chat.py", "__init__.py"):
        (checkpoint / name).write_text(code)
    load_model(checkpoint)
    assert not marker.exists()


def test_bf16_load_and_dtype_choice(checkpoint):
    model = load_model(checkpoint, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load_model(checkpoint).parameters()} == {torch.float32}


def test_interrupted_save_keeps_previous_checkpoint(checkpoint, tmp_path, monkeypatch):
    model = load_model(checkpoint)
    target = tmp_path / "saved"
    save_model(model, target)
    (target / "tokenizer.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(weights, "_write_shards", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_save_replaces_only_checkpoint_files(checkpoint, tmp_path):
    model = load_model(checkpoint)
    target = tmp_path / "saved"
    save_model(model, target, max_shard_bytes=200_000)  # an earlier, sharded checkpoint
    (target / "tokenizer.json").write_text("{}")
    (target / "notes").mkdir()
    (target / "notes" / "keep.safetensors").write_text("mine")
    save_model(model, target)
    names = sorted(p.name for p in target.iterdir())
    assert names == ["config.json", "model.safetensors", "notes", "tokenizer.json"]  # stale shards gone
    assert (target / "notes" / "keep.safetensors").read_text() == "mine"  # subfolders are never touched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_save_refuses_a_folder_that_is_not_a_checkpoint(checkpoint, tmp_path):
    model = load_model(checkpoint)
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "thesis.bin").write_text("years of work")
    with pytest.raises(CheckpointError, match="not empty and holds no checkpoint.*--overwrite"):
        save_model(model, home)
    assert sorted(p.name for p in home.iterdir()) == ["photos", "thesis.bin"]
    save_model(model, home, overwrite=True)  # consent: weight files there are replaced, the rest stays
    assert sorted(p.name for p in home.iterdir()) == ["config.json", "model.safetensors", "photos"]
    with pytest.raises(CheckpointError, match="exists and is not a folder"):
        save_model(model, home / "config.json")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CheckpointError, match="cannot write there"):  # its parent cannot be made
        save_model(model, tmp_path / "a-file" / "out")


def test_saved_original_config_has_official_fields(checkpoint, tmp_path):
    save_model(load_model(checkpoint), tmp_path / "out", layout="original")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    official = json.loads((checkpoint / "config.json").read_text())
    for key in (
        "architectures",
        "model_type",
        "ps_version",
        "downsample_ratio",
        "select_layer",
        "template",
        "force_image_size",
        "dynamic_image_size",
        "use_thumbnail",
        "min_dynamic_patch",
        "max_dynamic_patch",
    ):
        assert saved[key] == official[key], key
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "qkv_bias", "norm_type", "model_type"):
        assert saved["vision_config"][key] == official["vision_config"][key], key
    for key in ("architectures", "model_type", "hidden_size", "num_key_value_heads", "vocab_size", "rope_theta"):
        assert saved["llm_config"][key] == official["llm_config"][key], key
    assert (
        load_file(str(tmp_path / "out" / "model.safetensors")).keys()
        == load_file(str(checkpoint / "model.safetensors")).keys()
    )


def test_convert_command_both_ways(checkpoint, tmp_path):
    reference = logits(load_model(checkpoint))
    (checkpoint / "tokenizer_config.json").write_text("{}")
    assert cli_main(["convert", str(checkpoint), str(tmp_path / "hf"), "--layout", "hf"]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "internvl"
    assert (tmp_path / "hf" / "tokenizer_config.json").exists()
    assert cli_main(["convert", str(tmp_path / "hf"), str(tmp_path / "orig"), "--layout", "original"]) == 0
    assert torch.equal(logits(load_model(tmp_path / "orig")), reference)
    assert torch.allclose(logits(load_model(tmp_path / "hf")), reference, atol=1e-5)


def test_convert_command_reports_errors(tmp_path, capsys):
    assert cli_main(["convert", str(tmp_path / "nothing"), str(tmp_path / "out"), "--layout", "hf"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_hf_checkpoint_in_module_tree_spelling_loads(tmp_path):
    """hf checkpoints spelled like transformers' module tree (`model.vision_tower.` ...) load too."""
    hf_model = build_hf_model("qwen2", "300m", seed=11)
    hf_model.save_pretrained(tmp_path / "a")
    tensors = load_file(str(tmp_path / "a" / "model.safetensors"))
    renamed = {}
    for key, t in tensors.items():
        for saved, tree in (
            ("vision_tower.", "model.vision_tower."),
            ("multi_modal_projector.", "model.multi_modal_projector."),
            ("language_model.model.", "model.language_model."),
            ("language_model.lm_head.", "lm_head."),
        ):
            if key.startswith(saved):
                key = tree + key[len(saved) :]
                break
        renamed[key] = t
    save_file(renamed, str(tmp_path / "a" / "model.safetensors"))
    assert torch.equal(logits(load_model(tmp_path / "a")), logits_of_hf_folder(hf_model, tmp_path))


def logits_of_hf_folder(hf_model, tmp_path):  # type: ignore[no-untyped-def]
    hf_model.save_pretrained(tmp_path / "b")
    return logits(load_model(tmp_path / "b"))


def test_parity_check_detects_broken_mappings(tmp_path, monkeypatch):
    """The parity tests can fail: a wrong InternLM2 head grouping or swapped gate/up change the logits."""
    from tests.test_hf_parity import write_internlm2_original

    hf_model = build_hf_model("llama", "300m", seed=12)
    hf_model.save_pretrained(tmp_path / "hf")
    write_internlm2_original(tmp_path / "hf", tmp_path / "fused")
    good = logits(load_model(tmp_path / "fused"))
    monkeypatch.setattr(weights, "internlm2_qkv_order", lambda h, kv, d: torch.arange((h + 2 * kv) * d))
    assert (logits(load_model(tmp_path / "fused")) - good).abs().max() > 1e-2
    monkeypatch.undo()

    original = weights._language_map

    def swapped(config, layout):  # type: ignore[no-untyped-def]
        out = original(config, layout)
        key = "language.layers.0.mlp.gate_up.weight"
        out[key] = weights.Source(tuple(reversed(out[key].keys)))
        return out

    monkeypatch.setattr(weights, "_language_map", swapped)
    assert (logits(load_model(tmp_path / "fused")) - good).abs().max() > 1e-2


def test_convert_cli_refuses_a_folder_that_is_not_a_checkpoint(checkpoint, tmp_path, capsys):
    dst = tmp_path / "dst"
    (dst / "keep").mkdir(parents=True)
    assert cli_main(["convert", str(checkpoint), str(dst), "--layout", "hf"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert [p.name for p in dst.iterdir()] == ["keep"]
    assert cli_main(["convert", str(checkpoint), str(dst), "--layout", "hf", "--overwrite"]) == 0
    assert (dst / "keep").is_dir() and (dst / "config.json").is_file()
    assert cli_main(["convert", str(checkpoint), str(dst), "--layout", "original"]) == 0  # a checkpoint now


@pytest.mark.parametrize("name", ["qwen2-300m", "qwen3-300m", "llama-300m", "internlm2-6b"])
def test_original_to_hf_to_original_loses_nothing(name, tmp_path):
    """Issue 16, lossless round trips: every tensor, and the config fields (template, system message,
    tiling, image token id), come back; an InternLM2 decoder comes back fused, not as Llama."""
    source = tmp_path / "source"
    source.mkdir()
    for file in ("config.json", "model.safetensors"):
        shutil.copy(OFFICIAL / name / file, source / file)
    edit_config(
        source,
        lambda c: c.update(
            template="internlm2-chat", system_message="Be brief.", max_dynamic_patch=9, image_token_id=999
        ),
    )
    weights.convert_checkpoint(source, tmp_path / "hf", "hf")
    weights.convert_checkpoint(tmp_path / "hf", tmp_path / "back", "original")
    before, after = (
        load_file(str(source / "model.safetensors")),
        load_file(str(tmp_path / "back" / "model.safetensors")),
    )
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[key], after[key]) for key in before)
    original, _ = weights.read_config(source)
    returned, layout = weights.read_config(tmp_path / "back")
    assert layout == "original" and returned == original
    assert (returned.template, returned.system_message, returned.max_dynamic_patch, returned.image_token_id) == (
        "internlm2-chat",
        "Be brief.",
        9,
        999,
    )


def test_hf_image_token_id_survives_a_trip_through_the_original_layout(tmp_path):
    model = build_hf_model("qwen2")
    model.config.image_token_id = 999
    model.save_pretrained(tmp_path / "hf")  # no tokenizer travels with it
    weights.convert_checkpoint(tmp_path / "hf", tmp_path / "orig", "original")
    weights.convert_checkpoint(tmp_path / "orig", tmp_path / "hf2", "hf")
    assert json.loads((tmp_path / "hf2" / "config.json").read_text())["image_token_id"] == 999
