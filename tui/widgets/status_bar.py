"""The bottom status line: device, running jobs, Azure sign-in, and where help is."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class StatusBar(Widget):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    device: reactive[str] = reactive("device: detecting…")
    running: reactive[int] = reactive(0)
    queued: reactive[int] = reactive(0)
    azure: reactive[str] = reactive("Azure: …")
    message: reactive[str] = reactive("")

    def render(self) -> Text:
        sep = ("  │  ", "dim")
        if self.running:
            jobs = Text(f"● {self.running} job{'s' if self.running != 1 else ''} running",
                        style=f"bold {self.app.current_theme.accent or 'yellow'}")
        else:
            jobs = Text("no jobs running", style="dim")
        if self.queued:
            jobs.append(f", {self.queued} queued", style="dim")
        parts = [Text(self.device), sep, jobs, sep, Text(self.azure)]
        out = Text.assemble(*parts, no_wrap=True, overflow="ellipsis")
        right = Text.assemble(("? ", "bold"), ("help", "dim"))
        gap = self.content_size.width - out.cell_len - right.cell_len
        if gap >= 2:
            out.append(" " * gap)
            out.append_text(right)
        return out
