"""`negotiax profile` on tiny models: token counts, parameters, memory method, artefacts."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config, tiny_model
from negotiax.generation.branched import decode
from negotiax.cli import main as cli_main
from negotiax.experiments.profile import ProfileConfig, VariantSetup, profile, profile_inference, render, synthetic_batch

SMALL = dict(circuit={"rank": 4, "head_dim": 8}, batch_sizes=[1, 3], prompt_lengths=[8], new_tokens=5,
             repeats=2, warmup=0, train_steps=1, train_batch=2, train_length=12)


def test_generated_token_count_equals_tokens_decoded():
    """Make one token the EOS: rows stop there, and the profiler counts exactly what decode produced."""
    model = tiny_model("llama")
    cfg = ProfileConfig(**{**SMALL, "new_tokens": 8, "repeats": 2})
    pad = 0
    ids, mask = synthetic_batch(128, 3, 8, {pad}, seed=11)
    free = decode(model, ids, mask, 8, eos=[]).tokens
    stop = free[0][2]
    ids, mask = synthetic_batch(128, 3, 8, {pad, stop}, seed=11)
    expected = decode(model, ids, mask, 8, eos=[stop]).token_counts
    setup = VariantSetup(model, "base", cfg)
    cfg.seed = 11 - 3 * 7919 - 8  # profile_inference seeds its batch with seed + batch*7919 + length
    row = profile_inference(model, setup, 3, 8, cfg, [stop], pad)
    assert row["generated_per_row"] == expected
    assert row["generated_tokens"] == 2 * sum(expected)
    assert sum(expected) < 3 * 8, "the forced EOS should end at least one row early"
    assert row["prompt_tokens"] == 2 * int(mask.sum()) < 2 * mask.numel()  # padding never counted


def test_profile_all_variants_numbers_and_markdown():
    model = tiny_model("qwen2")
    cfg = ProfileConfig(**SMALL, variants=["base", "pathways", "branched", "negotiax"])
    result = profile(cfg, model=model)
    params = result["variants"]
    assert params["base"]["delta_params"] == 0 and "train_tokens_per_s" not in params["base"]
    assert params["pathways"]["delta_params"] == params["branched"]["delta_params"] > 0
    assert params["negotiax"]["delta_params"] > params["pathways"]["delta_params"]
    assert params["negotiax"]["train_tokens_per_s"] > 0
    rows = result["inference"]
    assert len(rows) == 4 * 2
    for r in rows:
        assert r["generated_tokens"] == r["requests"] * sum(r["generated_per_row"])
        assert r["prefill_tokens_per_s"] > 0 and r["latency_p95_s"] >= r["latency_p50_s"] > 0
        assert r["peak_memory_mb"] > 0 and r["memory_method"].startswith("rss")
    assert {r["branches"] for r in rows if r["variant"] == "branched"} == {3}
    text = render(result)
    assert "| branched | 3 | 8 |" in text and "Base parameters: " in text


def test_cli_profiles_a_config_without_weights(tmp_path):
    config = tiny_config("llama")
    config.save_pretrained(tmp_path / "shape")
    out = tmp_path / "out"
    rc = cli_main(["profile", "--model-config", str(tmp_path / "shape" / "config.json"), "--output-dir", str(out),
                   "variants=[base,negotiax]", "batch_sizes=[2]", "prompt_lengths=[6]", "new_tokens=3",
                   "repeats=2", "warmup=0", "train_steps=1", "train_length=8", "circuit.rank=4", "circuit.head_dim=8"])
    assert rc == 0
    data = json.loads((out / "profile.json").read_text())
    assert data["model"].startswith("config:") and data["base_params"] == sum(
        p.numel() for p in tiny_model("llama").parameters())
    assert [r["variant"] for r in data["inference"]] == ["base", "negotiax"]
    assert (out / "profile.md").read_text().count("| negotiax |") == 2


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="variants"):
        ProfileConfig(variants=["lora"])  # the baseline is named sft-lora
    with pytest.raises(ValueError, match="batch_sizes"):
        ProfileConfig(batch_sizes=[0])
    assert cli_main(["profile", "--model-config", "/nonexistent/config.json"]) == 2


def test_peak_memory_is_per_configuration():
    """A 100 MB tensor shows up in its own configuration's peak, and not in the next one's."""
    from negotiax.experiments.memory import PeakMemory

    with PeakMemory("cpu") as big:
        x = torch.ones(25_000_000)  # 100 MB
        del x
    with PeakMemory("cpu") as small:
        y = torch.ones(1000)
        del y
    assert big.reading.delta_bytes > 90 * 2**20
    assert small.reading.delta_bytes < 20 * 2**20
    assert big.reading.method == small.reading.method in ("rss_vmhwm_reset", "rss_psutil_sampled")


def _lora_shapes(model, targets):
    """(in, out) of every Linear that LoRA adapts, read from the tiny model itself."""
    return [(m.in_features, m.out_features) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets]


def test_sft_lora_profiles_adapters_and_gives_the_backbone_back():
    model = tiny_model("llama")
    ids = torch.randint(1, 100, (2, 6))
    before = model(input_ids=ids).logits
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    cfg = ProfileConfig(**SMALL, variants=["base", "sft-lora"], sft_lora={"r": 2, "targets": ["q_proj", "v_proj"]})
    result = profile(cfg, model=model)
    expected = sum(2 * (i + o) for i, o in _lora_shapes(model, {"q_proj", "v_proj"}))  # r * (in + out) each
    lora = result["variants"]["sft-lora"]
    assert lora["delta_params"] == lora["trainable_params"] == expected > 0
    assert lora["train_tokens_per_s"] > 0
    assert [r["variant"] for r in result["inference"]] == ["base", "base", "sft-lora", "sft-lora"]
    assert not any("lora" in name for name, _ in model.named_modules())  # adapters taken out again
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert torch.equal(model(input_ids=ids).logits, before)


def test_sft_lora_runs_a_trained_adapter(tmp_path):
    """A saved adapter is what the profiled model runs: its logits equal the backbone with W + (alpha/r)·B·A
    merged by hand from the adapter file."""
    import copy

    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    model = tiny_model("llama")
    trained = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"],
                                                              lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    trained.save_pretrained(tmp_path / "lora")
    weights = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    merged = copy.deepcopy(model)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for key, a in weights.items():
            if ".lora_A." in key:
                b = weights[key.replace(".lora_A.", ".lora_B.")]
                path = key.split(".lora_A.")[0].removeprefix("base_model.model.")
                modules[path].weight += (4 / 2) * b @ a
    ids = torch.randint(1, 100, (2, 6))
    expected = sum(2 * (i + o) for i, o in _lora_shapes(model, {"q_proj"}))
    setup = VariantSetup(model, "sft-lora", ProfileConfig(**SMALL, circuit_dirs={"sft-lora": str(tmp_path / "lora")}))
    try:
        assert setup.parameters["delta_params"] == expected > 0
        got = model(input_ids=ids).logits
    finally:
        setup.close()
    torch.testing.assert_close(got, merged(input_ids=ids).logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, model(input_ids=ids).logits, atol=1e-3)  # the adapter changed the outputs
