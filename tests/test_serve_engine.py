"""The dynamic batcher: per-request β inside one batch, rows leaving the batch, stop strings, cancellation."""
from __future__ import annotations

import threading

import pytest
import torch

from negotiax.data import format_prompt
from negotiax.serve.engine import Delta, Engine, Job
from serve_tiny import perturbed_circuit, tiny_llama

PROMPTS = ["Hi", "Tell me about the history of the Roman Empire in detail, please.", "What is 2+2?",
           "Write a haiku about autumn leaves falling"]
PREFS = [{}, {"harmless": 2.0}, {"helpful": float("-inf")}, {"honest": 3.0, "helpful": -1.0}]


@pytest.fixture(scope="module")
def served(smol_tokenizer):
    model = tiny_llama(smol_tokenizer)
    attachment = perturbed_circuit(model)
    yield model, smol_tokenizer, attachment
    attachment.detach()


def prompt_ids(tokenizer, prompt):
    return tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False).input_ids


def reference(model, tokenizer, attachment, prompt, beta, n):
    """Independent reference: transformers' own greedy `generate` on the unpadded prompt, one preference."""
    attachment.circuit.set_preference(beta)
    ids = torch.tensor([prompt_ids(tokenizer, prompt)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


class Collector:
    def __init__(self):
        self.deltas, self.done, self.event = [], None, threading.Event()

    def __call__(self, event):
        if isinstance(event, Delta):
            self.deltas.append(event.text)
        else:
            self.done = event
            self.event.set()


def run_jobs(engine, jobs):
    collectors = []
    for job in jobs:
        job.emit = Collector()
        collectors.append(job.emit)
        engine.submit(job)
    for c in collectors:
        assert c.event.wait(30)
    return collectors


def test_four_preferences_in_one_batch_equal_each_alone(served):
    model, tokenizer, attachment = served
    n = 12
    refs = [reference(model, tokenizer, attachment, p, b, n) for p, b in zip(PROMPTS, PREFS)]
    assert len({tuple(r) for r in refs}) > 1
    # The same prompt under the four preferences: β really changes the greedy answer of this circuit.
    same_prompt = [tuple(reference(model, tokenizer, attachment, PROMPTS[1], b, n)) for b in PREFS]
    assert len(set(same_prompt)) > 1
    engine = Engine(model, tokenizer, attachment, window_ms=200, max_batch=4).start()
    try:
        jobs = [Job(prompt_ids(tokenizer, p), max_tokens=n, beta=b) for p, b in zip(PROMPTS, PREFS)]
        results = run_jobs(engine, jobs)
        assert engine.stats["batches"] == 1  # all four decoded together
    finally:
        engine.stop()
    for ref, c in zip(refs, results):
        expected = tokenizer.decode(ref, skip_special_tokens=True)
        assert c.done.text == expected and "".join(c.deltas) == expected
        assert c.done.finish_reason == "length" and c.done.completion_tokens == n
        assert abs(sum(c.done.alpha.values()) - 1) < 1e-4
    muted = results[2].done.alpha
    assert muted["helpful"] == 0.0  # a muted objective gets no say


def test_base_row_is_the_backbone_alone(served):
    model, tokenizer, attachment = served
    n = 8
    prompt = PROMPTS[3]
    backbone = tiny_llama(tokenizer)  # the same seed: the same weights, without the circuit
    ids = torch.tensor([prompt_ids(tokenizer, prompt)])
    base = backbone.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, ids.shape[1]:].tolist()
    circuit = reference(model, tokenizer, attachment, prompt, {}, n)
    assert base != circuit  # the circuit changes this answer, so the check below means something
    engine = Engine(model, tokenizer, attachment, window_ms=200).start()
    try:
        jobs = [Job(prompt_ids(tokenizer, prompt), n, beta=None), Job(prompt_ids(tokenizer, prompt), n, beta={})]
        base_row, circuit_row = run_jobs(engine, jobs)
    finally:
        engine.stop()
    assert base_row.done.text == tokenizer.decode(base) and base_row.done.alpha is None
    assert circuit_row.done.text == tokenizer.decode(circuit)


def test_streamed_text_holds_back_what_may_start_a_stop_string():
    from negotiax.serve.engine import _safe_length

    assert _safe_length("hello wor", ["world"]) == 6  # "wor" may become "world"
    assert _safe_length("hello wor", ["xyz", "or!"]) == 7  # "or" may become "or!"
    assert _safe_length("hello", ["xyz"]) == 5
    assert _safe_length("caf\ufffd", []) == 3  # half of a multi-byte character waits for the rest


def test_cancelled_job_leaves_the_batch_and_others_finish(served):
    model, tokenizer, attachment = served
    engine = Engine(model, tokenizer, attachment, window_ms=200).start()
    try:
        long, short = Job(prompt_ids(tokenizer, PROMPTS[0]), 50), Job(prompt_ids(tokenizer, PROMPTS[1]), 6)
        long.cancelled.set()  # its client went away before the first step
        results = run_jobs(engine, [long, short])
    finally:
        engine.stop()
    assert results[0].done.finish_reason == "cancelled" and results[0].done.completion_tokens == 0
    assert results[1].done.finish_reason == "length" and results[1].done.completion_tokens == 6
    assert engine.stats["cancelled"] == 1 and engine.stats["served"] == 1


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(served):
    model, tokenizer, attachment = served
    engine = Engine(model, tokenizer, attachment, window_ms=200).start()

    def job(prompt, seed):
        return Job(prompt_ids(tokenizer, prompt), 10, {"harmless": 1.0}, temperature=0.9, top_p=0.9, seed=seed)

    try:
        alone = run_jobs(engine, [job(PROMPTS[2], 7)])[0].done.text
        batch = run_jobs(engine, [job(PROMPTS[0], 1), job(PROMPTS[2], 7), job(PROMPTS[3], 2)])
        again = [run_jobs(engine, [job(PROMPTS[2], s)])[0].done.text for s in (8, 9, 10)]
    finally:
        engine.stop()
    assert batch[1].done.text == alone
    assert any(text != alone for text in again)  # the seed matters: this is sampling, not greedy
