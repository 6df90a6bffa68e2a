"""Multi-process training on CPU (gloo) under `accelerate launch`: each rank trains on its own examples, and
2 processes x batch b train the same circuit as 1 process x batch 2b on the same draws."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import ddp_worker

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3


def free_port() -> int:
    with socket.socket() as s:  # not torchrun's fixed default: other runs on this machine may hold it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_the_data_and_match_one_process_with_twice_the_batch(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port())]
    started = time.perf_counter()
    done = subprocess.run(launch + [str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "two"), "2", str(STEPS)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    print(f"accelerate launch, 2 processes: {time.perf_counter() - started:.1f} s")
    ddp_worker.main(tmp_path / "one", batch_size=4, steps=STEPS, cpu=False)

    ranks = [json.loads((tmp_path / "two" / f"seen-rank{r}.json").read_text()) for r in range(2)]
    one = json.loads((tmp_path / "one" / "seen-rank0.json").read_text())
    assert len(one) == len(ranks[0]) == len(ranks[1]) == STEPS * len(ddp_worker.OBJECTIVES)  # a batch per objective
    assert ranks[0] != ranks[1]  # the ranks train on different examples
    for first, second, both in zip(*ranks, one):
        assert len(first) == len(second) == 2 and first + second == both  # the one-process draw, split in two

    two = load_file(str(tmp_path / "two" / "run" / "circuit" / "circuit.safetensors"))
    single = load_file(str(tmp_path / "one" / "run" / "circuit" / "circuit.safetensors"))
    assert two.keys() == single.keys()
    for key in two:
        torch.testing.assert_close(two[key], single[key], rtol=1e-5, atol=1e-6)
    assert any(two[k].abs().sum() > 0 for k in two if k.endswith("up"))  # it did train (W_up starts at zero)
