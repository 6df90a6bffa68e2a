"""Training throughput: circuit training vs a plain forward + backward of the frozen backbone, same batches.

Both run in this process on identical batches (one per objective per step, drawn from the real training
data with the data layer's MixtureSampler), alternating step by step so that machine load hits both alike.

  circuit:   backbone + NegotiaX circuit hooked at the middle layer; the full training loss (response CE +
             routing + drift + orthogonality), backward, gradient clipping and an AdamW step on the circuit.
  baseline:  the same backbone without the circuit. A single zero vector (d,) is added by a forward hook at the
             same site (self-attention output of the same layer) and is the only trainable parameter, so the
             backward runs through exactly the same layers; response CE, backward, AdamW step on that vector.
             Every configuration runs the LM head only where an answer token is predicted, as training does
             (`backbone.logits_at`); --lm-head-everywhere adds the baseline as it was before, with logits at
             every position.

  sft-lora:  (with --sft-lora) the baseline users would pick instead: LoRA SFT on a second copy of the backbone
             (train.sft_lora: r=2 on q_proj/v_proj of every layer, no circuit), response CE, backward through
             every layer, AdamW on the adapters.

Prints tokens/s (real, non-padding tokens) of each, the median over rounds, and their ratio (target >= 0.9).

    .venv/bin/python benchmarks/bench_train.py [--model smollm2] [--batch-size 4] [--max-length 128] [--rounds 4]
        [--sft-lora] [--lm-head-everywhere]
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


def answer_logits(model, b, every_position: bool = False):
    """The logits the response CE reads: at the answer-predicting positions only (as training computes them),
    or, with every_position, the LM head at every position (as training did before)."""
    from negotiax.backbone import logits_at
    from negotiax.train.losses import prediction_mask

    if every_position:
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
    return logits_at(model, b["input_ids"], b["attention_mask"], prediction_mask(b["labels"]))


def baseline_step_fn(model, site_module, every_position: bool = False):
    """A plain forward + backward of the frozen backbone, down to a zero vector at the circuit's site."""
    from negotiax.train.losses import response_ce

    bias = SiteBias(model.config.hidden_size)
    optimizer = torch.optim.AdamW(bias.parameters(), lr=1e-3)

    def step(batches):
        handle = site_module.register_forward_hook(bias.hook)
        for b in batches.values():
            logits = answer_logits(model, b, every_position)
            (response_ce(logits, b["labels"]) / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(bias.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        handle.remove()

    return step


def sft_lora_step_fn(model, train_cfg):
    """LoRA SFT on the backbone (a separate copy: peft wraps modules in place), the same loss and optimiser."""
    from negotiax.train.backbone_setup import add_lora
    from negotiax.train.losses import response_ce

    lora = add_lora(model, train_cfg.for_sft_lora())  # the adapter `negotiax train` adds for sft-lora
    params = [p for p in lora.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)

    def step(batches):
        for b in batches.values():
            logits = answer_logits(lora, b)
            (response_ce(logits, b["labels"]) / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in params)


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
    parser.add_argument("--sft-lora", action="store_true", help="also time LoRA SFT (train.sft_lora) on a copy")
    parser.add_argument("--lm-head-everywhere", action="store_true",
                        help="also time the baseline with the LM head at every position, not only where an answer "
                             "token is predicted (how training computed its logits before logits_at)")
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
    steps = {"circuit": circuit_step, "baseline": baseline_step}
    if args.lm_head_everywhere:
        steps["baseline, LM head everywhere"] = baseline_step_fn(model, site, every_position=True)
    if args.sft_lora:
        steps["sft-lora"], n_lora = sft_lora_step_fn(load_backbone(name_or_path=args.model, device="cpu",
                                                                   dtype="float32")[0], train_cfg)
    for step in steps.values():
        step(batches[0])  # warm-up, not timed
    # Alternate single steps (order reversed every round) so a change in machine load hits all alike.
    total, ratios, lora_ratios, tokens = dict.fromkeys(steps, 0.0), [], [], 0
    for r in range(args.rounds):
        for step_batches in batches[1:]:
            n = sum(int(b["attention_mask"].sum()) for b in step_batches.values())
            order = list(steps) if r % 2 == 0 else list(steps)[::-1]
            took = {name: seconds(steps[name], step_batches) for name in order}
            for name, t in took.items():
                total[name] += t
            tokens += n
            ratios.append(took["baseline"] / took["circuit"])
            if "sft-lora" in took:
                lora_ratios.append(took["sft-lora"] / took["circuit"])
        print(f"round {r + 1}: " + ", ".join(f"{k} {tokens / v:.1f} tok/s" for k, v in total.items()) + " (cumulative)",
              flush=True)
    ours, base = total["circuit"], total["baseline"]

    print(f"model {args.model}, layer {layer}, circuit rank {args.rank} ({n_params} trainable parameters), "
          f"{len(objectives)} objectives x batch {args.batch_size}, max_length {args.max_length}, "
          f"{tokens} tokens per configuration, torch threads {torch.get_num_threads()}")
    print(f"circuit training : {tokens / ours:9.1f} tokens/s")
    print(f"baseline fwd+bwd : {tokens / base:9.1f} tokens/s")
    print(f"ratio circuit/baseline: {base / ours:.3f} overall, {statistics.median(ratios):.3f} median of "
          f"{len(ratios)} paired steps (target >= 0.9)")
    if args.lm_head_everywhere:
        print(f"baseline, LM head everywhere: {tokens / total['baseline, LM head everywhere']:9.1f} tokens/s; "
              f"the answer positions alone are {total['baseline, LM head everywhere'] / base:.3f}x as fast")
    if lora_ratios:
        print(f"sft-lora training : {tokens / total['sft-lora']:9.1f} tokens/s ({n_lora} trainable parameters)")
        print(f"ratio circuit/sft-lora: {total['sft-lora'] / ours:.3f} overall, {statistics.median(lora_ratios):.3f} "
              f"median of {len(lora_ratios)} paired steps (> 1: the circuit trains faster)")


if __name__ == "__main__":
    main()
