"""Could a learned detector reach issue 11's refusal targets here? A cross-validated linear probe on SmolLM2 features.

    .venv/bin/python scripts/refusal_probe_cv.py [--folds 2 5 10]

The keyword rule (negotiax.refusal) misses soft refusals: answers that only moralise or redirect, which carry no
refusal phrase and need the prompt to be read with the answer. The local judges' recipe (pooled hidden states of
the frozen SmolLM2-135M-Instruct + logistic regression) is the strongest classifier that runs offline here. This
script scores it on tests/data/refusal_labelled.jsonl by k-fold cross-validation (each answer predicted by a probe
that never saw it), for every layer, pooling and C, alone and OR-ed with the rule, and prints the best rows by
precision and recall; the learning curve (more folds = more training rows) shows whether more labels would help.
The best of those 54 settings is picked on the same folds, and features are standardised over all rows, so the
printed figures are an optimistic upper bound on what such a probe would reach on new answers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from negotiax.backbone import load_backbone  # noqa: E402
from negotiax.data import default_data_dir  # noqa: E402
from negotiax.judges.local.features import POOLINGS, FeatureSpec, extract  # noqa: E402
from negotiax.refusal import refusal  # noqa: E402
from test_refusal import DATA, resolve  # noqa: E402

LAYERS = (6, 9, 12, 15, 18, 21, 24, 27, 30)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=int, nargs="+", default=[2, 5, 10])
    p.add_argument("--top", type=int, default=8, help="rows to print, best first")
    args = p.parse_args()
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    resolve(rows, default_data_dir(None))
    y = np.array([r["label"] == "refusal" for r in rows])
    rule = np.array([refusal(r["answer"]) for r in rows])
    model, tokenizer = load_backbone(name_or_path="smollm2", device="cpu", dtype="float32")
    spec = FeatureSpec(template="safety", max_tokens=192, max_context_tokens=64, layers=LAYERS)
    features = extract(model, tokenizer, spec, [(r["prompt"], r["answer"]) for r in rows])

    def scores(pred: np.ndarray) -> tuple[float, float]:
        tp = int((pred & y).sum())
        return tp / max(int(pred.sum()), 1), tp / int(y.sum())

    print(f"{len(rows)} answers, {int(y.sum())} refusals; keyword rule: precision %.3f recall %.3f" % scores(rule))
    for k in args.folds:
        table = []
        for li, layer in enumerate(LAYERS):
            for pi, pooling in enumerate(POOLINGS):
                x = features[:, li, pi]
                x = (x - x.mean(0)) / (x.std(0) + 1e-6)
                for c in (0.01, 0.1):
                    folds = StratifiedKFold(k, shuffle=True, random_state=0)
                    prob = cross_val_predict(LogisticRegression(C=c, max_iter=3000), x, y, cv=folds,
                                             method="predict_proba")[:, 1]
                    pred = prob >= 0.5
                    table.append((layer, pooling, c, *scores(pred), *scores(pred | rule)))
        print(f"\n{k}-fold (each probe trains on {1 - 1 / k:.0%} of the rows), best {args.top} by min(P, R):")
        print("layer pooling       C     probe P  probe R   probe|rule P  probe|rule R")
        for row in sorted(table, key=lambda r: -min(r[3], r[4]))[:args.top]:
            print("%5d %-12s %5.2f   %.3f    %.3f      %.3f         %.3f" % row)


if __name__ == "__main__":
    main()
