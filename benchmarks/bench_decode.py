"""Greedy decode tokens/s of SmolLM2 on CPU: base vs the attached (non-trivial) default circuit.

Both are measured side by side in one process, alternating rounds so machine noise hits both alike.
Usage: python benchmarks/bench_decode.py [--rounds 5] [--new-tokens 64] [--threads 2] [--logit-cap C]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from negotiax import CircuitConfig, attach, load_backbone

PROMPT = "Explain in a few sentences why the sky is blue."


def decode(model, ids, n):
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, use_cache=True, pad_token_id=0)
    elapsed = time.perf_counter() - start
    generated = out.shape[1] - ids.shape[1]
    assert generated == n, f"expected {n} generated tokens, got {generated}"
    return generated / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--logit-cap", type=float, default=None, help="circuit.logit_cap (the quick recipe uses 4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_backbone(name_or_path="smollm2", device="cpu", dtype="float32")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    a = attach(model, CircuitConfig(logit_cap=args.logit_cap))
    with torch.no_grad():  # a non-trivial circuit: zero-initialised outputs get random values
        for p in a.circuit.parameters():
            p.add_(torch.randn_like(p) * 0.02 / math.sqrt(p.shape[-1]))
    a.detach()
    decode(model, ids, 8)  # warm-up
    base, circuit = [], []
    for _ in range(args.rounds):
        base.append(decode(model, ids, args.new_tokens))
        a = attach(model, a.circuit)
        circuit.append(decode(model, ids, args.new_tokens))
        a.detach()
    b, c = statistics.median(base), statistics.median(circuit)
    print(f"prompt tokens {ids.shape[1]}, new tokens {args.new_tokens}, rounds {args.rounds}, threads {args.threads}, "
          f"logit cap {args.logit_cap}")
    print(f"base     greedy decode: {b:7.1f} tokens/s (median; all: {', '.join(f'{x:.1f}' for x in base)})")
    print(f"negotiax greedy decode: {c:7.1f} tokens/s (median; all: {', '.join(f'{x:.1f}' for x in circuit)})")
    print(f"ratio negotiax/base: {c / b:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
