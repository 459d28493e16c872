"""Token-length histogram: one bar per length bin, bins past the max length in the error colour.

Rows: `  64-95 ████████▌ 120`; a marker line shows where `max length` cuts, and a summary line
says how many rows would be truncated.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(value: float, width: int) -> str:
    """A bar `value` (0..1) of `width` cells, with eighth-cell resolution."""
    eighths = round(max(0.0, min(1.0, value)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


class TokenHistogram(Widget):
    DEFAULT_CSS = """
    TokenHistogram { height: auto; min-height: 3; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bins: list[tuple[int, int, int]] = []
        self.max_length = 0
        self.summary = ""
        self.note = "no data yet"

    def show(self, stats, max_length: int, bins: int = 8, note: str = "") -> None:
        """`stats`: a datasets.TokenStats (or None with `note` saying why)."""
        self.max_length = max_length
        if stats is None or not stats.count:
            self.bins, self.summary, self.note = [], "", note or "no rows to measure"
        else:
            self.bins = stats.histogram(bins)
            over = stats.over_limit
            # Short enough for 80 columns; what the max length cuts is also said above the chart.
            self.summary = (f"{stats.count} rows · tokens min {stats.min} · median {stats.p50} · p95 {stats.p95} · "
                            f"max {stats.max} · "
                            + (f"{over} cut at {max_length}" if over else f"none cut at {max_length}"))
            self.note = note
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(1, len(self.bins) + (1 if self.summary else 0) + (1 if self.note else 0))

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        if self.note:
            out.append(self.note + "\n", style="dim italic")
        if not self.bins:
            return out
        labels = [f"{lo}-{hi - 1}" if hi - lo > 1 else f"{lo}" for lo, hi, _ in self.bins]
        label_w = max(len(s) for s in labels)
        top = max(c for _, _, c in self.bins) or 1
        count_w = len(str(top))
        width = max(4, self.content_size.width - label_w - count_w - 4)
        for (lo, hi, count), label in zip(self.bins, labels):
            cut = lo > self.max_length
            partly = lo <= self.max_length < hi - 1
            style = "bold red" if cut else ("yellow" if partly else "green")
            out.append(label.rjust(label_w) + " ", style="dim")
            b = bar(count / top, width)
            out.append(b, style=style)
            out.append(" " * (width - len(b) + 1) + str(count).rjust(count_w) + "\n")
        out.append(self.summary, style="dim" if "none cut" in self.summary else "bold red")
        return out
