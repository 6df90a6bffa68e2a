"""Throughput of `negotiax serve`: concurrency 1 vs 16 on SmolLM2-135M-Instruct (CPU), as a ratio.

Starts `negotiax serve` as a subprocess on 127.0.0.1 (with the circuit given by --circuit, else an untrained
quick-recipe circuit, which costs the same to run), then sends the same AlpacaEval chat requests with the
official openai client, first one at a time, then from 16 threads at once (each with its own preference β).
Prints requests/s and generated tokens/s (the usage counts) for both, and their ratio.
Usage: .venv/bin/python benchmarks/bench_serve.py [--n 32] [--max-tokens 32] [--concurrency 16] [--circuit DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from negotiax.data import DataConfig, load_test_sets

ROOT = Path(__file__).resolve().parents[1]
PREFERENCES = [{}, {"harmless": 2.0}, {"helpful": 1.0, "honest": -1.0}, {"honest": 3.0}]


def untrained_circuit(folder: Path) -> Path:
    """The quick recipe's circuit at initialisation, saved for SmolLM2."""
    from negotiax import attach, load_backbone
    from negotiax.recipe import load_recipe
    from negotiax.saving import save_circuit

    recipe = load_recipe(ROOT / "configs" / "quick.yaml")
    model, _ = load_backbone(recipe.model)
    return save_circuit(attach(model, recipe.circuit), folder / "circuit")


def start_server(circuit: Path, port: int, log) -> subprocess.Popen:
    args = [sys.executable, "-m", "negotiax", "--log-level", "WARNING", "serve", "-c",
            str(ROOT / "configs" / "quick.yaml"), "--circuit", str(circuit), "--port", str(port)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    for _ in range(1800):  # up to 15 minutes: a busy shared machine loads slowly
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                log.flush()
                raise SystemExit(f"negotiax serve exited with {proc.returncode}:\n{Path(log.name).read_text()}")
            time.sleep(0.5)
    raise SystemExit("negotiax serve did not start in 15 minutes")


def measure(client, prompts: list[str], max_tokens: int, concurrency: int) -> tuple[int, int, float]:
    """(requests, generated tokens, seconds) for all prompts sent by `concurrency` threads."""
    def one(i: int) -> int:
        reply = client.chat.completions.create(
            model="negotiax", messages=[{"role": "user", "content": prompts[i]}], max_tokens=max_tokens,
            temperature=0, extra_body={"negotiax": {"preference": PREFERENCES[i % len(PREFERENCES)]}})
        return reply.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, range(len(prompts))))
    return len(prompts), tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="requests per run (AlpacaEval prompts, first n)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--circuit", help="a saved SmolLM2 circuit (default: an untrained quick-recipe circuit)")
    args = parser.parse_args()
    prompts = [ex.prompt for ex in load_test_sets(DataConfig(test_limit=args.n))["helpful"]]
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "server.log", "w") as log:
        circuit = Path(args.circuit) if args.circuit else untrained_circuit(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = start_server(circuit, port, log)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0,
                                   timeout=600)
            measure(client, prompts[:2], 4, 2)  # warm-up
            print(f"negotiax serve, SmolLM2-135M-Instruct + circuit, CPU ({os.cpu_count()} cores), {len(prompts)} "
                  f"AlpacaEval chat requests, greedy, max_tokens={args.max_tokens}")
            rates = {}
            for c in (1, args.concurrency):
                n, tokens, seconds = measure(client, prompts, args.max_tokens, c)
                rates[c] = (n / seconds, tokens / seconds)
                print(f"concurrency {c:>2}: {n} requests, {tokens:5d} tokens in {seconds:6.1f} s = "
                      f"{n / seconds:5.2f} requests/s, {tokens / seconds:6.1f} tokens/s")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as r:
                print("server:", json.loads(r.read()))
        finally:
            proc.terminate()
            proc.wait(30)
    one, many = rates[1], rates[args.concurrency]
    print(f"ratio concurrency {args.concurrency} / 1: {many[0] / one[0]:.2f}x requests/s, "
          f"{many[1] / one[1]:.2f}x tokens/s")


if __name__ == "__main__":
    main()
