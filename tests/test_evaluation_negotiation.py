"""Reading the negotiation: α at the decision position, over the user's own prompt tokens, over the answer."""
import pytest
import torch

from conftest import TINY
from negotiax import CircuitConfig, attach
from negotiax.data import format_prompt
from negotiax.evaluation.negotiation import Profile, negotiation_profile, summarize
from test_circuit import perturb


@pytest.fixture(scope="module")
def chat_model(smol_tokenizer):
    """A tiny Llama with the real SmolLM2 tokenizer's vocabulary, so the real chat template applies."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(**{**TINY, "vocab_size": len(smol_tokenizer)})
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval().requires_grad_(False)


def by_hand(model, tok, a, prompt: str, answer: str):
    """α read off one unpadded forward pass, with the positions located by hand in the token strings."""
    text = format_prompt(tok, prompt)
    prompt_ids = tok(text, add_special_tokens=False).input_ids
    answer_ids = tok(answer, add_special_tokens=False).input_ids
    model(input_ids=torch.tensor([prompt_ids + answer_ids]))
    alpha = a.alpha()[0]
    # The user's words sit between "<|im_start|>user\n" and the "<|im_end|>" that follows them.
    pieces = tok.convert_ids_to_tokens(prompt_ids)
    user_start = max(i for i, t in enumerate(pieces) if t == "user") + 2
    user_end = user_start + pieces[user_start:].index("<|im_end|>")
    assert tok.convert_tokens_to_string(pieces[user_start:user_end]) == prompt
    n = len(prompt_ids)
    return alpha[n - 1], alpha[user_start:user_end].mean(0), alpha[n:].mean(0)


# The profile's pass stops after the deepest site and sorts prompts by length; by hand: one whole pass per prompt.
@pytest.mark.parametrize("layers", [None, [0, 1]])  # the middle layer of 3; two sites, averaged
def test_profile_reads_decision_user_and_answer_tokens(chat_model, smol_tokenizer, layers):
    tok = smol_tokenizer
    prompts = ["How do I pick a lock?", "Write a haiku about the sea, please, in the style of Basho."]
    answers = ["I can't help with that.", "Waves fold on the shore"]
    with attach(chat_model, CircuitConfig(rank=8, head_dim=8, layers=layers)) as a:
        perturb(a.circuit, scale=4.0)
        prof = negotiation_profile(chat_model, tok, a, prompts, answers, batch_size=2)  # padded batch
        for i, (p, ans) in enumerate(zip(prompts, answers)):
            decision, user, answer = by_hand(chat_model, tok, a, p, ans)
            assert torch.allclose(prof.decision[i], decision, atol=1e-5)
            assert torch.allclose(prof.prompt[i], user, atol=1e-5)
            assert torch.allclose(prof.answer[i], answer, atol=1e-5)
        # The system prompt is shared by every prompt: averaging over all tokens would differ.
        text = format_prompt(tok, prompts[0])
        chat_model(input_ids=tok(text, return_tensors="pt", add_special_tokens=False).input_ids)
        assert not torch.allclose(a.alpha()[0].mean(0), prof.prompt[0], atol=1e-4)
        a.circuit.mute("helpful")
        assert torch.all(negotiation_profile(chat_model, tok, a, prompts[:1]).decision[:, 0] == 0)


def test_summary_gives_routing_accuracy_at_the_decision_position():
    decision = torch.tensor([[0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    prof = Profile(decision, torch.full((4, 3), 1 / 3), None)
    out = summarize({"harmful": prof}, {"harmful": "harmless"}, ["helpful", "harmless", "honest"])
    assert out["harmful"]["routing_accuracy"] == 0.5  # rows 0 and 2 route to harmless
    assert out["harmful"]["decision"]["harmless"] == pytest.approx((0.8 + 0.3 + 0.7 + 0.3) / 4)
    assert "answer" not in out["harmful"] and out["harmful"]["n"] == 4
