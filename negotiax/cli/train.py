"""`negotiax train --config configs/quick.yaml key=value ...`: train a recipe's circuit."""
from __future__ import annotations

import argparse
import logging

from ..config import add_fresh_argument, add_recipe_arguments
from ..pipeline import train_from_recipe
from ..recipe import load_recipe
from ..train.trainer import NonFiniteLossError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    add_fresh_argument(parser, "the run directory (output_dir)")


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    try:
        run_dir = train_from_recipe(recipe, fresh=args.fresh)
    except NonFiniteLossError as err:
        log.error("training stopped: %s", err)
        return 3
    log.info("run directory: %s (circuit in %s)", run_dir, run_dir / "circuit")
    return 0
