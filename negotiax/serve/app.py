"""FastAPI routes: the OpenAI chat and completions API, the `negotiax` extension, auth, limits, SSE.

Every error is an OpenAI-style body, {"error": {"message", "type", "param", "code"}}, where `param` names
the offending field (e.g. "negotiax.preference.kind", "max_tokens"). The API key is compared in constant
time and never logged.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import queue
import signal
import threading
import time
import uuid
from importlib import resources
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..data import format_prompt
from ..data.formatting import resolve_template
from .config import ServeConfig
from .engine import Delta, Done, Engine, Failed, Job

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class NegotiaxOptions(BaseModel):
    """The extension: β per objective (finite; 0 when absent) and objectives to mute."""

    model_config = ConfigDict(extra="forbid")
    preference: dict[str, float] = Field(default_factory=dict)
    mute: list[str] = Field(default_factory=list)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class Common(BaseModel):
    """The fields both endpoints share; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=1)  # one choice per request
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    negotiax: NegotiaxOptions | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stops) or len(stops) > 4:
            raise ApiError(400, "stop: give up to 4 non-empty strings", "stop")
        return stops


class ChatRequest(Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(Common):
    prompt: str | list[str]


async def parse(request: Request, model: type[BaseModel]):
    """The body as `model`; any content type is read as JSON. Errors name the field."""
    try:
        data = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}", "body", "invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", "body", "invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise ApiError(400, f"{param}: {message}", param) from None


class Server:
    """The state behind the routes: the engine, the limits and the served model ids."""

    def __init__(self, engine: Engine, cfg: ServeConfig, api_key: str | None = None) -> None:
        self.engine, self.cfg, self._key = engine, cfg, api_key
        self.base_only = engine.attachment is None
        self.base_id = cfg.model_name if self.base_only else f"{cfg.model_name}:base"
        self.context = int(getattr(engine.model.config, "max_position_embeddings", 0) or 0) or None
        self.created = int(time.time())

    def check_key(self, request: Request) -> None:
        if self._key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._key}".encode()):
            raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    def models(self) -> list[str]:
        return [self.base_id] if self.base_only else [self.cfg.model_name, self.base_id]

    def beta(self, req: Common) -> dict[str, float] | None:
        """The row's preference: None for the base model, else β with mutes as -inf."""
        if req.model not in self.models():
            raise ApiError(404, f"model {req.model!r} is not served here; choose one of {self.models()}", "model",
                           "model_not_found")
        opts = req.negotiax or NegotiaxOptions()
        if req.model == self.base_id:
            if opts.preference or opts.mute:
                raise ApiError(400, f"model {req.model!r} is the backbone alone: it has no objectives to weigh",
                               "negotiax")
            return None
        objectives = self.engine.objectives
        for name, beta in opts.preference.items():
            if name not in objectives:
                raise ApiError(400, f"unknown objective {name!r} in negotiax.preference; this circuit has "
                               f"{objectives}", f"negotiax.preference.{name}")
            if not math.isfinite(beta):
                raise ApiError(400, f"negotiax.preference.{name}={beta}: give a finite number (silence an objective "
                               "with negotiax.mute)", f"negotiax.preference.{name}")
        for name in opts.mute:
            if name not in objectives:
                raise ApiError(400, f"unknown objective {name!r} in negotiax.mute; this circuit has {objectives}",
                               "negotiax.mute")
        return {**opts.preference, **{name: -math.inf for name in opts.mute}}

    def prompt_ids(self, req: ChatRequest | CompletionRequest) -> tuple[list[int], str]:
        if isinstance(req, ChatRequest):
            tokenizer = self.engine.tokenizer
            messages = [{"role": m.role, "content": m.text()} for m in req.messages]
            if resolve_template(tokenizer, self.cfg.template) == "chat":
                try:
                    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                except Exception as err:  # the template's own checks (Jinja raises its own error types)
                    raise ApiError(400, f"messages: the model's chat template refused them: {err}",
                                   "messages") from None
            else:  # no chat template: the whole conversation as one Alpaca instruction
                text = format_prompt(tokenizer, "\n\n".join(m["content"] for m in messages), "alpaca")
            return self.engine.encode(text, add_special_tokens=False), "messages"
        prompt = req.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(400, "prompt: send one prompt per request (a list of several is not supported)",
                               "prompt")
            prompt = prompt[0]
        return self.engine.encode(prompt, add_special_tokens=True), "prompt"

    def job(self, req: ChatRequest | CompletionRequest) -> Job:
        beta = self.beta(req)
        stops = req.stops()
        ids, field = self.prompt_ids(req)
        if not ids:
            raise ApiError(400, f"{field}: the prompt is empty", field)
        asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
        name = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
        if asked is not None and asked > self.cfg.max_tokens_cap:
            raise ApiError(400, f"{name}={asked} is above this server's cap of {self.cfg.max_tokens_cap}", name)
        room = None if self.context is None else self.context - len(ids)
        if room is not None and room < 1:
            raise ApiError(400, f"{field}: the prompt is {len(ids)} tokens; this model's context is "
                           f"{self.context} tokens", field, "context_length_exceeded")
        if asked is not None and room is not None and asked > room:
            raise ApiError(400, f"{name}={asked} does not fit: the prompt is {len(ids)} tokens and the context "
                           f"{self.context}, so at most {room} new tokens", name, "context_length_exceeded")
        max_tokens = asked or min(self.cfg.default_max_tokens, room or self.cfg.default_max_tokens)
        return Job(ids, max_tokens, beta, temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=stops)


def _events(server: Server, job: Job) -> asyncio.Queue:
    """Submit the job; its events arrive on the returned asyncio queue."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def emit(event) -> None:  # called on the engine thread
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the event loop is closed (shutdown): nobody is waiting any more
            job.cancelled.set()

    job.emit = emit
    try:
        server.engine.submit(job)
    except queue.Full:
        raise ApiError(503, "the server is busy; retry later", code="overloaded", kind="server_error") from None
    except RuntimeError as err:
        raise ApiError(503, str(err), code="shutting_down", kind="server_error") from None
    return events


def _negotiax(job: Job, done: Done) -> dict:
    beta = None if job.beta is None else {k: v for k, v in job.beta.items() if math.isfinite(v)}
    muted = [] if job.beta is None else [k for k, v in job.beta.items() if not math.isfinite(v)]
    return {"preference": beta, "mute": muted, "alpha": done.alpha}


def _usage(done: Done) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def _choice(chat: bool, text: str | None, finish: str | None, first: bool = False, stream: bool = False) -> dict:
    if not chat:
        return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
    if not stream:
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                "logprobs": None}
    delta = ({"role": "assistant"} if first else {}) | ({"content": text} if text is not None else {})
    return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}


async def _complete(server: Server, req, chat: bool):
    job = server.job(req)
    events = _events(server, job)
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
            "model": req.model}
    obj = "chat.completion" if chat else "text_completion"
    if not req.stream:
        try:
            while True:
                event = await events.get()
                if isinstance(event, Failed):
                    raise ApiError(500, event.message, kind="server_error")
                if isinstance(event, Done):
                    break
            if event.finish_reason == "cancelled":
                raise ApiError(503, "the server is shutting down; the request was cancelled",
                               code="shutting_down", kind="server_error")
        finally:
            job.cancelled.set()  # no-op when finished; frees the slot if this request was abandoned
        return JSONResponse({**head, "object": obj, "choices": [_choice(chat, event.text, _reason(event))],
                             "usage": _usage(event), "negotiax": _negotiax(job, event)})
    usage = bool((req.stream_options or {}).get("include_usage"))
    return StreamingResponse(_stream(job, events, head, chat, usage), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _reason(done: Done) -> str:
    return "length" if done.finish_reason == "length" else "stop"


async def _stream(job: Job, events: asyncio.Queue, head: dict, chat: bool, usage: bool):
    obj = "chat.completion.chunk" if chat else "text_completion"

    def sse(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    try:
        if chat:
            yield sse({**head, "object": obj, "choices": [_choice(True, "", None, first=True, stream=True)]})
        while True:
            event = await events.get()
            if isinstance(event, Delta):
                yield sse({**head, "object": obj, "choices": [_choice(chat, event.text, None, stream=True)]})
            elif isinstance(event, Failed):
                yield sse(error_body(event.message, kind="server_error"))
                break
            elif event.finish_reason == "cancelled":
                yield sse(error_body("the server is shutting down; the answer was cut", code="shutting_down",
                                     kind="server_error"))
                break
            else:
                final = {**head, "object": obj, "choices": [_choice(chat, None, _reason(event), stream=True)],
                         "negotiax": _negotiax(job, event)}
                yield sse(final | ({"usage": None} if usage else {}))
                if usage:
                    yield sse({**head, "object": obj, "choices": [], "usage": _usage(event)})
                break
        yield "data: [DONE]\n\n"
    finally:  # the client went away (or we are done): either way the slot is freed
        job.cancelled.set()


class BodyLimit:
    """ASGI middleware: refuse request bodies over the limit (400, as every other bad input) before they reach the routes."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._too_large(scope, receive, send)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as Starlette expects

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send) -> None:
        response = JSONResponse(error_body(f"the request body is over this server's limit of {self.limit} bytes",
                                           "body", "request_too_large"), status_code=400)
        await response(scope, receive, send)


def create_app(engine: Engine, cfg: ServeConfig, api_key: str | None = None) -> FastAPI:
    """The ASGI app; the engine must be started (and stopped) by the caller or the lifespan."""
    server = Server(engine, cfg, api_key)
    page_html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")  # read once
    app = FastAPI(title="NegotiaX", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body(f"internal error: {type(err).__name__}", kind="server_error"), 500)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return JSONResponse(error_body(err.message, err.param, err.code, err.kind), status_code=err.status)

    async def auth(request: Request) -> None:  # a dependency: runs before the body is read
        server.check_key(request)

    @app.get("/health")
    async def health():
        stats = dict(server.engine.stats)
        return {"status": "ok", "models": server.models(), "queued": server.engine.queued, **stats}

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def models():
        info = {"objectives": server.engine.objectives, "context": server.context,
                "max_tokens_cap": cfg.max_tokens_cap}
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": server.created, "owned_by": "negotiax",
             "negotiax": info if name != server.base_id else {"objectives": [], "context": server.context,
                                                             "max_tokens_cap": cfg.max_tokens_cap}}
            for name in server.models()]}

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat(request: Request):
        return await _complete(server, await parse(request, ChatRequest), chat=True)

    @app.post("/v1/completions", dependencies=[Depends(auth)])
    async def completions(request: Request):
        return await _complete(server, await parse(request, CompletionRequest), chat=False)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return page_html

    return BodyLimit(app, cfg.max_body_bytes)


def _uvicorn_server(config, on_signal):
    """uvicorn's Server, except that the first Ctrl-C / SIGTERM also calls `on_signal`, and after the graceful
    stop it returns normally (uvicorn re-raises the signal, which would kill the process before the engine is
    stopped)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if not self.should_exit:
                on_signal()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server(config)


def serve(model, tokenizer, attachment, cfg: ServeConfig) -> None:
    """Run the server until Ctrl-C / SIGTERM: running requests get `graceful_shutdown_s`, then are cancelled."""
    import uvicorn

    api_key = None
    if cfg.api_key_env:
        api_key = os.environ.get(cfg.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env {cfg.api_key_env}: that environment variable is unset or empty")
    engine = Engine(model, tokenizer, attachment, cfg.batch_window_ms, cfg.max_batch, cfg.max_queue).start()
    app = create_app(engine, cfg, api_key)
    # Running requests get the grace period; then the engine cancels them, so their streams end cleanly
    # before uvicorn's own deadline (a backstop) would cut the connections.
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None, lifespan="off",
                            timeout_graceful_shutdown=cfg.graceful_shutdown_s + 10)

    def on_signal() -> None:
        log.info("stopping: running requests get %g s to finish", cfg.graceful_shutdown_s)
        timer = threading.Timer(cfg.graceful_shutdown_s, engine.cancel_all)
        timer.daemon = True
        timer.start()

    log.info("serving %s on http://%s:%d (API key %s)", ", ".join(app.app.state.server.models()), cfg.host,
             cfg.port, "required" if api_key else "not required")
    try:
        _uvicorn_server(config, on_signal).run()
    finally:
        engine.stop()
        log.info("stopped: %s", engine.stats)
