"""What every pane offers the app: a main widget to focus and a hook for job updates."""

from __future__ import annotations

from textual.containers import Container


class Pane(Container):
    """A pane is focused through `focus_main`, and told about jobs through `jobs_updated`."""

    MAIN = ""  # CSS selector of the widget that gets focus when the pane is shown

    def focus_main(self) -> None:
        if self.MAIN:
            try:
                self.query_one(self.MAIN).focus()
            except Exception:  # noqa: BLE001 - not mounted yet: the next show focuses it
                pass

    def jobs_updated(self, update) -> None:  # noqa: B027 - optional hook
        """Called on the UI thread with every `FeedUpdate`."""
