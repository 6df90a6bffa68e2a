"""`negotiax <verb> ...`: each verb is a thin wrapper around one library function.

A verb lives in its own module here (cli/<verb>.py), which defines `add_arguments(parser)` and
`main(args) -> int`: argparse and one call into the library, nothing else. Verb modules are imported only when
their verb runs.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

VERBS = {
    "train": ("negotiax.cli.train", "train the circuit on the objectives' datasets"),
    "generate": ("negotiax.cli.generate", "generate answers for test prompts (resumable JSONL)"),
    "evaluate": ("negotiax.cli.evaluate", "score generations: judges, offline metrics, intervals"),
    "run": ("negotiax.cli.run", "the main job: train, generate, evaluate, report"),
    "ablate": ("negotiax.cli.ablate", "run a grid of variants and ablations"),
    "profile": ("negotiax.cli.profile", "parameters, throughput, latency and memory"),
    "interpret": ("negotiax.cli.interpret", "mechanistic analysis of a trained circuit"),
    "sweep": ("negotiax.cli.sweep", "preference sweep: the trade-off curve of one model"),
    "results": ("negotiax.cli.results", "the experiments on one recipe, resumable, written to docs/results"),
    "serve": ("negotiax.cli.serve", "OpenAI-compatible server; each request sets its own preference"),
}


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

