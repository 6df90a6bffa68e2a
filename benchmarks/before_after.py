"""What the before/after benchmarks share: an older copy of a module to time against (loaded as a module of its
package, so that its relative imports resolve), and the quick recipe's model and test sets."""
from __future__ import annotations

import argparse
import importlib.util
from types import ModuleType
from typing import Any

from negotiax.backbone import load_backbone
from negotiax.pipeline import load_tests
from negotiax.recipe import Recipe, load_recipe


def setup(description: str, old_help: str,
          package: str) -> tuple[argparse.Namespace, ModuleType, Recipe, dict, Any, Any]:
    """Parse --old FILE and --batch-size; return (args, the old module, the quick recipe, its test sets, model,
    tokenizer). `package`: where the old file's module lives, e.g. "negotiax.evaluation"."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help=old_help)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    spec = importlib.util.spec_from_file_location(f"{package}._before", args.old)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    recipe = load_recipe("configs/quick.yaml", [])
    tests = load_tests(recipe)
    model, tokenizer = load_backbone(recipe.model)
    return args, old, recipe, tests, model, tokenizer
