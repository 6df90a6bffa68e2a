"""`negotiax <verb> ...`: each verb is a thin wrapper around one library function.

A verb lives in its own module, which defines `add_arguments(parser)` and `main(args) -> int`.
Modules are imported only when their verb runs, so `negotiax --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

VERBS = {
    "train": ("negotiax.train.cli", "train the circuit on the objectives' datasets"),
    "generate": ("negotiax.generate_cli", "generate answers for test prompts (resumable JSONL)"),
    "evaluate": ("negotiax.evaluate_cli", "score generations: judges, offline metrics, intervals"),
    "run": ("negotiax.run", "the main job: train, generate, evaluate, report"),
    "ablate": ("negotiax.experiments.ablate", "run a grid of variants and ablations"),
    "profile": ("negotiax.experiments.profile", "parameters, throughput, latency and memory"),
    "interpret": ("negotiax.experiments.interpret", "mechanistic analysis of a trained circuit"),
    "sweep": ("negotiax.experiments.sweep", "preference sweep: the trade-off curve of one model"),
    "results": ("negotiax.experiments.results", "the experiments on one recipe, resumable, written to docs/results"),
    "serve": ("negotiax.serve.cli", "OpenAI-compatible server; each request sets its own preference"),
}


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The common `--config recipe.yaml key=value ...` arguments."""
    parser.add_argument("--config", "-c", help="YAML recipe (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe values, e.g. train.steps=50")


def add_fresh_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """`--fresh`: start over when the existing outputs were made with other settings (never a silent wipe)."""
    parser.add_argument("--fresh", action="store_true",
                        help=f"start over: rename {what} to <name>.old-<timestamp> first (nothing is deleted)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="negotiax", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="verb")
    for verb, (_, help_text) in VERBS.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    known, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=known.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(VERBS[known.verb][0])
    verb_parser = argparse.ArgumentParser(prog=f"negotiax {known.verb}", description=VERBS[known.verb][1])
    module.add_arguments(verb_parser)
    args = verb_parser.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except (ValueError, FileNotFoundError) as err:  # user errors: one clear line, no traceback
        logging.getLogger("negotiax").error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
