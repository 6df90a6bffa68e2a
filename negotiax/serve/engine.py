"""The dynamic batcher: one thread owns the model and decodes waiting requests together.

Requests that arrive within `batch_window_ms` of the first (up to `max_batch`) form one batch. Each row
carries its own preference β (the circuit takes one row of β per sequence), so requests with different
trade-offs decode in the same forward passes; a base row mutes every objective, which makes the circuit the
exact identity. A row that finishes (EOS, stop string, its max_tokens, or a cancelled request) leaves the
batch at once: its reply is sent, and its KV-cache row, mask row and β row are dropped, so the others
continue without it. Requests that arrive while a batch runs wait for the next one.

Events go back through each job's `emit` callback (called on the engine thread): `Delta(text)` while the
answer grows, then exactly one `Done` or `Failed`.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..generation.branched import _pad_id, _positions, eos_ids
from ..generation.generate import _first_stop

log = logging.getLogger(__name__)


@dataclass
class Delta:
    text: str


@dataclass
class Done:
    text: str
    finish_reason: str  # stop | length | cancelled
    prompt_tokens: int
    completion_tokens: int  # tokens generated, up to and including EOS or the one completing a stop string
    alpha: dict[str, float] | None  # mean negotiation weights over the positions that chose the answer


@dataclass
class Failed:
    message: str


@dataclass
class Job:
    """One request: its tokens, limits, decoding and preference, and where its events go."""

    prompt_ids: list[int]
    max_tokens: int
    beta: dict[str, float] | None = field(default_factory=dict)  # None: the base model (every objective muted)
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    emit: Callable[[object], None] = lambda event: None
    cancelled: threading.Event = field(default_factory=threading.Event)


class _Row:
    """Decoding state of one job inside a batch."""

    def __init__(self, job: Job, engine: "Engine") -> None:
        self.job, self.engine = job, engine
        self.ids: list[int] = []
        self.n = 0  # tokens generated, EOS included
        self.sent = 0  # characters already emitted
        self.shown = ""  # the text of `ids` as last decoded
        self.alpha_sum: torch.Tensor | None = None
        self.steps = 0
        self.done = False
        self.generator = None
        if job.temperature > 0:
            seed = job.seed if job.seed is not None else int(torch.randint(0, 2**62, (1,)))
            self.generator = torch.Generator(device=engine.device).manual_seed(seed)

    def choose(self, logits: torch.Tensor, greedy: int) -> int:
        """The next token from this row's logits (V,): `greedy` (the batch's argmax, computed once per step),
        or sampled with temperature and top-p."""
        if self.generator is None:
            return greedy
        probs = torch.softmax(logits / self.job.temperature, dim=-1)
        if self.job.top_p < 1:
            sorted_p, order = probs.sort(descending=True)
            outside = sorted_p.cumsum(-1) - sorted_p >= self.job.top_p  # keep the smallest nucleus
            probs = probs.scatter(0, order, sorted_p.masked_fill(outside, 0.0))
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def push(self, token: int, alpha: torch.Tensor | None) -> None:
        """Take one generated token; emit the text that is now safe to show; finish when due."""
        if alpha is not None:
            self.alpha_sum = alpha if self.alpha_sum is None else self.alpha_sum + alpha
            self.steps += 1
        self.n += 1
        if token in self.engine.eos:
            return self.finish(self.shown, "stop")  # the ids did not change: the last decoded text stands
        self.ids.append(token)
        text = self.shown = self.text()
        cut = _first_stop(text, self.job.stop)
        if cut is not None:
            return self.finish(text[:cut], "stop")
        if self.n >= self.job.max_tokens:
            return self.finish(text, "length")
        safe = _safe_length(text, self.job.stop)
        if safe > self.sent:
            self.job.emit(Delta(text[self.sent:safe]))
            self.sent = safe

    def text(self) -> str:
        return self.engine.decode(self.ids)

    def finish(self, text: str, reason: str) -> None:
        self.done = True
        if reason != "cancelled" and len(text) > self.sent:
            self.job.emit(Delta(text[self.sent:]))
        alpha = None
        if self.alpha_sum is not None and self.job.beta is not None and self.steps:
            mean = (self.alpha_sum / self.steps).tolist()
            alpha = {name: round(a, 6) for name, a in zip(self.engine.objectives, mean)}
        self.job.emit(Done(text, reason, len(self.job.prompt_ids), self.n, alpha))


def _safe_length(text: str, stops: list[str]) -> int:
    """How much of the text can be shown: not a half-decoded character, nor what may begin a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":  # an incomplete multi-byte character decodes as U+FFFD
        end -= 1
    held = 0  # the longest tail that is the beginning of some stop string
    for stop in stops:
        held = max([held] + [k for k in range(1, min(len(stop), end + 1)) if text[:end].endswith(stop[:k])])
    return end - held


class Engine:
    """Owns the model on one thread; `submit` jobs from any thread."""

    def __init__(self, model, tokenizer, attachment=None, window_ms: float = 10.0, max_batch: int = 16,
                 max_queue: int = 1024) -> None:
        if attachment is not None and attachment.circuit.cfg.decodes_by_branch:
            raise ValueError("the branched variant decodes one branch per objective and cannot be served per "
                             "request; serve a pathways, mac or negotiax circuit, or use --base-only")
        self.model, self.tokenizer, self.attachment = model, tokenizer, attachment
        self.window, self.max_batch = window_ms / 1000, max_batch
        self.device = next(model.parameters()).device
        self.eos = set(eos_ids(model, tokenizer))
        self.pad = _pad_id(tokenizer)
        self.objectives = attachment.circuit.objectives if attachment is not None else []
        self.tokenizer_lock = threading.Lock()  # a fast tokenizer must not be used from two threads at once
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.stats = {"active": 0, "served": 0, "cancelled": 0, "failed": 0, "batches": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="negotiax-engine", daemon=True)

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def cancel_all(self) -> None:
        """Cancel what is queued and running (each gets a cancelled Done); the thread ends after its batch."""
        self._stop.set()
        self._drain()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what is queued and running, and end the thread."""
        self.cancel_all()
        self._thread.join(timeout)
        self._drain()

    def submit(self, job: Job) -> None:
        """Queue a job; raises queue.Full when the server is saturated."""
        if self._stop.is_set():
            raise RuntimeError("the engine is shutting down")
        self.queue.put_nowait(job)

    @property
    def queued(self) -> int:
        return self.queue.qsize()

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        with self.tokenizer_lock:
            return self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids

    def decode(self, ids: list[int]) -> str:
        with self.tokenizer_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _drain(self) -> None:
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return
            self.stats["cancelled"] += 1
            job.emit(Done("", "cancelled", len(job.prompt_ids), 0, None))

    def _next_batch(self) -> list[Job]:
        try:
            batch = [self.queue.get(timeout=0.05)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_batch:
            try:  # whatever already waits joins at once; then wait out the window for more
                batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            rows = [_Row(job, self) for job in batch]
            self.stats["active"] = len(rows)
            self.stats["batches"] += 1
            try:
                self._generate(rows)
            except Exception as err:  # a failing batch must not take the server down
                log.exception("batch of %d failed", len(rows))
                self.stats["failed"] += sum(not r.done for r in rows)
                for row in rows:
                    if not row.done:
                        row.done = True
                        row.job.emit(Failed(f"generation failed: {type(err).__name__}: {err}"))
            finally:
                self.stats["active"] = 0

    def _set_preferences(self, rows: list[_Row]) -> None:
        if self.attachment is None:
            return
        muted = {name: -math.inf for name in self.objectives}
        self.attachment.circuit.set_preference([muted if r.job.beta is None else r.job.beta for r in rows])

    def _finish(self, row: _Row, token: int, alpha) -> None:
        if row.job.cancelled.is_set() or self._stop.is_set():
            self.stats["cancelled"] += 1
            return row.finish("", "cancelled")
        row.push(token, alpha)
        if row.done:
            self.stats["served"] += 1

    @torch.inference_mode()
    def _generate(self, rows: list[_Row]) -> None:
        width = max(len(r.job.prompt_ids) for r in rows)
        ids = torch.tensor([[self.pad] * (width - len(r.job.prompt_ids)) + r.job.prompt_ids for r in rows],
                           device=self.device)
        mask = torch.tensor([[0] * (width - len(r.job.prompt_ids)) + [1] * len(r.job.prompt_ids) for r in rows],
                            device=self.device)
        self._set_preferences(rows)
        past, step_in, pos = None, ids, _positions(mask)
        while rows:
            out = self.model(input_ids=step_in, attention_mask=mask, position_ids=pos, cache=past, use_cache=True,
                             logits_to_keep=1)
            logits, past = out.logits[:, -1].float(), out.cache
            alpha = self.attachment.alpha() if self.attachment is not None else None
            alpha = alpha[:, -1].float().cpu() if alpha is not None else None  # the position that chose the token
            greedy = logits.argmax(-1).tolist()  # one device sync per step, not one per row
            tokens = [row.choose(logits[i], greedy[i]) for i, row in enumerate(rows)]
            for i, row in enumerate(rows):
                self._finish(row, tokens[i], None if alpha is None else alpha[i])
            keep = [i for i, row in enumerate(rows) if not row.done]
            self.stats["active"] = len(keep)
            if not keep:
                break
            if len(keep) < len(rows):  # finished rows leave the batch: drop their cache, mask and β rows
                index = torch.tensor(keep, device=self.device)
                past.batch_select_indices(index)
                mask = mask[index]
                rows = [rows[i] for i in keep]
                tokens = [tokens[i] for i in keep]
                self._set_preferences(rows)
            step_in = torch.tensor(tokens, device=self.device).unsqueeze(-1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
            pos = _positions(mask)[:, -1:]
