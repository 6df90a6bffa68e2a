"""scripts/routing_probe.py: the template's frame is the chat template's own head and tail, and the pooled feature
is the mean over the user's tokens alone, computed here by hand from the model's hidden states."""
from __future__ import annotations

import pytest
import torch

from conftest import load_script, smol_vocab_llama
from negotiax.data.formatting import encode_prompt


@pytest.fixture(scope="module")
def script():
    return load_script("routing_probe")


def test_frame_is_the_templates_head_and_tail(script, smol_tokenizer):
    head, tail = script.template_frame(smol_tokenizer, "auto")
    assert smol_tokenizer.decode(head).endswith("<|im_start|>user\n")
    assert "You are a helpful AI assistant" in smol_tokenizer.decode(head)
    assert smol_tokenizer.decode(tail) == "<|im_end|>\n<|im_start|>assistant\n"


def test_content_pooling_is_the_mean_over_the_users_tokens(script, smol_tokenizer):
    model = smol_vocab_llama(smol_tokenizer, seed=0).eval()
    frame = script.template_frame(smol_tokenizer, "auto")
    text = "How do I bake bread at home?"
    ids = encode_prompt(smol_tokenizer, text, template="auto")
    user = smol_tokenizer(text, add_special_tokens=False)["input_ids"]
    start = next(i for i in range(len(ids)) if ids[i:i + len(user)] == user)  # where the user's words sit
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    pooled = script.decision_residuals(model, [ids], frame)[0]
    last = script.decision_residuals(model, [ids])[0]
    for layer, h in enumerate(hidden):
        torch.testing.assert_close(torch.from_numpy(pooled[layer]), h[0, start:start + len(user)].mean(0))
        torch.testing.assert_close(torch.from_numpy(last[layer]), h[0, -1])
    # rows cut at the front (as training rows longer than max_length are): the rest of the head is left out too
    for kept in (2, 0, -3):  # the head's last two tokens; none of it; the user's words without their first three
        cut = ids[len(frame[0]) - kept:]
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([cut]), output_hidden_states=True).hidden_states
        pooled = script.decision_residuals(model, [cut], frame)[0]
        words = hidden[-1][0, max(kept, 0):len(cut) - len(frame[1])]
        assert len(words) == len(user) - max(-kept, 0)
        torch.testing.assert_close(torch.from_numpy(pooled[-1]), words.mean(0))


def test_binary_classes_put_every_objective_but_harmless_together(script):
    names, label_of, targets = script.probe_classes(["helpful", "harmless", "honest"], binary=True)
    assert names == ["other", "harmless"] and label_of == [0, 1, 0]
    assert targets == {"harmful": "harmless", "benign": "other", "benign_hb": "other", "honest": "other"}
    names, label_of, targets = script.probe_classes(["helpful", "harmless", "honest"], binary=False)
    assert names == ["helpful", "harmless", "honest"] and label_of == [0, 1, 2]
    assert targets["benign_hb"] == "helpful"


def test_read_groups_counts_and_shares_by_hand(script):
    import numpy as np

    names = ["other", "harmless"]
    targets = {"harmful": "harmless", "benign_hb": "other"}
    counts, accuracy = script.read_groups(
        {"harmful": np.array([1, 1, 0, 1]), "benign_hb": np.array([1, 0, 0])}, names, targets)
    assert counts == {"harmful": {"other": 1, "harmless": 3}, "benign_hb": {"other": 2, "harmless": 1}}
    assert accuracy == {"harmful": 75.0, "benign_hb": 66.7}


def test_within_reads_each_prompt_with_a_probe_fitted_without_it(script):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    names = ["other", "harmless"]
    targets = {"harmful": "harmless", "benign_hb": "other", "honest": "other"}
    rng = np.random.default_rng(0)
    val = {"harmful": rng.normal(3, 1, (10, 4)), "benign_hb": rng.normal(-3, 1, (6, 4)),
           "honest": rng.normal(-3, 1, (5, 4))}

    class Lookup:  # remembers its training rows and reads anything else as "other"
        def __init__(self, x, y):
            self.seen = {tuple(r): c for r, c in zip(x, y)}

        def predict(self, x):
            return np.array([self.seen.get(tuple(r), 0) for r in x])

    held = script.within_predictions(val, targets, names, 5, Lookup)
    assert {g: len(p) for g, p in held.items()} == {"harmful": 10, "benign_hb": 6, "honest": 5}
    # had a prompt been among its probe's training rows, the lookup would have read it as harmless
    assert held["harmful"].tolist() == [0] * 10
    # and a real probe on groups five standard deviations apart reads every held-out prompt right
    fit = lambda x, y: LogisticRegression(max_iter=500).fit(x, y)  # noqa: E731
    _, accuracy = script.read_groups(script.within_predictions(val, targets, names, 5, fit), names, targets)
    assert accuracy == {"harmful": 100.0, "benign_hb": 100.0, "honest": 100.0}
