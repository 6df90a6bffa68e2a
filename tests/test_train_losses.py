"""Each loss term against a hand computation, and which tokens it reads."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_model
from negotiax import CircuitConfig, attach
from negotiax.circuit import SiteOutput
from negotiax.train.losses import (circuit_overlap, decision_mask, loss_terms, pathway_drift, prediction_mask, response_ce,
                                   routing_ce, row_targets, subspace_overlap)


def labels_with_prompt(ids: torch.Tensor, prompt: int, pad: int = 0) -> torch.Tensor:
    labels = ids.clone()
    labels[:, :prompt] = -100
    if pad:
        labels[:, -pad:] = -100
    return labels


def test_response_ce_matches_hand_computation_and_ignores_prompt():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    ids = torch.randint(0, 11, (2, 6))
    labels = labels_with_prompt(ids, prompt=3, pad=1)
    expected = []
    for b in range(2):
        for t in range(3, 5):  # response positions 3..4 are predicted from positions 2..3
            expected.append(-F.log_softmax(logits[b, t - 1], -1)[ids[b, t]])
    assert torch.allclose(response_ce(logits, labels), torch.stack(expected).mean())
    changed = logits.clone()
    changed[:, 4:] += 5 * torch.randn(2, 2, 11)  # logits after the last response token predict nothing
    changed[:, 0] += 5  # position 0 predicts a prompt token
    assert torch.allclose(response_ce(changed, labels), response_ce(logits, labels))


def test_response_ce_from_the_answer_positions_alone_matches_hand_computation():
    """The training module's form: logits only where prediction_mask is true, flattened row by row."""
    torch.manual_seed(1)
    logits = torch.randn(2, 7, 11)
    ids = torch.randint(0, 11, (2, 7))
    labels = ids.clone()
    labels[0, :2] = labels[1, :4] = labels[1, 6:] = -100  # prompts of 2 and 4 tokens, one padding token
    expected = [-F.log_softmax(logits[b, t - 1], -1)[ids[b, t]] for b, ts in ((0, range(2, 7)), (1, range(4, 6)))
                for t in ts]
    flat = logits[prediction_mask(labels)]
    assert flat.shape == (7, 11)
    assert torch.allclose(response_ce(flat, labels), torch.stack(expected).mean())
    with pytest.raises(ValueError, match="6 rows of logits for 7 response tokens"):
        response_ce(flat[:6], labels)


def test_response_ce_rejects_a_batch_without_response_tokens():
    with pytest.raises(ValueError, match="no response tokens"):
        response_ce(torch.randn(1, 4, 5), torch.full((1, 4), -100))


def test_routing_ce_averages_alpha_over_response_tokens_only():
    alpha = torch.zeros(1, 4, 3)
    alpha[0, :2] = torch.tensor([0.0, 0.0, 1.0])  # prompt tokens: all say to objective 2
    alpha[0, 2:] = torch.tensor([0.5, 0.25, 0.25])
    mask = torch.tensor([[False, False, True, True]])
    assert math.isclose(float(routing_ce(alpha, mask, 0)), -math.log(0.5), rel_tol=1e-6)
    assert math.isclose(float(routing_ce(alpha, mask, 1)), -math.log(0.25), rel_tol=1e-6)


def test_prediction_mask_covers_the_decision_position_and_not_the_last_answer_token():
    labels = torch.tensor([[-100, -100, -100, 7, 8, 9, -100], [-100, 5, 6, -100, -100, -100, -100]])
    expected = torch.tensor([[False, False, True, True, True, False, False],  # position 2 predicts token 7
                             [True, True, False, False, False, False, False]])
    assert torch.equal(prediction_mask(labels), expected)


def test_decision_mask_marks_the_last_prompt_token_only():
    labels = torch.tensor([[-100, -100, -100, 7, 8, 9, -100], [-100, 5, 6, -100, -100, -100, -100]])
    expected = torch.tensor([[False, False, True, False, False, False, False],
                             [True, False, False, False, False, False, False]])
    assert torch.equal(decision_mask(labels), expected)


def test_decision_share_splits_the_per_token_routing_loss_by_hand():
    alpha = torch.tensor([[[0.5, 0.25, 0.25], [0.8, 0.1, 0.1], [0.2, 0.4, 0.4], [0.9, 0.05, 0.05]]])
    mask = torch.tensor([[True, True, True, False]])  # decision position 0, then two answer positions
    decision = torch.tensor([[True, False, False, False]])
    every = (-math.log(0.5) - math.log(0.8) - math.log(0.2)) / 3
    assert math.isclose(float(routing_ce(alpha, mask, 0, per_token=True)), every, rel_tol=1e-6)
    shared = routing_ce(alpha, mask, 0, per_token=True, decision=decision, decision_share=0.75)
    assert math.isclose(float(shared), 0.25 * every + 0.75 * -math.log(0.5), rel_tol=1e-6)


def test_route_rows_send_a_rows_routing_loss_to_its_own_target_by_hand():
    # a batch of objective 1 (harmless) whose second row is routed to objective 0 (helpful)
    alpha = torch.tensor([[[0.2, 0.7, 0.1], [0.1, 0.8, 0.1]],
                          [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    route_rows = torch.tensor([-1, 0])
    assert row_targets(1, route_rows, 2, "cpu").tolist() == [1, 0]
    per_token = (-math.log(0.7) - math.log(0.8) - math.log(0.6) - math.log(0.5)) / 4
    assert math.isclose(float(routing_ce(alpha, mask, 1, per_token=True, route_rows=route_rows)), per_token,
                        rel_tol=1e-6)
    # alpha_bar per target (row 0: 0.75 on objective 1; row 1: 0.55 on objective 0), each half of the tokens
    pooled = 0.5 * -math.log(0.75) + 0.5 * -math.log(0.55)
    assert math.isclose(float(routing_ce(alpha, mask, 1, route_rows=route_rows)), pooled, rel_tol=1e-6)
    only_first = torch.tensor([[True, True], [False, False]])  # the routed row has no masked token: no say
    assert math.isclose(float(routing_ce(alpha, only_first, 1, route_rows=route_rows)), -math.log(0.75),
                        rel_tol=1e-6)
    # no row routed elsewhere: exactly the batch objective's loss
    same = torch.tensor([-1, -1])
    assert torch.equal(routing_ce(alpha, mask, 1, route_rows=same), routing_ce(alpha, mask, 1))
    assert torch.equal(routing_ce(alpha, mask, 1, per_token=True, route_rows=same),
                       routing_ce(alpha, mask, 1, per_token=True))


def test_pathway_drift_reads_masked_tokens_and_averages_sites():
    drift_a = torch.tensor([[1.0, 2.0, 3.0]])
    drift_b = torch.tensor([[3.0, 4.0, 5.0]])
    record = {1: SiteOutput(None, None, drift_a), 2: SiteOutput(None, None, drift_b)}
    mask = torch.tensor([[False, True, True]])
    assert math.isclose(float(pathway_drift(record, mask)), (2.5 + 4.5) / 2)


def test_off_target_averages_the_other_pathways_norms_over_masked_tokens_and_sites():
    from negotiax.train.losses import off_target

    # (B=1, S=3, N=3): objectives' squared update norms per token, at two sites
    norms_a = torch.tensor([[[1.0, 10.0, 100.0], [2.0, 20.0, 200.0], [3.0, 30.0, 300.0]]])
    norms_b = 2 * norms_a
    record = {1: SiteOutput(None, None, norms_a.mean(-1), norms_a),
              2: SiteOutput(None, None, norms_b.mean(-1), norms_b)}
    labels = torch.tensor([[-100, 5, 6]])  # positions 0 and 1 predict answer tokens
    mask = prediction_mask(labels)
    # objective 1 (harmless): the others are 0 and 2; site a: ((1+100)/2 + (2+200)/2) / 2 = 75.75; site b twice
    assert math.isclose(float(off_target(record, mask, 1)), (75.75 + 151.5) / 2)
    # objective 0: site a ((10+100)/2 + (20+200)/2) / 2 = 82.5, site b twice that
    assert math.isclose(float(off_target(record, mask, 0)), (82.5 + 165.0) / 2)
    # per-row targets (a source's `route`): row 0 of objective 1, row 1 routed to objective 2
    two = {1: SiteOutput(None, None, None, torch.cat([norms_a, norms_a])),
           2: SiteOutput(None, None, None, torch.cat([norms_b, norms_b]))}
    both = torch.cat([mask, mask])
    # site a: row 0 as above (75.75 summed over 2 tokens: 151.5), row 1 the others 0 and 1: (11 + 22) / 2 = 16.5
    assert math.isclose(float(off_target(two, both, torch.tensor([1, 2]))), ((151.5 + 16.5) / 4) * 1.5)
    # a single objective has no other pathway
    one = {1: SiteOutput(None, None, None, norms_a[..., :1])}
    assert float(off_target(one, mask, 0)) == 0.0
    # in the loss, weighted, and only when asked for
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    site = next(iter(attachment.circuit.sites.values()))
    with torch.no_grad():
        site.pathways.up.normal_()
    seen = []
    site.register_forward_pre_hook(lambda module, args: seen.append(args[0]))  # the state h the site reads
    ids = torch.randint(0, 128, (2, 8))
    labels = labels_with_prompt(ids, prompt=3)
    logits = model(input_ids=ids).logits
    out = attachment.record[next(iter(attachment.record))]
    h, r = seen[0], site.pathways.r
    x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    by_hand = torch.stack([(F.silu(x @ site.pathways.down[i * r:(i + 1) * r].t()) @ site.pathways.up[i].t())
                           .pow(2).sum(-1) for i in range(3)], dim=-1)  # ||U_i silu(D_i norm(h))||^2
    assert torch.allclose(out.sq_norms, by_hand, rtol=1e-4)
    assert torch.allclose(out.drift, out.sq_norms.mean(-1))
    kw = dict(lambda_route=0.0, lambda_ref=0.0, lambda_orth=0.0)
    terms = loss_terms(logits, labels, attachment.record, None, attachment.circuit, 2, lambda_off=0.5, **kw)
    assert torch.allclose(terms["off"], 0.5 * off_target(attachment.record, prediction_mask(labels), 2))
    assert "off" not in loss_terms(logits, labels, attachment.record, None, attachment.circuit, 2, **kw)
    routed = loss_terms(logits, labels, attachment.record, None, attachment.circuit, 2, lambda_off=0.5,
                        route_rows=torch.tensor([-1, 0]), **kw)  # row 1 listed with `route` to objective 0
    by_row = 0.5 * off_target(attachment.record, prediction_mask(labels), torch.tensor([2, 0]))
    assert torch.allclose(routed["off"], by_row) and not torch.allclose(routed["off"], terms["off"])


def test_subspace_overlap_is_zero_for_orthogonal_subspaces_and_r_for_equal_ones():
    eye = torch.eye(6)
    apart = torch.stack([eye[0:2], eye[2:4], eye[4:6]])  # (N=3, r=2, d=6)
    assert float(subspace_overlap(apart)) == pytest.approx(0.0, abs=1e-7)
    same = torch.stack([eye[0:2], 3 * eye[0:2]])  # scale does not matter: rows are normalised
    assert float(subspace_overlap(same)) == pytest.approx(2.0)


def test_fresh_circuit_has_zero_drift_and_terms_are_weighted():
    torch.manual_seed(0)
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    ids = torch.randint(0, 128, (2, 8))
    labels = labels_with_prompt(ids, prompt=3)
    logits = model(input_ids=ids).logits
    kw = dict(lambda_route=0.5, lambda_ref=2.0, lambda_orth=0.1)
    terms = loss_terms(logits, labels, attachment.record, attachment.alpha(), attachment.circuit, 1, **kw)
    assert float(terms["drift"].detach()) == 0.0  # U = 0: every pathway equals the shared state
    assert torch.allclose(terms["orth"], 0.1 * circuit_overlap(attachment.circuit))
    alpha = attachment.alpha()
    # The routing term reads alpha where response tokens are predicted: one position earlier than the labels.
    shifted = torch.zeros_like(labels, dtype=torch.bool)
    shifted[:, :-1] = labels[:, 1:] != -100
    assert torch.allclose(terms["route"], 0.5 * routing_ce(alpha, shifted, 1))
    assert torch.allclose(terms["loss"], terms["ce"] + terms["route"] + terms["drift"] + terms["orth"])
    no_route = loss_terms(logits, labels, attachment.record, None, attachment.circuit, 1, **kw)
    assert "route" not in no_route


def test_the_train_module_passes_route_rows_to_the_routing_term_and_forces_the_batch_pathway():
    from negotiax.train.config import TrainConfig
    from negotiax.train.module import CircuitTrainModule

    torch.manual_seed(0)
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    module = CircuitTrainModule(model, attachment, TrainConfig(route_loss="per_token", lambda_route=1.0,
                                                               lambda_ref=0.0, lambda_orth=0.0, route_forcing=1.0))
    module.train()
    ids = torch.randint(0, 128, (2, 8))
    labels = labels_with_prompt(ids, prompt=3)
    mask = torch.ones_like(ids)
    routed = module(ids, mask, labels, 1, None, torch.tensor([-1, 0]))
    alpha = attachment.alpha()
    hand = torch.stack([-torch.log(alpha[0, 2:7, 1]), -torch.log(alpha[1, 2:7, 0])]).mean()  # positions 2..6
    assert torch.allclose(routed["route"], hand)
    plain = module(ids, mask, labels, 1)
    assert torch.allclose(plain["ce"], routed["ce"])  # both rows run objective 1's pathway either way
    assert not torch.allclose(plain["route"], routed["route"])


def test_route_forcing_per_objective_forces_only_the_named_objectives_batches():
    from negotiax.attach import preference
    from negotiax.train.config import TrainConfig
    from negotiax.train.module import CircuitTrainModule

    torch.manual_seed(0)
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    site = next(iter(attachment.circuit.sites.values()))
    with torch.no_grad():  # pathways and negotiation away from init, so forcing changes the output
        site.pathways.up.normal_()
        site.negotiation.out.normal_()
    assert list(attachment.circuit.objectives) == ["helpful", "harmless", "honest"]
    cfg = TrainConfig(lambda_route=0.0, lambda_ref=0.0, lambda_orth=0.0,
                      route_forcing={"helpful": 0, "harmless": 1})
    module = CircuitTrainModule(model, attachment, cfg)
    module.train()
    ids = torch.randint(0, 128, (2, 8))
    labels = labels_with_prompt(ids, prompt=3)
    mask = torch.ones_like(ids)

    def reference_ce(beta):  # the same forward under an inference-time preference, CE by hand
        with preference(attachment.circuit, beta):
            logits = model(input_ids=ids).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                               ignore_index=-100)

    # harmless (share 1): every row mixes the harmless update alone, which is what beta_harmless = +inf gives
    assert torch.allclose(module(ids, mask, labels, 1)["ce"], reference_ce({"harmless": float("inf")}), atol=1e-6)
    # helpful (share 0) and honest (not named: 0): the negotiation's own alpha
    for objective in (0, 2):
        assert torch.allclose(module(ids, mask, labels, objective)["ce"], reference_ce(None), atol=1e-6)
    assert not torch.allclose(reference_ce(None), reference_ce({"harmless": float("inf")}))
    # a recipe checks the names; an ablation's pair of objectives keeps the mapping, without the names it lacks
    from negotiax.recipe import Recipe, load_recipe
    with pytest.raises(ValueError, match=r"train.route_forcing names \['harmles'\], which this recipe does not"):
        Recipe(train=TrainConfig(route_forcing={"harmles": 1}))
    recipe = load_recipe("configs/quick.yaml", ["train.route_forcing={helpful: 0, harmless: 1}"])
    pair = dataclasses.replace(recipe, circuit=dataclasses.replace(recipe.circuit, objectives=["helpful", "honest"]))
    attachment.detach()
    with attach(tiny_model("llama"), pair.circuit) as two:
        assert CircuitTrainModule(two.model, two, pair.train).forcing == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"train.route_forcing.helpful=1.5: a share between 0 and 1"):
        TrainConfig(route_forcing={"helpful": 1.5})


def test_routing_loss_trains_the_negotiation_and_drift_trains_the_pathways():
    torch.manual_seed(0)
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    site = next(iter(attachment.circuit.sites.values()))
    with torch.no_grad():
        site.pathways.up.normal_()
    ids = torch.randint(0, 128, (2, 8))
    labels = labels_with_prompt(ids, prompt=3)
    model(input_ids=ids)
    routing_ce(attachment.alpha(), labels != -100, 0).backward(retain_graph=True)
    assert site.negotiation.qkv.grad.abs().sum() > 0 and site.negotiation.axis.grad.abs().sum() > 0
    assert site.pathways.up.grad.abs().sum() > 0  # alpha depends on the pathway states too
    site.pathways.up.grad = None
    pathway_drift(attachment.record, labels != -100).backward()
    assert site.pathways.up.grad.abs().sum() > 0 and site.negotiation.out.grad is None
