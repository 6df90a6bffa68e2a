"""`negotiax profile`: parameters, throughput, latency and memory (experiments/profile.py)."""
from __future__ import annotations

import argparse
import logging

from ..config import EXPERIMENT_ARGUMENTS, add_recipe_arguments, load_config, overrides_from
from ..experiments.profile import ProfileConfig, run_profile

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, **EXPERIMENT_ARGUMENTS)
    parser.add_argument("--model-config", help="a hub config.json: profile that shape with random weights")
    parser.add_argument("--output-dir", help="where profile.json and profile.md go")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(ProfileConfig, args.config, overrides_from(args, model_config="model_config", output_dir="output_dir"))
    md = run_profile(cfg)
    log.info("wrote %s and %s", md.with_suffix(".json"), md)
    return 0
