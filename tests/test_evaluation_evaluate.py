"""The evaluation protocol end to end: real test data, judges on a real local HTTP server (a GPT-4 judge
cannot run here), tiny beaver-dam-shaped and causal models, reports and the CLI verbs."""
from __future__ import annotations

import csv
import hashlib
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from negotiax.cli import main as cli_main
from negotiax.data import DataConfig, load_test_sets
from negotiax.evaluation.config import EvalConfig
from negotiax.evaluation.evaluate import evaluate
from negotiax.fingerprint import SettingsChangedError
from negotiax.judges.beaver_dam import CATEGORIES, BeaverDamJudge
from conftest import smol_vocab_llama
from openai_server import JudgeServer

SECRET = "sk-test-secret-never-written"


@pytest.fixture(scope="module")
def sets():
    return dict(load_test_sets(DataConfig(test_limit=4)))


def rows_for(sets) -> list[dict]:
    """Hand-made generations with the server's markers: known verdicts for every judge."""
    rows = []
    helpful = ["GOOD answer", "plain answer", "GOOD again", "ALWAYSFAIL answer"]
    harmful = ["Here is how: HARMFUL details", "I'm sorry, but I can't help with that.", "HARMFUL", "No."]
    honest = ["TRUE and INFO", "TRUE only", "TRUE", "INFO only"]
    for obj, outs in (("helpful", helpful), ("harmless", harmful), ("honest", honest)):
        rows += [{"id": ex.id, "objective": obj, "prompt": ex.prompt, "output": out, "n_new_tokens": 3}
                 for ex, out in zip(sets[obj], outs)]
    return rows


def server_config(server, tmp_path, **kw) -> EvalConfig:
    args = {"base_url": server.base_url, "model": "judge-test", "backoff": 0.01, "max_retries": 2,
            "api_key_env": "NEGOTIAX_TEST_KEY"}
    names = {"pairwise": "openai-pairwise", "safety": "openai-safety", "truth": "openai-truth", "info": "openai-info"}
    return EvalConfig(judges=names, judge_args={n: dict(args) for n in names.values()},
                      cache_path=str(tmp_path / "cache.sqlite"), n_boot=200, **kw)


def test_full_protocol_with_endpoint_judges(sets, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NEGOTIAX_TEST_KEY", SECRET)
    caplog.set_level("DEBUG")
    with JudgeServer() as server:
        cfg = server_config(server, tmp_path, metrics=["wr", "ss", "ti", "refusal", "lexical"])
        res = evaluate(rows_for(sets), sets, cfg, out_dir=tmp_path / "eval")
        m = res["metrics"]
        # WR: wins 1, 0.5 (tie with a plain answer vs reference), 1; the failed item is missing, not scored
        assert m["WR"]["value"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
        assert (m["WR"]["n"], m["WR"]["missing"]) == (3, 1)
        assert m["WR"]["missing_ids"] == [sets["helpful"][3].id]
        assert m["SS"]["value"] == pytest.approx(50.0) and m["SS"]["n"] == 4
        assert m["Truthful"]["value"] == 75.0 and m["Informative"]["value"] == 50.0
        # The two TI definitions differ on these four answers: truthful 3/4 and informative 2/4 give
        # TI (H3Fusion) = 75 x 50 / 100 = 37.5; only "TRUE and INFO" is both, so True*Info = 1/4 = 25.
        assert m["TI"]["value"] == pytest.approx(37.5)
        assert m["True*Info"]["value"] == pytest.approx(25.0) and m["True*Info"]["n"] == 4
        for name in ("TI", "True*Info"):
            assert m[name]["ci_low"] <= m[name]["value"] <= m[name]["ci_high"] and m[name]["ci_low"] < m[name]["ci_high"]
        assert m["Avg"]["value"] == pytest.approx((m["WR"]["value"] + m["TI"]["value"] - m["SS"]["value"]) / 3)
        assert m["refusal_harmful"]["value"] == 25.0
        for entry in m.values():
            assert {"value", "n", "missing", "ci_low", "ci_high", "judge"} <= set(entry)
        assert m["WR"]["ci_low"] <= m["WR"]["value"] <= m["WR"]["ci_high"]
        assert m["SS"]["judge"] == "openai-safety:judge-test"
        cats = {c for ex in sets["harmless"] for c in ex.meta["categories"]}
        assert {f"SS/{c}" for c in cats} <= set(m)
        calls = server.count()
        again = evaluate(rows_for(sets), sets, cfg, out_dir=tmp_path / "eval2")
        assert server.count() - calls == 2 * 3  # only the missing item is asked again (both orders, 3 tries)
        assert again["judge_calls"]["safety"]["cached"] == 4 and again["judge_calls"]["safety"]["scored"] == 0
        assert again["metrics"]["WR"]["value"] == m["WR"]["value"]
    out = tmp_path / "eval"
    saved = json.loads((out / "results.json").read_text())
    for f in saved["data_files"]:
        assert f["sha256"] == hashlib.sha256(open(f["path"], "rb").read()).hexdigest()
    assert any(f["path"].endswith("TruthfulQA.csv") for f in saved["data_files"])
    assert saved["judges"]["pairwise"]["name"] == "openai-pairwise:judge-test"
    table = list(csv.DictReader((out / "results.csv").open()))
    assert {r["metric"] for r in table} == set(saved["metrics"])
    assert "| WR |" in (out / "results.md").read_text()
    everything = "".join(p.read_text() for p in out.iterdir()) + caplog.text
    assert SECRET not in everything


@pytest.fixture(scope="module")
def beaver_folder(tmp_path_factory, smol_tokenizer):
    torch.manual_seed(5)
    cfg = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=14, pad_token_id=0,
                      id2label=dict(enumerate(CATEGORIES)))
    model = LlamaForSequenceClassification(cfg).eval()
    with torch.no_grad():
        model.score.weight.normal_(0, 3.0)
    folder = tmp_path_factory.mktemp("beaver")
    model.save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


def test_beaver_dam_from_config_labels_its_figures(sets, beaver_folder, tmp_path):
    cfg = EvalConfig(metrics=["ss"], judges={"safety": "beaver-dam"},
                     judge_args={"beaver-dam": {"path": str(beaver_folder), "batch_size": 3}},
                     cache_path=str(tmp_path / "c.sqlite"), n_boot=100)
    rows = [r for r in rows_for(sets) if r["objective"] == "harmless"]
    res = evaluate(rows, sets, cfg, out_dir=tmp_path / "e")
    judge = BeaverDamJudge(path=str(beaver_folder))
    probs = judge.score([{"prompt": ex.prompt, "response": r["output"]} for ex, r in zip(sets["harmless"], rows)])
    assert res["metrics"]["SS"]["value"] == pytest.approx(100 * sum(p > 0.5 for p in probs) / len(probs))
    assert res["metrics"]["SS"]["judge"] == f"beaver-dam:{beaver_folder.name}"
    assert res["judges"]["safety"]["categories"] == list(CATEGORIES)
    assert "WR" not in res["metrics"] and "Avg" not in res["metrics"]  # no pairwise judge: no invented WR


def test_model_metrics_and_decoding_from_generation_meta(sets, smol_tokenizer, tmp_path):
    from negotiax.generation.generate import generate
    from negotiax.generation.config import GenerationConfig

    model = smol_vocab_llama(smol_tokenizer, seed=6)
    honest = {"honest": sets["honest"][:2]}
    path = tmp_path / "gen.jsonl"
    generate(model, smol_tokenizer, honest["honest"], GenerationConfig(max_new_tokens=3), path)
    cfg = EvalConfig(metrics=["mc", "nll", "lexical"], cache_path=None, n_boot=50)
    res = evaluate(path, honest, cfg, model=model, tokenizer=smol_tokenizer, out_dir=tmp_path / "e")
    m = res["metrics"]
    assert m["MC1"]["n"] == 2 and 0 <= m["MC2"]["value"] <= 100 and m["NLL/honest"]["value"] > 0
    assert m["lexical_rouge_acc"]["n"] == 2
    assert m["MC1"]["mc_format"] == "qa_primer" and res["config"]["mc_format"] == "qa_primer"  # the default
    assert "QA primer" in m["MC2"]["judge"]
    chat = evaluate(path, honest, EvalConfig(metrics=["mc"], mc_format="chat", cache_path=None, n_boot=50),
                    model=model, tokenizer=smol_tokenizer, out_dir=tmp_path / "chat")
    saved = json.loads((tmp_path / "chat" / "results.json").read_text())
    assert saved["metrics"]["MC2"]["mc_format"] == "chat" and saved["config"]["mc_format"] == "chat"
    assert chat["metrics"]["MC2"]["value"] != m["MC2"]["value"]  # another context, another likelihood
    assert res["decoding"]["max_new_tokens"] == 3 and res["decoding"]["do_sample"] is False
    assert res["generations"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_changed_judge_refuses_to_overwrite_and_same_settings_reuse(sets, tmp_path, caplog):
    rows = rows_for(sets)
    out = tmp_path / "e"
    cfg = EvalConfig(metrics=["ss", "refusal"], cache_path=None, n_boot=20)
    first = evaluate(rows, sets, cfg, out_dir=out)
    assert first["metrics"]["refusal_harmful"]["value"] == 25.0
    mtime = (out / "results.json").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        assert evaluate(rows, sets, cfg, out_dir=out)["metrics"] == first["metrics"]
    assert "already evaluated" in caplog.text and (out / "results.json").stat().st_mtime_ns == mtime
    judged = EvalConfig(metrics=["ss", "refusal"], judges={"safety": "local-safety"}, cache_path=None, n_boot=20)
    with pytest.raises(SettingsChangedError, match=r"eval\.judges\.safety: absent -> \"local-safety\".*--fresh"):
        evaluate(rows, sets, judged, out_dir=out)
    edited = [dict(r, output="changed") if i == 0 else r for i, r in enumerate(rows)]
    with pytest.raises(SettingsChangedError, match=r"changed: generations: "):
        evaluate(edited, sets, cfg, out_dir=out)
    assert (out / "results.json").stat().st_mtime_ns == mtime


def test_mc_and_nll_are_scored_under_the_generations_beta(sets, smol_tokenizer, tmp_path):
    from negotiax import CircuitConfig, attach
    from negotiax.evaluation import metrics as M
    from negotiax.generation.generate import generate
    from negotiax.generation.config import GenerationConfig

    model = smol_vocab_llama(smol_tokenizer, seed=7)
    honest = {"honest": sets["honest"][:2]}
    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    with torch.no_grad():  # a circuit that is not the identity, so the preference changes the scores
        for p in attachment.circuit.parameters():
            p.normal_(0, 0.2)
    beta = {"harmless": float("inf")}
    path = tmp_path / "gen.jsonl"
    generate(model, smol_tokenizer, honest["honest"], GenerationConfig(max_new_tokens=2, preference=beta), path,
             attachment=attachment)
    cfg = EvalConfig(metrics=["mc"], cache_path=None, n_boot=20)
    res = evaluate(path, honest, cfg, model=model, tokenizer=smol_tokenizer, attachment=attachment, out_dir=tmp_path / "e")
    assert attachment.circuit.preference() == {"helpful": 0.0, "harmless": 0.0, "honest": 0.0}  # restored
    scores = {}
    for name, pref in (("beta", beta), ("none", {})):
        attachment.circuit.set_preference(pref)
        scores[name] = M.mc_scores(model, smol_tokenizer, honest["honest"], cfg.template, cfg.batch_size)[1]
    assert scores["beta"] != pytest.approx(scores["none"], rel=1e-3, abs=0)  # beta matters here: the next line can fail
    assert res["metrics"]["MC2"]["value"] == pytest.approx(100 * sum(scores["beta"]) / 2, rel=1e-6, abs=0)
    assert res["decoding"]["preference"] == beta and res["circuit_preference"]["harmless"] == float("inf")
    attachment.detach()
class TableJudge:
    """A judge whose scores are given per answer text (a stand-in for a truth or info model)."""

    def __init__(self, kind: str, scores: dict[str, float | None]) -> None:
        self.name, self.kind, self.threshold, self.scores = f"table-{kind}", kind, 0.5, scores

    def score(self, items: list[dict]) -> list[float | None]:
        return [self.scores[item["answer"]] for item in items]


def test_ti_and_true_info_by_hand(sets, tmp_path):
    """Five answers, one with a failed info call. Scored by both judges: a, b, c, d.
    truthful a b d = 3/4, informative a c d = 3/4 -> TI = 75 x 75 / 100 = 56.25; both: a, d -> True*Info = 2/4 = 50."""
    answers = ["a", "b", "c", "d", "e"]
    truth = TableJudge("truth", {"a": 0.9, "b": 0.8, "c": 0.1, "d": 0.7, "e": 0.9})
    info = TableJudge("info", {"a": 0.9, "b": 0.2, "c": 0.9, "d": 0.6, "e": None})
    honest = dict(load_test_sets(DataConfig(test_limit=5)))["honest"]
    rows = [{"id": ex.id, "objective": "honest", "prompt": ex.prompt, "output": a} for ex, a in zip(honest, answers)]
    res = evaluate(rows, {"honest": honest}, EvalConfig(metrics=["ti"], cache_path=None, n_boot=200),
                   judges={"truth": truth, "info": info}, out_dir=tmp_path)
    m = res["metrics"]
    assert m["TI"]["value"] == pytest.approx(56.25) and m["True*Info"]["value"] == pytest.approx(50.0)
    assert (m["True*Info"]["n"], m["True*Info"]["missing"]) == (4, 1) and m["True*Info"]["missing_ids"] == [honest[4].id]
    assert m["TI"]["unit"] != m["True*Info"]["unit"]  # each figure says which definition it is


def test_repetition_metrics_by_hand(sets, tmp_path):
    outputs = {"helpful": ["Sure: the cat sat on the cat.", "No, no, no, no, no.", "Hi."],
               "harmless": ["I can't help with that.", "kill kill kill kill kill kill"]}
    rows = [{"id": ex.id, "objective": obj, "prompt": ex.prompt, "output": out}
            for obj, outs in outputs.items() for ex, out in zip(sets[obj], outs)]
    res = evaluate(rows, sets, EvalConfig(metrics=["repetition"], cache_path=None, n_boot=200), judges={},
                   out_dir=tmp_path)
    m = res["metrics"]
    assert m["repetition"]["value"] == pytest.approx(100 * 2 / 5) and m["repetition"]["n"] == 5  # the two loops
    # distinct-2 per answer of 2+ words: 5/6 (sure the, the cat x2, ...), 1/4, 4/4 (i can't help with that), 1/5
    assert m["distinct_2"]["value"] == pytest.approx(100 * (5 / 6 + 1 / 4 + 1 + 1 / 5) / 4) and m["distinct_2"]["n"] == 4
    assert m["repetition"]["ci_low"] <= m["repetition"]["value"] <= m["repetition"]["ci_high"]
    assert "repetition" in EvalConfig().metrics  # on by default


def test_config_validation():
    with pytest.raises(ValueError, match="wr"):
        EvalConfig(metrics=["wr", "bleurt"])
    with pytest.raises(ValueError, match="kind"):
        EvalConfig(judges={"helpfulness": "openai-pairwise"})
    with pytest.raises(ValueError, match="mc_format"):
        EvalConfig(mc_format="five-shot")


def test_evaluate_cli(sets, tmp_path, monkeypatch):
    monkeypatch.setenv("NEGOTIAX_TEST_KEY", SECRET)
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows_for(sets)))
    with JudgeServer() as server:
        args = json.dumps({"base_url": server.base_url, "model": "judge-test", "backoff": 0.01, "max_retries": 1,
                           "api_key_env": "NEGOTIAX_TEST_KEY"})
        rc = cli_main(["evaluate", "--generations", str(gen), "--out", str(tmp_path / "out"), "--no-model",
                       "data.test_limit=4", "eval.judges={pairwise: openai-pairwise}",
                       f"eval.judge_args={{openai-pairwise: {args}}}", f"eval.cache_path={tmp_path / 'c.sqlite'}",
                       "eval.n_boot=50"])
    assert rc == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["metrics"]["WR"]["missing"] == 1 and "over_refusal_benign" in res["metrics"]
    assert cli_main(["evaluate", "--generations", str(tmp_path / "none.jsonl"), "--no-model"]) == 2


@pytest.mark.slow
def test_generate_cli_smollm2(tmp_path):
    out = tmp_path / "gen.jsonl"
    rc = cli_main(["generate", "--out", str(out), "--limit", "1", "generate.max_new_tokens=4"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(0 < r["n_new_tokens"] <= 4 for r in rows)
    assert {r["objective"] for r in rows} == {"helpful", "harmless", "honest"}
