"""Pick a data file from a folder tree (only .jsonl/.json/.csv/.parquet and folders are shown)."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Static

DATA_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet"}


class DataFileTree(DirectoryTree):
    def filter_paths(self, paths):
        return [p for p in paths if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in DATA_SUFFIXES)]


class FilePickerScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    FilePickerScreen { align: center middle; }
    FilePickerScreen > Vertical { width: 90%; max-width: 100; height: 90%; border: thick $primary;
                                  background: $surface; }
    FilePickerScreen Input { margin: 0 0 1 0; }
    FilePickerScreen .hint { color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="picker.cancel")]

    def __init__(self, start: str | Path | None = None):
        super().__init__()
        start = Path(start).expanduser() if start else Path.cwd()
        self.start = start if start.is_dir() else (start.parent if start.parent.is_dir() else Path.home())

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Folder (enter to open it); then pick a file with enter. esc cancels.", classes="hint")
            yield Input(str(self.start), id="picker-root", compact=True)
            yield DataFileTree(self.start, id="picker-tree")

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "Choose a data file"
        self.query_one(DataFileTree).focus()

    @on(Input.Submitted, "#picker-root")
    def _root(self, event: Input.Submitted) -> None:
        path = Path(event.value).expanduser()
        if path.is_file():
            self.dismiss(str(path))
        elif path.is_dir():
            tree = self.query_one(DataFileTree)
            tree.path = path
            tree.focus()
        else:
            self.notify(f"{path} does not exist", severity="warning")

    @on(DirectoryTree.FileSelected)
    def _picked(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(str(event.path))
