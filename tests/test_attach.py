"""Attaching the circuit to every supported decoder family (tiny models built from configs, offline)."""
import pytest
import torch

from conftest import tiny_model
from negotiax import CircuitConfig, attach, find_decoder_layers, load_circuit, save_circuit
from test_circuit import perturb

IDS = torch.tensor([[5, 17, 99, 3, 42, 8, 61], [7, 7, 12, 90, 1, 2, 3]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("site", ["attn", "block"])
def test_untrained_circuit_leaves_logits_equal(family, site):
    model = tiny_model(family)
    base = logits(model)
    with attach(model, CircuitConfig(site=site, rank=8, head_dim=8)):
        assert (logits(model) - base).abs().max() <= 1e-5


def test_nontrivial_circuit_changes_logits_and_detach_restores(family):
    model = tiny_model(family)
    base = logits(model)
    a = attach(model, CircuitConfig(rank=8, head_dim=8))
    perturb(a.circuit)
    assert (logits(model) - base).abs().max() > 1e-3
    a.detach()
    assert torch.equal(logits(model), base)
    assert not a.attached


def greedy(model, ids, use_cache, n=8):
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                              do_sample=False, use_cache=use_cache, pad_token_id=0)


def test_kv_cache_generation_matches_full_recompute(family):
    model = tiny_model(family)
    with attach(model, CircuitConfig(rank=8, head_dim=8, layers=[0, -1])) as a:
        perturb(a.circuit)
        ids = IDS[:1]
        cached, uncached = greedy(model, ids, True), greedy(model, ids, False)
        assert torch.equal(cached, uncached)
        a.detach()
        assert not torch.equal(greedy(model, ids, True), cached)  # the circuit really steered decoding


def test_save_load_round_trip(family, tmp_path):
    model = tiny_model(family)
    with attach(model, CircuitConfig(rank=8, head_dim=8, layers=[-1])) as a:
        perturb(a.circuit)
        expected = logits(model)
        save_circuit(a, tmp_path / "c")
    assert torch.equal(logits(model), logits(tiny_model(family)))  # detached again
    with load_circuit(tmp_path / "c", model) as b:
        assert b.circuit.layers == [2]
        assert torch.allclose(logits(model), expected, atol=1e-6)


def test_gradients_reach_every_circuit_parameter_and_no_backbone_parameter(family):
    model = tiny_model(family)
    with attach(model, CircuitConfig(rank=8, head_dim=8)) as a:
        perturb(a.circuit)
        model(input_ids=IDS).logits.pow(2).mean().backward()
        for name, p in a.circuit.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert all(p.grad is None for p in model.parameters())


def test_frozen_ablation_gets_no_qkv_gradient():
    model = tiny_model("llama")
    with attach(model, CircuitConfig(rank=8, head_dim=8, frozen=True)) as a:
        perturb(a.circuit)
        model(input_ids=IDS).logits.mean().backward()
        site = a.circuit.sites["1"]
        assert site.negotiation.qkv.grad is None and site.negotiation.out.grad is not None


def test_gradient_checkpointing_keeps_gradients_and_alpha_graph(family):
    model = tiny_model(family)
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with attach(model, CircuitConfig(rank=8, head_dim=8)) as a:
        perturb(a.circuit)
        loss = model(input_ids=IDS).logits.pow(2).mean() + a.alpha()[..., 0].mean()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in a.circuit.parameters())


def test_peft_lora_backbone_trains_lora_and_circuit():
    peft = pytest.importorskip("peft")
    model = tiny_model("llama")
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with attach(lora, CircuitConfig(rank=8, head_dim=8)) as a:
        perturb(a.circuit)
        lora(input_ids=IDS).logits.pow(2).mean().backward()
        lora_grads = [p.grad for n, p in lora.named_parameters() if "lora_B" in n]
        assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
        assert all(p.grad is not None for p in a.circuit.parameters())
        frozen = [p for n, p in lora.named_parameters() if "lora_" not in n]
        assert all(p.grad is None for p in frozen)


def test_alpha_of_last_forward_pass():
    model = tiny_model("qwen2")
    with attach(model, CircuitConfig(rank=8, head_dim=8, layers=[0, 2])) as a:
        perturb(a.circuit)
        logits(model)
        assert a.alpha(0).shape == (2, 7, 3)
        assert torch.allclose(a.alpha(), (a.alpha(0) + a.alpha(2)) / 2)
        a.circuit.mute("honest")
        logits(model)
        assert torch.all(a.alpha()[..., 2] == 0)


def test_layer_discovery_and_errors():
    model = tiny_model("gpt2")
    assert find_decoder_layers(model) is model.transformer.h
    assert find_decoder_layers(model, "transformer.h") is model.transformer.h
    with pytest.raises(ValueError, match="circuit.layers_path='transformer.x'"):
        find_decoder_layers(model, "transformer.x")
    with pytest.raises(ValueError, match="out of range"):
        attach(model, CircuitConfig(layers=[3]))
    a = attach(model, CircuitConfig(layers=[-1, 0]))
    assert a.circuit.layers == [0, 2]
    a.detach()
    assert attach(model).circuit.layers == [1]  # default: the middle layer


def test_loading_onto_mismatched_backbone_fails_clearly(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    model = tiny_model("llama")
    save_circuit(attach(model, CircuitConfig(rank=8, head_dim=8)), tmp_path / "c")
    wider = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=64,
                                                         num_hidden_layers=3, num_attention_heads=4))
    with pytest.raises(ValueError, match="hidden size 32"):
        load_circuit(tmp_path / "c", wider)
    deeper = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                                          num_hidden_layers=5, num_attention_heads=4))
    with pytest.raises(ValueError, match="3 layers"):
        load_circuit(tmp_path / "c", deeper)
    with pytest.raises(FileNotFoundError, match="no circuit config"):
        load_circuit(tmp_path / "nothing", model)


def test_saved_files_are_safetensors_and_json(tmp_path):
    import json

    model = tiny_model("mistral")
    save_circuit(attach(model, CircuitConfig(objectives=["a", "b"], rank=8, head_dim=8)), tmp_path)
    meta = json.loads((tmp_path / "circuit.json").read_text())
    assert meta["circuit"]["objectives"] == ["a", "b"]
    assert meta["hidden_size"] == 32 and meta["num_layers"] == 3
    assert meta["backbone"]["model_type"] == "mistral"
    assert (tmp_path / "circuit.safetensors").read_bytes()[8:9] == b"{"  # safetensors header, not a pickle
