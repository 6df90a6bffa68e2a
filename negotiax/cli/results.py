"""`negotiax results`: the experiments on one recipe, resumable, written to docs/results (experiments/results.py)."""
from __future__ import annotations

import argparse
import logging

from ..config import EXPERIMENT_ARGUMENTS, add_recipe_arguments, load_config, overrides_from
from ..experiments.results import ResultsConfig, results

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, **EXPERIMENT_ARGUMENTS)
    parser.add_argument("--output-dir", help="where the runs go")
    parser.add_argument("--report-only", action="store_true", help="rewrite docs_dir from what has finished")


def main(args: argparse.Namespace) -> int:
    overrides = overrides_from(args, output_dir="output_dir")
    if args.report_only:
        overrides.append("report_only=true")
    log.info("wrote %s", results(load_config(ResultsConfig, args.config, overrides)))
    return 0
