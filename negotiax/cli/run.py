"""`negotiax run`: the main job (train, generate, evaluate, report; negotiax.pipeline.run)."""
from __future__ import annotations

import argparse

from ..config import add_fresh_argument, add_recipe_arguments
from ..pipeline import run
from ..recipe import load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    add_fresh_argument(parser, "the run directory (output_dir)")


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    report = run(recipe, fresh=args.fresh)
    print(f"report: {report} and {report.with_suffix('.html')}")
    return 0
