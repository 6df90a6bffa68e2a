"""Backbone loading from a local folder, dtype/device options and clear errors."""
import pytest
import torch

from conftest import tiny_model
from negotiax import ModelConfig, load_backbone
from negotiax.backbone import resolve_dtype


@pytest.fixture
def tiny_folder(tmp_path, smol_tokenizer):
    model = tiny_model("llama")
    model.config.vocab_size = 128
    model.save_pretrained(tmp_path / "tiny")
    smol_tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny", model


def test_local_folder_loads_frozen_in_eval_mode(tiny_folder):
    path, original = tiny_folder
    model, tokenizer = load_backbone(name_or_path=str(path), device="cpu", dtype="float32")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert tokenizer.pad_token is not None
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(model(input_ids=ids).logits, original(input_ids=ids).logits)


def test_dtype_option(tiny_folder):
    model, _ = load_backbone(name_or_path=str(tiny_folder[0]), device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="model.dtype='float8'"):
        ModelConfig(dtype="float8")
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        load_backbone(name_or_path="/nonexistent/model.gguf", device="cpu")
    with pytest.raises(ValueError, match="load_in_4bit needs a CUDA GPU"):
        load_backbone(name_or_path="/nonexistent", device="cpu", load_in_4bit=True)


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma", "qwen2", "gpt2", "gpt_neox"])
def test_logits_at_equals_the_full_forward_at_the_kept_positions(family):
    """logits_at runs the LM head at the kept positions only; its rows are the full forward's, row by row."""
    from negotiax.backbone import logits_at

    model = tiny_model(family)
    ids = torch.randint(0, model.config.vocab_size, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # right padding
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[0, 2:6] = keep[1, 3:4] = keep[2, 0:7] = True
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        flat = logits_at(model, ids, mask, keep)
    assert flat.shape == (int(keep.sum()), model.config.vocab_size)
    assert torch.allclose(flat, torch.cat([full[0, 2:6], full[1, 3:4], full[2, 0:7]]), atol=1e-5)
