"""Generation throughput of `negotiax.generation.generate`: batch 1 vs batch 16 on SmolLM2-135M-Instruct (CPU).

Counts the tokens actually generated (up to and including EOS, never padding) per second of wall
time, both runs in this process on the same AlpacaEval prompts, after a warm-up, and prints the ratio.
Usage: .venv/bin/python benchmarks/bench_generate.py [--n 16] [--max-new-tokens 64] [--batch 16]
"""
from __future__ import annotations

import argparse
import logging
import time

import torch

from negotiax import load_backbone
from negotiax.data import DataConfig, load_test_sets
from negotiax.generation.generate import generate
from negotiax.generation.config import GenerationConfig


def run(model, tokenizer, examples, batch_size: int, max_new_tokens: int) -> tuple[int, float]:
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    start = time.perf_counter()
    rows = generate(model, tokenizer, examples, cfg)
    return sum(r["n_new_tokens"] for r in rows), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="prompts (AlpacaEval, first n)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model, tokenizer = load_backbone(name_or_path="smollm2", device="cpu", dtype="float32")
    examples = load_test_sets(DataConfig(test_limit=args.n))["helpful"]
    run(model, tokenizer, examples[:2], 2, 4)  # warm-up
    print(f"SmolLM2-135M-Instruct, CPU ({torch.get_num_threads()} threads), {len(examples)} AlpacaEval prompts, "
          f"greedy, max_new_tokens={args.max_new_tokens}")
    results = {}
    for batch in (1, args.batch):
        tokens, seconds = run(model, tokenizer, examples, batch, args.max_new_tokens)
        results[batch] = tokens / seconds
        print(f"batch {batch:>2}: {tokens:5d} generated tokens in {seconds:7.1f} s = {tokens / seconds:7.1f} tokens/s")
    print(f"ratio batch {args.batch} / batch 1: {results[args.batch] / results[1]:.2f}x")


if __name__ == "__main__":
    main()
