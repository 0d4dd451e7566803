"""Checkpoint layouts: key maps, strict loading without double memory, atomic saving, conversion.

Both layouts of docs/checkpoints.md map onto our module names through one table per layout (`checkpoint_map`):
each of our tensors is made of one or more checkpoint tensors stacked along dim 0 (fused q/k/v and
gate/up), optionally with a row permutation (InternLM2's group-interleaved `wqkv`). Loading reads every
checkpoint tensor straight into its slice of the already-allocated parameter, so the weights are held in
memory once; saving cuts the same slices back out.

Security: nothing from the checkpoint folder is imported or executed; `.bin` files go through
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file

from internvl.config import InternVLConfig, read_config, to_hf_dict, to_original_dict, write_json
from internvl.errors import CheckpointError
from internvl.model.internvl import InternVL
from internvl.model.linear import BlockQuantLinear, Int4Linear, Int8Linear, PackedLinear
from internvl.shipped import model_folder

LAYOUTS = ("original", "hf")

# Files of a checkpoint folder that describe the tokenizer / processor and travel with a conversion.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)

# Checkpoint tensors that carry no weights and are safe to skip.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class Source:
    """Checkpoint tensors stacked along dim 0 form one of our tensors; `row_order[i]` is the stacked
    row that becomes our row i (None = keep order)."""

    keys: tuple[str, ...]
    row_order: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------
# Key maps


def checkpoint_map(model: InternVL, layout: str) -> dict[str, Source]:
    """Our parameter name -> where it lives in a checkpoint of `layout` ("original" or "hf")."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    config = model.config
    mapping: dict[str, Source] = {}
    mapping.update(_vision_map(config, layout))
    mapping.update(_projector_map(layout))
    if config.flash:
        mapping.update(_flash_map(layout))
    mapping.update(_language_map(config, layout))
    names = set(dict(model.named_parameters(remove_duplicate=True)))
    if config.text.tie_word_embeddings:
        mapping.pop("language.lm_head.weight", None)
    assert set(mapping) == names, f"key map out of sync with the model: {sorted(set(mapping) ^ names)[:5]}"
    return mapping


def _one(key: str) -> Source:
    return Source((key,))


def _vision_map(config: InternVLConfig, layout: str) -> dict[str, Source]:
    v = config.vision
    out: dict[str, Source] = {}
    if layout == "original":
        p = "vision_model."
        out["vision.embed.patch.weight"] = _one(p + "embeddings.patch_embedding.weight")
        out["vision.embed.patch.bias"] = _one(p + "embeddings.patch_embedding.bias")
        out["vision.embed.cls"] = _one(p + "embeddings.class_embedding")
        out["vision.embed.pos"] = _one(p + "embeddings.position_embedding")
    else:
        p = "vision_tower."
        out["vision.embed.patch.weight"] = _one(p + "embeddings.patch_embeddings.projection.weight")
        out["vision.embed.patch.bias"] = _one(p + "embeddings.patch_embeddings.projection.bias")
        out["vision.embed.cls"] = _one(p + "embeddings.cls_token")
        out["vision.embed.pos"] = _one(p + "embeddings.position_embeddings")
    norm_params = ("weight", "bias") if v.norm_type == "layer_norm" else ("weight",)
    for i in range(v.num_layers):
        ours = f"vision.layers.{i}."
        if layout == "original":
            theirs = f"{p}encoder.layers.{i}."
            names = {
                "norm1": "norm1",
                "norm2": "norm2",
                "ls1": "ls1",
                "ls2": "ls2",
                "proj": "attn.proj",
                "q_norm": "attn.q_norm",
                "k_norm": "attn.k_norm",
            }
            qkv = {s: Source((f"{theirs}attn.qkv.{s}",)) for s in ("weight", "bias")}
        else:
            theirs = f"{p}encoder.layer.{i}."
            names = {
                "norm1": "layernorm_before",
                "norm2": "layernorm_after",
                "ls1": "lambda_1",
                "ls2": "lambda_2",
                "proj": "attention.projection_layer",
                "q_norm": "attention.q_norm",
                "k_norm": "attention.k_norm",
            }
            qkv = {s: Source(tuple(f"{theirs}attention.{x}_proj.{s}" for x in "qkv")) for s in ("weight", "bias")}
        for norm in ("norm1", "norm2"):
            for s in norm_params:
                out[f"{ours}{norm}.{s}"] = _one(f"{theirs}{names[norm]}.{s}")
        out[f"{ours}ls1"] = _one(theirs + names["ls1"])
        out[f"{ours}ls2"] = _one(theirs + names["ls2"])
        out[f"{ours}attn.qkv.weight"] = qkv["weight"]
        if v.qkv_bias:
            out[f"{ours}attn.qkv.bias"] = qkv["bias"]
        if v.qk_norm:
            out[f"{ours}attn.q_norm.weight"] = _one(f"{theirs}{names['q_norm']}.weight")
            out[f"{ours}attn.k_norm.weight"] = _one(f"{theirs}{names['k_norm']}.weight")
        for s in ("weight", "bias"):
            out[f"{ours}attn.proj.{s}"] = _one(f"{theirs}{names['proj']}.{s}")
            out[f"{ours}mlp.fc1.{s}"] = _one(f"{theirs}mlp.fc1.{s}")
            out[f"{ours}mlp.fc2.{s}"] = _one(f"{theirs}mlp.fc2.{s}")
    return out


def _projector_map(layout: str) -> dict[str, Source]:
    if layout == "original":
        theirs = {"norm": "mlp1.0", "fc1": "mlp1.1", "fc2": "mlp1.3"}
    else:
        p = "multi_modal_projector."
        theirs = {"norm": p + "layer_norm", "fc1": p + "linear_1", "fc2": p + "linear_2"}
    return {f"projector.{ours}.{s}": _one(f"{name}.{s}") for ours, name in theirs.items() for s in ("weight", "bias")}


def _flash_map(layout: str) -> dict[str, Source]:
    """Flash's `mlp2` and router (docs/flash.md#checkpoints): the official remote code's module names, and
    in the hf layout those of OpenGVLab's conversion script (internvl_custom2hf_flash.py), which also splits
    each pooling attention's `in_proj` into query / key / value."""
    original = layout == "original"
    out: dict[str, Source] = {}
    mlp2 = {"norm": "0", "fc1": "1", "fc2": "4", "fc3": "7"} if original else {f"fc{i}": f"dense{i}" for i in (1, 2, 3)}
    if not original:
        mlp2["norm"] = "norm"
    pool = "pooling_before_gating."
    out["router.pooling.query"] = _one(pool + "query_token")
    for ours, theirs in mlp2.items():
        for s in ("weight", "bias"):
            out[f"compressed_projector.{ours}.{s}"] = _one(f"mlp2.{theirs}.{s}")
    for i in range(1, 5):
        for s in ("weight", "bias"):
            out[f"router.pooling.norm{i}.{s}"] = _one(f"{pool}norm{i}.{s}")
            out[f"router.pooling.attn{i}.out_proj.{s}"] = _one(f"{pool}attn{i}.out_proj.{s}")
            if original:
                out[f"router.pooling.attn{i}.in_proj_{s}"] = _one(f"{pool}attn{i}.in_proj_{s}")
            else:
                out[f"router.pooling.attn{i}.in_proj_{s}"] = Source(
                    tuple(f"{pool}attn{i}.{x}.{s}" for x in ("query", "key", "value"))
                )
    block = (
        {"fc_in": "0", "fc_out": "3", "norm": "5"}
        if original
        else {"fc_in": "dense_in", "fc_out": "dense_out", "norm": "norm"}
    )
    head = {"norm": "gate.0", "proj": "gate.1"} if original else {"norm": "gate_norm", "proj": "gate_proj"}
    for s in ("weight", "bias"):
        for b in range(4):
            for ours, theirs in block.items():
                out[f"router.gate.blocks.{b}.{ours}.{s}"] = _one(f"gating.block{b + 1}.{theirs}.{s}")
        for ours, theirs in head.items():
            out[f"router.gate.{ours}.{s}"] = _one(f"gating.{theirs}.{s}")
    return out


def internlm2_qkv_order(num_heads: int, num_kv_heads: int, head_dim: int) -> torch.Tensor:
    """Rows of InternLM2's `wqkv` in our [q heads; k heads; v heads] order (docs/checkpoints.md#internlm2-wqkv).

    `wqkv` groups rows per KV head g: [q_{gG}, ..., q_{gG+G-1}, k_g, v_g], G = num_heads / num_kv_heads.
    """
    group = num_heads // num_kv_heads
    rows = torch.arange((num_heads + 2 * num_kv_heads) * head_dim).view(num_kv_heads, group + 2, head_dim)
    return torch.cat([rows[:, :group].reshape(-1), rows[:, group].reshape(-1), rows[:, group + 1].reshape(-1)])


def _language_map(config: InternVLConfig, layout: str) -> dict[str, Source]:
    t = config.text
    prefix = "language_model.model."  # same in both layouts (hf: as transformers writes it, docs/checkpoints.md#the-hf-layout)
    head = "language_model.lm_head.weight"
    fused_internlm2 = t.family == "internlm2" and layout == "original"
    out: dict[str, Source] = {}
    if fused_internlm2:
        out["language.embed.weight"] = _one(prefix + "tok_embeddings.weight")
        head = "language_model.output.weight"
        order = internlm2_qkv_order(t.num_heads, t.num_kv_heads, t.head_dim)  # type: ignore[arg-type]
    out["language.norm.weight"] = _one(prefix + "norm.weight")
    out["language.lm_head.weight"] = _one(head)
    if not fused_internlm2:
        out["language.embed.weight"] = _one(prefix + "embed_tokens.weight")
    for i in range(t.num_layers):
        ours, theirs = f"language.layers.{i}.", f"{prefix}layers.{i}."
        if fused_internlm2:
            out[ours + "attn_norm.weight"] = _one(theirs + "attention_norm.weight")
            out[ours + "mlp_norm.weight"] = _one(theirs + "ffn_norm.weight")
            for s in ("weight", "bias") if t.attention_bias else ("weight",):
                out[f"{ours}attn.qkv.{s}"] = Source((f"{theirs}attention.wqkv.{s}",), order)
                out[f"{ours}attn.o.{s}"] = _one(f"{theirs}attention.wo.{s}")
            out[ours + "mlp.gate_up.weight"] = Source(
                (theirs + "feed_forward.w1.weight", theirs + "feed_forward.w3.weight")
            )
            out[ours + "mlp.down.weight"] = _one(theirs + "feed_forward.w2.weight")
            continue
        out[ours + "attn_norm.weight"] = _one(theirs + "input_layernorm.weight")
        out[ours + "mlp_norm.weight"] = _one(theirs + "post_attention_layernorm.weight")
        out[ours + "attn.qkv.weight"] = Source(tuple(f"{theirs}self_attn.{x}_proj.weight" for x in "qkv"))
        if t.attention_bias:
            out[ours + "attn.qkv.bias"] = Source(tuple(f"{theirs}self_attn.{x}_proj.bias" for x in "qkv"))
        out[ours + "attn.o.weight"] = _one(theirs + "self_attn.o_proj.weight")
        if t.output_bias:
            out[ours + "attn.o.bias"] = _one(theirs + "self_attn.o_proj.bias")
        if t.qk_norm:
            out[ours + "attn.q_norm.weight"] = _one(theirs + "self_attn.q_norm.weight")
            out[ours + "attn.k_norm.weight"] = _one(theirs + "self_attn.k_norm.weight")
        if t.is_moe_layer(i):
            out[ours + "mlp.router.weight"] = _one(theirs + "mlp.gate.weight")
            for e in range(t.num_experts):
                expert = f"{theirs}mlp.experts.{e}."
                out[f"{ours}mlp.experts.{e}.gate_up.weight"] = Source(
                    (expert + "gate_proj.weight", expert + "up_proj.weight")
                )
                out[f"{ours}mlp.experts.{e}.down.weight"] = _one(expert + "down_proj.weight")
        else:
            out[ours + "mlp.gate_up.weight"] = Source((theirs + "mlp.gate_proj.weight", theirs + "mlp.up_proj.weight"))
            out[ours + "mlp.down.weight"] = _one(theirs + "mlp.down_proj.weight")
    return out


# The hf layout has two spellings (docs/checkpoints.md#the-hf-layout): transformers' module tree (`model.vision_tower.`, ...) and
# the one its save_pretrained writes and older checkpoints use (`vision_tower.`, ...). We read both and
# write the latter, as transformers itself does.
_HF_MODULE_PREFIXES = (
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.mlp2.", "mlp2."),
    ("model.pooling_before_gating.", "pooling_before_gating."),
    ("model.gating.", "gating."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)


def _canonical_hf_key(key: str) -> str:
    for module_prefix, saved_prefix in _HF_MODULE_PREFIXES:
        if key.startswith(module_prefix):
            return saved_prefix + key[len(module_prefix) :]
    return key


# ----------------------------------------------------------------------------------------------
# Reading tensor files

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class _Entry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


class SafetensorsReader:
    """Reads tensors of one .safetensors file straight into caller-provided memory.

    We parse the (simple, documented) header ourselves and `readinto` the destination, instead of
    memory-mapping the file: a mapped file's pages count as resident memory until unmapped, which would
    hold a whole shard next to the model while loading.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
            header_len = struct.unpack("<Q", head)[0]
            if header_len > size - 8 or header_len > 100_000_000:
                raise CheckpointError(
                    f"{path}: corrupt or truncated safetensors header (says {header_len} bytes, file has {size})"
                )
            try:
                header = json.loads(f.read(header_len))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from exc
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, not an object)")
        base = 8 + header_len
        self.entries: dict[str, _Entry] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = _SAFETENSORS_DTYPES[info["dtype"]]
                shape = tuple(int(x) for x in info["shape"])
                start, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{path}: corrupt header entry for {name!r} ({exc!r})") from exc
            numel = 1
            for dim in shape:
                numel *= dim
            if end - start != numel * dtype.itemsize or start < 0:
                raise CheckpointError(f"{path}: corrupt header entry for {name!r} (byte range does not fit its shape)")
            if base + end > size:
                raise CheckpointError(
                    f"{path}: file is truncated ({size} bytes, tensor {name!r} needs {base + end}); re-download or re-save it"
                )
            self.entries[name] = _Entry(dtype, shape, base + start, base + end)

    def read_into(self, name: str, out: torch.Tensor) -> None:
        """Copy tensor `name` into `out` (contiguous CPU tensor of the same number of elements)."""
        entry = self.entries[name]
        buffer = out if out.dtype == entry.dtype else torch.empty(entry.shape, dtype=entry.dtype)
        view = buffer.reshape(-1).view(torch.uint8).numpy()
        with open(self.path, "rb") as f:
            f.seek(entry.start)
            if f.readinto(view.data) != entry.end - entry.start:
                raise CheckpointError(f"{self.path}: could not read tensor {name!r} (file shrank while reading?)")
        if buffer is not out:
            out.copy_(buffer.reshape(out.shape))


class BinReader:
    """A pickled PyTorch state dict, loaded with weights_only=True (no code execution) and mmap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many types for corrupt pickles/zips
            raise CheckpointError(f"{path}: cannot read PyTorch weights safely ({type(exc).__name__}: {exc})") from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
        self.tensors: dict[str, torch.Tensor] = state
        self.entries = {k: _Entry(v.dtype, tuple(v.shape), 0, 0) for k, v in state.items()}

    def read_into(self, name: str, out: torch.Tensor) -> None:
        out.copy_(self.tensors[name].reshape(out.shape))


@dataclass(frozen=True)
class StoredTensor:
    """Where one checkpoint tensor lives: its file's reader and its name inside that file."""

    reader: SafetensorsReader | BinReader
    name: str

    @property
    def entry(self) -> _Entry:
        return self.reader.entries[self.name]

    @property
    def path(self) -> Path:
        return self.reader.path

    def read_into(self, out: torch.Tensor) -> None:
        self.reader.read_into(self.name, out)


def open_checkpoint_files(folder: Path) -> dict[str, StoredTensor]:
    """Map every checkpoint tensor name to where it is stored."""
    candidates = [
        ("model.safetensors.index.json", None),
        ("model.safetensors", SafetensorsReader),
        ("pytorch_model.bin.index.json", None),
        ("pytorch_model.bin", BinReader),
    ]
    for name, reader_cls in candidates:
        path = folder / name
        if not path.is_file():
            continue
        if reader_cls is not None:
            reader = reader_cls(path)
            return {key: StoredTensor(reader, key) for key in reader.entries}
        try:
            weight_map: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: malformed index file ({exc!r})") from exc
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{path}: malformed index file (weight_map must map tensor names to shard files)")
        shard_cls = SafetensorsReader if name.startswith("model.safetensors") else BinReader
        readers: dict[str, SafetensorsReader | BinReader] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = folder / shard
            if Path(shard).name != shard:
                raise CheckpointError(f"{path}: shard name {shard!r} must be a plain file name")
            if not shard_path.is_file():
                raise CheckpointError(f"{path}: shard {shard} is missing from {folder}")
            readers[shard] = shard_cls(shard_path)
        out = {}
        for key, shard in weight_map.items():
            if key not in readers[shard].entries:
                raise CheckpointError(f"{folder / shard}: tensor {key!r} listed in {name} is not in the shard")
            out[key] = StoredTensor(readers[shard], key)
        return out
    raise CheckpointError(
        f"{folder}: no weights found (expected model.safetensors, model.safetensors.index.json or pytorch_model.bin)"
    )


# ----------------------------------------------------------------------------------------------
# Loading


def load_model(folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> InternVL:
    """Build the model for `folder/config.json` (or a shipped model's name, `nano`) and fill it from the
    checkpoint, strictly."""
    folder = model_folder(folder)
    config, layout = read_config(folder)
    files = open_checkpoint_files(folder)
    if layout == "hf":
        files = {_canonical_hf_key(k): v for k, v in files.items()}
    files = {k: v for k, v in files.items() if not k.endswith(IGNORED_SUFFIXES)}
    if config.text.tie_word_embeddings and "language_model.lm_head.weight" in files:
        config.text.tie_word_embeddings = (
            False  # a stored head wins over the tie flag (docs/checkpoints.md#the-hf-layout)
        )
    dtype = dtype or _checkpoint_dtype(files)
    _check_layer_count(config, files, folder)  # before building: a config of 100000 layers is refused at once
    with torch.device("meta"):
        model = InternVL(config).to(dtype)  # no memory yet: parameters are allocated once, below
    if config.text.tie_word_embeddings:
        model.language.lm_head.weight = model.language.embed.weight
    mapping = checkpoint_map(model, layout)
    _check_keys(mapping, files, folder)
    _check_shapes(model, mapping, files)  # before allocating: a vocab_size of 2**40 never reaches the allocator
    model.to_empty(device="cpu")
    if config.text.tie_word_embeddings:
        model.language.lm_head.weight = model.language.embed.weight
    params = dict(model.named_parameters())
    for name, source in mapping.items():
        _fill(params[name].data, piece_rows(model, name, source, params[name].shape[0]), source, files)
    model.to(device)
    model.eval()
    return model


def _checkpoint_dtype(files: dict[str, StoredTensor]) -> torch.dtype:
    """The floating dtype most of the checkpoint's tensors use (what `dtype=None` loads as)."""
    counts: dict[torch.dtype, int] = {}
    for stored in files.values():
        entry = stored.entry
        if entry.dtype.is_floating_point:
            counts[entry.dtype] = counts.get(entry.dtype, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else torch.float32


def _check_keys(mapping: dict[str, Source], files: dict[str, StoredTensor], folder: Path) -> None:
    expected = {key for source in mapping.values() for key in source.keys}
    missing = sorted(expected - set(files))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{folder}: checkpoint tensor {missing[0]!r} is missing{more}")
    unexpected = sorted(set(files) - expected)
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(
            f"{files[unexpected[0]].path}: unexpected tensor {unexpected[0]!r}{more}; the config does not describe this checkpoint"
        )


_LANGUAGE_LAYER = re.compile(r"^language_model\.model\.layers\.(\d+)\.")


def _check_layer_count(config: InternVLConfig, files: dict[str, StoredTensor], folder: Path) -> None:
    """The decoder's layer count in config.json against the layers the weights hold."""
    indices = {int(m.group(1)) for key in files if (m := _LANGUAGE_LAYER.match(key))}
    if indices and config.text.num_layers != max(indices) + 1:
        raise CheckpointError(
            f"{folder / 'config.json'}: the config asks for {config.text.num_layers} decoder layers, "
            f"the weights hold {max(indices) + 1}"
        )


def _check_shapes(model: InternVL, mapping: dict[str, Source], files: dict[str, StoredTensor]) -> None:
    """Every stored tensor's shape against the config's, on the meta model (nothing allocated yet)."""
    params = dict(model.named_parameters())
    for name, source in mapping.items():
        shape = params[name].shape
        sizes = piece_rows(model, name, source, shape[0]) if len(source.keys) > 1 else [shape[0]]
        for key, rows in zip(source.keys, sizes):
            wanted = (rows, *shape[1:])
            stored = files[key]
            if tuple(stored.entry.shape) != tuple(wanted):
                raise CheckpointError(
                    f"{stored.path}: tensor {key!r} has shape {list(stored.entry.shape)}, "
                    f"expected {list(wanted)} for the config's dimensions"
                )


def _fill(param: torch.Tensor, sizes: list[int], source: Source, files: dict[str, StoredTensor]) -> None:
    """Read the source tensors into consecutive row blocks of `param` (then permute rows if asked);
    `load_model` has checked every shape already (`_check_shapes`)."""
    target = param if source.row_order is None else torch.empty_like(param)
    pieces = target.split(sizes, dim=0) if len(source.keys) > 1 else (target,)
    for key, piece in zip(source.keys, pieces):
        files[key].read_into(piece)  # shapes were checked by `_check_shapes` before allocation
    if source.row_order is not None:
        param.copy_(target[source.row_order])


# ----------------------------------------------------------------------------------------------
# Saving


def checkpoint_tensors(model: InternVL, layout: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint key, tensor) pairs of `model` in `layout`, cut from our fused parameters."""
    params = dict(model.named_parameters())
    for name, source in checkpoint_map(model, layout).items():
        tensor = params[name].detach()
        if source.row_order is not None:
            inverse = torch.argsort(source.row_order)
            tensor = tensor[inverse]
        if len(source.keys) == 1:
            yield source.keys[0], tensor
            continue
        for key, piece in zip(source.keys, tensor.split(piece_rows(model, name, source, tensor.shape[0]), dim=0)):
            yield key, piece


def piece_rows(model: InternVL, name: str, source: Source, rows: int) -> list[int]:
    """Row counts of the checkpoint tensors that make up our `rows`-row tensor `name`:
    q/k/v (GQA-aware) or equal parts (vision q/k/v, gate/up)."""
    parts = len(source.keys)
    t = model.config.text
    if parts == 3 and name.startswith("language.") and ".attn.qkv." in name:
        return [t.num_heads * t.head_dim, t.num_kv_heads * t.head_dim, t.num_kv_heads * t.head_dim]  # type: ignore[operator]
    return [rows // parts] * parts


def save_model(
    model: InternVL,
    folder: str | Path,
    layout: str = "original",
    max_shard_bytes: int = 5 * 2**30,
    overwrite: bool = False,
) -> None:
    """Write config.json and safetensors shards for `layout` into `folder`.

    The files are written to a temporary folder beside `folder` first, then moved in (`_move_in`), so
    an interrupted save never leaves a mix of old and new weights behind a config.json. Only config.json and weight
    files (`*.safetensors`, `*.bin`, `*.index.json`) of an earlier checkpoint are replaced; anything
    else in `folder` (tokenizer files, subfolders) is left alone. A non-empty `folder` that holds no
    checkpoint is refused unless `overwrite` (a typo like `convert model ~` must not touch a home).
    """
    folder = Path(folder)
    check_destination(folder, overwrite)
    if any(isinstance(module, (BlockQuantLinear, Int8Linear, Int4Linear, PackedLinear)) for module in model.modules()):
        raise CheckpointError(
            "a model loaded for inference (int8, int4 or pre-packed weights, as `internvl.load` "
            "makes) cannot be saved: load it with load_model to convert or save"
        )
    config = model.config
    raw = to_original_dict(config) if layout == "original" else to_hf_dict(config)
    if layout == "hf" and model.image_token_id is not None:
        raw["image_token_id"] = model.image_token_id
    dtype = model.language.embed.weight.dtype  # the decoder's (a CPU load may keep the vision side in fp32)
    raw["torch_dtype"] = str(dtype).removeprefix("torch.")
    tensors = {key: t.contiguous().cpu() for key, t in checkpoint_tensors(model, layout)}

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.saving-", dir=folder.parent))
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot write there ({exc.strerror})") from exc
    try:
        write_json(tmp / "config.json", raw)
        _write_shards(tensors, tmp, max_shard_bytes)
        for item in tmp.iterdir():  # mkdtemp's private modes would otherwise stick to the checkpoint
            item.chmod(0o644)
        _move_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OVERWRITE_HELP = (
    "write into a non-empty folder that holds no checkpoint (only config.json and weight files are replaced)"
)


def check_destination(folder: Path, overwrite: bool = False) -> None:
    """Refuse a destination that is a file, or a folder holding more than tokenizer files and no checkpoint
    (unless `overwrite`): a folder with only tokenizer files is a checkpoint being assembled."""
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder}: exists and is not a folder; choose a folder for the checkpoint")
    foreign = folder.is_dir() and any(not (p.is_file() and p.name in TOKENIZER_FILES) for p in folder.iterdir())
    if foreign and not (folder / "config.json").is_file() and not overwrite:
        raise CheckpointError(
            f"{folder}: the folder is not empty and holds no checkpoint; choose a new or empty folder, "
            "or pass --overwrite (only config.json and weight files are ever replaced)"
        )


def _move_in(new: Path, folder: Path) -> None:
    """Replace the checkpoint files of `folder` by those of `new` (every other file stays).

    The old config.json and weights are first moved aside into a hidden sibling folder (deleted at the
    end), config.json first; the new weights are moved in, config.json last. Interrupted midway,
    `folder` holds no config.json, so no loader takes it for a checkpoint, and the old files are still
    in `.NAME.old-*` beside it.
    """
    folder.mkdir(exist_ok=True)
    old = [
        item
        for item in folder.iterdir()
        if item.is_file() and (item.name == "config.json" or _is_weight_file(item.name))
    ]
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    for item in sorted(old, key=lambda item: item.name != "config.json"):  # config.json first
        os.replace(item, aside / item.name)
    for item in sorted(new.iterdir(), key=lambda item: item.name == "config.json"):  # config.json last
        os.replace(item, folder / item.name)
    shutil.rmtree(aside, ignore_errors=True)


def _is_weight_file(name: str) -> bool:
    return name.endswith((".safetensors", ".bin")) or name.endswith(".index.json")


def _write_shards(tensors: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        for key, t in shard.items():
            weight_map[key] = name
            total += t.numel() * t.element_size()
    write_json(folder / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def convert_checkpoint(
    src: str | Path, dst: str | Path, layout: str, dtype: torch.dtype | None = None, overwrite: bool = False
) -> None:
    """Load `src` (either layout) and write it to `dst` in `layout`, with its tokenizer files."""
    src, dst = model_folder(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError(f"{dst}: converting in place is not supported; choose another destination")
    check_destination(dst, overwrite)  # before the load: a bad destination fails at once
    model = load_model(src, dtype=dtype)
    if model.image_token_id is None:
        model.image_token_id = image_token_id_from_tokenizer(src)
    save_model(model, dst, layout=layout, overwrite=overwrite)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def image_token_id_from_tokenizer(folder: Path) -> int | None:
    """`<IMG_CONTEXT>` id read from tokenizer files as data (no tokenizer code is run)."""
    for name in ("tokenizer.json",):
        path = folder / name
        if path.is_file():
            for token in json.loads(path.read_text(encoding="utf-8")).get("added_tokens", []):
                if token.get("content") == "<IMG_CONTEXT>":
                    return int(token["id"])
    path = folder / "added_tokens.json"
    if path.is_file():
        value = json.loads(path.read_text(encoding="utf-8")).get("<IMG_CONTEXT>")
        return int(value) if value is not None else None
    return None
