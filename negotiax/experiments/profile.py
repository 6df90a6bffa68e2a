"""`negotiax profile`: parameters, training and inference throughput, latency and peak memory per variant.

Every variant decodes through the same loop (`negotiax.generation.branched.decode`), greedy, with a KV cache, so the
numbers compare like with like. Prompts are synthetic token ids of chosen lengths (rows of one batch get
different lengths, left-padded, so padding is exercised); what is counted:

- prefill tokens/s: the real (unpadded) prompt tokens of the request / the time of the first forward pass.
  For `branched` the request's tokens are counted once although N branches process them.
- decode tokens/s: tokens generated after the first, summed over rows, each row stopping at its EOS (never
  padding or post-EOS positions) / the time of every later step.
- latency: wall time of one request (a batch: prefill + decode), p50 / p95 over `repeats` requests; also
  p50 / p95 of one decoding step.
- peak memory per configuration: see `negotiax.experiments.memory` (CUDA allocator or process RSS).
- training tokens/s: real tokens per second of forward + backward + AdamW step on the trainable parameters
  (the backbone frozen); `branched` trains the same pathways circuit as `pathways`, so it reports that number.

`sft-lora` is the baseline users would pick instead: LoRA adapters (peft) in the backbone, no circuit, decoded
unmerged (as served next to other adapters; merged into the weights it would cost exactly what base costs).
Its training backpropagates through every layer, a circuit's only through the layers above its site.

Circuits and adapters are fresh unless `circuit_dirs` names trained ones (for `sft-lora`, a saved peft adapter
folder): the arithmetic, and so the cost, is the same.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attach import Attachment, attach
from ..backbone import load_backbone
from ..circuit import CircuitConfig
from ..generation.branched import DecodeResult, decode, eos_ids
from ..io import markdown_table, write_json
from ..saving import load_circuit
from ..train.backbone_setup import add_lora
from ..train.config import SftLoraConfig, TrainConfig
from .common import cells, clean, jsonable, model_from_config
from .memory import PeakMemory

log = logging.getLogger(__name__)

PROFILE_VARIANTS = ("base", "pathways", "branched", "mac", "negotiax", "sft-lora")


@dataclass
class ProfileConfig:
    """What to profile and how."""

    model: str = "smollm2"  # a backbone with weights (name, hub id or path), unless model_config is set
    model_config: str | None = None  # a hub config.json: random weights of that shape (e.g. a 7B on a GPU)
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on a GPU that supports it, else fp32
    variants: list[str] = field(default_factory=lambda: ["base", "pathways", "branched", "negotiax"])
    circuit: CircuitConfig = field(default_factory=CircuitConfig)  # rank, head size, layers, objectives
    circuit_dirs: dict[str, str] = field(default_factory=dict)  # variant -> trained circuit (sft-lora: adapter) folder
    sft_lora: SftLoraConfig = field(default_factory=SftLoraConfig)  # a fresh sft-lora adapter's size
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4])
    prompt_lengths: list[int] = field(default_factory=lambda: [64])  # tokens of the longest row
    new_tokens: int = 32
    repeats: int = 5  # measured requests per configuration
    warmup: int = 1
    train_steps: int = 3  # measured training steps per variant (0: skip)
    train_batch: int = 4
    train_length: int = 128
    threads: int | None = None  # CPU: torch threads (1 avoids oversubscription on a shared machine); None: as is
    seed: int = 0
    output_dir: str = "runs/profile"

    def __post_init__(self) -> None:
        if isinstance(self.circuit, dict):
            self.circuit = CircuitConfig(**self.circuit)
        if isinstance(self.sft_lora, dict):
            self.sft_lora = SftLoraConfig(**self.sft_lora)
        bad = [v for v in self.variants if v not in PROFILE_VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"variants={self.variants}: choose from {', '.join(PROFILE_VARIANTS)}")
        for name in ("batch_sizes", "prompt_lengths"):
            values = getattr(self, name)
            if not values or any(int(v) < 1 for v in values):
                raise ValueError(f"{name}={values}: give positive integers")
        for name in ("new_tokens", "repeats", "train_batch", "train_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.warmup < 0 or self.train_steps < 0:
            raise ValueError("warmup and train_steps must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads}: give a positive number or null")
        if min(self.prompt_lengths) < 2:
            raise ValueError(f"prompt_lengths={self.prompt_lengths}: each must be at least 2 tokens")


def synthetic_batch(vocab: int, batch: int, length: int, avoid: set[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random token ids; row i is shorter than the longest by up to half its length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    for t in avoid:  # no accidental EOS / pad in a prompt
        ids[ids == t] = (t + 1) % vocab if (t + 1) % vocab not in avoid else (t + 2) % vocab
    mask = torch.ones(batch, length, dtype=torch.long)
    for i in range(batch):
        pad = (i * length) // (2 * batch)
        mask[i, :pad] = 0
        ids[i, :pad] = 0
    return ids, mask


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class VariantSetup:
    """Attach what a variant needs (a circuit, LoRA adapters, or nothing for base) and say how to decode it."""

    def __init__(self, model: nn.Module, variant: str, cfg: ProfileConfig) -> None:
        self.variant = variant
        self.attachment: Attachment | None = None
        self.lora = None  # the peft wrapper of sft-lora; its adapters sit inside `model` itself
        self.n_branches = 1
        if variant == "base":
            return
        if variant == "sft-lora":
            self._add_lora(model, cfg)
            return
        kind = "pathways" if variant == "branched" else variant
        trained = cfg.circuit_dirs.get(variant) or (cfg.circuit_dirs.get("pathways") if variant == "branched" else None)
        if trained:
            self.attachment = load_circuit(trained, model)
        else:
            self.attachment = attach(model, CircuitConfig(**{**asdict(cfg.circuit), "variant": kind}))
        if variant == "branched":
            self.n_branches = self.attachment.circuit.cfg.n_objectives

    def _add_lora(self, model: nn.Module, cfg: ProfileConfig) -> None:
        """peft injects the adapters into `model`'s modules in place, so decoding `model` runs them; close()
        takes them out again (unmerged) and gives every backbone parameter back its requires_grad."""
        from peft import PeftModel

        self._grad = {name: p.requires_grad for name, p in model.named_parameters()}
        trained = cfg.circuit_dirs.get("sft-lora")
        if trained:
            self.lora = PeftModel.from_pretrained(model, trained, is_trainable=True)
        else:  # the adapter `negotiax train` would add for sft-lora
            self.lora = add_lora(model, TrainConfig(sft_lora=cfg.sft_lora).for_sft_lora())
        self.lora.eval()

    def trainable(self) -> list[nn.Parameter]:
        module = self.lora if self.lora is not None else self.attachment.circuit
        return [p for p in module.parameters() if p.requires_grad]

    @property
    def parameters(self) -> dict:
        if self.lora is not None:
            n = sum(p.numel() for n_, p in self.lora.named_parameters() if "lora_" in n_)
            return {"delta_params": n, "trainable_params": n}
        if self.attachment is None:
            return {"delta_params": 0, "trainable_params": 0}
        circuit = self.attachment.circuit
        return {"delta_params": sum(p.numel() for p in circuit.parameters()),
                "trainable_params": sum(p.numel() for p in circuit.parameters() if p.requires_grad)}

    def close(self) -> None:
        if self.attachment is not None:
            self.attachment.detach()
        if self.lora is not None:
            model = self.lora.unload()
            for name, p in model.named_parameters():
                p.requires_grad_(self._grad[name])
            self.lora = None


def run_request(model: nn.Module, setup: VariantSetup, ids: torch.Tensor, mask: torch.Tensor, cfg: ProfileConfig,
                eos: list[int]) -> DecodeResult:
    weights = torch.full((setup.n_branches,), 1.0 / setup.n_branches)
    with setup.attachment.branched() if setup.n_branches > 1 else contextlib.nullcontext():
        return decode(model, ids, mask, cfg.new_tokens, eos=eos, n_branches=setup.n_branches,
                      weights=weights)


def profile_inference(model: nn.Module, setup: VariantSetup, batch: int, length: int, cfg: ProfileConfig,
                      eos: list[int], pad: int) -> dict:
    """One (variant, batch size, prompt length) configuration."""
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    ids, mask = synthetic_batch(vocab, batch, length, set(eos) | {pad}, cfg.seed + batch * 7919 + length)
    ids, mask = ids.to(device), mask.to(device)
    for _ in range(cfg.warmup):
        run_request(model, setup, ids, mask, cfg, eos)
    results: list[DecodeResult] = []
    latencies: list[float] = []
    with PeakMemory(device) as mem:
        for _ in range(cfg.repeats):
            start = time.perf_counter()
            results.append(run_request(model, setup, ids, mask, cfg, eos))
            latencies.append(time.perf_counter() - start)
    prompt_tokens = int(mask.sum()) * cfg.repeats
    generated = sum(sum(r.token_counts) for r in results)
    decoded = generated - batch * cfg.repeats  # the first token of each row comes from the prefill
    prefill_s = sum(r.prefill_s for r in results)
    decode_s = sum(r.decode_s for r in results)
    steps = [s for r in results for s in r.step_s]
    return {
        "variant": setup.variant, "batch_size": batch, "prompt_length": length, "max_new_tokens": cfg.new_tokens,
        "branches": setup.n_branches, "requests": cfg.repeats,
        "prompt_tokens": prompt_tokens, "generated_tokens": generated,
        "generated_per_row": results[-1].token_counts,
        "prefill_tokens_per_s": prompt_tokens / prefill_s if prefill_s > 0 else None,
        "decode_tokens_per_s": decoded / decode_s if decode_s > 0 and decoded > 0 else None,
        "latency_p50_s": _percentile(latencies, 50), "latency_p95_s": _percentile(latencies, 95),
        "step_p50_s": _percentile(steps, 50), "step_p95_s": _percentile(steps, 95),
        "peak_memory_mb": mem.reading.peak_bytes / 2**20, "memory_delta_mb": mem.reading.delta_bytes / 2**20,
        "memory_method": mem.reading.method,
    }


def profile_training(model: nn.Module, setup: VariantSetup, cfg: ProfileConfig, eos: list[int], pad: int) -> dict:
    """Training throughput of the variant's trainable parameters (the backbone stays frozen)."""
    params = setup.trainable()
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    ids, mask = synthetic_batch(vocab, cfg.train_batch, cfg.train_length, set(eos) | {pad}, cfg.seed + 1)
    ids, mask = ids.to(device), mask.to(device)
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(params, lr=1e-4)
    times = []
    with PeakMemory(device) as mem:
        for step in range(cfg.train_steps + 1):  # step 0 warms up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step:
                times.append(time.perf_counter() - start)
    tokens = int((labels != -100).sum()) * len(times)
    return {"train_tokens_per_s": tokens / sum(times), "train_step_s": statistics.median(times),
            "train_peak_memory_mb": mem.reading.peak_bytes / 2**20, "memory_method": mem.reading.method}


def load_profile_model(cfg: ProfileConfig) -> tuple[nn.Module, str]:
    if cfg.model_config:
        return model_from_config(cfg.model_config, cfg.device, cfg.dtype, cfg.seed), f"config:{cfg.model_config}"
    model, _ = load_backbone(name_or_path=cfg.model, device=cfg.device, dtype=cfg.dtype)
    return model, cfg.model


def profile(cfg: ProfileConfig, model: nn.Module | None = None) -> dict:
    """Profile every variant at every batch size and prompt length; returns the numbers (also written)."""
    source = "given"
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if model is None:
        model, source = load_profile_model(cfg)
    device = next(model.parameters()).device
    eos = eos_ids(model)
    pad = getattr(model.generation_config, "pad_token_id", None)
    pad = int(pad) if pad is not None else (eos[0] if eos else 0)
    base_params = sum(p.numel() for p in model.parameters())
    out = {"model": source, "device": str(device), "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
           "threads": torch.get_num_threads(), "base_params": base_params, "settings": clean(asdict(cfg)), "variants": {}, "inference": []}
    grid = [(v, b, n) for v in cfg.variants for b in cfg.batch_sizes for n in cfg.prompt_lengths]
    bar = tqdm(total=len(grid), desc="profile", disable=None)
    for variant in cfg.variants:
        setup = VariantSetup(model, variant, cfg)
        try:
            info = {**setup.parameters}
            info["delta_percent"] = 100.0 * info["delta_params"] / base_params
            if variant != "base" and cfg.train_steps:
                with torch.enable_grad():
                    info.update(profile_training(model, setup, cfg, eos, pad))
                if variant == "branched":
                    info["train_note"] = "trains the pathways circuit (one objective per batch), as `pathways`"
            out["variants"][variant] = info
            for b in cfg.batch_sizes:
                for n in cfg.prompt_lengths:
                    out["inference"].append(profile_inference(model, setup, b, n, cfg, eos, pad))
                    bar.update(1)
        finally:
            setup.close()
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    bar.close()
    return out


COLUMNS = ["variant", "batch_size", "prompt_length", "generated_tokens", "prefill_tokens_per_s",
           "decode_tokens_per_s", "latency_p50_s", "latency_p95_s", "peak_memory_mb", "memory_delta_mb"]


def render(result: dict) -> str:
    """The profile as Markdown: a parameters/training table and an inference table."""
    lines = [f"# Profile: {result['model']} on {result['device']} ({result['dtype']}, "
             f"{result.get('threads')} CPU threads)", "",
             f"Base parameters: {result['base_params']:,}", ""]
    rows = [{"variant": v, **info} for v, info in result["variants"].items()]
    columns = ["variant", "delta_params", "trainable_params", "delta_percent", "train_tokens_per_s",
               "train_peak_memory_mb"]
    lines.append(markdown_table(columns, cells(rows, columns)) + "\n")
    lines.append(markdown_table(COLUMNS, cells(result["inference"], COLUMNS)) + "\n")
    method = {r["memory_method"] for r in result["inference"]}
    lines.append(f"Peak memory method: {', '.join(sorted(method))}; memory_delta = peak - level at the start "
                 "of the configuration. Decode tokens exclude each row's first token (from the prefill).")
    return "\n".join(lines) + "\n"


def run_profile(cfg: ProfileConfig) -> Path:
    """Profile, then write profile.json and profile.md into cfg.output_dir; returns the .md path."""
    result = clean(profile(cfg))
    out = Path(cfg.output_dir)
    write_json(out / "profile.json", result, default=jsonable, allow_nan=False)
    (out / "profile.md").write_text(render(result))
    return out / "profile.md"
