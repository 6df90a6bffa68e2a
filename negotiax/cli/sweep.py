"""`negotiax sweep`: the preference sweep, the trade-off curve of one model (experiments/sweep.py)."""
from __future__ import annotations

import argparse

from ..config import EXPERIMENT_ARGUMENTS, add_recipe_arguments, load_config, overrides_from
from ..experiments.sweep import SweepConfig, run_sweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, **EXPERIMENT_ARGUMENTS)
    parser.add_argument("--circuit", help="folder of a trained circuit (overrides circuit_dir)")
    parser.add_argument("--output-dir", help="where sweep.json and sweep.png go")


def main(args: argparse.Namespace) -> int:
    overrides = overrides_from(args, circuit="circuit_dir", output_dir="output_dir")
    run_sweep(load_config(SweepConfig, args.config, overrides))
    return 0
