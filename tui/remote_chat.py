"""Chat with a remote OpenAI-compatible endpoint (`POST {base}/chat/completions`, `stream: true`).

Standard library only (urllib): Server-Sent Events are read line by line as they arrive, each
`data: {...}` chunk's `choices[0].delta.content` is one piece. The same `ChatStream` as the local
engines comes back, so the chat pane treats both alike; `stop` closes the connection between
chunks. Works with aitk's own server (when it exists), vLLM, llama.cpp, Ollama, Azure OpenAI-style
gateways that accept a bearer key.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

from aitk.core.chat import ChatStream, GenerationOptions, validate_messages, with_system
from aitk.core.errors import AitkError

API_KEY_ENV = ("AITK_API_KEY", "OPENAI_API_KEY")


class RemoteChatEngine:
    adapters: list[str] = []

    def __init__(self, base_url: str, model: str = "", api_key: str | None = None, timeout: float = 60.0):
        base_url = base_url.strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise AitkError(f"endpoint {base_url!r} is not an http(s) URL", "e.g. http://127.0.0.1:8000/v1")
        self.base_url = base_url
        self.model = model
        self.api_key = api_key if api_key is not None else next(
            (os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        self.timeout = timeout

    def _request(self, messages: list[dict], options: GenerationOptions) -> urllib.request.Request:
        body = {
            "model": self.model or "default",
            "messages": with_system(messages, options),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": options.max_new_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
        }
        if options.top_k:
            body["top_k"] = options.top_k  # not OpenAI's, but vLLM, llama.cpp and aitk accept it
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
                                      headers=headers, method="POST")

    def stream(self, messages, options=None, adapter=None, stop: threading.Event | None = None) -> ChatStream:
        options = options or GenerationOptions()
        validate_messages(messages)
        request = self._request(messages, options)
        result = ChatStream(iter(()))

        def pieces():
            t0 = time.perf_counter()
            try:
                response = urllib.request.urlopen(request, timeout=self.timeout)
            except urllib.error.HTTPError as e:
                raise AitkError(f"{self.base_url} answered HTTP {e.code}: {_error_text(e)}",
                                "check the endpoint URL, the model name and the API key") from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise AitkError(f"cannot reach {self.base_url}: {reason}",
                                "is the server running? check the URL in the chat parameters") from None
            usage_tokens = None
            with response:
                for raw in response:
                    if stop is not None and stop.is_set():
                        result.stopped = True
                        break
                    line = raw.decode("utf-8", errors="replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(chunk.get("usage"), dict) and chunk["usage"].get("completion_tokens"):
                        usage_tokens = int(chunk["usage"]["completion_tokens"])
                    if chunk.get("error"):
                        raise AitkError(f"{self.base_url}: {chunk['error'].get('message', chunk['error'])}")
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            result.tokens += 1
                            result.seconds = time.perf_counter() - t0
                            yield piece
            if usage_tokens:
                result.tokens = usage_tokens
            result.seconds = time.perf_counter() - t0

        result.pieces = pieces()
        return result


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        body = e.read().decode("utf-8", errors="replace")
        data = json.loads(body)
        err = data.get("error", data)
        return str(err.get("message", err) if isinstance(err, dict) else err)[:300]
    except Exception:  # noqa: BLE001 - any body: show the reason phrase instead
        return str(e.reason)
