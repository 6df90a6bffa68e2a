"""Tune a recipe on validation prompts, never on the test prompts: train it, then measure routing and refusals.

    .venv/bin/python scripts/validate_alignment.py -c configs/quick.yaml output_dir=runs/val-quick [key=value ...]

Validation prompts (disjoint from the test subsets `negotiax run` scores, which are the first 100 BeaverTails
30k_test prompts, the first 100 AlpacaEval instructions and the first 80 test-half TruthfulQA questions):
- harmful: every 14th prompt of BeaverTails-Evaluation.csv (48 prompts, all 14 harm categories);
- benign: every 10th AlpacaEval instruction from number 300 on (48; selfinstruct, oasst, vicuna);
- benign_hb: AlpacaEval instructions 100-128, the rest of its helpful_base part (29): the test's first 100 are all
  helpful_base (short everyday questions), which the benign group does not represent;
- honest: test-half TruthfulQA questions 200-247 (48), for routing only.
It prints one JSON line: the routing accuracy at the decision position per prompt type, the refusal rate on
the harmful prompts at each harmless preference in --betas, the over-refusal on the benign prompts (at each
preference in --benign-betas, default 0; --mute adds -inf, harmless muted), and the base model's rates;
--json writes the same (plus a few answers) to a file. --gate T decodes the trained circuit with hard routing at
threshold T (circuit.gate) whatever the recipe says; the recipe's training is the same for every T when all its rows
are teacher-forced, so one trained circuit is measured at several thresholds by running again with the same
output_dir (training and the base model's answers are reused).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from negotiax.backbone import load_backbone
from negotiax.data import Example, default_data_dir
from negotiax.generation.generate import generate
from negotiax.evaluation.metrics import refusal_rate
from negotiax.evaluation.negotiation import profiles_by_group, summarize
from negotiax.recipe import load_recipe
from negotiax.saving import load_circuit
from negotiax.pipeline import train_from_recipe

N = 48


def validation_prompts(data_dir: Path) -> dict[str, list[str]]:
    with (data_dir / "beavertails/BeaverTails-Evaluation.csv").open(encoding="utf-8", newline="") as fh:
        harmful = [r["prompt"] for r in csv.DictReader(fh)][::14][:N]
    alpaca_eval = json.loads((data_dir / "alpaca_eval/text_davinci_003_model_outputs.json").read_text())
    benign = [r["instruction"] for r in alpaca_eval[300::10]][:N]
    benign_hb = [r["instruction"] for r in alpaca_eval[100:129]]
    with (data_dir / "truthfulqa/TruthfulQA.csv").open(encoding="utf-8-sig", newline="") as fh:
        honest = [r["Question"] for r in csv.DictReader(fh)][408 + 200:408 + 200 + N]
    return {"harmful": harmful, "benign": benign, "benign_hb": benign_hb, "honest": honest}


def examples(prompts: list[str], objective: str, group: str = "") -> list[Example]:
    return [Example(id=f"val-{objective}{group}-{i}", objective=objective, prompt=p) for i, p in enumerate(prompts)]


def rate(rows: list[dict]) -> float:
    values = refusal_rate([r["output"] for r in rows])
    return round(100 * sum(values) / len(values), 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True)
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    p.add_argument("--betas", type=float, nargs="+", default=[-4.0, 0.0, 4.0], help="harmless preferences to decode at")
    p.add_argument("--benign-betas", type=float, nargs="+", default=[0.0],
                   help="harmless preferences to measure over-refusal at (each must also be in --betas)")
    p.add_argument("--mute", action="store_true",
                   help="also measure refusal and over-refusal with harmless muted (beta = -inf: its pathway off)")
    p.add_argument("--gate", type=float,
                   help="decode with hard routing at this threshold (circuit.gate) instead of the recipe's own: one "
                        "trained circuit serves every threshold, since teacher-forced training never mixes")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    if args.mute:
        args.betas, args.benign_betas = [float("-inf"), *args.betas], [float("-inf"), *args.benign_betas]
    if set(args.benign_betas) - set(args.betas):
        p.error(f"--benign-betas {args.benign_betas}: each must also be in --betas {args.betas}")
    logging.basicConfig(level=logging.WARNING)
    recipe = load_recipe(args.config, args.overrides)
    forced = recipe.circuit.supervises_routing and min(recipe.train.forcing_shares(recipe.circuit.objectives)) == 1
    if args.gate is not None and not forced:
        p.error(f"--gate: train.route_forcing={recipe.train.route_forcing!r} (variant {recipe.circuit.variant}) trains "
                f"some rows on the negotiation's own mixing, which the gate changes; give circuit.gate={args.gate} as "
                f"an override instead (it trains a circuit for it)")
    train_from_recipe(recipe)
    prompts = validation_prompts(default_data_dir(recipe.data.data_dir))
    model, tokenizer = load_backbone(recipe.model)
    gen = replace(recipe.generate, max_new_tokens=args.max_new_tokens, preference={})
    out_dir = Path(recipe.output_dir) / "validation"
    harmful, benign = examples(prompts["harmful"], "harmless"), examples(prompts["benign"], "helpful")
    benign_hb = examples(prompts["benign_hb"], "helpful", "-hb")
    result: dict = {"recipe": args.config, "overrides": args.overrides,
                    "base": {"refusal_harmful": rate(generate(model, tokenizer, harmful, gen, out_dir / "base-harmful.jsonl")),
                             "over_refusal_benign": rate(generate(model, tokenizer, benign, gen, out_dir / "base-benign.jsonl")),
                             "over_refusal_benign_hb": rate(generate(model, tokenizer, benign_hb, gen,
                                                                     out_dir / "base-benign_hb.jsonl"))}}
    attachment = load_circuit(Path(recipe.output_dir) / "circuit", model)
    tag = ""
    if args.gate is not None:
        attachment.circuit.set_gate(args.gate)
        tag = f"-gate{args.gate:g}"
        result["gate"] = args.gate
    profiles = profiles_by_group(model, tokenizer, attachment, prompts, template=recipe.generate.template)
    summary = summarize(profiles, {"harmful": "harmless", "benign": "helpful", "benign_hb": "helpful",
                                   "honest": "honest"},
                        attachment.circuit.objectives)
    result["routing_accuracy"] = {g: round(100 * e["routing_accuracy"], 1) for g, e in summary.items()}
    result["decision_alpha"] = {g: {o: round(v, 2) for o, v in e["decision"].items()} for g, e in summary.items()}
    samples = {}
    for beta in args.betas:
        cfg = replace(gen, preference={"harmless": beta})
        rows = generate(model, tokenizer, harmful, cfg, out_dir / f"harmful{beta:+g}{tag}.jsonl",
                        attachment=attachment)
        result[f"refusal_harmful@{beta:+g}"] = rate(rows)
        if beta in args.benign_betas:
            benign_rows = generate(model, tokenizer, benign, cfg, out_dir / f"benign{beta:+g}{tag}.jsonl",
                                   attachment=attachment)
            result[f"over_refusal_benign@{beta:+g}"] = rate(benign_rows)
            result[f"over_refusal_benign_hb@{beta:+g}"] = rate(generate(
                model, tokenizer, benign_hb, cfg, out_dir / f"benign_hb{beta:+g}{tag}.jsonl", attachment=attachment))
            if beta == 0:
                samples = {"harmful": [r["output"] for r in rows[:4]], "benign": [r["output"] for r in benign_rows[:4]]}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "samples": samples}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
