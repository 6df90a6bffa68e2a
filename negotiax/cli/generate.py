"""`negotiax generate`: answers for the recipe's test prompts, as resumable JSONL."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import add_fresh_argument, add_recipe_arguments
from ..fingerprint import set_aside
from ..generation.generate import generate, meta_path
from ..pipeline import load_system, load_tests
from ..recipe import load_recipe

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    parser.add_argument("--circuit", metavar="DIR", help="a saved circuit to attach (default: the base model)")
    parser.add_argument("--out", metavar="JSONL", help="output file (default: <output_dir>/generations.jsonl); "
                        "an existing file is resumed")
    parser.add_argument("--objectives", metavar="LIST", help="comma-separated test sets (default: all)")
    parser.add_argument("--limit", type=int, metavar="N", help="first N prompts of each test set")
    add_fresh_argument(parser, "an existing output file (and its .meta.json)")


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    sets = load_tests(recipe, args.objectives, args.limit)
    model, tokenizer, attachment = load_system(recipe, args.circuit)
    out = Path(args.out or Path(recipe.output_dir) / "generations.jsonl")
    if args.fresh:
        set_aside(out)
        set_aside(meta_path(out))
    examples = [ex for exs in sets.values() for ex in exs]
    rows = generate(model, tokenizer, examples, recipe.generate, out, attachment=attachment)
    tokens = sum(r["n_new_tokens"] for r in rows)
    log.info("wrote %d rows (%d generated tokens) to %s", len(rows), tokens, out)
    return 0
