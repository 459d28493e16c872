"""Step 2: the base model: a catalog entry (with what fine-tuning it needs here) or any HF repo/folder."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from aitk.core import tiny
from aitk.tui.wizard.step import Step

OTHER = "__other__"


class CatalogReady(Message):
    def __init__(self, entries, fits, device, error: str | None = None):
        super().__init__()
        self.entries, self.fits, self.device, self.error = entries, fits, device, error


def fit_text(fit) -> Text:
    if fit is None:
        return Text("?", style="dim")
    if fit.ok is False:
        return Text("too big", style="red")
    if fit.speed in ("slow", "impractical"):
        return Text(fit.speed, style="yellow")
    return Text("fits", style="green")


class ModelStep(Step):
    TITLE = "Model"
    FOCUS = "#wiz-models"
    DEFAULT_CSS = """
    ModelStep #wiz-models { height: 1fr; min-height: 4; }
    ModelStep #wiz-model-info { height: auto; max-height: 12; }
    ModelStep #wiz-model-other { display: none; }
    ModelStep #wiz-model-other.-shown { display: block; }
    """

    def __init__(self, state, **kwargs):
        super().__init__(state, **kwargs)
        self.entries = {}
        self.fits = {}
        self.device = None

    def compose(self) -> ComposeResult:
        yield Static("Base model to fine-tune (fit = LoRA training on this machine's best device):", classes="hint")
        yield OptionList(id="wiz-models")
        yield Input("", id="wiz-model-other", compact=True,
                    placeholder="Hugging Face repo id (owner/name) or a local model folder")
        with VerticalScroll(id="wiz-model-info"):
            yield Static("loading the catalog…", id="wiz-model-detail")

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="wizard-catalog")
    def _load(self) -> None:
        try:
            from aitk.core.devices import detect
            from aitk.tui import catalog_cache

            device = self.app.device or detect()
            entries = list(catalog_cache.load())
            fits = {e.id: catalog_cache.fits(e, device, "lora") for e in entries}
            self.post_message(CatalogReady(entries, fits, device))
        except Exception as e:  # noqa: BLE001 - a broken user catalog: the tiny model still works
            self.post_message(CatalogReady([], {}, None, str(e)))

    def on_catalog_ready(self, message: CatalogReady) -> None:
        self.entries = {e.id: e for e in message.entries}
        self.fits, self.device = message.fits, message.device
        ol = self.query_one(OptionList)
        ol.clear_options()
        for e in message.entries:
            prompt = Text.assemble((e.id.ljust(22), "bold"), f"{e.params_label:>7}  ", (e.license[:12].ljust(13), "dim"),
                                   fit_text(self.fits.get(e.id)))
            ol.add_option(Option(prompt, id=e.id))
        if not message.entries:
            ol.add_option(Option(Text.assemble(("tiny".ljust(22), "bold"), "embedded demo model"), id=tiny.TINY_ID))
        ol.add_option(Option(Text("Other: a Hugging Face repo id or a local folder…", style="italic"), id=OTHER))
        ids = [o.id for o in ol.options]
        wanted = self.state.model_id if self.state.model_id in ids else (OTHER if self.state.model_path else ids[0])
        ol.highlighted = ids.index(wanted)
        if message.error:
            self.query_one("#wiz-model-detail", Static).update(Text(f"catalog: {message.error}", style="red"))

    @on(OptionList.OptionHighlighted, "#wiz-models")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        other = event.option.id == OTHER
        self.query_one("#wiz-model-other").set_class(other, "-shown")
        self.query_one("#wiz-model-detail", Static).update(self._detail(event.option.id))

    @on(OptionList.OptionSelected, "#wiz-models")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == OTHER:
            self.query_one("#wiz-model-other", Input).focus()
        else:
            self.call_later(self.screen.action_next)

    def _detail(self, model_id: str):
        if model_id == OTHER:
            return Text("Any causal LM on the Hugging Face hub (downloaded when the job starts) or a folder with "
                        "config.json and safetensors. No memory estimate: it is not in the catalog.", style="dim")
        e = self.entries.get(model_id)
        if e is None:
            return Text("The embedded tiny Phi-3: trains in under a minute on a CPU.")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        grid.add_row("Model", f"{e.name} · {e.publisher} · {e.params_label} params · context {e.context_length}")
        if e.description:
            grid.add_row("", Text(e.description, style="dim"))
        grid.add_row("Licence", e.license + (" (gated: accept its terms on huggingface.co)" if e.gated else ""))
        grid.add_row("Source", e.repo or "built on this machine")
        fit = self.fits.get(e.id)
        if fit is not None:
            grid.add_row("LoRA here", fit.summary())
        return grid

    def commit(self) -> str | None:
        ol = self.query_one(OptionList)
        if ol.highlighted is None:
            return "Choose a model"
        chosen = ol.get_option_at_index(ol.highlighted).id
        previous = (self.state.model_id, self.state.model_path)
        if chosen == OTHER:
            path = self.query_one("#wiz-model-other", Input).value.strip()
            if not path:
                return "Type a Hugging Face repo id (owner/name) or a model folder"
            from pathlib import Path

            folder = Path(path).expanduser()
            if folder.is_dir():
                path = str(folder.resolve())
            elif "/" not in path:
                return f"{path!r} is neither owner/name nor an existing folder"
            self.state.model_id, self.state.model_path, self.state.entry = path, path, None
        else:
            e = self.entries.get(chosen)
            self.state.model_id, self.state.entry = chosen, e
            self.state.model_path = e.repo if e is not None and not e.local else None
        if self.state.settings is None or previous != (self.state.model_id, self.state.model_path):
            self.state.reset_settings()
        return None
