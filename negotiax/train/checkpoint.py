"""Atomic training checkpoints: <run>/checkpoints/step-XXXXXX, valid only with a manifest.

A checkpoint is written into a hidden temporary folder, the manifest last, and then renamed into place
with `os.replace`; a run killed half-way leaves only a `.tmp-*` folder, which is ignored and cleaned up.
It holds the circuit (save_circuit format), any other trainable backbone weights (LoRA), the optimiser and
scheduler, the RNG states of python, numpy and torch, and the data sampler's position.
"""
from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..circuit import Circuit
from ..io import replace_dir
from ..saving import WEIGHTS, save_circuit

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "negotiax-checkpoint/1"
NAME = re.compile(r"^step-(\d{6,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def valid_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint folders that carry a manifest, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if NAME.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = valid_checkpoints(folder)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    """python and numpy states as JSON-able values; torch states as tensors."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def extra_trainable(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable backbone weights other than the circuit (LoRA), by name."""
    return {n: p.detach().to("cpu").contiguous() for n, p in backbone.named_parameters() if p.requires_grad}


def save_checkpoint(folder: str | Path, step: int, *, circuit: Circuit | None, backbone: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, sampler_state: Any,
                    extra: dict | None = None, keep_last: int = 2) -> Path:
    """Write checkpoint `step` atomically, then drop all but the newest `keep_last`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint_name(step)
    rng = rng_state()
    states = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
              "torch_rng": rng.pop("torch"), "cuda_rng": rng.pop("cuda")}
    meta = {"format": FORMAT, "step": step, "rng": rng, "sampler": sampler_state, **(extra or {})}
    try:
        text = json.dumps(meta)
    except TypeError as err:
        raise ValueError(f"checkpoint at step {step}: the sampler state is not JSON-serialisable ({err})") from None

    def write(tmp: Path) -> None:
        tmp.mkdir()
        if circuit is not None:  # None: LoRA-only training (sft-lora)
            save_circuit(circuit, tmp / "circuit", model=backbone)
        lora = extra_trainable(backbone)
        if lora:
            save_file(lora, str(tmp / "backbone_trainable.safetensors"))
        torch.save(states, tmp / "state.pt")
        (tmp / MANIFEST).write_text(text)  # written last: its presence marks a complete checkpoint

    replace_dir(final, write, tmp=folder / f".tmp-{final.name}")
    prune(folder, keep_last)
    log.info("checkpoint %s", final)
    return final


def prune(folder: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` valid checkpoints; remove leftovers of interrupted writes."""
    for old in valid_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old)
    for stale in folder.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def load_checkpoint(path: str | Path, *, circuit: Circuit | None, backbone: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    """Restore weights, optimiser, scheduler and RNG in place; returns the manifest (step, sampler, ...)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {MANIFEST})")
    meta = json.loads(manifest_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{manifest_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if circuit is not None:
        state = load_file(str(path / "circuit" / WEIGHTS))
        device_state = {k: v.to(circuit.state_dict()[k].device) for k, v in state.items()}
        circuit.load_state_dict(device_state, strict=True)
    lora_file = path / "backbone_trainable.safetensors"
    if lora_file.is_file():
        _load_trainable(backbone, load_file(str(lora_file)), lora_file)
    blob = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state({**meta["rng"], "torch": blob["torch_rng"], "cuda": blob["cuda_rng"]})
    return meta


def _load_trainable(backbone: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    params = dict(backbone.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise ValueError(f"{source}: the backbone has no parameters {missing[:3]}...; was LoRA configured the same?")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
