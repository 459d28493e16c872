"""Catalog: models aitk can fine-tune, filterable, with variants, sizes, licence and what fits here;
downloads with a progress bar (bytes, speed, ETA) that `x` cancels; models already on disk.

The catalog and the local scan load in worker threads the first time the pane is shown (the
catalog is pydantic-validated TOML; the scan reads the Hugging Face cache), so start-up pays
nothing for them.
"""

from __future__ import annotations

import threading

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, OptionList, ProgressBar, Select, Static
from textual.widgets.option_list import Option

from aitk.core.errors import AitkError
from aitk.tui.formatting import duration
from aitk.tui.panes.base import Pane
from aitk.tui.widgets.toggles import Checkbox

ALL = "__all__"


class CatalogLoaded(Message):
    def __init__(self, catalog, fits: dict, local, device, error: str | None = None):
        super().__init__()
        self.catalog, self.fits, self.local, self.device, self.error = catalog, fits, local, device, error


class DownloadProgress(Message):
    def __init__(self, progress):
        super().__init__()
        self.progress = progress


class DownloadDone(Message):
    def __init__(self, label: str, result=None, error: str | None = None, cancelled: bool = False):
        super().__init__()
        self.label, self.result, self.error, self.cancelled = label, result, error, cancelled


def _fit_cell(fits: dict | None) -> Text:
    if not fits:
        return Text("?", style="dim")
    for method in ("lora", "qlora"):
        f = fits.get(method)
        if f is not None and f.practical:
            return Text(f"✔ {method}", style="green")
    f = fits.get("lora") or fits.get("qlora")
    if f is not None and f.ok is not False and f.speed:
        return Text(f.speed, style="yellow")
    return Text("✘ too big", style="red")


class VariantScreen(ModalScreen[str | None]):
    """Which part of a model to download: its fine-tuning weights or one inference variant."""

    DEFAULT_CSS = """
    VariantScreen { align: center middle; }
    VariantScreen > OptionList { width: 90; max-width: 100%; height: auto; max-height: 80%;
                                 border: thick $primary; background: $surface; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="variant.cancel")]

    def __init__(self, entry, human_bytes):
        super().__init__()
        self.entry, self.human_bytes = entry, human_bytes

    def compose(self) -> ComposeResult:
        e = self.entry
        options = [Option(Text.assemble(("Fine-tuning weights", "bold"), f"  {e.repo}  ",
                                        (self.human_bytes(e.download_bytes), "dim")), id="finetune")]
        for v in e.variants:
            where = f"{v.repo}/{v.subfolder}" if v.published and v.subfolder else (v.repo or "built on export")
            size = self.human_bytes(v.download_bytes) if v.published else "needs the fine-tuning weights"
            options.append(Option(Text.assemble((f"Chat model {v.runtime} {v.precision}", "bold"), f"  {where}  ",
                                                (size, "dim")), id=v.key))
        yield OptionList(*options)

    def on_mount(self) -> None:
        self.query_one(OptionList).border_title = f"Download {self.entry.id} — enter picks, esc cancels"
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


def short_licence(name: str, width: int = 14) -> str:
    """The licence as the table shows it: "Llama 3.2 Community License" as "Llama 3.2" (the detail
    below has the full name and link), and an ellipsis rather than a silent cut."""
    short = name.removesuffix(" License").removesuffix(" Community")
    return short if len(short) <= width else short[: width - 1] + "…"


class CatalogPane(Pane):
    MAIN = "#catalog-table"
    BINDINGS = [
        Binding("slash", "search", "Search", id="catalog.search"),
        Binding("d", "download", "Download", id="catalog.download"),
        Binding("x", "cancel", "Cancel download", id="catalog.cancel"),
        Binding("f", "toggle_fits", "Fits here", id="catalog.fits"),
        Binding("n", "new_project", "New project", id="catalog.new_project"),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.catalog = None
        self.fits: dict[str, dict] = {}
        self.local = []
        self.device = None
        self.rows: dict[str, object] = {}  # row key -> CatalogEntry or LocalModel
        self.selected: str | None = None
        self._loaded = False
        self._cancel: threading.Event | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="catalog-filters"):
            yield Input(placeholder="search models ( / )", id="catalog-search", compact=True)
            yield Select([("any task", ALL)], value=ALL, allow_blank=False, id="catalog-task", compact=True)
            yield Select([("any runtime", ALL), ("cpu", "cpu"), ("cuda", "cuda"), ("directml", "directml")],
                         value=ALL, allow_blank=False, id="catalog-runtime", compact=True)
            yield Checkbox("fits here", id="catalog-fits")
        table = DataTable(id="catalog-table", cursor_type="row", zebra_stripes=True)
        table.add_column("Model", key="model", width=24)  # the longest id whole
        table.add_column("Params", key="params", width=7)
        table.add_column("Licence", key="license", width=14)
        table.add_column("Fine-tune here", key="fit", width=14)
        table.add_column("On disk", key="disk")
        yield table
        with VerticalScroll(id="catalog-detail"):
            yield Static("Loading the catalog…", id="catalog-info")
        with Horizontal(id="catalog-download"):
            yield ProgressBar(id="dl-bar", show_eta=False)
            yield Static("", id="dl-text")

    def on_mount(self) -> None:
        self.query_one("#catalog-download").display = False

    def on_show(self) -> None:
        if not self._loaded:
            self._loaded = True
            self._load()

    def reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="catalog-load")
    def _load(self) -> None:
        try:
            from aitk.core.devices import detect
            from aitk.tui import catalog_cache

            device = self.app.device or detect()
            cat = catalog_cache.load()
            fits = {e.id: {m: catalog_cache.fits(e, device, m) for m in ("lora", "qlora", "inference")} for e in cat}
        except Exception as e:  # noqa: BLE001 - a broken user catalog: say which file and field
            self.post_message(CatalogLoaded(None, {}, [], None, str(e)))
            return
        local = []
        try:
            from aitk.core import hub

            local = hub.scan_local(catalog=cat).models
        except Exception as e:  # noqa: BLE001 - the cache scan is a nicety
            self.app.call_from_thread(self.app.notify, f"could not scan local models: {e}", severity="warning")
        self.post_message(CatalogLoaded(cat, fits, local, device))

    def on_catalog_loaded(self, message: CatalogLoaded) -> None:
        if message.error:
            self.query_one("#catalog-info", Static).update(Text(message.error, style="red"))
            return
        self.catalog, self.fits, self.local, self.device = message.catalog, message.fits, message.local, message.device
        tasks = sorted({t for e in self.catalog for t in e.tasks})
        task_select = self.query_one("#catalog-task", Select)
        with self.prevent(Select.Changed):
            task_select.set_options([("any task", ALL)] + [(t, t) for t in tasks])
            task_select.value = ALL
        self._fill()

    # -- filtering ----------------------------------------------------------------------------
    def _disk(self, entry_id: str) -> list[str]:
        return sorted({u.split(":", 1)[1] for m in self.local for u in m.uses if u.split(":", 1)[0] == entry_id})

    def _fill(self) -> None:
        if self.catalog is None:
            return
        query = self.query_one("#catalog-search", Input).value
        task = self.query_one("#catalog-task", Select).value
        runtime = self.query_one("#catalog-runtime", Select).value
        only_fits = self.query_one("#catalog-fits", Checkbox).value
        try:
            entries = self.catalog.search(query, task=None if task == ALL else task,
                                          runtime=None if runtime == ALL else runtime)
        except AitkError as e:
            self.app.notify(str(e), severity="error")
            entries = []
        if only_fits:
            entries = [e for e in entries if any(f is not None and f.practical
                                                 for m, f in self.fits.get(e.id, {}).items() if m != "inference")]
        table = self.query_one(DataTable)
        keep = self.selected
        with table.prevent(DataTable.RowHighlighted):  # refilling is not the user moving
            self._refill(table, entries, query, task, runtime, only_fits)
        if not self.rows:
            self.query_one("#catalog-info", Static).update(Text("No model matches these filters.", style="dim"))
            self.selected = None
            return
        keys = list(self.rows)
        row = keys.index(keep) if keep in keys else 0
        with table.prevent(DataTable.RowHighlighted):
            table.move_cursor(row=row, animate=False)
        self._show(keys[row])

    def _refill(self, table, entries, query, task, runtime, only_fits) -> None:
        table.clear()
        self.rows = {}
        for e in entries:
            disk = self._disk(e.id)
            table.add_row(Text(e.id, style="bold"), e.params_label, short_licence(e.license), _fit_cell(self.fits.get(e.id)),
                          Text(", ".join(disk), style="green") if disk else Text("—", style="dim"), key=e.id)
            self.rows[e.id] = e
        known = {e.id for e in self.catalog}
        words = query.lower().split()
        for m in self.local:
            if m.uses or m.name in known or task != ALL or runtime != ALL or only_fits:
                continue  # catalog models show on their own row; unknown ones only without filters
            if words and not all(w in f"{m.name} {m.path}".lower() for w in words):
                continue
            key = f"local:{m.name}:{m.path}"
            from aitk.core.catalog import human_bytes

            table.add_row(Text(m.name[:22]), "—", "—", Text("not in catalog", style="dim"),
                          Text(f"{m.kind} {human_bytes(m.size_bytes)}", style="green"), key=key)
            self.rows[key] = m

    @on(Input.Changed, "#catalog-search")
    def _search_changed(self) -> None:
        self._fill()

    @on(Input.Submitted, "#catalog-search")
    def _search_done(self) -> None:
        self.focus_main()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.select.id in ("catalog-task", "catalog-runtime"):
            self._fill()

    @on(Checkbox.Changed, "#catalog-fits")
    def _fits_changed(self) -> None:
        self._fill()

    @on(DataTable.RowHighlighted, "#catalog-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key and event.row_key.value in self.rows:
            self._show(event.row_key.value)

    # -- details ------------------------------------------------------------------------------
    def _show(self, key: str) -> None:
        from aitk.core import catalog

        self.selected = key
        item = self.rows[key]
        info = self.query_one("#catalog-info", Static)
        if key.startswith("local:"):
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold")
            grid.add_column()
            grid.add_row("Local model", item.name)
            grid.add_row("Where", str(item.path))
            grid.add_row("Size", f"{catalog.human_bytes(item.size_bytes)} in {item.files} files")
            grid.add_row("", Text("Not in the catalog: use it in the wizard as “Other” with this path or repo id.",
                                  style="dim"))
            info.update(grid)
            return
        e = item
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("Model", Text.assemble((e.name, "bold"), f" · {e.publisher} · {e.params_label} params · "
                                            f"context {e.context_length} · {e.architecture}"))
        if e.description:
            grid.add_row("", Text(e.description, style="dim"))
        grid.add_row("Licence", e.license + (f"  {e.license_url}" if e.license_url else "")
                     + ("  [gated: accept the terms on huggingface.co first]" if e.gated else ""))
        grid.add_row("Weights", f"{e.repo or 'built on this machine'}  "
                                f"({catalog.human_bytes(e.download_bytes) if e.download_bytes else 'no download'})")
        grid.add_row("Fine-tuning", f"LoRA and QLoRA · targets {', '.join(e.lora_targets)} · "
                                    f"template {e.chat_template}")
        fits = self.fits.get(e.id, {})
        for method, label in (("lora", "LoRA here"), ("qlora", "QLoRA here"), ("inference", "Chat here")):
            f = fits.get(method)
            if f is not None:
                style = "green" if f.practical else ("yellow" if f.ok is not False else "red")
                grid.add_row(label, Text(f.summary(), style=style))
        disk = self._disk(e.id)
        variants = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
        variants.add_column("Variant")
        variants.add_column("From")
        variants.add_column("Size", justify="right")
        variants.add_column("Here")
        for v in e.variants:
            where = f"{v.repo}/{v.subfolder}" if v.subfolder else (v.repo or "built on export")
            variants.add_row(f"{v.runtime} {v.precision}", where,
                             catalog.human_bytes(v.download_bytes) if v.download_bytes else "—",
                             Text("✔ on disk", style="green") if v.key in disk else Text("—", style="dim"))
        local = [m for m in self.local if any(u.startswith(e.id + ":") for u in m.uses)]
        parts = [grid, Text("")]
        if e.variants:
            parts += [Text("Variants", style="bold"), variants]
        for m in local:
            parts.append(Text(f"On disk: {m.path} ({catalog.human_bytes(m.size_bytes)})", style="green"))
        parts.append(Text("\nd download · n new project with this model · / search · f fits-here filter",
                          style="dim"))
        info.update(Group(*parts))

    # -- actions ------------------------------------------------------------------------------
    def action_search(self) -> None:
        self.query_one("#catalog-search", Input).focus()

    def action_toggle_fits(self) -> None:
        box = self.query_one("#catalog-fits", Checkbox)
        box.value = not box.value

    def action_new_project(self) -> None:
        item = self.rows.get(self.selected or "")
        if item is None or (self.selected or "").startswith("local:"):
            self.app.action_new_project()
            return
        self.app.action_new_project(model_id=item.id)

    def action_download(self) -> None:
        if self._cancel is not None:
            self.app.notify("A download is running: x cancels it", severity="warning")
            return
        item = self.rows.get(self.selected or "")
        if item is None or (self.selected or "").startswith("local:"):
            self.app.notify("Select a catalog model to download", severity="warning")
            return
        if item.local:
            self._build_local(item.id)
            return
        from aitk.core.catalog import human_bytes

        def picked(variant: str | None) -> None:
            if variant:
                self._start_download(item.id, variant)

        self.app.push_screen(VariantScreen(item, human_bytes), picked)

    def _start_download(self, model_id: str, variant: str) -> None:
        self._cancel = threading.Event()
        self.query_one("#catalog-download").display = True
        self.query_one("#dl-bar", ProgressBar).update(total=None, progress=0)
        self.query_one("#dl-text", Static).update(f"{model_id} [{variant}]: contacting the hub…  x cancels")
        self._download(model_id, variant, self._cancel)

    @work(thread=True, exclusive=True, group="catalog-download")
    def _download(self, model_id: str, variant: str, cancel: threading.Event) -> None:
        from aitk.core import hub

        label = f"{model_id} [{variant}]"
        try:
            result = hub.pull(model_id, variant, cancel=cancel,
                              on_progress=lambda p: self.post_message(DownloadProgress(p)))
        except hub.DownloadCancelled:
            self.post_message(DownloadDone(label, cancelled=True))
        except AitkError as e:
            self.post_message(DownloadDone(label, error=str(e)))
        except Exception as e:  # noqa: BLE001 - network libraries raise anything
            self.post_message(DownloadDone(label, error=f"{type(e).__name__}: {e}"))
        else:
            self.post_message(DownloadDone(label, result=result))

    @work(thread=True, exclusive=True, group="catalog-download")
    def _build_local(self, model_id: str) -> None:
        from aitk.tui.wizard.state import build_tiny_if_needed

        self.app.call_from_thread(self.app.notify, f"Building {model_id} on this machine (~10 s)…")
        try:
            build_tiny_if_needed()
        except AitkError as e:
            self.post_message(DownloadDone(model_id, error=str(e)))
            return
        self.post_message(DownloadDone(model_id, result=True))

    def on_download_progress(self, message: DownloadProgress) -> None:
        from aitk.core.catalog import human_bytes

        p = message.progress
        bar = self.query_one("#dl-bar", ProgressBar)
        if p.bytes_total:
            bar.update(total=p.bytes_total, progress=p.bytes_done)
        eta = f"ETA {duration(p.eta)}" if p.eta is not None else "ETA —"
        file = f" · {p.file}" if p.file else ""
        self.query_one("#dl-text", Static).update(
            f"{human_bytes(p.bytes_done)} / {human_bytes(p.bytes_total)} · {human_bytes(p.speed)}/s · {eta} · "
            f"file {p.files_done}/{p.files_total}{file}  [dim]x cancels[/dim]")

    def on_download_done(self, message: DownloadDone) -> None:
        self._cancel = None
        self.query_one("#catalog-download").display = False
        if message.cancelled:
            self.app.notify(f"Download of {message.label} cancelled; what was downloaded is kept and the next "
                            "download resumes it", severity="warning")
        elif message.error:
            self.app.notify(message.error, title=f"Download of {message.label}", severity="error", timeout=15)
        else:
            text = getattr(message.result, "message", "") or f"{message.label} is ready"
            self.app.notify(text, title="Download")
        self.reload()

    def action_cancel(self) -> None:
        if self._cancel is None:
            self.app.notify("No download is running", severity="warning")
            return
        self._cancel.set()
        self.query_one("#dl-text", Static).update("cancelling…")
