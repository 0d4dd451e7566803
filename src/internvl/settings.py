"""YAML recipes into nested dataclasses, with dotted `key=value` overrides from the command line.

Rules (one place, so the YAML, the overrides and the defaults can never disagree):
* Every key of the YAML must name a field of the dataclass; an unknown key is a `ConfigError` that
  names the dotted key and lists the known ones.
* An override `optim.lr=1e-4` is parsed as YAML (`true`, `3`, `null`, `[0.9, 0.95]`) and then converted
  to the field's declared type, so `1e-4` (a string to YAML 1.1) still becomes a float.
* Fields typed `dict` hold a plugin's options (e.g. `data.options`): `data.options.seq_len=512` sets one
  entry, and the plugin types them with `from_dict` into its own dataclass
  (`internvl.data.loader.PackedDataOptions`), so their keys are checked too.

It lives at the top of the package because recipes of every layer use it: training, the nano stages
and the data sources.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from internvl.errors import ConfigError

T = TypeVar("T")


def load_settings(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Defaults of `cls`, then the YAML file at `path` (if any), then each `dotted.key=value` override."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such recipe file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the recipe must be a mapping of settings, got {type(loaded).__name__}")
        raw = loaded
    settings = from_dict(cls, raw, source=str(path) if path else "settings")
    for override in overrides:
        apply_override(settings, override)
    return settings


def from_dict(cls: type[T], raw: dict[str, Any], source: str = "settings", prefix: str = "") -> T:
    """Build `cls` from a (possibly partial) mapping; missing keys keep their defaults."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the recipe'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(
                f"{source}: unknown setting {prefix + str(key)!r}; known settings"
                f"{' in ' + repr(prefix.rstrip('.')) if prefix else ''}: {', '.join(names)}"
            )
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            values[key] = from_dict(kind, value or {}, source, f"{prefix}{key}.")  # type: ignore[arg-type]
        else:
            values[key] = convert(value, kind, f"{prefix}{key}", source)
    return cls(**values)


def apply_override(settings: Any, override: str) -> None:
    """Set `a.b.c=value` on nested dataclasses in place, typed by the field."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form dotted.key=value")
    key, text = override.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    target = settings
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(target, dict):  # free-form options: the rest of the key is one entry
            entry = ".".join(parts[depth:])
            target[entry] = _parse_text(text)
            return
        names = [f.name for f in dataclasses.fields(target)]
        if part not in names:
            where = ".".join(parts[:depth])
            raise ConfigError(
                f"unknown setting {key!r} in override {override!r}; known settings"
                f"{' in ' + repr(where) if where else ''}: {', '.join(names)}"
            )
        if last:
            kind = typing.get_type_hints(type(target))[part]
            if dataclasses.is_dataclass(kind):
                raise ConfigError(
                    f"override {override!r}: {key!r} is a section; set one of its fields ({key}.NAME=...)"
                )
            setattr(target, part, convert(_parse_text(text), kind, key, "override"))
            return
        target = getattr(target, part)


def to_dict(settings: Any) -> dict[str, Any]:
    """Plain nested dict (for YAML dumps and checkpoint records)."""
    return dataclasses.asdict(settings)


def dump_yaml(settings: Any) -> str:
    return yaml.safe_dump(to_dict(settings), sort_keys=False, default_flow_style=None)


def _parse_text(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def convert(value: Any, kind: Any, key: str, source: str) -> Any:
    """`value` as the declared type `kind` (int, float, bool, str, X | None, list[X], dict, Literal)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{source}: {key!r} cannot be {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key!r} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key!r} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return [convert(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict or kind is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if kind is Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{source}: {key!r} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: {key!r} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {key!r} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: {key!r} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {key!r} must be a number, got {value!r}")
    if kind is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{source}: {key!r} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{source}: {key!r} has an unsupported type {kind!r}")
