"""Bad input: small malformed files written for the purpose; every error names the file and row."""
from __future__ import annotations

import json

import pytest

from negotiax.data import DataConfig, Source, load_alpaca, load_alpaca_eval, load_beavertails, load_beavertails_eval, load_pku_dpo, load_source, load_train_sets, load_truthfulqa


def _json(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _jsonl(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = {"instruction": "Say hi.", "input": "", "output": "Hi."}


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_alpaca(tmp_path / "nope.json")


def test_missing_field_names_file_and_row(tmp_path):
    path = _json(tmp_path, "a.json", [GOOD, GOOD, {"instruction": "x", "input": ""}])
    with pytest.raises(ValueError, match=r"a\.json row 3: missing field 'output'"):
        load_alpaca(path)


def test_wrong_type_names_file_and_row(tmp_path):
    path = _json(tmp_path, "a.json", [GOOD, {"instruction": "x", "input": "", "output": 42}])
    with pytest.raises(ValueError, match=r"a\.json row 2: field 'output' should be a string, got int"):
        load_alpaca(path)


def test_malformed_jsonl_line(tmp_path):
    path = _jsonl(tmp_path, "b.jsonl", [json.dumps(GOOD), '{"instruction": "broken', json.dumps(GOOD)])
    with pytest.raises(ValueError, match=r"b\.jsonl row 2: not valid JSON"):
        load_alpaca(path)


def test_skip_bad_rows_counts(tmp_path):
    path = _jsonl(tmp_path, "b.jsonl", [json.dumps(GOOD), '{"instruction": "broken', "[1, 2]",
                                        json.dumps({"instruction": "", "output": "x"}), json.dumps(GOOD)])
    stats: dict = {}
    examples = load_alpaca(path, skip_bad_rows=True, stats=stats)
    assert len(examples) == 2 and stats == {"rows": 5, "skipped_rows": 3}


def test_malformed_json_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('[{"instruction": "x",]')
    with pytest.raises(ValueError, match=r"c\.json: not valid JSON at line 1"):
        load_alpaca(path)
    path.write_text('"just a string"')
    with pytest.raises(ValueError, match=r"c\.json: expected a JSON list of objects, got str"):
        load_alpaca(path)


def test_empty_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"e\.json: the file has no rows"):
        load_alpaca(_json(tmp_path, "e.json", []))
    empty_csv = tmp_path / "e.csv"
    empty_csv.write_text("")
    with pytest.raises(ValueError, match=r"e\.csv: empty CSV file"):
        load_beavertails_eval(empty_csv)
    with pytest.raises(ValueError, match=r"all_bad\.json: no usable examples in 1 row\(s\) \(1 skipped"):
        load_alpaca(_json(tmp_path, "all_bad.json", [{"x": 1}]), skip_bad_rows=True)


def test_csv_missing_column_and_ragged_row(tmp_path):
    path = tmp_path / "tqa.csv"
    path.write_text("Type,Category,Question,Best Answer,Incorrect Answers\nA,B,Q?,Yes,No\n")
    with pytest.raises(ValueError, match=r"tqa\.csv: missing column\(s\) \['Correct Answers'\]"):
        load_truthfulqa(path)
    ragged = tmp_path / "bt.csv"
    ragged.write_text('prompt,category\n"How to x?",violence\n"How to y?",violence,extra\n')
    with pytest.raises(ValueError, match=r"bt\.csv row 2: has 3 cells, the header has 2"):
        load_beavertails_eval(ragged)


def test_truthfulqa_empty_answer_list(tmp_path):
    path = tmp_path / "tqa.csv"
    path.write_text("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                    "A,Health,Q1?,Yes,Yes; Sure,No,s\nA,Health,Q2?,Yes, ; ,No,s\n")
    with pytest.raises(ValueError, match=r"tqa\.csv row 2: field 'Correct Answers' has no answers"):
        load_truthfulqa(path)


def test_beavertails_bad_labels(tmp_path):
    row = {"prompt": "p", "response": "r", "category": {"violence": False}, "is_safe": True}
    path = _jsonl(tmp_path, "bt.jsonl", [json.dumps(row), json.dumps(dict(row, is_safe="maybe"))])
    with pytest.raises(ValueError, match=r"bt\.jsonl row 2: field 'is_safe' should be true or false"):
        load_beavertails(path)
    contradiction = dict(row, category={"violence": True})
    path = _jsonl(tmp_path, "bt2.jsonl", [json.dumps(contradiction)])
    with pytest.raises(ValueError, match=r"bt2\.jsonl row 1: is_safe is true but harm categories"):
        load_beavertails(path)


def test_beavertails_category_forms(tmp_path):
    rows = [{"prompt": "a", "response": "r", "category": "{'violence': True, 'privacy': False}", "is_safe": "False"},
            {"prompt": "b", "response": "r", "category": "privacy_violation", "is_safe": False},
            {"prompt": "c", "response": "r", "category": {"violence": False}, "is_safe": True}]
    examples = load_beavertails(_json(tmp_path, "bt.json", rows))
    assert [ex.meta["categories"] for ex in examples] == [["violence"], ["privacy_violation"], []]
    assert [ex.label for ex in examples] == [False, False, True]


def test_pku_dpo_wrong_shape(tmp_path):
    path = _json(tmp_path, "dpo.json", [{"prompt": "p", "response": ["only one"]}])
    with pytest.raises(ValueError, match=r"dpo\.json row 1: field 'response' should be a list of two strings"):
        load_pku_dpo(path)


def test_unknown_suffix_and_undetectable_format(tmp_path):
    odd = tmp_path / "data.txt"
    odd.write_text("hello")
    with pytest.raises(ValueError, match=r"data\.txt: unknown file type"):
        load_alpaca(odd)
    path = _json(tmp_path, "weird.json", [{"foo": 1}])
    with pytest.raises(ValueError, match=r"weird\.json: cannot tell the format from columns \['foo'\]"):
        load_source(Source(path=str(path)), "helpful", None)


def test_auto_format_detection(tmp_path):
    path = _json(tmp_path, "ae.json", [{"dataset": "oasst", "instruction": "Hi?", "output": "", "generator": "g"}])
    [ex] = load_source(Source(path=str(path)), "helpful", None)
    assert ex.reference == "" and ex.category == "oasst" and ex.response is None
    assert load_alpaca_eval(path)[0].id == ex.id


def test_unfindable_source_says_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = DataConfig(data_dir=str(tmp_path), objectives=["helpful"], drop_test_overlap=False,
                     train={"helpful": {"path": "alpaca/missing.json", "hub": "someone/alpaca"}})
    with pytest.raises(FileNotFoundError) as err:
        load_train_sets(cfg)
    message = str(err.value)
    assert str(tmp_path / "alpaca/missing.json") in message
    assert "hub dataset someone/alpaca (HF_HUB_OFFLINE is set)" in message
    assert "NEGOTIAX_DATA_DIR" in message


def test_optional_source_is_skipped_and_recorded(tmp_path):
    good = _json(tmp_path, "good.json", [GOOD])
    cfg = DataConfig(objectives=["helpful"], drop_test_overlap=False,
                     train={"helpful": [str(good), {"path": str(tmp_path / "gone.json"), "optional": True}]})
    sets = load_train_sets(cfg)
    assert len(sets["helpful"]) == 1
    assert sets.stats["helpful"]["files"][str(tmp_path / "gone.json")] == {"missing": True}


def test_unlabelled_beavertails_rows_are_not_trained_on(tmp_path):
    path = _jsonl(tmp_path, "bt.jsonl", [json.dumps({"prompt": "p", "response": "r", "category": "",
                                                     "is_safe": True}),
                                         json.dumps({"prompt": "q", "response": "r", "category": "violence"})])
    cfg = DataConfig(objectives=["harmless"], drop_test_overlap=False,
                     train={"harmless": {"path": str(path), "format": "beavertails"}})
    with pytest.raises(ValueError, match=r"bt\.jsonl: example bt-2 has no is_safe label"):
        load_train_sets(cfg)


def test_prompt_only_file_cannot_be_trained_on(tmp_path):
    path = tmp_path / "ev.csv"
    path.write_text("prompt,category\nHow to x?,violence\n")
    cfg = DataConfig(objectives=["harmless"], drop_test_overlap=False, train={"harmless": str(path)})
    with pytest.raises(ValueError, match=r"ev\.csv: example ev-1 has no response to train on"):
        load_train_sets(cfg)


def test_config_validation():
    with pytest.raises(ValueError, match="data.template"):
        DataConfig(template="llama")
    with pytest.raises(ValueError, match="data.harmless_test"):
        DataConfig(harmless_test="30k")
    with pytest.raises(ValueError, match="data.test_limit: unknown objective 'x'"):
        DataConfig(test_limit={"x": 5})
    with pytest.raises(ValueError, match="format='csvv' is not a known format"):
        DataConfig(train={"helpful": {"path": "a.json", "format": "csvv"}})
    with pytest.raises(ValueError, match=r"data.objectives: no training source for \['fun'\]"):
        DataConfig(objectives=["helpful", "fun"])
    with pytest.raises(ValueError, match="unknown key"):
        DataConfig(train={"helpful": {"file": "a.json"}})


def test_path_that_is_a_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"hub dataset PKU-Alignment/BeaverTails \(HF_HUB_OFFLINE is set\)"):
        load_source(Source(path="PKU-Alignment/BeaverTails", format="beavertails"), "harmless", None)
    with pytest.raises(FileNotFoundError, match=r"hub \(no hub id for this source\)"):
        load_source(Source(path="local/file.json"), "harmless", None)
