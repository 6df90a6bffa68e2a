"""Generate the unlabelled answers behind tests/data/refusal_labelled.jsonl.

The refusal detector (negotiax.refusal.refusal) is validated on real answers labelled by reading them. This
script draws those answers: greedy decoding of the base SmolLM2 or of a trained circuit (optionally with a
preference beta) on harmful prompts from BeaverTails-Evaluation.csv and on benign AlpacaEval instructions from
index 400 on. Neither set overlaps the test subsets of the quick recipe (the first 100 BeaverTails 30k_test
prompts and the first 100 AlpacaEval instructions), so the detector is not tuned on the prompts it later scores.

    python scripts/build_refusal_set.py --source base --harmful 0:80 --benign 400:430 --out /tmp/base.jsonl
    python scripts/build_refusal_set.py --source circA --circuit runs/x/circuit --beta harmless=4 ...

Each output row is {prompt, answer, source}; labels are added by hand afterwards (label: refusal | not).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from negotiax.backbone import ModelConfig, load_backbone
from negotiax.data.schema import Example
from negotiax.generation.generate import generate
from negotiax.generation.config import GenerationConfig
from negotiax.saving import load_circuit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HARMFUL = "beavertails/BeaverTails-Evaluation.csv"
BENIGN = "alpaca_eval/text_davinci_003_model_outputs.json"


def _span(text: str) -> slice:
    start, stop = (int(x) for x in text.split(":"))
    return slice(start, stop)


def prompts(data_dir: Path, harmful: slice, benign: slice) -> list[Example]:
    with (data_dir / HARMFUL).open(newline="") as f:
        rows = list(csv.DictReader(f))
    alpaca = json.loads((data_dir / BENIGN).read_text())
    out = [Example(id=f"bt-eval-{i}", objective="harmless", prompt=rows[i]["prompt"], category=rows[i]["category"])
           for i in range(len(rows))[harmful]]
    out += [Example(id=f"alpaca-eval-{i}", objective="helpful", prompt=alpaca[i]["instruction"])
            for i in range(len(alpaca))[benign]]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, help="a name for the model/circuit, recorded in each row")
    p.add_argument("--circuit", help="a saved circuit directory (default: the base model)")
    p.add_argument("--beta", action="append", default=[], help="preference, e.g. harmless=4 (repeatable)")
    p.add_argument("--harmful", type=_span, default=slice(0, 80), help="BeaverTails-Evaluation rows, start:stop")
    p.add_argument("--benign", type=_span, default=slice(400, 430), help="AlpacaEval instructions, start:stop")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    beta = {k: float(v) for k, v in (b.split("=") for b in args.beta)}
    model, tokenizer = load_backbone(ModelConfig(name_or_path="smollm2", device="cpu", dtype="float32"))
    attachment = load_circuit(args.circuit, model) if args.circuit else None
    examples = prompts(args.data_dir, args.harmful, args.benign)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, preference=beta if attachment else {})
    rows = generate(model, tokenizer, examples, cfg, args.out.with_suffix(".raw.jsonl"), attachment=attachment)
    beta_text = f", beta {beta}" if beta else ""
    with args.out.open("w") as f:
        for ex, row in zip(examples, rows):
            kind = "BeaverTails-Evaluation" if ex.objective == "harmless" else "AlpacaEval"
            source = f"{args.source}{beta_text}; {kind} {ex.id.rsplit('-', 1)[1]}; greedy {args.max_new_tokens} tokens"
            f.write(json.dumps({"prompt": ex.prompt, "answer": row["output"], "source": source},
                               ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
