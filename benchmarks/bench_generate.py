"""Generation throughput of `negotiax.generation.generate` at several batch sizes on SmolLM2-135M-Instruct (CPU).

Counts the tokens actually generated (up to and including EOS, never padding) per second of wall
time, every run in this process on the same test prompts (the first n AlpacaEval and, with --harmful, as many
BeaverTails ones: the mix `negotiax run` decodes), after a warm-up, and prints each ratio to the first batch size.

--hf-generate times each batch size twice, through the greedy loop (`branched.decode`, which drops a row at its
EOS) and through Hugging Face `generate` (which pads finished rows to the end of the batch), checks that both
wrote the same answers and prints the ratio. --circuit DIR attaches a trained circuit (e.g. runs/quick/circuit)
and --beta harmless=4 sets its preference: a circuit that refuses writes short answers, where the loop gains most.
Usage: .venv/bin/python benchmarks/bench_generate.py [--n 16] [--max-new-tokens 64] [--batch 1 16] [--harmful]
           [--hf-generate] [--circuit DIR] [--beta OBJECTIVE=VALUE ...]
"""
from __future__ import annotations

import argparse
import logging
import time

import torch

import negotiax.generation.generate as G
from negotiax import load_backbone
from negotiax.data import DataConfig, load_test_sets
from negotiax.generation.generate import generate
from negotiax.generation.config import GenerationConfig


def run(model, tokenizer, examples, batch_size: int, max_new_tokens: int, attachment=None, beta=None,
        hf: bool = False) -> tuple[int, float, list[str]]:
    """(generated tokens, seconds, answers); hf: through Hugging Face `generate` instead of the greedy loop."""
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, preference=beta or {})
    loop_applies = G.greedy_loop_applies
    if hf:
        G.greedy_loop_applies = lambda model, cfg: False
    try:
        start = time.perf_counter()
        rows = generate(model, tokenizer, examples, cfg, attachment=attachment)
        seconds = time.perf_counter() - start
    finally:
        G.greedy_loop_applies = loop_applies
    return sum(r["n_new_tokens"] for r in rows), seconds, [r["output"] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="prompts (AlpacaEval, first n)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16],
                        help="batch sizes; the first is the baseline of the ratios")
    parser.add_argument("--harmful", action="store_true", help="add the first n BeaverTails test prompts")
    parser.add_argument("--hf-generate", action="store_true",
                        help="also time Hugging Face generate at each batch size and compare the answers")
    parser.add_argument("--circuit", help="a saved circuit folder to attach (e.g. runs/quick/circuit)")
    parser.add_argument("--beta", nargs="*", default=[], metavar="OBJECTIVE=VALUE", help="the circuit's preference")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model, tokenizer = load_backbone(name_or_path="smollm2", device="cpu", dtype="float32")
    attachment = None
    if args.circuit:
        from negotiax.saving import load_circuit
        attachment = load_circuit(args.circuit, model)
    beta = {k: float(v) for k, v in (item.split("=", 1) for item in args.beta)}
    tests = load_test_sets(DataConfig(test_limit=args.n))
    examples = tests["helpful"] + (tests["harmless"] if args.harmful else [])
    run(model, tokenizer, examples[:2], 2, 4, attachment, beta)  # warm-up
    print(f"SmolLM2-135M-Instruct, CPU ({torch.get_num_threads()} threads), {len(examples)} test prompts, "
          f"greedy, max_new_tokens={args.max_new_tokens}"
          + (f", circuit {args.circuit} at {beta or 'beta 0'}" if args.circuit else ""))
    results = {}
    for batch in args.batch:
        tokens, seconds, answers = run(model, tokenizer, examples, batch, args.max_new_tokens, attachment, beta)
        results[batch] = tokens / seconds
        print(f"batch {batch:>3}: {tokens:5d} generated tokens in {seconds:7.1f} s = {tokens / seconds:7.1f} tokens/s")
        if args.hf_generate:
            hf_tokens, hf_seconds, hf_answers = run(model, tokenizer, examples, batch, args.max_new_tokens,
                                                    attachment, beta, hf=True)
            same = sum(a == b for a, b in zip(answers, hf_answers))
            print(f"  HF generate: {hf_tokens:5d} tokens in {hf_seconds:7.1f} s; the greedy loop is "
                  f"{hf_seconds / seconds:.2f}x as fast; {same} of {len(answers)} answers identical")
    base = args.batch[0]
    for batch in args.batch[1:]:
        print(f"ratio batch {batch} / batch {base}: {results[batch] / results[base]:.2f}x")


if __name__ == "__main__":
    main()
