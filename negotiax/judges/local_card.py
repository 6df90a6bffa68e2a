"""The human-readable model card (Markdown) of a local judge head, written from its JSON card."""
from __future__ import annotations

from pathlib import Path


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _metric_row(label: str, m: dict) -> str:
    return f"| {label} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['f1'])} | {_fmt(m['auroc'])} |"


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
        *[f"- `{x['path']}` sha256 `{x['sha256'][:16]}…`" for x in tr["files"]],
        f"- rows read {tr['rows_read']}, distinct texts {tr['distinct_texts']}, texts with conflicting labels "
        f"dropped {tr['conflicting_labels_dropped']}",
    ]
    if "removed_for_overlap_with_test_rows" in tr:
        lines.append(f"- removed because their prompt occurs in the test set: "
                     f"{sum(tr['removed_for_overlap_with_test_rows'].values())} rows "
                     f"({tr['removed_for_overlap_with_test_prompts']} prompts) — "
                     + ", ".join(f"{k}: {v}" for k, v in tr["removed_for_overlap_with_test_rows"].items()))
    if "questions" in tr:
        q = tr["questions"]
        lines.append(f"- split by question: {q['train']} train / {q['val']} validation / {q['test']} test questions")
    lines += [
        f"- subsampled to n_train={tr['n_train']}, n_val={tr['n_val']} (seed {tr['seed']}) to fit a CPU budget; "
        f"n_test={tr['n_test']}",
        "",
        "## Metrics",
        "| split | n | accuracy | F1 | AUROC |",
        "|---|---|---|---|---|",
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
    lines += ["", "Retrain and reproduce: `.venv/bin/python scripts/train_local_judges.py --kinds "
              f"{card['kind']}`", ""]
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
