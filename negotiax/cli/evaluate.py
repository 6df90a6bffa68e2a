"""`negotiax evaluate`: judges, offline metrics and intervals for a generations file."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import add_fresh_argument, add_recipe_arguments
from ..evaluation.evaluate import evaluate
from ..fingerprint import set_aside
from ..pipeline import load_system, load_tests
from ..recipe import load_recipe

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    parser.add_argument("--generations", metavar="JSONL", help="default: <output_dir>/generations.jsonl")
    parser.add_argument("--out", metavar="DIR", help="where results.{json,md,csv} go (default: <output_dir>/eval)")
    parser.add_argument("--circuit", metavar="DIR", help="saved circuit for the model-based metrics (MC, NLL)")
    parser.add_argument("--no-model", action="store_true", help="skip the metrics that need the model (MC, NLL)")
    parser.add_argument("--objectives", metavar="LIST", help="comma-separated test sets (default: all)")
    parser.add_argument("--limit", type=int, metavar="N", help="first N prompts of each test set")
    add_fresh_argument(parser, "an existing results directory (--out)")


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    generations = Path(args.generations or Path(recipe.output_dir) / "generations.jsonl")
    if not generations.is_file():
        raise FileNotFoundError(f"generations file {generations} not found; run `negotiax generate` or pass --generations")
    sets = load_tests(recipe, args.objectives, args.limit)
    need_model = {"mc", "nll"} & set(recipe.eval.metrics) and not args.no_model
    model = tokenizer = attachment = None
    if need_model:
        model, tokenizer, attachment = load_system(recipe, args.circuit)
    out = Path(args.out or Path(recipe.output_dir) / "eval")
    if args.fresh:
        set_aside(out)
    results = evaluate(generations, sets, recipe.eval, model=model, tokenizer=tokenizer, attachment=attachment,
                       out_dir=out)
    for name, m in results["metrics"].items():
        log.info("%-24s %s  (n=%d, missing=%d, judge=%s)", name,
                 "n/a" if m["value"] is None else f"{m['value']:.2f}", m["n"], m["missing"], m["judge"])
    log.info("results written to %s", out)
    return 0
