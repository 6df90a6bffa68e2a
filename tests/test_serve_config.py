"""ServeConfig validation and the serve verb's early errors (before any model loads)."""
from __future__ import annotations

import pytest

from negotiax.cli import main
from negotiax.serve import ServeConfig


def test_defaults_bind_loopback():
    cfg = ServeConfig()
    assert cfg.host == "127.0.0.1" and cfg.api_key_env is None and cfg.max_batch == 16


@pytest.mark.parametrize("kwargs, match", [
    ({"port": 0}, "port"), ({"max_batch": 0}, "max_batch"), ({"batch_window_ms": -1}, "batch_window_ms"),
    ({"default_max_tokens": 2048}, "default_max_tokens"), ({"max_body_bytes": 10}, "max_body_bytes"),
    ({"template": "vicuna"}, "template"), ({"model_name": "a:b"}, "model_name"),
])
def test_bad_values_name_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ServeConfig(**kwargs)


def test_missing_key_variable_is_a_clear_error(monkeypatch, caplog):
    monkeypatch.delenv("NEGOTIAX_NO_SUCH_KEY", raising=False)
    assert main(["serve", "--base-only", "--api-key-env", "NEGOTIAX_NO_SUCH_KEY"]) == 2
    assert "NEGOTIAX_NO_SUCH_KEY" in caplog.text
