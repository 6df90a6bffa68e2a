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

from negotiax.attach import capture, site_modules
from negotiax.backbone import load_backbone
from negotiax.data import default_data_dir
from negotiax.data.formatting import encode_prompt
from negotiax.recipe import load_recipe
from negotiax.saving import load_circuit
from validate_alignment import validation_prompts


@torch.inference_mode()
def group_scores(model, attachment, prompt_ids: list[list[int]], objective: str, betas: list[float]) -> dict:
    circuit = attachment.circuit
    modules = site_modules(model, circuit)
    key = min(modules, key=int)
    site = circuit.sites[key]
    neg, j, n = site.negotiation, circuit.index(objective), circuit.cfg.n_objectives
    gaps, alphas, norms, h_norms = [], {b: [] for b in betas}, [], []
    device = next(model.parameters()).device
    for ids in prompt_ids:
        with capture(modules, prepend=True, stop_at=key) as record:
            model(input_ids=torch.tensor([ids], device=device), use_cache=False)
        h = record[key][:, -1:].to(neg.qkv.dtype)  # (1, 1, d): the state entering the circuit at the decision position
        deltas = site.pathways.deltas(h)  # (1, 1, N, d)
        states = h.unsqueeze(-2) + deltas  # the pathway states z_i
        scores = neg.scores(states)[0, 0]  # (N, N): as the circuit scores them before beta (capped, if it is)
        others = torch.cat([scores[:, :j], scores[:, j + 1:]], dim=1).max(dim=1).values
        gaps.append((scores[:, j] - others).mean().item())
        for beta in betas:
            bias = torch.zeros(n, device=h.device)
            bias[j] = beta
            alphas[beta].append(neg(states, deltas, bias)[1][0, 0, j].item())
        values = deltas @ neg.qkv[:, 2 * neg.k:]  # (1, 1, N, k): the values W_v (z_i - h)
        norms.append([(values[0, 0, i].repeat(n) @ neg.out).norm().item() for i in range(n)])
        h_norms.append(h.norm().item())
    g = torch.tensor(gaps)

    def mean(xs: list[float], digits: int = 3) -> float:
        return round(sum(xs) / len(xs), digits)

    return {"n": len(prompt_ids),
            "gap": {"median": round(g.median().item(), 2), "q10": round(g.quantile(0.1).item(), 2),
                    "q90": round(g.quantile(0.9).item(), 2)},
            "alpha": {f"{b:+g}": mean(a) for b, a in alphas.items()},
            "update_norm": {o: mean([r[i] for r in norms], 1) for i, o in enumerate(circuit.objectives)},
            "h_norm": mean(h_norms, 1)}


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
    if attachment.circuit.sites[min(attachment.circuit.sites, key=int)].negotiation is None:
        p.error(f"--circuit {args.circuit}: a {attachment.circuit.cfg.variant} circuit has no negotiation to score")
    model.eval()
    groups = validation_prompts(default_data_dir(recipe.data.data_dir))
    result = {"config": args.config, "circuit": args.circuit, "objective": args.objective,
              "logit_cap": attachment.circuit.cfg.logit_cap,
              "groups": {g: group_scores(model, attachment, [encode_prompt(tokenizer, q, template=recipe.data.template)
                                                              for q in prompts], args.objective, args.betas)
                         for g, prompts in groups.items()}}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
