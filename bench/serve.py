"""Tokens/s through `aitk serve` (one stream, and 8 concurrent) over the chat engine called directly.

    python bench/serve.py [--tokens 128] [--repeats 9] [--shape qwen2.5-0.5b]

Same model (the embedded tiny Phi-3 exported fp32, or with --shape a catalog model's shape model
exported int4: bench/shape_model.py), same prompt, greedy. Times are wall-clock from the request
to the last token, client side, for both; direct and server runs alternate so machine drift hits
both. Goals: one stream >= 0.9 of direct on the tiny model, >= 0.95 at the 0.5B shape; 8
concurrent streams' total tok/s >= 1.5x one stream's (the server batches them).

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
from results import TINY, Row, emit

PROMPT = [{"role": "user", "content": "Tell me a long story about the capital of Vozai."}]


# What `aitk serve` runs (core.server.serve), on a model folder rather than a project.
SERVE_FOLDER = r"""
import sys, uvicorn
from aitk.core.chat import GenaiChatEngine
from aitk.core.server import GRACE_S, build_app
uvicorn.run(build_app(GenaiChatEngine(sys.argv[1]), sys.argv[2]), host="127.0.0.1", port=int(sys.argv[3]),
            log_level="warning", timeout_graceful_shutdown=GRACE_S)
"""

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
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--shape", metavar="MODEL", help="a catalog model's shape model, int4 (e.g. qwen2.5-0.5b)")
    args = ap.parse_args()
    args.repeats = args.repeats or (5 if args.shape else 9)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if args.shape:
        from shape_model import int4_export

        name, onnx = "shape", int4_export(args.shape)
        command = [sys.executable, "-c", SERVE_FOLDER, str(onnx), name, str(port)]
    else:
        name, onnx = resolve_model(None)
        command = [sys.executable, "-m", "aitk.cli.main", "serve", "--port", str(port)]
    engine = GenaiChatEngine(onnx)
    probe = engine.stream(PROMPT, GenerationOptions(max_new_tokens=args.tokens))
    probe.read()
    n = probe.tokens

    def direct() -> float:
        t0 = time.perf_counter()
        engine.stream(PROMPT, GenerationOptions(max_new_tokens=n)).read()
        return time.perf_counter() - t0

    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        if not args.shape:  # at real scale a token costs tens of ms: the fixed cost is lost in it
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
    shape = args.shape or TINY
    goal = 0.95 if args.shape else 0.9
    print(f"{n} new tokens per request, greedy, {f'{shape} shape int4' if args.shape else 'tiny model fp32'}, "
          f"median of {args.repeats}")
    print(f"engine direct            {n / d:9,.1f} tok/s")
    print(f"server, 1 stream         {n / one:9,.1f} tok/s")
    print(f"server, 8 streams (sum)  {8 * n / many:9,.1f} tok/s")
    print(f"server 1 stream / direct = {d / one:.3f}   (goal >= {goal})")
    print(f"server 8 streams (sum) / 1 stream = {8 * one / many:.3f}   (goal >= 1.5)")
    emit(Row("serve", "1 stream / engine direct", d / one, f">= {goal}", shape, "x"),
         Row("serve", "8 streams total tok/s / 1 stream", 8 * one / many, ">= 1.5", shape, "x"),
         Row("serve", "1 stream", n / one, "", shape, "tok/s"))
    if not args.shape:
        print(f"fixed cost of a request (1 token): server {one1 * 1000:.1f} ms vs direct {d1 * 1000:.1f} ms "
              f"= {(one1 - d1) * 1000:.1f} ms")
        print(f"at the model's longest answer here ({n_long} tokens): server 1 stream / direct = "
              f"{d_long / one_long:.3f}")
        emit(Row("serve", "fixed cost of a request", (one1 - d1) * 1000, "", shape, "ms"),
             Row("serve", f"1 stream / direct at {n_long} tokens", d_long / one_long, "", shape, "x"))


if __name__ == "__main__":
    main()
