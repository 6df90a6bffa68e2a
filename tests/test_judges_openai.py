"""OpenAI-compatible judges against a real HTTP server on 127.0.0.1 (tests/openai_server.py).

A GPT-4 or 7B judge cannot run here, so the server answers by transparent rules; everything else
(the official openai client, HTTP, concurrency, retries, the SQLite cache) is the real code path.
"""
from __future__ import annotations

import pytest

from negotiax.judges.cache import CachedJudge, JudgeCache
from negotiax.judges.openai_judges import OpenAIInfoJudge, OpenAIPairwiseJudge, OpenAISafetyJudge, OpenAITruthJudge, parse_choice, yes_probability
from openai_server import JudgeServer


def judge(cls, server, **kw):
    return cls(base_url=server.base_url, model="judge-test", backoff=0.01, max_retries=3, concurrency=4, **kw)


def pair(output, reference, instruction="Say something."):
    return {"instruction": instruction, "output": output, "reference": reference}


def test_both_orders_cancel_position_bias():
    with JudgeServer(prefer="a") as server:  # always answers (a): a maximally position-biased judge
        scores = judge(OpenAIPairwiseJudge, server).score([pair("GOOD x", "y"), pair("x", "GOOD y")])
        assert scores == [0.5, 0.5]
        texts = [b["messages"][-1]["content"] for _, b in server.requests]
        assert len(texts) == 4
        for output in ("GOOD x", "\nx\n"):  # each output was shown once as (a) and once as (b)
            slot_a = sum(output.strip() == t.split("# Output (a)\n")[1].split("\n")[0] for t in texts)
            slot_b = sum(output.strip() == t.split("# Output (b)\n")[1].split("\n")[0] for t in texts)
            assert (slot_a, slot_b) == (1, 1)


def test_pairwise_wins_losses_ties():
    with JudgeServer(prefer="good") as server:
        scores = judge(OpenAIPairwiseJudge, server).score(
            [pair("GOOD answer", "meh"), pair("meh", "GOOD ref"), pair("GOOD", "GOOD"), pair("a", "b")])
        assert scores == [1.0, 0.0, 0.5, 0.5]
        outputs_first = sum("# Output (a)\nGOOD answer" in b["messages"][-1]["content"] for _, b in server.requests)
        outputs_second = sum("# Output (b)\nGOOD answer" in b["messages"][-1]["content"] for _, b in server.requests)
        assert (outputs_first, outputs_second) == (1, 1)


def test_cache_second_run_makes_zero_requests(tmp_path):
    items = [pair("GOOD one", "x"), pair("two", "GOOD y"), pair("three", "z")]
    with JudgeServer() as server:
        first = CachedJudge(judge(OpenAIPairwiseJudge, server), JudgeCache(tmp_path / "cache.sqlite")).score(items)
        assert server.count() == 6
        again = CachedJudge(judge(OpenAIPairwiseJudge, server), JudgeCache(tmp_path / "cache.sqlite"))
        assert again.score(items) == first
        assert server.count() == 6  # zero new requests
        assert again.stats.cached == 3 and again.stats.scored == 0
        other_model = CachedJudge(OpenAIPairwiseJudge(base_url=server.base_url, model="another", backoff=0.01),
                                  JudgeCache(tmp_path / "cache.sqlite"))
        other_model.score(items[:1])
        assert server.count() == 8  # the cache is keyed by judge identity too


@pytest.mark.parametrize("marker", ["FAIL429x2", "FAIL500x2"])
def test_retries_on_429_and_500(marker):
    with JudgeServer() as server:
        scores = judge(OpenAIPairwiseJudge, server).score([pair("GOOD", "x", instruction=f"task {marker}")])
        assert scores == [1.0]
        assert server.count() == 6  # per order: two injected failures, then success


def test_persistent_failure_is_missing_not_scored(tmp_path):
    items = [pair("GOOD", "x"), pair("x", "y", instruction="ALWAYSFAIL"), pair("x", "GOOD")]
    with JudgeServer() as server:
        cached = CachedJudge(judge(OpenAIPairwiseJudge, server), JudgeCache(tmp_path / "c.sqlite"))
        scores = cached.score(items)
        assert scores == [1.0, None, 0.0]
        assert cached.stats.missing == 1
        assert server.count() == 2 + 2 * 4 + 2  # 1 try + 3 retries per order for the failing item
        before = server.count()
        assert cached.score(items) == [1.0, None, 0.0]
        assert server.count() - before == 8  # a missing annotation is not cached: retried next run


def test_safety_truth_info_judges():
    with JudgeServer() as server:
        ss = judge(OpenAISafetyJudge, server).score([{"prompt": "p", "response": "HARMFUL stuff"},
                                                     {"prompt": "p", "response": "fine FAIL500x1"}])
        assert ss == pytest.approx([0.9, 0.1])
        truth = judge(OpenAITruthJudge, server).score([{"question": "q", "answer": "TRUE"}, {"question": "q", "answer": "x"}])
        info = judge(OpenAIInfoJudge, server).score([{"question": "q", "answer": "INFO"}])
        assert truth == pytest.approx([0.8, 0.2]) and info == pytest.approx([0.8])
        prompts = {b["prompt"] for p, b in server.requests if p.endswith("/v1/completions")}
        assert prompts == {"Q: q\nA: TRUE\nTrue:", "Q: q\nA: x\nTrue:", "Q: q\nA: INFO\nHelpful:"}


def test_key_stays_out_of_identity(monkeypatch):
    monkeypatch.setenv("NEGOTIAX_TEST_KEY", "sk-very-secret")
    with JudgeServer() as server:
        j = judge(OpenAIPairwiseJudge, server, api_key_env="NEGOTIAX_TEST_KEY")
        assert "sk-very-secret" not in j.identity + j.name + str(j.info()) + str(vars(j).keys())


def test_missing_key_without_base_url_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        OpenAIPairwiseJudge(api_key_env="NO_SUCH_KEY_VAR")


def test_parsers():
    assert [parse_choice(t) for t in ["(a)", "b", "Output (b) is better", " Tie."]] == ["a", "b", "b", "tie"]
    with pytest.raises(ValueError):
        parse_choice("I cannot decide")
    assert yes_probability({" yes": 0.0, " no": float("-inf")}) == 1.0
    assert yes_probability({"maybe": 0.0}) is None
