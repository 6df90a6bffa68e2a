"""The human-readable model card (Markdown) of a local judge head, written from its JSON card."""
from __future__ import annotations

from pathlib import Path


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _metric_row(label: str, m: dict) -> str:
    return (f"| {label} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m.get('balanced_accuracy'))} | {_fmt(m['f1'])} "
            f"| {_fmt(m['auroc'])} |")


def _safety_data(tr: dict) -> list[str]:
    removed_rows = sum(tr["removed_for_overlap_rows"].values())
    return [
        f"- rows read {tr['rows_read']} ({tr['prompts_read']} distinct prompts), distinct texts {tr['distinct_texts']}, "
        f"texts with conflicting labels dropped {tr['conflicting_labels_dropped']}",
        f"- **dropped** because their prompt (case and whitespace ignored, `negotiax.data.normalize_prompt`) occurs in "
        f"a file the policy trains on by default or in a harmless test set: {removed_rows} rows, "
        f"{tr['removed_prompts_total']} prompts. Prompts shared with each checked file: "
        + ", ".join(f"`{k}` {v}" for k, v in tr["removed_for_overlap_prompts"].items())
        + ". Rows dropped per training file: " + ", ".join(f"{k} {v}" for k, v in tr["removed_for_overlap_rows"].items()),
        *(["- rows dropped per blocked file (a row whose prompt is in several counts under each): "
           + ", ".join(f"`{k}` {v}" for k, v in tr["removed_for_overlap_rows_by_blocked_file"].items())]
          if "removed_for_overlap_rows_by_blocked_file" in tr else []),
        f"- the {tr['available_after_filter']} rows left are split "
        + "/".join(str(round(100 * f)) for f in tr.get("split_fractions", (0.85, 0.15)))
        + " by prompt into training / validation",
        "- checked files: " + ", ".join(f"`{x['path']}` (sha256 `{x['sha256'][:16]}…`)" for x in tr["blocked_files"]),
        "- **disjoint from the policy's default training data**: none of the files it trains on is a default "
        "training file of the policy (the checked files above hold every `path` of `negotiax.data.config."
        "DEFAULT_TRAIN`, read whole, and the harmless test sets), and none of its prompts occurs in a checked file. "
        "The JSON card lists the sha256 (first 16 hex digits) of every normalised "
        f"prompt it was fitted or validated on (`trained_prompt_sha256_16`, {len(tr['trained_prompt_sha256_16'])} "
        "prompts); `tests/test_local_judges.py` checks them against the data files.",
        *([f"- {tr['recarded']}"] if tr.get("recarded") else []),
    ]


def _truthfulqa_data(tr: dict) -> list[str]:
    q = tr["questions"]
    return [
        f"- rows read {tr['rows_read']}, distinct texts {tr['distinct_texts']}, texts with conflicting labels "
        f"dropped {tr['conflicting_labels_dropped']}",
        f"- split: {tr['split']}",
        f"- questions: {q['train']} training / {q['val']} validation (together the train half, {tr['rows_in_train_half']} "
        f"rows) / {q['test']} test (the test half, {tr['rows_in_test_half']} rows); {q['in_neither_half_dropped']} "
        f"question of the judge file is in neither half of TruthfulQA.csv ({tr['rows_in_neither_half_dropped']} "
        "rows, dropped)",
        "- **never trained on a question it grades**: every question it was fitted or validated on is in the train "
        "half, the one the policy may train on. The JSON card lists the sha256 (first 16 hex digits) of each "
        f"normalised question (`trained_question_sha256_16`, {len(tr['trained_question_sha256_16'])} questions); "
        "`tests/test_local_judges.py` checks them against TruthfulQA.csv.",
    ]


def _previous(card: dict) -> list[str]:
    prev = card.get("previous_head")
    if not prev:
        return []
    t, now = prev["test"], card["metrics"]["test"]
    return ["", "## The head this one replaced",
            f"`{prev['name']}` (created {prev['created']}) was trained {prev['trained_on']} (n_train={prev['n_train']}; "
            f"features: layer {prev['features']['layer']} `{prev['features']['pooling']}`, at most "
            f"{prev['features']['max_tokens']} tokens). On its own test set it had "
            f"n={t['n']}, accuracy {_fmt(t['accuracy'])}"
            + (f" at threshold {prev['threshold']}" if "threshold" in prev else "")
            + f", F1 {_fmt(t['f1'])}, AUROC {_fmt(t['auroc'])}; this head's test AUROC is "
            f"{_fmt(now['auroc'])} (change {now['auroc'] - t['auroc']:+.3f}), accuracy {_fmt(now['accuracy'])} at "
            f"threshold {card['threshold']} (change {now['accuracy'] - t['accuracy']:+.3f}), n={now['n']}."]


def write_model_card(card: dict, path: str | Path) -> Path:
    """Write the Markdown card next to the head; every number comes from the JSON card."""
    fm, f, tr, m = card["feature_model"], card["features"], card["training"], card["metrics"]
    lines = [
        f"# {card['name']}",
        "",
        f"A **local {card['kind']} judge** of NegotiaX: {card['label_meaning']} from a logistic head on the "
        f"hidden states of a frozen {fm['name']}. Figures it produces are local-judge figures; they are not "
        "beaver-dam-7b or GPT-judge figures.",
        "",
        "## Feature model and features",
        f"- model: {fm['name']} (`load_backbone(name_or_path={fm['load_name']!r})`), {fm['model_type']}, "
        f"hidden size {fm['hidden_size']}, {fm['num_layers']} layers",
        f"- config sha256 `{fm['config_sha256'][:16]}…`, tokenizer sha256 `{fm['tokenizer_sha256'][:16]}…`",
        f"- text template `{f['template']}`, at most {f['max_tokens']} tokens ({f['max_context_tokens']} from the "
        "end of the prompt/question, the rest from the start of the response/answer)",
        f"- layer {f['layer']} (block output), pooling `{f['pooling']}`; head C = {card['head']['C']}, "
        f"threshold {card['threshold']}",
        "",
        "## Training data",
        "Training and validation rows come only from these files:",
        *[f"- `{x['path']}` sha256 `{x['sha256'][:16]}…`" for x in tr["files"]],
        *(_safety_data(tr) if card["kind"] == "safety" else _truthfulqa_data(tr)),
        (f"- every row left is used: n_train={tr['n_train']}, n_val={tr['n_val']}; test rows n_test={tr['n_test']}"
         if tr["config"]["n_train"] is None and tr["config"]["n_val"] is None else
         f"- training side subsampled to n_train={tr['n_train']}, n_val={tr['n_val']} (seed {tr['seed']}, by a hash "
         f"of the text) to fit a CPU budget; test rows n_test={tr['n_test']}")
        + (" (all of `" + tr["test_files"][0]["path"] + "`)" if "test_files" in tr
           else " (every labelled answer to the test-half questions)" if tr["n_test"] == tr["rows_in_test_half"]
           else f", a subsample (by a hash of the text) of the {tr['rows_in_test_half']} labelled answers to the "
                f"test-half questions; they cover {tr['questions']['test_graded']} of its {tr['questions']['test']} "
                "questions"),
        "",
        "## Metrics",
        f"Accuracy, balanced accuracy and F1 at the threshold {card['threshold']} (chosen on validation); "
        "agreement is with the files' human labels.",
        "",
        "| split | n | accuracy | balanced accuracy | F1 | AUROC |",
        "|---|---|---|---|---|---|",
        _metric_row("validation (held-out training prompts/questions)", m["val"]),
        _metric_row("test", m["test"]),
    ]
    kw = m.get("keyword_refusal_on_test")
    if kw and kw.get("available"):
        lines.append(_metric_row("keyword refusal detector, same test rows", kw["test"]))
    elif kw:
        lines.append(f"\nKeyword refusal detector not compared: {kw['reason']}")
    if "per_category_test" in m:
        lines += ["", "### Per harm category (that category's unsafe rows vs all safe rows)",
                  "| category | n unsafe | recall | AUROC | keyword recall |", "|---|---|---|---|---|"]
        for cat, e in m["per_category_test"].items():
            kwr = e.get("keyword", {}).get("recall")
            lines.append(f"| {cat} | {e['n_unsafe']} | {_fmt(e['recall'])} | {_fmt(e['auroc'])} | {_fmt(kwr)} |")
    lines += _previous(card)
    lines += ["", "Retrain and reproduce: `.venv/bin/python scripts/train_local_judges.py --kinds "
              f"{card['kind']}`", ""]
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
