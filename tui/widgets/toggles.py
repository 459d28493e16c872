"""Checkbox and radio button that show their state by shape and word, not by colour alone.

Textual draws `▐X▌` on and off alike and only recolours it: on a monochrome terminal, or for a
colour-blind user, the two look the same. Here the mark is drawn only when on, and a checkbox
whose label is just a state word ("on"/"off") keeps that word true.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox as _Checkbox
from textual.widgets import RadioButton as _RadioButton

STATE_WORDS = ("off", "on")


class _Marked:
    ON_MARK = "X"

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = self.ON_MARK if self.value else " "
        return super()._button


class Checkbox(_Marked, _Checkbox):
    """`▐✔▌ on` / `▐ ▌ off`; any other label is kept as given."""

    ON_MARK = "✔"

    def __init__(self, label="", value: bool = False, *args, **kwargs):
        self._says_state = label in STATE_WORDS
        super().__init__(STATE_WORDS[bool(value)] if self._says_state else label, value, *args, **kwargs)

    def watch_value(self) -> None:
        if self._says_state:
            self.label = STATE_WORDS[bool(self.value)]
        super().watch_value()


class RadioButton(_Marked, _RadioButton):
    """`▐●▌ chosen` / `▐ ▌ other`."""

    ON_MARK = "●"
