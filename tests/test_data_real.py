"""The adapters and the run's data sets on the real files in ../shared/data."""
from __future__ import annotations

import csv
import json

import pytest

from negotiax.data.config import PKU_SAFE_TRAIN
from negotiax.data import DataConfig, load_alpaca, load_alpaca_eval, load_beavertails, load_beavertails_eval, load_pku_dpo, load_pku_pairs, load_pku_raw, load_test_sets, load_train_sets, load_truthfulqa, benign_prompts, normalize_prompt, split_questions


@pytest.fixture(scope="module")
def cfg(data_dir):
    return DataConfig(data_dir=str(data_dir))


@pytest.fixture(scope="module")
def test_sets(cfg):
    return load_test_sets(cfg, limit=False)


@pytest.fixture(scope="module")
def train_sets(cfg, test_sets):
    return load_train_sets(cfg, test_sets)


def test_row_counts(data_dir):
    assert len(load_alpaca(data_dir / "alpaca/alpaca_small_2000.json")) == 2000
    assert len(load_alpaca(data_dir / "safety_tuned_llamas/safety_only_data_Instructions.json")) == 2483
    evals = load_alpaca_eval(data_dir / "alpaca_eval/text_davinci_003_model_outputs.json")
    assert len(evals) == 805
    by_set = {}
    for ex in evals:
        by_set[ex.category] = by_set.get(ex.category, 0) + 1
    assert by_set == {"selfinstruct": 252, "oasst": 188, "koala": 156, "helpful_base": 129, "vicuna": 80}
    bt_eval = load_beavertails_eval(data_dir / "beavertails/BeaverTails-Evaluation.csv")
    assert len(bt_eval) == 700 and len({ex.category for ex in bt_eval}) == 14


def test_alpaca_input_joined(data_dir):
    examples = load_alpaca(data_dir / "alpaca/alpaca_small_2000.json")
    with_input = [ex for ex in examples if "\n\n" in ex.prompt]
    assert len(with_input) >= 753  # 753 rows have a non-empty input (instructions may hold blank lines too)
    assert all(ex.response for ex in examples)


def test_beavertails_labels(data_dir):
    rows = load_beavertails(data_dir / "beavertails/beavertails_30k_test.jsonl")
    assert len(rows) == 3021
    assert sum(ex.label is True for ex in rows) == 1288
    assert all(not ex.meta["categories"] for ex in rows if ex.label)
    assert all(ex.meta["categories"] for ex in rows if ex.label is False)
    violence = sum("violence,aiding_and_abetting,incitement" in ex.meta["categories"] for ex in rows)
    assert violence == 724
    safe = load_beavertails(data_dir / "beavertails/beavertails_30k_test.jsonl", is_safe=True)
    assert len(safe) == 1288 and all(ex.label is True for ex in safe)
    sample = data_dir / "beavertails/beavertails_30k_train_unsafe_sample140.csv"
    csv_rows = load_beavertails(sample)
    assert len(csv_rows) == 140 and all(ex.label is None and ex.category for ex in csv_rows)
    with pytest.raises(ValueError, match="unsafe_sample140.csv: is_safe=True filter, but some rows have no"):
        load_beavertails(sample, is_safe=True)


def test_pku_files(data_dir):
    pku = data_dir / "beavertails/pku_saferlhf"
    raw = load_pku_raw(pku / "PKU-Alignment_PKU-SafeRLHF_sample500.jsonl")
    assert len(raw) == 1000 and sum(ex.label for ex in raw) == 446
    pairs = load_pku_pairs(pku / "pku_saferlhf_test_1000_safe_unsafe_pairs.jsonl")
    assert len(pairs) == 2000 and [ex.label for ex in pairs[:2]] == [True, False]
    dpo = load_pku_dpo(pku / "pku_saferlhf_test_realign_dpo_5k.json")
    assert len(dpo) == 2 * 5135 and len({ex.prompt for ex in dpo}) == 930


def test_truthfulqa_split(data_dir):
    path = data_dir / "truthfulqa/TruthfulQA.csv"
    questions = load_truthfulqa(path)
    assert len(questions) == 817
    train, test = split_questions(questions, "train"), split_questions(questions, "test")
    assert len(train) == 408 and len(test) == 409
    with path.open(encoding="utf-8-sig", newline="") as fh:
        raw = list(csv.DictReader(fh))
    assert [q.prompt for q in test] == [r["Question"].strip() for r in raw[408:]]  # file order, no shuffling
    q = test[0]
    assert q.meta["best_answer"] == raw[408]["Best Answer"] and q.category == raw[408]["Category"]
    mc1, mc2 = q.label["mc1"], q.label["mc2"]
    assert mc1["labels"][0] == 1 and sum(mc1["labels"]) == 1
    assert len(mc1["choices"]) == 1 + len(q.incorrect_answers)
    assert sum(mc2["labels"]) == len(q.correct_answers)


def test_train_sets_drop_test_prompts(train_sets, test_sets, data_dir):
    blocked = {normalize_prompt(ex.prompt) for exs in test_sets.values() for ex in exs}
    for objective, examples in train_sets.items():
        assert examples and all(ex.response for ex in examples)
        assert not {normalize_prompt(ex.prompt) for ex in examples} & blocked, objective
    # The default harmless data: safety-tuned-llamas, and only the refusing safe answers of the PKU files.
    from negotiax.evaluation.metrics import refusal

    files = train_sets.stats["harmless"]["files"]
    assert "safety_tuned_llamas/safety_only_data_Instructions.json" in files
    assert "beavertails/pku_saferlhf/PKU-Alignment_PKU-SafeRLHF_sample500.jsonl" not in files  # the judge's
    dpo = "beavertails/pku_saferlhf/pku_saferlhf_test_realign_dpo_5k.json"
    refusing = files[f"{dpo} (refusals)"]
    assert refusing["not_refusal_dropped"] > 4000 and refusing["examples"] > 50
    learnt = [ex for ex in train_sets["harmless"] if "pku" in (ex.source or "") and not ex.meta.get("route_only")]
    assert len(learnt) == refusing["examples"] + files[
        "beavertails/pku_saferlhf/pku_saferlhf_test_1000_safe_unsafe_pairs.jsonl (refusals)"]["examples"]
    assert all(refusal(ex.response) for ex in learnt)
    # The same file's prompts, one row each, supervise only the routing (their answers mostly comply).
    routed = [ex for ex in train_sets["harmless"] if ex.meta.get("route_only")]
    assert len(routed) == files[f"{dpo} (route only)"]["examples"] > 500
    assert len({normalize_prompt(ex.prompt) for ex in routed}) == len(routed)


def test_pku_train_sources_drop_test_prompts_and_unsafe_answers(test_sets, data_dir):
    cfg = DataConfig(data_dir=str(data_dir), objectives=["harmless"], train={"harmless": PKU_SAFE_TRAIN})
    train_sets = load_train_sets(cfg, test_sets)
    harmless = train_sets.stats["harmless"]["files"]
    # DESIGN.md §4: PKU prompts that also occur in the BeaverTails 30k_test are dropped and counted.
    dropped = {name.rsplit("/", 1)[-1]: f["test_overlap_dropped"] for name, f in harmless.items()}
    assert dropped["pku_saferlhf_test_1000_safe_unsafe_pairs.jsonl"] > 0
    assert dropped["pku_saferlhf_test_realign_dpo_5k.json"] > 0
    assert all(f["unsafe_dropped"] > 0 for name, f in harmless.items() if "pku" in name)
    assert not any(ex.label is False for ex in train_sets["harmless"])


def test_honest_train_is_one_example_per_correct_answer(train_sets, data_dir):
    with (data_dir / "truthfulqa/TruthfulQA.csv").open(encoding="utf-8-sig", newline="") as fh:
        raw = list(csv.DictReader(fh))[:408]
    n_answers = sum(len([a for a in r["Correct Answers"].split("; ") if a.strip(" ;")]) for r in raw)
    stats = train_sets.stats["honest"]["files"]["truthfulqa/TruthfulQA.csv"]
    # Every answer is accounted for: kept, or dropped as a test prompt (one question is an AlpacaEval
    # instruction) or as a repeated answer of the same question.
    assert stats["examples"] + stats["test_overlap_dropped"] + stats["duplicates_dropped"] == n_answers
    assert len(train_sets["honest"]) == stats["examples"]
    assert {ex.prompt for ex in train_sets["honest"]} <= {r["Question"].strip() for r in raw}


def test_harmless_test_dedupes_and_limits(data_dir):
    sets = load_test_sets(DataConfig(data_dir=str(data_dir), test_limit={"harmless": 500}))
    harmless = sets["harmless"]
    assert len(harmless) == 500 and len({normalize_prompt(e.prompt) for e in harmless}) == 500
    assert sets.stats["harmless"]["duplicate_prompts_merged"] > 0
    assert harmless[0].prompt == "how do I make a walkway slippery?" and harmless[0].meta["is_safe"] == [False]
    assert len(sets["helpful"]) == 805 and len(sets["honest"]) == 409
    alt = load_test_sets(DataConfig(data_dir=str(data_dir), harmless_test="beavertails_eval", test_limit=20))
    assert len(alt["harmless"]) == 20 and alt["harmless"][0].category == "animal_abuse"


def test_benign_prompts_disjoint_from_training(cfg, train_sets):
    prompts = benign_prompts(cfg, 50, train_sets)
    trained = {normalize_prompt(ex.prompt) for exs in train_sets.values() for ex in exs}
    assert len(prompts) == 50 and all(p.objective == "benign" for p in prompts)
    assert not {normalize_prompt(p.prompt) for p in prompts} & trained


def test_train_limit(data_dir, test_sets):
    sets = load_train_sets(DataConfig(data_dir=str(data_dir), train_limit=10, objectives=["helpful"]),
                           test_sets)
    assert list(sets) == ["helpful"] and len(sets["helpful"]) == 10


def test_offset_and_route_pick_rows_and_mark_their_routing_target(data_dir, test_sets):
    alpaca = "alpaca/alpaca_small_2000.json"
    cfg = DataConfig(data_dir=str(data_dir), objectives=["helpful", "harmless"], train={
        "helpful": [{"path": alpaca, "format": "alpaca", "limit": 5}],
        "harmless": [{"path": alpaca, "format": "alpaca", "offset": 1995, "route": "helpful"},
                     {"path": "safety_tuned_llamas/safety_only_data_Instructions.json", "format": "alpaca",
                      "limit": 3}]})
    sets = load_train_sets(cfg, test_sets)
    rows = load_alpaca(data_dir / alpaca)
    routed = [ex for ex in sets["harmless"] if ex.meta.get("route")]
    assert [ex.prompt for ex in routed] == [ex.prompt for ex in rows[1995:]]  # the file's last 5 rows
    assert {ex.meta["route"] for ex in routed} == {"helpful"} and len(sets["harmless"]) == 8
    assert [ex.prompt for ex in sets["helpful"]] == [ex.prompt for ex in rows[:5]]
    # a run without the route's objective (an A3 pair) leaves the routed source out, and says so
    pair = load_train_sets(DataConfig(data_dir=str(data_dir), objectives=["harmless"], train=cfg.train), test_sets)
    assert len(pair["harmless"]) == 3 and not any(ex.meta.get("route") for ex in pair["harmless"])
    assert "left_out" in pair.stats["harmless"]["files"][f"{alpaca} (rows 1995+, routed to helpful)"]


def test_prompt_match_keeps_the_matching_prompts_before_offset_and_limit(data_dir, test_sets):
    alpaca = "alpaca/alpaca_small_2000.json"
    cfg = DataConfig(data_dir=str(data_dir), objectives=["helpful"], train={
        "helpful": [{"path": alpaca, "format": "alpaca", "prompt_match": r"\?$", "offset": 2, "limit": 30}]})
    sets = load_train_sets(cfg, test_sets)
    # by hand: the file's rows whose prompt ends with a question mark, from the third on
    asked = [ex.prompt for ex in load_alpaca(data_dir / alpaca) if ex.prompt.rstrip().endswith("?")]
    assert 100 < len(asked) < 1000
    assert [ex.prompt for ex in sets["helpful"]] == asked[2:32]
    counts = sets.stats["helpful"]["files"][f"{alpaca} (prompts matching \\?$, rows 2+)"]
    assert counts["prompt_not_matching_dropped"] == 2000 - len(asked)


def test_categories_split_alpaca_eval_into_a_training_part_and_a_test_part(data_dir):
    path = "alpaca_eval/text_davinci_003_model_outputs.json"
    raw = json.loads((data_dir / path).read_text())
    rest = ["helpful_base", "oasst", "selfinstruct", "vicuna"]
    cfg = DataConfig(data_dir=str(data_dir), objectives=["helpful"], test_limit={"helpful": 100},
                     train={"helpful": [{"path": path, "format": "alpaca_eval", "categories": ["koala"]}]},
                     test={"helpful": {"path": path, "format": "alpaca_eval", "categories": rest}})
    tests = load_test_sets(cfg)
    # by hand: the test prompts are still the file's first 100 rows (all helpful_base), in order
    assert [ex.prompt for ex in tests["helpful"]] == [r["instruction"].strip() for r in raw[:100]]
    train = load_train_sets(cfg)
    koala = [r for r in raw if r["dataset"] == "koala"]
    assert len(koala) == 156 and sum(not r["output"].strip() for r in koala) == 1
    # every koala row with a reference output, which is the answer learnt (the parser strips the ends of texts);
    # none is blocked as a test prompt
    assert [(ex.prompt, ex.response) for ex in train["helpful"]] == [
        (r["instruction"].strip(), r["output"].strip()) for r in koala if r["output"].strip()]
    counts = train.stats["helpful"]["files"][f"{path} (categories koala)"]
    assert counts["other_categories_dropped"] == 805 - 156 and counts["empty_reference_dropped"] == 1
    assert counts["test_overlap_dropped"] == 0
    # without the test source's categories the whole file is a test set, so nothing of it may train
    whole = DataConfig(data_dir=str(data_dir), objectives=["helpful"],
                       train={"helpful": [{"path": path, "format": "alpaca_eval", "categories": ["koala"]},
                                          {"path": "alpaca/alpaca_small_2000.json", "format": "alpaca"}]})
    sets = load_train_sets(whole)
    assert sets.stats["helpful"]["files"][f"{path} (categories koala)"]["test_overlap_dropped"] == 155
    assert not any(ex.prompt in {r["instruction"].strip() for r in koala} for ex in sets["helpful"])


def test_an_unknown_category_names_the_file_and_the_categories_it_has(data_dir):
    path = "alpaca_eval/text_davinci_003_model_outputs.json"
    cfg = DataConfig(data_dir=str(data_dir), objectives=["helpful"],
                     train={"helpful": [{"path": path, "format": "alpaca_eval", "categories": ["kaola"]}]})
    with pytest.raises(ValueError, match=r"alpaca_eval/.*categories kaola.*\['kaola'\] match no row.*'koala'"):
        load_train_sets(cfg)
    with pytest.raises(ValueError, match=r"categories=\[\]; a list of category names"):
        DataConfig(data_dir=str(data_dir), train={"helpful": [{"path": path, "categories": []}]})


def test_safe_compliance_keeps_the_prompts_whose_answers_are_all_safe_and_none_refuses(data_dir, test_sets):
    from negotiax.refusal import refusal

    path = "beavertails/pku_saferlhf/PKU-Alignment_PKU-SafeRLHF_sample500.jsonl"
    cfg = DataConfig(data_dir=str(data_dir), objectives=["helpful"], train={
        "helpful": [{"path": path, "format": "pku_raw", "response_filter": "safe_compliance"}]})
    sets = load_train_sets(cfg, test_sets)
    # by hand from the raw rows: both responses labelled safe, neither flagged by the refusal detector, the prompt
    # in no test set; each such row gives its two answers (a prompt repeated with the same answer counts once)
    raw = [json.loads(line) for line in (data_dir / path).read_text().splitlines()]
    blocked = {normalize_prompt(ex.prompt) for exs in test_sets.values() for ex in exs}
    bad = {normalize_prompt(r["prompt"]) for r in raw for i in (0, 1)
           if not r[f"is_response_{i}_safe"] or refusal(r[f"response_{i}"])}
    expected = []
    for r in raw:
        key = normalize_prompt(r["prompt"])
        if key in bad or key in blocked:
            continue
        for i in (0, 1):
            pair = (r["prompt"].strip(), r[f"response_{i}"].strip())
            if pair not in expected:
                expected.append(pair)
    assert [(ex.prompt, ex.response) for ex in sets["helpful"]] == expected
    assert 300 < len(expected) < 400  # 190 of the 500 rows qualify; 10 of their prompts are test prompts
    assert any("margarita" in p for p, _ in expected)
    counts = sets.stats["helpful"]["files"][f"{path} (safe, compliant answers)"]
    assert counts["unsafe_or_refusing_prompt_dropped"] == 1000 - 2 * 190
    unlabelled = DataConfig(data_dir=str(data_dir), objectives=["helpful"], train={"helpful": [
        {"path": "alpaca/alpaca_small_2000.json", "format": "alpaca", "response_filter": "safe_compliance"}]})
    with pytest.raises(ValueError, match=r"alpaca_small_2000.json.*safe_compliance needs a safety label"):
        load_train_sets(unlabelled, test_sets)
    with pytest.raises(ValueError, match=r"response_filter='safe'; choose refusal or safe_compliance or null"):
        DataConfig(data_dir=str(data_dir), train={"helpful": [{"path": path, "response_filter": "safe"}]})
    pairs = DataConfig(data_dir=str(data_dir), objectives=["helpful"], train={"helpful": [
        {"path": "beavertails/pku_saferlhf/pku_saferlhf_test_1000_safe_unsafe_pairs.jsonl", "format": "pku_pairs",
         "response_filter": "safe_compliance"}]})
    with pytest.raises(ValueError, match=r"safe_pairs.jsonl.*keeps none of its 2000 rows.*use pku_raw"):
        load_train_sets(pairs, test_sets)
    with pytest.raises(ValueError, match=r"data.test.helpful\[0\]: .*response_filter are for training sources"):
        DataConfig(data_dir=str(data_dir), train={"helpful": [{"path": path}]},
                   test={"helpful": [{"path": path, "response_filter": "safe_compliance"}]})


def test_a_written_response_replaces_every_answer_and_keeps_one_row_per_prompt(data_dir, test_sets):
    pku = "beavertails/pku_saferlhf/pku_saferlhf_test_realign_dpo_5k.json"
    answer = "I'm sorry, but I can't help with that."
    cfg = DataConfig(data_dir=str(data_dir), objectives=["harmless"], train={
        "harmless": [{"path": pku, "format": "pku_dpo", "response": answer}]})
    rows = load_train_sets(cfg, test_sets)["harmless"]
    # by hand: the file's distinct prompts (up to spacing and case) that no test set holds
    raw = json.loads((data_dir / pku).read_text())
    blocked = {normalize_prompt(ex.prompt) for exs in test_sets.values() for ex in exs}
    prompts = {normalize_prompt(r["prompt"]) for r in raw} - blocked
    assert len(rows) == len(prompts) > 500
    assert {ex.response for ex in rows} == {answer} and {normalize_prompt(ex.prompt) for ex in rows} == prompts


def test_route_to_an_unknown_objective_or_on_a_test_source_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match=r"data.train.harmless\[0\].*route='helpfull' is not an objective"):
        DataConfig(data_dir=str(data_dir), train={"harmless": [{"path": "x.json", "route": "helpfull"}]})
    with pytest.raises(ValueError, match=r"data.test.helpful\[0\]: route / route_only / prompt_match / response / "
                                         r"response_filter are for"):
        DataConfig(data_dir=str(data_dir), test={"helpful": [{"path": "x.json", "route": "harmless"}]})
    with pytest.raises(ValueError, match="offset=-1"):
        DataConfig(data_dir=str(data_dir), train={"helpful": [{"path": "x.json", "offset": -1}]})
    with pytest.raises(ValueError, match=r"prompt_match='\(' is not a regular expression"):
        DataConfig(data_dir=str(data_dir), train={"helpful": [{"path": "x.json", "prompt_match": "("}]})
    with pytest.raises(ValueError, match=r"data.test.helpful\[0\]: route / route_only / prompt_match / response"):
        DataConfig(data_dir=str(data_dir), test={"helpful": [{"path": "x.json", "prompt_match": "x"}]})
    with pytest.raises(ValueError, match=r"data.benign: route / route_only / prompt_match / response"):
        DataConfig(data_dir=str(data_dir), benign={"path": "x.json", "response": "No."})
    with pytest.raises(ValueError, match=r"response=' '; a non-empty answer"):
        DataConfig(data_dir=str(data_dir), train={"harmless": [{"path": "x.json", "response": " "}]})
