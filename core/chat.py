"""Chat engines: streaming generation with the model's chat template and the whole history.

`GenaiChatEngine` runs an exported model on onnxruntime-genai, with LoRA adapters switched per
request on one loaded model (base = no adapter). `TorchChatEngine` runs a Hugging Face model
(+ peft adapter) with transformers, for models not exported yet. Both yield text pieces as they
are decoded and stop between tokens when asked.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Protocol

from . import generation
from .adapters import BASE, TUNED
from .errors import AitkError
from .generation import GenerationOptions


def manifest_active(model_dir: Path) -> str | None:
    """The adapter an export was built as active (its aitk-export.json); None when not recorded."""
    from .export_state import MANIFEST

    try:
        value = json.loads((Path(model_dir) / MANIFEST).read_text(encoding="utf-8")).get("active")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def public_adapters(engine) -> dict[str, str]:
    """Name a request may ask for -> the engine's adapter: each adapter by its name, and `tuned`
    for the active one (when no adapter is called that)."""
    names = {a: a for a in engine.adapters}
    active = getattr(engine, "active", None) or (engine.adapters[0] if engine.adapters else None)
    if active is not None and TUNED not in names:
        names[TUNED] = active
    return names


def resolve_adapter(engine, adapter: str | None) -> str | None:
    """None for the base model ("base" too), else the engine's adapter name; unknown: an AitkError."""
    if adapter in (None, BASE):
        return None
    real = public_adapters(engine).get(adapter)
    if real is None:
        raise AitkError(f"unknown adapter {adapter!r}", f"choose one of: base, {', '.join(engine.adapters)}")
    return real


@dataclass
class ChatStream:
    """Iterate for text pieces; afterwards `tokens`, `seconds` and `tokens_per_second` tell the speed."""

    pieces: Iterator[str]
    tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    stopped: bool = False
    dropped: int = 0  # oldest turns left out to fit the model's context (core.generation.fit)
    max_new_tokens: int = 0  # the answer's cap after fitting the context
    text: list[str] = field(default_factory=list)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        piece = next(self.pieces)
        self.text.append(piece)
        return piece

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def read(self) -> str:
        for _ in self:
            pass
        return "".join(self.text)


class ChatEngine(Protocol):
    adapters: list[str]

    def stream(self, messages: list[dict], options: GenerationOptions | None = None,
               adapter: str | None = None, stop: threading.Event | None = None,
               trim: bool = True, strict: bool = False) -> ChatStream: ...


def with_system(messages: list[dict], options: GenerationOptions) -> list[dict]:
    if options.system_prompt and not (messages and messages[0].get("role") == "system"):
        return [{"role": "system", "content": options.system_prompt}, *messages]
    return messages


def validate_messages(messages: list[dict]) -> None:
    if not messages:
        raise AitkError("no messages to answer", "send at least one user message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in {"system", "user", "assistant"} \
                or not isinstance(m.get("content"), str):
            raise AitkError(f"message {i} is malformed",
                            "each message needs role system/user/assistant and text content")


class GenaiChatEngine:
    """One loaded onnxruntime-genai model; every `.onnx_adapter` beside it is a selectable adapter."""

    def __init__(self, model_dir: str | Path, adapters: dict[str, Path] | None = None, active: str | None = None):
        import onnxruntime_genai as og

        self._og = og
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "genai_config.json").is_file():
            raise AitkError(f"no exported model in {self.model_dir}", "run `aitk export` first")
        self.model, self.threads = load_model(og, self.model_dir)
        self.tokenizer = og.Tokenizer(self.model)
        if adapters is None:
            adapters = {p.stem: p for p in sorted((self.model_dir / "adapters").glob("*.onnx_adapter"))}
        self._adapters = og.Adapters(self.model)
        for name, path in adapters.items():
            self._adapters.load(str(path), name)
        # A zero adapter named "base" (written by export) serves the base model with the same
        # shapes as the tuned one; it is not offered as an adapter of its own.
        self._zero_base = BASE in adapters
        names = [name for name in adapters if name != BASE]
        # The active adapter first (what `tuned` and a plain chat answer with): the one asked for
        # (the project's), else the one the export was built as active.
        self.active = next((a for a in (active, manifest_active(self.model_dir)) if a in names),
                           names[0] if names else None)
        self.adapters = sorted(names, key=lambda n: n != self.active)
        self.context_length = context_length(self.model_dir)

    def prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self.tokenizer.encode(self.prompt(messages)))

    def fit(self, messages, options=None, trim: bool = True, strict: bool = False) -> generation.Fit:
        """The messages (system prompt added) and options that fit the context; see core.generation."""
        options = options or GenerationOptions()
        validate_messages(messages)
        try:
            return generation.fit(with_system(messages, options), options, self.context_length, self.count_tokens,
                                  trim=trim, strict=strict)
        except RuntimeError as e:  # the tokenizer's own errors are plain RuntimeErrors
            raise AitkError(f"the messages could not be tokenized: {e}", "check the text of the messages") from None

    def prepare(self, messages, options=None, adapter=None, trim=True, strict=False) -> Prepared:
        """The answer fitted to the context and tokenized, its adapter chosen: ready for `start`."""
        adapter = resolve_adapter(self, adapter)
        fitted = self.fit(messages, options, trim=trim, strict=strict)
        active = adapter if adapter not in (None, BASE) else (BASE if self._zero_base else None)
        return Prepared(self, [int(i) for i in self.tokenizer.encode(self.prompt(fitted.messages))],
                        fitted.options, active, fitted.dropped)

    def start(self, answers: list[Prepared]) -> Batch:
        """One generator for `answers` (one adapter, one set of search options: `Prepared.batch_key`)."""
        return Batch(self, answers)

    def stream(self, messages, options=None, adapter=None, stop=None, trim=True, strict=False) -> ChatStream:
        prepared = self.prepare(messages, options, adapter=adapter, trim=trim, strict=strict)
        batch = self.start([prepared])
        result = ChatStream(iter(()), prompt_tokens=prepared.prompt_tokens, dropped=prepared.dropped,
                            max_new_tokens=prepared.max_new_tokens)

        def pieces():
            t0 = time.perf_counter()
            try:
                while not batch.done:
                    if stop is not None and stop.is_set():
                        result.stopped = True
                        break
                    for _, piece, _ in batch.step():
                        if isinstance(piece, Exception):
                            raise piece
                        result.tokens += 1
                        result.seconds = time.perf_counter() - t0
                        if piece:
                            yield piece
            finally:
                batch.close()
                result.seconds = time.perf_counter() - t0

        result.pieces = pieces()
        return result


@dataclass
class Prepared:
    """One answer ready to decode (GenaiChatEngine.prepare): the prompt's token ids, the options
    that fit the context, the adapter its generator runs with (None: no adapter)."""

    engine: GenaiChatEngine
    input_ids: list[int]
    options: GenerationOptions
    adapter: str | None
    dropped: int = 0
    answered: list[int] = field(default_factory=list)  # this answer's tokens decoded elsewhere already

    @property
    def prompt_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def max_new_tokens(self) -> int:
        return self.options.max_new_tokens

    def continued(self, tokens: list[int]) -> Prepared:
        """The rest of this answer after `tokens` of it: they join the prompt, the cap shrinks."""
        return replace(self, input_ids=[*self.input_ids, *tokens], answered=[*self.answered, *tokens],
                       options=replace(self.options, max_new_tokens=self.max_new_tokens - len(tokens)))

    @property
    def batch_key(self) -> tuple:
        """Answers with equal keys can share a generator: same model, adapter and search options."""
        o = self.options
        return (id(self.engine), self.adapter) + (("greedy",) if o.greedy else (o.temperature, o.top_p, o.top_k))


class Batch:
    """Answers of one key decoded side by side by one onnxruntime-genai generator: a step costs
    little more than one answer's (decode reads every weight per step, whatever the batch).

    The prompts are right-padded with the pad token: genai masks the padding and continues each
    row from its own last token, so a greedy answer is the one it gets alone. Each row ends at its
    own end token or its own max_new_tokens; `drop` stops reporting a row (its client left), and the
    generator is freed when no row is wanted. `generated` keeps each row's tokens, so an answer can
    go on elsewhere (`Prepared.continued`) when this batch fails."""

    def __init__(self, engine: GenaiChatEngine, answers: list[Prepared]):
        import numpy as np

        og, tok = engine._og, engine.tokenizer
        self.answers = answers
        width = max(a.prompt_tokens for a in answers)
        first = answers[0].options
        search = {"max_length": width + max(a.max_new_tokens for a in answers), "do_sample": not first.greedy,
                  "batch_size": len(answers)}
        if not first.greedy:
            search.update(temperature=first.temperature, top_p=first.top_p, top_k=first.top_k)
        self._prompts = np.full((len(answers), width), tok.pad_token_id, dtype=np.int32)
        for row, a in enumerate(answers):
            self._prompts[row, :a.prompt_tokens] = a.input_ids
        try:
            params = og.GeneratorParams(engine.model)
            params.set_search_options(**search)
            self._generator = og.Generator(engine.model, params)
            if answers[0].adapter is not None:
                self._generator.set_active_adapter(engine._adapters, answers[0].adapter)
        except Exception as e:  # noqa: BLE001 - onnxruntime-genai raises plain RuntimeErrors
            raise AitkError(f"the model could not start this answer: {e}", "shorten the conversation or "
                            "lower max_new_tokens") from None
        self._texts = [tok.create_stream() for _ in answers]
        for text, a in zip(self._texts, answers):
            for token in a.answered:  # the detokenizer may hold text back until the next token: as it was
                text.decode(token)
        self._end = set(int(i) for i in tok.eos_token_ids)
        self.generated: list[list[int]] = [[] for _ in answers]
        self.wanted = [True] * len(answers)
        self._caps = [a.max_new_tokens for a in answers]

    @property
    def done(self) -> bool:
        return self._generator is None or not any(self.wanted)

    @property
    def tokens(self) -> list[int]:
        return [len(g) for g in self.generated]

    def step(self) -> list[tuple[int, str | Exception, bool]]:
        """Decode one token for every row: (row, its text piece, whether that row has ended) for
        each row still wanted; ended rows are no longer wanted. A row whose token cannot be turned
        into text gets the error instead of a piece, and ends. (Per-token Python is kept lean: on
        a small model a step is ~0.2 ms of genai, and every microsecond here shows in tok/s.)"""
        generator = self._generator
        try:
            if self._prompts is not None:
                generator.append_tokens(self._prompts)
                self._prompts = None
            generator.generate_next_token()
            tokens = generator.get_next_tokens().tolist()
        except RuntimeError as e:
            raise AitkError(f"generation failed: {e}", "shorten the conversation or lower max_new_tokens") from None
        out = []
        wanted, generated, end, caps, piece_of = self.wanted, self.generated, self._end, self._caps, self.piece
        for row, token in enumerate(tokens):
            if not wanted[row]:
                continue
            done = generated[row]
            done.append(token)
            ended = token in end or len(done) >= caps[row]
            try:
                piece = piece_of(row, token)
            except Exception as e:  # noqa: BLE001 - this row's fault; the other rows decode on
                piece, ended = AitkError(f"the answer could not be decoded: {e}"), True
            out.append((row, piece, ended))
            if ended:
                wanted[row] = False
        if generator.is_done():
            self.wanted = [False] * len(wanted)
        if self.done:
            self.close()
        return out

    def piece(self, row: int, token: int) -> str:
        """Row's text for its next token (its own streaming detokenizer: a piece may wait for the
        rest of a multi-byte character)."""
        return self._texts[row].decode(token)

    def drop(self, row: int) -> None:
        self.wanted[row] = False
        if self.done:
            self.close()

    def close(self) -> None:
        self._generator = None  # frees the KV cache now, not at the next garbage collection


def load_model(og, model_dir: Path):
    """(og.Model, its intra-op threads). Rule: decode runs on this machine's physical cores
    (core/threads.py). An export made here says exactly that in its genai_config.json and is
    loaded as written; one made elsewhere (another machine, a container with a quota) states
    another count, which is overlaid with this machine's for this session only."""
    from . import threads

    want = threads.physical_cores()
    try:
        have = threads.session_threads(json.loads((model_dir / "genai_config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        have = None
    config = og.Config(str(model_dir))
    if have != want:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": want}}}}))
    return og.Model(config), want


class MergedTunedEngine:
    """The active adapter from a merged export (folded into the weights: the base model's decode
    speed); the base model and the other adapters from the adapter export beside it, loaded on the
    first request for one of them (serving and plain tuned chat mostly never ask)."""

    def __init__(self, merged_dir: str | Path, base_dir: str | Path | None = None):
        self.merged = GenaiChatEngine(merged_dir)
        self.model_dir = self.merged.model_dir
        self.base_dir = Path(base_dir) if base_dir else None
        self._base: GenaiChatEngine | None = None
        self._lock = threading.Lock()
        self.active = manifest_active(self.model_dir) or TUNED
        others = sorted(p.stem for p in (self.base_dir / "adapters").glob("*.onnx_adapter")) if self.base_dir else []
        self.adapters = [self.active, *(n for n in others if n not in (BASE, self.active))]
        self.context_length = self.merged.context_length
        self.threads = self.merged.threads

    def base(self) -> GenaiChatEngine:
        with self._lock:
            if self._base is None:
                if self.base_dir is None:
                    raise AitkError("no base model is exported beside the merged one",
                                    "run `aitk export` (the adapter form) or `aitk export --base-only`")
                self._base = GenaiChatEngine(self.base_dir)
            return self._base

    def _engine(self, adapter: str | None) -> tuple[GenaiChatEngine, str | None]:
        adapter = resolve_adapter(self, adapter)
        if adapter is None:
            return self.base(), BASE
        if adapter == self.active:
            return self.merged, None
        return self.base(), adapter

    def count_tokens(self, messages: list[dict]) -> int:
        return self.merged.count_tokens(messages)

    def fit(self, messages, options=None, trim: bool = True, strict: bool = False) -> generation.Fit:
        return self.merged.fit(messages, options, trim=trim, strict=strict)

    def prepare(self, messages, options=None, adapter=None, trim=True, strict=False) -> Prepared:
        engine, which = self._engine(adapter)
        return engine.prepare(messages, options, adapter=which, trim=trim, strict=strict)

    def start(self, answers: list[Prepared]) -> Batch:
        return answers[0].engine.start(answers)

    def stream(self, messages, options=None, adapter=None, stop=None, trim=True, strict=False) -> ChatStream:
        engine, which = self._engine(adapter)
        return engine.stream(messages, options, adapter=which, stop=stop, trim=trim, strict=strict)


def context_length(model_dir: Path) -> int | None:
    """The exported model's context window, from its genai_config.json (None when not stated)."""
    try:
        config = json.loads((Path(model_dir) / "genai_config.json").read_text(encoding="utf-8"))
        value = config["model"]["context_length"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


class TorchChatEngine:
    """transformers (+ peft) generation, for a model that has not been exported to ONNX."""

    def __init__(self, model_path: str | Path, adapter_path: str | Path | None = None,
                 adapters: dict[str, str | Path] | None = None):
        """`adapter_path` is served as `tuned`; `adapters` (name -> peft folder) load beside each
        other on the one base model, switched per request; the first is the active one."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self._lock = threading.Lock()  # peft's active adapter is the model's state: one answer at a time
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(str(model_path))
        named = dict(adapters or {})
        if adapter_path is not None:
            named = {TUNED: adapter_path, **named}
        self.adapters: list[str] = list(named)
        self.active = self.adapters[0] if self.adapters else None
        if named:
            from peft import PeftModel

            first, *rest = named.items()
            model = PeftModel.from_pretrained(model, str(first[1]), adapter_name=first[0])
            for name, path in rest:
                model.load_adapter(str(path), adapter_name=name)
        self.model = model.eval()
        self.context_length = getattr(model.config, "max_position_embeddings", None)

    def _ids(self, messages: list[dict]):
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)["input_ids"]

    def stream(self, messages, options=None, adapter=None, stop=None, trim=True, strict=False) -> ChatStream:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        options = options or GenerationOptions()
        validate_messages(messages)
        name = resolve_adapter(self, adapter) if self.adapters else None
        fitted = generation.fit(with_system(messages, options), options, self.context_length,
                                lambda ms: self._ids(ms).shape[1], trim=trim, strict=strict)
        options = fitted.options
        ids = self._ids(fitted.messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result = ChatStream(iter(()), prompt_tokens=ids.shape[1], dropped=fitted.dropped,
                            max_new_tokens=options.max_new_tokens)

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                result.tokens = input_ids.shape[1] - ids.shape[1]
                if stop is not None and stop.is_set():
                    result.stopped = True
                    return True
                return False

        kwargs = dict(input_ids=ids, max_new_tokens=options.max_new_tokens, do_sample=not options.greedy,
                      streamer=streamer, stopping_criteria=StoppingCriteriaList([Stop()]))
        if not options.greedy:
            kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)

        def run():
            with self._lock, self._torch.no_grad():
                if self.adapters and name is None:
                    with self.model.disable_adapter():
                        self.model.generate(**kwargs)
                else:
                    if self.adapters:
                        self.model.set_adapter(name)
                    self.model.generate(**kwargs)

        def pieces():
            t0 = time.perf_counter()
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            for piece in streamer:
                result.seconds = time.perf_counter() - t0
                if piece:
                    yield piece
            worker.join()
            result.seconds = time.perf_counter() - t0

        result.pieces = pieces()
        return result


API_KEY_ENV = ("AITK_API_KEY", "OPENAI_API_KEY")


class RemoteChatEngine:
    """Any OpenAI-compatible endpoint (ours from `aitk serve`, deployed or local; vLLM, llama.cpp,
    Ollama, gateways taking a bearer key), streaming Server-Sent Events over httpx.

    `adapters` are the endpoint's model names (GET /models); `model` is the one answers come
    from: the name asked for, which must be listed (a typo is an error, not another model), or
    the first listed. The context rule of core.generation applies through the server: when it
    answers `context_length_exceeded`, the oldest turn is dropped and the request sent again.
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0):
        import difflib
        import os
        from urllib.parse import urlsplit

        import httpx

        url = base_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")) or not urlsplit(url).netloc:
            raise AitkError(f"endpoint {base_url!r} is not an http(s) URL", "e.g. http://127.0.0.1:8000/v1")
        self.base_url = url if urlsplit(url).path not in ("", "/") else url + "/v1"
        api_key = api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout)
        try:
            resp = self._client.get(f"{self.base_url}/models")
        except httpx.HTTPError as e:
            raise AitkError(f"cannot reach {self.base_url}: {e}", "is the server running? check the URL") from None
        model = (model or "").strip() or None
        if resp.status_code == 404 and model:
            self.adapters = [model]  # a gateway that lists no models: the name is taken as given
        else:
            _raise_for(resp, self.base_url)
            try:
                listed = resp.json().get("data", [])
                self.adapters = [m["id"] for m in listed]
                self.context_lengths = {m["id"]: m.get("context_length") or m.get("max_model_len") for m in listed}
            except (ValueError, KeyError, TypeError, AttributeError):
                raise AitkError(f"{self.base_url}/models did not answer an OpenAI model list",
                                "check the endpoint URL (it usually ends in /v1)") from None
        if not self.adapters:
            raise AitkError(f"{self.base_url} serves no models", "check the endpoint")
        if model is not None and model not in self.adapters:
            near = difflib.get_close_matches(model, self.adapters, n=1)
            raise AitkError(f"no model {model!r} at {self.base_url}",
                            (f"did you mean {near[0]!r}? " if near else "") + f"available: {', '.join(self.adapters)}")
        self.model = model or self.adapters[0]

    @property
    def context_length(self) -> int | None:
        return getattr(self, "context_lengths", {}).get(self.model)

    def stream(self, messages, options=None, adapter=None, stop=None, trim=True, strict=False) -> ChatStream:
        import httpx

        options = options or GenerationOptions()
        validate_messages(messages)
        model = adapter or self.model
        if model not in self.adapters:
            raise AitkError(f"no model {model!r} at {self.base_url}", f"available: {', '.join(self.adapters)}")
        messages = with_system(messages, options)
        result = ChatStream(iter(()), max_new_tokens=options.max_new_tokens)

        def body(msgs):
            b = {"model": model, "messages": msgs, "stream": True, "stream_options": {"include_usage": True},
                 "max_tokens": options.max_new_tokens, "temperature": options.temperature, "top_p": options.top_p}
            if options.top_k:
                b["top_k"] = options.top_k  # not OpenAI's, but vLLM, llama.cpp and aitk accept it
            return b

        def pieces():
            t0 = time.perf_counter()
            msgs = messages
            try:
                while True:
                    with self._client.stream("POST", f"{self.base_url}/chat/completions", json=body(msgs)) as resp:
                        if resp.status_code >= 400:
                            resp.read()
                            shorter = _drop_oldest_turn(msgs) if trim and _overflow(resp) else None
                            if shorter is not None:
                                msgs, result.dropped = shorter, result.dropped + 1
                                continue
                            _raise_for(resp, self.base_url)
                        yield from _events(resp, result, stop, t0, self.base_url)
                        return
            except httpx.HTTPError as e:
                raise AitkError(f"the connection to {self.base_url} failed: {e}", "retry") from None
            finally:
                result.seconds = time.perf_counter() - t0

        result.pieces = pieces()
        return result


def _events(resp, result: ChatStream, stop, t0: float, url: str):
    usage_tokens = None
    for line in resp.iter_lines():
        if stop is not None and stop.is_set():
            result.stopped = True
            return
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("error"):
            err = event["error"]
            raise AitkError(f"{url}: {err.get('message', err) if isinstance(err, dict) else err}")
        usage = event.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens"):
            usage_tokens = int(usage["completion_tokens"])
            result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        for choice in event.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                result.tokens += 1  # a chunk is about a token; the usage chunk corrects it
                result.seconds = time.perf_counter() - t0
                yield piece
    if usage_tokens:
        result.tokens = usage_tokens


def _overflow(resp) -> bool:
    try:
        return resp.status_code == 400 and resp.json()["error"]["code"] == generation.ContextOverflow.code
    except (ValueError, KeyError, TypeError):
        return False


def _drop_oldest_turn(messages: list[dict]) -> list[dict] | None:
    """The messages without their oldest turn (system prompt kept), or None when one turn is left."""
    head = [m for m in messages[:1] if m.get("role") == "system"]
    turns = generation.turns_of(messages[len(head):])
    return head + [m for turn in turns[1:] for m in turn] if len(turns) > 1 else None


def _raise_for(resp, url: str) -> None:
    if resp.status_code < 400:
        return
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = resp.text[:200]
    hint = "pass --api-key (or set AITK_API_KEY)" if resp.status_code == 401 else \
        "check the endpoint URL, the model name and the API key"
    raise AitkError(f"{url} answered HTTP {resp.status_code}: {message}", hint)
