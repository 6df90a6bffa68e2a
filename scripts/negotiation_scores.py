"""How far apart the trained negotiation's scores are, and how large each pathway's update is, at the decision
position of the validation prompts (scripts/validate_alignment.py's groups, never the test prompts).

    .venv/bin/python scripts/negotiation_scores.py -c configs/quick.yaml --circuit runs/quick/circuit [--json F]

Per prompt group it prints, for one objective (--objective, default harmless) at the first site:
- gap: that objective's score minus the best other objective's score (after the logit cap, if the circuit has
  one), averaged over the N queries (median and 10th / 90th percentiles over the prompts); a preference beta moves
  alpha only when it is comparable to it;
- alpha: the objective's mean alpha at beta = -4, 0, +4 (the --betas);
- update_norm: the length of the update Delta each objective would make with all the say (beta = +inf), and of
  the hidden state h it is added to.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from negotiax.attach import preference
from negotiax.backbone import load_backbone
from negotiax.data import Collator, default_data_dir
from negotiax.data.formatting import encode_prompt
from negotiax.recipe import load_recipe
from negotiax.saving import load_circuit
from negotiax.train.route_fit import decision_states
from validate_alignment import validation_prompts


def first_site(circuit) -> str:
    """The key of the circuit's lowest site, the one measured."""
    return min(circuit.sites, key=int)


@torch.inference_mode()
def group_scores(model, attachment, prompt_ids: list[list[int]], objective: str, betas: list[float],
                 collate) -> dict:
    """The measures above for one group of tokenised prompts, at the circuit's first site."""
    circuit = attachment.circuit
    key = first_site(circuit)
    site, j = circuit.sites[key], circuit.index(objective)
    h = decision_states(model, attachment, prompt_ids, collate)[key][:, None].to(site.bias.device)  # (n, 1, d)
    scores = site.negotiation.scores(h.unsqueeze(-2) + site.pathways.deltas(h))[:, 0]  # (n, N, N), before beta
    others = torch.cat([scores[..., :j], scores[..., j + 1:]], dim=-1).max(dim=-1).values
    gaps = (scores[..., j] - others).mean(dim=-1)  # (n,): averaged over the queries
    alpha = {}
    for beta in betas:
        with preference(circuit, {objective: beta}):
            alpha[f"{beta:+g}"] = round(site(h).alpha[:, 0, j].mean().item(), 3)
    update_norm = {}
    for name in circuit.objectives:
        with preference(circuit, {name: float("inf")}):  # all the say: exactly that objective's update
            update_norm[name] = round((site(h).hidden - h).norm(dim=-1).mean().item(), 1)
    return {"n": len(prompt_ids),
            "gap": {"median": round(gaps.median().item(), 2), "q10": round(gaps.quantile(0.1).item(), 2),
                    "q90": round(gaps.quantile(0.9).item(), 2)},
            "alpha": alpha, "update_norm": update_norm, "h_norm": round(h.norm(dim=-1).mean().item(), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True, help="the recipe the circuit was trained with")
    p.add_argument("--circuit", required=True, help="the trained circuit's directory (<output_dir>/circuit)")
    p.add_argument("--objective", default="harmless")
    p.add_argument("--betas", type=float, nargs="+", default=[-4.0, 0.0, 4.0])
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    recipe = load_recipe(args.config, [])
    model, tokenizer = load_backbone(recipe.model)
    attachment = load_circuit(Path(args.circuit), model)
    if args.objective not in attachment.circuit.objectives:
        p.error(f"--objective {args.objective}: the circuit's objectives are {attachment.circuit.objectives}")
    if attachment.circuit.sites[first_site(attachment.circuit)].negotiation is None:
        p.error(f"--circuit {args.circuit}: a {attachment.circuit.cfg.variant} circuit has no negotiation to score")
    groups = validation_prompts(default_data_dir(recipe.data.data_dir))
    collate = Collator(tokenizer, padding_side="right")
    result = {"config": args.config, "circuit": args.circuit, "objective": args.objective,
              "logit_cap": attachment.circuit.cfg.logit_cap, "groups": {}}
    for group, prompts in groups.items():
        ids = [encode_prompt(tokenizer, q, template=recipe.data.template) for q in prompts]
        result["groups"][group] = group_scores(model, attachment, ids, args.objective, args.betas, collate)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
