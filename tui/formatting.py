"""Short human texts for durations, ages, sizes and job states, shared by every pane."""

from __future__ import annotations

STATUS_STYLE = {
    "queued": ("◌", "dim"),
    "starting": ("◔", "yellow"),
    "running": ("●", "bold cyan"),
    "succeeded": ("✔", "green"),
    "failed": ("✘", "bold red"),
    "cancelled": ("■", "magenta"),
    "interrupted": ("⚠", "yellow"),
    "skipped": ("↷", "dim"),
}


def duration(seconds: float | None) -> str:
    """`45s`, `3m 05s`, `2h 10m`, `3d 4h`."""
    if seconds is None or seconds != seconds:  # None or NaN
        return "—"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def age(seconds: float) -> str:
    """Coarse age for tables: `now`, `42s`, `5m`, `3h`, `2d`."""
    s = max(0, int(seconds))
    if s < 5:
        return "now"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def size(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def status_text(status: str):
    from rich.text import Text

    icon, style = STATUS_STYLE.get(status, ("?", ""))
    return Text(f"{icon} {status}", style=style)


def short_path(path: str | None, width: int = 40) -> str:
    if not path:
        return "—"
    from pathlib import Path

    home = str(Path.home())
    if path.startswith(home + "/"):
        path = "~" + path[len(home):]
    return path if len(path) <= width else "…" + path[-(width - 1):]
