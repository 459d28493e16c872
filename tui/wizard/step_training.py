"""Step 4: every training setting, grouped, with help, inline validation and a memory estimate."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.widgets import Static

from aitk.tui.wizard.form import SettingsForm
from aitk.tui.wizard.memory import estimate_text
from aitk.tui.wizard.step import Step

# Decided in earlier steps (name, model, data source, template, max length) or the next one (target).
SECTIONS = [
    ("data", {"dataset", "eval_dataset", "text_template", "source_max_len"}),
    ("finetune", set()),
    ("inference", set()),
]


class TrainingStep(Step):
    TITLE = "Training"
    FOCUS = "SettingsForm Input, SettingsForm Select"
    DEFAULT_CSS = """
    TrainingStep #wiz-memory { height: auto; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="wiz-memory")
        yield SettingsForm(self.state.settings, SECTIONS, id="wiz-form")

    def enter(self) -> None:
        form = self.query_one(SettingsForm)
        if form.settings is not self.state.settings:
            form.reload(self.state.settings)
        self._estimate()

    def focus_first(self) -> None:
        self.query("SettingsForm Select, SettingsForm Input").first().focus()

    @on(SettingsForm.Changed)
    def _changed(self) -> None:
        self._estimate()

    def _estimate(self) -> None:
        self.query_one("#wiz-memory", Static).update(
            estimate_text(self.state.entry, self.state.settings, self.app.device))

    def commit(self) -> str | None:
        errors = self.query_one(SettingsForm).errors
        if errors:
            first = next(iter(errors))
            return f"{len(errors)} setting{'s' if len(errors) > 1 else ''} to fix ({first[2:].replace('-', '.', 1)})"
        return None
