"""Decode cost of the variants: pathways / negotiax / branched against base, in one process.

Every variant decodes the same synthetic left-padded prompts through the same loop
(`negotiax.generation.branched.decode`, greedy, KV cache); decode tokens/s counts only tokens actually generated.
Prints each variant's decode throughput as a ratio to base (branched is expected near 1/N of base at
small batch on CPU, since it runs N copies of the upper layers).
Usage: .venv/bin/python benchmarks/bench_branched.py [--model-config PATH] [--batch 4] [--length 64] [--new 32]
"""
from __future__ import annotations

import argparse
import logging

import torch

from negotiax.experiments.profile import ProfileConfig, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", help="a hub config.json (random weights); default: SmolLM2 weights")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = ProfileConfig(model_config=args.model_config, device="cpu", dtype="float32",
                        variants=["base", "pathways", "negotiax", "branched"], batch_sizes=[args.batch],
                        prompt_lengths=[args.length], new_tokens=args.new, repeats=args.repeats, train_steps=0)
    result = profile(cfg)
    rows = {r["variant"]: r for r in result["inference"]}
    base = rows["base"]["decode_tokens_per_s"]
    print(f"{result['model']}, CPU ({torch.get_num_threads()} threads), batch {args.batch}, prompt {args.length}, "
          f"{args.new} new tokens, {args.repeats} requests")
    for name, r in rows.items():
        print(f"{name:9s} decode {r['decode_tokens_per_s']:8.1f} tok/s  ratio to base {r['decode_tokens_per_s'] / base:5.2f}"
              f"  latency p50 {r['latency_p50_s']:.3f}s  generated {r['generated_tokens']}")


if __name__ == "__main__":
    main()
