"""How well can anything linear route the validation prompts at a layer? A probe on the backbone's own states.

    .venv/bin/python scripts/routing_probe.py -c configs/quick-grid.yaml --layers 15 20 [--per-objective 300]

For each objective, --per-objective training prompts of the recipe (spread over its training set, as the routing
warm start takes them) are run through the backbone alone (no circuit); the residual stream at the decision
position (the last prompt token) of each layer is the feature (`--pool content`: the mean over the user's own
tokens, without the chat template's system prompt and headers). A class-balanced logistic regression per layer is
fitted to the training prompts and read on the validation prompts of scripts/validate_alignment.py (never a test
prompt). It prints, per layer and validation group, how many prompts the probe sends to each objective, then the
same as one JSON line (docs/validation/probe/ holds the README's runs).
It shows how the prompt groups lie in the backbone's own states for a given set of training prompts; it is neither
the negotiation (which reads the attention output at its site, and whose routing loss also sees every answer
token) nor a bound on it: on the harmful group, the trained quick circuit routes better than this probe does.
`--questions N` puts the first N question-style helpful prompts (ending in "?") in place of as many spread ones.
`--binary` fits harmless against the other objectives together (is there a harmful-or-not direction at all, whatever
the style of the benign prompts?): the groups are then read as `harmless` or `other`.
`--within K` asks the question without the training prompts: a binary probe cross-validated over the validation
prompts themselves (K stratified folds; each prompt is read by a probe fitted to the other folds), so it tells
whether the states hold a harmful-or-not direction for prompts like these at all, that is whether the training
prompts or the backbone is what falls short. A diagnostic only: nothing it fits is used by a recipe.
"""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch

from negotiax.backbone import load_backbone
from negotiax.data import TokenizedDataset, default_data_dir
from negotiax.data.formatting import encode_prompt
from negotiax.data.loading import load_train_sets
from negotiax.evaluation.negotiation import prompt_layout
from negotiax.recipe import load_recipe
from negotiax.train.route_fit import prompt_ids, spread
from validate_alignment import validation_prompts

TARGETS = {"harmful": "harmless", "benign": "helpful", "benign_hb": "helpful", "honest": "honest"}
OTHER = "other"  # --binary: every objective but harmless


def probe_classes(objectives: list[str], binary: bool) -> tuple[list[str], list[int], dict[str, str]]:
    """The probe's class names, each objective's class index, and each validation group's expected class."""
    if not binary:
        return list(objectives), list(range(len(objectives))), dict(TARGETS)
    names = [OTHER, "harmless"]
    return (names, [int(o == "harmless") for o in objectives],
            {g: t if t == "harmless" else OTHER for g, t in TARGETS.items()})


def read_groups(predictions: dict[str, np.ndarray], names: list[str], targets: dict[str, str]) -> tuple[dict, dict]:
    """Per validation group, how many prompts the probe sends to each class, and the share (%) sent to the
    group's expected class."""
    counts = {g: dict(zip(names, np.bincount(pred, minlength=len(names)).tolist())) for g, pred in predictions.items()}
    accuracy = {g: round(100 * counts[g][targets[g]] / len(pred), 1) for g, pred in predictions.items()}
    return counts, accuracy


def template_frame(tokenizer, template) -> tuple[list[int], list[int]]:
    """The token ids every templated prompt starts and ends with (system prompt and user header; the assistant
    header): what the negotiation's own reading of a prompt leaves out as the template."""
    ids, user, _, _ = prompt_layout(tokenizer, "Name a colour.", None, template)
    return ids[:user.start], ids[user.stop:]


@torch.inference_mode()
def decision_residuals(model, ids: list[list[int]], frame: tuple[list[int], list[int]] | None = None) -> np.ndarray:
    """(n, layers + 1, d): every layer's residual stream at the last token of each id list; with `frame` (the
    template's head and tail ids), the mean over the user's own tokens instead (a row cut at the front keeps at most
    the end of the head, which is left out too)."""
    rows = []
    for row in ids:
        hidden = model(input_ids=torch.tensor([row]), output_hidden_states=True).hidden_states
        if frame is None:
            rows.append(torch.stack([h[0, -1] for h in hidden]).float().numpy())
            continue
        head, tail = frame
        # a row cut at the front keeps the end of the head, or none of it
        start = next((k for k in range(len(head), 0, -1) if row[:k] == head[len(head) - k:]), 0)
        stop = len(row) - len(tail) if row[len(row) - len(tail):] == tail else len(row)
        stop = max(stop, start + 1)
        rows.append(torch.stack([h[0, start:stop].mean(0) for h in hidden]).float().numpy())
    return np.stack(rows)


def within_predictions(val: dict[str, np.ndarray], targets: dict[str, str], names: list[str], folds: int,
                       fit) -> dict[str, np.ndarray]:
    """Each validation prompt's class as read by a probe (`fit(x, y)` returns one with `.predict`) fitted to the
    other folds of all groups together: stratified by the expected class, shuffled with a fixed seed."""
    from sklearn.model_selection import StratifiedKFold

    order = list(val)
    x = np.concatenate([val[g] for g in order])
    y = np.concatenate([[names.index(targets[g])] * len(val[g]) for g in order])
    predicted = np.empty_like(y)
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y):
        predicted[held] = fit(x[train], y[train]).predict(x[held])
    return dict(zip(order, np.split(predicted, np.cumsum([len(val[g]) for g in order])[:-1])))


def training_rows(sets: dict, objective: str, n: int, questions: int) -> list[int]:
    """Indices of n distinct training prompts of the objective, spread as the warm start takes them; with
    `questions`, the first such question-style helpful prompts come first."""
    prompts = [ex.prompt for ex in sets[objective]]
    if objective != "helpful" or not questions:
        return spread(prompts, n)
    first: dict[str, int] = {}  # each prompt at its first row
    for i, prompt in enumerate(prompts):
        first.setdefault(prompt, i)
    asked = [i for prompt, i in first.items() if prompt.strip().endswith("?")][:questions]
    taken = set(asked)
    rest = [i for i in first.values() if i not in taken]
    return asked + [rest[k] for k in spread([prompts[i] for i in rest], n - len(asked))]


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True)
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    p.add_argument("--layers", type=int, nargs="+", default=[15], help="hidden_states indices (0: embeddings)")
    p.add_argument("--per-objective", type=int, default=300)
    p.add_argument("--questions", type=int, default=0)
    p.add_argument("--binary", action="store_true", help="harmless against the other objectives together")
    p.add_argument("--pool", choices=["decision", "content"], default="decision",
                   help="the feature: the decision position's state, or the mean over the user's own tokens")
    p.add_argument("--within", type=int, default=0, metavar="K",
                   help="a binary probe cross-validated over the validation prompts (K folds), no training prompts")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    recipe = load_recipe(args.config, args.overrides)
    objectives = list(recipe.circuit.objectives)
    if set(TARGETS.values()) - set(objectives):
        raise SystemExit(f"{args.config}: the probe needs the objectives {sorted(set(TARGETS.values()))}")
    binary = args.binary or args.within > 0
    model, tokenizer = load_backbone(recipe.model)
    model.eval()
    names, label_of, targets = probe_classes(objectives, binary)
    frame = template_frame(tokenizer, recipe.data.template) if args.pool == "content" else None
    if not args.within:  # the training prompts' features, once for every layer
        sets = load_train_sets(recipe.data)
        features, labels = [], []
        for j, objective in enumerate(objectives):
            picked = [sets[objective][i] for i in training_rows(sets, objective, args.per_objective, args.questions)]
            # tokenised and cut exactly as training and the warm start read them, up to the decision position
            rows = TokenizedDataset(picked, tokenizer, recipe.data.max_length, recipe.data.template, objective,
                                    progress=False)
            features.append(decision_residuals(model, [prompt_ids(f) for f in rows.features], frame))
            labels += [label_of[j]] * len(picked)
        x, y = np.concatenate(features), np.array(labels)
    groups = validation_prompts(default_data_dir(recipe.data.data_dir))
    val = {g: decision_residuals(model, [encode_prompt(tokenizer, p, template=recipe.data.template) for p in prompts],
                                 frame)
           for g, prompts in groups.items()}
    out = {"recipe": args.config, "overrides": args.overrides,
           "per_objective": 0 if args.within else args.per_objective, "questions": args.questions,
           "pool": args.pool, "binary": binary, "within": args.within, "layers": {}}

    def fit(x, y):
        return LogisticRegression(max_iter=2000, C=0.1, class_weight="balanced").fit(x, y)

    for layer in args.layers:
        if args.within:
            predictions = within_predictions({g: v[:, layer] for g, v in val.items()}, targets, names, args.within, fit)
        else:
            probe = fit(x[:, layer], y)
            predictions = {g: probe.predict(v[:, layer]) for g, v in val.items()}
        counts, accuracy = read_groups(predictions, names, targets)
        out["layers"][layer] = {"routed_to": counts, "accuracy": accuracy}
        print(f"layer {layer}: accuracy {accuracy}; routed to {counts}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
