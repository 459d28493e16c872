"""200 mixed bad and good requests against one `aitk serve`, then an ordinary request must answer.

    python bench/serve_faults.py [--requests 200] [--seed 0]

The server (the embedded tiny Phi-3, context 512, with an API key) runs as a subprocess. Each
case has the answer it must get: good requests 200 with text (streaming ones end in [DONE]),
bad ones their 4xx with an OpenAI error object, a client that hangs up after 50 ms nothing (or
its whole answer, when the tiny model was quicker); the server must stop decoding for it. Cases run 8 at a time in a shuffled mix. Printed: cases tried / handled per
kind, the server's RSS and thread count before and after, and the ordinary request at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from results import Row, emit

KEY = "sk-bench"
MODEL = "tiny"
HI = [{"role": "user", "content": "Where is the capital of Vozai?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stats(pid: int) -> tuple[float, int]:
    """(RSS in MB, threads) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def long_chat(turns: int) -> list[dict]:
    out = []
    for i in range(turns):
        out += [{"role": "user", "content": f"And bird {i}?"}, {"role": "assistant", "content": "Green."}]
    return out + HI


def cases() -> dict[str, tuple[dict, set[int]]]:
    """kind -> (request description, accepted statuses). Status 0: the client hangs up."""
    ok = {"model": MODEL, "messages": HI, "max_tokens": 16}
    j = "application/json"
    return {
        "good": (dict(json=ok), {200}),
        "good stream + usage": (dict(json={**ok, "stream": True, "stream_options": {"include_usage": True}}), {200}),
        "good content parts": (dict(json={**ok, "messages": [{"role": "developer", "content": "Be brief."},
                                                             {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}), {200}),
        "max_tokens 4096": (dict(json={**ok, "max_tokens": 4096}), {400}),
        "14-turn chat at 256": (dict(json={**ok, "messages": long_chat(14), "max_tokens": 256}), {400}),
        "prompt over context": (dict(json={**ok, "messages": long_chat(60)}), {400}),
        "9-turn chat, no max": (dict(json={"model": MODEL, "messages": long_chat(9)}), {200}),
        "not json": (dict(content=b"{not json", headers={"content-type": j}), {400}),
        "not utf-8": (dict(content=b"\xff\xfe\xfa", headers={"content-type": j}), {400}),
        "100k nested": (dict(content=b"[" * 100_000, headers={"content-type": j}), {400}),
        "9 MB body": (dict(content=b'{"x": "' + b"a" * (9 * 1024 * 1024) + b'"}', headers={"content-type": j}), {413}),
        "bad role": (dict(json={**ok, "messages": [{"role": "bot", "content": "x"}]}), {422}),
        "image part": (dict(json={**ok, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), {422}),
        "unknown model": (dict(json={**ok, "model": "nope"}), {404}),
        "temperature 9": (dict(json={**ok, "temperature": 9}), {422}),
        "no key": (dict(json=ok, headers={"Authorization": ""}), {401}),
        "wrong key": (dict(json=ok, headers={"Authorization": "Bearer nope"}), {401}),
        "hang up (non-streaming)": (dict(json={**ok, "max_tokens": 480, "temperature": 1.0}, timeout=0.05), {0, 200}),
        "hang up (streaming)": (dict(json={**ok, "max_tokens": 480, "temperature": 1.0, "stream": True},
                                     timeout=0.05), {0, 200}),
    }


def run_case(url: str, kind: str, spec: dict, accepted: set[int]) -> bool:
    spec = dict(spec)
    timeout = spec.pop("timeout", 60)
    headers = {"Authorization": f"Bearer {KEY}", **spec.pop("headers", {})}
    try:
        r = httpx.post(f"{url}/v1/chat/completions", headers={k: v for k, v in headers.items() if v},
                       timeout=timeout, **spec)
    except httpx.TimeoutException:
        return 0 in accepted
    except httpx.HTTPError:
        return False
    if r.status_code not in accepted:
        return False
    if r.status_code >= 400:
        err = r.json().get("error", {})
        return bool(err.get("message")) and "type" in err
    if r.headers["content-type"].startswith("text/event-stream"):
        return r.text.rstrip().endswith("data: [DONE]") and '"error"' not in r.text
    return bool(r.json()["choices"][0]["message"]["content"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "aitk.cli.main", "serve", "--port", str(port), "--api-key", KEY],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        deadline = time.time() + 300  # the first run exports the tiny model
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                print(proc.stdout.read() if proc.poll() is not None else "server did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)
        run_case(url, "warm-up", *cases()["good"])
        rss0, threads0 = proc_stats(proc.pid)
        table = cases()
        kinds = list(table)
        rng = random.Random(args.seed)
        plan = [kinds[i % len(kinds)] for i in range(args.requests)]
        rng.shuffle(plan)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda k: (k, run_case(url, k, *table[k])), plan))
        seconds = time.perf_counter() - t0
        time.sleep(1)  # let hung-up requests be noticed before the "after" figures
        rss1, threads1 = proc_stats(proc.pid)
        final = run_case(url, "good", *table["good"])
        health = httpx.get(f"{url}/health").json()
        print(f"{'case':28} {'tried':>5} {'handled':>7}")
        for kind in kinds:
            got = [ok for k, ok in results if k == kind]
            print(f"{kind:28} {len(got):5d} {sum(got):7d}")
        handled = sum(ok for _, ok in results)
        print(f"{'all':28} {len(results):5d} {handled:7d}   in {seconds:.1f} s")
        print(f"server RSS {rss0:.0f} MB -> {rss1:.0f} MB; threads {threads0} -> {threads1}")
        print(f"decoder: {health['decoder']}; requests {json.dumps(health['requests'])}")
        print(f"an ordinary request afterwards: {'answered' if final else 'FAILED'}")
        emit(Row("serve_faults", f"bad and good requests handled (of {len(results)})", handled,
                 f">= {len(results)}"),
             Row("serve_faults", "an ordinary request answered afterwards", float(final), ">= 1"))
        return 0 if final and handled == len(results) else 1
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
