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


@pytest.mark.parametrize("cap", [None, 2.0])
def test_muting_zeroes_weight_and_removes_contribution(cap):
    cfg = CircuitConfig(head_dim=8, rank=4, logit_cap=cap)
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
    # The same with the mute given per sequence (one preference row each).
    circuit.set_preference([{"harmless": float("-inf")}] * 2)
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
                                 dict(activation="tanhh"), dict(logit_cap=0.0), dict(logit_cap=-2.0),
                                 dict(logit_cap=float("inf")), dict(gate=0.0), dict(gate=1.5)])
def test_config_errors_name_the_option(bad):
    with pytest.raises(ValueError, match=f"circuit.{next(iter(bad))}"):
        CircuitConfig(**bad)


def test_negotiation_module_shapes():
    neg = Negotiation(16, 3, head_dim=8)
    delta, alpha = neg(torch.randn(2, 4, 3, 16), torch.randn(2, 4, 3, 16), torch.zeros(3))
    assert delta.shape == (2, 4, 16) and alpha.shape == (2, 4, 3)


def reference_delta(site: SiteCircuit, h: torch.Tensor, beta: torch.Tensor, cap: float | None = None) -> torch.Tensor:
    """DESIGN section 2 written out by hand, one token at a time (no batching tricks, no broadcasting); with a
    logit cap c, each query's scores are centred, then each s becomes c * tanh(s / c), before beta is added."""
    neg, k = site.negotiation, site.negotiation.k
    w_q, w_k, w_v = neg.qkv[:, :k], neg.qkv[:, k:2 * k], neg.qkv[:, 2 * k:]
    deltas = site.pathways.deltas(h)
    out = torch.zeros_like(h)
    for b in range(h.shape[0]):
        for s in range(h.shape[1]):
            z = h[b, s] + deltas[b, s] + neg.axis  # (N, d)
            scores = (z @ w_q) @ (z @ w_k).t() / math.sqrt(k)
            if cap is not None:
                scores = cap * torch.tanh((scores - scores.mean(dim=-1, keepdim=True)) / cap)
            a = torch.softmax(scores + beta, dim=-1)
            v = deltas[b, s] @ w_v  # values from the pathway deltas only
            out[b, s] = (a @ v).flatten() @ neg.out
    return out


def test_values_carry_only_pathway_deltas():
    site = SiteCircuit(16, CircuitConfig(head_dim=8, rank=4))
    perturb(site)
    h = torch.randn(2, 3, 16)
    beta = torch.tensor([0.5, -1.0, 2.0])
    site.bias = beta.clone()
    assert torch.allclose(site(h).hidden - h, reference_delta(site, h, beta), atol=1e-5)
    # With every pathway at zero, Delta is zero whatever W_q/W_k/W_v/W_o and beta are: no shared adapter.
    with torch.no_grad():
        site.pathways.up.zero_()
    assert torch.equal(site(h).hidden, h)


def test_logit_cap_bounds_the_scores_so_beta_can_move_alpha():
    cap = 1.5
    site = SiteCircuit(16, CircuitConfig(head_dim=8, rank=4, logit_cap=cap))
    perturb(site, scale=4.0)  # large scores: uncapped, alpha would be near one-hot
    h = torch.randn(2, 3, 16) * 3
    beta = torch.tensor([0.5, -1.0, 2.0])
    site.bias = beta.clone()
    out = site(h)
    assert torch.allclose(out.hidden - h, reference_delta(site, h, beta, cap=cap), atol=1e-4)
    # Scores lie within [-c, c]: under beta = 0, no objective's alpha can exceed e^c / (e^c + (N-1) e^-c).
    site.bias = torch.zeros(3)
    bound = math.exp(cap) / (math.exp(cap) + 2 * math.exp(-cap))
    assert site(h).alpha.max() <= bound + 1e-6
    # Capped scores differ by at most 2c, so a preference above 2c + ln(N - 1) gives that objective more than half
    # of every query's say (here 2c + 1 > 2c + ln 2).
    site.bias = torch.tensor([0.0, 2 * cap + 1.0, 0.0])
    assert (site(h).alpha[..., 1] > 0.5).all()


def test_untrained_circuit_gives_pathways_gradient_at_step_zero():
    site = SiteCircuit(16, CircuitConfig(head_dim=8, rank=4))  # U = 0, W_o small-random
    h = torch.randn(2, 5, 16)
    assert torch.equal(site(h).hidden, h)
    site(h).hidden.pow(2).sum().backward()
    assert site.pathways.up.grad.abs().sum() > 0
    assert site.negotiation.out.abs().sum() > 0


@pytest.mark.parametrize("cap", [None, 2.0])
def test_positive_infinity_gives_exactly_that_objectives_update(cap):
    circuit = Circuit(CircuitConfig(head_dim=8, rank=4, logit_cap=cap), 16, [0])
    perturb(circuit)
    site = circuit.sites["0"]
    h = torch.randn(2, 5, 16)
    circuit.set_preference({"harmless": float("inf")})
    out = site(h)
    assert torch.equal(out.alpha[..., 1], torch.ones(2, 5))
    k = site.negotiation.k
    v = site.pathways.deltas(h)[..., 1, :] @ site.negotiation.qkv[:, 2 * k:]  # objective 1's value
    expected = torch.cat([v] * 3, dim=-1) @ site.negotiation.out  # every query takes objective 1's value
    assert torch.allclose(out.hidden - h, expected, atol=1e-5)
    with torch.no_grad():  # the other objectives' pathways no longer matter
        site.pathways.up[0].add_(1.0)
        site.pathways.up[2].add_(1.0)
    assert torch.allclose(site(h).hidden, out.hidden, atol=1e-6)


@torch.no_grad()
def test_gate_gives_each_token_its_top_objectives_update_alone_or_none():
    """Hard routing (circuit.gate = theta), by hand per token: with alpha from the soft negotiation, the objective
    with the most say acts alone (every query takes its value, as in teacher-forced training) when its alpha
    reaches theta; otherwise Delta = 0."""
    site = SiteCircuit(16, CircuitConfig(head_dim=8, rank=4, logit_cap=2.0))
    perturb(site, scale=2.0)
    h = torch.randn(3, 6, 16) * 2
    soft = site(h)
    theta = float(soft.alpha.max(-1).values.median())  # some tokens above, some below
    site.negotiation.gate = theta
    gated = site(h)
    assert torch.equal(gated.alpha, soft.alpha)  # alpha still reports the negotiation's own weights
    k = site.negotiation.k
    values = site.pathways.deltas(h) @ site.negotiation.qkv[:, 2 * k:]  # (B, S, N, k)
    above = 0
    for b in range(h.shape[0]):
        for s in range(h.shape[1]):
            top = int(soft.alpha[b, s].argmax())
            if soft.alpha[b, s, top] >= theta:
                above += 1
                expected = h[b, s] + torch.cat([values[b, s, top]] * 3) @ site.negotiation.out
                assert torch.allclose(gated.hidden[b, s], expected, atol=1e-5)
            else:
                assert torch.equal(gated.hidden[b, s], h[b, s])
    assert 0 < above < h.shape[0] * h.shape[1]
    # beta = +inf still gives exactly that objective's update; all muted, none.
    site.bias = torch.tensor([0.0, float("inf"), 0.0])
    expected = torch.cat([values[..., 1, :]] * 3, dim=-1) @ site.negotiation.out
    assert torch.allclose(site(h).hidden - h, expected, atol=1e-5)
    site.bias = torch.full((3,), float("-inf"))
    assert torch.equal(site(h).hidden, h)


def test_gate_leaves_teacher_forced_rows_alone():
    site = SiteCircuit(16, CircuitConfig(head_dim=8, rank=4))
    perturb(site, scale=2.0)
    h = torch.randn(2, 4, 16)
    site.route = torch.tensor([2, 0])
    forced = site(h).hidden
    site.negotiation.gate = 0.9
    assert torch.equal(site(h).hidden, forced)


def test_preference_per_sequence_matches_each_sequence_alone():
    circuit = Circuit(CircuitConfig(head_dim=8, rank=4), 16, [0])
    perturb(circuit)
    site = circuit.sites["0"]
    h = torch.randn(4, 5, 16)
    prefs = [{}, {"harmless": 2.0}, {"helpful": float("-inf")}, {"honest": float("inf"), "helpful": -1.0}]
    circuit.set_preference(prefs)
    assert circuit.row_preferences()[1]["harmless"] == 2.0
    batched = site(h)
    for b, pref in enumerate(prefs):
        circuit.set_preference(pref)
        alone = site(h[b:b + 1])
        assert torch.allclose(batched.hidden[b], alone.hidden[0], atol=1e-6)
        assert torch.allclose(batched.alpha[b], alone.alpha[0], atol=1e-6)


def test_preference_rejects_nan_and_unknown_objectives():
    circuit = Circuit(CircuitConfig(head_dim=8, rank=4), 16, [0])
    with pytest.raises(ValueError, match="NaN"):
        circuit.set_preference({"harmless": float("nan")})
    with pytest.raises(ValueError, match="unknown objective"):
        circuit.set_preference({"kind": 1.0})


def test_set_gate_on_a_built_circuit_checks_the_threshold():
    circuit = Circuit(CircuitConfig(head_dim=8, rank=4), 16, [0, 1])
    circuit.set_gate(0.7)
    assert circuit.cfg.gate == 0.7 and all(site.negotiation.gate == 0.7 for site in circuit.sites.values())
    with pytest.raises(ValueError, match="circuit.gate"):
        circuit.set_gate(2.0)
    assert circuit.cfg.gate == 0.7  # a refused threshold changes nothing
    circuit.set_gate(None)
    assert all(site.negotiation.gate is None for site in circuit.sites.values())
    with pytest.raises(ValueError, match="no negotiation"):
        Circuit(CircuitConfig(variant="pathways", head_dim=8, rank=4), 16, [0]).set_gate(0.5)
