"""Reading negotiation weights per prompt group, padding excluded."""
import torch

from conftest import tiny_model
from negotiax import CircuitConfig, attach
from negotiax.negotiation import prompt_alphas
from test_circuit import perturb


class CharTokenizer:
    """A tiny in-memory tokenizer (one id per character) so padding can be controlled exactly."""

    padding_side = "left"

    def __call__(self, texts, return_tensors="pt", padding=True, add_special_tokens=False):
        from transformers import BatchEncoding

        width = max(len(t) for t in texts)
        ids, mask = [], []
        for t in texts:
            row = [ord(c) % 100 + 1 for c in t]
            pad = width - len(row)
            ids.append(row + [0] * pad if self.padding_side == "right" else [0] * pad + row)
            mask.append([1] * len(row) + [0] * pad if self.padding_side == "right" else [0] * pad + [1] * len(row))
        return BatchEncoding({"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)})


def test_prompt_alpha_ignores_padding_and_restores_padding_side():
    model = tiny_model("llama")
    tok = CharTokenizer()
    with attach(model, CircuitConfig(rank=8, head_dim=8)) as a:
        perturb(a.circuit)
        alone = prompt_alphas(model, tok, a, ["short"], batch_size=1)
        padded = prompt_alphas(model, tok, a, ["short", "a much longer prompt"], batch_size=2)
        assert torch.allclose(alone[0], padded[0], atol=1e-5)  # padding changes nothing
        assert torch.allclose(padded.sum(-1), torch.ones(2), atol=1e-5)
        a.circuit.mute("helpful")
        assert torch.all(prompt_alphas(model, tok, a, ["short"])[:, 0] == 0)
    assert tok.padding_side == "left"
