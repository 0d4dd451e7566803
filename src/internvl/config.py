"""Model configuration: three flat dataclasses and the readers/writers of both config.json layouts.

The original layout (`InternVLChatModel`, remote code) and the transformers-native layout
(`InternVLForConditionalGeneration`, "-hf") describe the same model with different field names
(docs/checkpoints.md). Everything downstream sees only `InternVLConfig`; the two layouts meet here and nowhere else.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internvl.errors import ConfigError
from internvl.shipped import model_folder

# Language-model families and the architecture names that select them in config.json.
ARCHITECTURE_TO_FAMILY = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "LlamaForCausalLM": "llama",
    "InternLM2ForCausalLM": "internlm2",
}
FAMILY_TO_ARCHITECTURE = {family: arch for arch, family in ARCHITECTURE_TO_FAMILY.items()}
MODEL_TYPE_TO_FAMILY = {
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3_moe",
    "llama": "llama",
    "internlm2": "internlm2",
}


@dataclass
class VisionConfig:
    """InternViT hyper-parameters (300M style: LayerNorm, qkv bias; 6B style: RMSNorm, qk-norm)."""

    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    image_size: int = 448
    patch_size: int = 14
    qkv_bias: bool = True
    qk_norm: bool = False
    norm_type: str = "layer_norm"  # "layer_norm" | "rms_norm"
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass
class TextConfig:
    """Decoder hyper-parameters; `family` switches the few places where the backbones differ."""

    family: str = "qwen2"  # qwen2 | qwen3 | qwen3_moe | llama | internlm2
    vocab_size: int = 151674
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_layers: int = 24
    num_heads: int = 14
    num_kv_heads: int = 2
    head_dim: int | None = None  # None: hidden_size // num_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "dynamic" | "linear" | "llama3", "factor": ...}
    max_position_embeddings: int = 32768
    attention_bias: bool = False  # bias on q/k/v (Qwen2: True)
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3)
    tie_word_embeddings: bool = False
    # Mixture of experts (Qwen3-MoE); num_experts == 0 means a dense MLP everywhere.
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] = field(default_factory=list)
    router_aux_loss_coef: float = 0.001
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILY_TO_ARCHITECTURE:
            raise ConfigError(
                f"unknown language-model family {self.family!r}; supported: {sorted(FAMILY_TO_ARCHITECTURE)}"
            )
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_heads

    @property
    def head_size(self) -> int:
        """`head_dim` as an int for the type checker (`__post_init__` fills a missing one)."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def output_bias(self) -> bool:
        """Whether the attention output projection has a bias: `attention_bias` covers it too in Llama and
        InternLM2 configs, while Qwen2's q/k/v bias stops before `o_proj`."""
        return self.attention_bias and self.family != "qwen2"

    def is_moe_layer(self, index: int) -> bool:
        return (
            self.num_experts > 0 and index not in self.mlp_only_layers and (index + 1) % self.decoder_sparse_step == 0
        )


def check_v2pe_delta(delta: float | None, where: str) -> None:
    if delta is not None and not (isinstance(delta, (int, float)) and 0 < delta <= 1):
        raise ConfigError(f"{where} must be a number in (0, 1] (1 = ordinary positions), got {delta!r}")


@dataclass
class InternVLConfig:
    """The whole model: vision encoder, connector, language model, and the inference defaults."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    downsample_ratio: float = 0.5
    ps_version: str = "v2"
    select_layer: int = -1
    template: str = "internvl2_5"
    system_message: str | None = None
    dynamic_image_size: bool = True
    use_thumbnail: bool = True
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    image_token_id: int | None = None  # hf layout stores it; the original layout learns it from the tokenizer
    v2pe_delta: float | None = None  # V2PE: rotary step of an image token (docs/architecture.md#v2pe); None = 1
    # InternVL3.5-Flash (docs/flash.md): a second connector (`mlp2`, 4x fewer tokens per tile) and the
    # Visual Resolution Router. The router compresses a tile when its probability of "compress" is at
    # least the absolute threshold and above the relative threshold's quantile of the prompt's tiles
    # (None: no relative rule; official configs always give a number).
    flash: bool = False
    flash_absolute_threshold: float = 0.5
    flash_relative_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.ps_version not in ("v1", "v2"):
            raise ConfigError(f"ps_version must be 'v1' or 'v2', got {self.ps_version!r}")
        check_v2pe_delta(self.v2pe_delta, "v2pe_delta")
        for key in ("flash_absolute_threshold", "flash_relative_threshold"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ConfigError(f"{key} must be a number in [0, 1], got {value!r}")

    @property
    def uses_v2pe(self) -> bool:
        return self.v2pe_delta is not None and self.v2pe_delta != 1.0

    @property
    def num_image_token(self) -> int:
        """LLM tokens per tile: (448/14)^2 * 0.5^2 = 256 for every released model."""
        grid = self.vision.image_size // self.vision.patch_size
        return int(grid * grid * self.downsample_ratio**2)

    @property
    def num_compressed_image_token(self) -> int:
        """LLM tokens of a tile through Flash's second connector (pixel shuffle at ratio^2): 64 for 448 px
        tiles of 14 px patches, a quarter of `num_image_token`."""
        grid = self.vision.image_size // self.vision.patch_size
        return int(grid * grid * self.downsample_ratio**4)


# ----------------------------------------------------------------------------------------------
# Reading


def read_config(folder: str | Path) -> tuple[InternVLConfig, str]:
    """Read `folder/config.json`; return the config and its layout ("original" or "hf")."""
    path = model_folder(folder) / "config.json"
    if not path.is_file():
        if (path.parent / "trainer_state.json").is_file():
            raise ConfigError(
                f"{path.parent} is a training checkpoint, not a model folder: export it first with "
                f"`internvl train export {path.parent} OUT` and pass OUT"
            )
        raise ConfigError(f"{path}: no config.json in the checkpoint folder")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a JSON object, got a {type(raw).__name__}")
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> tuple[InternVLConfig, str]:
    model_type = raw.get("model_type")
    architectures = raw.get("architectures") or []
    if model_type == "internvl_chat" or "InternVLChatModel" in architectures:
        return _checked(_from_original(raw, source), source), "original"
    hf_types = ("internvl", "internvl_flash")
    hf_architectures = ("InternVLForConditionalGeneration", "InternVLFlashForConditionalGeneration")
    if model_type in hf_types or any(name in architectures for name in hf_architectures):
        return _checked(_from_hf(raw, source), source), "hf"
    raise ConfigError(
        f"{source}: unknown architecture (model_type={model_type!r}, architectures={architectures}); "
        "expected an InternVLChatModel (original) or InternVLForConditionalGeneration (hf) checkpoint"
    )


def _checked(config: InternVLConfig, source: str) -> InternVLConfig:
    """Numbers the model cannot be built with are one line naming the key, not a crash deep inside."""
    ratio = config.downsample_ratio
    grid = config.vision.image_size // config.vision.patch_size
    if not (0 < ratio <= 1) or abs(grid * ratio - round(grid * ratio)) > 1e-6:
        raise ConfigError(
            f"{source}: downsample_ratio must be in (0, 1] and turn the {grid}x{grid} patch grid into whole "
            f"tokens, got {ratio}"
        )
    sizes = {
        "vocab_size": config.text.vocab_size,
        "hidden_size": config.text.hidden_size,
        "num_hidden_layers": config.text.num_layers,
        "vision hidden_size": config.vision.hidden_size,
        "image_size": config.vision.image_size,
        "patch_size": config.vision.patch_size,
    }
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{source}: {key} must be a positive integer, got {value!r}")
    return config


def _require(raw: dict[str, Any], key: str, source: str) -> Any:
    if key not in raw:
        raise ConfigError(f"{source}: missing required field {key!r}")
    return raw[key]


def _from_original(raw: dict[str, Any], source: str) -> InternVLConfig:
    if "ps_version" not in raw:
        raise ConfigError(
            f"{source}: no 'ps_version' field. The official config class then silently uses 'v1' "
            "(a transposed token order, docs/architecture.md#pixel-shuffle), while every InternVL 2.5/3/3.5 release uses 'v2'. "
            'Add "ps_version": "v2" (or "v1" if the model was really trained that way) to config.json.'
        )
    vision_raw = _require(raw, "vision_config", source)
    llm_raw = _require(raw, "llm_config", source)
    vision = _vision_from_original(vision_raw, source)
    force = raw.get("force_image_size")
    if force and force != vision.image_size:
        raise ConfigError(
            f"{source}: force_image_size={force} differs from vision_config.image_size={vision.image_size}; "
            "resize the position embeddings first (not supported yet)"
        )
    return InternVLConfig(
        vision=vision,
        text=_text_from_hf_dict(llm_raw, f"{source} llm_config"),
        downsample_ratio=float(raw.get("downsample_ratio", 0.5)),
        ps_version=raw["ps_version"],
        select_layer=int(raw.get("select_layer", -1)),
        template=raw.get("template") or "internvl2_5",
        system_message=raw.get("system_message"),
        dynamic_image_size=bool(raw.get("dynamic_image_size", True)),
        use_thumbnail=bool(raw.get("use_thumbnail", True)),
        min_dynamic_patch=int(raw.get("min_dynamic_patch", 1)),
        max_dynamic_patch=int(raw.get("max_dynamic_patch", 6)),
        image_token_id=_optional_int(raw.get("image_token_id"), "image_token_id", source),  # our extra key
        v2pe_delta=raw.get("v2pe_delta"),  # our extra key (docs/architecture.md#v2pe)
        **_flash_fields(raw),
    )


def _flash_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """A Flash checkpoint says `flash_mode` (official remote code) or gives the router's thresholds."""
    flash = bool(raw.get("flash_mode")) or "flash_absolute_threshold" in raw or "flash_relative_threshold" in raw
    if not flash:
        return {}
    absolute = raw.get("flash_absolute_threshold")
    return {
        "flash": True,
        "flash_absolute_threshold": 0.5 if absolute is None else absolute,
        "flash_relative_threshold": raw.get("flash_relative_threshold"),
    }


def _optional_int(value: Any, key: str, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    return value


def _vision_from_original(raw: dict[str, Any], source: str) -> VisionConfig:
    return VisionConfig(
        hidden_size=int(_require(raw, "hidden_size", source)),
        num_layers=int(_require(raw, "num_hidden_layers", source)),
        num_heads=int(_require(raw, "num_attention_heads", source)),
        intermediate_size=int(_require(raw, "intermediate_size", source)),
        image_size=int(raw.get("image_size", 448)),
        patch_size=int(raw.get("patch_size", 14)),
        qkv_bias=bool(raw.get("qkv_bias", False)),
        qk_norm=bool(raw.get("qk_normalization", True)),
        norm_type=raw.get("norm_type", "rms_norm"),
        norm_eps=float(raw.get("layer_norm_eps", 1e-6)),
    )


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


def _vision_from_hf(raw: dict[str, Any], source: str) -> VisionConfig:
    return VisionConfig(
        hidden_size=int(raw.get("hidden_size", 1024)),
        num_layers=int(raw.get("num_hidden_layers", 24)),
        num_heads=int(raw.get("num_attention_heads", 16)),
        intermediate_size=int(raw.get("intermediate_size", 4096)),
        image_size=int(_first(raw.get("image_size", 448))),
        patch_size=int(_first(raw.get("patch_size", 14))),
        qkv_bias=bool(raw.get("attention_bias", False)),
        qk_norm=bool(raw.get("use_qk_norm", False)),
        norm_type=raw.get("norm_type", "layer_norm"),
        norm_eps=float(raw.get("layer_norm_eps", 1e-6)),
    )


def _rope_from_dict(raw: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """RoPE base and scaling from either the classic (`rope_theta` + `rope_scaling`) or the
    transformers-5 (`rope_parameters`) spelling; scaling is normalised to use the key `rope_type`."""
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        theta = float(params["rope_theta"])
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        theta = float(raw.get("rope_theta", 10000.0))
        scaling = dict(raw["rope_scaling"]) if raw.get("rope_scaling") else {}
    if "type" in scaling and "rope_type" not in scaling:
        scaling["rope_type"] = scaling.pop("type")
    scaling.pop("type", None)
    if not scaling or scaling.get("rope_type", "default") == "default":
        return theta, None
    if scaling["rope_type"] not in ("dynamic", "linear", "llama3"):
        raise ConfigError(f"unsupported rope scaling {scaling}; supported: dynamic, linear, llama3")
    return theta, scaling


def _text_from_hf_dict(raw: dict[str, Any], source: str) -> TextConfig:
    """Language-model config in the native transformers spelling (also used inside original configs)."""
    architectures = raw.get("architectures") or []
    family = None
    if architectures:
        family = ARCHITECTURE_TO_FAMILY.get(architectures[0])
        if family is None:
            raise ConfigError(
                f"{source}: unknown language-model architecture {architectures[0]!r}; "
                f"supported: {sorted(ARCHITECTURE_TO_FAMILY)}"
            )
    else:
        family = MODEL_TYPE_TO_FAMILY.get(raw.get("model_type", "qwen2"))
        if family is None:
            raise ConfigError(f"{source}: unknown language-model model_type {raw.get('model_type')!r}")
    theta, scaling = _rope_from_dict(raw)
    hidden = int(_require(raw, "hidden_size", source))
    heads = int(_require(raw, "num_attention_heads", source))
    if family == "internlm2":
        attention_bias = bool(raw.get("bias", True))
    elif family == "qwen2":
        attention_bias = True
    else:
        attention_bias = bool(raw.get("attention_bias", False))
    head_dim = raw.get("head_dim")
    return TextConfig(
        family=family,
        vocab_size=int(_require(raw, "vocab_size", source)),
        hidden_size=hidden,
        intermediate_size=int(_require(raw, "intermediate_size", source)),
        num_layers=int(_require(raw, "num_hidden_layers", source)),
        num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=int(head_dim) if head_dim else hidden // heads,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(raw.get("max_position_embeddings", 32768)),
        attention_bias=attention_bias,
        qk_norm=family in ("qwen3", "qwen3_moe"),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        num_experts=int(raw.get("num_experts") or raw.get("num_local_experts") or 0) if family == "qwen3_moe" else 0,
        num_experts_per_tok=int(raw.get("num_experts_per_tok", 0)) if family == "qwen3_moe" else 0,
        moe_intermediate_size=int(raw.get("moe_intermediate_size", 0)) if family == "qwen3_moe" else 0,
        norm_topk_prob=bool(raw.get("norm_topk_prob", False)),  # the transformers class default
        decoder_sparse_step=int(raw.get("decoder_sparse_step", 1) or 1),
        mlp_only_layers=list(raw.get("mlp_only_layers") or []),
        router_aux_loss_coef=float(raw.get("router_aux_loss_coef", 0.001)),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_id=raw.get("eos_token_id"),
        pad_token_id=raw.get("pad_token_id"),
    )


def _from_hf(raw: dict[str, Any], source: str) -> InternVLConfig:
    vision_raw = raw.get("vision_config") or {}
    text_raw = dict(raw.get("text_config") or {})
    text_raw.setdefault("model_type", "qwen2")
    # transformers ties by the top-level flag (class default True); a stored lm_head still wins (weights.py)
    text_raw["tie_word_embeddings"] = raw.get("tie_word_embeddings", text_raw.get("tie_word_embeddings", True))
    strategy = raw.get("vision_feature_select_strategy", "default")
    if strategy != "default":
        raise ConfigError(f"{source}: vision_feature_select_strategy={strategy!r} is not supported (only 'default')")
    feature_layer = raw.get("vision_feature_layer", -1)
    if not isinstance(feature_layer, int):
        raise ConfigError(f"{source}: vision_feature_layer must be one integer, got {feature_layer!r}")
    text = _text_from_hf_dict(text_raw, f"{source} text_config")
    if raw.get(HF_ORIGINAL_LLM_KEY) == "InternLM2ForCausalLM" and text.family == "llama":
        text.family = "internlm2"  # saved by us from an InternLM2 model: the same weights, fused again on the way back
    extras = {
        key: raw[key] for key in HF_EXTRA_KEYS if raw.get(key) is not None
    }  # what we wrote (official files: none)
    return InternVLConfig(
        vision=_vision_from_hf(vision_raw, source),
        text=text,
        downsample_ratio=float(raw.get("downsample_ratio", 0.5)),
        ps_version="v2",  # the transformers-native model always shuffles the v2 way
        select_layer=feature_layer,
        template=str(extras.get("template", "internvl2_5")),
        system_message=extras.get("system_message"),
        dynamic_image_size=bool(extras.get("dynamic_image_size", True)),
        use_thumbnail=bool(extras.get("use_thumbnail", True)),
        min_dynamic_patch=int(extras.get("min_dynamic_patch", 1)),
        max_dynamic_patch=int(extras.get("max_dynamic_patch", 12)),
        image_token_id=int(raw.get("image_token_id", 151667)),
        v2pe_delta=extras.get("v2pe_delta"),
        **_flash_fields(raw),
    )


# Keys the hf layout has no field for, which we write next to transformers' own (transformers keeps unknown
# keys as attributes and ignores them): the chat template and tiling of the original config, so that a
# round trip original -> hf -> original loses nothing, and the InternLM2 origin of a Llama-spelt decoder.
HF_EXTRA_KEYS = (
    "template",
    "system_message",
    "dynamic_image_size",
    "use_thumbnail",
    "min_dynamic_patch",
    "max_dynamic_patch",
    "v2pe_delta",
)
HF_ORIGINAL_LLM_KEY = "internvl_original_llm"


# ----------------------------------------------------------------------------------------------
# Writing


def _text_to_hf_dict(text: TextConfig, *, as_llama: bool = False) -> dict[str, Any]:
    """The native transformers fields of the language model (InternLM2 becomes Llama when `as_llama`)."""
    family = "llama" if as_llama and text.family == "internlm2" else text.family
    out: dict[str, Any] = {
        "architectures": [FAMILY_TO_ARCHITECTURE[family]],
        "model_type": family,
        "vocab_size": text.vocab_size,
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_layers,
        "num_attention_heads": text.num_heads,
        "num_key_value_heads": text.num_kv_heads,
        "head_dim": text.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": text.rms_norm_eps,
        "rope_theta": text.rope_theta,
        "rope_scaling": _scaling_to_dict(text.rope_scaling),
        "max_position_embeddings": text.max_position_embeddings,
        "tie_word_embeddings": text.tie_word_embeddings,
        "bos_token_id": text.bos_token_id,
        "eos_token_id": text.eos_token_id,
        "pad_token_id": text.pad_token_id,
    }
    if family == "internlm2":
        out["bias"] = text.attention_bias
        del out["head_dim"]
    elif family in ("llama", "qwen3", "qwen3_moe"):
        out["attention_bias"] = text.attention_bias
    if family == "llama":
        out["mlp_bias"] = False
    if family == "qwen3_moe":
        out.update(
            num_experts=text.num_experts,
            num_experts_per_tok=text.num_experts_per_tok,
            moe_intermediate_size=text.moe_intermediate_size,
            norm_topk_prob=text.norm_topk_prob,
            decoder_sparse_step=text.decoder_sparse_step,
            mlp_only_layers=list(text.mlp_only_layers),
            router_aux_loss_coef=text.router_aux_loss_coef,
        )
    return out


def _scaling_to_dict(scaling: dict[str, Any] | None) -> dict[str, Any] | None:
    """Write rope scaling with both `type` and `rope_type`, which every transformers release reads."""
    if scaling is None:
        return None
    out = copy.deepcopy(scaling)
    out["type"] = out["rope_type"]
    return out


def to_original_dict(config: InternVLConfig) -> dict[str, Any]:
    """config.json of the original (`InternVLChatModel`) layout with the fields of the official releases."""
    v = config.vision
    vision = {
        "architectures": ["InternVisionModel"],
        "model_type": "intern_vit_6b",
        "hidden_size": v.hidden_size,
        "num_hidden_layers": v.num_layers,
        "num_attention_heads": v.num_heads,
        "intermediate_size": v.intermediate_size,
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "num_channels": 3,
        "qkv_bias": v.qkv_bias,
        "qk_normalization": v.qk_norm,
        "norm_type": v.norm_type,
        "layer_norm_eps": v.norm_eps,
        "hidden_act": "gelu",
        "drop_path_rate": 0.0,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "initializer_factor": 0.1,
        "initializer_range": 1e-10,
        "use_flash_attn": False,
    }
    llm = _text_to_hf_dict(config.text)
    out: dict[str, Any] = {
        "architectures": ["InternVLChatModel"],
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
            "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
        },
        "model_type": "internvl_chat",
        "vision_config": vision,
        "llm_config": llm,
        "downsample_ratio": config.downsample_ratio,
        "ps_version": config.ps_version,
        "select_layer": config.select_layer,
        "template": config.template,
        "force_image_size": v.image_size,
        "dynamic_image_size": config.dynamic_image_size,
        "use_thumbnail": config.use_thumbnail,
        "min_dynamic_patch": config.min_dynamic_patch,
        "max_dynamic_patch": config.max_dynamic_patch,
        "pad2square": False,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "hidden_size": config.text.hidden_size,
        "tie_word_embeddings": config.text.tie_word_embeddings,
    }
    if config.system_message is not None:
        out["system_message"] = config.system_message
    if config.image_token_id is not None:
        out["image_token_id"] = config.image_token_id  # our extra key: official code ignores it
    if config.v2pe_delta is not None:
        out["v2pe_delta"] = config.v2pe_delta  # our extra key: official code has no V2PE
    out.update(_flash_dict(config))
    return out


def _flash_dict(config: InternVLConfig) -> dict[str, Any]:
    if not config.flash:
        return {}
    return {
        "flash_mode": True,
        "flash_absolute_threshold": config.flash_absolute_threshold,
        "flash_relative_threshold": config.flash_relative_threshold,
    }


def to_hf_dict(config: InternVLConfig) -> dict[str, Any]:
    """config.json of the transformers-native (`InternVLForConditionalGeneration`) layout."""
    if config.ps_version != "v2":
        raise ConfigError("the hf layout always uses pixel shuffle v2; this model uses v1 and cannot be saved as hf")
    v = config.vision
    vision = {
        "model_type": "internvl_vision",
        "hidden_size": v.hidden_size,
        "num_hidden_layers": v.num_layers,
        "num_attention_heads": v.num_heads,
        "intermediate_size": v.intermediate_size,
        "image_size": [v.image_size, v.image_size],
        "patch_size": [v.patch_size, v.patch_size],
        "num_channels": 3,
        "attention_bias": v.qkv_bias,
        "use_qk_norm": v.qk_norm,
        "norm_type": v.norm_type,
        "layer_norm_eps": v.norm_eps,
        "hidden_act": "gelu",
        "use_absolute_position_embeddings": True,
        "use_mean_pooling": True,
        "use_mask_token": False,
        "layer_scale_init_value": 0.1,
    }
    text = _text_to_hf_dict(config.text, as_llama=True)
    text.pop("architectures")
    if config.flash:  # the names of OpenGVLab's conversion script (internvl_custom2hf_flash.py)
        vision["model_type"] = "internvl_flash_vision"
    return {
        "architectures": [
            "InternVLFlashForConditionalGeneration" if config.flash else "InternVLForConditionalGeneration"
        ],
        "model_type": "internvl_flash" if config.flash else "internvl",
        "vision_config": vision,
        "text_config": text,
        "image_token_id": config.image_token_id if config.image_token_id is not None else 151667,
        "image_seq_length": config.num_image_token,
        "downsample_ratio": config.downsample_ratio,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": config.select_layer,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": config.text.tie_word_embeddings,
        "template": config.template,
        "dynamic_image_size": config.dynamic_image_size,
        "use_thumbnail": config.use_thumbnail,
        "min_dynamic_patch": config.min_dynamic_patch,
        "max_dynamic_patch": config.max_dynamic_patch,
        **({"system_message": config.system_message} if config.system_message is not None else {}),
        **({"v2pe_delta": config.v2pe_delta} if config.v2pe_delta is not None else {}),
        **({HF_ORIGINAL_LLM_KEY: "InternLM2ForCausalLM"} if config.text.family == "internlm2" else {}),
        **_flash_dict(config),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# Names a user may give for a weight dtype (CLI --dtype, recipes) -> the torch dtype's attribute name.
DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def dtype_by_name(name: str | None) -> Any:
    """`torch.bfloat16` for "bf16" (or "bfloat16"), ...; None stays None (keep the stored dtype)."""
    if name is None:
        return None
    key = name.lower()
    if key not in DTYPE_NAMES:
        raise ConfigError(f"unknown dtype {name!r}; choose from {', '.join(sorted(DTYPE_NAMES))}")
    import torch

    return getattr(torch, DTYPE_NAMES[key])
