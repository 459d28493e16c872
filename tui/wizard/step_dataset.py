"""Step 3: the training data: the bundled sample, a local file (with a picker) or a Hugging Face dataset.

As the source, template or max length change, a worker (debounced) checks the data the way the
fine-tune job will, renders the first rows through the template, and measures token lengths
with the model's own tokenizer against the max length. Problems show inline, located to the line.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from rich.console import Group
from rich.rule import Rule
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, RadioSet, Static
from textual.worker import get_current_worker

from aitk.core import tiny
from aitk.tui.widgets.histogram import TokenHistogram
from aitk.tui.widgets.toggles import RadioButton
from aitk.core.settings import escape_text, unescape_text
from aitk.tui.wizard.step import Step

MODES = ("bundled", "file", "hf")
STATS_ROWS = 2000  # token lengths are measured on at most this many rows
CHECKING = "checking the data…"


@functools.cache
def _tiny_tokenizer():
    return tiny._train_tokenizer(tiny.DEMO)  # the built model's merges, made without torch


def find_tokenizer(state):
    """(tokenizer or None, note): the model's tokenizer if it is on this machine."""
    from aitk.core.datasets import load_tokenizer

    if state.model_id == tiny.TINY_ID:
        folder = tiny.model_dir()
        if (folder / "tokenizer.json").is_file():
            return load_tokenizer(folder), ""
        return _tiny_tokenizer(), ''
    path = state.model_path or ""
    if path and Path(path).expanduser().is_dir():
        return load_tokenizer(Path(path).expanduser()), ""
    if "/" in path:
        from aitk.core.hub import repo_folder

        found = sorted(repo_folder(path).glob("snapshots/*/tokenizer.json"))
        if found:
            return load_tokenizer(found[-1]), ""
    return None, "tokenizer not on this machine yet: lengths below are estimates (characters / 4)"


def hf_unavailable(source: str) -> str | None:
    """Why a Hugging Face dataset cannot be loaded now, found in at most ~2 s: offline (or the hub
    unreachable) and not in the cache. `datasets` itself would retry for ~20 s before saying so."""
    import socket
    from urllib.parse import urlparse

    from aitk.core import hub

    name = source.partition(":")[0]
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or hub.hf_home() / "datasets")
    if (hub.hf_cache_dir() / f"datasets--{name.replace('/', '--')}").is_dir() or \
            any(datasets_cache.glob(f"{name.replace('/', '___')}*")):
        return None
    if hub.is_offline():
        return "offline (HF_HUB_OFFLINE is set) and not in the Hugging Face cache"
    url = urlparse(hub.hf_endpoint())
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=2).close()
    except OSError as e:
        return f"{url.hostname} cannot be reached ({e.strerror or type(e).__name__}) and it is not in the cache"
    return None


class _CharsTokenizer:
    """Stand-in when the model's tokenizer is not downloaded: ~4 characters per token."""

    truncation = padding = None

    class _Enc:
        def __init__(self, n):
            self.ids = [0] * n

    def encode_batch(self, texts):
        return [self._Enc(max(1, len(t) // 4)) for t in texts]


def length_verdict(stats, max_len: int) -> tuple[Text | None, str | None]:
    """(the line saying what the max length cuts, the error that blocks Next or None).

    Rows longer than the max length lose their end, which is usually the answer: some cut is a
    loud warning, every row cut is refused (nothing of the answers would be learned).
    """
    if stats is None or not stats.count:
        return None, None
    over, count = stats.over_limit, stats.count
    if not over:
        return Text(f"✔ max length {max_len}: no row cut (longest {stats.max} tokens)", style="green"), None
    if over == count:
        text = (f"✘ max length {max_len} cuts every row (shortest {stats.min}, p95 {stats.p95} tokens): "
                f"raise it to at least {stats.p95}")
        return Text(text, style="bold red"), f"max length {max_len} cuts every row: raise it to at least {stats.p95}"
    text = (f"⚠ max length {max_len} cuts {over} of {count} rows: their ends are not learned "
            f"(longest {stats.max}; {stats.p95} keeps 95 %)")
    return Text(text, style="bold yellow"), None


class DatasetChecked(Message):
    quality = None  # the data-quality report; a dataset that could not be read has none

    def __init__(self, **kw):
        super().__init__()
        self.__dict__.update(kw)


class DatasetStep(Step):
    TITLE = "Dataset"
    FOCUS = "#wiz-ds-mode"
    BINDINGS = [Binding("ctrl+o", "browse", "Browse files", id="wizard.browse")]
    DEFAULT_CSS = """
    DatasetStep #wiz-ds-scroll { height: 1fr; }
    DatasetStep RadioSet, DatasetStep RadioSet:focus { border: none; padding: 0; height: auto; width: 100%;
                                                       layout: horizontal; }
    DatasetStep RadioButton { margin-right: 2; }
    DatasetStep .path-row { height: 1; }
    DatasetStep .path-row Input { width: 1fr; }
    DatasetStep .path-row Button { width: auto; min-width: 12; }
    DatasetStep .source { display: none; }
    DatasetStep.-source .source { display: block; }
    DatasetStep.-source .path-row.source { display: block; layout: horizontal; }
    DatasetStep .field-label { margin-top: 0; }
    DatasetStep #wiz-ds-hist-label { margin-top: 1; }
    DatasetStep #wiz-ds-preview { color: $text; background: $boost; padding: 0 1; }
    """

    def __init__(self, state, **kwargs):
        super().__init__(state, **kwargs)
        self._tokenizers: dict[str, tuple] = {}
        self.report_ok = False
        self.problem: str | None = CHECKING
        self._next_pending = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="wiz-ds-scroll"):
            with RadioSet(id="wiz-ds-mode"):
                yield RadioButton("Bundled sample", value=True, id="ds-bundled")
                yield RadioButton("Local file", id="ds-file")
                yield RadioButton("Hugging Face", id="ds-hf")
            yield Label("Training data", classes="field-label source")
            with Horizontal(classes="path-row source"):
                yield Input("", id="wiz-ds-path", compact=True, placeholder="path/to/train.jsonl")
                # Not in the Tab order (ctrl+o or a click opens it): Tab from the path goes on to
                # the next field, where a user typing on expects to be.
                browse = Button("Browse ^o", id="wiz-ds-browse", compact=True)
                browse.can_focus = False
                yield browse
            yield Label("Evaluation data (optional)", classes="field-label source")
            yield Input("", id="wiz-ds-eval", compact=True, placeholder="path/to/eval.jsonl, or empty",
                        classes="source")
            yield Label("Text template ({column} is replaced, \\n is a new line)", classes="field-label")
            yield Input("", id="wiz-ds-template", compact=True)
            yield Label("Max length (tokens per sample)", classes="field-label")
            yield Input("", id="wiz-ds-maxlen", compact=True, type="integer")
            yield Static("", id="wiz-ds-issues")
            yield Label("Token lengths against the max length", classes="field-label", id="wiz-ds-hist-label")
            yield TokenHistogram(id="wiz-ds-hist")
            yield Label("Preview (first rows, as the model sees them)", classes="field-label")
            yield Static("", id="wiz-ds-preview")

    def enter(self) -> None:
        s = self.state.settings
        mode_ids = {"bundled": "ds-bundled", "file": "ds-file", "hf": "ds-hf"}
        with self.prevent(Input.Changed, RadioSet.Changed):
            self.query_one(f"#{mode_ids[self.state.dataset_mode]}", RadioButton).value = True
            self.query_one("#wiz-ds-template", Input).value = escape_text(s.data.text_template)
            self.query_one("#wiz-ds-maxlen", Input).value = str(s.data.source_max_len)
            self.query_one("#wiz-ds-path", Input).value = self.state.dataset
            self.query_one("#wiz-ds-eval", Input).value = self.state.eval_dataset
        self._apply_mode()
        self._refresh()

    def _apply_mode(self) -> None:
        self.set_class(self.state.dataset_mode != "bundled", "-source")
        path = self.query_one("#wiz-ds-path", Input)
        browse = self.query_one("#wiz-ds-browse", Button)
        if self.state.dataset_mode == "hf":
            path.placeholder = "owner/name or owner/name:config"
            browse.display = False
        else:
            path.placeholder = "path/to/train.jsonl (.jsonl .json .csv .parquet)"
            browse.display = True

    @on(RadioSet.Changed, "#wiz-ds-mode")
    def _mode(self, event: RadioSet.Changed) -> None:
        self.state.dataset_mode = MODES[event.index]
        self._apply_mode()
        self._refresh()
        # Focus stays on the choice: Tab goes to the path field, now shown. (Moving focus there
        # made the user's Tab land on the button after it, and the typed path went nowhere.)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self._refresh()

    @on(Button.Pressed, "#wiz-ds-browse")
    def _browse_pressed(self) -> None:
        self.action_browse()

    def action_browse(self) -> None:
        if self.state.dataset_mode == "hf":
            return
        from aitk.tui.widgets.file_picker import FilePickerScreen

        target = self.query_one("#wiz-ds-path", Input)
        if self.state.dataset_mode == "bundled":
            self.query_one("#ds-file", RadioButton).value = True

        def picked(path: str | None) -> None:
            if path:
                target.value = path
                target.focus()

        self.app.push_screen(FilePickerScreen(target.value or None), picked)

    # -- checking -----------------------------------------------------------------------------
    def _values(self):
        """Pull the fields into the state; returns an error for a bad template/max length."""
        s = self.state.settings
        self.state.dataset = self.query_one("#wiz-ds-path", Input).value.strip()
        self.state.eval_dataset = self.query_one("#wiz-ds-eval", Input).value.strip()
        template = unescape_text(self.query_one("#wiz-ds-template", Input).value)
        raw_len = self.query_one("#wiz-ds-maxlen", Input).value.strip()
        from pydantic import ValidationError

        try:
            s.data.text_template = template
        except ValidationError as e:
            return "text template: " + e.errors()[0]["msg"].removeprefix("Value error, ")
        if not raw_len.isdigit():
            return "max length: enter a whole number"
        try:
            s.data.source_max_len = int(raw_len)
        except ValidationError as e:
            return "max length: " + e.errors()[0]["msg"]
        return None

    def _refresh(self) -> None:
        error = self._values()
        issues = self.query_one("#wiz-ds-issues", Static)
        if error:
            self.problem = error
            issues.update(Text(error, style="red"))
            return
        train, evaluation = self.state.preview_sources()
        if not train:
            self.problem = "choose the training data"
            issues.update(Text("Choose the training data above.", style="yellow"))
            self.query_one("#wiz-ds-preview", Static).update("")
            self.query_one(TokenHistogram).show(None, self.state.settings.data.source_max_len, note="no data yet")
            return
        self.problem = CHECKING
        issues.update(Text("checking…", style="dim"))
        self._check(train, evaluation, self.state.settings.data.text_template,
                    self.state.settings.data.source_max_len)

    @work(thread=True, exclusive=True, group="wizard-dataset")
    def _check(self, train: str, evaluation: str | None, template: str, max_len: int) -> None:
        worker = get_current_worker()
        time.sleep(0.25)  # typing: only the last change is checked
        if worker.is_cancelled:
            return
        from aitk.core import datasets as ds
        from aitk.core import text_template as grammar
        from aitk.core.errors import AitkError

        if self.state.dataset_mode == "hf" and (why := hf_unavailable(train)):
            issue = ds.DatasetIssue(train, None, None, f"cannot load this Hugging Face dataset: {why}",
                                    hint=ds.HINT_HF)
            self.post_message(DatasetChecked(reports=[ds.DatasetReport(train, "hf", 0, [], [issue])],
                                             rendered=[], stats=None, note="", max_len=max_len))
            return
        reports = [ds.check_dataset(train, text_template=template)]
        if evaluation:
            reports.append(ds.check_dataset(evaluation, text_template=template))
        if worker.is_cancelled:
            return
        rendered, note, stats, quality = [], "", None, None
        if reports[0].ok:
            try:
                rows = ds.load_rows(train, max_rows=STATS_ROWS).rows
                texts = [grammar.render(template, r) for r in rows]
                rendered = texts[:3]
                key = f"{self.state.model_id}|{self.state.model_path}"
                if key not in self._tokenizers:
                    self._tokenizers[key] = find_tokenizer(self.state)
                tok, note = self._tokenizers[key]
                stats = ds.token_stats(texts, tok or _CharsTokenizer(), max_len)
                if len(rows) == STATS_ROWS:
                    note = (note + "; " if note else "") + f"measured on the first {STATS_ROWS} rows"
                from aitk.core.data_quality import check_quality

                quality = check_quality(train, eval=evaluation, template=template, max_length=max_len, tokenizer=tok)
            except AitkError as e:
                note = str(e)
        if not worker.is_cancelled:
            self.post_message(DatasetChecked(reports=reports, rendered=rendered, stats=stats, note=note,
                                             max_len=max_len, quality=quality))

    def on_dataset_checked(self, message: DatasetChecked) -> None:
        lines = []
        bad = 0
        for report in message.reports:
            name = Path(report.source).name if self.state.dataset_mode == "bundled" else report.source
            if report.ok:
                lines.append(Text(f"✔ {name}: {report.rows} rows · columns: {', '.join(report.columns)}",
                                  style="green"))
            else:
                bad += len(report.issues)
                for issue in report.issues[:8]:
                    lines.append(Text(issue.format(), style="red"))
                if len(report.issues) > 8:
                    lines.append(Text(f"… {len(report.issues) - 8} more", style="red"))
        # Data quality (duplicates, contamination, too few rows...): advice, it does not block Next.
        for f in [f for f in message.quality.findings if f.severity != "info"] if message.quality else []:
            example = f": {f.examples[0]}" if f.examples else ""
            count = "" if str(f.count) in f.title else f" ({f.count})"
            lines.append(Text(f"{'✖' if f.severity == 'error' else '⚠'} {f.title}{count}{example}",
                              style="red" if f.severity == "error" else "yellow"))
        self.problem = None if not bad else f"the data has {bad} problem{'s' if bad != 1 else ''}: fix them or " \
                                             "choose another file"
        verdict, blocking = length_verdict(message.stats, message.max_len)
        if verdict is not None:
            lines.append(verdict)
        if blocking and self.problem is None:
            self.problem = blocking
        self.query_one("#wiz-ds-issues", Static).update(Group(*lines))
        preview = []
        for i, text in enumerate(message.rendered):
            if i:
                preview.append(Rule(style="dim"))
            preview.append(Text(text))
        self.query_one("#wiz-ds-preview", Static).update(Group(*preview) if preview else Text("—", style="dim"))
        self.query_one(TokenHistogram).show(message.stats, message.max_len, note=message.note)
        if self._next_pending:
            self._next_pending = False
            if self.problem is None and self.display:
                self.call_later(self.screen.action_next)

    def commit(self) -> str | None:
        error = self._values()
        if error is None and self.problem == CHECKING:
            self._next_pending = True  # moves on by itself when the check passes
        return error or self.problem
