"""Evaluation speed: the current reference-NLL and TruthfulQA MC scoring against an older metrics.py
(benchmarks/ keeps no copy of it: pass --old FILE, e.g. `git show 9eeb494:negotiax/evaluation/metrics.py`).

    git show 9eeb494:negotiax/evaluation/metrics.py > /tmp/metrics_old.py
    .venv/bin/python benchmarks/bench_eval.py --old /tmp/metrics_old.py

NLL: the quick recipe's first 80 helpful and 80 honest test references (AlpacaEval, TruthfulQA); MC: MC1/MC2 on
its first 80 TruthfulQA test questions after the QA primer. Each way once in this process, with the real model;
prints the ratios and the largest differences.
"""
from __future__ import annotations

import time

from before_after import setup
from negotiax.data.formatting import format_prompt
from negotiax.evaluation.metrics import continuation_logprobs, mc_scores


def main() -> None:
    args, old, recipe, tests, model, tokenizer = setup(
        __doc__, "a metrics.py holding the baseline continuation_logprobs", "negotiax.evaluation")
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
    print(f"NLL, {len(pairs)} references: before {timings['before']:.1f} s, now {timings['now']:.1f} s, "
          f"speed-up x{timings['before'] / timings['now']:.2f}; largest |log-prob difference| {diff:.2e}")
    questions = [ex for ex in tests["honest"] if ex.incorrect_answers][:80]
    for name, fn in (("before", old.mc_scores), ("now", mc_scores)):
        start = time.perf_counter()
        scores[name] = fn(model, tokenizer, questions, recipe.eval.template, args.batch_size, "qa_primer")
        timings[name] = time.perf_counter() - start
    diff = max(abs(a - b) for k in (0, 1) for a, b in zip(scores["before"][k], scores["now"][k]))
    print(f"MC1/MC2, {len(questions)} questions: before {timings['before']:.1f} s, now {timings['now']:.1f} s, "
          f"speed-up x{timings['before'] / timings['now']:.2f}; largest |MC difference| {diff:.2e}")


if __name__ == "__main__":
    main()
