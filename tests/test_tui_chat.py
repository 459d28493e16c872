"""Chat pane: streaming with tokens/s, base|tuned side by side, stop, parameters, history, transcript;
and the remote OpenAI-compatible client against a local streaming server. The model is a fake that
streams canned words (the tmux end-to-end test chats with a real exported model)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from textual.widgets import Input, Select

from aitk.core.chat import GenerationOptions, RemoteChatEngine
from aitk.core.errors import AitkError
from aitk.tui import testing
from aitk.tui.config import ChatDefaults, Config
from aitk.tui.panes.chat import ChatColumn, ChatInput
from aitk.tui.testing import sync, text_of, until


@pytest.fixture
def use_engine(monkeypatch):
    """Make `engine` what loading any exported model gives."""
    def use(engine):
        monkeypatch.setattr("aitk.core.server.open_export", lambda model_dir: engine)
        return engine
    return use


async def chat_ready(app, pilot):
    await pilot.press("f4")
    await until(pilot, lambda: app.pane("chat") is not None and app.pane("chat").ready, what="chat pane")
    pane = app.pane("chat")
    model = pane.query_one("#chat-model", Select)
    await until(pilot, lambda: model.value is not Select.NULL, what="a model listed")
    await until(pilot, lambda: "model ready" in text_of(pane.query_one("#chat-status")), what="model loaded")
    await until(pilot, lambda: app.focused is pane.query_one(ChatInput), what="the prompt focused")
    return pane


def column_text(pane, i: int) -> str:
    return "\n".join(text_of(w) for w in pane.query_one(f"#col-{i}", ChatColumn).children)


@sync
async def test_tuned_answer_streams_with_speed_and_history(world, use_engine):
    engine = use_engine(testing.FakeEngine({"tuned": "Glodan.", "base": "Methl mix."}))
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await chat_ready(app, pilot)
        assert app.focused is pane.query_one(ChatInput)
        await pilot.press(*"What colour")  # typing works; the rest is pasted to keep the test quick
        prompt = pane.query_one(ChatInput)
        assert prompt.text == "What colour"
        prompt.insert(" is a Touxkru bird?")
        await pilot.press("enter")
        await until(pilot, lambda: "2 tokens · 800 tok/s" in column_text(pane, 0), what="answer and speed")
        assert "Glodan." in column_text(pane, 0) and "800 tok/s" in text_of(pane.query_one("#chat-status"))
        assert engine.calls[0][1] == "tuned"
        pane.query_one(ChatInput).insert("And again?")
        await pilot.press("enter")
        await until(pilot, lambda: len(engine.calls) == 2 and not pane.generating, what="second answer")
        messages = engine.calls[1][0]
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]  # the whole history
        assert messages[1]["content"] == "Glodan."
        # Earlier prompts come back with up.
        await pilot.press("up")
        assert pane.query_one(ChatInput).text == "And again?"
        await pilot.press("up")
        assert pane.query_one(ChatInput).text == "What colour is a Touxkru bird?"
        # ctrl+j: a new line instead of sending.
        pane.query_one(ChatInput).load_text("")
        await pilot.press("a", "ctrl+j", "b")
        assert pane.query_one(ChatInput).text == "a\nb" and len(engine.calls) == 2


@sync
async def test_side_by_side_streams_both_and_saves_a_transcript(world, use_engine):
    engine = use_engine(testing.FakeEngine({"tuned": "Glodan.", "base": "Methl mix soxzu."}))
    app = testing.fixture_app()
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await chat_ready(app, pilot)
        pane.query_one("#chat-mode", Select).value = "both"
        await pilot.pause(0.1)
        assert pane.query_one("#col-1").display
        pane.query_one("#opt-system").load_text("Answer in one word.")
        await pilot.press("enter")  # empty prompt: nothing sent
        pane.query_one(ChatInput).insert("Touxkru?")
        await pilot.press("enter")
        await until(pilot, lambda: not pane.generating and len(engine.calls) == 2, what="two answers")
        assert sorted(adapter for _, adapter in engine.calls) == ["base", "tuned"]
        assert "Methl mix soxzu." in column_text(pane, 0) and "Glodan." in column_text(pane, 1)
        status = text_of(pane.query_one("#chat-status"))
        assert "base: 6 tok" in status and "tuned: 2 tok" in status
        await pilot.press("ctrl+s")
        chats = list((testing.Path(world.env["AITK_PROJECTS_DIR"]) / "demo-qa" / "chats").glob("chat-*.md"))
        assert len(chats) == 1
        text = chats[0].read_text()
        assert "# Chat with demo-qa (both)" in text and "## You\n\nTouxkru?" in text
        assert "### tuned (2 tokens · 800 tok/s)\n\nGlodan." in text and "> Answer in one word." in text
        await pilot.press("ctrl+l")
        assert pane.conversation.turns == [] and not list(pane.query_one("#col-0").children)


@sync
async def test_escape_stops_generation(world, use_engine):
    engine = use_engine(testing.FakeEngine({"tuned": " ".join(["word"] * 400)}, delay=0.02))
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await chat_ready(app, pilot)
        pane.query_one(ChatInput).insert("Talk")
        await pilot.press("enter")
        await until(pilot, lambda: "word word" in column_text(pane, 0), what="streaming started")
        await pilot.press("escape")
        await until(pilot, lambda: not pane.generating, what="stopped")
        assert "stopped" in column_text(pane, 0)
        reply = pane.conversation.turns[0].replies["tuned"]
        assert reply.stopped and reply.tokens < 800


@sync
async def test_bad_parameters_are_refused_with_the_field_named(world, use_engine):
    engine = use_engine(testing.FakeEngine())
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        pane = await chat_ready(app, pilot)
        await pilot.press("ctrl+o")
        assert pane.query_one("#chat-options").display and app.focused.id == "opt-max-new-tokens"
        pane.query_one("#opt-top-p", Input).value = "3"
        pane.send("hi")
        await pilot.pause(0.1)
        assert any("top_p must be between 0.01 and 1.0" in n.message for n in app._notifications) and not engine.calls
        pane.query_one("#opt-top-p", Input).value = "0.9"
        pane.query_one("#opt-temperature", Input).value = "0.7"
        pane.send("hi")
        await until(pilot, lambda: len(engine.calls) == 1, what="sent")
        options = pane.options()
        assert (options.top_p, options.temperature, options.max_new_tokens) == (0.9, 0.7, 128)


class RecordingEngine(testing.FakeEngine):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.options: list[GenerationOptions] = []

    def stream(self, messages, options=None, adapter=None, stop=None):
        self.options.append(options)
        return super().stream(messages, options, adapter, stop)


@sync
async def test_the_chat_uses_the_projects_inference_values_under_the_users_config(world, use_engine):
    """Precedence: project [inference] < config.toml [chat] (only the keys set there) < the fields."""
    import tomllib

    import tomli_w

    toml = testing.Path(world.env["AITK_PROJECTS_DIR"]) / "demo-qa" / "aitk.toml"
    data = tomllib.loads(toml.read_text())
    data["inference"].update(max_new_tokens=33, temperature=0.4, top_p=0.8, top_k=7)
    toml.write_text(tomli_w.dumps(data))
    engine = use_engine(RecordingEngine())
    app = testing.fixture_app(config=Config(chat=ChatDefaults(top_k=9)))
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await chat_ready(app, pilot)
        await until(pilot, lambda: pane.query_one("#opt-max-new-tokens", Input).value == "33", what="project values")
        pane.send("hi")
        await until(pilot, lambda: len(engine.options) == 1, what="sent")
        sent = engine.options[0]
        assert (sent.max_new_tokens, sent.temperature, sent.top_p, sent.top_k) == (33, 0.4, 0.8, 9)
        pane.query_one("#opt-max-new-tokens", Input).value = "12"  # the request wins
        await until(pilot, lambda: not pane.generating, what="answered")
        pane.send("again")
        await until(pilot, lambda: len(engine.options) == 2, what="sent again")
        assert engine.options[1].max_new_tokens == 12 and engine.options[1].temperature == 0.4


class _OpenAIStub(BaseHTTPRequestHandler):
    """Just enough of POST /v1/chat/completions with `stream: true` (Server-Sent Events)."""

    requests: list[dict] = []
    MODELS = ["tiny-tuned", "missing"]

    def do_GET(self):  # noqa: N802
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization")})
        payload = json.dumps({"object": "list", "data": [{"id": m, "object": "model", "context_length": 512}
                                                         for m in self.MODELS]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if len(body["messages"]) > 3:  # as aitk serve answers a conversation too long for the context
            payload = json.dumps({"error": {"message": "too long", "code": "context_length_exceeded"}}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if body.get("model") == "missing":
            payload = json.dumps({"error": {"message": "model 'missing' not found"}}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ("Remote ", "hello", "!"):
            chunk = {"choices": [{"delta": {"content": piece}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        usage = {"choices": [], "usage": {"completion_tokens": 3}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def openai_server():
    _OpenAIStub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_remote_client_streams_server_sent_events(openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    engine = RemoteChatEngine(openai_server + "/", model="tiny-tuned")
    assert engine.adapters == ["tiny-tuned", "missing"] and engine.context_length == 512
    stream = engine.stream([{"role": "user", "content": "hi"}],
                           GenerationOptions(max_new_tokens=9, temperature=0.5, top_k=5, system_prompt="be nice"))
    assert list(stream) == ["Remote ", "hello", "!"] and stream.tokens == 3
    listed, sent = _OpenAIStub.requests[0], _OpenAIStub.requests[1]
    assert listed["path"] == "/v1/models" and listed["auth"] == "Bearer sk-test"
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test" and sent["stream"] is True
    assert sent["messages"][0] == {"role": "system", "content": "be nice"}
    assert (sent["max_tokens"], sent["temperature"], sent["top_k"], sent["model"]) == (9, 0.5, 5, "tiny-tuned")
    assert sent["stream_options"] == {"include_usage": True}
    # A conversation the server finds too long loses its oldest turns, the system prompt stays.
    long = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}, {"role": "user", "content": "e"}]
    stream = engine.stream(long, GenerationOptions(system_prompt="sys"))
    assert stream.read() == "Remote hello!" and stream.dropped == 2
    assert [m["content"] for m in _OpenAIStub.requests[-1]["messages"]] == ["sys", "e"]
    with pytest.raises(AitkError, match="HTTP 404: model 'missing' not found"):
        list(RemoteChatEngine(openai_server, model="missing").stream([{"role": "user", "content": "x"}]))
    with pytest.raises(AitkError, match="no model 'tiny-tunned' at .*did you mean 'tiny-tuned'"):
        RemoteChatEngine(openai_server, model="tiny-tunned")
    with pytest.raises(AitkError, match="cannot reach"):
        RemoteChatEngine("http://127.0.0.1:9/v1", timeout=2)
    with pytest.raises(AitkError, match="not an http"):
        RemoteChatEngine("localhost:8000")


@sync
async def test_remote_mode_in_the_pane(world, openai_server, use_engine):
    use_engine(testing.FakeEngine())
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await chat_ready(app, pilot)
        pane.query_one("#chat-mode", Select).value = "remote"
        pane.query_one("#opt-endpoint", Input).value = openai_server
        await pilot.pause(0.1)
        assert pane.query_one("#chat-model", Select).disabled
        pane.query_one(ChatInput).insert("hi")
        await pilot.press("enter")
        await until(pilot, lambda: "Remote hello!" in column_text(pane, 0), what="remote answer")
        await until(pilot, lambda: "remote: 3 tok" in text_of(pane.query_one("#chat-status")), what="speed")


@sync
async def test_a_mistyped_remote_model_name_is_an_error_in_the_pane(world, openai_server, use_engine):
    use_engine(testing.FakeEngine())
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await chat_ready(app, pilot)
        pane.query_one("#chat-mode", Select).value = "remote"
        pane.query_one("#opt-endpoint", Input).value = openai_server
        pane.query_one("#opt-endpoint-model", Input).value = "tiny-tunned"
        await pilot.pause(0.1)
        pane.query_one(ChatInput).insert("hi")
        await pilot.press("enter")
        await until(pilot, lambda: not pane.generating, what="the answer finished")
        assert "no model 'tiny-tunned'" in column_text(pane, 0) and "did you mean 'tiny-tuned'" in column_text(pane, 0)
        assert not [r for r in _OpenAIStub.requests if r["path"].endswith("/chat/completions")]
