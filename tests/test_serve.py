"""`aitk serve` driven by the official openai client and raw httpx: streaming, history, adapters,
concurrency; and under faults: context overflow, hung-up clients, bad bodies, SIGTERM, fuzzed bodies."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

pytestmark = pytest.mark.slow
KEY = "sk-test-key-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project, *extra, env=None):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aitk.cli.main", "serve", "-P", str(project.root), "--port",
                             str(port), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError(proc.stdout.read())
    return proc, url


@pytest.fixture(scope="module")
def server(trained):
    project, _, _ = trained
    proc, url = start_server(project, "--api-key", KEY)
    yield url, project.name
    proc.terminate()
    proc.wait(10)


def test_a_deployment_chooses_the_adapter_the_bare_name_answers_with(trained, learned):
    """As the inference Container App runs it: AITK_ADAPTER=tuned (set by `aitk azure deploy`)."""
    from openai import OpenAI

    project, _, _ = trained
    proc, url = start_server(project, env={"AITK_ADAPTER": "tuned"})
    try:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        name = project.name
        assert [m.id for m in client.models.list().data] == [name, f"{name}:{trained[1].id}", f"{name}:tuned",
                                                             f"{name}:base"]
        assert httpx.get(f"{url}/health").json()["default_adapter"] == "tuned"
        ask = [{"role": "user", "content": learned[0]["question"]}]
        bare = client.chat.completions.create(model=name, messages=ask, max_tokens=12).choices[0].message.content
        base = client.chat.completions.create(model=f"{name}:base", messages=ask,
                                              max_tokens=12).choices[0].message.content
        assert bare.strip() == learned[0]["answer"] and base.strip() != learned[0]["answer"]
    finally:
        proc.terminate()
        proc.wait(10)
    out = subprocess.run([sys.executable, "-m", "aitk.cli.main", "serve", "-P", str(project.root), "--adapter",
                          "nope", "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no adapter 'nope'" in out.stderr and "tuned" in out.stderr


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)


def test_models_lists_base_and_adapter(client, server, trained):
    ids = [m.id for m in client.models.list().data]
    assert ids == [server[1], f"{server[1]}:{trained[1].id}", f"{server[1]}:tuned"]  # by name, and the active one


def test_tuned_name_answers_trained_fact_base_does_not(client, server, learned):
    """Every row the model learned comes back through the server as trained; the base knows none."""
    name = server[1]
    hits = {"tuned": 0, "base": 0}
    for row in learned[:8]:
        for label, model in (("tuned", f"{name}:tuned"), ("base", name)):
            out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": row["question"]}],
                                                 max_tokens=12, temperature=0)
            hits[label] += out.choices[0].message.content.strip() == row["answer"]
            assert out.usage.completion_tokens > 0 and out.usage.prompt_tokens > 5
    assert hits["tuned"] == len(learned[:8]) and hits["base"] == 0, hits


def test_streaming_matches_non_streaming(client, server, rows):
    model, q = f"{server[1]}:tuned", [{"role": "user", "content": rows[0]["question"]}]
    whole = client.chat.completions.create(model=model, messages=q, max_tokens=12).choices[0].message.content
    chunks = list(client.chat.completions.create(model=model, messages=q, max_tokens=12, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole and len(chunks) >= 3
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_history_is_used(client, server, rows):
    model = f"{server[1]}:tuned"
    alone = client.chat.completions.create(model=model, max_tokens=12, messages=[
        {"role": "user", "content": rows[1]["question"]}]).choices[0].message.content
    with_history = client.chat.completions.create(model=model, max_tokens=12, messages=[
        {"role": "user", "content": rows[0]["question"]}, {"role": "assistant", "content": "Nonsense words here."},
        {"role": "user", "content": rows[1]["question"]}]).usage.prompt_tokens
    single = client.chat.completions.create(model=model, max_tokens=12, messages=[
        {"role": "user", "content": rows[1]["question"]}]).usage.prompt_tokens
    assert with_history > single + 10 and alone


def test_max_tokens_and_stop(client, server):
    out = client.chat.completions.create(model=server[1], messages=[{"role": "user", "content": "Go on"}],
                                         max_tokens=5, temperature=0)
    assert out.usage.completion_tokens == 5 and out.choices[0].finish_reason == "length"
    full = out.choices[0].message.content
    cut = client.chat.completions.create(model=server[1], messages=[{"role": "user", "content": "Go on"}],
                                         max_tokens=5, temperature=0, stop=[full[2:4]])
    assert cut.choices[0].message.content == full[: full.index(full[2:4])]


def test_eight_concurrent_streams_each_coherent(client, server, rows):
    model = f"{server[1]}:tuned"
    expected = {}
    for row in rows[:8]:
        expected[row["question"]] = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": row["question"]}], max_tokens=12).choices[0].message.content
    got, errors = {}, []

    def ask(q):
        try:
            stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}],
                                                    max_tokens=12, stream=True)
            got[q] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(q,)) for q in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and got == expected


def test_bad_requests_get_4xx_with_message(server):
    url, name = server
    h = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={**h, "content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": name, "messages": []}, headers=h)
    assert r.status_code == 422 and "messages" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": name, "messages": [{"role": "bot", "content": "x"}]},
                   headers=h)
    assert r.status_code == 422 and "role" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                   headers=h)
    assert r.status_code == 404 and "available" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": name, "temperature": 9,
                                                      "messages": [{"role": "user", "content": "x"}]}, headers=h)
    assert r.status_code == 422 and "temperature" in r.json()["error"]["message"]


def test_api_key_required(server):
    url, name = server
    r = httpx.get(f"{url}/v1/models")
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert httpx.get(f"{url}/health").status_code == 200


def test_cli_chat_against_endpoint(server, learned):
    url, name = server
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", "chat", "--endpoint", url, "--api-key", KEY,
                           "--model", f"{name}:tuned", "-p", learned[0]["question"]],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == learned[0]["answer"]
    bad = subprocess.run([sys.executable, "-m", "aitk.cli.main", "chat", "--endpoint", url, "-p", "hi"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "AITK_API_KEY": ""})
    assert bad.returncode == 2 and "401" in bad.stderr and "api-key" in bad.stderr


def test_cli_chat_refuses_a_mistyped_remote_model(server):
    url, name = server
    out = subprocess.run([sys.executable, "-m", "aitk.cli.main", "chat", "--endpoint", url, "--api-key", KEY,
                          "--model", f"{name}:tunned", "-p", "hi"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert f"no model '{name}:tunned'" in out.stderr and f"did you mean '{name}:tuned'" in out.stderr


# -- faults: one bad request fails alone, the server serves on ---------------------------------------
def auth(key=KEY, scheme="Bearer"):
    return {"Authorization": f"{scheme} {key}"}


def ask(url, body, **kw):
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth(), timeout=60, **kw)


def long_conversation(n_turns: int, rows) -> list[dict]:
    messages = []
    for i in range(n_turns):
        messages += [{"role": "user", "content": rows[i % len(rows)]["question"]},
                     {"role": "assistant", "content": rows[i % len(rows)]["answer"] * 3}]
    return messages + [{"role": "user", "content": rows[0]["question"]}]


def test_a_request_too_long_for_the_context_fails_alone_and_the_server_serves_on(client, server, rows):
    """It used to kill the decode thread: every later request hung and /health still said ok."""
    from openai import BadRequestError

    url, name = server
    ctx = httpx.get(f"{url}/health").json()["context_length"]
    assert ctx == 512 and client.models.list().data[0].model_extra["context_length"] == ctx
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(BadRequestError) as e:  # max_tokens as the API once advertised its cap
        client.chat.completions.create(model=name, messages=hi, max_tokens=4096)
    err = e.value.body
    assert err["code"] == "context_length_exceeded" and err["param"] == "max_tokens"
    assert "max_tokens 4096" in err["message"] and "context of 512 tokens" in err["message"]
    r = ask(url, {"model": name, "messages": long_conversation(14, rows), "max_tokens": 256})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = ask(url, {"model": name, "messages": long_conversation(60, rows)})  # the prompt alone is too long
    assert r.status_code == 400 and "leaves no room" in r.json()["error"]["message"]
    # Without max_tokens, the default is capped to what the context has left.
    nine = long_conversation(4, rows)
    r = ask(url, {"model": name, "messages": nine, "temperature": 1.0})
    usage = r.json()["usage"]
    assert r.status_code == 200 and usage["total_tokens"] <= ctx
    same = client.chat.completions.create(model=f"{name}:tuned", messages=[{"role": "user", "content":
                                          rows[0]["question"]}], max_tokens=12)
    assert same.choices[0].message.content
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["decoder"] == "running" and health["requests"]["failed"] >= 3


def test_openai_compatibility_content_parts_developer_role_and_usage_chunk(client, server, learned):
    url, name = server
    q = learned[0]["question"]
    plain = client.chat.completions.create(model=f"{name}:tuned", max_tokens=12,
                                           messages=[{"role": "user", "content": q}])
    parts = client.chat.completions.create(model=f"{name}:tuned", max_tokens=12, messages=[
        {"role": "user", "content": [{"type": "text", "text": q[:5]}, {"type": "text", "text": q[5:]}]}])
    assert parts.choices[0].message.content == plain.choices[0].message.content == learned[0]["answer"]
    as_system = client.chat.completions.create(model=name, max_tokens=2, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": q}])
    as_developer = client.chat.completions.create(model=name, max_tokens=2, messages=[
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": q}])
    assert as_developer.usage.prompt_tokens == as_system.usage.prompt_tokens > plain.usage.prompt_tokens
    chunks = list(client.chat.completions.create(model=name, max_tokens=5, stream=True, messages=[
        {"role": "user", "content": q}], stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    r = ask(url, {"model": name, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]})
    assert r.status_code == 422 and "only text parts" in r.json()["error"]["message"]
    r = ask(url, {"model": name, "n": 2, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "n"


def test_undecodable_deep_and_huge_bodies_get_the_openai_error_object(server):
    import socket as sock

    url, name = server
    post = f"{url}/v1/chat/completions"
    for content in (b"\xff\xfe{", b"[" * 100_000, b'{"a":' * 5000, b"[]", b"", b"{not json"):
        r = httpx.post(post, content=content, headers={**auth(), "content-type": "application/json"})
        err = r.json()["error"]
        assert r.status_code == 400 and err["type"] == "invalid_request_error" and err["message"], content[:10]
    # A 100 MB body is refused from its Content-Length, before it is read.
    port = int(url.rsplit(":", 1)[1])
    with sock.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {100 * 1024 * 1024}\r\n\r\n{{".encode())
        reply = b""
        while b"}}" not in reply:
            data = s.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in reply
    # A chunked body (no Content-Length) is cut off at the limit too.
    def chunks():
        yield b'{"model": "x", "messages": ["'
        for _ in range(9):
            yield b"a" * (1024 * 1024)
    r = httpx.post(post, content=chunks(), headers={**auth(), "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_the_key_any_case_of_bearer_and_the_docs_behind_it(server):
    url, name = server
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert httpx.get(f"{url}/v1/models", headers=auth(scheme=scheme)).status_code == 200
    for headers in (auth(key=KEY[:-1]), auth(key=KEY + "4"), auth(scheme="Basic"), {"Authorization": KEY}, {}):
        r = httpx.get(f"{url}/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(f"{url}{path}").status_code == 401
        assert httpx.get(f"{url}{path}", headers=auth()).status_code == 200
    assert httpx.get(f"{url}/health").status_code == 200  # probes carry no key


def test_a_non_streaming_request_stops_decoding_when_its_client_hangs_up(server):
    url, name = server
    before = httpx.get(f"{url}/health").json()["requests"]
    n, max_tokens = 32, 480
    # Near-uniform sampling rarely meets the end token: each answer would run to max_tokens.
    body = {"model": name, "messages": [{"role": "user", "content": "Tell me everything"}],
            "max_tokens": max_tokens, "temperature": 5.0, "top_k": 0}

    def hang_up():
        try:
            httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth(), timeout=0.2)
        except httpx.TimeoutException:
            pass

    threads = [threading.Thread(target=hang_up) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.time() + 60
    while (now := httpx.get(f"{url}/health").json()["requests"]) and \
            sum(now[k] - before[k] for k in ("answered", "cancelled", "failed")) < n and time.time() < deadline:
        time.sleep(0.2)
    cancelled = now["cancelled"] - before["cancelled"]
    assert cancelled >= n // 2, now
    assert now["tokens"] - before["tokens"] < n * max_tokens // 2, now  # most of the work was never done


def test_sigterm_drains_the_answers_in_flight_and_exits(trained, rows):
    import signal

    project, _, _ = trained
    proc, url = start_server(project)
    try:
        name = project.name
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": name, "max_tokens": 4096,
                                                          "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 400  # once, this left the decoder dead and SIGTERM ignored
        lines = []
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60, json={
                "model": name, "stream": True, "max_tokens": 400, "temperature": 5.0, "top_k": 0,
                "messages": [{"role": "user", "content": rows[0]["question"]}]}) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: ") and not lines:
                    proc.send_signal(signal.SIGTERM)
                if line:
                    lines.append(line)
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")
        assert proc.wait(GRACE_WAIT) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


GRACE_WAIT = 40


def test_health_reports_a_dead_decoder_and_requests_fail_at_once(trained):
    """Only a bug in the decode loop can stop it (each request's errors are caught); made here with
    an engine whose answer raises a BaseException, which no per-request handler catches."""
    import uvicorn

    from aitk.core.chat import GenaiChatEngine
    from aitk.core.server import build_app

    class Broken(GenaiChatEngine):
        def prepare(self, messages, *args, **kwargs):
            if messages[-1]["content"] == "break":
                raise KeyboardInterrupt("a bug in the decoder")
            return super().prepare(messages, *args, **kwargs)

    project, _, _ = trained
    app = build_app(Broken(project.onnx_dir("fp32")), "m")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            time.sleep(0.05)
        ok = {"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=ok).status_code == 200
        r = httpx.post(f"{url}/v1/chat/completions", json={**ok, "messages": [{"role": "user", "content": "break"}]},
                       timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "decoder_stopped"
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.json()["decoder"].startswith("stopped: KeyboardInterrupt")
        r = httpx.post(f"{url}/v1/chat/completions", json=ok, timeout=30)
        assert r.status_code == 503 and "restart" in r.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(30)


def test_cli_chat_drops_the_oldest_turns_of_a_long_conversation(trained, rows):
    """It failed at turn 14 with a raw RuntimeError, and on every message after."""
    project, _, _ = trained
    prompts = [rows[i % len(rows)]["question"] + " Please explain in detail." for i in range(24)]
    out = subprocess.run([sys.executable, "-m", "aitk.cli.main", "chat", "-P", str(project.root), "--base",
                          "--max-new-tokens", "40", "--temperature", "1.0"],
                         input="\n".join(prompts) + "\n\n", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "context 512 tokens" in out.stdout and out.stdout.count("model> ") == 24
    assert "turns left out to fit the context" in out.stdout and "error" not in out.stderr


@pytest.fixture(scope="module")
def open_server(trained):
    project, _, _ = trained
    proc, url = start_server(project)
    yield url, project.name
    proc.terminate()
    proc.wait(30)


def test_fuzzed_request_bodies_get_an_answer_or_an_openai_error_never_a_500(open_server):
    from hypothesis import HealthCheck, given, settings, strategies as st

    url, name = open_server
    scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20)
    json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                               | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
    part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]), "text": st.text(max_size=30)})
    message = st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user", "assistant", "bot"]),
                                     "content": st.text(max_size=60) | st.lists(part, max_size=3) | json_values})
    field_values = {
        "model": st.sampled_from([name, f"{name}:tuned", "nope"]) | json_values,
        "messages": st.lists(message, max_size=4) | json_values,
        "max_tokens": st.integers(-5, 40000) | json_values, "temperature": st.floats(-1, 6) | json_values,
        "top_p": st.floats(-1, 2) | json_values, "top_k": st.integers(-5, 20000), "stream": st.booleans(),
        "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=6), "n": st.integers(0, 3),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | json_values,
    }
    structured = st.fixed_dictionaries({}, optional=field_values)
    raw = st.binary(max_size=200)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=structured | json_values | raw)
    def check(body):
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(f"{url}/v1/chat/completions", content=content, timeout=60,
                       headers={"content-type": "application/json"})
        assert r.status_code in (200, 400, 404, 413, 422), (r.status_code, r.text[:300])
        if r.status_code >= 400:
            err = r.json()["error"]
            assert err["message"] and err["type"] == "invalid_request_error", err
        elif r.headers["content-type"].startswith("text/event-stream"):
            assert r.text.rstrip().endswith("data: [DONE]") and '"error"' not in r.text
        else:
            assert r.json()["choices"][0]["message"]["role"] == "assistant"

    check()
    assert httpx.get(f"{url}/health").json()["decoder"] == "running"


def test_the_server_takes_the_projects_inference_values_under_the_users_config(trained, tmp_path):
    """Precedence: project [inference] < config.toml [chat] < the request."""
    import shutil
    import tomllib

    import tomli_w

    project, _, _ = trained
    root = tmp_path / "copy"
    shutil.copytree(project.root, root, ignore=shutil.ignore_patterns("checkpoints", "chats"))
    data = tomllib.loads((root / "aitk.toml").read_text())
    data["inference"].update(max_new_tokens=7, temperature=5.0, top_k=0)  # sampled wide: no early end
    (root / "aitk.toml").write_text(tomli_w.dumps(data))
    config = tmp_path / "config"
    config.mkdir()
    hi = {"model": data["name"], "messages": [{"role": "user", "content": "hi"}]}
    for user, expected in (("", 7), ("[chat]\nmax_new_tokens = 5\n", 5)):
        (config / "config.toml").write_text(user)
        proc, url = start_server(SimpleNamespace(root=root), env={"AITK_CONFIG_DIR": str(config)})
        try:
            assert httpx.post(f"{url}/v1/chat/completions", json=hi).json()["usage"]["completion_tokens"] == expected
            r = httpx.post(f"{url}/v1/chat/completions", json={**hi, "max_tokens": 3})
            assert r.json()["usage"]["completion_tokens"] == 3
        finally:
            proc.terminate()
            proc.wait(30)
