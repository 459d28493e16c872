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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from .errors import AitkError

BASE = "base"


@dataclass
class GenerationOptions:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 50
    system_prompt: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class ChatStream:
    """Iterate for text pieces; afterwards `tokens`, `seconds` and `tokens_per_second` tell the speed."""

    pieces: Iterator[str]
    tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    stopped: bool = False
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
               adapter: str | None = None, stop: threading.Event | None = None) -> ChatStream: ...


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

    def __init__(self, model_dir: str | Path, adapters: dict[str, Path] | None = None):
        import onnxruntime_genai as og

        self._og = og
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "genai_config.json").is_file():
            raise AitkError(f"no exported model in {self.model_dir}", "run `aitk export` first")
        self.model = og.Model(str(self.model_dir))
        self.tokenizer = og.Tokenizer(self.model)
        if adapters is None:
            adapters = {p.stem: p for p in sorted((self.model_dir / "adapters").glob("*.onnx_adapter"))}
        self._adapters = og.Adapters(self.model)
        for name, path in adapters.items():
            self._adapters.load(str(path), name)
        # A zero adapter named "base" (written by export) serves the base model with the same
        # shapes as the tuned one; it is not offered as an adapter of its own.
        self._zero_base = BASE in adapters
        self.adapters = [name for name in adapters if name != BASE]

    def prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)

    def stream(self, messages, options=None, adapter=None, stop=None) -> ChatStream:
        options = options or GenerationOptions()
        validate_messages(messages)
        if adapter not in (None, BASE) and adapter not in self.adapters:
            raise AitkError(f"unknown adapter {adapter!r}", f"choose one of: base, {', '.join(self.adapters)}")
        input_ids = self.tokenizer.encode(self.prompt(with_system(messages, options)))
        params = self._og.GeneratorParams(self.model)
        search = {"max_length": len(input_ids) + options.max_new_tokens, "do_sample": not options.greedy}
        if not options.greedy:
            search.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
        params.set_search_options(**search)
        generator = self._og.Generator(self.model, params)
        if adapter not in (None, BASE):
            generator.set_active_adapter(self._adapters, adapter)
        elif self._zero_base:
            generator.set_active_adapter(self._adapters, BASE)
        result = ChatStream(iter(()), prompt_tokens=len(input_ids))

        def pieces():
            decoder = self.tokenizer.create_stream()
            t0 = time.perf_counter()
            generator.append_tokens(input_ids)
            try:
                while not generator.is_done():
                    if stop is not None and stop.is_set():
                        result.stopped = True
                        break
                    generator.generate_next_token()
                    result.tokens += 1
                    piece = decoder.decode(generator.get_next_tokens()[0])
                    result.seconds = time.perf_counter() - t0
                    if piece:
                        yield piece
            finally:
                result.seconds = time.perf_counter() - t0

        result.pieces = pieces()
        return result


class TorchChatEngine:
    """transformers (+ peft) generation, for a model that has not been exported to ONNX."""

    def __init__(self, model_path: str | Path, adapter_path: str | Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(str(model_path))
        self.adapters: list[str] = []
        if adapter_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_path), adapter_name="tuned")
            self.adapters = ["tuned"]
        self.model = model.eval()

    def stream(self, messages, options=None, adapter=None, stop=None) -> ChatStream:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        options = options or GenerationOptions()
        validate_messages(messages)
        ids = self.tokenizer.apply_chat_template(with_system(messages, options), add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)["input_ids"]
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result = ChatStream(iter(()))

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
            with self._torch.no_grad():
                if self.adapters and adapter in (None, BASE):
                    with self.model.disable_adapter():
                        self.model.generate(**kwargs)
                else:
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


class RemoteChatEngine:
    """Any OpenAI-compatible endpoint (ours from `aitk serve`, deployed or local), streaming SSE.

    Adapters are the endpoint's model names; `adapter` picks one (None: the first listed).
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0):
        import httpx

        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout)
        try:
            resp = self._client.get(f"{self.base_url}/models")
        except httpx.HTTPError as e:
            raise AitkError(f"cannot reach {self.base_url}: {e}", "check the URL and that the server runs") from None
        _raise_for(resp, self.base_url)
        self.adapters = [m["id"] for m in resp.json().get("data", [])]
        if not self.adapters:
            raise AitkError(f"{self.base_url} serves no models", "check the endpoint")

    def stream(self, messages, options=None, adapter=None, stop=None) -> ChatStream:
        import httpx

        options = options or GenerationOptions()
        validate_messages(messages)
        model = adapter if adapter in self.adapters else self.adapters[0]
        body = {"model": model, "messages": with_system(messages, options), "stream": True,
                "max_tokens": options.max_new_tokens, "temperature": max(options.temperature, 0.0),
                "top_p": options.top_p}
        result = ChatStream(iter(()))

        def pieces():
            t0 = time.perf_counter()
            try:
                with self._client.stream("POST", f"{self.base_url}/chat/completions", json=body) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        _raise_for(resp, self.base_url)
                    for line in resp.iter_lines():
                        if stop is not None and stop.is_set():
                            result.stopped = True
                            return
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        event = json.loads(line[6:])
                        if "error" in event:
                            raise AitkError(f"{self.base_url}: {event['error'].get('message')}")
                        delta = event["choices"][0].get("delta", {}).get("content")
                        if delta:
                            result.tokens += 1  # a chunk is about a token on our server and OpenAI's
                            result.seconds = time.perf_counter() - t0
                            yield delta
            except httpx.HTTPError as e:
                raise AitkError(f"the connection to {self.base_url} failed: {e}", "retry") from None
            finally:
                result.seconds = time.perf_counter() - t0

        result.pieces = pieces()
        return result


def _raise_for(resp, url: str) -> None:
    if resp.status_code < 400:
        return
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = resp.text[:200]
    hint = "pass --api-key (or set AITK_API_KEY)" if resp.status_code == 401 else None
    raise AitkError(f"{url} answered {resp.status_code}: {message}", hint)
