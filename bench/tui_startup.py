"""First paint of `aitk-tui` over first paint of a bare Textual app, both in tmux, same run.

Each app is started in a fresh detached tmux session; the clock stops when its first screen is
on the terminal (tmux capture-pane shows the app's text). aitk-tui paints its frame (tabs, status
bar, keys) first and builds the first pane right after; the time until that pane shows its content
is printed too. Runs alternate between the two apps so
machine load hits both alike; the medians are compared. Goal: ratio <= 1.5.

    .venv/bin/python bench/tui_startup.py [--runs 7]

Needs tmux. Uses scratch AITK_* folders, so your own jobs and projects are not read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import Row, emit

BARE_APP = '''
from textual.app import App
from textual.widgets import Footer, Static

class Bare(App):
    def compose(self):
        yield Static("bare textual app READY")
        yield Footer()

Bare().run()
'''


def first_paint(command: list[str], marker: str, env: dict, socket: str, timeout: float = 30.0,
                then: str | None = None) -> float | tuple[float, float]:
    """Seconds from starting `command` in tmux until `marker` is on its screen (and, with `then`,
    also until that second text is)."""
    tmux = ["tmux", "-L", socket]
    subprocess.run([*tmux, "kill-server"], capture_output=True)
    t0 = time.perf_counter()
    subprocess.run([*tmux, "new-session", "-d", "-s", "b", "-x", "120", "-y", "40", *command], env=env, check=True)
    seen = None
    try:
        while time.perf_counter() - t0 < timeout:
            out = subprocess.run([*tmux, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True).stdout
            if seen is None and marker in out:
                seen = time.perf_counter() - t0
            if seen is not None and (then is None or then in out):
                return seen if then is None else (seen, time.perf_counter() - t0)
            time.sleep(0.005)
        raise TimeoutError(f"{command[0]}: no {then if seen else marker!r} on screen after {timeout:.0f} s")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    if not shutil.which("tmux"):
        print("tmux is not installed", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parent.parent
    tui = Path(sys.executable).parent / "aitk-tui"
    if not tui.exists():
        print(f"{tui} not found: install the project (make install)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="aitk-bench-") as tmp:
        bare = Path(tmp) / "bare.py"
        bare.write_text(BARE_APP)
        env = {**os.environ, "TERM": "xterm-256color", "AITK_DATA_DIR": f"{tmp}/data",
               "AITK_CONFIG_DIR": f"{tmp}/config", "AITK_PROJECTS_DIR": f"{tmp}/projects",
               "AITK_CACHE_DIR": f"{tmp}/cache"}
        socket = f"aitk-bench-{os.getpid()}"
        # One warm-up each: the first start of anything pays for cold file caches.
        first_paint([sys.executable, str(bare)], "READY", env, socket)
        first_paint([str(tui)], "Catalog F1", env, socket)
        bare_s, tui_s, ready_s = [], [], []
        for _ in range(args.runs):
            bare_s.append(first_paint([sys.executable, str(bare)], "READY", env, socket))
            paint, ready = first_paint([str(tui)], "Catalog F1", env, socket, then="No projects yet")
            tui_s.append(paint)
            ready_s.append(ready)
    b, t, r = statistics.median(bare_s), statistics.median(tui_s), statistics.median(ready_s)

    def runs(xs):
        return ", ".join(f"{x * 1000:.0f}" for x in xs)

    print(f"bare Textual app first paint:   median {b * 1000:.0f} ms  (runs: {runs(bare_s)})")
    print(f"aitk-tui first paint:           median {t * 1000:.0f} ms  (runs: {runs(tui_s)})")
    print(f"aitk-tui Projects pane filled:  median {r * 1000:.0f} ms  (runs: {runs(ready_s)})")
    print(f"ratio: {t / b:.2f}  (goal <= 1.5; {root.name}); first pane filled: {r / b:.2f}")
    emit(Row("tui_startup", "first paint / bare Textual app", t / b, "<= 1.5", unit="x"),
         Row("tui_startup", "first pane filled / bare Textual app", r / b, unit="x"))
    return 0 if t / b <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
