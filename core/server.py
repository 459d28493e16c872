"""`aitk serve`: an OpenAI-compatible HTTP server over the chat engine.

POST /v1/chat/completions (SSE streaming and not), GET /v1/models, GET /health. The whole
message history is used (AI Toolkit's server answers only the last message). Concurrent
requests are batched on one decode thread: those that arrive together and can share a
generator (same adapter and search options) decode in one batch, a step of which costs little
more than one answer's; batches take turns, so every stream progresses and none waits for
another to finish. A greedy answer is the same in a batch as alone. FastAPI is imported only here.

Faults stay with the request that caused them: anything raised while starting or decoding one
answer fails that request alone with an OpenAI error object; only a bug in the decode loop itself
can stop the decoder, and then `/health` answers 503 and every request fails at once (never hangs).
Generation options follow core.generation: project `[inference]` < config.toml `[chat]` < request;
a request naming `max_tokens` that does not fit the context is refused with the numbers (400
`context_length_exceeded`), one leaving it out gets the default capped to what fits.
"""


import asyncio
import hmac
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import generation
from .chat import BASE, Batch, GenaiChatEngine, GenerationOptions, Prepared, public_adapters
from .errors import AitkError

MAX_BODY_BYTES = 8 * 1024 * 1024  # a full 128k-token context is ~0.5 MB of text; 8 MB is generous
MAX_DEPTH = 32  # an OpenAI chat body nests 5 levels; deeper is a malformed or hostile body
POLL_S = 0.1  # how often a waiting request looks at its client and at the decoder
GRACE_S = 30  # SIGTERM: in-flight answers get this long to finish


@dataclass
class Request:
    messages: list[dict]
    options: GenerationOptions
    adapter: str | None
    stop_strings: list[str]
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    strict: bool = False  # max_tokens was asked for: refuse rather than cap (core.generation.fit)
    checked: float = 0.0  # when its client was last seen connected (time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)


TURN_S = 0.01
MAX_BATCH = 16  # answers per generator; the KV cache grows with it, the cost of a step barely does


class DecoderStopped(AitkError):
    pass


@dataclass
class Member:
    """A request inside a batch: its row, and text decoded but not yet sent (`held` may be the
    start of a stop string, so it waits for the next piece to tell). `answer` is what is left to
    decode: the whole answer, or its rest after `before` tokens decoded in a batch that failed."""

    req: Request
    answer: Prepared
    row: int = 0
    before: int = 0
    new: list[str] = field(default_factory=list)
    held: str = ""
    ended: bool = False
    announced: bool = False  # its ("start", ...) item has been sent

    def __post_init__(self):
        self.prompt_tokens, self.cap = self.answer.prompt_tokens, self.answer.max_new_tokens


@dataclass
class Run:
    batch: Batch
    members: list[Member]


def group(members: list[Member], context_length: int | None, limit: int = MAX_BATCH) -> list[list[Member]]:
    """Requests that can share a generator, in arrival order: same model, adapter and search
    options (`Prepared.batch_key`), at most `limit`, and padded to the group's longest prompt the
    longest answer still fits the context (a request that does not waits for a group of its own)."""
    groups: list[list[Member]] = []
    for m in members:
        for g in groups:
            if g[0].answer.batch_key == m.answer.batch_key and len(g) < limit and (
                    context_length is None or max(x.answer.prompt_tokens for x in (*g, m))
                    + max(x.answer.max_new_tokens for x in (*g, m)) <= context_length):
                g.append(m)
                break
        else:
            groups.append([m])
    return groups


def _put_all(queue_: asyncio.Queue, items: tuple) -> None:
    for item in items:
        queue_.put_nowait(item)


class Decoder:
    """One thread owns every generator. The requests waiting when it looks are prepared (context
    rule, tokens) and grouped (`group`): each group shares one generator, a batch, which decodes
    all its answers in one step for little more than one answer costs. Batches advance
    round-robin, a turn each: a request arriving while others decode starts at once in a batch of
    its own, so none waits for another to finish.

    Faults stay with their request: one that cannot be prepared or decoded into text fails
    alone; when a batch's step fails, the batch is split and each of its requests goes on alone
    from the tokens it has (greedy: the same answer), so only the one at fault fails.

    Items sent to a request's queue: ("start", prompt_tokens, max_new_tokens) once its answer
    has started (with its first turn's text: a first step that fails is then an error status,
    not a 200 and a broken stream), then text pieces, then ("done", finish_reason, tokens,
    prompt_tokens); or an exception instead, after which nothing more comes. A turn's items for
    one request go over in one hand-over: each wakes the event loop and costs a GIL switch, and
    with the tiny model those were most of a short request's server time."""

    def __init__(self, engine: GenaiChatEngine):
        self.engine = engine
        self.inbox: queue.Queue[Request | None] = queue.Queue()
        self.error: str | None = None
        self.stats = {"answered": 0, "failed": 0, "cancelled": 0, "tokens": 0, "batched": 0}
        self._runs: list[Run] = []
        self.thread = threading.Thread(target=self._run, name="aitk-decoder", daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.error is None and self.thread.is_alive()

    def submit(self, req: Request) -> None:
        if not self.alive:
            raise DecoderStopped(f"the decoder has stopped ({self.error or 'shut down'})", "restart `aitk serve`")
        self.inbox.put(req)

    def close(self) -> None:
        self.inbox.put(None)
        self.thread.join(5)

    @staticmethod
    def _send(req: Request, *items) -> None:
        try:
            req.loop.call_soon_threadsafe(_put_all, req.out, items)
        except RuntimeError:
            req.cancel.set()  # its event loop is gone (server shutting down): nobody to answer

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - record why, then fail every waiting request
            self.error = f"{type(e).__name__}: {e}"
            stopped = DecoderStopped(f"the decoder stopped ({self.error})", "restart `aitk serve`")
            for run in self._runs:
                for m in run.members:
                    self._send(m.req, stopped)
            while True:
                try:
                    req = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if req is not None:
                    self._send(req, stopped)

    def _fail(self, req: Request, error: Exception) -> None:
        self.stats["failed"] += 1
        self._send(req, error)

    def _loop(self) -> None:
        while True:
            arrived: list[Member] = []
            block = not self._runs
            while True:
                try:
                    req = self.inbox.get(block=block)
                except queue.Empty:
                    break
                if req is None:
                    return
                block = False
                try:
                    answer = self.engine.prepare(req.messages, req.options, adapter=req.adapter, trim=False,
                                                 strict=req.strict)
                except Exception as e:  # noqa: BLE001 - this request fails, the decoder serves on
                    self._fail(req, e)
                    continue
                arrived.append(Member(req, answer))
            for members in group(arrived, self.engine.context_length):
                self._start(members)
            for run in list(self._runs):
                self._turn(run)

    def _start(self, members: list[Member]) -> None:
        try:
            batch = self.engine.start([m.answer for m in members])
        except Exception as e:  # noqa: BLE001 - find the request at fault: each starts alone
            if len(members) > 1:
                for m in members:
                    self._start([m])
            else:
                self._fail(members[0].req, e)
            return
        for row, m in enumerate(members):
            m.row = row
        if len(members) > 1:
            self.stats["batched"] += len(members)
        self._runs.append(Run(batch, members))

    def _turn(self, run: Run) -> None:
        """Steps of one batch for up to TURN_S (with the tiny model that is many tokens per hand-over
        to the event loop, which costs more than decoding one), then each request gets its text."""
        batch, members = run.batch, run.members
        turn_end = time.perf_counter() + TURN_S
        try:
            while True:
                for m in [m for m in members if m.req.cancel.is_set()]:  # the client hung up (or shutdown)
                    members.remove(m)
                    batch.drop(m.row)
                    self.stats["cancelled"] += 1
                    self.stats["tokens"] += m.before + batch.tokens[m.row]
                if batch.done:
                    break
                for row, piece, ended in batch.step():
                    m = next(m for m in members if m.row == row)
                    if isinstance(piece, Exception):
                        members.remove(m)
                        self._fail(m.req, piece)
                        continue
                    m.new.append(piece)
                    m.ended = ended
                if batch.done or time.perf_counter() >= turn_end:
                    break
        except Exception as e:  # noqa: BLE001 - find the request at fault: each goes on alone
            self._runs.remove(run)
            batch.close()
            if len(members) == 1:
                self._fail(members[0].req, e)
                return
            for m in members:
                if m.ended:  # its answer was complete before the failing step
                    self._deliver(m, m.before + batch.tokens[m.row])
                    continue
                done = batch.generated[m.row]
                m.before += len(done)
                m.answer = m.answer.continued(done)
                self._start([m])
            return
        for m in list(members):
            try:
                finished = self._deliver(m, m.before + batch.tokens[m.row])
            except Exception as e:  # noqa: BLE001 - report to that client, keep serving the others
                finished = True
                self._fail(m.req, e)
            if finished:
                members.remove(m)
                batch.drop(m.row)
        if batch.done:
            self._runs.remove(run)

    def _deliver(self, m: Member, tokens: int) -> bool:
        """Send the member's new text, cut at the first stop string; True once its answer is done."""
        req = m.req
        text = m.held + "".join(m.new)
        m.new.clear()
        stops = [s for s in req.stop_strings if s]
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        finished = None
        if cut >= 0:
            text, m.held, finished = text[:cut], "", "stop"
            req.cancel.set()
        elif m.ended:
            m.held = ""
            finished = "length" if tokens >= m.cap else "stop"
        else:  # hold back an end of the text that a stop string may start with
            keep = max((k for s in stops for k in range(len(s) - 1, 0, -1) if text.endswith(s[:k])), default=0)
            text, m.held = (text[:-keep], text[-keep:]) if keep else (text, "")
        items: list = [] if m.announced else [("start", m.prompt_tokens, m.cap)]
        m.announced = True
        if text:
            items.append(text)
        if finished is not None:
            self.stats["answered"] += 1
            self.stats["tokens"] += tokens
            items.append(("done", finished, tokens, m.prompt_tokens))
        if items:
            self._send(req, *items)
        return finished is not None


def model_names(name: str, engine: GenaiChatEngine, default: str | None = None) -> dict[str, str | None]:
    """Public model name -> adapter (None = base). The bare name answers with `default` (what a
    deployment chose, AITK_ADAPTER); then `name:base` still reaches the base model."""
    names = {name: default}
    names.update({f"{name}:{a}": a for a in public_adapters(engine)})  # `tuned`: the active one
    if default is not None:
        names[f"{name}:base"] = None
    return names


def check_adapter(engine: GenaiChatEngine, adapter: str | None) -> str | None:
    """None for the base model ("" and "base" too); an adapter the model has; else a clear error."""
    if adapter in (None, "", "base", BASE):
        return None
    if adapter not in public_adapters(engine):
        raise AitkError(f"no adapter {adapter!r} in this model",
                        f"choose one of: base, {', '.join(public_adapters(engine)) or '(none exported)'}")
    return adapter


class ApiError(Exception):
    """Answered as OpenAI's error object: {"error": {"message", "type", "code", "param"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def body(self) -> bytes:
        return json.dumps({"error": {"message": self.message, "type": self.kind, "code": self.code,
                                     "param": self.param}}).encode()


def _api_error(e: Exception) -> ApiError:
    """The HTTP answer for an exception from the engine or the decoder."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, generation.ContextOverflow):
        return ApiError(400, str(e), code=e.code, param="max_tokens" if e.prompt_tokens < e.context_length
                        else "messages")
    if isinstance(e, DecoderStopped):
        return ApiError(503, str(e), "server_error", "decoder_stopped")
    if isinstance(e, AitkError):
        return ApiError(400, str(e))
    return ApiError(500, f"the answer failed: {type(e).__name__}: {e}", "server_error")


class Guard:
    """Pure ASGI middleware (a BaseHTTPMiddleware would hide client disconnects from handlers):
    the API key on every path but /health, and the body-size limit from Content-Length."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.key, self.max_body = app, (api_key or "").encode(), max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key and scope["path"] != "/health":
            scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
            # Any case of "Bearer" (RFC 7235); compare_digest so timing does not leak the key.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                return await self._reply(send, ApiError(
                    401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "authentication_error",
                    "invalid_api_key"))
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await self._reply(send, ApiError(400, "Content-Length is not a number"))
            if int(length) > self.max_body:
                return await self._reply(send, _too_large(self.max_body))
        return await self.app(scope, receive, send)

    @staticmethod
    async def _reply(send, err: ApiError) -> None:
        body = err.body()
        await send({"type": "http.response.start", "status": err.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than {limit // (1024 * 1024)} MB", code="request_too_large")


async def read_json(request, limit: int):
    """The request's JSON body, or an ApiError: too large (chunked bodies too), not UTF-8, not
    JSON, or nested deeper than MAX_DEPTH (which would otherwise exhaust the parser's stack)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise _too_large(limit)
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"the body is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        body = json.loads(text)
    except RecursionError:
        raise ApiError(400, f"the JSON body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None
    if _depth(body) > MAX_DEPTH:
        raise ApiError(400, f"the JSON body nests deeper than {MAX_DEPTH} levels")
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _depth(value) -> int:
    deepest, level = 0, [value]
    while level:
        deepest += 1
        if deepest > MAX_DEPTH:
            return deepest
        level = [v for item in level if isinstance(item, (dict, list))
                 for v in (item.values() if isinstance(item, dict) else item)]
        level = [v for v in level if isinstance(v, (dict, list))]
    return deepest


def build_app(engine: GenaiChatEngine, name: str, api_key: str | None = None, default_adapter: str | None = None,
              inference=None, user_options: dict | None = None, max_body: int = MAX_BODY_BYTES):
    """`inference` (a project's [inference]) and `user_options` (config.toml [chat]) are the layers
    under each request's own values (core.generation.resolve)."""
    from contextlib import asynccontextmanager
    from typing import Literal

    from fastapi import FastAPI, HTTPException, Request as HttpRequest
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

    bounds = generation.BOUNDS

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")  # `name` and the like
        role: Literal["system", "developer", "user", "assistant"]
        content: str | list[dict]

        @field_validator("content")
        @classmethod
        def _text_parts(cls, v):
            """OpenAI's list of content parts: text parts are joined; other kinds are refused."""
            if isinstance(v, str):
                return v
            texts = []
            for i, part in enumerate(v):
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(f"part {i}: only text parts ({{'type': 'text', 'text': ...}}) are supported, "
                                     f"got type {part.get('type')!r}")
                texts.append(part["text"])
            return "".join(texts)

    class StreamOptions(BaseModel):
        include_usage: bool = False

    class ChatRequest(BaseModel):
        model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we ignore (user, seed...)
        model: str
        messages: list[Message] = Field(min_length=1)
        stream: bool = False
        stream_options: StreamOptions | None = None
        max_tokens: int | None = Field(None, ge=1, le=bounds["max_new_tokens"][1])
        max_completion_tokens: int | None = Field(None, ge=1, le=bounds["max_new_tokens"][1])
        temperature: float | None = Field(None, ge=bounds["temperature"][0], le=bounds["temperature"][1])
        top_p: float | None = Field(None, ge=bounds["top_p"][0], le=bounds["top_p"][1])
        top_k: int | None = Field(None, ge=bounds["top_k"][0], le=bounds["top_k"][1])  # not OpenAI's; vLLM's
        n: int = Field(1, ge=1, le=1)
        stop: str | list[str] | None = Field(None, max_length=4)

    names = model_names(name, engine, check_adapter(engine, default_adapter))
    decoder = Decoder(engine)

    @asynccontextmanager
    async def lifespan(app):
        yield
        decoder.close()  # after uvicorn has drained the in-flight answers (SIGTERM)

    app = FastAPI(title="aitk serve", version="0.1.0", lifespan=lifespan)
    app.add_middleware(Guard, api_key=api_key, max_body=max_body)
    app.state.decoder = decoder
    created = int(time.time())

    def error(err: ApiError):
        return JSONResponse(status_code=err.status, content=json.loads(err.body()))

    def validation_error(errors: list) -> ApiError:
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return ApiError(422 if where != "body" else 400, f"{where}: {first['msg']}", param=where)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return error(validation_error(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        return error(ApiError(exc.status_code, str(exc.detail)))

    @app.exception_handler(ApiError)
    async def _api(request, exc: ApiError):
        return error(exc)

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        return error(_api_error(exc))

    @app.get("/health")
    async def health():
        body = {"status": "ok" if decoder.alive else "error",
                "decoder": "running" if decoder.alive else f"stopped: {decoder.error or 'shut down'}",
                "models": list(names), "default_adapter": names[name] or "base",
                "context_length": engine.context_length, "requests": dict(decoder.stats)}
        return JSONResponse(body, status_code=200 if decoder.alive else 503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "aitk",
                                            "context_length": engine.context_length} for n in names]}

    async def next_item(req: Request, http: HttpRequest | None):
        """The request's next item from the decoder; None once its client has hung up (then the
        decoder is told to stop). Never waits on a decoder that has stopped."""
        while True:
            if http is not None and time.monotonic() - req.checked >= POLL_S:
                req.checked = time.monotonic()
                if await http.is_disconnected():
                    req.cancel.set()
                    return None
            try:
                return await asyncio.wait_for(req.out.get(), POLL_S)
            except asyncio.TimeoutError:
                pass
            if not decoder.alive and req.out.empty():
                return DecoderStopped(f"the decoder stopped ({decoder.error or 'shut down'})",
                                      "restart `aitk serve`")

    @app.post("/v1/chat/completions")
    async def chat(http: HttpRequest):
        raw = await read_json(http, max_body)
        try:
            body = ChatRequest.model_validate(raw)
        except ValidationError as e:
            raise validation_error(e.errors()) from None
        if body.model not in names:
            raise ApiError(404, f"model {body.model!r} not found; available: {', '.join(names)}",
                           code="model_not_found", param="model")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        asked = body.max_completion_tokens or body.max_tokens
        options = replace(generation.resolve(inference, user_options, {
            "max_new_tokens": asked, "temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k}),
            system_prompt=None)  # an API client sends its own; the chat pane's is not slipped into it
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                    for m in body.messages]
        loop = asyncio.get_running_loop()
        req = Request(messages, options, names[body.model] or BASE, stops, loop, asyncio.Queue(),
                      strict=asked is not None)
        try:
            decoder.submit(req)
        except DecoderStopped as e:
            raise _api_error(e) from None
        # The answer must have started before a status is sent: a request that cannot be
        # answered (too long for the context, say) gets its 4xx, not a 200 and a broken stream.
        first = await next_item(req, http)
        if first is None:
            return JSONResponse({}, status_code=499)  # the client is gone; nobody reads this
        if isinstance(first, Exception):
            raise _api_error(first)
        _, prompt_tokens, _ = first
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"

        def chunk(delta: dict, finish: str | None = None) -> str:
            return "data: " + json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        def usage(tokens: int) -> dict:
            return {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}

        if body.stream:
            async def events():
                # Every item already waiting goes out in one write (one event each, as the API
                # streams them): a socket write per event cost more than the tiny model's tokens.
                pending = [chunk({"role": "assistant", "content": ""})]
                try:
                    while True:
                        item = await next_item(req, None)  # Starlette cancels this on disconnect
                        while True:
                            if isinstance(item, Exception):
                                pending.append("data: " + json.dumps(json.loads(_api_error(item).body())) + "\n\n")
                                yield "".join(pending)
                                return
                            if isinstance(item, tuple):
                                pending.append(chunk({}, item[1]))
                                if body.stream_options and body.stream_options.include_usage:
                                    pending.append("data: " + json.dumps({
                                        "id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                                        "model": body.model, "choices": [], "usage": usage(item[2])}) + "\n\n")
                                pending.append("data: [DONE]\n\n")
                                yield "".join(pending)
                                return
                            pending.append(chunk({"content": item}))
                            if req.out.empty():
                                break
                            item = req.out.get_nowait()
                        yield "".join(pending)
                        pending = []
                finally:
                    req.cancel.set()  # client gone or done: free the decoder slot

            return StreamingResponse(events(), media_type="text/event-stream")

        text: list[str] = []
        while True:
            item = await next_item(req, http)
            if item is None:
                return JSONResponse({}, status_code=499)
            if isinstance(item, Exception):
                raise _api_error(item)
            if isinstance(item, tuple):
                _, finish, tokens, _ = item
                break
            text.append(item)
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "finish_reason": finish}],
                "usage": usage(tokens)}

    return app


def resolve_model(project_dir: str | None, precision: str | None = None) -> tuple[str, Path]:
    """What to serve: a project's exported model, or the embedded tiny model (exported on first use)."""
    if project_dir:
        from .project import load_project

        from .publish import current_export

        project = load_project(project_dir)
        onnx = current_export(project, precision)
        if onnx is None:
            raise AitkError(f"{project.name} has no exported model at {project.onnx_dir(precision)}",
                            f"run `aitk export -P {project.root}"
                            + (f" --precision {precision}`" if precision else "`"))
        return project.name, onnx
    from . import paths, tiny

    onnx = paths.models_dir() / "tiny-onnx" / (precision or "fp32")
    if not (onnx / "genai_config.json").is_file():
        from .export import export_model

        export_model(str(tiny.ensure_tiny()), None, onnx, precision=precision or "fp32")
    return tiny.TINY_ID, onnx


def current_merged(project, precision: str | None = None) -> Path | None:
    """The project's merged export of `precision` when it is there and built from the adapter the
    project has now (a stale one is never used for "tuned": the adapter form answers instead)."""
    from .export_state import export_state
    from .finetune import merged_dir
    from .publish import current

    folder = current(merged_dir(project, precision))
    if folder is None or not (folder / "genai_config.json").is_file():
        return None
    return folder if export_state(folder, project.adapter_dir).current else None


def tuned_engine(project, precision: str | None, export: Path | None):
    """The one rule for a project's model: the active adapter answers from the current merged
    export when there is one (the base model's decode speed), the base model and the other
    adapters from the adapter export `export`; otherwise `export` answers all of them."""
    from .adapters import active_name
    from .chat import MergedTunedEngine

    merged = current_merged(project, precision)
    if merged is not None:
        return MergedTunedEngine(merged, export)
    return GenaiChatEngine(export, active=active_name(project.root))


def open_engine(project_dir: str | None, precision: str | None = None):
    """(name, engine) for serving and chat: a project's (`tuned_engine`), or the embedded tiny model."""
    if project_dir:
        from .project import load_project
        from .publish import current_export

        project = load_project(project_dir)
        if current_merged(project, precision) is None:
            resolve_model(project_dir, precision)  # no export at all: its error names the command to run
        return project.name, tuned_engine(project, precision, current_export(project, precision))
    name, onnx = resolve_model(None, precision)
    return name, GenaiChatEngine(onnx)


def open_export(model_dir: str | Path):
    """The engine for chatting with one export folder (the Chat pane's): inside a project, its
    adapter export answers as `aitk chat` and `aitk serve` do (`tuned_engine`); any other folder alone."""
    from .project import load_project

    folder = Path(model_dir)
    root = folder.parent.parent.parent  # <project>/models/onnx/<precision>
    try:
        project = load_project(root)
    except AitkError:
        return GenaiChatEngine(folder)
    if project.onnx_dir(folder.name).resolve() != folder.resolve():
        return GenaiChatEngine(folder)
    return tuned_engine(project, folder.name, folder)


def project_app(project_dir: str | None = None, api_key: str | None = None, precision: str | None = None,
                adapter: str | None = None):
    """(app, name, engine, default adapter): exactly what `aitk serve` serves; the parity check
    (core/parity.py) starts this same app on a loopback port."""
    name, engine = open_engine(project_dir, precision)
    inference = None
    if project_dir:
        from .project import load_project

        inference = load_project(project_dir).settings.inference
    default = check_adapter(engine, adapter)
    app = build_app(engine, name, api_key, default_adapter=default, inference=inference,
                    user_options=generation.load_user_values())
    return app, name, engine, default


def serve(project_dir: str | None = None, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          precision: str | None = None, adapter: str | None = None) -> None:
    import uvicorn

    app, name, engine, default = project_app(project_dir, api_key, precision, adapter)
    print(f"serving {', '.join(model_names(name, engine, default))} on http://{host}:{port}/v1"
          f" (context {engine.context_length or '?'} tokens, {engine.threads} threads"
          f"{', tuned from the merged export' if hasattr(engine, 'merged') else ''})"
          f"{f'; {name} answers with adapter {default}' if default else ''}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=GRACE_S)
