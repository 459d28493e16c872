"""Short human texts for durations, ages and job states, shared by every pane."""

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


def clock_time(ts: float, now: float) -> str:
    """When, as a table cell that never changes by itself: `14:05` today, `Dec 31` before.
    (An age such as `42s` changes every second, so an idle table would be redrawn all the time.)"""
    import time

    t, today = time.localtime(ts), time.localtime(now)
    if (t.tm_year, t.tm_yday) == (today.tm_year, today.tm_yday):
        return time.strftime("%H:%M", t)
    return time.strftime("%b %d", t)


def status_text(status: str):
    from rich.text import Text

    icon, style = STATUS_STYLE.get(status, ("?", ""))
    return Text(f"{icon} {status}", style=style)


PARITY_STYLE = {"passed": ("✔", "green"), "failed": ("✘", "bold red"), "stale": ("~", "yellow"),
                "not checked": ("?", "dim")}


def parity_glyph(mark):
    """One character for a table cell: ✔ passed, ✘ failed, ~ stale, ? not checked."""
    from rich.text import Text

    icon, style = PARITY_STYLE.get(mark.state, ("?", "dim"))
    return Text(icon, style=style)


def parity_text(mark, now: float | None = None):
    """The parity mark in words; a failed one is a warning with its first divergent example."""
    from rich.text import Text

    icon, style = PARITY_STYLE.get(mark.state, ("?", "dim"))
    out = Text(f"{icon} {mark.summary}", style=style)
    checked = (mark.record or {}).get("checked")
    if now is not None and checked and mark.state in ("passed", "failed"):
        out.append(f"  checked {age(now - checked)} ago", style="dim")
    div = mark.divergence
    if mark.state == "failed" and div:
        out.append(f"\n⚠ {div['form']}: {div['prompt']!r}\n  expected {div['expected']!r}, got {div['got']!r}",
                   style="yellow")
    return out
