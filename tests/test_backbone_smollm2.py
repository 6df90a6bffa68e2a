"""The default circuit on the real SmolLM2-135M-Instruct."""
import pytest
import torch

from negotiax import CircuitConfig, attach

pytestmark = pytest.mark.slow


def test_default_circuit_is_small_and_identity_at_init(smollm2):
    model, tokenizer = smollm2
    backbone = sum(p.numel() for p in model.parameters())
    assert 134e6 < backbone < 135e6
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with attach(model, CircuitConfig()) as a:
            assert a.circuit.layers == [15]  # the middle of 30 layers
            assert a.circuit.cfg.n_objectives == 3 and a.circuit.cfg.rank == 64 and a.circuit.cfg.head_dim == 64
            added = sum(p.numel() for p in a.circuit.parameters())
            assert added / backbone <= 0.005
            assert (model(input_ids=ids).logits - base).abs().max() <= 1e-5


def test_default_model_loads_from_the_safetensors_cache(smollm2):
    from negotiax.backbone import cache_root

    model, tokenizer = smollm2
    assert (cache_root() / "smollm2-135m-instruct" / "model.safetensors").is_file()
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert tokenizer.chat_template
