"""Local judges: data handling, features, the shipped heads, retraining, and the feature-model check."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from conftest import tiny_model
from negotiax.data.config import DEFAULT_TRAIN
from negotiax.judges.local import data as data
from negotiax.judges.base import JUDGES, make_judge
from negotiax.judges.local.judge import HEADS_DIR, LocalHead, LocalJudge, identity_mismatch
from negotiax.judges.local.features import FeatureCache, FeatureSpec, encode, extract, feature_model_identity
from negotiax.judges.local.train import JudgeTrainConfig, safety_splits, train_judge, truthfulqa_splits

KINDS = ("safety", "truth", "info")
ALL_ROWS = JudgeTrainConfig(n_train=None, n_val=None, n_test=None)


# The checks below read the data files with the standard library and normalise/hash texts by hand, so they do
# not rely on the loaders, the split function or the bookkeeping that they check.
def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _hash(text: str) -> str:
    return hashlib.sha256(_norm(text).encode()).hexdigest()[:16]


def _truthfulqa_halves(data_dir) -> tuple[list[str], list[str]]:
    """TruthfulQA.csv's questions in file order, cut as H3Fusion does: first 408 train, last 409 test."""
    with open(data_dir / "truthfulqa" / "TruthfulQA.csv", encoding="utf-8", newline="") as f:
        questions = [row["Question"] for row in csv.DictReader(f)]
    assert len(questions) == 817
    return questions[:408], questions[408:]


def _jsonl_prompts(path) -> list[str]:
    return [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _csv_prompts(path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return [row["prompt"] for row in csv.DictReader(f)]


def _graded_or_policy_safety_prompts(data_dir) -> dict[str, set[str]]:
    """Hashes of the prompts the safety judge must never train on: the harmless test sets and the policy's
    default harmless training files (safety_tuned_llamas, instruction alone and with its input; the two
    PKU-SafeRLHF preference files)."""
    tuned = json.loads((data_dir / "safety_tuned_llamas" / "safety_only_data_Instructions.json").read_text())
    pku = data_dir / "beavertails" / "pku_saferlhf"
    dpo = json.loads((pku / "pku_saferlhf_test_realign_dpo_5k.json").read_text())
    return {"beavertails_30k_test": {_hash(p) for p in _jsonl_prompts(data_dir / data.SAFETY_TEST_FILE)},
            "BeaverTails-Evaluation": {_hash(p) for p in
                                       _csv_prompts(data_dir / "beavertails" / "BeaverTails-Evaluation.csv")},
            "safety_tuned_llamas": {_hash(r["instruction"]) for r in tuned}
            | {_hash(f"{r['instruction']}\n\n{r['input']}") for r in tuned if r.get("input")},
            "pku_realign_dpo_5k": {_hash(r["prompt"]) for r in dpo},
            "pku_1000_pairs": {_hash(p) for p in
                               _jsonl_prompts(pku / "pku_saferlhf_test_1000_safe_unsafe_pairs.jsonl")}}


def _safety_training_file_prompts(data_dir) -> set[str]:
    """Hashes of the prompts of the safety judge's own training files."""
    prompts = _jsonl_prompts(data_dir / "beavertails" / "pku_saferlhf" / "PKU-Alignment_PKU-SafeRLHF_sample500.jsonl")
    prompts += _csv_prompts(data_dir / "beavertails" / "beavertails_30k_train_unsafe_sample140.csv")
    return {_hash(p) for p in prompts}


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


def test_truthfulqa_splits_use_the_h3fusion_halves(data_dir):
    splits, facts = truthfulqa_splits(data_dir, "truth", ALL_ROWS)
    assert facts["rows_read"] == 22434
    train_half, test_half = _truthfulqa_halves(data_dir)
    fitted = {_norm(r["context"]) for part in ("train", "val") for r in splits[part]}
    graded = {_norm(r["context"]) for r in splits["test"]}
    assert fitted <= {_norm(q) for q in train_half} and len(fitted) > 400  # 407: one has no judge rows
    assert graded == {_norm(q) for q in test_half}  # every test-half question, all its labelled answers
    assert not {r["group"] for r in splits["train"]} & {r["group"] for r in splits["val"]}
    assert facts["questions"]["test"] == 409


def test_safety_training_drops_graded_and_policy_prompts(data_dir):
    splits, facts = safety_splits(data_dir, ALL_ROWS)
    assert len(splits["test"]) == 3021
    fitted = {_hash(r["context"]) for part in ("train", "val") for r in splits[part]}
    for name, prompts in _graded_or_policy_safety_prompts(data_dir).items():
        assert not fitted & prompts, name
    assert not {r["group"] for r in splits["train"]} & {r["group"] for r in splits["val"]}
    own, blocked = _safety_training_file_prompts(data_dir), _graded_or_policy_safety_prompts(data_dir)
    in_test = own & blocked["beavertails_30k_test"]
    assert facts["removed_for_overlap_prompts"][data.SAFETY_TEST_FILE] == len(in_test) > 0
    for key, name in (("pku_realign_dpo_5k", "pku_saferlhf_test_realign_dpo_5k.json"),
                      ("pku_1000_pairs", "pku_saferlhf_test_1000_safe_unsafe_pairs.jsonl")):
        assert facts["removed_for_overlap_prompts"][f"beavertails/pku_saferlhf/{name}"] == len(own & blocked[key]) > 0
    assert len(fitted) == len(own - set().union(*blocked.values()))  # everything else is kept


def test_safety_blocked_files_follow_the_policy_defaults():
    """Every file the policy trains on by default blocks its prompts, whatever DEFAULT_TRAIN lists."""
    policy = {s["path"] for sources in DEFAULT_TRAIN.values() for s in sources if s.get("path")}
    assert "beavertails/pku_saferlhf/pku_saferlhf_test_realign_dpo_5k.json" in policy  # the issue 11 defaults
    assert policy <= set(data.SAFETY_BLOCKED_FILES)
    assert {data.SAFETY_TEST_FILE, "beavertails/BeaverTails-Evaluation.csv"} <= set(data.SAFETY_BLOCKED_FILES)
    assert not policy & set(data.SAFETY_TRAIN_FILES)


@pytest.mark.parametrize("kind", ("truth", "info"))
def test_shipped_truthfulqa_heads_never_trained_on_a_graded_question(kind, data_dir):
    """The leak of issue 11: the heads were fitted on about 70% of the test-half questions they grade."""
    card = json.loads((HEADS_DIR / f"local-{kind}.json").read_text())
    trained = set(card["training"]["trained_question_sha256_16"])
    train_half, test_half = _truthfulqa_halves(data_dir)
    assert not trained & {_hash(q) for q in test_half}
    assert trained <= {_hash(q) for q in train_half} and len(trained) > 100
    assert card["metrics"]["test"]["n"] == card["training"]["n_test"] > 1000


def test_shipped_safety_head_never_trained_on_graded_or_policy_prompts(data_dir):
    card = json.loads((HEADS_DIR / "local-safety.json").read_text())
    trained = set(card["training"]["trained_prompt_sha256_16"])
    assert trained and trained <= _safety_training_file_prompts(data_dir)  # the hashes name real training prompts
    for name, prompts in _graded_or_policy_safety_prompts(data_dir).items():
        assert not trained & prompts, f"the safety head trained on {len(trained & prompts)} prompts of {name}"
    assert card["metrics"]["test"]["n"] == 3021


def test_safety_head_files_are_not_policy_training_files():
    card = json.loads((HEADS_DIR / "local-safety.json").read_text())
    policy = {s["path"] for sources in DEFAULT_TRAIN.values() for s in sources if s.get("path")}
    assert not policy & {f["path"] for f in card["training"]["files"]}


@pytest.mark.parametrize("kind", ("truth", "info"))
def test_shipped_card_lists_what_the_split_fits_on(kind, data_dir):
    """The card's list is the real one: rebuilding the split from its config gives the same questions."""
    card = json.loads((HEADS_DIR / f"local-{kind}.json").read_text())
    cfg = JudgeTrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in card["training"]["config"].items()})
    splits, _ = truthfulqa_splits(data_dir, kind, cfg)
    fitted = {_hash(r["context"]) for part in ("train", "val") for r in splits[part]}
    assert fitted == set(card["training"]["trained_question_sha256_16"])


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
    cfg = JudgeTrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    test = truthfulqa_splits(data_dir, kind, cfg)[0]["test"]
    picked = [test[i] for i in s["test_split_positions"]]
    return [{"question": r["context"], "answer": r["answer"]} for r in picked], np.array([r["label"] for r in picked])


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_shipped_head_reproduces_card_slice(kind, data_dir, smollm2):
    from negotiax.judges.local.train import binary_metrics

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
    from negotiax.judges.local.card import write_model_card

    model, tokenizer = smollm2
    cfg = JudgeTrainConfig(n_train=40, n_val=16, n_test=24, layers=(2, 3), poolings=("mean", "last"), cs=(0.1,),
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
