"""Attach a circuit to any Hugging Face decoder with forward hooks, and detach it again.

Hooks leave the backbone's modules and state dict untouched, so `from_pretrained`, device maps,
gradient checkpointing, KV caches and PEFT wrappers keep working; detaching restores the base model.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import partial
from typing import Hashable, Iterator, Mapping

import torch
from torch import nn

from .circuit import Circuit, CircuitConfig, SiteOutput

log = logging.getLogger(__name__)

ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")


def _resolve_path(model: nn.Module, path: str) -> nn.Module:
    module = model
    for part in path.split("."):
        if not hasattr(module, part):
            raise ValueError(f"circuit.layers_path={path!r}: {type(module).__name__} has no attribute {part!r}")
        module = getattr(module, part)
    return module


def find_decoder_layers(model: nn.Module, path: str | None = None) -> nn.ModuleList:
    """The decoder stack: the ModuleList whose element class is in the model's `_no_split_modules`."""
    if path:
        layers = _resolve_path(model, path)
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(f"circuit.layers_path={path!r} is a {type(layers).__name__}, not an nn.ModuleList")
        return layers
    block_names: set[str] = set()
    for module in model.modules():
        block_names.update(getattr(module, "_no_split_modules", None) or [])
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    found = [m for m in lists if type(m[0]).__name__ in block_names]
    if not found:  # fall back to the longest list of identical blocks that contain an attention module
        found = [m for m in lists if len({type(b) for b in m}) == 1 and _maybe_attention(m[0]) is not None]
    if not found:
        raise ValueError(
            f"could not find the decoder layers of {type(model).__name__}; "
            "set circuit.layers_path to the dotted path of its nn.ModuleList (e.g. 'model.layers')"
        )
    return max(found, key=len)


def _maybe_attention(block: nn.Module) -> nn.Module | None:
    for name in ATTENTION_NAMES:
        if isinstance(getattr(block, name, None), nn.Module):
            return getattr(block, name)
    for child in block.children():
        if type(child).__name__.endswith("Attention"):
            return child
    return None


def find_attention(block: nn.Module) -> nn.Module:
    """The self-attention submodule of one decoder block."""
    attention = _maybe_attention(block)
    if attention is None:
        raise ValueError(
            f"{type(block).__name__} has no self-attention child named {'/'.join(ATTENTION_NAMES)}; "
            "use circuit.site=block"
        )
    return attention


def resolve_layers(requested: list[int] | None, n_layers: int) -> list[int]:
    """Normalise layer indices: None means the middle layer; negative indices count from the end."""
    if not requested:
        return [n_layers // 2]
    out = []
    for i in requested:
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise ValueError(f"circuit.layers: {i} is out of range for a model with {n_layers} decoder layers")
        out.append(j)
    if len(set(out)) != len(out):
        raise ValueError(f"circuit.layers={requested}: a layer is named twice")
    return sorted(out)


def hidden_size_of(model: nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.hidden_size)


def _first_param(module: nn.Module) -> torch.Tensor:
    return next(p for p in module.parameters())


def hidden_of(output) -> torch.Tensor:
    """The hidden states in a module's output: decoder blocks and attention modules return a tuple whose
    first element they are, or the tensor alone."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output, hidden: torch.Tensor):
    """`output` with its hidden states replaced, in the same form (tuple or tensor)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class _StopForward(Exception):
    """Raised by `capture(stop_at=...)` once the deepest wanted layer has run."""


@contextmanager
def capture(modules: Mapping[Hashable, nn.Module], prepend: bool = False,
            stop_at: Hashable | None = None) -> Iterator[dict[Hashable, torch.Tensor]]:
    """Record the hidden states leaving each of `modules` ({key: module}, e.g. decoder blocks or a site's
    attention) on every forward pass inside the block; yields {key: hidden of the last pass}.

    prepend: run before the other hooks of the module (an attached circuit's included), so the record is the
    module's own output h, not the circuit's h'. stop_at: stop the forward pass once that key is recorded
    (the layers above are not needed); the interruption is absorbed at the end of the block."""
    record: dict[Hashable, torch.Tensor] = {}

    def hook(key, module, args, output):
        record[key] = hidden_of(output)
        if key == stop_at:
            raise _StopForward

    handles = [m.register_forward_hook(partial(hook, key), prepend=prepend) for key, m in modules.items()]
    try:
        yield record
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


def site_modules(model: nn.Module, circuit: Circuit, layers: nn.ModuleList | None = None) -> dict[str, nn.Module]:
    """{site key: the module whose output the circuit at that site rewrites} (a block or its attention)."""
    layers = layers if layers is not None else find_decoder_layers(model, circuit.cfg.layers_path)
    return {key: layers[int(key)] if circuit.cfg.site == "block" else find_attention(layers[int(key)])
            for key in circuit.sites}


@contextmanager
def preference(target: "Attachment | Circuit | None", beta: dict[str, float] | None) -> Iterator[None]:
    """Set the circuit's preference for the duration of the block, then restore the one it had. Nothing
    changes without a circuit or with an empty beta."""
    if target is None or not beta:
        yield
        return
    circuit = target.circuit if isinstance(target, Attachment) else target
    old = circuit.preference()
    circuit.set_preference(beta)
    try:
        yield
    finally:
        circuit.set_preference(old)


class Attachment:
    """A circuit hooked into a backbone. Use `with attach(...) as a:` or call `detach()`."""

    def __init__(self, model: nn.Module, circuit: Circuit, layers: nn.ModuleList) -> None:
        self.model = model
        self.circuit = circuit
        self.record: dict[int, SiteOutput] = {}  # what each site computed on the last forward pass
        self.branches = False  # branched variant: the batch holds N stacked copies, one per objective
        self._handles = []
        for key, target in site_modules(model, circuit, layers).items():
            # The circuit lives on its layer's device (model parallel) and stays fp32, like an adapter.
            circuit.sites[key].to(device=_first_param(layers[int(key)]).device)
            self._handles.append(target.register_forward_hook(partial(self._hook, int(key))))

    def _hook(self, layer: int, module: nn.Module, args: tuple, output):
        h = hidden_of(output)
        site = self.circuit.sites[str(layer)]
        x = h.to(site.bias.dtype)
        if self.branches:
            n = self.circuit.cfg.n_objectives
            parts = [site(chunk, branch=j) for j, chunk in enumerate(x.chunk(n, dim=0))]
            out = SiteOutput(torch.cat([p.hidden for p in parts]), None, torch.cat([p.drift for p in parts]),
                             torch.cat([p.sq_norms for p in parts]))
        else:
            out = site(x)
        self.record[layer] = out
        return with_hidden(output, out.hidden.to(h.dtype))

    @contextmanager
    def branched(self) -> Iterator["Attachment"]:
        """Inside the block, a batch holds N stacked copies of the input, one per objective, and copy j runs
        pathway j alone (the branched variant's decoding); the previous mode is restored after."""
        previous, self.branches = self.branches, True
        try:
            yield self
        finally:
            self.branches = previous

    def alpha(self, layer: int | None = None) -> torch.Tensor | None:
        """Negotiation weights (B, S, N) of the last forward pass, at one layer or averaged over layers."""
        if layer is not None:
            return self.record[layer].alpha
        alphas = [o.alpha for o in self.record.values() if o.alpha is not None]
        return torch.stack(alphas).mean(0) if alphas else None

    def detach(self) -> nn.Module:
        """Remove every hook; the backbone is the base model again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.record.clear()
        return self.model

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


def build_circuit(model: nn.Module, cfg: CircuitConfig) -> tuple[Circuit, nn.ModuleList]:
    """A fresh (identity) circuit sized for this backbone."""
    layers = find_decoder_layers(model, cfg.layers_path)
    sites = resolve_layers(cfg.layers, len(layers))
    return Circuit(cfg, hidden_size_of(model), sites), layers


def attach(model: nn.Module, circuit: Circuit | CircuitConfig | None = None) -> Attachment:
    """Hook a circuit (or a new one built from a config) into `model`."""
    if circuit is None or isinstance(circuit, CircuitConfig):
        circuit, layers = build_circuit(model, circuit or CircuitConfig())
    else:
        layers = find_decoder_layers(model, circuit.cfg.layers_path)
        expected = hidden_size_of(model)
        if circuit.hidden_size != expected:
            raise ValueError(f"circuit hidden size {circuit.hidden_size} does not match the backbone's {expected}")
        if max(circuit.layers) >= len(layers):
            raise ValueError(f"circuit sits at layers {circuit.layers} but the backbone has {len(layers)} layers")
    log.info("attached %s circuit at layers %s (%d parameters)", circuit.cfg.variant, circuit.layers,
             sum(p.numel() for p in circuit.parameters()))
    return Attachment(model, circuit, layers)
