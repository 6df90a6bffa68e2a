"""Reading the negotiation (`negotiation.json`, `negotiax interpret`): the current `negotiation_profile` against
an older negotiation.py (benchmarks/ keeps no copy of it: pass --old FILE, e.g.
`git show eb87558:negotiax/evaluation/negotiation.py`).

    git show eb87558:negotiax/evaluation/negotiation.py > /tmp/negotiation_old.py
    .venv/bin/python benchmarks/bench_negotiation.py --old /tmp/negotiation_old.py

The quick recipe's test prompts (100 harmful, 100 benign, 80 TruthfulQA) with their reference answers cut to 48
tokens, as the run reads them after generating; the real model with the recipe's circuit, its negotiation
perturbed so that alpha is not uniform. Each way once in this process; prints the ratio and the largest alpha
difference.
"""
from __future__ import annotations

import time

import torch

from before_after import setup
from negotiax import attach
from negotiax.evaluation.negotiation import negotiation_profile


def main() -> None:
    args, old, recipe, tests, model, tokenizer = setup(
        __doc__, "a negotiation.py holding the baseline negotiation_profile", "negotiax.evaluation")
    prompts, answers = [], []
    for examples in tests.values():
        for ex in examples:
            ref = ex.reference or ex.meta.get("best_answer") or ex.response or ""
            prompts.append(ex.prompt)
            answers.append(tokenizer.decode(tokenizer(ref, add_special_tokens=False).input_ids[:48]))
    torch.manual_seed(0)
    with attach(model, recipe.circuit) as a:
        with torch.no_grad():
            for site in a.circuit.sites.values():
                for param in site.parameters():
                    param.add_(0.5 * torch.randn_like(param))
        timings, profiles = {}, {}
        for name, fn in (("before", old.negotiation_profile), ("now", negotiation_profile)):
            start = time.perf_counter()
            profiles[name] = fn(model, tokenizer, a, prompts, answers, batch_size=args.batch_size)
            timings[name] = time.perf_counter() - start
    diff = max(float((getattr(profiles["before"], r) - getattr(profiles["now"], r)).abs().max())
               for r in ("decision", "prompt", "answer"))
    print(f"negotiation profile, {len(prompts)} prompts with answers: before {timings['before']:.1f} s, "
          f"now {timings['now']:.1f} s, speed-up x{timings['before'] / timings['now']:.2f}; "
          f"largest |alpha difference| {diff:.2e}")


if __name__ == "__main__":
    main()
