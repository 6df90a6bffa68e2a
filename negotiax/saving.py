"""Save and load a circuit alone: safetensors weights plus a JSON config. Never pickle."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from .attach import Attachment, attach, find_decoder_layers, hidden_size_of
from .circuit import Circuit, CircuitConfig
from .io import atomic_write, write_json

WEIGHTS = "circuit.safetensors"
CONFIG = "circuit.json"
FORMAT = "negotiax-circuit/1"


def backbone_identity(model: nn.Module) -> dict:
    config = model.config
    return {
        "name_or_path": str(getattr(config, "_name_or_path", "") or ""),
        "model_type": getattr(config, "model_type", None),
        "architectures": getattr(config, "architectures", None),
    }


def save_circuit(circuit: Circuit | Attachment, directory: str | Path, model: nn.Module | None = None) -> Path:
    """Write `circuit.safetensors` and `circuit.json` into `directory` (created if needed)."""
    if isinstance(circuit, Attachment):
        model = model or circuit.model
        circuit = circuit.circuit
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n_layers = len(find_decoder_layers(model, circuit.cfg.layers_path)) if model is not None else None
    meta = {
        "format": FORMAT,
        "circuit": {**asdict(circuit.cfg), "layers": circuit.layers},
        "hidden_size": circuit.hidden_size,
        "num_layers": n_layers,
        "backbone": backbone_identity(model) if model is not None else None,
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in circuit.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    write_json(directory / CONFIG, meta, default=None)
    return directory


def read_circuit_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no circuit config here; expected the output of save_circuit()")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    return meta


def load_circuit(directory: str | Path, model: nn.Module, attach_to_model: bool = True) -> Attachment | Circuit:
    """Rebuild a saved circuit for `model`, checking that the backbone's shape matches."""
    directory = Path(directory)
    meta = read_circuit_config(directory)
    cfg = CircuitConfig(**meta["circuit"])
    d = hidden_size_of(model)
    n_layers = len(find_decoder_layers(model, cfg.layers_path))
    if meta["hidden_size"] != d:
        raise ValueError(
            f"{directory}: circuit was trained for hidden size {meta['hidden_size']} "
            f"({(meta.get('backbone') or {}).get('name_or_path')}), but this backbone has {d}"
        )
    if meta.get("num_layers") is not None and meta["num_layers"] != n_layers:
        raise ValueError(
            f"{directory}: circuit was trained on a backbone with {meta['num_layers']} layers, this one has {n_layers}"
        )
    circuit = Circuit(cfg, d, cfg.layers)
    state = load_file(str(directory / WEIGHTS))
    missing, unexpected = circuit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{directory / WEIGHTS}: missing {missing}, unexpected {unexpected}")
    return attach(model, circuit) if attach_to_model else circuit
