"""Training throughput: circuit training vs a plain forward + backward of the frozen backbone, same batches.

Both run in this process on identical batches (one per objective per step, drawn from the real training
data with the data layer's MixtureSampler), interleaved round by round so that machine load hits both alike.

  circuit:   backbone + NegotiaX circuit hooked at the middle layer; the full training loss (response CE +
             routing + drift + orthogonality), backward, gradient clipping and an AdamW step on the circuit.
  baseline:  the same backbone without the circuit. A single zero vector (d,) is added by a forward hook at the
             same site (self-attention output of the same layer) and is the only trainable parameter, so the
             backward runs through exactly the same layers; response CE, backward, AdamW step on that vector.

Prints tokens/s (real, non-padding tokens) of each, the median over rounds, and their ratio (target >= 0.9).

    .venv/bin/python benchmarks/bench_train.py [--model smollm2] [--batch-size 4] [--max-length 128] [--rounds 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch import nn  # noqa: E402


class SiteBias(nn.Module):
    """The baseline's only trainable parameter: a vector added at the circuit's site."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(d))

    def hook(self, module, args, output):
        if isinstance(output, tuple):
            return (output[0] + self.bias.to(output[0].dtype), *output[1:])
        return output + self.bias.to(output.dtype)


def real_batches(tokenizer, objectives, args, steps):
    from negotiax.data import Collator, DataConfig, MixtureSampler, TokenizedDataset, load_train_sets

    cfg = DataConfig(data_dir=args.data_dir, max_length=args.max_length, train_limit=200, objectives=objectives)
    sets = load_train_sets(cfg)
    tokenized = {o: TokenizedDataset(sets[o], tokenizer, args.max_length, "auto", o, progress=False)
                 for o in objectives}
    sampler, collate = MixtureSampler(tokenized, args.batch_size, seed=0), Collator(tokenizer)
    return [{o: collate(items) for o, items in next(sampler).items()} for _ in range(steps)]


def timed(step_fn, batches) -> float:
    """Tokens per second over the given steps."""
    tokens = sum(int(b["attention_mask"].sum()) for step in batches for b in step.values())
    start = time.perf_counter()
    for step in batches:
        step_fn(step)
    return tokens / (time.perf_counter() - start)


def circuit_step_fn(model, circuit_cfg, train_cfg):
    from negotiax import attach
    from negotiax.train.module import CircuitTrainModule

    attachment = attach(model, circuit_cfg)
    module = CircuitTrainModule(model, attachment, train_cfg)
    params = [p for p in attachment.circuit.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)

    def step(batches):
        for objective, b in batches.items():
            terms = module(b["input_ids"], b["attention_mask"], b["labels"], attachment.circuit.index(objective))
            (terms["loss"] / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, attachment, sum(p.numel() for p in params)


def baseline_step_fn(model, site_module):
    from negotiax.train.losses import response_ce

    bias = SiteBias(model.config.hidden_size)
    handle = site_module.register_forward_hook(bias.hook)
    optimizer = torch.optim.AdamW(bias.parameters(), lr=1e-3)

    def step(batches):
        for b in batches.values():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
            (response_ce(logits, b["labels"]) / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(bias.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, handle


def main() -> None:
    from negotiax import CircuitConfig, load_backbone
    from negotiax.attach import find_attention, find_decoder_layers, resolve_layers
    from negotiax.train.config import TrainConfig

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data-dir", default=os.environ.get("NEGOTIAX_DATA_DIR", str(root.parent / "shared/data")))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps per round and configuration")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_backbone(name_or_path=args.model, device="cpu", dtype="float32")
    circuit_cfg = CircuitConfig(rank=args.rank, head_dim=args.rank)
    objectives = circuit_cfg.objectives
    batches = real_batches(tokenizer, objectives, args, args.steps + 1)
    layer = resolve_layers(None, len(find_decoder_layers(model)))[0]
    site = find_attention(find_decoder_layers(model)[layer])
    train_cfg = TrainConfig()

    ours, base = [], []
    for r in range(args.rounds):
        step, attachment, n_params = circuit_step_fn(model, circuit_cfg, train_cfg)
        step(batches[0])  # warm-up step, not timed
        ours.append(timed(step, batches[1:]))
        attachment.detach()
        step, handle = baseline_step_fn(model, site)
        step(batches[0])
        base.append(timed(step, batches[1:]))
        handle.remove()
        print(f"round {r + 1}: circuit {ours[-1]:.1f} tok/s, baseline {base[-1]:.1f} tok/s", flush=True)

    tokens = sum(int(b["attention_mask"].sum()) for step in batches[1:] for b in step.values())
    print(f"model {args.model}, layer {layer}, circuit rank {args.rank} ({n_params} trainable parameters), "
          f"{len(objectives)} objectives x batch {args.batch_size}, max_length {args.max_length}, "
          f"{tokens} tokens per round, torch threads {torch.get_num_threads()}")
    o, b = statistics.median(ours), statistics.median(base)
    print(f"circuit training : {o:9.1f} tokens/s (median of {args.rounds})")
    print(f"baseline fwd+bwd : {b:9.1f} tokens/s")
    print(f"ratio circuit/baseline: {o / b:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
