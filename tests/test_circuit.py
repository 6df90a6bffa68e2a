"""The circuit modules alone: identity at init, muting, variants, parameter cost."""
import math

import pytest
import torch

from negotiax.circuit import Circuit, CircuitConfig, Negotiation, Pathways, SiteCircuit


def perturb(module: torch.nn.Module, scale: float = 0.5, seed: int = 1) -> None:
    """Give every zero-initialised parameter random values so the circuit does something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale / math.sqrt(p.shape[-1]))


@pytest.mark.parametrize("variant", ["pathways", "mac", "negotiax"])
@pytest.mark.parametrize("rank", [4, "full"])
def test_untrained_circuit_is_exact_identity(variant, rank):
    site = SiteCircuit(16, CircuitConfig(variant=variant, rank=rank, head_dim=8))
    h = torch.randn(2, 5, 16)
    out = site(h)
    assert torch.equal(out.hidden, h)
    assert torch.equal(out.drift, torch.zeros(2, 5))


def test_alpha_is_a_distribution_over_objectives():
    site = SiteCircuit(16, CircuitConfig(head_dim=8, rank=4))
    perturb(site)
    alpha = site(torch.randn(2, 5, 16)).alpha
    assert alpha.shape == (2, 5, 3)
    assert torch.allclose(alpha.sum(-1), torch.ones(2, 5), atol=1e-6)


def test_muting_zeroes_weight_and_removes_contribution():
    cfg = CircuitConfig(head_dim=8, rank=4)
    circuit = Circuit(cfg, 16, [0])
    perturb(circuit)
    site = circuit.sites["0"]
    h = torch.randn(2, 5, 16)
    circuit.mute("harmless")
    out = site(h)
    assert torch.all(out.alpha[..., 1] == 0)
    assert torch.allclose(out.alpha.sum(-1), torch.ones(2, 5), atol=1e-6)
    # Changing the muted pathway's weights must not change the output at all.
    with torch.no_grad():
        site.pathways.up[1].add_(1.0)
    assert torch.allclose(site(h).hidden, out.hidden)
    circuit.set_preference()
    assert not torch.allclose(site(h).hidden, out.hidden)


def test_preference_shifts_say_toward_objective():
    circuit = Circuit(CircuitConfig(head_dim=8, rank=4), 16, [0])
    perturb(circuit)
    h = torch.randn(4, 6, 16)
    before = circuit.sites["0"](h).alpha[..., 2].mean()
    circuit.set_preference({"honest": 3.0})
    after = circuit.sites["0"](h).alpha[..., 2].mean()
    assert after > before + 0.2
    with pytest.raises(ValueError, match="unknown objective 'kind'"):
        circuit.set_preference({"kind": 1.0})


def test_all_muted_gives_no_change_not_nan():
    circuit = Circuit(CircuitConfig(head_dim=8, rank=4), 16, [0])
    perturb(circuit)
    circuit.mute("helpful", "harmless", "honest")
    h = torch.randn(1, 3, 16)
    out = circuit.sites["0"](h)
    assert torch.equal(out.hidden, h)


def test_pathways_variant_is_uniform_mean_of_deltas():
    site = SiteCircuit(16, CircuitConfig(variant="pathways", rank=4))
    perturb(site)
    h = torch.randn(2, 3, 16)
    deltas = site.pathways.deltas(h)
    assert torch.allclose(site(h).hidden, h + deltas.mean(-2), atol=1e-6)
    assert site.negotiation is None


def test_ablation_switches():
    generic = SiteCircuit(16, CircuitConfig(generic=True, head_dim=8))
    assert generic.negotiation.axis is None
    frozen = SiteCircuit(16, CircuitConfig(frozen=True, head_dim=8))
    assert not frozen.negotiation.qkv.requires_grad
    assert frozen.negotiation.out.requires_grad


def test_parameter_cost_matches_design_at_7b_width():
    d, n, r, k = 4096, 3, 64, 64
    formula = n * 2 * r * d + n * d + 3 * d * k + n * k * d
    site = SiteCircuit(d, CircuitConfig(rank=r, head_dim=k))
    count = sum(p.numel() for p in site.parameters())
    assert count == formula
    assert 3.1e6 < count < 3.3e6  # ~3.2M, as DESIGN.md states
    assert count / 6.74e9 <= 0.001  # <= 0.1% of a 7B backbone (LLaMA-2-7B: 6.74B)


def test_full_rank_option_has_d_by_d_maps():
    p = Pathways(32, 3, rank="full")
    assert p.up.shape == (3, 32, 32)
    assert p.directions().shape == (3, 32, 32)


@pytest.mark.parametrize("bad", [dict(variant="fancy"), dict(site="mlp"), dict(rank=0), dict(objectives=["a", "a"]),
                                 dict(activation="tanhh")])
def test_config_errors_name_the_option(bad):
    with pytest.raises(ValueError, match=f"circuit.{next(iter(bad))}"):
        CircuitConfig(**bad)


def test_negotiation_module_shapes():
    neg = Negotiation(16, 3, head_dim=8)
    delta, alpha = neg(torch.randn(2, 4, 3, 16), torch.zeros(3))
    assert delta.shape == (2, 4, 16) and alpha.shape == (2, 4, 3)
