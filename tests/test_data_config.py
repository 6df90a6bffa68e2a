"""DataConfig: defaults, YAML / key=value round trip, and where data is looked for."""
from __future__ import annotations

from pathlib import Path

import pytest

from negotiax.config import load_config, save_config
from negotiax.data import DataConfig, Source, default_data_dir, load_source
from negotiax.recipe import load_recipe


def test_defaults_follow_the_design():
    cfg = DataConfig()
    assert cfg.objectives == ["helpful", "harmless", "honest"]
    assert cfg.train["helpful"][0].path == "alpaca/alpaca_small_2000.json"
    # Harmless: the PKU files' refusing answers (learnt), their prompts for routing only, safety-tuned-llamas.
    harmless = [(s.format, s.response_filter, s.route_only) for s in cfg.train["harmless"]]
    assert harmless == [("pku_dpo", "refusal", False), ("pku_pairs", "refusal", False), ("pku_dpo", None, True),
                        ("alpaca", None, False)]
    assert cfg.train["honest"][0].part == "train" and cfg.test["honest"].__len__() == 1
    assert cfg.test["harmless"][0].path == "beavertails/beavertails_30k_test.jsonl"
    assert DataConfig(harmless_test="beavertails_eval").test["harmless"][0].format == "beavertails_eval"
    assert cfg.template == "auto" and cfg.max_length == 512 and cfg.batch_size == 8


def test_overrides_replace_one_objective_only():
    r = load_recipe(overrides=["data.train.helpful=my/file.jsonl", "data.test_limit={harmless: 500}",
                               "data.objectives=[helpful,harmless]"])
    assert r.data.train["helpful"] == [Source(path="my/file.jsonl")]
    assert r.data.train["harmless"][-1].path.startswith("safety_tuned_llamas/")  # the defaults, unchanged
    assert r.data.test_limit_for("harmless") == 500 and r.data.test_limit_for("helpful") is None


def test_yaml_round_trip(tmp_path):
    cfg = DataConfig(train={"honest": {"path": "tqa.csv", "format": "truthfulqa", "part": "train"}},
                     mixture_weights={"helpful": 2.0}, test_limit=100)
    save_config(cfg, tmp_path / "data.yaml")
    again = load_config(DataConfig, tmp_path / "data.yaml")
    assert again == cfg


def test_data_dir_resolution(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    env.mkdir()
    (env / "x.json").write_text('[{"instruction": "a", "output": "b"}]')
    monkeypatch.setenv("NEGOTIAX_DATA_DIR", str(env))
    assert default_data_dir(str(explicit)) == explicit
    assert default_data_dir(None) == env
    [ex] = load_source(Source(path="x.json"), "helpful", default_data_dir(None))
    assert ex.prompt == "a" and Path(ex.source) == env / "x.json"
    with pytest.raises(FileNotFoundError, match=r"data.data_dir=.*nowhere is not a directory"):
        default_data_dir(str(tmp_path / "nowhere"))
    monkeypatch.setenv("NEGOTIAX_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="NEGOTIAX_DATA_DIR=.*gone is not a directory"):
        default_data_dir(None)
    monkeypatch.delenv("NEGOTIAX_DATA_DIR")
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    assert default_data_dir(None) is None  # no ../shared/data next to the working directory
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert default_data_dir(None) == Path("../shared/data")
