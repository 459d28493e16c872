"""The Jobs pane's log: Textual's `Log`, measuring its lines' width without a thread per write.

`Log.write_lines` starts a thread worker for every call to find the widest new line (a regex and
`cell_len` per line). Under a flood the pane writes ~20 batches of thousands of lines a second, and
those workers held the GIL against the UI thread, which is what kept keys waiting. Here the width
is found in the call, on a fast path for what logs are made of: an ASCII line without tabs is as
wide as it is long (`Log` shows each control character as one replacement cell).
"""

from __future__ import annotations

from rich.cells import cell_len
from textual.widgets import Log


class JobLog(Log):
    def _update_size(self, updates: int, lines: list[str]) -> None:
        if not lines:
            return
        process = self._process_line
        width = max(len(line) if line.isascii() and "\t" not in line else cell_len(process(line))
                    for line in lines)
        self._update_maximum_width(updates, width)
