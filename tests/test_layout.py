"""The package's layering, read from its source with `ast` (scripts/layout_stats.py builds the import graph).

The rule: each stage owns its config, `recipe` combines configs, `pipeline` combines stages, `experiments` run
whole jobs on the pipeline, `cli/` stays thin. So no stage (and nothing in the core) imports recipe, pipeline,
experiments or cli; no import cycle; and imports sit at the top of files, except heavy optional dependencies.
"""
from pathlib import Path

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]

CORE = {"negotiax", "negotiax.circuit", "negotiax.attach", "negotiax.backbone", "negotiax.saving", "negotiax.io",
        "negotiax.config", "negotiax.fingerprint", "negotiax.refusal", "negotiax.run_config"}
STAGES = ("data", "train", "generation", "evaluation", "judges", "serve")
CONFIGS = {"negotiax.config", "negotiax.backbone", "negotiax.circuit", "negotiax.run_config", "negotiax.data.config",
           "negotiax.train.config", "negotiax.generation.config", "negotiax.evaluation.config"}
# May be imported inside a function: optional extras (pyproject) and optional tools.
OPTIONAL = ("peft", "openai", "matplotlib", "sklearn",
            "sacrebleu", "rouge_score", "datasets", "wandb", "torch.utils.tensorboard", "psutil", "uvicorn")


stats = load_script("layout_stats")
ROWS = stats.imports()


def _layer(module: str) -> str:
    parts = module.split(".")
    if module in CORE:
        return "core"
    if len(parts) > 1 and parts[1] in STAGES:
        return "stage"
    return parts[1] if len(parts) > 1 else "core"  # recipe, pipeline, experiments, cli, __main__


def test_the_graph_reader_sees_relative_and_in_function_imports():
    rows = {(r.module, r.target, r.top_level) for r in ROWS}
    assert ("negotiax.pipeline", "negotiax.recipe", True) in rows  # from .recipe import Recipe
    assert ("negotiax.evaluation.evaluate", "negotiax.evaluation.metrics", True) in rows  # from . import metrics
    assert ("negotiax.pipeline", "peft", False) in rows  # the optional LoRA import inside with_lora


def test_no_upward_imports():
    forbidden = {"core": {"recipe", "pipeline", "experiments", "cli"}, "stage": {"recipe", "pipeline", "experiments", "cli"},
                 "recipe": {"pipeline", "experiments", "cli"}, "pipeline": {"experiments", "cli"},
                 "experiments": {"cli"}}
    bad = [f"{r.module}:{r.line} imports {r.target}" for r in ROWS if r.target.startswith("negotiax.")
           and _layer(r.target) in forbidden.get(_layer(r.module), ())]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_recipe_imports_only_configs():
    targets = {r.target for r in ROWS if r.module == "negotiax.recipe" and r.target.startswith("negotiax")}
    assert targets and targets <= CONFIGS, targets - CONFIGS


def test_no_import_cycles():
    for what, graph in stats.graphs(ROWS).items():
        assert stats.cycles(graph) == [], what


def test_cycle_finder_finds_a_cycle():
    assert stats.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert stats.cycles({"a": {"b"}, "b": set()}) == []


def test_imports_at_the_top_except_optional_dependencies():
    inner = [f"{r.module}:{r.line} imports {r.target}" for r in ROWS if not r.top_level
             and not any(r.target == o or r.target.startswith(o + ".") for o in OPTIONAL)]
    assert not inner, "imports inside functions (move them to the top of the file):\n" + "\n".join(inner)
