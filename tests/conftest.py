"""Shared fixtures: tiny models of every supported family, built from configs (no downloads)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("NEGOTIAX_DATA_DIR", ROOT.parent / "shared" / "data"))
TOKENIZER_DIR = DATA_DIR / "models" / "smollm2-135m-instruct"

TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def tiny_config(family: str):
    from transformers import (GemmaConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig,
                              Qwen2Config)

    if family == "llama":
        return LlamaConfig(**TINY)
    if family == "mistral":
        return MistralConfig(**TINY, sliding_window=None)
    if family == "gemma":
        return GemmaConfig(**TINY, head_dim=8)
    if family == "qwen2":
        return Qwen2Config(**TINY)
    if family == "gpt2":
        return GPT2Config(vocab_size=128, n_embd=32, n_layer=3, n_head=4, n_positions=128)
    if family == "gpt_neox":
        return GPTNeoXConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                             num_attention_heads=4, max_position_embeddings=128)
    raise ValueError(family)


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts import each other from beside them, so scripts/ is on the path
    while it loads)."""
    scripts = ROOT / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(scripts))
    return module


FAMILIES = ["llama", "mistral", "gemma", "qwen2", "gpt2", "gpt_neox"]


def tiny_model(family: str = "llama", seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family), dtype=torch.float32)
    return model.eval().requires_grad_(False)


def hand_logprob(model, tokenizer, context: str, answer: str) -> float:
    """log P(answer | context), one unpadded sequence, token by token."""
    ctx = tokenizer(context, add_special_tokens=False).input_ids
    ans = tokenizer(answer, add_special_tokens=False).input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx + ans])).logits[0], -1)
    return sum(logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(ans))


def smol_vocab_llama(tokenizer, seed: int, **config):
    """A tiny randomly initialised Llama over the real SmolLM2 tokenizer's vocabulary (2 layers of width 32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    return LlamaForCausalLM(LlamaConfig(**{**settings, **config})).eval()


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"real data not found at {DATA_DIR}; set NEGOTIAX_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def smol_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (converted once into the NegotiaX cache)."""
    from negotiax import load_backbone

    return load_backbone(name_or_path="smollm2", device="cpu", dtype="float32")
