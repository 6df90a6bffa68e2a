"""Configuration: dataclasses with defaults, a YAML recipe per experiment, `key=value` overrides.

`load_config(RunConfig, "configs/quick.yaml", ["train.steps=50", "circuit.layers=[10,20]"])` reads the
recipe, applies the overrides (dotted keys, YAML-typed values) and builds validated dataclasses.
Unknown keys are errors that list the valid ones. The verbs' shared arguments (`--config`, `key=value`,
`--fresh`) are defined here once.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

# The experiments' verbs read their own settings files (configs/experiments/), not a recipe.
EXPERIMENT_ARGUMENTS = {"config_help": "YAML file of this experiment's settings (see configs/experiments/)",
                        "overrides_help": "override settings, e.g. repeats=5"}


def add_recipe_arguments(parser: argparse.ArgumentParser, config_help: str = "YAML recipe (see configs/)",
                         overrides_help: str = "override recipe values, e.g. train.steps=50") -> None:
    """The common `--config file.yaml key=value ...` arguments."""
    parser.add_argument("--config", "-c", help=config_help)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)


def add_fresh_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """`--fresh`: start over when the existing outputs were made with other settings (never a silent wipe)."""
    parser.add_argument("--fresh", action="store_true",
                        help=f"start over: rename {what} to <name>.old-<timestamp> first (nothing is deleted)")


def overrides_from(args: argparse.Namespace, **flags: str) -> list[str]:
    """The positional key=value overrides plus one `key=value` for each given flag (flag name -> config key)."""
    overrides = list(args.overrides)
    for flag, key in flags.items():
        value = getattr(args, flag, None)
        if value:
            overrides.append(f"{key}={value}")
    return overrides


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["a.b=1", "c=[1,2]"] -> {"a": {"b": 1}, "c": [1, 2]}; values are parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r}: write key=value, e.g. train.steps=100")
        key, raw = item.split("=", 1)
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return tree


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _dataclass_type(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass `cls` from a nested dict, recursing into dataclass-typed fields."""
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} in {where or 'config'}; "
                         f"valid keys: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_type(hints.get(name))
        kwargs[name] = from_dict(sub, value, f"{where}.{name}" if where else name) if sub and isinstance(value, dict) else value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{where or 'config'}: {err}") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """A validated `cls` from an optional YAML recipe plus `key=value` overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist; recipes live in configs/")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a recipe must be a YAML mapping of sections")
    data = merge(data, parse_overrides(overrides or []))
    return from_dict(cls, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
