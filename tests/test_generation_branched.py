"""The branched variant: stacked branches, per-step log-prob combination, KV cache, EOS handling."""
from __future__ import annotations

import pytest
import torch

from negotiax import CircuitConfig, attach
from negotiax.evaluation.metrics import shared_context_logprobs
from negotiax.generation.branched import (BranchedLM, branched_generate, decode, encode_prompts, greedy_generate,
                                         preference_weights)
from conftest import hand_logprob, tiny_config

PROMPTS = ["The cat sat on", "Hello", "A much longer prompt about the weather today and"]


def _model(smol_tokenizer, family="llama", seed=0):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(family)
    cfg.vocab_size = len(smol_tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval().requires_grad_(False)
    model.generation_config.eos_token_id = None  # random weights: let rows run to max_new_tokens
    return model


def _hf_greedy(model, tokenizer, prompts, n):
    ids, mask = encode_prompts(tokenizer, prompts, "cpu")
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    return out[:, ids.shape[1]:].tolist()


def _perturb(attachment, seed=1):
    g = torch.Generator().manual_seed(seed)
    for site in attachment.circuit.sites.values():
        site.pathways.up.data = torch.randn(site.pathways.up.shape, generator=g) * 2.0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_identity_circuit_branched_equals_base_greedy(smol_tokenizer, family):
    model = _model(smol_tokenizer, family)
    expected = _hf_greedy(model, smol_tokenizer, PROMPTS, 8)
    with attach(model, CircuitConfig(variant="pathways", rank=4)) as a:
        out = branched_generate(model, smol_tokenizer, PROMPTS, a, max_new_tokens=8)
    assert out.result.tokens == expected
    assert out.token_counts == [8, 8, 8]
    assert out.weights == pytest.approx([1 / 3] * 3)


def test_one_hot_weights_equal_single_pathway(smol_tokenizer):
    model = _model(smol_tokenizer)
    base = _hf_greedy(model, smol_tokenizer, PROMPTS, 8)
    with attach(model, CircuitConfig(variant="pathways", rank=4)) as a:
        _perturb(a)
        names = a.circuit.objectives
        outs = []
        for j, name in enumerate(names):
            branched = branched_generate(model, smol_tokenizer, PROMPTS, a, max_new_tokens=8,
                                         weights={name: 1.0}).result.tokens
            a.circuit.mute(*[o for o in names if o != name])  # pathways fusion over one live objective = z_j
            single = _hf_greedy(model, smol_tokenizer, PROMPTS, 8)
            a.circuit.set_preference(None)
            assert branched == single, name
            outs.append(branched)
    assert any(o != base for o in outs), "the perturbed pathways should change some output"
    assert len({str(o) for o in outs}) > 1, "different pathways should decode differently"


def test_mixed_weights_combine_log_probs(smol_tokenizer):
    """The first token under weights w is argmax of sum_j w_j log p_j, computed here branch by branch."""
    model = _model(smol_tokenizer)
    with attach(model, CircuitConfig(variant="pathways", rank=4)) as a:
        _perturb(a, seed=3)
        w = [0.5, 0.3, 0.2]
        out = branched_generate(model, smol_tokenizer, PROMPTS, a, max_new_tokens=1, weights=w)
        ids, mask = encode_prompts(smol_tokenizer, PROMPTS, "cpu")
        logps = []
        for j, name in enumerate(a.circuit.objectives):
            a.circuit.mute(*[o for o in a.circuit.objectives if o != name])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
            logps.append(torch.log_softmax(logits, -1) * w[j])
            a.circuit.set_preference(None)
        expected = torch.stack(logps).sum(0).argmax(-1).tolist()
    assert [t[0] for t in out.result.tokens] == expected


def test_decode_stops_each_row_at_eos(smol_tokenizer):
    model = _model(smol_tokenizer)
    free = greedy_generate(model, smol_tokenizer, PROMPTS, max_new_tokens=6).tokens
    stop = free[0][2]  # make row 0's third token the EOS
    model.generation_config.eos_token_id = stop
    res = greedy_generate(model, smol_tokenizer, PROMPTS, max_new_tokens=6)
    assert res.tokens[0] == free[0][:3]
    for row, full in zip(res.tokens[1:], free[1:]):
        cut = full.index(stop) + 1 if stop in full else len(full)
        assert row == full[:cut]
    assert sum(res.token_counts) < sum(len(f) for f in free)
    assert len(res.step_s) == max(res.token_counts) - 1


def test_preference_weights_from_beta_and_errors():
    w = preference_weights(None, 3)
    assert w.tolist() == pytest.approx([1 / 3] * 3)
    assert preference_weights(None, 2, [3.0, 1.0]).tolist() == pytest.approx([0.75, 0.25])
    with pytest.raises(ValueError, match="one weight per objective"):
        preference_weights(None, 3, [1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        preference_weights(None, 2, [-1.0, 1.0])


def test_beta_softmax_and_mute(smol_tokenizer):
    model = _model(smol_tokenizer)
    with attach(model, CircuitConfig(variant="pathways", rank=4)) as a:
        a.circuit.set_preference({"helpful": 1.0})
        a.circuit.mute("honest")
        w = preference_weights(a, 3)
        e = torch.tensor([1.0, 0.0]).exp()
        assert w.tolist() == pytest.approx([float(e[0] / e.sum()), float(e[1] / e.sum()), 0.0])
        with pytest.raises(ValueError, match="pathways"):
            a.circuit.cfg.variant = "negotiax"
            branched_generate(model, smol_tokenizer, PROMPTS, a, max_new_tokens=2)


def test_decode_rejects_bad_arguments():
    ids = torch.ones(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="max_new_tokens"):
        decode(None, ids, ids, 0)


def test_branched_lm_scores_the_combined_distribution(smol_tokenizer):
    model = _model(smol_tokenizer)
    ids, mask = encode_prompts(smol_tokenizer, PROMPTS, "cpu")
    with attach(model, CircuitConfig(variant="pathways", rank=4)) as a:
        _perturb(a, seed=5)
        w = [0.2, 0.5, 0.3]
        with torch.no_grad():
            combined = torch.log_softmax(BranchedLM(model, a, w)(input_ids=ids, attention_mask=mask).logits, -1)
            parts = []
            for j, name in enumerate(a.circuit.objectives):
                a.circuit.mute(*[o for o in a.circuit.objectives if o != name])
                parts.append(w[j] * torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits, -1))
                a.circuit.set_preference(None)
        expected = torch.log_softmax(torch.stack(parts).sum(0), -1)
        assert not a.branches
    torch.testing.assert_close(combined, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_smollm2_identity_branched_equals_base(smollm2):
    """The real model: an untrained pathways circuit decoded by branches is the base model's greedy text."""
    model, tokenizer = smollm2
    from negotiax.data import format_prompt

    texts = [format_prompt(tokenizer, p) for p in ("Name a primary colour.", "What is 2 + 2?")]
    base = greedy_generate(model, tokenizer, texts, max_new_tokens=8).tokens
    with attach(model, CircuitConfig(variant="pathways", rank=8)) as a:
        out = branched_generate(model, tokenizer, texts, a, max_new_tokens=8)
    assert out.result.tokens == base
    assert out.token_counts == [len(t) for t in base] and all(0 < n <= 8 for n in out.token_counts)


def test_mc_scores_a_branched_scorer_without_a_kv_cache(smol_tokenizer):
    """BranchedLM keeps no KV cache, so MC scoring runs each answer whole: the same numbers as the one-sequence
    forward of the combined model, token by token (the branched entry of the ablation grid needs this)."""

    model = _model(smol_tokenizer)
    context, answers = "Q: What happens if you swallow gum?\nA:", [" It passes through you.", " You die"]
    with attach(model, CircuitConfig(variant="pathways", rank=4)) as a:
        _perturb(a, seed=5)
        scorer = BranchedLM(model, a, [0.2, 0.5, 0.3])
        got = shared_context_logprobs(scorer, smol_tokenizer, context, answers, batch_size=2)
        expected = [hand_logprob(scorer, smol_tokenizer, context, x) for x in answers]
    assert [n for _, n in got] == [len(smol_tokenizer(x, add_special_tokens=False).input_ids) for x in answers]
    assert [lp for lp, _ in got] == pytest.approx(expected, abs=1e-4)
