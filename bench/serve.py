"""Tokens/s through `aitk serve` (one stream, and 8 concurrent) over the chat engine called directly.

    python bench/serve.py [--tokens 128] [--repeats 9]

Same model (the embedded tiny Phi-3, exported fp32), same prompt, greedy. Times are wall-clock
from the request to the last token, client side, for both; direct and server runs alternate so
machine drift hits both. Goal: one stream >= 0.9 of direct.

The tiny model decodes a token in ~0.17 ms, so a request is ~20 ms and the server's fixed cost
per request (HTTP round trip, request parsing, two thread hand-overs: a few ms) shows in the
ratio; the bench therefore also prints that fixed cost and the ratio at the model's longest
natural answer. With a real model (tens of ms per token) the same few ms vanish.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx

from aitk.core.chat import GenaiChatEngine, GenerationOptions
from aitk.core.server import resolve_model

PROMPT = [{"role": "user", "content": "Tell me a long story about the capital of Vozai."}]


CLIENT = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=16))  # keep-alive, as real clients


def stream_once(url: str, model: str, n: int) -> float:
    t0 = time.perf_counter()
    with CLIENT.stream("POST", f"{url}/v1/chat/completions",
                      json={"model": model, "messages": PROMPT, "max_tokens": n, "stream": True}) as r:
        for line in r.iter_lines():
            if line == "data: [DONE]":
                break
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    name, onnx = resolve_model(None)
    engine = GenaiChatEngine(onnx)
    probe = engine.stream(PROMPT, GenerationOptions(max_new_tokens=args.tokens))
    probe.read()
    n = probe.tokens

    def direct() -> float:
        t0 = time.perf_counter()
        engine.stream(PROMPT, GenerationOptions(max_new_tokens=n)).read()
        return time.perf_counter() - t0

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "aitk.cli.main", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        def paired(tokens: int) -> tuple[float, float]:
            """Median direct and server times for `tokens`, alternating the two."""
            ds, ss = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                engine.stream(PROMPT, GenerationOptions(max_new_tokens=tokens)).read()
                ds.append(time.perf_counter() - t0)
                ss.append(stream_once(url, name, tokens))
            return statistics.median(ds), statistics.median(ss)

        stream_once(url, name, n)
        direct()  # warm-ups
        d, one = paired(n)
        d1, one1 = paired(1)  # the fixed cost of a request: one token each way
        probe = engine.stream(PROMPT, GenerationOptions(max_new_tokens=480))
        probe.read()
        n_long = probe.tokens
        d_long, one_long = paired(n_long)

        def eight() -> float:
            threads = [threading.Thread(target=stream_once, args=(url, name, n)) for _ in range(8)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - t0

        many = statistics.median(eight() for _ in range(max(1, args.repeats // 2)))
    finally:
        server.terminate()
        server.wait(10)
    print(f"{n} new tokens per request, greedy, tiny model fp32, median of {args.repeats}")
    print(f"engine direct            {n / d:9,.0f} tok/s")
    print(f"server, 1 stream         {n / one:9,.0f} tok/s")
    print(f"server, 8 streams (sum)  {8 * n / many:9,.0f} tok/s")
    print(f"server 1 stream / direct = {d / one:.3f}   (goal >= 0.9)")
    print(f"server 8 streams / direct = {d * 8 / many:.3f}")
    print(f"fixed cost of a request (1 token): server {one1 * 1000:.1f} ms vs direct {d1 * 1000:.1f} ms "
          f"= {(one1 - d1) * 1000:.1f} ms")
    print(f"at the model's longest answer here ({n_long} tokens): server 1 stream / direct = "
          f"{d_long / one_long:.3f}")


if __name__ == "__main__":
    main()
