"""`aitk serve`: an OpenAI-compatible HTTP server over the chat engine.

POST /v1/chat/completions (SSE streaming and not), GET /v1/models, GET /health. The whole
message history is used (AI Toolkit's server answers only the last message). Concurrent
requests are interleaved token by token on one decode thread: every stream progresses, none
waits for another to finish, and no two ever share a generator. FastAPI is imported only here.
"""


import asyncio
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .chat import BASE, GenaiChatEngine, GenerationOptions
from .errors import AitkError


@dataclass
class Request:
    messages: list[dict]
    options: GenerationOptions
    adapter: str | None
    stop_strings: list[str]
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    cancel: threading.Event = field(default_factory=threading.Event)


TURN_S = 0.01


class Decoder:
    """One thread owns every generator; active requests advance round-robin, a piece each."""

    def __init__(self, engine: GenaiChatEngine):
        self.engine = engine
        self.inbox: queue.Queue[Request] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="aitk-decoder", daemon=True)
        self.thread.start()

    def submit(self, req: Request) -> None:
        self.inbox.put(req)

    @staticmethod
    def _send(req: Request, item) -> None:
        req.loop.call_soon_threadsafe(req.out.put_nowait, item)

    def _run(self) -> None:
        active: list[tuple[Request, object, list[str]]] = []
        while True:
            block = not active
            while True:
                try:
                    req = self.inbox.get(block=block)
                except queue.Empty:
                    break
                block = False
                try:
                    stream = self.engine.stream(req.messages, req.options, adapter=req.adapter, stop=req.cancel)
                    active.append((req, stream, []))
                except AitkError as e:
                    self._send(req, e)
            for entry in list(active):
                req, stream, text = entry
                # A turn lasts up to TURN_S: with one client that is many tokens per hand-over to
                # the event loop (per-token hand-overs cost more than decoding a tiny model).
                turn_end = time.perf_counter() + TURN_S
                new: list[str] = []
                finished = None
                while True:
                    try:
                        new.append(next(stream))
                    except StopIteration:
                        finished = "length" if stream.tokens >= req.options.max_new_tokens else "stop"
                        break
                    except Exception as e:  # noqa: BLE001 - report to that client, keep serving others
                        finished = e
                        break
                    if time.perf_counter() >= turn_end:
                        break
                piece = "".join(new)
                sent = len("".join(text))
                text.append(piece)
                joined = "".join(text)
                hit = min((joined.find(s, max(0, sent - len(s))) for s in req.stop_strings
                           if s and joined.find(s, max(0, sent - len(s))) >= 0), default=-1)
                if hit >= 0:
                    if hit > sent:
                        self._send(req, joined[sent:hit])
                    req.cancel.set()
                    finished = "stop"
                elif piece:
                    self._send(req, piece)
                if isinstance(finished, Exception):
                    active.remove(entry)
                    self._send(req, finished)
                elif finished is not None:
                    active.remove(entry)
                    self._send(req, ("done", finished, stream.tokens, stream.prompt_tokens))


def model_names(name: str, engine: GenaiChatEngine, default: str | None = None) -> dict[str, str | None]:
    """Public model name -> adapter (None = base). The bare name answers with `default` (what a
    deployment chose, AITK_ADAPTER); then `name:base` still reaches the base model."""
    names = {name: default}
    names.update({f"{name}:{a}": a for a in engine.adapters})
    if default is not None:
        names[f"{name}:base"] = None
    return names


def check_adapter(engine: GenaiChatEngine, adapter: str | None) -> str | None:
    """None for the base model ("" and "base" too); an adapter the model has; else a clear error."""
    if adapter in (None, "", "base", BASE):
        return None
    if adapter not in engine.adapters:
        raise AitkError(f"no adapter {adapter!r} in this model",
                        f"choose one of: base, {', '.join(engine.adapters) or '(none exported)'}")
    return adapter


def build_app(engine: GenaiChatEngine, name: str, api_key: str | None = None, max_tokens_cap: int = 4096,
              default_adapter: str | None = None):
    from typing import Literal

    from fastapi import FastAPI, HTTPException, Request as HttpRequest
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field

    class Message(BaseModel):
        role: Literal["system", "user", "assistant"]
        content: str

    class ChatRequest(BaseModel):
        model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we ignore (n=1, user...)
        model: str
        messages: list[Message] = Field(min_length=1)
        stream: bool = False
        max_tokens: int | None = Field(None, ge=1, le=max_tokens_cap)
        max_completion_tokens: int | None = Field(None, ge=1, le=max_tokens_cap)
        temperature: float = Field(0.0, ge=0, le=2)
        top_p: float = Field(1.0, gt=0, le=1)
        stop: str | list[str] | None = None

    names = model_names(name, engine, check_adapter(engine, default_adapter))
    decoder = Decoder(engine)
    app = FastAPI(title="aitk serve", version="0.1.0")
    created = int(time.time())

    def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        return JSONResponse(status_code=status,
                            content={"error": {"message": message, "type": kind, "code": code, "param": None}})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return error(422 if where != "body" else 400, f"{where}: {first['msg']}")

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail),
                     "authentication_error" if exc.status_code == 401 else "invalid_request_error")

    @app.middleware("http")
    async def _auth(request: HttpRequest, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                             "authentication_error", "invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(names), "default_adapter": names[name] or "base"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "aitk"}
                                           for n in names]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        if body.model not in names:
            raise HTTPException(404, f"model {body.model!r} not found; available: {', '.join(names)}")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        options = GenerationOptions(max_new_tokens=body.max_completion_tokens or body.max_tokens or 256,
                                    temperature=body.temperature, top_p=body.top_p, top_k=0)
        loop = asyncio.get_running_loop()
        req = Request([m.model_dump() for m in body.messages], options, names[body.model] or BASE, stops,
                      loop, asyncio.Queue())
        decoder.submit(req)
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"

        def chunk(delta: dict, finish: str | None = None) -> str:
            return "data: " + json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        if body.stream:
            async def events():
                yield chunk({"role": "assistant", "content": ""})
                try:
                    while True:
                        item = await req.out.get()
                        if isinstance(item, Exception):
                            yield "data: " + json.dumps({"error": {"message": str(item)}}) + "\n\n"
                            return
                        if isinstance(item, tuple):
                            yield chunk({}, item[1])
                            yield "data: [DONE]\n\n"
                            return
                        yield chunk({"content": item})
                finally:
                    req.cancel.set()  # client gone or done: free the decoder slot

            return StreamingResponse(events(), media_type="text/event-stream")

        text: list[str] = []
        while True:
            item = await req.out.get()
            if isinstance(item, Exception):
                raise HTTPException(400, str(item))
            if isinstance(item, tuple):
                _, finish, tokens, prompt_tokens = item
                break
            text.append(item)
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                          "total_tokens": prompt_tokens + tokens}}

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
                            "run `aitk export` in the project")
        return project.name, onnx
    from . import paths, tiny

    onnx = paths.models_dir() / "tiny-onnx" / (precision or "fp32")
    if not (onnx / "genai_config.json").is_file():
        from .export import export_model

        export_model(str(tiny.ensure_tiny()), None, onnx, precision=precision or "fp32")
    return tiny.TINY_ID, onnx


def serve(project_dir: str | None = None, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          precision: str | None = None, adapter: str | None = None) -> None:
    import uvicorn

    name, onnx = resolve_model(project_dir, precision)
    engine = GenaiChatEngine(onnx)
    default = check_adapter(engine, adapter)
    app = build_app(engine, name, api_key, default_adapter=default)
    print(f"serving {', '.join(model_names(name, engine, default))} on http://{host}:{port}/v1"
          f"{f' ({name} answers with adapter {default})' if default else ''}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
