"""The bottom line of key hints: what Textual's `Footer` shows, drawn as one line of text.

`Footer` rebuilds one widget per key whenever the bindings change, which is every focus move
and screen switch; restyling those widgets was the largest cost of a key press here (p50 from
key to paint fell from ~86 to ~35 ms without it, `bench/log_follow.py`). This widget repaints
one line instead. Keys stay clickable.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.widget import Widget


class KeyBar(Widget):
    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; width: 1fr; background: $footer-background; color: $footer-foreground; }
    KeyBar > .key-bar--key { color: $footer-key-foreground; background: $footer-key-background;
                             text-style: bold; }
    KeyBar > .key-bar--description { color: $footer-description-foreground; }
    KeyBar > .key-bar--disabled { color: $text-disabled; }
    """
    COMPONENT_CLASSES = {"key-bar--key", "key-bar--description", "key-bar--disabled"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._spans: list[tuple[int, int, str]] = []  # (start, end, key) of each hint, for clicks

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen) -> None:
        if self.is_attached and screen is self.screen:
            self.refresh()

    def _hints(self) -> tuple[list[tuple[str, str, str, bool]], tuple[str, str, str] | None]:
        """(key, shown key, description, enabled) per action, and the palette's hint apart."""
        active = self.screen.active_bindings
        hints, seen = [], set()
        for _node, binding, enabled, _tooltip in active.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            hints.append((binding.key, self.app.get_key_display(binding), binding.description, enabled))
        palette = None
        if self.app.ENABLE_COMMAND_PALETTE and self.app.COMMAND_PALETTE_BINDING in active:
            binding = active[self.app.COMMAND_PALETTE_BINDING][1]
            palette = (binding.key, self.app.get_key_display(binding), binding.description or "palette")
        return hints, palette

    def render(self) -> Text:
        key_style = self.get_component_rich_style("key-bar--key")
        text_style = self.get_component_rich_style("key-bar--description")
        off_style = self.get_component_rich_style("key-bar--disabled")
        hints, palette = self._hints()
        text, spans = Text(no_wrap=True, overflow="crop"), []
        for key, shown, description, enabled in hints:
            start = text.cell_len
            text.append(f" {shown} ", key_style if enabled else off_style)
            text.append(f"{description} ", text_style if enabled else off_style)
            spans.append((start, text.cell_len, key))
        if palette is not None:
            key, shown, description = palette
            tail = Text.assemble((f" {shown} ", key_style), (f"{description} ", text_style))
            gap = self.size.width - text.cell_len - tail.cell_len
            if gap >= 1:
                text.append(" " * gap)
                spans.append((text.cell_len, text.cell_len + tail.cell_len, key))
                text.append_text(tail)
        self._spans = spans
        return text

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self._spans:
            if start <= event.x < end:
                event.stop()
                self.app.simulate_key(key)
                return
