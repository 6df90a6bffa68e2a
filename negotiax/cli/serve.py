"""`negotiax serve`: an OpenAI-compatible server for a saved circuit (or the backbone alone)."""
from __future__ import annotations

import argparse
import os

from ..config import add_recipe_arguments
from ..pipeline import load_system
from ..recipe import load_recipe
from ..serve.app import serve
from ..serve.config import ServeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServeConfig()  # the defaults live in ServeConfig alone
    add_recipe_arguments(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--circuit", metavar="DIR", help="a saved circuit to serve (negotiax train / run output)")
    which.add_argument("--base-only", action="store_true", help="serve the backbone alone, without a circuit")
    parser.add_argument("--host", default=d.host, help=f"address to bind (default: {d.host}, loopback only)")
    parser.add_argument("--port", type=int, default=d.port)
    parser.add_argument("--api-key-env", metavar="VAR", help="require 'Authorization: Bearer $VAR' on /v1")
    parser.add_argument("--model-name", default=d.model_name, help=f"the model id clients send (default: {d.model_name})")
    parser.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms, help="wait for a batch to fill (ms)")
    parser.add_argument("--max-batch", type=int, default=d.max_batch, help="most requests decoded together")
    parser.add_argument("--max-tokens-cap", type=int, default=d.max_tokens_cap, help="refuse requests asking for more")
    parser.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="refuse larger request bodies")
    parser.add_argument("--graceful-shutdown-s", type=float, default=d.graceful_shutdown_s,
                        help="on Ctrl-C / SIGTERM, running requests get this long before they are cancelled")


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    cfg = ServeConfig(host=args.host, port=args.port, model_name=args.model_name, api_key_env=args.api_key_env,
                      batch_window_ms=args.batch_window_ms, max_batch=args.max_batch,
                      max_tokens_cap=args.max_tokens_cap,
                      default_max_tokens=min(ServeConfig.default_max_tokens, args.max_tokens_cap),
                      max_body_bytes=args.max_body_bytes, graceful_shutdown_s=args.graceful_shutdown_s,
                      template=recipe.generate.template)
    if cfg.api_key_env and not os.environ.get(cfg.api_key_env):  # before the model loads
        raise ValueError(f"--api-key-env {cfg.api_key_env}: that environment variable is unset or empty")
    model, tokenizer, attachment = load_system(recipe, None if args.base_only else args.circuit)
    serve(model, tokenizer, attachment, cfg)
    return 0
