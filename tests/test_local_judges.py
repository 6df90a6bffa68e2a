"""Local judges: data handling, features, the shipped heads, retraining, and the feature-model check."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_model
from negotiax.judges import local_data as data
from negotiax.judges.base import JUDGES, make_judge
from negotiax.judges.local import HEADS_DIR, LocalHead, LocalJudge, identity_mismatch
from negotiax.judges.local_features import FeatureCache, FeatureSpec, encode, extract, feature_model_identity
from negotiax.judges.local_train import TrainConfig, train_judge, truthfulqa_splits

KINDS = ("safety", "truth", "info")


def test_judges_are_registered():
    assert {"local-safety", "local-truth", "local-info"} <= set(JUDGES)


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_heads_are_small_and_carded(kind):
    for suffix in (".safetensors", ".json", ".md"):
        path = HEADS_DIR / f"local-{kind}{suffix}"
        assert path.is_file() and path.stat().st_size < 1_000_000, path
    head = LocalHead.load(HEADS_DIR / f"local-{kind}")
    card = head.card
    assert card["kind"] == kind and card["name"].startswith(f"local-{kind}:")
    assert head.weight.shape == head.mean.shape == (card["feature_model"]["hidden_size"],)
    assert 0 < card["threshold"] < 1
    assert len(card["slice"]["scores"]) == len(card["slice"]["test_split_positions"]) > 0


def test_spec_rejects_bad_options():
    with pytest.raises(ValueError, match="template"):
        FeatureSpec(template="nope")
    with pytest.raises(ValueError, match="max_context_tokens"):
        FeatureSpec(max_tokens=32, max_context_tokens=32)
    with pytest.raises(ValueError, match="poolings"):
        FeatureSpec(poolings=("max",))


def test_encode_keeps_context_end_and_answer_start(smol_tokenizer):
    spec = FeatureSpec(template="safety", max_tokens=24, max_context_tokens=8)
    context = "word " * 50 + "FINAL QUESTION"
    answer = "FIRST ANSWER " + "filler " * 50
    ids, start = encode(smol_tokenizer, spec, context, answer)
    assert len(ids) == 24 and start == 8
    text = smol_tokenizer.decode(ids)
    assert "QUESTION" in smol_tokenizer.decode(ids[:start]) and "FIRST ANSWER" in text
    assert "Assistant:" in text


def test_split_by_question_keeps_questions_apart(data_dir):
    rows, stats = data.load_truthfulqa_judge(data_dir, "truth")
    assert stats["rows_read"] == 22434 and len(rows) == stats["distinct_texts"] - stats["conflicting_labels_dropped"]
    train, val, test = data.split_groups(rows, (0.7, 0.1, 0.2), seed=0)
    groups = [{r["group"] for r in part} for part in (train, val, test)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert sum(len(g) for g in groups) == 817 and 150 < len(groups[2]) < 180


def test_safety_training_drops_test_prompts(data_dir):
    cfg = TrainConfig(n_train=None, n_val=None, n_test=None)
    from negotiax.judges.local_train import safety_splits

    splits, facts = safety_splits(data_dir, cfg)
    test_prompts = {r["group"] for r in splits["test"]}
    assert len(splits["test"]) == 3021
    assert not test_prompts & {r["group"] for r in splits["train"] + splits["val"]}
    assert sum(facts["removed_for_overlap_with_test_rows"].values()) > 0


def test_parse_qa_names_the_row():
    with pytest.raises(ValueError, match="file.jsonl:3"):
        data.parse_qa("Question without the format", "file.jsonl:3")
    assert data.parse_qa("Q: Is it?\nA: Yes.\nTrue:", "x") == ("Is it?", "Yes.")


def test_subsample_picks_the_same_texts_from_overlapping_lists():
    rows = [{"context": f"q{i}", "answer": "a", "label": 0} for i in range(100)]
    a = data.subsample(rows, 20, seed=0)
    b = data.subsample(rows[:50] + rows[51:], 20, seed=0)  # one text missing, as after a conflict drop
    assert len(a) == 20 and len({r["context"] for r in a} & {r["context"] for r in b}) >= 19


def test_feature_cache_roundtrip(tmp_path):
    spec = FeatureSpec(layers=(1,), poolings=("mean",))
    cache = FeatureCache(tmp_path, {"name": "x"}, spec)
    pairs = [("p1", "r1"), ("p2", "r2")]
    feats = np.arange(2 * 4, dtype=np.float32).reshape(2, 1, 1, 4)
    cache.put(pairs, feats)
    again = FeatureCache(tmp_path, {"name": "x"}, spec)  # a fresh object reads the shards from disk
    got, missing = again.get([("p2", "r2"), ("p3", "r3")])
    assert missing == [1] and np.allclose(got[0], feats[1])
    other = FeatureCache(tmp_path, {"name": "y"}, spec)  # another feature model never sees these
    assert other.get(pairs)[1] == [0, 1]


def test_judge_refuses_a_different_feature_model(smol_tokenizer):
    with pytest.raises(ValueError, match="hidden_size"):
        make_judge("local-safety", model=tiny_model("llama"), tokenizer=smol_tokenizer)


def test_judge_refuses_a_changed_config(smol_tokenizer):
    model = tiny_model("llama")
    head = LocalHead.load(HEADS_DIR / "local-truth")
    identity = feature_model_identity(model, smol_tokenizer)
    head.card = {**head.card, "feature_model": {**identity, "load_name": "unused"}}
    head.weight, head.mean, head.std = np.zeros(32), np.zeros(32), np.ones(32)
    assert LocalJudge("truth", head=head, model=model, tokenizer=smol_tokenizer).name.startswith(head.card["name"])
    model.config.rope_theta = 1234.0  # same sizes, different model: still refused
    assert identity_mismatch(identity, feature_model_identity(model, smol_tokenizer)) != []
    with pytest.raises(ValueError, match="config_sha256"):
        LocalJudge("truth", head=head, model=model, tokenizer=smol_tokenizer)


@pytest.mark.slow
def test_pooling_ignores_padding(smollm2):
    model, tokenizer = smollm2
    spec = FeatureSpec(template="qa", max_tokens=64, max_context_tokens=32, layers=(2, 4))
    short = ("Why?", "Because.")
    long = ("What happens if you swallow gum? " * 3, "It passes through your digestive system in days.")
    alone = extract(model, tokenizer, spec, [short], progress=False)
    batched = extract(model, tokenizer, spec, [long, short], batch_size=2, progress=False)
    assert np.allclose(alone[0], batched[1], atol=1e-4)
    assert not np.allclose(batched[0], batched[1], atol=1e-2)


def _slice_items(kind: str, card: dict, data_dir) -> tuple[list[dict], np.ndarray]:
    s = card["slice"]
    if kind == "safety":
        rows = data.load_safety_test(data_dir)
        picked = [rows[i] for i in s["test_file_rows"]]
        return [{"prompt": r["context"], "response": r["answer"]} for r in picked], np.array([r["label"] for r in picked])
    cfg = card["training"]["config"]
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    test = truthfulqa_splits(data_dir, kind, cfg)[0]["test"]
    picked = [test[i] for i in s["test_split_positions"]]
    return [{"question": r["context"], "answer": r["answer"]} for r in picked], np.array([r["label"] for r in picked])


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_shipped_head_reproduces_card_slice(kind, data_dir, smollm2):
    from negotiax.judges.local_train import binary_metrics

    model, tokenizer = smollm2
    judge = make_judge(f"local-{kind}", model=model, tokenizer=tokenizer)
    assert judge.kind == kind and judge.name.startswith(f"local-{kind}:")
    items, labels = _slice_items(kind, judge.head.card, data_dir)
    scores = np.array(judge.score(items))
    recorded = judge.head.card["slice"]
    assert np.abs(scores - np.array(recorded["scores"])).max() < 0.02
    measured = binary_metrics(labels, scores, judge.threshold)
    assert abs(measured["accuracy"] - recorded["metrics"]["accuracy"]) <= 2 / len(labels)
    assert abs(measured["auroc"] - recorded["metrics"]["auroc"]) < 0.02
    assert measured["auroc"] > 0.65  # the head agrees with the human labels well above chance


@pytest.mark.slow
def test_retrain_on_a_tiny_slice(data_dir, smollm2, tmp_path):
    from negotiax.judges.local_card import write_model_card

    model, tokenizer = smollm2
    cfg = TrainConfig(n_train=40, n_val=16, n_test=24, layers=(2, 3), poolings=("mean", "last"), cs=(0.1,),
                      cache_dir=str(tmp_path / "cache"), slice_size=8, max_tokens=48, max_context_tokens=16)
    card = train_judge("safety", data_dir, tmp_path, model, tokenizer, cfg)
    assert card["training"]["n_train"] == 40 and card["features"]["layer"] in (2, 3)
    assert len(card["selection"]["candidates"]) == 4
    assert 0 <= card["metrics"]["test"]["accuracy"] <= 1
    assert set(card["metrics"]["per_category_test"]) == set(data.load_safety_test(data_dir)[0]["category"])
    assert "sexually_explicit,adult_content" in write_model_card(card, tmp_path / "x.md").read_text()
    written = json.loads((tmp_path / "local-safety.json").read_text())
    judge = LocalJudge("safety", head=tmp_path / "local-safety", model=model, tokenizer=tokenizer)
    assert judge.name == f"{written['name']}#{judge.head.digest()}"
    items, _ = _slice_items("safety", written, data_dir)
    assert np.allclose(judge.score(items), written["slice"]["scores"], atol=0.02)
    with pytest.raises(ValueError, match="item 1"):
        judge.score([items[0], {"prompt": "only a prompt"}])
