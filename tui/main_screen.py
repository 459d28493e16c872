"""The app's first screen: Textual's `Screen`, minus a whole-screen repaint on every focus move.

`Screen.focused` is a reactive that repaints the screen when it changes, so each tab/shift+tab
redrew every widget (a full update) although only the two widgets whose focus style changed need
it, and Textual refreshes those itself when their styles update. Under a 100k-line log flood that
full redraw was most of a key's time (`bench/log_follow.py`).
"""

from __future__ import annotations

from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget


class MainScreen(Screen):
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)
