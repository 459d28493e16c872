"""Rows of `make bench`'s table: each bench states its figures, their goals and shapes here.

A bench calls `emit(Row(...))` for every figure it measures, next to its own printout. When it
runs under bench/all.py (which sets AITK_BENCH_ROWS to a file), the rows are appended to that
file as JSON lines and the runner builds one table and one JSON from them; run alone, a bench
prints as before and `emit` does nothing more.
"""

from __future__ import annotations

import json
import operator
import os
from dataclasses import asdict, dataclass

ROWS_ENV = "AITK_BENCH_ROWS"
TINY = "tiny"
_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass
class Row:
    """One measured figure. `goal` is ">= X", "<= X" or "X..Y" (within; empty: shown, not
    judged); `value` None when the figure could not be measured (`note` says why)."""

    bench: str
    figure: str
    value: float | None
    goal: str = ""
    shape: str = TINY
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or not self.goal:
            return None
        if ".." in self.goal:
            low, high = self.goal.split("..")
            return float(low) <= self.value <= float(high)
        op, threshold = self.goal.split()
        return _OPS[op](self.value, float(threshold))

    def as_dict(self) -> dict:
        return {**asdict(self), "met": self.met}


def emit(*rows: Row) -> None:
    path = os.environ.get(ROWS_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(asdict(row)) + "\n")


def read(path) -> list[Row]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(Row(**json.loads(line)))
    return rows


def _value(row: Row) -> str:
    if row.value is None:
        return "-"
    v = row.value
    text = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return f"{text} {row.unit}".strip()


def table(rows: list[Row]) -> str:
    """The rows as one plain-text table: bench, shape, figure, value, goal, met."""
    head = ("bench", "shape", "figure", "value", "goal", "met")
    lines = [(r.bench, r.shape, r.figure + (f" ({r.note})" if r.note else ""), _value(r), r.goal or "-",
              {True: "met", False: "NOT met", None: "-"}[r.met]) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    judged = [r.met for r in rows if r.met is not None]
    out.append(f"{sum(judged)} of {len(judged)} goals met")
    return "\n".join(out)
