"""Retrain the local judges (safety, truth, info) from the data directory and write their heads and cards.

    .venv/bin/python scripts/train_local_judges.py                      # the shipped heads
    .venv/bin/python scripts/train_local_judges.py --kinds truth --n-train 200 --out /tmp/heads
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    from negotiax.judges.local.judge import HEADS_DIR
    from negotiax.judges.local.train import JudgeTrainConfig

    d = JudgeTrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("NEGOTIAX_DATA_DIR", ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=str(HEADS_DIR), help="folder for local-<kind>.{safetensors,json,md}")
    p.add_argument("--kinds", nargs="+", default=["safety", "truth", "info"], choices=["safety", "truth", "info"])
    p.add_argument("--n-train", type=int, default=None, help="training rows per judge (default: KIND_DEFAULTS)")
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None, help="test rows (default: KIND_DEFAULTS; 0 = all)")
    p.add_argument("--layers", type=int, nargs="+", default=None, help=f"default: KIND_DEFAULTS, else {d.layers}")
    p.add_argument("--poolings", nargs="+", default=list(d.poolings))
    p.add_argument("--max-tokens", type=int, default=None, help=f"default: KIND_DEFAULTS, else {d.max_tokens}")
    p.add_argument("--max-context-tokens", type=int, default=None,
                   help=f"default: KIND_DEFAULTS, else {d.max_context_tokens}")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--cache-dir", default=d.cache_dir, help="feature cache ('' to disable)")
    p.add_argument("--model", default="smollm2", help="feature model for load_backbone(name_or_path=...)")
    p.add_argument("--model-name", default=d.feature_model_name, help="display name on the card")
    return p.parse_args(argv)


# What the shipped heads were trained with, chosen to fit 2 shared, busy CPU cores (the features are cached
# afterwards). Safety uses all its rows (about 1,100 after the prompt filter) and is tested on the whole
# BeaverTails 30k_test (3,021 rows); to afford those 4,000 texts its features are shorter (96 tokens, 32 of the
# prompt) and stop at layer 9. Truth and info are tested on all 9,098 labelled answers to the 409 test-half
# questions (about 20 minutes of features on 2 cores; --n-test N grades a hash-chosen subsample instead).
KIND_DEFAULTS = {
    "safety": {"n_train": None, "n_val": None, "n_test": None, "max_tokens": 96, "max_context_tokens": 32,
               "layers": (6, 9)},
    "truth": {"n_train": 600, "n_val": 150, "n_test": None},
    "info": {"n_train": 600, "n_val": 150, "n_test": None},
}


def config_for(kind: str, args: argparse.Namespace):
    """The JudgeTrainConfig of one kind: options given on the command line, else KIND_DEFAULTS, else JudgeTrainConfig's."""
    from negotiax.judges.local.train import JudgeTrainConfig

    given = {"n_train": args.n_train, "n_val": args.n_val, "max_tokens": args.max_tokens,
             "max_context_tokens": args.max_context_tokens, "layers": tuple(args.layers) if args.layers else None,
             "n_test": None if args.n_test is None else args.n_test or "all"}
    options = {**KIND_DEFAULTS[kind], **{k: v for k, v in given.items() if v is not None}}
    if options["n_test"] == "all":
        options["n_test"] = None
    return JudgeTrainConfig(**options, poolings=tuple(args.poolings), batch_size=args.batch_size,
                       cache_dir=args.cache_dir or None, feature_model_name=args.model_name,
                       feature_model_load_name=args.model)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    from negotiax import load_backbone
    from negotiax.judges.local.card import write_model_card
    from negotiax.judges.local.train import train_judge

    model, tokenizer = load_backbone(name_or_path=args.model, device="cpu", dtype="float32")
    for kind in args.kinds:
        cfg = config_for(kind, args)
        card = train_judge(kind, args.data_dir, args.out, model, tokenizer, cfg)
        write_model_card(card, Path(args.out) / f"local-{kind}.md")
        logging.info("%s -> %s", card["name"], card["metrics"]["test"])


if __name__ == "__main__":
    main()
