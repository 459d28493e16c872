"""Projects: every project the engine's index knows (the projects folder, the ones created or
opened elsewhere, those of jobs), with the state of their exports. Listing runs in a worker; actions
go through the job store.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from aitk.core import project_index
from aitk.core.errors import AitkError
from aitk.core.jobs import ACTIVE, JobRecord
from aitk.core.project_index import AI_TOOLKIT, ProjectEntry
from aitk.tui import job_actions
from aitk.tui.formatting import age, parity_glyph, parity_text, status_text
from aitk.tui.jobs_feed import FeedUpdate
from aitk.tui.panes.base import Pane

AI_TOOLKIT_MARK = "◆ "  # a folder AI Toolkit for VS Code generated
CHAT_CELL = {"ready": ("ready", "green"), "stale": ("stale", "yellow"), "base": ("base", "dim"),
             "none": ("—", "dim")}


class ProjectsScanned(Message):
    def __init__(self, projects: list[ProjectEntry], select: str | None):
        super().__init__()
        self.projects, self.select = projects, select


class ProjectsPane(Pane):
    MAIN = "#projects-table"
    BINDINGS = [
        Binding("n", "new", "New", id="projects.new"),
        Binding("f", "finetune", "Fine-tune", id="projects.finetune"),
        Binding("e", "export", "Export", id="projects.export"),
        Binding("t", "chat", "Chat", id="projects.chat"),
        Binding("i", "import_ai_toolkit", "Import", id="projects.import"),
        Binding("f5", "refresh", "Refresh", id="projects.refresh"),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.projects: dict[str, ProjectEntry] = {}
        self.jobs: list[JobRecord] = []
        self.selected: str | None = None
        self._known_job_projects: set[str] = set()
        self._import_reports: dict[str, list[str]] = {}  # root -> the last import's report, shown once

    def compose(self) -> ComposeResult:
        table = DataTable(id="projects-table", cursor_type="row", zebra_stripes=True)
        table.add_column("Project", key="name", width=18)
        table.add_column("Model", key="model", width=12)
        table.add_column("Method", key="method", width=7)
        table.add_column("Last job", key="last", width=23)  # "⚠ interrupted fine-tune" whole
        table.add_column("Chat", key="chat", width=8)  # "ready ✔": the export's state, its parity mark
        yield table
        with VerticalScroll(id="project-detail"):
            yield Static("Looking for projects…", id="project-info")

    def on_mount(self) -> None:
        self.refresh_projects()

    # -- listing ------------------------------------------------------------------------------
    def refresh_projects(self, select: str | None = None) -> None:
        self._scan(select)

    @work(thread=True, exclusive=True, group="projects-scan")
    def _scan(self, select: str | None) -> None:
        self.post_message(ProjectsScanned(project_index.list_projects(include_ai_toolkit=True), select))

    def on_projects_scanned(self, message: ProjectsScanned) -> None:
        table = self.query_one(DataTable)
        self.projects = {p.root: p for p in message.projects}
        keep = message.select or self.selected
        keep = str(Path(keep).resolve()) if keep else None
        with table.prevent(DataTable.RowHighlighted):  # refilling is not the user moving
            table.clear()
            for info in message.projects:
                table.add_row(*self._cells(info), key=info.root)
            if not message.projects:
                self.selected = None
                self._show_empty()
                return
            roots = [p.root for p in message.projects]
            if message.select and keep not in roots:
                self.app.notify(f"{message.select} is not a project aitk can list", severity="warning")
            row = roots.index(keep) if keep in roots else 0
            table.move_cursor(row=row, animate=False)
        self._select(roots[row])

    def _last_job(self, root: str) -> JobRecord | None:
        return next((r for r in self.jobs if r.project and str(Path(r.project).resolve()) == root), None)

    def _cells(self, info: ProjectEntry) -> tuple:
        last = self._last_job(info.root)
        last_text = Text("—", style="dim") if last is None else \
            Text.assemble(status_text(last.status), f" {last.kind}")
        chat = Text(*CHAT_CELL[info.chat_state])
        if info.parity is not None:
            chat.append(" ").append_text(parity_glyph(info.parity))
        if info.kind == AI_TOOLKIT:
            model = str(info.get("model", "id")).rsplit("/", 1)[-1]
            return (Text(AI_TOOLKIT_MARK + info.name, style="bold magenta"), model,
                    Text("—", style="dim"), Text("import: i", style="magenta"), Text("—", style="dim"))
        mark = AI_TOOLKIT_MARK if info.from_ai_toolkit else ""
        return (Text(mark + info.name, style="bold") if not info.problem else Text(mark + info.name, style="red"),
                str(info.get("model", "id")), str(info.get("finetune", "method", "lora")), last_text, chat)

    def jobs_updated(self, update: FeedUpdate) -> None:
        self.jobs = update.records
        found = {r.project for r in update.records if r.project}
        new = found - self._known_job_projects
        self._known_job_projects |= found
        refresh_outputs = any(r.status == "succeeded" for r, _ in update.transitions)
        if (new and not update.first) or refresh_outputs or (update.first and new):
            self.refresh_projects()
            return
        if not update.transitions:
            return  # nothing this pane shows has changed
        table = self.query_one(DataTable)
        for root, info in self.projects.items():
            table.update_cell(root, "last", self._cells(info)[3])
        if self.selected in self.projects:
            self._show_detail(self.projects[self.selected])

    @on(DataTable.RowHighlighted, "#projects-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key and event.row_key.value in self.projects:
            self._select(event.row_key.value)

    def _select(self, root: str) -> None:
        self.selected = root
        self._show_detail(self.projects[root])

    def _show_empty(self) -> None:
        from aitk.core import paths

        self.query_one("#project-info", Static).update(Text.from_markup(
            "[b]No projects yet.[/b]\n\n"
            "Press [b]n[/b] (or [b]ctrl+n[/b] anywhere) to create one with the wizard: pick a model and a "
            "dataset, check the settings, and start fine-tuning. The embedded [b]tiny[/b] model with its "
            "sample dataset fine-tunes in under a minute on a laptop CPU.\n\n"
            f"[dim]Projects folder: {paths.projects_dir()}[/dim]"))

    def _show_detail(self, info: ProjectEntry) -> None:
        if info.kind == AI_TOOLKIT:
            self.query_one("#project-info", Static).update(Text.from_markup(
                f"[b magenta]{AI_TOOLKIT_MARK}AI Toolkit project[/b magenta]  [dim]{info.root}[/dim]\n"
                f"Model: {info.get('model', 'id')}\n\n"
                "Made by AI Toolkit for VS Code and not imported yet. Press i to import it: aitk "
                "writes its aitk.toml (every form value carried over, and a list of what cannot be), and "
                "AI Toolkit's own files stay as they are, so VS Code still opens it."))
            return
        if info.problem:
            self.query_one("#project-info", Static).update(Text(f"{info.root}\n{info.problem}", style="red"))
            return
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        f = info.settings.get("finetune", {})
        grid.add_row("Folder", info.root)
        grid.add_row("Model", f"{info.get('model', 'id')}  [dim]({info.get('model', 'path')})[/dim]")
        data = info.get("data", "dataset")
        eval_data = info.get("data", "eval_dataset", "none")
        grid.add_row("Data", f"{data}  [dim]eval: {eval_data}[/dim]")
        grid.add_row("Training", f"{f.get('method', 'lora')}  r={f.get('lora_r')}  alpha={f.get('lora_alpha')}  "
                                 f"lr={f.get('learning_rate')}  steps={f.get('max_steps')}  "
                                 f"batch={f.get('per_device_train_batch_size')}")
        grid.add_row("Target", f"{info.get('target', 'where', 'local')} · {info.get('target', 'device', 'auto')}")
        outputs = []
        outputs.append("[green]adapter ✔[/green]" if info.adapter else "[dim]no adapter yet[/dim]")
        current = [e.precision for e in info.exports if e.current]
        outputs.append(f"[green]ONNX {', '.join(current)} ✔[/green]" if current else
                       "" if info.exports else "[dim]not exported[/dim]")
        grid.add_row("Outputs", "  ".join(o for o in outputs if o))
        for e in info.exports:
            if not e.current:
                style = "yellow" if e.stale else "dim"
                grid.add_row("", Text(f"ONNX {e.precision} {e.summary}", style=style))
        if info.parity is not None:
            grid.add_row("Parity", parity_text(info.parity, self.app.clock()))
        jobs = [r for r in self.jobs if r.project and str(Path(r.project).resolve()) == info.root][:5]
        now = self.app.clock()
        for i, rec in enumerate(jobs):
            grid.add_row("Jobs" if i == 0 else "", Text.assemble(status_text(rec.status), f"  {rec.kind}  ",
                                                                 (f"{age(now - rec.created)} ago  {rec.id}", "dim")))
        hint = Text.from_markup("\n[dim]f fine-tune (then export) · e export · t chat · n new project[/dim]")
        report = self._import_reports.get(info.root)
        extra = [Text("\n" + "\n".join(report), style="dim")] if report else []
        self.query_one("#project-info", Static).update(_stack(grid, hint, *extra))

    # -- actions ------------------------------------------------------------------------------
    def _current(self, importing: bool = False) -> ProjectEntry | None:
        info = self.projects.get(self.selected or "")
        if info is None:
            self.app.notify("No project selected: press n to create one", severity="warning")
        elif info.kind == AI_TOOLKIT and not importing:
            self.app.notify(f"{info.name} is an AI Toolkit project: press i to import it first", severity="warning")
            return None
        return info

    def action_import_ai_toolkit(self) -> None:
        info = self._current(importing=True)
        if info is None:
            return
        if info.kind != AI_TOOLKIT:
            self.app.notify(f"{info.name} is an aitk project already", severity="information")
            return
        from aitk.tui.widgets.confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self._import(info)

        self.app.push_screen(ConfirmScreen(
            f"Import the AI Toolkit project {info.name}?\n\nWrites aitk.toml and aitk's own files into "
            f"{info.root}; AI Toolkit's files are not changed.", yes="Import"), answered)

    @work(thread=True, group="project-actions")
    def _import(self, info: ProjectEntry) -> None:
        from aitk.core import aitk_project

        try:
            report = aitk_project.import_project(info.root)
        except AitkError as e:
            self.app.call_from_thread(self.app.notify, str(e), title=info.name, severity="error", timeout=12)
            return
        self._import_reports[str(report.dest)] = report.lines()
        self.app.call_from_thread(
            self.app.notify, f"Imported {info.name}: {len(report.carried)} values carried over, "
            f"{len(report.not_carried)} not (listed in the details)", timeout=6)
        self.app.call_from_thread(self.refresh_projects, str(report.dest))

    def action_new(self) -> None:
        self.app.action_new_project()

    def action_refresh(self) -> None:
        self.refresh_projects()

    def action_finetune(self) -> None:
        info = self._current()
        if info is None:
            return
        self._submit(info, "finetune")  # the facade refuses a second fine-tune, with the reason

    def action_export(self) -> None:
        info = self._current()
        if info is None:
            return
        if not info.adapter:
            self.app.notify(f"{info.name} has no fine-tuned adapter yet: fine-tune first (f)", severity="warning")
            return
        self._submit(info, "export")

    def action_chat(self) -> None:
        info = self._current()
        if info is None:
            return
        if not info.exports:
            self.app.notify(f"{info.name} has no exported model yet: fine-tune (f) or export (e) first",
                            severity="warning")
            return
        if info.chat_state == "stale":
            self.app.notify(f"{info.name}'s export is older than its adapter: the chat answers with the old "
                            "one until you export again (e)", severity="warning", timeout=8)
        self.app.call_later(self.app.open_chat, info.root)

    @work(thread=True, group="project-actions")
    def _submit(self, info: ProjectEntry, what: str) -> None:
        store = self.app.store()
        try:
            if what == "finetune":
                jobs = job_actions.start_finetune(store, info.root)
            else:
                jobs = [job_actions.start_export(store, info.root)]
        except AitkError as e:
            self.app.call_from_thread(self.app.notify, str(e), title=info.name, severity="error", timeout=12)
            return
        self.app.wake_jobs()
        label = "Fine-tune queued (then export)" if what == "finetune" else "Export queued"
        self.app.call_from_thread(self.app.notify, f"{label}: {info.name}", timeout=4)
        self.app.call_from_thread(self.app.show_job, jobs[0].id)


def _stack(*items):
    from rich.console import Group

    return Group(*items)
