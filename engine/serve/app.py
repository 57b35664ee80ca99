"""The HTTP side of the server: FastAPI routes for ``/v1/models``, ``/v1/chat/completions`` and
``/v1/completions``, streaming as server-sent events, every refusal as OpenAI's error JSON.

A route checks the key, reads a bounded body, validates it, renders and tokenises the prompt,
and queues one row (``engine.serve.scheduler``); the batch worker's tokens come back through an
asyncio queue and leave as text. A client that goes away (a closed stream, or a dropped
connection while it waits for a whole answer) cancels its row, which stops generating at the
next token. No endpoint reads or writes a file: ``model`` is looked up among the served names,
never opened as a path.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.chat.rows import FINISH_CANCELLED, RowRequest
from engine.errors import StudioError
from engine.serve.events import RequestLogged
from engine.serve.protocol import (DEFAULT_TEMPERATURE, DEFAULT_TOP_P, Answer, ApiError, ChatRequest,
                                   CompletionRequest, parse, usage)
from engine.serve.scheduler import DONE, FAILED, STOPPING, Job, QueueFull, Scheduler
from engine.serve.served import ServedModels
from engine.serve.stats import StatsRecorder

MAX_BODY_BYTES = 2 * 1024 * 1024  # far above any prompt a context holds; a bound on what is read
DISCONNECT_POLL_S = 0.5  # how often a client waiting for a whole answer is checked for having left


@dataclass
class ServeState:
    """What the routes share: the served names, the queue, the key, and who is told of requests."""

    served: ServedModels
    scheduler: Scheduler
    api_key: Optional[str]
    stats: StatsRecorder
    on_event: Optional[Callable[[RequestLogged], None]] = None


class _Record:
    """One request's log line, filled in as the request goes and sent once it has been answered."""

    def __init__(self, state: ServeState, request: Request, endpoint: str) -> None:
        self.state = state
        client = request.client
        self.event = RequestLogged(at=time.time(), client=f"{client.host}:{client.port}" if client else "",
                                   endpoint=endpoint, model="", status=200, stream=False, prompt_tokens=0,
                                   completion_tokens=0, seconds=0.0)
        self._started = time.monotonic()

    def finish(self, status: int, error: Optional[str] = None) -> None:
        self.event.status, self.event.error = status, error
        self.event.seconds = time.monotonic() - self._started
        self.state.stats.record(status, self.event.completion_tokens)
        if self.state.on_event is not None:
            self.state.on_event(self.event)


def build_app(state: ServeState) -> FastAPI:
    # No interactive docs or schema: nothing but the API is served.
    app = FastAPI(title="LoRA Studio", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(ApiError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _authorize(state, request)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "lora-studio"}
                                           for name in state.served.names]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _complete(state, request, "/v1/chat/completions", chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _complete(state, request, "/v1/completions", chat=False)

    return app


def _authorize(state: ServeState, request: Request) -> None:
    if state.api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, key = given.partition(" ")
    # compare_digest takes as long whatever the key shares with the right one: no timing hints.
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), state.api_key.encode()):
        raise ApiError(401, "a valid API key is needed: send it as 'Authorization: Bearer KEY'",
                       kind="authentication_error", code="invalid_api_key")


async def _read_json(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request is over {MAX_BODY_BYTES // (1024 * 1024)} MiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request is over {MAX_BODY_BYTES // (1024 * 1024)} MiB")
    try:
        return json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both are
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: nested too deeply") from None


async def _complete(state: ServeState, request: Request, endpoint: str, *, chat: bool) -> Any:
    record = _Record(state, request, endpoint)
    try:
        _authorize(state, request)
        body = parse(ChatRequest if chat else CompletionRequest, await _read_json(request))
        record.event.model, record.event.stream = body.model, body.stream
        body.refuse_unsupported()
        stops = body.stop_strings()
        adapter = state.served.adapter_for(body.model)
        if chat:
            messages = [message.as_chat_message() for message in body.messages]
            prompt_ids = await run_in_threadpool(state.served.chat_ids, body.model, messages)
        else:
            prompt_ids = await run_in_threadpool(state.served.text_ids, body.prompt_text())
        record.event.prompt_tokens = len(prompt_ids)
        state.served.check_length(len(prompt_ids))
        row = _row(body, prompt_ids, state.served.vocabulary)
        reply = _Reply(state, row, adapter, stops, chat=chat)
    except ApiError as exc:
        record.finish(exc.status, exc.message)
        raise
    answer = Answer(body.model, chat=chat)
    if body.stream:
        return StreamingResponse(_stream(reply, answer, record, body.include_usage()),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await _whole(reply, answer, record, request)


def _row(body: Any, prompt_ids: list[int], vocabulary: int) -> RowRequest:
    top_k = body.top_k if body.top_k not in (None, -1) else 0  # vLLM's -1, like 0, is off
    row = RowRequest(prompt_ids=prompt_ids, max_new_tokens=body.wanted_tokens(),
                     temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
                     top_p=DEFAULT_TOP_P if body.top_p is None else body.top_p, top_k=top_k,
                     repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
                     seed=body.seed, logit_bias=body.token_biases(vocabulary))
    try:
        row.check()
    except StudioError as exc:
        raise ApiError(400, str(exc)) from None
    return row


class _Reply:
    """One queued row, read back as text as its tokens come."""

    def __init__(self, state: ServeState, row: RowRequest, adapter: Optional[str], stops: list[str], *,
                 chat: bool) -> None:
        self.row = row
        self.text = state.served.reply_text(stops, chat=chat)
        self.tokens = 0
        self.finish_reason: Optional[str] = None
        loop = asyncio.get_running_loop()
        self._queue: "asyncio.Queue[tuple[str, Any]]" = asyncio.Queue()

        def deliver(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, item)
            except RuntimeError:  # the loop has closed: the server is gone, and the client with it
                row.cancel.set()

        try:
            state.scheduler.submit(Job(adapter=adapter, row=row, deliver=deliver))
        except QueueFull as exc:
            raise ApiError(429, str(exc), kind="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": str(exc.retry_after_s)}) from None
        except StudioError as exc:
            raise ApiError(503, str(exc), kind="server_error") from None

    async def pieces(self, timeout: Optional[float] = None) -> AsyncIterator[Optional[str]]:
        """The reply's text as it comes; None when ``timeout`` passes with nothing new (the caller
        checks on its client and asks again). Ends when the reply does; ``ApiError`` if it failed."""
        while self.finish_reason is None:
            try:
                kind, value = await asyncio.wait_for(self._queue.get(), timeout)
            except asyncio.TimeoutError:
                yield None
                continue
            if kind == FAILED:
                raise ApiError(500, value, kind="server_error")
            if kind == STOPPING:
                raise ApiError(503, value, kind="server_error")
            if kind == DONE:
                self.tokens = value.tokens
                self.finish_reason = "stop" if self.text.stopped else value.finish_reason
                piece = self.text.push(None)
            else:
                piece = self.text.push(value)
                if self.text.stopped:
                    self.row.cancel.set()  # a stop string was met: generate no further
            if piece:
                yield piece

    def cancel(self) -> None:
        self.row.cancel.set()


async def _whole(reply: _Reply, answer: Answer, record: _Record, request: Request) -> Any:
    parts: list[str] = []
    try:
        async for piece in reply.pieces(timeout=DISCONNECT_POLL_S):
            if piece is None:
                if await request.is_disconnected():
                    reply.cancel()
                    record.finish(499, "the client went away")
                    return JSONResponse({}, status_code=499)
                continue
            parts.append(piece)
    except ApiError as exc:
        record.finish(exc.status, exc.message)
        raise
    record.event.completion_tokens = reply.tokens
    if reply.finish_reason == FINISH_CANCELLED:  # the server stopped under it
        record.finish(503, "the server stopped")
        raise ApiError(503, "the server stopped before the reply was finished", kind="server_error")
    record.finish(200)
    return answer.whole("".join(parts), reply.finish_reason or "length", usage(len(reply.row.prompt_ids), reply.tokens))


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(reply: _Reply, answer: Answer, record: _Record, include_usage: bool) -> AsyncIterator[str]:
    status, error = 499, "the client went away"  # unless the stream gets to its end
    try:
        if answer.chat:
            yield _event(answer.chunk(first=True))
        async for piece in reply.pieces():
            yield _event(answer.chunk(piece))
        record.event.completion_tokens = reply.tokens
        if reply.finish_reason == FINISH_CANCELLED:
            status, error = 503, "the server stopped before the reply was finished"
            yield _event(ApiError(503, error, kind="server_error").body())
        else:
            yield _event(answer.chunk(finish_reason=reply.finish_reason))
            if include_usage:
                yield _event(answer.usage_chunk(usage(len(reply.row.prompt_ids), reply.tokens)))
            status, error = 200, None
        yield "data: [DONE]\n\n"
    except ApiError as exc:
        status, error = exc.status, exc.message
        yield _event(exc.body())
        yield "data: [DONE]\n\n"
    finally:
        reply.cancel()  # a no-op after the end; for a client that left, generation stops at the next token
        record.event.completion_tokens = reply.tokens
        record.finish(status, error)
