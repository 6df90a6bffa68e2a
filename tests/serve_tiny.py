"""A tiny served model for the serve tests: a random Llama with SmolLM2's tokenizer and a circuit whose
zero-initialised factors are perturbed, so that different preferences give different answers."""
from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def tiny_llama(tokenizer, seed: int = 4, context: int = 256):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(cfg).eval().requires_grad_(False)


def perturbed_circuit(model, scale: float = 3.0, seed: int = 1):
    """An attached negotiax circuit (rank 4, head 4) with random U, so β changes the answer."""
    from negotiax import attach
    from negotiax.circuit import CircuitConfig

    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in attachment.circuit.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale / math.sqrt(p.shape[-1]))
    return attachment


def save_tiny(folder: Path, tokenizer) -> tuple[Path, Path]:
    """(backbone folder, circuit folder) on disk, as `negotiax serve` loads them."""
    from negotiax.saving import save_circuit

    model = tiny_llama(tokenizer)
    attachment = perturbed_circuit(model)
    backbone, circuit = folder / "backbone", folder / "circuit"
    save_circuit(attachment, circuit)
    attachment.detach()
    model.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    return backbone, circuit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`negotiax serve` as a real subprocess on 127.0.0.1 and a free port."""

    def __init__(self, backbone: Path, circuit: Path | None, log_path: Path, *extra: str, env: dict | None = None):
        self.port = free_port()
        self.log_path = log_path
        args = [sys.executable, "-m", "negotiax", "serve", f"model.name_or_path={backbone}", "model.device=cpu",
                "--port", str(self.port), *extra]
        args += ["--circuit", str(circuit)] if circuit else ["--base-only"]
        # One thread: a tiny model gains nothing from more, and the test machine is shared.
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> "ServerProcess":
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"negotiax serve exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"negotiax serve did not become ready in {timeout} s:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def parrot_judge(folder: Path, tokenizer, answer: str = "(a)") -> Path:
    """A backbone that answers `answer` then EOS to any chat prompt: a bigram model built by hand.

    Every attention and MLP output is zero, so the last position's state is its own token's embedding;
    the template's last token and the answer's tokens get one basis direction each, and the LM head maps
    each direction to the next token of the chain. A deterministic judge for end-to-end evaluation tests.
    """
    model = tiny_llama(tokenizer, context=2048)  # room for a judge prompt
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                           add_generation_prompt=True)
    chain = [tokenizer(prompt, add_special_tokens=False).input_ids[-1]]
    chain += tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for i, (token, following) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[token, i] = 1.0
            model.lm_head.weight[following, i] = 10.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
