"""`negotiax interpret`: mechanistic analysis of a trained circuit (experiments/interpret.py)."""
from __future__ import annotations

import argparse

from ..config import EXPERIMENT_ARGUMENTS, add_recipe_arguments, load_config, overrides_from
from ..experiments.interpret import InterpretConfig, run_interpret


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, **EXPERIMENT_ARGUMENTS)
    parser.add_argument("--circuit", help="folder of a trained circuit (overrides circuit_dir)")
    parser.add_argument("--output-dir", help="where interpret.json and the figures go")


def main(args: argparse.Namespace) -> int:
    overrides = overrides_from(args, circuit="circuit_dir", output_dir="output_dir")
    run_interpret(load_config(InterpretConfig, args.config, overrides))
    return 0
