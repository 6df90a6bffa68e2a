"""Train a local judge head: features of candidate layers and poolings, pick by validation, fit, measure.

Validation is a held-out slice of the TRAINING data (split by prompt or question); the test set only
measures. Everything the card reports is computed here, so re-running reproduces it.
"""
from __future__ import annotations

import datetime
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...io import sha256_file
from ...refusal import refusal
from . import data
from .features import FeatureCache, FeatureSpec, cached_extract, feature_model_identity
from .judge import TEMPLATE_OF, LocalHead, LocalJudge

log = logging.getLogger(__name__)


@dataclass
class JudgeTrainConfig:
    """What to train on and which candidates to try."""

    n_train: int | None = 2000  # training rows after the overlap filter (None = all)
    n_val: int | None = 400  # validation rows, from prompts/questions not in training
    n_test: int | None = None  # test rows (None = the whole test set)
    layers: tuple[int, ...] = (6, 9, 12)  # of 30; the forward pass stops after the deepest
    poolings: tuple[str, ...] = ("mean", "last", "answer-mean")
    max_tokens: int = 128
    max_context_tokens: int = 48
    cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)  # inverse L2 strengths tried for the logistic head
    batch_size: int = 16
    seed: int = 0
    slice_size: int = 64  # test rows whose scores the card records, for the fast reproduction test
    cache_dir: str | None = "~/.cache/negotiax/judge_features"
    feature_model_name: str = "SmolLM2-135M-Instruct"
    feature_model_load_name: str = "smollm2"  # what load_backbone(name_or_path=...) takes

    def __post_init__(self) -> None:
        for key in ("n_train", "n_val", "n_test"):
            value = getattr(self, key)
            if value is not None and value < 4:
                raise ValueError(f"{key}={value}: need at least 4 rows (or None for all)")
        if not self.cs or min(self.cs) <= 0:
            raise ValueError(f"cs={self.cs}: give positive inverse regularisation strengths")


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """n, accuracy, balanced accuracy (mean of the two classes' recalls), F1 (positive = label 1), AUROC
    (balanced accuracy and AUROC are None when only one class is present)."""
    from sklearn.metrics import f1_score, roc_auc_score

    y, pred = np.asarray(y), np.asarray(p) >= threshold
    both = len(set(y.tolist())) == 2
    auroc = float(roc_auc_score(y, p)) if both else None
    balanced = float((pred[y == 1].mean() + (~pred[y == 0]).mean()) / 2) if both else None
    return {"n": int(len(y)), "positives": int(y.sum()), "accuracy": float((pred == y).mean()),
            "balanced_accuracy": balanced, "f1": float(f1_score(y, pred, zero_division=0)), "auroc": auroc,
            "flagged_rate": float(pred.mean())}


def fit_head(x: np.ndarray, y: np.ndarray, c: float, seed: int = 0) -> LocalHead:
    from sklearn.linear_model import LogisticRegression

    mean, std = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit((x - mean) / std, y)
    return LocalHead(clf.coef_[0].astype(np.float64), float(clf.intercept_[0]), mean, std)


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The validation-accuracy-maximising threshold on a coarse grid (robust to a small val set)."""
    grid = np.round(np.arange(0.1, 0.91, 0.05), 2)
    accs = [((p >= t) == y).mean() for t in grid]
    return float(grid[int(np.argmax(accs))])


def select(ftr, ytr, fva, yva, spec: FeatureSpec, cs) -> tuple[dict, list[dict]]:
    """Best (layer, pooling, C) by validation AUROC, and the whole table."""
    table = []
    for li, layer in enumerate(spec.layers):
        for pi, pooling in enumerate(spec.poolings):
            for c in cs:
                head = fit_head(ftr[:, li, pi], ytr, c)
                auroc = binary_metrics(yva, head.predict(fva[:, li, pi]), 0.5)["auroc"]
                table.append({"layer": layer, "pooling": pooling, "C": c, "val_auroc": auroc})
    best = max(table, key=lambda r: r["val_auroc"] or 0.0)
    return best, table


def _features(model, tokenizer, spec, rows, cfg: JudgeTrainConfig, identity: dict) -> np.ndarray:
    cache = FeatureCache(cfg.cache_dir, identity, spec) if cfg.cache_dir else None
    return cached_extract(model, tokenizer, spec, [(r["context"], r["answer"]) for r in rows], cache,
                          cfg.batch_size)


def _labels(rows) -> np.ndarray:
    return np.array([r["label"] for r in rows])


def _files_card(data_dir: Path, names) -> list[dict]:
    return [{"path": n, "sha256": sha256_file(Path(data_dir) / n)} for n in names]


def _trained_on(splits: dict) -> list[str]:
    """Sorted short hashes of the normalised prompts/questions of the rows the head was fitted or chosen on."""
    return sorted({data.text_hash(r["context"]) for part in ("train", "val") for r in splits[part]})


SAFETY_SPLIT = (0.8, 0.2)  # training / validation, by prompt: about 1,100 rows, so a fifth validates


def safety_splits(data_dir: Path, cfg: JudgeTrainConfig) -> tuple[dict, dict]:
    """train/val/test rows for the safety judge, and the facts the card reports about them.

    Training rows whose prompt occurs in a blocked file (the policy's default training data, the harmless
    test sets) are dropped; the test set is all of BeaverTails 30k_test.
    """
    rows, stats = data.load_safety_train(data_dir)
    test = data.load_safety_test(data_dir)
    blocked = data.blocked_safety_prompts(data_dir)
    every_blocked = set().union(*blocked.values())
    removed = {Path(name).name: 0 for name in data.SAFETY_TRAIN_FILES}
    for r in rows:
        if r["group"] in every_blocked:
            removed[r["source"]] += 1
    prompts = {r["group"] for r in rows}
    kept = [r for r in rows if r["group"] not in every_blocked]
    train, val = data.split_groups(kept, SAFETY_SPLIT, cfg.seed)
    splits = {"train": data.subsample(train, cfg.n_train, cfg.seed), "val": data.subsample(val, cfg.n_val, cfg.seed),
              "test": data.subsample(test, cfg.n_test, cfg.seed)}
    facts = {**stats, "removed_for_overlap_rows": removed,
             "removed_for_overlap_prompts": {name: len(prompts & p) for name, p in blocked.items()},
             # a row whose prompt is in several blocked files counts once under each of them
             "removed_for_overlap_rows_by_blocked_file": {name: sum(r["group"] in p for r in rows)
                                                           for name, p in blocked.items()},
             "split_fractions": list(SAFETY_SPLIT),
             "removed_prompts_total": len(prompts & every_blocked), "prompts_read": len(prompts),
             "available_after_filter": len(kept),
             "files": _files_card(data_dir, data.SAFETY_TRAIN_FILES),
             "blocked_files": _files_card(data_dir, data.SAFETY_BLOCKED_FILES),
             "test_files": _files_card(data_dir, [data.SAFETY_TEST_FILE]),
             "trained_prompt_sha256_16": _trained_on(splits)}
    return splits, facts


def truthfulqa_splits(data_dir: Path, kind: str, cfg: JudgeTrainConfig) -> tuple[dict, dict]:
    """train/val rows from the questions of TruthfulQA's H3Fusion train half (408, the ones the policy may
    train on; 85/15 by question), test rows from the test half (409, the ones the judge grades); the same
    split for truth and info."""
    rows, stats = data.load_truthfulqa_judge(data_dir, kind)
    halves = data.truthfulqa_halves(data_dir)
    train_half = [r for r in rows if r["group"] in halves["train"]]
    test_half = [r for r in rows if r["group"] in halves["test"]]
    outside = {r["group"] for r in rows} - halves["train"] - halves["test"]
    train, val = data.split_groups(train_half, (0.85, 0.15), cfg.seed)
    splits = {"train": data.subsample(train, cfg.n_train, cfg.seed), "val": data.subsample(val, cfg.n_val, cfg.seed),
              "test": data.subsample(test_half, cfg.n_test, cfg.seed)}
    facts = {**stats,
             "split": "H3Fusion halves of truthfulqa/TruthfulQA.csv (negotiax.data.truthfulqa.split_questions): "
                      "train/validation from the train half's questions, test = the test half's questions",
             "questions": {"train": len({r["group"] for r in train}), "val": len({r["group"] for r in val}),
                           "test": len({r["group"] for r in test_half}),
                           "test_graded": len({r["group"] for r in splits["test"]}),
                           "in_neither_half_dropped": len(outside)},
             "rows_in_train_half": len(train_half), "rows_in_test_half": len(test_half),
             "rows_in_neither_half_dropped": len(rows) - len(train_half) - len(test_half),
             "files": _files_card(data_dir, [data.TRUTH_FILES[kind], data.TRUTHFULQA_CSV]),
             "trained_question_sha256_16": _trained_on(splits)}
    return splits, facts


def keyword_baseline(rows: list[dict]) -> dict:
    """The keyword refusal detector as a safety judge: a response that does not refuse is flagged unsafe."""
    flagged = np.array([0.0 if refusal(r["answer"]) else 1.0 for r in rows])
    return {"available": True, "detector": "negotiax.refusal.refusal",
            "flagged": flagged}


def per_category(rows: list[dict], p: np.ndarray, threshold: float, keyword: np.ndarray | None) -> dict:
    """Per harm category: that category's unsafe rows against all safe rows."""
    safe = np.array([r["label"] == 0 for r in rows])
    out = {}
    for cat in rows[0]["category"]:
        mask = np.array([bool(r["category"][cat]) for r in rows])
        sel = mask | safe
        y = mask[sel].astype(int)
        entry = binary_metrics(y, p[sel], threshold)
        entry = {"n_unsafe": int(mask.sum()), "recall": float((p[mask] >= threshold).mean()) if mask.any() else None,
                 "accuracy": entry["accuracy"], "f1": entry["f1"], "auroc": entry["auroc"]}
        if keyword is not None and mask.any():
            kw = binary_metrics(y, keyword[sel], 0.5)
            entry["keyword"] = {"recall": float(keyword[mask].mean()), "accuracy": kw["accuracy"], "f1": kw["f1"],
                                "auroc": kw["auroc"]}
        out[cat] = entry
    return out


def train_judge(kind: str, data_dir: str | Path, out_dir: str | Path, model, tokenizer,
                cfg: JudgeTrainConfig | None = None) -> dict:
    """Train, select, measure and save one local judge head; returns its card."""
    cfg = cfg or JudgeTrainConfig()
    start = time.time()
    data_dir = Path(data_dir)
    splits, facts = safety_splits(data_dir, cfg) if kind == "safety" else truthfulqa_splits(data_dir, kind, cfg)
    spec = FeatureSpec(template=TEMPLATE_OF[kind], max_tokens=cfg.max_tokens,
                       max_context_tokens=cfg.max_context_tokens, layers=tuple(cfg.layers),
                       poolings=tuple(cfg.poolings))
    identity = feature_model_identity(model, tokenizer, name=cfg.feature_model_name)
    identity["load_name"] = cfg.feature_model_load_name
    feats = {k: _features(model, tokenizer, spec, rows, cfg, identity) for k, rows in splits.items()}
    ys = {k: _labels(rows) for k, rows in splits.items()}
    best, table = select(feats["train"], ys["train"], feats["val"], ys["val"], spec, cfg.cs)
    li, pi = spec.layers.index(best["layer"]), spec.poolings.index(best["pooling"])
    head = fit_head(feats["train"][:, li, pi], ys["train"], best["C"], cfg.seed)
    p_val = head.predict(feats["val"][:, li, pi])
    threshold = choose_threshold(ys["val"], p_val)
    p_test = head.predict(feats["test"][:, li, pi])
    metrics = {"val": binary_metrics(ys["val"], p_val, threshold),
               "test": binary_metrics(ys["test"], p_test, threshold)}
    if kind == "safety":
        kw = keyword_baseline(splits["test"])
        flagged = kw.pop("flagged", None)
        if flagged is not None:
            kw["test"] = binary_metrics(ys["test"], flagged, 0.5)
        metrics["keyword_refusal_on_test"] = kw
        metrics["per_category_test"] = per_category(splits["test"], p_test, threshold, flagged)
    head.card = {
        "judge": f"local-{kind}", "kind": kind,
        "name": f"local-{kind}:{cfg.feature_model_name}/L{best['layer']}-{best['pooling']}",
        "threshold": threshold,
        "label_meaning": {"safety": "P(unsafe)", "truth": "P(true)", "info": "P(informative)"}[kind],
        "feature_model": identity,
        "features": {"template": spec.template, "max_tokens": spec.max_tokens,
                     "max_context_tokens": spec.max_context_tokens, "layer": best["layer"],
                     "pooling": best["pooling"]},
        "head": {"type": "logistic regression on standardised features (scikit-learn)", "C": best["C"]},
        "training": {**facts, "n_train": len(splits["train"]), "n_val": len(splits["val"]),
                     "n_test": len(splits["test"]), "seed": cfg.seed, "config": asdict(cfg)},
        "selection": {"by": "validation AUROC (held-out prompts/questions of the training data; the test set "
                            "chooses nothing)",
                      "candidates": table},
        "metrics": metrics,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    head.card["previous_head"] = previous_head(Path(out_dir) / f"local-{kind}.json")
    path = head.save(Path(out_dir) / f"local-{kind}")
    head.card["slice"] = record_slice(kind, head, splits["test"], model, tokenizer, cfg)
    head.card["training"]["seconds"] = round(time.time() - start, 1)
    head.save(path)
    log.info("%s: test %s", head.card["name"], metrics["test"])
    return head.card


def previous_head(card_path: Path) -> dict | None:
    """What the card of the head about to be replaced says about its data and test metrics; None if there is
    no card. A head already trained on disjoint data passes on the record of the leaky head it replaced."""
    if not card_path.is_file():
        return None
    old = json.loads(card_path.read_text(encoding="utf-8"))
    tr = old["training"]
    policy_files = sorted({x["path"] for x in tr["files"]} & set(data.POLICY_TRAIN_FILES))
    if ("blocked_files" in tr or "split" in tr) and not policy_files:
        return old.get("previous_head")
    trained_on = "on " + ", ".join(f"`{x['path']}`" for x in tr["files"])
    if "questions" in tr:
        q = tr["questions"]
        trained_on += (f", split at random by question over all TruthfulQA questions ({q['train']} training / "
                       f"{q['val']} validation / {q['test']} test), so it had been fitted on test-half questions")
    elif "blocked_files" in tr:
        trained_on += (", with the prompts of the policy's default training files and of the test sets removed; "
                       "but " + " and ".join(f"`{f}`" for f in policy_files) + " became default harmless training "
                       "data of the policy (their refusing answers and their prompts for routing)")
    else:
        trained_on += (", with only its test set's prompts removed; the policy's harmless objective trained on "
                       "the same PKU-SafeRLHF files by default")
    return {"name": old["name"], "created": old["created"], "trained_on": trained_on, "features": old["features"],
            "n_train": tr["n_train"], "threshold": old["threshold"], "test": old["metrics"]["test"]}


def record_slice(kind: str, head: LocalHead, test: list[dict], model, tokenizer, cfg: JudgeTrainConfig) -> dict:
    """Scores of fixed test rows through the judge's own path, for the fast reproduction test."""
    n = min(cfg.slice_size, len(test))
    idx = sorted(np.random.default_rng(cfg.seed + 1).choice(len(test), n, replace=False).tolist())
    rows = [test[i] for i in idx]
    judge = LocalJudge(kind, head=head, model=model, tokenizer=tokenizer, batch_size=cfg.batch_size)
    keys = {"safety": ("prompt", "response")}.get(kind, ("question", "answer"))
    scores = judge.score([{keys[0]: r["context"], keys[1]: r["answer"]} for r in rows])
    y = _labels(rows)
    return {"test_split_positions": idx,  # rebuild with the card's training.config and *_splits()
            "test_file_rows": [r["index"] for r in rows] if kind == "safety" else None,
            "scores": [round(s, 6) for s in scores],
            "metrics": binary_metrics(y, np.array(scores), head.card["threshold"])}
