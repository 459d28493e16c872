"""`?`: every key of the app, by where it works, with the binding ids the config file can remap."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen

from aitk.tui.config import config_path
from aitk.tui.widgets.prerendered import Prerendered


def _scopes(app):
    """Where each key works; the app's own class comes from the running app (importing it here
    would make app.py and this module import each other)."""
    from aitk.tui.panes.catalog import CatalogPane
    from aitk.tui.panes.chat import ChatPane
    from aitk.tui.panes.jobs import JobsPane
    from aitk.tui.panes.projects import ProjectsPane
    from aitk.tui.wizard.screen import WizardScreen

    return [("Anywhere", type(app)), ("Catalog (F1)", CatalogPane), ("Projects (F2)", ProjectsPane),
            ("Jobs (F3)", JobsPane), ("Chat (F4)", ChatPane), ("New-project wizard", WizardScreen)]


EXTRA = {
    "Anywhere": [("ctrl+p", "Command palette: every action, themes", None),
                 ("tab / shift+tab", "Next / previous field", None)],
    "Chat (F4)": [("enter", "Send the prompt", None), ("ctrl+j", "New line in the prompt", None),
                  ("up / down", "Earlier prompts (at the first / last line)", None)],
    "New-project wizard": [("enter", "Next step (in a text field)", None)],
}


# Copied as shown into the config file, this works: its table header, and a key no pane uses
# (ctrl+j is the chat's new line).
KEYMAP_EXAMPLE = '[keymap]\n"pane.jobs" = "f3,alt+j"'


def binding_rows(app, cls) -> list[tuple[str, str, str | None]]:
    keymap = getattr(app, "_keymap", {}) or {}
    rows = []
    for b in cls.BINDINGS:
        if not isinstance(b, Binding) or not b.description:
            continue
        keys = keymap.get(b.id, b.key) if b.id else b.key
        shown = ", ".join(app.get_key_display(Binding(k, b.action)) for k in keys.split(","))
        rows.append((shown, b.description, b.id))
    return rows


class HelpScreen(ModalScreen):
    DEFAULT_CSS = """
    /* Opaque: a see-through modal makes every paint compose the pane below it too. */
    HelpScreen { align: center middle; background: $background; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: 90%; border: thick $primary;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Prerendered(self._content(), id="help-text")

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).border_title = "Keys — esc closes"
        self.query_one(VerticalScroll).focus()

    def _content(self) -> Table:
        outer = Table.grid(padding=(0, 0))
        outer.add_column()
        for scope, cls in _scopes(self.app):
            table = Table(title=Text(scope, style="bold"), title_justify="left", show_header=False,
                          box=None, padding=(0, 1), expand=True)
            table.add_column("keys", style="bold", width=16, no_wrap=True)
            table.add_column("what", ratio=1)
            table.add_column("id", style="dim", no_wrap=True)
            for keys, what, binding_id in binding_rows(self.app, cls) + EXTRA.get(scope, []):
                table.add_row(keys, what, binding_id or "")
            outer.add_row(table)
            outer.add_row("")
        # Plain text, not markup: Rich would take `[keymap]` for a style and drop it.
        outer.add_row(Text.assemble(("Remap keys", "bold"), " in ", (str(config_path()), "italic"), ":\n",
                                    KEYMAP_EXAMPLE, "\n",
                                    "Every action is also in the command palette (ctrl+p), including themes."))
        return outer
