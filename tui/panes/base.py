"""What every pane offers the app: a main widget to focus and a hook for job updates."""

from __future__ import annotations

from textual.containers import Container


class Pane(Container):
    """A pane is focused through `focus_main`, and told about jobs through `jobs_updated`."""

    MAIN = ""  # CSS selector of the widget that gets focus when the pane is shown

    def focus_main(self, tries: int = 60) -> None:
        """Focus the main widget; a pane just switched to may need a frame or two to be shown."""
        if not self.MAIN or not self.is_current:
            return  # switched away meanwhile: never pull focus (and the tabs) back here
        try:
            widget = self.query_one(self.MAIN)
        except Exception:  # noqa: BLE001 - not composed yet: the next show focuses it
            return
        if widget.focusable:
            # Now, not `widget.focus()`: that is queued, and would land after a quick switch away.
            self.screen.set_focus(widget)
        elif tries > 0:
            self.set_timer(0.03, lambda: self.focus_main(tries - 1))

    ready = False  # composed and mounted: safe to update

    @property
    def is_current(self) -> bool:
        try:
            return self.app.current_pane == (self.id or "").removesuffix("-pane")
        except Exception:  # noqa: BLE001 - app closing
            return False

    def on_mount(self) -> None:
        self.ready = True
        # Panes are built lazily: catch up with the jobs the app already knows.
        if getattr(self.app, "last_update", None) is not None:
            self.call_after_refresh(self._catch_up)

    def _catch_up(self) -> None:
        if self.is_attached and not self.app._exit:  # not while the app is closing
            self.jobs_updated(self.app.last_update)

    def jobs_updated(self, update) -> None:  # noqa: B027 - optional hook
        """Called on the UI thread with every `FeedUpdate`."""
