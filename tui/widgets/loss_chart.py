"""A live training/eval loss chart drawn in braille dots (2×4 per cell): sharp in any terminal.

Train loss is a line, eval loss a line of its own colour with its points marked. The y axis fits
the data, the x axis runs to the job's max steps so the chart fills in as training goes.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from aitk.tui.theming import theme_color

_BRAILLE = 0x2800
# Dot bit for (x in 0..1, y in 0..3) inside one cell.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3f}"


class BrailleCanvas:
    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.cells: list[list[dict[str, int]]] = [[{} for _ in range(width)] for _ in range(height)]

    def dot(self, x: int, y: int, series: str) -> None:
        """Set the dot at dot coordinates (x right, y down)."""
        if 0 <= x < self.width * 2 and 0 <= y < self.height * 4:
            cell = self.cells[y // 4][x // 2]
            cell[series] = cell.get(series, 0) | _DOTS[x % 2][y % 4]

    def line(self, x0: int, y0: int, x1: int, y1: int, series: str) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, series)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy


class LossChart(Widget, can_focus=False):
    DEFAULT_CSS = """
    LossChart { height: 8; min-height: 5; border: round $panel-lighten-2; border-title-color: $text-muted;
                padding: 0 1 0 0; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.train: list[tuple[int, float]] = []
        self.eval: list[tuple[int, float]] = []
        self.max_steps = 0
        self.empty_text = "waiting for the first loss value…"
        self.border_title = "Loss"

    def set_data(self, train: list[tuple[int, float]], eval_: list[tuple[int, float]], max_steps: int) -> None:
        self.train, self.eval, self.max_steps = list(train), list(eval_), max_steps
        self._update_title()
        self.refresh()

    def add_records(self, records: list[dict]) -> None:
        """Append metric records (dicts with step, max_steps, loss, eval_loss) as they arrive."""
        changed = False
        for rec in records:
            step = rec.get("step")
            if not isinstance(step, int):
                continue
            if isinstance(rec.get("max_steps"), int) and rec["max_steps"] > 0:
                self.max_steps = rec["max_steps"]
            if isinstance(rec.get("loss"), (int, float)):
                self.train.append((step, float(rec["loss"])))
                changed = True
            if isinstance(rec.get("eval_loss"), (int, float)):
                self.eval.append((step, float(rec["eval_loss"])))
                changed = True
        if changed:
            self._update_title()
            self.refresh()

    def clear(self) -> None:
        self.set_data([], [], 0)

    def _update_title(self) -> None:
        train_c = theme_color(self.app, "chart-train", "cyan") if self.is_attached else "cyan"
        eval_c = theme_color(self.app, "chart-eval", "orange1") if self.is_attached else "orange1"
        parts = ["Loss"]
        if self.train:
            parts.append(f"[{train_c}]━ train {_fmt(self.train[-1][1])}[/]")
        if self.eval:
            parts.append(f"[{eval_c}]━ eval {_fmt(self.eval[-1][1])}[/]")
        self.border_title = "  ".join(parts)

    def on_mount(self) -> None:
        self._update_title()

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        points = self.train + self.eval
        if not points or width < 12 or height < 2:
            return Text(self.empty_text if width >= 12 else "", style="dim")
        train_c = theme_color(self.app, "chart-train", "cyan")
        eval_c = theme_color(self.app, "chart-eval", "orange1")
        values = [v for _, v in points]
        lo, hi = min(values), max(values)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        labels = [_fmt(hi), _fmt((hi + lo) / 2), _fmt(lo)]
        label_w = max(len(s) for s in labels) + 1
        plot_w, plot_h = width - label_w - 1, height - 1  # one row for the step axis
        if plot_w < 4 or plot_h < 1:
            return Text("")
        x_max = max(self.max_steps, max(s for s, _ in points), 1)
        canvas = BrailleCanvas(plot_w, plot_h)

        def to_dot(step: int, value: float) -> tuple[int, int]:
            x = round(step / x_max * (plot_w * 2 - 1))
            y = round((hi - value) / (hi - lo) * (plot_h * 4 - 1))
            return x, y

        for series, data in (("train", self.train), ("eval", self.eval)):
            dots = [to_dot(s, v) for s, v in data]
            if len(dots) == 1:
                canvas.dot(*dots[0], series)
            for a, b in zip(dots, dots[1:]):
                canvas.line(*a, *b, series)
        out = Text(no_wrap=True, overflow="crop")
        label_rows = {0: labels[0], plot_h // 2: labels[1], plot_h - 1: labels[2]} if plot_h >= 3 else \
            {0: labels[0], plot_h - 1: labels[2]}
        for row in range(plot_h):
            out.append(label_rows.get(row, "").rjust(label_w - 1) + " ", style="dim")
            out.append("┤" if row in label_rows else "│", style="dim")
            for cell in canvas.cells[row]:
                if not cell:
                    out.append(" ")
                    continue
                mask = cell.get("train", 0) | cell.get("eval", 0)
                style = eval_c if cell.get("eval") else train_c
                out.append(chr(_BRAILLE + mask), style=style)
            out.append("\n")
        axis = " " * label_w + "└"
        right = f"{x_max} steps"
        mid = str(x_max // 2)
        line = list("─" * plot_w)
        out.append(axis, style="dim")
        ticks = "0" + " " * max(0, plot_w // 2 - 1 - len(mid) // 2) + mid
        ticks = ticks + " " * max(1, plot_w - len(ticks) - len(right)) + right
        out.append(ticks[:plot_w] if len(ticks) <= plot_w else "".join(line), style="dim")
        return out
