"""`aitk serve` driven by the official openai client: streaming, history, adapters, concurrency."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

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
        assert [m.id for m in client.models.list().data] == [name, f"{name}:tuned", f"{name}:base"]
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


def test_models_lists_base_and_adapter(client, server):
    ids = [m.id for m in client.models.list().data]
    assert ids == [server[1], f"{server[1]}:tuned"]


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
