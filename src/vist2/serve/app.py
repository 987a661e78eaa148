"""The HTTP side: an OpenAI-compatible FastAPI app in front of the `Batcher`.

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, /health, /metrics.

Notable:
- Bodies are parsed by hand (json + pydantic) so every malformed or invalid request gets one
  OpenAI-style 400 body naming the field; a full waiting queue is a 429.
- The prompt is tokenized and laid out in the handler (a thread), so bad input fails before the
  request reaches the batch; the worker thread hands events back through `call_soon_threadsafe`.
- Streaming follows the OpenAI conventions clients rely on: role delta first, `finish_reason`
  only on the last choice chunk, an optional usage chunk (`stream_options.include_usage`), then
  `data: [DONE]`. A client that goes away cancels its job: the row leaves the batch next step.
- Shutdown (SIGTERM): uvicorn stops listening and waits for the responses in flight; the batcher
  keeps running until then, so streams in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from vist2.engine import Engine, GenerationConfig, last_position_offset
from vist2.errors import Vist2Error
from vist2.layout import TextSegment, build_layout
from vist2.serve import protocol as P
from vist2.serve.batcher import Batcher, Job, QueueFullError
from vist2.serve.metrics import ServerMetrics

log = logging.getLogger("vist2.serve")
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


class APIError(Exception):
    """An error answered with an OpenAI error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", **kw):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.param, self.code = kw.get("param"), kw.get("code")


class _CountResponses:
    """Pure ASGI middleware counting responses by route and status (Starlette's
    BaseHTTPMiddleware would hide client disconnects from `Request.is_disconnected`)."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope["path"]
            self.metrics.http(path if path in ROUTES else "other", status)


@dataclass
class _Served:
    """What a request handler needs of the server."""

    engine: Engine
    batcher: Batcher
    model_name: str
    policy: str
    limits: dict


def create_app(
    engine: Engine,
    model_name: str,
    policy: str = "global",
    max_batch: int = 64,
    max_queue: int = 256,
    max_prompt_tokens: int = 32768,
    default_max_tokens: int = 256,
) -> FastAPI:
    """The app; its lifespan starts and stops the batcher worker."""
    batcher = Batcher(engine, max_batch=max_batch, max_queue=max_queue)
    metrics = ServerMetrics(batcher)
    limits = dict(max_prompt_tokens=max_prompt_tokens, default_max_tokens=default_max_tokens)
    server = _Served(engine, batcher, model_name, policy, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        batcher.stop(timeout=30)

    app = FastAPI(title="vist2", lifespan=lifespan)
    app.state.batcher, app.state.metrics = batcher, metrics

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return JSONResponse(P.error_body(err.message, err.kind, err.param, err.code), err.status)

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        log.exception("request failed")  # a bug: this request fails, the server goes on
        return JSONResponse(P.error_body(f"internal error: {err}", "server_error"), 500)

    app.add_middleware(_CountResponses, metrics=metrics)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "running": batcher.stats.running, "queued": batcher.queue_length}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        body, content_type = metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": model_name, "object": "model", "created": 0, "owned_by": "vist2"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _parse(request, P.ChatCompletionRequest)
        return await _serve(server, request, body, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _parse(request, P.CompletionRequest)
        return await _serve(server, request, body, "text")

    return app


async def _serve(server: _Served, request: Request, body, kind: str):
    """Validate, queue and answer one completion request (streamed or not)."""
    engine, batcher, model_name = server.engine, server.batcher, server.model_name
    if body.model != model_name:
        raise APIError(
            404,
            f"model {body.model!r} does not exist; this server has {model_name!r}",
            param="model",
            code="model_not_found",
        )
    try:
        prepared = await run_in_threadpool(
            _prepare, engine, body, kind, server.policy, server.limits
        )
    except Vist2Error as err:
        raise APIError(400, str(err)) from None
    events: asyncio.Queue = asyncio.Queue()
    job = Job(*prepared, emit=_bridge(asyncio.get_running_loop(), events))
    try:
        batcher.submit(job)
    except QueueFullError:
        raise APIError(
            429,
            f"the server queue is full ({batcher.pending.maxsize} waiting); retry later",
            kind="rate_limit_error",
            code="queue_full",
        ) from None
    rid = P.new_id("chatcmpl" if kind == "chat" else "cmpl")
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        sse = _sse(job, events, kind, rid, model_name, usage)
        # a client that leaves before the stream's first chunk never starts the generator (its
        # `finally` would not run): dropping the response cancels the job all the same
        weakref.finalize(sse, job.cancel)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(sse, media_type="text/event-stream", headers=headers)
    text, finish, usage = await _collect(request, job, events)
    make = P.chat_response if kind == "chat" else P.completion_response
    return make(rid, model_name, text, finish, usage)


async def _parse(request: Request, model):
    """The request body as `model`, or a 400 APIError naming the bad field."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"malformed JSON body: {err}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the JSON body must be an object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(x) for x in first["loc"]) or None
        if first["type"] == "extra_forbidden":
            message = f"unknown field {param!r}"
        else:
            msg = first["msg"].removeprefix("Value error, ")
            message = f"{param}: {msg}" if param else msg
        raise APIError(400, message, param=param, code=first["type"]) from None


def _prepare(engine: Engine, body, kind: str, default_policy: str, limits: dict) -> tuple:
    """(segments, page_texts, prompt_tokens, GenerationConfig) of a request, or Vist2Error."""
    config = GenerationConfig(
        policy=body.policy or default_policy,
        max_new_tokens=body.token_limit() or limits["default_max_tokens"],
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop_strings=body.stop_strings(),
        stop_on_eos=not body.ignore_eos,
    )
    if kind == "chat":
        segments, pages, n_tokens = chat_segments(engine, body.messages, config)
    else:
        segments, pages, n_tokens = engine.prompt_segments(body.prompt, config)
    if n_tokens > limits["max_prompt_tokens"]:
        raise Vist2Error(
            f"the prompt has {n_tokens} tokens, over this server's limit of "
            f"{limits['max_prompt_tokens']} (--max-prompt-tokens)"
        )
    budget = getattr(engine.config.text_config, "max_position_embeddings", None)
    start = int(build_layout(segments, engine.beta).position_ids[-1]) + 1
    last = start + last_position_offset(
        config.max_new_tokens, config.policy, engine.chunk_tokens, engine.beta
    )
    if budget is not None and last >= budget:
        raise Vist2Error(
            f"the prompt takes positions 0-{start - 1} and {config.max_new_tokens} new tokens "
            f"under policy {config.policy!r} reach position {last}, past the model's limit "
            f"({budget}); shorten the prompt or max_tokens"
        )
    return segments, pages, n_tokens, config


def chat_segments(engine: Engine, messages: list[P.Message], config: GenerationConfig):
    """Layout segments of a conversation: the last user message is the query (pages under
    `global`/`prompt`); the chat template around it, earlier turns included, stays raw text."""
    query = messages[-1].text()
    if len(messages) == 1:
        return engine.prompt_segments(query, replace(config, chat=True))
    tokenizer = engine.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise Vist2Error("the model's tokenizer has no chat template; use /v1/completions")
    mark = "\u2063VIST2-QUERY\u2063"
    turns = [{"role": m.role, "content": m.text()} for m in messages[:-1]]
    text = tokenizer.apply_chat_template(
        [*turns, {"role": "user", "content": mark}], tokenize=False, add_generation_prompt=True
    )
    before, after = text.split(mark)
    encode = lambda s: list(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    prefix, middle = encode(before), encode(after)
    segments, pages, n_tokens = engine.prompt_segments(query, replace(config, chat=False))
    segments = [TextSegment(tuple(prefix)), *segments, TextSegment(tuple(middle))]
    return segments, pages, n_tokens + len(prefix) + len(middle)


def _bridge(loop: asyncio.AbstractEventLoop, events: asyncio.Queue):
    """An `emit` for the worker thread: puts events on the request's asyncio queue."""

    def emit(event: tuple) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone (shutting down)
            loop.call_soon_threadsafe(events.put_nowait, event)

    return emit


def _data(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _sse(job: Job, events: asyncio.Queue, kind: str, rid: str, model: str, usage: bool):
    """Server-sent events of one streamed request (OpenAI chunk objects, then [DONE])."""
    created = int(time.time())

    def piece(text: str, finish: str | None = None, role: bool = False) -> str:
        if kind == "text":
            return _data(P.completion_chunk(rid, model, created, text, finish))
        if role:
            delta = {"role": "assistant", "content": ""}
        else:
            delta = {} if finish else {"content": text}  # the last chunk carries no content
        return _data(P.chat_chunk(rid, model, created, delta, finish))

    try:
        if kind == "chat":
            yield piece("", role=True)
        while True:
            event = await events.get()
            if event[0] == "text":
                yield piece(event[1])
            elif event[0] == "done":
                yield piece("", P.OPENAI_FINISH.get(event[1], "stop"))
                if usage:
                    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
                    yield _data(P.usage_chunk(rid, model, created, obj, event[2]))
                yield "data: [DONE]\n\n"
                return
            else:
                yield _data(P.error_body(event[1], "server_error"))
                return
    finally:
        job.cancel()  # frees the row if the client left mid-stream (no-op once finished)


async def _collect(request: Request, job: Job, events: asyncio.Queue) -> tuple[str, str, dict]:
    """Wait for a non-streamed job; cancel it if the client disconnects meanwhile."""
    parts = []
    checked = time.monotonic()
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=0.25)
            except TimeoutError:
                event = None
            if time.monotonic() - checked > 0.25:  # events may never pause: check by the clock
                checked = time.monotonic()
                if await request.is_disconnected():
                    raise APIError(499, "client disconnected")
            if event is None:
                continue
            if event[0] == "text":
                parts.append(event[1])
            elif event[0] == "done":
                return "".join(parts), P.OPENAI_FINISH.get(event[1], "stop"), event[2]
            else:
                raise APIError(500, event[1], kind="server_error")
    finally:
        job.cancel()
