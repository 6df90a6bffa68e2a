"""Generation throughput of `negotiax.generation.generate` at several batch sizes on SmolLM2-135M-Instruct (CPU).

Counts the tokens actually generated (up to and including EOS, never padding) per second of wall
time, every run in this process on the same test prompts (the first n AlpacaEval and, with --harmful, as many
BeaverTails ones: the mix `negotiax run` decodes), after a warm-up, and prints each ratio to the first batch size.
Usage: .venv/bin/python benchmarks/bench_generate.py [--n 16] [--max-new-tokens 64] [--batch 1 16] [--harmful]
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
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16],
                        help="batch sizes; the first is the baseline of the ratios")
    parser.add_argument("--harmful", action="store_true", help="add the first n BeaverTails test prompts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model, tokenizer = load_backbone(name_or_path="smollm2", device="cpu", dtype="float32")
    tests = load_test_sets(DataConfig(test_limit=args.n))
    examples = tests["helpful"] + (tests["harmless"] if args.harmful else [])
    run(model, tokenizer, examples[:2], 2, 4)  # warm-up
    print(f"SmolLM2-135M-Instruct, CPU ({torch.get_num_threads()} threads), {len(examples)} test prompts, "
          f"greedy, max_new_tokens={args.max_new_tokens}")
    results = {}
    for batch in args.batch:
        tokens, seconds = run(model, tokenizer, examples, batch, args.max_new_tokens)
        results[batch] = tokens / seconds
        print(f"batch {batch:>3}: {tokens:5d} generated tokens in {seconds:7.1f} s = {tokens / seconds:7.1f} tokens/s")
    base = args.batch[0]
    for batch in args.batch[1:]:
        print(f"ratio batch {batch} / batch {base}: {results[batch] / results[base]:.2f}x")


if __name__ == "__main__":
    main()
