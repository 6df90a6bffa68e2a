"""The routing warm start: decision states read independently of the batching, a fit that routes and leaves the
circuit the identity, and a trainer that runs it once, never on resume."""
from __future__ import annotations

import dataclasses
import json

import torch

from conftest import smol_vocab_llama, tiny_model
from negotiax import CircuitConfig, attach
from negotiax.data import Collator, TokenizedDataset
from negotiax.data.formatting import encode_prompt
from negotiax.data.schema import Example
from negotiax.data.config import Source
from negotiax.fingerprint import OFF_BY_DEFAULT, SOURCE_OFF_BY_DEFAULT, settings
from negotiax.train.config import TrainConfig
from negotiax.train.route_fit import decision_states, fit_routing, prompt_ids, spread, warm_start_routing
from negotiax.train.trainer import WARM_START, Trainer
from test_train_trainer import OBJECTIVES, HandBuiltSteps


def test_spread_takes_distinct_prompts_evenly_across_the_list():
    prompts = [f"p{i}" for i in range(10)]
    prompts.insert(3, "p1")  # a repeated prompt counts once, at its first row
    assert [prompts[i] for i in spread(prompts, 4)] == ["p0", "p2", "p5", "p7"]  # floor(i * 10 / 4)
    assert [prompts[i] for i in spread(prompts, 20)] == [f"p{i}" for i in range(10)]


def test_prompt_ids_stop_at_the_decision_position_of_a_cut_row(smol_tokenizer):
    long = Example(id="x", objective="harmless", prompt="word " * 300, response="I cannot help with that.")
    feature = TokenizedDataset([long], smol_tokenizer, max_length=64)[0]  # the prompt loses its start
    ids = prompt_ids(feature)
    assert feature["labels"][len(ids) - 1] == -100 and feature["labels"][len(ids)] != -100
    assert ids == feature["input_ids"][:len(ids)] and len(feature["input_ids"]) <= 64


def test_decision_states_are_the_site_input_at_the_last_prompt_token(smol_tokenizer):
    model = smol_vocab_llama(smol_tokenizer, seed=0, num_hidden_layers=3, attention_dropout=0.5)
    model.train()  # dropout on: the states must still be the eval-mode ones, and the mode is given back
    attachment = attach(model, CircuitConfig(objectives=OBJECTIVES, layers=[1], rank=4, head_dim=4))  # site: attn
    prompts = ["Hi", "How do I bake bread at home with a very old oven?", "Name a colour."]
    ids = [encode_prompt(smol_tokenizer, p) for p in prompts]
    states = decision_states(model, attachment, ids, Collator(smol_tokenizer), batch_size=2)["1"]  # padded batches
    assert model.training
    attachment.detach()
    model.eval()
    seen = []
    handle = model.model.layers[1].self_attn.register_forward_hook(lambda m, a, out: seen.append(out[0]))
    for i, row in enumerate(ids):  # one unpadded sequence at a time, read by a hook of the test's own
        with torch.no_grad():
            model(input_ids=torch.tensor([row]))
        torch.testing.assert_close(states[i], seen[-1][0, -1], rtol=1e-4, atol=1e-6)
    handle.remove()


def test_fit_routes_separable_states_and_leaves_the_circuit_the_identity():
    torch.manual_seed(0)
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(objectives=OBJECTIVES, rank=4, head_dim=4))
    site = next(iter(attachment.circuit.sites.values()))
    d = site.pathways.down.shape[1]
    centres = torch.randn(3, d) * 3
    targets = torch.arange(3).repeat_interleave(40)
    states = centres[targets] + torch.randn(len(targets), d)
    pathways = {k: v.clone() for k, v in site.pathways.state_dict().items()}
    report = fit_routing(attachment, {key: states for key in attachment.circuit.sites}, targets, steps=50, lr=0.01)
    result = next(iter(report.values()))
    assert result["accuracy_before"] < 0.6 and result["accuracy_after"] > 0.95
    for k, v in site.pathways.state_dict().items():  # the pathways are not touched: still U = 0
        assert torch.equal(v, pathways[k])
    out = site(states[:, None])
    torch.testing.assert_close(out.hidden, states[:, None])  # Delta = 0: the identity
    assert all(p.grad is None for p in site.parameters())


def test_warm_start_on_training_rows_routes_them_and_writes_its_record(smol_tokenizer):
    model = smol_vocab_llama(smol_tokenizer, seed=0, initializer_range=0.5)  # states of a trained model's scale
    attachment = attach(model, CircuitConfig(objectives=OBJECTIVES, layers=[1], rank=4, head_dim=4))
    openers = {"helpful": "Write a short poem about", "harmless": "Tell me how to steal", "honest": "Is it true that"}
    datasets = {o: TokenizedDataset([Example(id=f"{o}{i}", objective=o, prompt=f"{openers[o]} thing {i}",
                                             response="Sure.") for i in range(6)], smol_tokenizer, max_length=64)
                for o in OBJECTIVES}
    record = warm_start_routing(model, attachment, datasets, Collator(smol_tokenizer), n_prompts=4, steps=100,
                                lr=0.01)
    assert record["prompts"] == {o: 4 for o in OBJECTIVES}
    assert record["sites"]["1"]["accuracy_after"] == 1.0 > record["sites"]["1"]["accuracy_before"]
    json.dumps(record)  # the trainer writes it as JSON


def test_warm_start_fits_routed_rows_to_their_route_not_to_the_objective_they_are_listed_under(smol_tokenizer):
    model = smol_vocab_llama(smol_tokenizer, seed=0, initializer_range=0.5)
    attachment = attach(model, CircuitConfig(objectives=OBJECTIVES, layers=[1], rank=4, head_dim=4))
    openers = {"helpful": "Write a short poem about", "harmless": "Tell me how to steal", "honest": "Is it true that"}
    rows = {o: [Example(id=f"{o}{i}", objective=o, prompt=f"{openers[o]} thing {i}", response="Sure.")
                for i in range(6)] for o in OBJECTIVES}
    # harmless also lists benign requests (a source with route: helpful), every other row
    rows["harmless"] = [ex for i in range(6) for ex in (
        rows["harmless"][i], Example(id=f"b{i}", objective="harmless", prompt=f"{openers['helpful']} item {i}",
                                     response="Here it is.", meta={"route": "helpful"}))]
    datasets = {o: TokenizedDataset(exs, smol_tokenizer, max_length=64, objectives=OBJECTIVES)
                for o, exs in rows.items()}
    record = warm_start_routing(model, attachment, datasets, Collator(smol_tokenizer), n_prompts=4, steps=100,
                                lr=0.01)
    assert record["prompts"] == {"helpful": 6, "harmless": 2, "honest": 4}  # 2 of harmless's 4 are routed
    assert record["sites"]["1"]["accuracy_after"] == 1.0  # a benign request under harmless -> helpful


def test_trainer_runs_the_warm_start_once_and_not_on_resume(tmp_path):
    calls = []

    def warm_start():
        calls.append(1)
        return {"called": len(calls)}

    torch.manual_seed(0)
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(objectives=OBJECTIVES, rank=4, head_dim=4))
    cfg = TrainConfig(steps=4, lr=1e-2, warmup_steps=1, save_every=2, progress=False)
    Trainer(model, attachment, cfg, HandBuiltSteps(), tmp_path, warm_start=warm_start).train()
    assert calls == [1] and json.loads((tmp_path / WARM_START).read_text()) == {"called": 1}
    longer = TrainConfig(steps=6, lr=1e-2, warmup_steps=1, save_every=2, progress=False)
    Trainer(model, attachment, longer, HandBuiltSteps(), tmp_path, warm_start=warm_start).train()
    assert calls == [1]  # resumed from step 4: the checkpoint holds the fitted routing


def test_warm_start_keys_at_their_off_values_leave_the_fingerprint_as_before():
    off = settings({"train": {"lr": 0.1, "route_fit_prompts": 0, "route_fit_steps": 50, "route_fit_lr": 0.01}})
    assert off == {"train.lr": 0.1}  # a record written before the keys existed still matches
    on = settings({"train": {"lr": 0.1, "route_fit_prompts": 400, "route_fit_steps": 50, "route_fit_lr": 0.01}})
    assert on == {"train.lr": 0.1, "train.route_fit_prompts": 400}
    defaults = {"train": dataclasses.asdict(TrainConfig()), "data": {"benign": dataclasses.asdict(Source(path="x"))},
                "circuit": dataclasses.asdict(CircuitConfig())}
    for key, value in OFF_BY_DEFAULT.items():  # each off value is the key's default (the old behaviour)
        section, *rest = key.split(".")
        node = defaults[section]
        for part in rest:
            node = node[part]
        assert node == value, key
    for key, value in SOURCE_OFF_BY_DEFAULT.items():
        assert dataclasses.asdict(Source(path="x"))[key] == value, key
    sft = TrainConfig(route_fit_prompts=400, route_loss="per_token", route_decision_share=0.5,
                      lambda_off=0.1).for_sft_lora()
    assert (sft.route_fit_prompts, sft.route_decision_share, sft.lambda_off) == (0, 0.0, 0.0)  # no circuit
