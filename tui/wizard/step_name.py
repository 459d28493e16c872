"""Step 1: the project's name and the folder it goes in."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.widgets import Input, Label, Static

from aitk.core import paths
from aitk.tui.wizard.state import check_name, free_name
from aitk.tui.wizard.step import Step


class NameStep(Step):
    TITLE = "Name"
    FOCUS = "#wiz-name"

    def compose(self) -> ComposeResult:
        location = self.state.location or str(paths.projects_dir())
        self.state.location = location
        self.state.name = self.state.name or free_name(location)
        yield Label("Project name", classes="field-label")
        yield Input(self.state.name, id="wiz-name", placeholder="my-project", compact=True)
        yield Static("letters, digits, '.', '_' or '-'; it becomes the folder name", classes="hint")
        yield Label("Folder it goes in", classes="field-label")
        yield Input(location, id="wiz-location", compact=True)
        yield Static("", id="wiz-dest")
        yield Static("\nNothing is written until you confirm on the last step. "
                     "enter/ctrl+n: next · ctrl+r: back · esc: cancel", classes="hint")

    def on_mount(self) -> None:
        self._check()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        self._check()

    def _check(self) -> str | None:
        name = self.query_one("#wiz-name", Input).value.strip()
        location = self.query_one("#wiz-location", Input).value.strip()
        error = check_name(name, location)
        dest = self.query_one("#wiz-dest", Static)
        if error:
            dest.update(f"[red]{error}[/red]")
        else:
            self.state.name, self.state.location = name, location
            dest.update(f"Creates [b]{self.state.dest}[/b]")
        return error

    def commit(self) -> str | None:
        error = self._check()
        if error is None and self.state.settings is not None:
            self.state.settings.name = self.state.name
        return error
