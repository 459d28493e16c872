"""Chat: talk to a project's exported model (an adapter, base, base | adapter or two adapters side by
side) or a remote endpoint.

Models load in a worker thread (onnxruntime-genai, one model for base and every adapter the export
carries: the adapter is switched per request, chosen in the adapter selects beside the mode). Each
answer streams from its own worker thread; pieces are coalesced to at most ~20 screen updates a
second per column, so a fast model never floods the UI. `esc` stops generation between two tokens.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static, TextArea

from aitk.core.errors import AitkError
from aitk.tui.panes.base import Pane
from aitk.tui.transcript import Conversation, Reply, Turn

MODES = [("Tuned model", "tuned"), ("Base model", "base"), ("Base | tuned side by side", "both"),
         ("Two adapters side by side", "pair"), ("Remote endpoint", "remote")]
# Column keys: `tuned` answers with the first adapter select's adapter, `other` with the second's.
COLUMNS = {"tuned": ["tuned"], "base": ["base"], "both": ["base", "tuned"], "pair": ["tuned", "other"],
           "remote": ["remote"]}
UPDATE_EVERY_S = 0.05


class ChatInput(TextArea):
    """Multi-line prompt: enter sends, ctrl+j (or shift+enter where the terminal tells) adds a line,
    up/down at the first/last line walk through earlier prompts."""

    class Send(Message):
        def __init__(self, text: str):
            super().__init__()
            self.text = text

    def __init__(self, **kwargs):
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.prompts: list[str] = []
        self._index: int | None = None

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text.strip()
            if text:
                self.prompts.append(text)
                self._index = None
                self.post_message(self.Send(text))
            return
        if event.key in ("ctrl+j", "shift+enter"):
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        if event.key == "up" and self.cursor_location[0] == 0 and self.prompts:
            event.stop()
            event.prevent_default()
            self._index = len(self.prompts) - 1 if self._index is None else max(0, self._index - 1)
            self.load_text(self.prompts[self._index])
            return
        if event.key == "down" and self._index is not None and \
                self.cursor_location[0] == self.document.line_count - 1:
            event.stop()
            event.prevent_default()
            self._index += 1
            if self._index >= len(self.prompts):
                self._index = None
                self.load_text("")
            else:
                self.load_text(self.prompts[self._index])
            return
        await super()._on_key(event)


class ChatPiece(Message):
    def __init__(self, column: str, text: str, tokens: int, seconds: float, done: bool = False,
                 stopped: bool = False, error: str | None = None, dropped: int = 0):
        super().__init__()
        self.column, self.text, self.tokens, self.seconds = column, text, tokens, seconds
        self.done, self.stopped, self.error, self.dropped = done, stopped, error, dropped


class OptionsFor(Message):
    """The generation options of the chosen model's project (its [inference] under config.toml [chat])."""

    def __init__(self, model_dir: str | None, options):
        super().__init__()
        self.model_dir, self.options = model_dir, options


class AdaptersFound(Message):
    """The adapters a loaded export carries, the project's active one first."""

    def __init__(self, model_dir: str, adapters: list[str]):
        super().__init__()
        self.model_dir, self.adapters = model_dir, adapters


class ModelsFound(Message):
    def __init__(self, models: list[tuple[str, str]], select: str | None):
        super().__init__()
        self.models, self.select = models, select


class ChatColumn(VerticalScroll):
    DEFAULT_CSS = """
    ChatColumn { border: round $panel-lighten-2; border-title-color: $accent; padding: 0 1; height: 1fr; }
    ChatColumn .msg { margin-bottom: 1; }
    ChatColumn .user { color: $accent; }
    ChatColumn .assistant { color: $text; }
    ChatColumn .stats { color: $text-muted; margin-top: -1; margin-bottom: 1; }
    ChatColumn .error { color: $error; }
    """


def adapters_first_active(engine, model_dir: str) -> list[str]:
    """The engine's adapters, the project's active one first (worker thread: reads the project)."""
    from aitk.core import adapters

    try:
        active = adapters.active_name(Path(model_dir).parent.parent.parent)
    except OSError:
        active = None
    active = active if active in engine.adapters else getattr(engine, "active", None)
    return sorted(engine.adapters, key=lambda name: name != active)


def find_models() -> list[tuple[str, str]]:
    """(label, exported model folder) for every export of every project the index lists."""
    from aitk.core import project_index

    return [(f"{entry.name} · {e.label}", str(e.path))
            for entry in project_index.list_projects() for e in entry.exports]


class ChatPane(Pane):
    MAIN = "#chat-input"
    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat.stop"),
        Binding("ctrl+l", "clear", "New chat", id="chat.clear"),
        Binding("ctrl+s", "save", "Save", id="chat.save"),
        Binding("ctrl+o", "options", "Parameters", id="chat.options"),
        Binding("ctrl+t", "mode", "Mode", id="chat.mode"),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conversation = Conversation()
        self.mode = "tuned"
        self._engines: dict[str, object] = {}
        self._engine_lock = threading.Lock()
        self._stop = threading.Event()
        self._streams: dict[str, Reply] = {}
        self._widgets: dict[str, Static] = {}
        self._pending_select: str | None = None
        self._pending_mode: str | None = None
        self._mode_confirmed = False
        self._adapters: list[str] = []  # of the chosen model, the project's active adapter first

    def compose(self) -> ComposeResult:
        chat = self.app.config.chat
        start = self._layered(None)
        with Horizontal(id="chat-top"):
            yield Select([], prompt="No exported model yet", id="chat-model", allow_blank=True, compact=True)
            yield Select(MODES, value="tuned", allow_blank=False, id="chat-mode", compact=True)
            yield Select([], id="chat-adapter", allow_blank=True, compact=True, prompt="adapter")
            yield Select([], id="chat-adapter-b", allow_blank=True, compact=True, prompt="adapter")
        with Horizontal(id="chat-main"):
            with Horizontal(id="chat-columns"):
                yield ChatColumn(id="col-0")
                yield ChatColumn(id="col-1")
            with VerticalScroll(id="chat-options"):
                yield Static("", id="opt-error")
                yield Label("Max new tokens")
                yield Input(str(start.max_new_tokens), id="opt-max-new-tokens", type="integer")
                yield Label("Temperature (0 = greedy)")
                yield Input(str(start.temperature), id="opt-temperature", type="number")
                yield Label("Top-p")
                yield Input(str(start.top_p), id="opt-top-p", type="number")
                yield Label("Top-k (0 = all)")
                yield Input(str(start.top_k), id="opt-top-k", type="integer")
                yield Label("System prompt")
                yield TextArea(start.system_prompt or "", id="opt-system", soft_wrap=True, tab_behavior="focus")
                yield Label("Remote endpoint (OpenAI API)")
                yield Input(chat.endpoint, id="opt-endpoint")
                yield Label("Remote model name")
                yield Input(chat.endpoint_model, id="opt-endpoint-model", placeholder="server default")
        yield Static("", id="chat-status")
        yield ChatInput(id="chat-input")

    def on_mount(self) -> None:
        self.query_one("#chat-options").display = False
        self.query_one("#opt-error").display = False
        self._layout_columns()
        self._status("Pick a model above (or ctrl+t for the mode), type below: enter sends, ctrl+j new line, "
                     "esc stops, ctrl+o parameters")

    # -- models -------------------------------------------------------------------------------
    def on_show(self) -> None:
        self.refresh_models()

    def refresh_models(self, select: str | None = None) -> None:
        self._find_models(select)

    @work(thread=True, exclusive=True, group="chat-models")
    def _find_models(self, select: str | None) -> None:
        self.post_message(ModelsFound(find_models(), select))

    def on_models_found(self, message: ModelsFound) -> None:
        sel = self.query_one("#chat-model", Select)
        current = sel.value if sel.value is not Select.NULL else None
        wanted = message.select or self._pending_select or current
        sel.set_options(message.models)
        values = [v for _, v in message.models]
        if wanted in values:
            sel.value = wanted
        elif wanted and message.select:
            # A project path: its newest export.
            match = [v for v in values if Path(v).parent.parent.parent == Path(wanted)]
            if match:
                sel.value = match[0]
        elif values and current is None:
            sel.value = values[0]
        self._pending_select = None

    def open_project(self, project_root: str, mode: str | None = None) -> None:
        """Show this project's newest exported model (called from Jobs and Projects)."""
        from aitk.core import project_index

        try:
            exports = project_index.export_dirs(project_index.check_present(project_root, "the project"))
        except AitkError as e:
            self.app.notify(str(e), severity="error", timeout=10)
            return
        if not exports:
            self.app.notify(f"{Path(project_root).name} has no exported model yet: export it first (Projects: e)",
                            severity="warning")
        self._pending_select = str(exports[0]) if exports else None
        if mode:
            self.query_one("#chat-mode", Select).value = mode
        self.refresh_models(self._pending_select)
        self.focus_main()

    def jobs_updated(self, update) -> None:
        if any(r.kind == "export" and r.status == "succeeded" for r, _ in update.transitions):
            self.refresh_models()

    @on(Select.Changed, "#chat-model")
    def _model_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL and self.mode != "remote":
            self._load_engine(str(event.value))

    @work(thread=True, group="chat-load")
    def _load_engine(self, model_dir: str):
        self._project_options(model_dir)
        try:
            engine = self._engine(model_dir, announce=True)
        except AitkError as e:
            self.app.call_from_thread(self._status, f"[red]{e}[/red]")
            return
        self.post_message(AdaptersFound(model_dir, adapters_first_active(engine, model_dir)))

    def on_adapters_found(self, message: AdaptersFound) -> None:
        if str(self.query_one("#chat-model", Select).value) != message.model_dir:
            return  # a model chosen before the current one
        self._adapters = message.adapters
        options = [(name, name) for name in message.adapters]
        for select_id, index in (("#chat-adapter", 0), ("#chat-adapter-b", 1)):
            select = self.query_one(select_id, Select)
            with select.prevent(Select.Changed):
                select.set_options(options)
                if len(message.adapters) > index:
                    select.value = message.adapters[index]
        self._layout_columns()

    @on(Select.Changed, "#chat-adapter")
    @on(Select.Changed, "#chat-adapter-b")
    def _adapter_changed(self, event: Select.Changed) -> None:
        """Another adapter on the same loaded model: the conversation goes on, answered by it."""
        self._layout_columns()

    def column_adapter(self, column: str) -> str | None:
        """The adapter a column answers with: `base`, a name from the adapter selects, or None
        (a remote column; or no adapter chosen, for the worker to say what is missing)."""
        if column in ("base", "remote"):
            return "base" if column == "base" else None
        select = self.query_one("#chat-adapter" if column == "tuned" else "#chat-adapter-b", Select)
        return None if select.value is Select.NULL else str(select.value)

    def _layered(self, inference):
        """Options by core.generation's precedence below the request: [inference] < config.toml [chat]."""
        from aitk.core import generation

        try:
            return generation.resolve(inference, self.app.config.chat.options())
        except AitkError:
            return generation.resolve(inference)  # config.toml problems are reported by the app

    def _project_options(self, model_dir: str | None) -> None:
        """Post the options of the project that owns `model_dir` (worker thread: reads aitk.toml)."""
        inference = None
        if model_dir is not None:
            from aitk.core.project import load_project

            try:
                inference = load_project(Path(model_dir).parent.parent.parent).settings.inference
            except AitkError:
                inference = None  # an export outside a project: the built-in defaults apply
        self.post_message(OptionsFor(model_dir, self._layered(inference)))

    def on_options_for(self, message: OptionsFor) -> None:
        """Show them in the parameter fields: what is in the fields when a message is sent is the
        request, the top layer. Choosing another model shows that project's values afresh."""
        if message.model_dir is not None and (self.mode == "remote" or
                                              str(self.query_one("#chat-model", Select).value) != message.model_dir):
            return  # a model chosen before the current one
        options = message.options
        for field_id, value in (("#opt-max-new-tokens", options.max_new_tokens),
                                ("#opt-temperature", options.temperature), ("#opt-top-p", options.top_p),
                                ("#opt-top-k", options.top_k)):
            self.query_one(field_id, Input).value = str(value)
        self.query_one("#opt-system", TextArea).load_text(options.system_prompt or "")

    def _engine(self, model_dir: str, announce: bool = False):
        """The loaded engine for an exported model folder (thread-safe; loads once)."""
        with self._engine_lock:
            engine = self._engines.get(model_dir)
            if engine is None:
                if announce:
                    self.app.call_from_thread(self._status, f"loading {Path(model_dir).parent.parent.parent.name}…")
                from aitk.core.server import open_export

                t0 = time.perf_counter()
                try:
                    engine = open_export(model_dir)
                except AitkError:
                    raise
                except Exception as e:  # noqa: BLE001 - onnxruntime errors are plain RuntimeErrors
                    raise AitkError(f"cannot load {model_dir}: {e}", "re-export the model (Projects: e)") from None
                self._engines[model_dir] = engine
                if announce:
                    adapters = ", ".join(engine.adapters) or "none"
                    if hasattr(engine, "merged"):
                        adapters += f" ({engine.active} from the merged export)"
                    context = getattr(engine, "context_length", None)
                    self.app.call_from_thread(
                        self._status, f"model ready in {time.perf_counter() - t0:.1f} s · adapters: {adapters}"
                        + (f" · context {context} tokens (the oldest turns give way)" if context else ""))
            return engine

    # -- mode and options ---------------------------------------------------------------------
    @on(Select.Changed, "#chat-mode")
    def _mode_changed(self, event: Select.Changed) -> None:
        if event.value is Select.NULL or event.value == self.mode:
            return
        if self.conversation.turns and not self._mode_confirmed:
            # Another mode starts a new chat: ask before the conversation goes.
            wanted = str(event.value)
            select = self.query_one("#chat-mode", Select)
            with select.prevent(Select.Changed):
                select.value = self.mode
            self._confirm_mode(wanted)
            return
        self._mode_confirmed = False
        self.mode = str(event.value)
        if self.conversation.turns:
            self.action_clear()
        self._layout_columns()
        if self.mode == "remote":
            self.post_message(OptionsFor(None, self._layered(None)))
            self._status(f"remote endpoint: {self.query_one('#opt-endpoint', Input).value} "
                         "(ctrl+o to change it and the model name)")

    def _layout_columns(self) -> None:
        columns = COLUMNS[self.mode]
        for i, col in enumerate(self.query(ChatColumn)):
            col.display = i < len(columns)
            if i < len(columns):
                col.border_title = (self.column_adapter(columns[i]) if columns[i] in ("tuned", "other") else None) \
                    or columns[i]
        self.query_one("#chat-model", Select).disabled = self.mode == "remote"
        # The adapter selects show when there is a choice: several adapters, or two side by side.
        self.query_one("#chat-adapter", Select).display = self.mode in ("tuned", "both", "pair") and \
            (len(self._adapters) > 1 or self.mode == "pair")
        self.query_one("#chat-adapter-b", Select).display = self.mode == "pair"

    def _confirm_mode(self, wanted: str) -> None:
        from aitk.tui.widgets.confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self._mode_confirmed = True
                self.query_one("#chat-mode", Select).value = wanted

        label = dict((v, k) for k, v in MODES)[wanted]
        self.app.push_screen(ConfirmScreen(f"Switch to {label}? That starts a new chat: this conversation is "
                                           "cleared (ctrl+s saves it first).", yes="Switch"), answered)

    def action_mode(self) -> None:
        order = [m for _, m in MODES]
        self.query_one("#chat-mode", Select).value = order[(order.index(self.mode) + 1) % len(order)]

    def action_options(self) -> None:
        panel = self.query_one("#chat-options")
        panel.display = not panel.display
        if panel.display:
            self.query_one("#opt-max-new-tokens", Input).focus()
        else:
            self.focus_main()

    @on(Input.Changed, "#chat-options Input")
    def _option_edited(self, event: Input.Changed) -> None:
        """Check the parameters as they are typed: the error shows by the fields, not at send time."""
        fields = {"max_new_tokens": "#opt-max-new-tokens", "temperature": "#opt-temperature",
                  "top_p": "#opt-top-p", "top_k": "#opt-top-k"}
        try:
            self.options()
            error = None
        except AitkError as e:
            error = e.message
        for key, field_id in fields.items():
            self.query_one(field_id, Input).set_class(bool(error) and key in error, "-invalid")
        self.query_one("#opt-error", Static).update(Text(f"✘ {error}", style="bold red") if error else "")
        self.query_one("#opt-error", Static).display = bool(error)
        if error:
            from rich.markup import escape

            self._status(escape(f"✘ {error}: fix it in the parameters (ctrl+o) before sending"))

    def options(self):
        """GenerationOptions from the parameter fields (the request layer, checked against
        core.generation's bounds); AitkError naming a bad field."""
        from aitk.core import generation

        request = {key: self.query_one(field_id, Input).value.strip() for key, field_id in (
            ("max_new_tokens", "#opt-max-new-tokens"), ("temperature", "#opt-temperature"),
            ("top_p", "#opt-top-p"), ("top_k", "#opt-top-k"))}
        request["system_prompt"] = self.query_one("#opt-system", TextArea).text.strip()
        try:
            return generation.resolve(request=request)
        except AitkError as e:
            raise AitkError(e.message, "fix it in the parameters (ctrl+o)") from None

    # -- sending ------------------------------------------------------------------------------
    @property
    def generating(self) -> bool:
        return any(not r.done for r in self._streams.values())

    @on(ChatInput.Send)
    def _send(self, event: ChatInput.Send) -> None:
        self.send(event.text)

    def send(self, text: str) -> None:
        if self.generating:
            self.app.notify("Still answering: esc stops it", severity="warning")
            return
        try:
            options = self.options()
        except AitkError as e:
            self.app.notify(str(e), severity="error")
            return
        columns = COLUMNS[self.mode]
        model_dir = None
        if self.mode == "remote":
            # Connecting asks the endpoint for its models: done in the worker, never on the UI thread.
            engine_for = (self.query_one("#opt-endpoint", Input).value.strip(),
                          self.query_one("#opt-endpoint-model", Input).value.strip())
        else:
            value = self.query_one("#chat-model", Select).value
            if value is Select.NULL:
                self.app.notify("No model chosen: fine-tune and export a project first (F2: f)", severity="warning")
                return
            model_dir = str(value)
            engine_for = None
        if self.mode == "pair" and len(self._adapters) < 2:
            self.app.notify("This export carries one adapter: fine-tune another one and export again "
                            "(every adapter goes into the export)", severity="warning")
            return
        self.query_one(ChatInput).load_text("")
        turn = Turn(text)
        self.conversation.turns.append(turn)
        self._stop = threading.Event()
        self._streams = {}
        for i, column in enumerate(columns):
            col = self.query_one(f"#col-{i}", ChatColumn)
            col.mount(Static(Text.assemble(("› ", "bold"), (text, "bold")), classes="msg user"))
            answer = Static(Text("…", style="dim"), classes="msg assistant")
            col.mount(answer)
            col.scroll_end(animate=False)
            reply = Reply()
            turn.replies[column] = reply
            self._streams[column] = reply
            self._widgets[column] = answer
            messages = self.conversation.history(column) + [{"role": "user", "content": text}]
            self._generate(column, model_dir, engine_for, messages, options, self._stop, self.column_adapter(column))
        self._status("answering… esc stops")

    @work(thread=True, group="chat-generate")
    def _generate(self, column: str, model_dir: str | None, engine, messages, options, stop,
                  adapter: str | None = None) -> None:
        tokens, seconds = 0, 0.0
        try:
            if isinstance(engine, tuple):
                engine = self._remote_engine(*engine)
            if engine is None:
                engine = self._engine(model_dir)
                if column in ("tuned", "other") and not engine.adapters:
                    raise AitkError("this export has no fine-tuned adapter", "fine-tune, then export again")
                if column in ("tuned", "other") and adapter is None:
                    adapter = adapters_first_active(engine, model_dir)[0 if column == "tuned" else -1]
            stream = engine.stream(messages, options, adapter=adapter, stop=stop)
            buffer: list[str] = []
            last = time.monotonic()
            for piece in stream:
                buffer.append(piece)
                now = time.monotonic()
                if now - last >= UPDATE_EVERY_S:
                    self.post_message(ChatPiece(column, "".join(buffer), stream.tokens, stream.seconds))
                    buffer, last = [], now
            tokens, seconds = stream.tokens, stream.seconds
            self.post_message(ChatPiece(column, "".join(buffer), tokens, seconds, done=True, stopped=stream.stopped,
                                        dropped=stream.dropped))
        except AitkError as e:
            self.post_message(ChatPiece(column, "", tokens, seconds, done=True, error=str(e)))
        except Exception as e:  # noqa: BLE001 - a runtime error in generation must reach the user
            self.post_message(ChatPiece(column, "", tokens, seconds, done=True, error=f"{type(e).__name__}: {e}"))

    def _remote_engine(self, url: str, model: str):
        """The engine for an endpoint and model name (worker thread; connects once per pair). A
        model name the endpoint does not list is an AitkError, shown in the column."""
        from aitk.core.chat import RemoteChatEngine

        with self._engine_lock:
            key = f"remote:{url}|{model}"
            engine = self._engines.get(key)
            if engine is None:
                engine = self._engines[key] = RemoteChatEngine(url, model or None)
            return engine

    def on_chat_piece(self, message: ChatPiece) -> None:
        reply = self._streams.get(message.column)
        widget = self._widgets.get(message.column)
        if reply is None or widget is None:
            return  # a stream of a conversation that was cleared
        reply.text += message.text
        reply.tokens = message.tokens
        reply.tokens_per_second = message.tokens / message.seconds if message.seconds > 0 else 0.0
        if message.error:
            reply.error = message.error
            widget.update(Text(message.error, style="bold red"))
        else:
            widget.update(Text(reply.text.strip() or ("(no answer)" if message.done else "…"),
                               style="" if reply.text.strip() else "dim"))
        if message.done:
            reply.done, reply.stopped = True, message.stopped
            stats = reply.stats() + (f" · oldest {message.dropped} turns left out to fit the model's context"
                                     if message.dropped else "")
            widget.parent.mount(Static(stats, classes="msg stats"), after=widget)
        widget.parent.scroll_end(animate=False)
        self._status(self._speed_text(done=not self.generating))

    def _speed_text(self, done: bool) -> str:
        parts = []
        for column, reply in self._streams.items():
            column = (self.column_adapter(column) if column in ("tuned", "other") else None) or column
            if reply.error:
                parts.append(f"{column}: [red]error[/red]")
            else:
                parts.append(f"{column}: {reply.tokens} tok · [b]{reply.tokens_per_second:.0f} tok/s[/b]"
                             + (" · stopped" if reply.stopped else ""))
        return "   ".join(parts) + ("" if done else "   [dim]esc stops[/dim]")

    def _status(self, markup: str) -> None:
        self.query_one("#chat-status", Static).update(Text.from_markup(markup))

    # -- actions ------------------------------------------------------------------------------
    def action_stop(self) -> None:
        if self.generating:
            self._stop.set()
        elif self.query_one("#chat-options").display:
            self.action_options()

    def action_clear(self) -> None:
        self._stop.set()
        self.conversation = Conversation()
        self._streams, self._widgets = {}, {}
        for col in self.query(ChatColumn):
            col.remove_children()
        self._status("new conversation")

    def action_save(self) -> None:
        if not self.conversation.turns:
            self.app.notify("Nothing to save yet", severity="warning")
            return
        from aitk.core import paths

        value = self.query_one("#chat-model", Select).value
        if self.mode != "remote" and value is not Select.NULL:
            folder = Path(str(value)).parent.parent.parent / "chats"
            title = f"Chat with {folder.parent.name} ({self.mode})"
        else:
            folder = paths.data_dir() / "chats"
            title = f"Chat with {self.query_one('#opt-endpoint', Input).value}"
        try:
            opts = self.options()
        except AitkError as e:
            self.app.notify(str(e), severity="error")
            return
        params = {"max_new_tokens": opts.max_new_tokens, "temperature": opts.temperature, "top_p": opts.top_p,
                  "top_k": opts.top_k}
        text = self.conversation.to_markdown(title, params, opts.system_prompt or "")
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.conversation.started))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"chat-{stamp}.md"
            path.write_text(text, encoding="utf-8")
        except OSError as e:
            self.app.notify(f"could not save: {e}", severity="error")
            return
        self.app.notify(f"Saved {path}", title="Transcript")
