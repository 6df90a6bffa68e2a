"""Batched, resumable generation: one JSONL row per example, written as each batch finishes.

Rows are {id, objective, prompt, output, n_new_tokens, n_prompt_tokens, finish_reason, category}.
`n_new_tokens` counts the tokens the model actually generated for that row, up to and including its
EOS or the token that completed a stop string, never padding. A re-run with the same output path skips
the ids already written; batches are formed the same way every time (and sampling is seeded per batch),
so a resumed run writes the same file as an uninterrupted one. Stop strings end a row (through
transformers' `stop_strings`) and are cut from its output, as in the OpenAI API. A circuit of the
`branched` variant decodes through `negotiax.generation.branched` (one branch per objective, combined each step).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import fingerprint as fp
from ..attach import preference
from ..data import format_prompt
from ..data.schema import Example
from ..io import append_jsonl, read_jsonl
from .branched import branched_generate, decode, encode_prompts, eos_ids
from .config import GenerationConfig

log = logging.getLogger(__name__)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None


def _tokens_until_stop(tokenizer, ids: list[int], stops: list[str]) -> int:
    """The smallest k such that ids[:k] decodes to text containing a stop string (binary search)."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if _first_stop(tokenizer.decode(ids[:mid], skip_special_tokens=True), stops) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo


def finish_row(tokenizer, new_ids: list[int], eos: set[int], stops: list[str]) -> tuple[str, int, str]:
    """(output text, tokens actually generated, finish reason) for one row of generated ids."""
    end = next((i for i, t in enumerate(new_ids) if t in eos), None)
    body = new_ids if end is None else new_ids[:end]
    text = tokenizer.decode(body, skip_special_tokens=True)
    cut = _first_stop(text, stops)
    if cut is not None:  # checked first: after a stop, padding may equal EOS
        return text[:cut], _tokens_until_stop(tokenizer, body, stops), "stop"
    if end is not None:
        return text, end + 1, "eos"
    return text, len(new_ids), "length"


def read_generations(path: Path) -> list[dict]:
    """Rows already written; a line cut off by an interruption is dropped (and the file repaired)."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        lines = fh.readlines()

    partial_line = object()  # stands for the cut-off last line (a JSON `null` line is a row, not this)

    def bad_line(number: int, err) -> object:
        if number != len(lines):
            raise ValueError(f"{path} line {number} is not valid JSON; delete the file or choose another --out")
        log.warning("%s: dropping a partial last line left by an interrupted run", path)  # an interrupted write
        return partial_line

    rows = read_jsonl(path, bad_line=bad_line)
    partial = bool(rows) and rows[-1] is partial_line
    rows = rows[:-1] if partial else rows
    if partial or (lines and not lines[-1].endswith("\n")):
        good = lines[:-1] if partial else lines
        path.write_text("".join(line if line.endswith("\n") else line + "\n" for line in good))
    return rows


def meta_path(path: Path) -> Path:
    """Where a generations file's record lives: its fingerprint, and the decoding read by evaluation."""
    return path.with_name(path.name + ".meta.json")


def generation_settings(model, examples: list[Example], cfg: GenerationConfig, attachment, branched: bool) -> dict:
    """What decides the rows: decoding (batching too: sampling is seeded per batch), the model (dtype, LoRA),
    the circuit's weights and the preference in effect, branched decoding, and the prompt set (ids and text)."""
    prompts = fp.canonical([[ex.id, ex.prompt] for ex in examples])
    return fp.flatten({
        "decoding": cfg.decoding(), "batch_size": cfg.batch_size, "sort_by_length": cfg.sort_by_length,
        "branched": branched, "model": fp.model_identity(model), "circuit": fp.circuit_identity(attachment),
        "prompts": hashlib.sha256(prompts.encode()).hexdigest()})


def _check_settings(path: Path, values: dict, decoding: dict) -> None:
    """Resume `path` only if it was written with exactly these settings; record them for a new file."""
    if not fp.check(meta_path(path), "generation", values, path.is_file() and path.stat().st_size > 0):
        fp.write_record(meta_path(path), "generation", values, decoding=decoding)


def plan_batches(tokenizer, examples: list[Example], texts: list[str], cfg: GenerationConfig) -> list[list[int]]:
    """Example indices per batch; the same every run, so resumed batches match uninterrupted ones."""
    order = list(range(len(examples)))
    if cfg.sort_by_length:
        lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        order.sort(key=lambda i: -lengths[i])
    return [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]


def _hf_generation_config(model, tokenizer, cfg: GenerationConfig):
    gen = model.generation_config.__class__(**model.generation_config.to_dict())
    gen.max_new_tokens = cfg.max_new_tokens
    gen.max_length = None
    gen.do_sample = cfg.do_sample
    gen.temperature = cfg.temperature if cfg.do_sample else None
    gen.top_p = cfg.top_p if cfg.do_sample else None
    gen.top_k = None
    gen.pad_token_id = tokenizer.pad_token_id
    gen.stop_strings = list(cfg.stop) or None
    return gen


def greedy_loop_applies(model, cfg: GenerationConfig) -> bool:
    """Greedy decoding without stop strings, and a generation config that asks for nothing but EOS and padding
    (no repetition penalty, no forced tokens...): `branched.decode` writes exactly what `generate` would."""
    if cfg.do_sample or cfg.stop:
        return False
    gen = model.generation_config
    default = gen.__class__()
    inert = ("eos_token_id", "bos_token_id", "pad_token_id", "decoder_start_token_id", "max_length",
             "max_new_tokens", "use_cache", "do_sample", "temperature", "top_p", "top_k", "transformers_version",
             "_from_model_config", "output_attentions", "output_hidden_states", "return_dict_in_generate")
    changed = {k for k, v in gen.to_diff_dict().items() if k not in inert and getattr(default, k, None) != v}
    return not changed


@torch.inference_mode()
def generate_batch(model, tokenizer, texts: list[str], cfg: GenerationConfig, seed: int) -> list[tuple[str, int, str, int]]:
    """(output, n_new_tokens, finish_reason, n_prompt_tokens) for each prompt text.

    Greedy decoding runs `branched.decode` (one branch), which drops each row from the batch at its EOS: on
    the quick run's circuit, whose refusals are short, the rows still decoding made up 38-60% of the batch
    steps Hugging Face `generate` computes. Sampling and stop strings go through `generate`.
    """
    ids, mask = encode_prompts(tokenizer, texts, next(model.parameters()).device)
    eos = eos_ids(model, tokenizer)
    prompt_lens = mask.sum(1).tolist()
    if greedy_loop_applies(model, cfg):
        new = decode(model, ids, mask, cfg.max_new_tokens, eos=eos).tokens
    else:
        if cfg.do_sample:
            torch.manual_seed(seed)
        gen = _hf_generation_config(model, tokenizer, cfg)
        kwargs = {"tokenizer": tokenizer} if cfg.stop else {}
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen, **kwargs)
        new = out[:, ids.shape[1]:].tolist()
    return [(*finish_row(tokenizer, row, set(eos), cfg.stop), int(n)) for row, n in zip(new, prompt_lens)]


def generate_branched_batch(model, tokenizer, texts: list[str], cfg: GenerationConfig, seed: int,
                            attachment) -> list[tuple[str, int, str, int]]:
    """The `branched` variant: per-objective branches combined at every step by the preference weights."""
    if cfg.do_sample and cfg.top_p < 1:
        log.warning("branched decoding samples from the full combined distribution; top_p=%s is ignored", cfg.top_p)
    out = branched_generate(model, tokenizer, texts, attachment, cfg.max_new_tokens, do_sample=cfg.do_sample,
                            temperature=cfg.temperature, seed=seed if cfg.do_sample else None)
    eos = set(eos_ids(model, tokenizer))
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    return [(*finish_row(tokenizer, ids, eos, cfg.stop), n) for ids, n in zip(out.result.tokens, lengths)]


def _batch_fn(attachment, branched: bool):
    if not branched:
        return generate_batch
    if attachment is None:
        raise ValueError("branched decoding needs an attached pathways or branched circuit")
    return lambda model, tokenizer, texts, cfg, seed: generate_branched_batch(model, tokenizer, texts, cfg, seed,
                                                                              attachment)


def generate(model, tokenizer, examples: list[Example], cfg: GenerationConfig | None = None,
             out_path: str | Path | None = None, attachment=None, branched: bool | None = None) -> list[dict[str, Any]]:
    """Generate an answer for every example; rows in example order. Resumes from `out_path` if it exists.

    `branched=True` decodes the attached pathways by per-objective branches (default: only for a circuit of
    the `branched` variant), e.g. a `pathways` circuit evaluated as the branched baseline.
    An existing `out_path` is resumed only if its recorded settings (`<out_path>.meta.json`) match these;
    otherwise `fingerprint.SettingsChangedError` names the changed keys.
    """
    cfg = cfg or GenerationConfig()
    if branched is None:
        branched = attachment is not None and attachment.circuit.cfg.decodes_by_branch
    batch_fn = _batch_fn(attachment, branched)
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"example id {dup!r} occurs more than once; ids must be unique to resume by id")
    path = Path(out_path) if out_path is not None else None
    with preference(attachment, cfg.preference):
        done: dict[str, dict] = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _check_settings(path, generation_settings(model, examples, cfg, attachment, branched), cfg.decoding())
            done = {row["id"]: row for row in read_generations(path)}
        return _generate_rows(model, tokenizer, examples, cfg, path, done, batch_fn)


def _generate_rows(model, tokenizer, examples: list[Example], cfg: GenerationConfig, path: Path | None,
                   done: dict[str, dict], batch_fn) -> list[dict[str, Any]]:
    ids = [ex.id for ex in examples]
    texts = [format_prompt(tokenizer, ex.prompt, cfg.template) for ex in examples]
    batches = plan_batches(tokenizer, examples, texts, cfg)
    pending = sum(ex.id not in done for ex in examples)
    if done:
        log.info("resuming %s: %d rows done, %d to generate", path, len(examples) - pending, pending)
    with tqdm(total=pending, desc="generate", unit="ex") as bar:
        for b, batch in enumerate(batches):
            todo = [i for i in batch if examples[i].id not in done]
            if not todo:
                continue
            results = batch_fn(model, tokenizer, [texts[i] for i in todo], cfg, cfg.seed + b)
            for i, (output, n_new, reason, n_prompt) in zip(todo, results):
                ex = examples[i]
                done[ex.id] = {"id": ex.id, "objective": ex.objective, "prompt": ex.prompt, "output": output,
                               "n_new_tokens": n_new, "n_prompt_tokens": n_prompt, "finish_reason": reason,
                               "category": ex.category}
            if path is not None:
                append_jsonl(path, [done[examples[i].id] for i in todo], ensure_ascii=False)
            bar.update(len(todo))
    return [done[i] for i in ids]
