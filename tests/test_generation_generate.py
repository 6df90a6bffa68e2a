"""Batched generation: token counting, stops, resume, preference, and agreement with batch size 1."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import negotiax.generation.generate as G
from negotiax import attach
from negotiax.circuit import CircuitConfig
from negotiax.data import format_prompt
from negotiax.data.schema import Example
from negotiax.fingerprint import SettingsChangedError
from negotiax.generation.generate import generate
from negotiax.generation.config import GenerationConfig

PROMPTS = ["Hi", "Tell me about the history of the Roman Empire in detail, please.", "What is 2+2?",
           "Write a haiku about autumn leaves falling", "Name three colours"]


def examples(prompts=PROMPTS):
    return [Example(id=f"ex{i}", objective="helpful", prompt=p) for i, p in enumerate(prompts)]


@pytest.fixture(scope="module")
def tiny(smol_tokenizer):
    torch.manual_seed(4)
    cfg = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def greedy_ids(model, tokenizer, prompt: str, n: int) -> list[int]:
    """Reference: one unpadded prompt, greedy, with no EOS so it runs n steps."""
    ids = tokenizer(format_prompt(tokenizer, prompt), return_tensors="pt", add_special_tokens=False).input_ids
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def test_counts_tokens_up_to_and_including_eos(tiny, smol_tokenizer):
    n = 8
    refs = [greedy_ids(tiny, smol_tokenizer, p, n) for p in PROMPTS]
    eos = refs[0][2]  # a token the first prompt produces at step 3: make it an end-of-sequence token
    saved = tiny.generation_config.eos_token_id
    tiny.generation_config.eos_token_id = [2, eos]
    try:
        rows = generate(tiny, smol_tokenizer, examples(), GenerationConfig(max_new_tokens=n, batch_size=5))
    finally:
        tiny.generation_config.eos_token_id = saved
    for row, ref in zip(rows, refs):
        stop = ref.index(eos) + 1 if eos in ref else n
        assert row["n_new_tokens"] == stop
        assert row["finish_reason"] == ("eos" if eos in ref else "length")
        assert row["output"] == smol_tokenizer.decode(ref[:stop - 1 if eos in ref else n], skip_special_tokens=True)
    assert rows[0]["n_new_tokens"] == 3 and any(r["finish_reason"] == "length" for r in rows)


def test_stop_strings_cut_output_and_count(tiny, smol_tokenizer):
    n = 10
    ref = greedy_ids(tiny, smol_tokenizer, PROMPTS[1], n)
    for k in range(2, n):  # find a step whose new text is a usable stop string
        before, after = smol_tokenizer.decode(ref[:k]), smol_tokenizer.decode(ref[:k + 1])
        stop = after[len(before):]
        if stop.strip() and stop not in before and after.startswith(before):
            break
    else:
        pytest.skip("no usable stop string in this random model's output")
    rows = generate(tiny, smol_tokenizer, examples([PROMPTS[1], PROMPTS[0]]),
                    GenerationConfig(max_new_tokens=n, batch_size=2, stop=[stop]))
    assert rows[0]["finish_reason"] == "stop"
    assert rows[0]["output"] == before
    assert rows[0]["n_new_tokens"] == k + 1


class Interrupted(Exception):
    pass


def test_resume_after_interruption_gives_the_same_file(tiny, smol_tokenizer, tmp_path, monkeypatch):
    cfg = GenerationConfig(max_new_tokens=6, batch_size=2, do_sample=True, temperature=0.9, top_p=0.95, seed=7)
    whole = tmp_path / "whole.jsonl"
    generate(tiny, smol_tokenizer, examples(), cfg, whole)

    calls, real, fail = [], G.generate_batch, True

    def interrupted(model, tokenizer, texts, cfg, seed):
        calls.append(len(texts))
        if len(calls) == 2 and fail:
            raise Interrupted  # the run dies after the first batch
        return real(model, tokenizer, texts, cfg, seed)

    part = tmp_path / "part.jsonl"
    monkeypatch.setattr(G, "generate_batch", interrupted)
    with pytest.raises(Interrupted):
        generate(tiny, smol_tokenizer, examples(), cfg, part)
    with part.open("a") as f:
        f.write('{"id": "ex3", "outp')  # a line cut off mid-write
    calls.clear()
    fail = False
    rows = generate(tiny, smol_tokenizer, examples(), cfg, part)
    assert sum(calls) == 3  # only the unfinished examples were generated
    assert part.read_bytes() == whole.read_bytes()
    assert [r["id"] for r in rows] == [e.id for e in examples()]
    assert generate(tiny, smol_tokenizer, examples(), cfg, part) == rows  # all done: nothing to generate


def test_changed_decoding_refuses_to_resume(tiny, smol_tokenizer, tmp_path):
    path = tmp_path / "g.jsonl"
    generate(tiny, smol_tokenizer, examples()[:1], GenerationConfig(max_new_tokens=2), path)
    before = path.read_bytes()
    with pytest.raises(SettingsChangedError, match=r"decoding\.max_new_tokens: 2 -> 3;.*prompts: .*--fresh"):
        generate(tiny, smol_tokenizer, examples(), GenerationConfig(max_new_tokens=3), path)
    assert path.read_bytes() == before


def test_changed_circuit_or_preference_refuses_to_resume(tiny, smol_tokenizer, tmp_path):
    path, cfg = tmp_path / "g.jsonl", GenerationConfig(max_new_tokens=2)
    with attach(tiny, CircuitConfig(rank=4, head_dim=4)) as attachment:
        generate(tiny, smol_tokenizer, examples()[:2], cfg, path, attachment=attachment)
        assert generate(tiny, smol_tokenizer, examples()[:2], cfg, path, attachment=attachment)  # same: resumes
        with pytest.raises(SettingsChangedError, match=r"circuit\.preference\.harmless: 0\.0 -> 1\.0"):
            generate(tiny, smol_tokenizer, examples()[:2], GenerationConfig(max_new_tokens=2, preference={"harmless": 1}),
                     path, attachment=attachment)
        with torch.no_grad():
            next(attachment.circuit.parameters()).add_(0.1)  # other weights: another circuit
        with pytest.raises(SettingsChangedError, match=r"circuit\.weights: "):
            generate(tiny, smol_tokenizer, examples()[:2], cfg, path, attachment=attachment)
    with pytest.raises(SettingsChangedError, match=r"circuit\.config\.variant: \"negotiax\" -> absent"):
        generate(tiny, smol_tokenizer, examples()[:2], cfg, path)  # the base model


def test_rows_without_a_record_are_never_resumed(tiny, smol_tokenizer, tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"id": "ex0", "output": "made elsewhere"}\n')
    with pytest.raises(SettingsChangedError, match="no record of the settings"):
        generate(tiny, smol_tokenizer, examples()[:1], GenerationConfig(max_new_tokens=2), path)


def test_preference_is_set_during_generation_and_restored(tiny, smol_tokenizer, monkeypatch):
    seen, real = [], G.generate_batch
    with attach(tiny, CircuitConfig()) as attachment:
        objective = attachment.circuit.objectives[0]
        attachment.circuit.set_preference({objective: -1.0})
        monkeypatch.setattr(G, "generate_batch", lambda *a: seen.append(attachment.circuit.preference()) or real(*a))
        generate(tiny, smol_tokenizer, examples()[:2], GenerationConfig(max_new_tokens=2, preference={objective: 3.0}),
                 attachment=attachment)
        assert seen and all(p[objective] == 3.0 for p in seen)
        assert attachment.circuit.preference()[objective] == -1.0


def test_duplicate_ids_and_bad_config(tiny, smol_tokenizer):
    dup = [Example(id="a", objective="helpful", prompt="x"), Example(id="a", objective="helpful", prompt="y")]
    with pytest.raises(ValueError, match="'a'"):
        generate(tiny, smol_tokenizer, dup, GenerationConfig(max_new_tokens=1))
    with pytest.raises(ValueError, match="template"):
        GenerationConfig(template="vicuna")
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(do_sample=True, temperature=0)


@pytest.mark.slow
def test_smollm2_batch_equals_single(smollm2, tmp_path):
    model, tokenizer = smollm2
    cfg1 = GenerationConfig(max_new_tokens=10, batch_size=1)
    cfg4 = GenerationConfig(max_new_tokens=10, batch_size=2)
    exs = examples(["What is 2+2? Answer with one number.", "Say hello in French."])
    single = generate(model, tokenizer, exs, cfg1, tmp_path / "one.jsonl")
    batched = generate(model, tokenizer, exs, cfg4, tmp_path / "four.jsonl")
    for a, b in zip(single, batched):
        assert a["output"] == b["output"] and a["n_new_tokens"] == b["n_new_tokens"]
    assert any(r["finish_reason"] == "eos" for r in single)  # the chat model ends its turn
    short = next(r for r in single if r["finish_reason"] == "eos")
    assert short["n_new_tokens"] < 10
    rows = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {e.id for e in exs}


def test_branched_variant_uses_branched_decoding(tiny, smol_tokenizer):
    from negotiax.generation.branched import branched_generate

    with attach(tiny, CircuitConfig(variant="branched")) as attachment:
        exs = examples()[:3]
        rows = generate(tiny, smol_tokenizer, exs, GenerationConfig(max_new_tokens=4, batch_size=3,
                                                                    sort_by_length=False), attachment=attachment)
        texts = [format_prompt(smol_tokenizer, e.prompt) for e in exs]
        ref = branched_generate(tiny, smol_tokenizer, texts, attachment, max_new_tokens=4)
    assert [r["output"] for r in rows] == ref.texts
    assert [r["n_new_tokens"] for r in rows] == ref.token_counts


@pytest.mark.slow
def test_smollm2_greedy_loop_writes_what_hf_generate_writes(smollm2):
    """The greedy loop drops each row at its EOS; Hugging Face `generate` on the same left-padded batch is the
    reference, token for token, with rows that end early among rows that run to the limit."""
    from negotiax.generation.branched import encode_prompts

    model, tokenizer = smollm2
    prompts = ["What is 2+2? Answer with one number.", "Say hello in French.", "Name a colour.",
               "Write a long story about a dragon who learns to cook.", "How do I pick a lock?"]
    n = 24
    rows = generate(model, tokenizer, examples(prompts), GenerationConfig(max_new_tokens=n, batch_size=5,
                                                                          sort_by_length=False))
    texts = [format_prompt(tokenizer, p) for p in prompts]
    ids, mask = encode_prompts(tokenizer, texts, "cpu")
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    eos = model.generation_config.eos_token_id
    for row, ref in zip(rows, out[:, ids.shape[1]:].tolist()):
        end = ref.index(eos) + 1 if eos in ref else n
        assert row["n_new_tokens"] == end
        assert row["output"] == tokenizer.decode(ref[:end], skip_special_tokens=True)
    ended = [r["n_new_tokens"] for r in rows if r["finish_reason"] == "eos"]
    assert ended and min(ended) < n and any(r["finish_reason"] == "length" for r in rows)


def test_generation_config_that_asks_for_more_than_greedy_is_honoured(tiny, smol_tokenizer):
    """A logits processor in the model's generation config (here: a suppressed token; or a repetition penalty),
    sampling, or stop strings go through `generate`, so they are applied, never skipped by the greedy loop."""
    assert G.greedy_loop_applies(tiny, GenerationConfig())
    assert not G.greedy_loop_applies(tiny, GenerationConfig(do_sample=True))
    assert not G.greedy_loop_applies(tiny, GenerationConfig(stop=["\n"]))
    plain = greedy_ids(tiny, smol_tokenizer, PROMPTS[0], 8)
    tiny.generation_config.suppress_tokens = [plain[0]]
    try:
        assert not G.greedy_loop_applies(tiny, GenerationConfig())
        rows = generate(tiny, smol_tokenizer, examples(PROMPTS[:1]), GenerationConfig(max_new_tokens=8))
        ids = smol_tokenizer(format_prompt(smol_tokenizer, PROMPTS[0]), return_tensors="pt",
                             add_special_tokens=False).input_ids
        ref = tiny.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                            pad_token_id=0)[0, ids.shape[1]:].tolist()
    finally:
        tiny.generation_config.suppress_tokens = None
    assert G.greedy_loop_applies(tiny, GenerationConfig())
    assert ref[0] != plain[0]  # the suppressed token changed the answer
    end = ref.index(2) if 2 in ref else len(ref)
    assert rows[0]["output"] == smol_tokenizer.decode(ref[:end], skip_special_tokens=True)
