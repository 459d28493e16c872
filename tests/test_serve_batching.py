"""Batched decoding in `aitk serve`: a greedy answer is the same in a batch as alone, concurrent
requests share a generator, and a faulty request in a batch fails alone (tiny model, fp32)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import httpx
import pytest

from aitk.core.chat import Batch, GenaiChatEngine, GenerationOptions

QUESTIONS = ["Where is the capital of Vozai?", "hi", "Tell me a long story about the capital of Vozai and its birds.",
             "What colour are the birds of Vozai?", "Go on", "Which river runs through the capital?", "Why?",
             "Name three things the people of Vozai like to eat in winter."]


@pytest.fixture(scope="module")
def model_dir(tiny_test_model, tmp_path_factory):
    from aitk.core.export import export_model

    dest = tmp_path_factory.mktemp("batching") / "fp32"
    export_model(str(tiny_test_model), None, dest, precision="fp32")
    return dest


def ask(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


def test_a_batch_decodes_each_answer_as_it_decodes_alone(model_dir):
    """Prompts of different lengths (right-padded in the batch) and different caps."""
    engine = GenaiChatEngine(model_dir)
    caps = [40, 12, 60, 5, 33, 1, 20, 48]
    alone = []
    for q, cap in zip(QUESTIONS, caps):
        stream = engine.stream(ask(q), GenerationOptions(max_new_tokens=cap))
        alone.append((stream.read(), stream.tokens))
    batch = engine.start([engine.prepare(ask(q), GenerationOptions(max_new_tokens=cap)) for q, cap in zip(QUESTIONS, caps)])
    texts = [[] for _ in QUESTIONS]
    while not batch.done:
        for row, piece, _ in batch.step():
            texts[row].append(piece)
    assert [("".join(t), n) for t, n in zip(texts, batch.tokens)] == alone


class Gated(GenaiChatEngine):
    """The real engine, two faults a request can carry, and a gate: the first request waits in
    `prepare` until the others are queued, so they all reach the decoder together (one batch)."""

    decoder = None
    gate = False

    def prepare(self, messages, options=None, adapter=None, trim=True, strict=False):
        if self.gate:
            self.gate = False
            deadline = time.monotonic() + 30
            while self.decoder.inbox.qsize() < len(QUESTIONS) - 1 and time.monotonic() < deadline:
                time.sleep(0.005)
        prepared = super().prepare(messages, options, adapter, trim, strict)
        if messages[-1]["content"].startswith("unknown token"):  # a tokenizer with ids the model lacks
            prepared = replace(prepared, input_ids=[*prepared.input_ids, 10**6])
        return prepared

    def start(self, answers):
        return Faulty(self, answers)


class Faulty(Batch):
    """A row whose prompt says "undecodable" cannot be turned into text after its third token; a
    batch with a row saying "crashes" fails its fourth step (alone too, so the row is at fault)."""

    def says(self, row, word):
        return word in self.answers[row].engine.tokenizer.decode(self.answers[row].input_ids)

    def step(self):
        if any(self.wanted[row] and self.says(row, "crashes") for row in range(len(self.answers))) \
                and max(self.tokens) >= 3:
            raise RuntimeError("the device is gone")
        return super().step()

    def piece(self, row, token):
        if self.says(row, "undecodable") and self.tokens[row] > 3:
            raise ValueError("a token with no text")
        return super().piece(row, token)


@pytest.fixture(scope="module")
def server(model_dir):
    import uvicorn

    from aitk.core.server import build_app

    engine = Gated(model_dir)
    app = build_app(engine, "m")
    engine.decoder = app.state.decoder
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", engine
    server.should_exit = True
    thread.join(30)


def body(q: str, i: int, stream: bool) -> dict:
    return {"model": "m", "messages": ask(q), "max_tokens": 8 + 5 * i, "temperature": 0, "stream": stream}


def answer(url: str, q: str, i: int, stream: bool) -> tuple[int, str]:
    """(status, text): the streamed text, or the error message of a failed request."""
    if not stream:
        r = httpx.post(f"{url}/v1/chat/completions", json=body(q, i, False), timeout=60)
        return r.status_code, (r.json()["choices"][0]["message"]["content"] if r.status_code == 200
                               else r.json()["error"]["message"])
    import json

    text = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body(q, i, True), timeout=60) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                return 500, event["error"]["message"]
            text += [c["delta"].get("content") or "" for c in event["choices"]]
    return r.status_code, "".join(text)


def together(url: str, engine: Gated, questions: list[str]) -> list[tuple[int, str]]:
    """All questions at once (even ones streaming, odd ones not), arriving at the decoder together."""
    got: list = [None] * len(questions)

    def one(i):
        got[i] = answer(url, questions[i], i, i % 2 == 0)

    engine.gate = True
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return got


def test_concurrent_requests_share_a_generator_and_get_the_answers_they_get_alone(server):
    url, engine = server
    alone = [answer(url, q, i, i % 2 == 0) for i, q in enumerate(QUESTIONS)]
    assert all(status == 200 and text for status, text in alone)
    before = httpx.get(f"{url}/health").json()["requests"]
    assert together(url, engine, QUESTIONS) == alone
    after = httpx.get(f"{url}/health").json()["requests"]
    assert after["batched"] - before["batched"] == len(QUESTIONS)  # all eight in one generator
    assert after["answered"] - before["answered"] == len(QUESTIONS) and after["failed"] == before["failed"]


@pytest.mark.parametrize("fault", ["undecodable", "unknown token", "crashes"])
def test_a_faulty_request_in_a_batch_fails_alone(server, fault):
    """Its token has no text (the batch decodes on without it); an id the model lacks fails the
    whole step as the prompts go in, or the batch's step fails mid-answer: the batch is split and
    each request goes on alone from the tokens it has, the same greedy answer."""
    url, engine = server
    questions = list(QUESTIONS)
    questions[3] = f"{fault} {questions[3]}"
    alone = [answer(url, q, i, i % 2 == 0) for i, q in enumerate(questions) if i != 3]
    before = httpx.get(f"{url}/health").json()["requests"]
    got = together(url, engine, questions)
    status, message = got.pop(3)
    assert status >= 400 and {"undecodable": "could not be decoded", "unknown token": "out of data bounds",
                              "crashes": "the device is gone"}[fault] in message
    assert got == alone
    after = httpx.get(f"{url}/health").json()
    assert after["requests"]["failed"] - before["failed"] == 1 and after["decoder"] == "running"
    assert after["requests"]["batched"] - before["batched"] == len(questions)


def test_a_stream_whose_first_step_fails_gets_an_error_status(server):
    """The answer is announced with its first turn's text, so a request that cannot even start
    decoding (an id the model lacks, found as the prompt goes in) is an HTTP error, not a 200
    whose stream breaks."""
    url, _ = server
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body("unknown token hi", 0, True),
                      timeout=60) as r:
        r.read()
    assert r.status_code >= 400 and "out of data bounds" in r.json()["error"]["message"]
    assert httpx.get(f"{url}/health").json()["decoder"] == "running"
