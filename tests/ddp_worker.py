"""Run by test_train_ddp.py, under `accelerate launch` or plain python: a few training steps of a tiny circuit.

The examples all have the same length and the routing loss is off, so each objective's loss is a mean over
equally sized parts and averaging the ranks' gradients (DDP) gives exactly the one-process gradient.
Every rank writes the example ids it trained on to <out>/seen-rank<r>.json; training writes <out>/run/circuit.
Usage: accelerate launch --multi_gpu --num_processes 2 ddp_worker.py OUT BATCH_SIZE STEPS
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import Accelerator
from transformers import LlamaConfig, LlamaForCausalLM

from negotiax import CircuitConfig, attach
from negotiax.data import Collator
from negotiax.train.config import TrainConfig
from negotiax.pipeline import process_sampler
from negotiax.train.steps import CollatedSteps
from negotiax.train.trainer import Trainer

OBJECTIVES = ["helpful", "harmless", "honest"]


def dataset(j: int, n: int = 24, length: int = 10, prompt: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(100 + j)
    rows = []
    for i in range(n):
        ids = torch.randint(20, 120, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "id": f"{OBJECTIVES[j]}-{i}"})
    return rows


def main(out: Path, batch_size: int, steps: int, cpu: bool = True) -> None:
    """cpu: under `accelerate launch --multi_gpu`, run the processes on CPU (MULTI_CPU, gloo backend)."""
    accelerator = Accelerator(cpu=True) if cpu else None  # None: the Trainer makes the default one
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    model = model.eval().requires_grad_(False)
    attachment = attach(model, CircuitConfig(objectives=OBJECTIVES, rank=4, head_dim=4))
    sampler = process_sampler({o: dataset(j) for j, o in enumerate(OBJECTIVES)}, batch_size, None, seed=3)
    pad = Collator(SimpleNamespace(pad_token_id=0, eos_token_id=0))
    seen: list[list[str]] = []

    def collate(items: list[dict]):
        seen.append([item["id"] for item in items])
        return pad(items)

    cfg = TrainConfig(steps=steps, lr=1e-2, warmup_steps=0, lambda_route=0.0, save_every=0, log_every=1,
                      progress=False)
    trainer = Trainer(model, attachment, cfg, CollatedSteps(sampler, collate), out / "run", seed=0,
                      accelerator=accelerator)
    trainer.train()
    (out / f"seen-rank{trainer.accelerator.process_index}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
