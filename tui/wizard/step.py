"""What each wizard step implements."""

from __future__ import annotations

from textual.containers import Vertical


class Step(Vertical):
    TITLE = ""
    FOCUS = ""  # selector of the widget focused when the step is shown

    DEFAULT_CSS = """
    Step { height: 1fr; padding: 0 1; }
    Step .hint { color: $text-muted; }
    Step .field-label { margin-top: 1; text-style: bold; }
    Step .error { color: $error; }
    Step .ok { color: $success; }
    Step Input.-textual-compact { background: $boost; }
    Step Input.-textual-compact:focus { background: $primary 25%; }
    """

    def __init__(self, state, **kwargs):
        super().__init__(**kwargs)
        self.state = state

    def enter(self) -> None:
        """The step is shown: bring it up to date with the state."""

    def commit(self) -> str | None:
        """Store the step's values in the state; an error text blocks moving on."""
        return None

    def focus_first(self) -> None:
        if self.FOCUS:
            try:
                self.query_one(self.FOCUS).focus()
            except Exception:  # noqa: BLE001 - hidden widget: let the screen decide
                self.screen.focus_next()
