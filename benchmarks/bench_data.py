"""Data-loading benchmark: load and tokenise all training data of the three objectives on CPU.

Prints seconds for loading (parse + test-overlap removal), for tokenising with labels (TokenizedDataset),
and the ratio against a baseline in the same process: one batched tokenizer call over the same
prompt+response texts (the tokenizer's own cost, without templates, masks or truncation).

    .venv/bin/python benchmarks/bench_data.py [--data-dir ../shared/data] [--max-length 512]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    from transformers import AutoTokenizer

    from negotiax.data import DataConfig, format_prompt, load_test_sets, load_train_sets, tokenize_sets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--data-dir", default=os.environ.get("NEGOTIAX_DATA_DIR", str(root.parent / "shared/data")))
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(str(Path(args.data_dir) / "models/smollm2-135m-instruct"))
    cfg = DataConfig(data_dir=args.data_dir, max_length=args.max_length)

    t0 = time.perf_counter()
    train = load_train_sets(cfg, load_test_sets(cfg, limit=False))
    load_s = time.perf_counter() - t0
    n = sum(len(v) for v in train.values())

    ours, base = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        data = tokenize_sets(train, tok, args.max_length, progress=False)
        ours.append(time.perf_counter() - t0)
        texts = [format_prompt(tok, ex.prompt) + ex.response for exs in train.values() for ex in exs]
        t0 = time.perf_counter()
        tok(texts, add_special_tokens=False)
        base.append(time.perf_counter() - t0)
    tokens = sum(d.stats["tokens"] for d in data.values())
    cut = sum(d.stats["cut_examples"] for d in data.values())
    print(f"examples: {n} ({', '.join(f'{k} {len(v)}' for k, v in train.items())}); tokens {tokens}; "
          f"cut to max_length={args.max_length}: {cut}")
    print(f"load train sets (parse, test-overlap removal): {load_s:.2f} s")
    print(f"tokenise with labels (TokenizedDataset, best of {args.repeats}): {min(ours):.2f} s "
          f"({n / min(ours):.0f} examples/s)")
    print(f"baseline, one batched tokenizer call on the same texts: {min(base):.2f} s")
    print(f"ratio ours / baseline: {min(ours) / min(base):.1f}x")


if __name__ == "__main__":
    main()
