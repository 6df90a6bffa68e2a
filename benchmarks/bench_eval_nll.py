"""Reference-NLL scoring speed: the current `continuation_logprobs` against the version before length-sorted
batches (benchmarks/ keeps no copy of it: pass --old FILE, e.g. `git show 9eeb494:negotiax/evaluation/metrics.py`).

    .venv/bin/python benchmarks/bench_eval_nll.py --old /tmp/metrics_old.py

Scores the quick recipe's first 80 helpful and 80 honest test references (AlpacaEval, TruthfulQA) with the
real model, each way once in this process, and prints the ratio and the largest difference in log-prob.
"""
from __future__ import annotations

import argparse
import importlib.util
import time

from negotiax.backbone import load_backbone
from negotiax.data.formatting import format_prompt
from negotiax.evaluation.metrics import continuation_logprobs
from negotiax.pipeline import load_tests
from negotiax.recipe import load_recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="a metrics.py holding the baseline continuation_logprobs")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    # loaded as a module of the package, so that its relative imports resolve
    spec = importlib.util.spec_from_file_location("negotiax.evaluation._metrics_before", args.old)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    recipe = load_recipe("configs/quick.yaml", [])
    tests = load_tests(recipe)
    model, tokenizer = load_backbone(recipe.model)
    pairs = []
    for objective in ("helpful", "honest"):
        for ex in tests[objective][:80]:
            ref = ex.reference or ex.meta.get("best_answer") or ex.response
            if ref:
                context = format_prompt(tokenizer, ex.prompt, recipe.eval.template)
                pairs.append((context, " " + ref))
    timings, scores = {}, {}
    for name, fn in (("before", old.continuation_logprobs), ("now", continuation_logprobs)):
        start = time.perf_counter()
        scores[name] = fn(model, tokenizer, pairs, args.batch_size)
        timings[name] = time.perf_counter() - start
    diff = max(abs(a[0] - b[0]) for a, b in zip(scores["before"], scores["now"]))
    print(f"{len(pairs)} references: before {timings['before']:.1f} s, now {timings['now']:.1f} s, "
          f"speed-up x{timings['before'] / timings['now']:.2f}; largest |log-prob difference| {diff:.2e}")


if __name__ == "__main__":
    main()
