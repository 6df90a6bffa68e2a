"""Prompt formatting (chat template or Alpaca) and tokenisation with response-only labels."""
from __future__ import annotations

from dataclasses import dataclass

from .schema import Example

IGNORE = -100
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{prompt}\n\n### Response:\n")


def resolve_template(tokenizer, template: str = "auto") -> str:
    """'chat' when asked or when the tokenizer has a chat template (auto), else 'alpaca'."""
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "chat" if has_chat else "alpaca"
    if template == "chat" and not has_chat:
        raise ValueError("data.template='chat' but the tokenizer has no chat template; use 'alpaca' or 'auto'")
    if template not in ("chat", "alpaca"):
        raise ValueError(f"template={template!r}; choose auto, chat or alpaca")
    return template


def _messages(prompt: str, response: str | None = None) -> list[dict]:
    msgs = [{"role": "user", "content": prompt}]
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return msgs


def format_prompt(tokenizer, prompt: str, template: str = "auto") -> str:
    """The text the model sees before its answer, ending with the generation prompt."""
    if resolve_template(tokenizer, template) == "chat":
        return tokenizer.apply_chat_template(_messages(prompt), tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token if _adds_bos(tokenizer) else ""
    return bos + ALPACA.format(prompt=prompt)


def _adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's own encoding starts with BOS (Llama does, GPT-2 does not)."""
    ids = tokenizer("a").input_ids
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def completion_text(tokenizer, prompt: str, response: str, template: str = "auto") -> str:
    """What follows the prompt text in training: the response and the end-of-turn / EOS marker."""
    return _texts(tokenizer, prompt, response, resolve_template(tokenizer, template))[1]


def _texts(tokenizer, prompt: str, response: str, template: str) -> tuple[str, str]:
    """(prompt text, completion text) for a resolved template."""
    head = format_prompt(tokenizer, prompt, template)
    if template == "chat":
        full = tokenizer.apply_chat_template(_messages(prompt, response), tokenize=False)
        if full.startswith(head) and response in full[len(head):]:
            tail = full[len(head):]
            # Keep the template's end-of-turn marker (so the model learns to stop), not what follows it.
            end = tail.index(response) + len(response)
            marker = tail[end:].strip()
            return head, tail[:end] + (marker if marker else (tokenizer.eos_token or ""))
    return head, response + (tokenizer.eos_token or "")


def encode_prompt(tokenizer, prompt: str, template: str = "auto") -> list[int]:
    """Token ids of format_prompt's text (the template already holds any special tokens)."""
    return tokenizer(format_prompt(tokenizer, prompt, template), add_special_tokens=False).input_ids


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    cut_prompt: bool = False  # the prompt lost its start
    cut_response: bool = False  # the response lost its end (only when it alone nearly fills max_length)


def encode_examples(tokenizer, examples: list[Example], max_length: int,
                    template: str = "auto") -> list[Encoded]:
    """Prompt + response ids, labels -100 on the prompt; over-long examples lose the prompt's start first.

    The texts of a whole list are tokenised in two batched calls; an example whose prompt ids are not a
    prefix of its full ids (BPE merged across the boundary) has its response encoded on its own.
    """
    template = resolve_template(tokenizer, template)
    for ex in examples:
        if ex.response is None:
            raise ValueError(f"example {ex.id}: no response to train on")
    pairs = [_texts(tokenizer, ex.prompt, ex.response, template) for ex in examples]
    prompt_ids = tokenizer([p for p, _ in pairs], add_special_tokens=False).input_ids
    full_ids = tokenizer([p + c for p, c in pairs], add_special_tokens=False).input_ids
    out = []
    for (_, completion), p_ids, f_ids in zip(pairs, prompt_ids, full_ids):
        if f_ids[:len(p_ids)] == p_ids:
            response_ids = f_ids[len(p_ids):]
        else:
            response_ids = tokenizer(completion, add_special_tokens=False).input_ids
        out.append(_fit(p_ids, response_ids, max_length))
    return out


def encode_example(tokenizer, example: Example, max_length: int, template: str = "auto") -> Encoded:
    return encode_examples(tokenizer, [example], max_length, template)[0]


def _fit(prompt_ids: list[int], response_ids: list[int], max_length: int) -> Encoded:
    cut_prompt = cut_response = False
    if len(prompt_ids) + len(response_ids) > max_length:
        # Keep the prompt's end (the question and the generation prompt); the response's start is
        # never cut. Only a response longer than max_length - keep loses its end.
        keep = min(len(prompt_ids), max(max_length - len(response_ids), max_length // 4))
        cut_prompt = keep < len(prompt_ids)
        prompt_ids = prompt_ids[len(prompt_ids) - keep:]
        if keep + len(response_ids) > max_length:
            response_ids = response_ids[:max_length - keep]
            cut_response = True
    return Encoded(prompt_ids + response_ids, [IGNORE] * len(prompt_ids) + list(response_ids),
                   cut_prompt, cut_response)


def tokenize_example(tokenizer, example: Example, max_length: int, template: str = "auto") -> dict:
    """{"input_ids", "labels"} for one training example (labels -100 on the prompt)."""
    enc = encode_example(tokenizer, example, max_length, template)
    return {"input_ids": enc.input_ids, "labels": enc.labels}
