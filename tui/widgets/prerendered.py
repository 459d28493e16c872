"""A Rich renderable laid out once per width and theme, then painted from the kept lines.

`Static` lays its renderable out again on every refresh; the help screen's tables take ~40 ms
to lay out here, which was most of what `?` cost each time it opened (the screen itself is kept).
"""

from __future__ import annotations

from rich.console import RenderableType
from textual.strip import Strip
from textual.widget import Widget


class Prerendered(Widget):
    DEFAULT_CSS = "Prerendered { height: auto; }"

    def __init__(self, renderable: RenderableType, **kwargs):
        super().__init__(**kwargs)
        self._renderable = renderable
        self._key: tuple | None = None
        self._strips: list[Strip] = []

    @property
    def content(self) -> RenderableType:
        """What it shows (as `Static.content`)."""
        return self._renderable

    def _lines(self, width: int) -> list[Strip]:
        style = self.rich_style
        key = (width, style, self.app.theme)
        if key != self._key:
            console = self.app.console
            lines = console.render_lines(self._renderable, console.options.update_width(width), style=style)
            self._strips = [Strip(line, width) for line in lines]
            self._key = key
        return self._strips

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._lines(width))

    def render_line(self, y: int) -> Strip:
        width = self.content_region.width
        lines = self._lines(width)
        return lines[y] if y < len(lines) else Strip.blank(width, self.rich_style)
