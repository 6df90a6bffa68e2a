"""Training throughput: circuit training vs a plain forward + backward of the frozen backbone, same batches.

Both run in this process on identical batches (one per objective per step, drawn from the real training
data with the data layer's MixtureSampler), alternating step by step so that machine load hits both alike.

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

from negotiax.attach import hidden_of, with_hidden  # noqa: E402


class SiteBias(nn.Module):
    """The baseline's only trainable parameter: a vector added at the circuit's site."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(d))

    def hook(self, module, args, output):
        hidden = hidden_of(output)
        return with_hidden(output, hidden + self.bias.to(hidden.dtype))


def real_batches(tokenizer, objectives, args, steps):
    from negotiax.data import Collator, DataConfig, MixtureSampler, TokenizedDataset, load_train_sets

    cfg = DataConfig(data_dir=args.data_dir, max_length=args.max_length, train_limit=200, objectives=objectives)
    sets = load_train_sets(cfg)
    tokenized = {o: TokenizedDataset(sets[o], tokenizer, args.max_length, "auto", o, progress=False)
                 for o in objectives}
    sampler, collate = MixtureSampler(tokenized, args.batch_size, seed=0), Collator(tokenizer)
    return [{o: collate(items) for o, items in next(sampler).items()} for _ in range(steps)]


def circuit_step_fn(model, circuit_cfg, train_cfg):
    """A training step of the circuit; the hooks are attached only while the step runs."""
    from negotiax import attach
    from negotiax.train.module import CircuitTrainModule

    attachment = attach(model, circuit_cfg)
    circuit = attachment.circuit
    attachment.detach()
    params = [p for p in circuit.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)

    def step(batches):
        attachment = attach(model, circuit)
        module = CircuitTrainModule(model, attachment, train_cfg)
        for objective, b in batches.items():
            terms = module(b["input_ids"], b["attention_mask"], b["labels"], circuit.index(objective))
            (terms["loss"] / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        attachment.detach()

    return step, sum(p.numel() for p in params)


def baseline_step_fn(model, site_module):
    """A plain forward + backward of the frozen backbone, down to a zero vector at the circuit's site."""
    from negotiax.train.losses import response_ce

    bias = SiteBias(model.config.hidden_size)
    optimizer = torch.optim.AdamW(bias.parameters(), lr=1e-3)

    def step(batches):
        handle = site_module.register_forward_hook(bias.hook)
        for b in batches.values():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
            (response_ce(logits, b["labels"]) / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(bias.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        handle.remove()

    return step


def seconds(step, batches) -> float:
    start = time.perf_counter()
    step(batches)
    return time.perf_counter() - start


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
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per round and configuration")
    parser.add_argument("--rounds", type=int, default=2)
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

    circuit_step, n_params = circuit_step_fn(model, circuit_cfg, train_cfg)
    baseline_step = baseline_step_fn(model, site)
    circuit_step(batches[0]), baseline_step(batches[0])  # warm-up, not timed
    # Alternate single steps (order swapped every round) so a change in machine load hits both alike.
    ours, base, ratios, tokens = 0.0, 0.0, [], 0
    for r in range(args.rounds):
        for step_batches in batches[1:]:
            n = sum(int(b["attention_mask"].sum()) for b in step_batches.values())
            if r % 2 == 0:
                t_ours, t_base = seconds(circuit_step, step_batches), seconds(baseline_step, step_batches)
            else:
                t_base, t_ours = seconds(baseline_step, step_batches), seconds(circuit_step, step_batches)
            ours, base, tokens = ours + t_ours, base + t_base, tokens + n
            ratios.append(t_base / t_ours)
        print(f"round {r + 1}: circuit {tokens / ours:.1f} tok/s, baseline {tokens / base:.1f} tok/s (cumulative)",
              flush=True)

    print(f"model {args.model}, layer {layer}, circuit rank {args.rank} ({n_params} trainable parameters), "
          f"{len(objectives)} objectives x batch {args.batch_size}, max_length {args.max_length}, "
          f"{tokens} tokens per configuration, torch threads {torch.get_num_threads()}")
    print(f"circuit training : {tokens / ours:9.1f} tokens/s")
    print(f"baseline fwd+bwd : {tokens / base:9.1f} tokens/s")
    print(f"ratio circuit/baseline: {base / ours:.3f} overall, {statistics.median(ratios):.3f} median of "
          f"{len(ratios)} paired steps (target >= 0.9)")


if __name__ == "__main__":
    main()
