"""Stage fingerprints: canonical values, named changes, records, and --fresh renaming (never deleting)."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from negotiax import fingerprint as fp


def test_flatten_and_settings_drop_only_neutral_keys():
    recipe = {"name": "quick", "output_dir": "runs/x", "seed": 0,
              "train": {"lr": 0.003, "log_every": 5, "save_every": 10, "keep_last": 2, "report_to": [],
                        "progress": True, "adam_betas": [0.9, 0.999]},
              "eval": {"judges": {"safety": "local-safety"}, "cache_path": "~/c.sqlite", "judge_args": {}}}
    assert fp.settings(recipe) == {"seed": 0, "train.lr": 0.003, "train.adam_betas": [0.9, 0.999],
                                   "eval.judges.safety": "local-safety", "eval.judge_args": {}}
    assert fp.settings(recipe, ["train"]) == {"train.lr": 0.003, "train.adam_betas": [0.9, 0.999]}


def test_fingerprint_is_sha256_of_canonical_json():
    values = {"b": (1, 2), "a": {"y": float("inf"), "x": "é"}}
    text = '{"a":{"x":"é","y":Infinity},"b":[1,2]}'
    assert fp.canonical(values) == text
    assert fp.fingerprint(values) == hashlib.sha256(text.encode()).hexdigest()
    assert fp.fingerprint({"a": {"x": "é", "y": float("inf")}, "b": [1, 2]}) == fp.fingerprint(values)


def test_changes_name_each_key_old_and_new():
    old = {"train.lr": 0.003, "train.steps": 50, "circuit.rank": 16}
    new = {"train.lr": 0.01, "train.steps": 50, "data.batch_size": 4}
    assert fp.changes(old, new) == ["circuit.rank: 16 -> absent", "data.batch_size: absent -> 4",
                                    "train.lr: 0.003 -> 0.01"]


def test_check_reuses_same_settings_and_refuses_other_ones(tmp_path):
    record = tmp_path / "record.json"
    assert fp.check(record, "training", {"train.lr": 0.003}, outputs_exist=False) is False
    with pytest.raises(fp.SettingsChangedError, match="no record of the settings"):
        fp.check(record, "training", {"train.lr": 0.003}, outputs_exist=True)  # outputs of unknown origin
    fp.write_record(record, "training", {"train.lr": 0.003})
    assert json.loads(record.read_text())["values"] == {"train.lr": 0.003}
    assert fp.check(record, "training", {"train.lr": 0.003}, outputs_exist=True) is True
    with pytest.raises(fp.SettingsChangedError, match=r"changed: train\.lr: 0\.003 -> 0\.01\..*--fresh"):
        fp.check(record, "training", {"train.lr": 0.01}, outputs_exist=True)
    assert fp.check(record, "training", {"train.lr": 0.01}, outputs_exist=False) is False  # nothing to protect


def test_set_aside_renames_and_never_deletes(tmp_path):
    run = tmp_path / "run"
    assert fp.set_aside(run) is None
    for content in ("first", "second"):
        run.mkdir()
        (run / "file.txt").write_text(content)
        moved = fp.set_aside(run)
        assert moved.name.startswith("run.old-") and (moved / "file.txt").read_text() == content
        assert not run.exists()
    assert sorted((p / "file.txt").read_text() for p in tmp_path.glob("run.old-*")) == ["first", "second"]


def test_tensors_checksum_sees_one_changed_element():
    a = {"w": torch.zeros(3, 2), "b": torch.ones(2, dtype=torch.bfloat16)}
    b = {"w": torch.zeros(3, 2), "b": torch.ones(2, dtype=torch.bfloat16)}
    assert fp.tensors_checksum(a) == fp.tensors_checksum(b)
    b["w"][2, 1] = 1e-6
    assert fp.tensors_checksum(a) != fp.tensors_checksum(b)
    assert fp.tensors_checksum({}) is None


def test_data_source_fields_added_later_leave_an_old_record_matching_at_their_defaults():
    old = {"data": {"train": {"harmless": [{"path": "a.json", "limit": None}]}, "benign": {"path": "b.json"}}}
    new = {"data": {"train": {"harmless": [{"path": "a.json", "limit": None, "offset": 0, "route": None,
                                            "prompt_match": None, "categories": None}]},
                    "benign": {"path": "b.json", "offset": 0, "route": None, "prompt_match": None,
                               "categories": None}}}
    assert fp.fingerprint(fp.settings(new)) == fp.fingerprint(fp.settings(old))
    routed = {"data": {"train": {"harmless": [{"path": "a.json", "limit": None, "offset": 5, "route": "helpful"}]}}}
    assert fp.settings(routed)["data.train.harmless"] == [{"path": "a.json", "limit": None, "offset": 5,
                                                        "route": "helpful"}]
    asked = {"data": {"train": {"helpful": [{"path": "a.json", "prompt_match": "[?]$"}]}}}
    assert fp.settings(asked)["data.train.helpful"] == [{"path": "a.json", "prompt_match": "[?]$"}]
    koala = {"data": {"train": {"helpful": [{"path": "a.json", "categories": ["koala"]}]}}}
    assert fp.settings(koala)["data.train.helpful"] == [{"path": "a.json", "categories": ["koala"]}]
    other = {"eval": {"parts": [{"offset": 0, "route": None}]}}  # not a data source list: kept whole
    assert fp.settings(other)["eval.parts"] == [{"offset": 0, "route": None}]


def test_circuit_gate_added_later_leaves_old_records_matching_when_off():
    """A generation record written before circuit.gate existed named the circuit's config without it."""
    from negotiax import CircuitConfig, attach
    from transformers import AutoModelForCausalLM, LlamaConfig

    from conftest import TINY

    model = AutoModelForCausalLM.from_config(LlamaConfig(**TINY))
    with attach(model, CircuitConfig(rank=4, head_dim=4)) as a:
        now = fp.circuit_identity(a)
        assert "gate" not in now["config"] and now["config"]["logit_cap"] is None  # as records made before the gate
        a.circuit.cfg.gate = 0.6
        assert fp.circuit_identity(a)["config"]["gate"] == 0.6  # any other value counts
    assert fp.settings({"circuit": {"gate": None, "rank": 4}}) == {"circuit.rank": 4}
    assert fp.settings({"circuit": {"gate": 0.6}}) == {"circuit.gate": 0.6}
