"""Helpers shared by the experiments: loading a backbone (weights or config only), writing artefacts."""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from ..backbone import resolve_device, resolve_dtype
from ..io import atomic_write

log = logging.getLogger(__name__)


def model_from_config(path: str | Path, device: str = "auto", dtype: str = "auto", seed: int = 0) -> nn.Module:
    """A randomly initialised model from a hub `config.json` (file or folder): shapes without weights."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--model-config {path}: no such config.json file or folder")
    config = AutoConfig.from_pretrained(str(path))  # a folder or the config.json file itself
    dev = resolve_device(device)
    torch.manual_seed(seed)
    with dev:  # initialise directly on the device: a 7B model never sits in host memory
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype, dev))
    return model.eval().requires_grad_(False)


def jsonable(value: Any) -> Any:
    """`default` of io.write_json for the experiments' results: tensors become lists; anything else unknown
    is an error (results hold numbers, not their string forms)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def clean(value: Any) -> Any:
    """NaN / inf -> None so JSON stays valid and a missing number is never shown as a value."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def cells(rows: list[dict], columns: list[str]) -> list[list[str]]:
    """The rows' values in `columns`, formatted for io.markdown_table."""
    return [[fmt(r.get(c)) for c in columns] for r in rows]


def write_csv(rows: list[dict], columns: list[str], path: str | Path) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return atomic_write(path, write)


