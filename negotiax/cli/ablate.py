"""`negotiax ablate`: a grid of variants and ablations (experiments/ablate.py)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import EXPERIMENT_ARGUMENTS, add_recipe_arguments, load_config, overrides_from
from ..experiments.ablate import AblateConfig, ablate

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, **EXPERIMENT_ARGUMENTS)
    parser.add_argument("--recipe", help="the base recipe YAML every entry starts from")
    parser.add_argument("--output-dir", help="where the entries' runs and the table go")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(AblateConfig, args.config, overrides_from(args, recipe="recipe", output_dir="output_dir"))
    ablate(cfg)
    log.info("wrote %s", Path(cfg.output_dir) / "ablation.md")
    return 0
