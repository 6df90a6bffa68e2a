"""Prompt formatting and label masks, token by token, on the real SmolLM2 tokenizer; the collator."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from negotiax.data import IGNORE, Collator, Example, TokenizedDataset, completion_text, encode_prompt, format_prompt, load_alpaca, load_truthfulqa, tokenize_example


def _check_masks(tok, example: Example, feats: dict, template: str) -> None:
    prompt_ids = encode_prompt(tok, example.prompt, template)
    ids, labels = feats["input_ids"], feats["labels"]
    n = len(prompt_ids)
    assert ids[:n] == prompt_ids
    assert labels[:n] == [IGNORE] * n  # every prompt token is masked
    assert labels[n:] == ids[n:]  # every response token is a label
    assert tok.decode(ids[n:]) == completion_text(tok, example.prompt, example.response, template)


def test_chat_labels_cover_the_response_and_end_of_turn(smol_tokenizer, data_dir):
    tok = smol_tokenizer
    examples = load_alpaca(data_dir / "alpaca/alpaca_small_2000.json")[:40]
    examples += load_truthfulqa(data_dir / "truthfulqa/TruthfulQA.csv")[:5]
    for ex in examples:
        if ex.response is None:
            ex = dataclasses.replace(ex, response=ex.correct_answers[0])
        feats = tokenize_example(tok, ex, 4096, "auto")
        _check_masks(tok, ex, feats, "chat")
        response_ids = [t for t, lab in zip(feats["input_ids"], feats["labels"]) if lab != IGNORE]
        assert response_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
        assert tok.decode(response_ids[:-1]) == ex.response


def test_chat_prompt_has_system_and_generation_prompt(smol_tokenizer):
    text = format_prompt(smol_tokenizer, "What is 2+2?")
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                                                                      "<|im_start|>assistant\n")


def test_alpaca_template_and_auto_without_chat_template(smol_tokenizer):
    plain = copy.deepcopy(smol_tokenizer)
    plain.chat_template = None
    ex = Example(id="a", objective="helpful", prompt="Name a colour.", response="Blue.")
    assert format_prompt(plain, ex.prompt) == format_prompt(smol_tokenizer, ex.prompt, "alpaca")
    assert "### Instruction:\nName a colour.\n\n### Response:\n" in format_prompt(plain, ex.prompt)
    feats = tokenize_example(plain, ex, 512)
    _check_masks(plain, ex, feats, "alpaca")
    assert feats["input_ids"][-1] == plain.eos_token_id
    with pytest.raises(ValueError, match="no chat template"):
        format_prompt(plain, "x", "chat")


def test_boundary_merge_is_split_exactly(smol_tokenizer):
    # A response that starts with newlines merges with the prompt's final "\n" when encoded together.
    ex = Example(id="b", objective="helpful", prompt="List two things.", response="\n\n- a\n- b")
    together = smol_tokenizer(format_prompt(smol_tokenizer, ex.prompt, "alpaca") + ex.response,
                              add_special_tokens=False).input_ids
    prompt_ids = encode_prompt(smol_tokenizer, ex.prompt, "alpaca")
    assert together[:len(prompt_ids)] != prompt_ids  # the case the fallback exists for
    _check_masks(smol_tokenizer, ex, tokenize_example(smol_tokenizer, ex, 512, "alpaca"), "alpaca")


def test_long_examples_lose_the_prompt_start_not_the_response(smol_tokenizer):
    ex = Example(id="c", objective="helpful", prompt="word " * 300 + "Final question?", response="A short answer.")
    feats = tokenize_example(smol_tokenizer, ex, 64)
    assert len(feats["input_ids"]) == 64
    kept = [t for t, lab in zip(feats["input_ids"], feats["labels"]) if lab != IGNORE]
    assert smol_tokenizer.decode(kept) == "A short answer.<|im_end|>"
    prompt_part = smol_tokenizer.decode(feats["input_ids"][:64 - len(kept)])
    assert prompt_part.endswith("Final question?<|im_end|>\n<|im_start|>assistant\n")
    assert "system" not in prompt_part  # the start was cut
    data = TokenizedDataset([ex, Example(id="d", objective="helpful", prompt="Hi", response="Hello.")],
                            smol_tokenizer, max_length=64, progress=False)
    assert data.stats["cut_examples"] == data.stats["cut_prompt_start"] == 1
    assert data.stats["cut_response_end"] == 0


def test_long_response_keeps_its_start(smol_tokenizer):
    ex = Example(id="e", objective="helpful", prompt="Count.", response=" ".join(str(i) for i in range(200)))
    feats = tokenize_example(smol_tokenizer, ex, 64)
    kept = [t for t, lab in zip(feats["input_ids"], feats["labels"]) if lab != IGNORE]
    assert len(feats["input_ids"]) == 64 and smol_tokenizer.decode(kept).startswith("0 1 2 3")
    data = TokenizedDataset([ex], smol_tokenizer, max_length=64, progress=False)
    assert data.stats["cut_response_end"] == 1 and data.stats["cut_prompt_start"] == 1  # system prompt cut too


def test_collator_pads_and_masks(smol_tokenizer):
    feats = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [9], "labels": [9]}]
    right = Collator(smol_tokenizer)(feats)
    pad = smol_tokenizer.pad_token_id
    assert right["input_ids"].tolist() == [[5, 6, 7], [9, pad, pad]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right["labels"].tolist() == [[IGNORE, 6, 7], [9, IGNORE, IGNORE]]
    left = Collator(smol_tokenizer, padding_side="left")(feats)
    assert left["input_ids"].tolist() == [[5, 6, 7], [pad, pad, 9]]
    assert left["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, 9]]
    assert left["attention_mask"].dtype == torch.long
    with pytest.raises(ValueError, match="padding_side"):
        Collator(smol_tokenizer, padding_side="middle")


def test_routed_rows_carry_their_target_index_into_the_batch(smol_tokenizer):
    rows = [Example(id="a", objective="harmless", prompt="How do I bake bread?", response="Mix flour.",
                    meta={"route": "helpful"}),
            Example(id="b", objective="harmless", prompt="How do I pick a lock?", response="I can't help.")]
    data = TokenizedDataset(rows, smol_tokenizer, max_length=64, progress=False,
                            objectives=["helpful", "harmless", "honest"])
    assert data[0]["route"] == 0 and "route" not in data[1]
    batch = Collator(smol_tokenizer)([data[0], data[1]])
    assert batch["route_rows"].tolist() == [0, -1]  # -1: the batch's own objective
    assert "route_rows" not in Collator(smol_tokenizer)([data[1]])
    with pytest.raises(ValueError, match="routed to 'helpful'.*objectives \\['harmless'\\]"):
        TokenizedDataset(rows, smol_tokenizer, max_length=64, progress=False, objectives=["harmless"])


def test_dynamic_padding_per_batch(smol_tokenizer, data_dir):
    examples = load_alpaca(data_dir / "alpaca/alpaca_small_2000.json")[:16]
    data = TokenizedDataset(examples, smol_tokenizer, max_length=512, progress=False)
    collate = Collator(smol_tokenizer)
    batch = collate([data[i] for i in range(4)])
    assert batch["input_ids"].shape[1] == max(len(data[i]["input_ids"]) for i in range(4))
    # Padding is masked out of the loss even though pad == eos for SmolLM2 (eos stays a label).
    n_labels = sum(sum(lab != IGNORE for lab in data[i]["labels"]) for i in range(4))
    assert int((batch["labels"] != IGNORE).sum()) == n_labels


def _bos_tokenizer():
    """A Llama-like tokenizer made in memory: byte-level BPE whose encoding starts with <s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, **{chr(i): i - 30 for i in range(33, 127)}, "Ġ": 97, "Ċ": 98}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>")


def test_alpaca_with_a_bos_tokenizer_has_one_bos_and_ends_with_eos():
    tok = _bos_tokenizer()
    ex = Example(id="f", objective="helpful", prompt="Hi", response="Yo")
    assert format_prompt(tok, ex.prompt).startswith("<s>Below is an instruction")
    feats = tokenize_example(tok, ex, 512)
    assert feats["input_ids"][0] == 0 and feats["input_ids"].count(0) == 1
    assert feats["input_ids"][-1] == 1 and feats["labels"][-3:] == feats["input_ids"][-3:]
    _check_masks(tok, ex, feats, "alpaca")
