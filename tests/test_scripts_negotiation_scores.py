"""scripts/negotiation_scores.py: its gaps, alpha and update lengths agree with what the attached circuit does
on each prompt alone (the script reads padded batches) and with the scores written out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import load_script, smol_vocab_llama
from negotiax.attach import attach, capture, site_modules
from negotiax.circuit import CircuitConfig
from negotiax.data import Collator
from negotiax.data.formatting import encode_prompt
from test_circuit import perturb


@pytest.fixture(scope="module")
def script():
    return load_script("negotiation_scores")


def before_norms(model, a, prompts) -> list[float]:
    """The length of the state entering the site at each prompt's last token, one unpadded prompt at a time."""
    norms = []
    for ids in prompts:
        with capture(site_modules(model, a.circuit), prepend=True) as before:
            model(input_ids=torch.tensor([ids]))
        norms.append(before[str(a.circuit.layers[0])][0, -1].norm().item())
    return norms


@pytest.mark.parametrize("cap", [None, 1.0])
def test_alpha_and_update_lengths_match_the_attached_circuit(script, smol_tokenizer, cap):
    model = smol_vocab_llama(smol_tokenizer, seed=0)
    texts = ["Hi", "How do I bake bread at home with a very old oven?", "Name a colour."]
    prompts = [encode_prompt(smol_tokenizer, t) for t in texts]  # of different lengths: the script pads them
    with attach(model, CircuitConfig(head_dim=8, rank=4, logit_cap=cap)) as a:
        layer = a.circuit.layers[0]
        with torch.no_grad():  # a random model's attention output is tiny: scale it up to the size of the updates
            model.model.layers[layer].self_attn.o_proj.weight.mul_(100.0)  # |h| about 2.5
        perturb(a.circuit, scale=2.0)  # updates of length 13-66; uncapped scores 20 apart
        out = script.group_scores(model, a, prompts, "harmless", [-4.0, 0.0, 4.0], Collator(smol_tokenizer))
        j = a.circuit.index("harmless")
        for beta, key in ((-4.0, "-4"), (0.0, "+0"), (4.0, "+4")):
            a.circuit.set_preference({"harmless": beta})
            expected = []
            for ids in prompts:  # the decision position: the last prompt token
                model(input_ids=torch.tensor([ids]))
                expected.append(a.alpha(layer)[0, -1, j].item())
            assert out["alpha"][key] == pytest.approx(sum(expected) / len(expected), abs=2e-3)
        if cap is not None:  # capped scores: beta moves alpha (uncapped, these large scores may hide it)
            assert out["alpha"]["-4"] < out["alpha"]["+0"] < out["alpha"]["+4"]
        # With all the say (beta = +inf), the site adds exactly that objective's update: its length at the decision
        # position, read off the attached circuit's own output h' - h.
        for objective in a.circuit.objectives:
            a.circuit.set_preference({objective: float("inf")})
            lengths = []
            for ids in prompts:
                with capture(site_modules(model, a.circuit), prepend=True) as before:
                    model(input_ids=torch.tensor([ids]))
                h = before[str(layer)][0, -1]
                lengths.append((a.record[layer].hidden[0, -1] - h).norm().item())
            assert out["update_norm"][objective] == pytest.approx(sum(lengths) / len(lengths), abs=0.051)  # 1 decimal
        a.circuit.set_preference({})
        assert out["h_norm"] == pytest.approx(sum(before_norms(model, a, prompts)) / 3, abs=0.051)
        assert out["n"] == 3
        # The gap, written out by hand: scores q.k / sqrt(k) of the states h + (z_i - h) + axis, centred and capped.
        neg, k = a.circuit.sites[str(layer)].negotiation, a.circuit.sites[str(layer)].negotiation.k
        gaps = []
        for ids in prompts:
            with capture(site_modules(model, a.circuit), prepend=True) as before:
                model(input_ids=torch.tensor([ids]))
            h = before[str(layer)][0, -1]
            z = h + a.circuit.sites[str(layer)].pathways.deltas(h[None, None])[0, 0] + neg.axis
            s = (z @ neg.qkv[:, :k]) @ (z @ neg.qkv[:, k:2 * k]).t() / math.sqrt(k)
            if cap is not None:
                s = cap * torch.tanh((s - s.mean(dim=1, keepdim=True)) / cap)
            gaps.append((s[:, j] - torch.stack([s[:, 0], s[:, 2]]).max(dim=0).values).mean().item())
        assert out["gap"]["median"] == pytest.approx(sorted(gaps)[1], abs=0.01)
