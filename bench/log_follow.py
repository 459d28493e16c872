"""Follow a job log that another process writes 100k lines into: first with the engine's follow
API, then through the app's Jobs pane while keys are being pressed.

    python bench/log_follow.py [--lines 100000] [--skip-app]

The writer mixes plain lines, ANSI colour and tqdm-style `\\r` rewrites, flushing in small
bursts like a training job. Part one follows with `aitk.core.follow.follow`, the API `aitk jobs
logs -f` uses. Part two runs the real app (headless, 120x40) on an isolated data dir with that job
selected in the Jobs pane; every 50 ms it presses `?` (help opens) or `esc` (help closes) and
times each key from the moment it is queued until its screen change has been composited. Goals:
the last line shown in the pane ≤ 2 s after the writer starts, every key answered ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from aitk.core import follow
from results import Row, emit

WRITER = r"""
import sys, time
path, n = sys.argv[1], int(sys.argv[2])
spread = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0  # seconds to spread the lines over
t0 = time.perf_counter()
with open(path, "a", buffering=1 << 16) as f:
    for i in range(n):
        if i % 10 == 0:
            f.write(f"\x1b[32mstep {i}\x1b[0m  10%|#   \r 50%|####  \r100%|######\n")
        else:
            f.write(f"[2026-11-27 10:00:00] INFO train step {i} loss {1/(i+1):.6f} lr 0.002\n")
        if i % 500 == 0:
            f.flush()
            if spread:
                time.sleep(max(0.0, t0 + spread * i / n - time.perf_counter()))
    f.write("DONE\n")
"""


async def through_jobs_pane(lines: int, spread: float) -> None:
    from textual import events
    from textual.widgets import Log

    from aitk.core.jobs import JobStore
    from aitk.tui import testing
    from aitk.tui.help_screen import HelpScreen

    world = testing.World(Path(tempfile.mkdtemp(prefix="aitk-bench-app-")), populated=False)
    project = testing.fabricate_project("bench")
    store = JobStore()
    job = testing.fabricate_job(store, "finetune", "running", project, created=testing.FIXED_NOW - 5,
                                started=testing.FIXED_NOW - 4, pid=world.sleeper.pid)
    log_path = store.log_path(job.id)
    log_path.write_text("")
    app = testing.fixture_app()
    # (key, its visible effect): open and close the help screen, move focus to the log and back.
    probes = [("question_mark", lambda: isinstance(app.screen, HelpScreen)),
              ("escape", lambda: not isinstance(app.screen, HelpScreen)),
              ("tab", lambda: app.focused is log),
              ("shift+tab", lambda: app.focused is not log)]
    handled: dict[str, list[float]] = {k: [] for k, _ in probes}
    painted: dict[str, list[float]] = {k: [] for k, _ in probes}

    async def press(key: str, effect) -> None:
        """Queue the key as the terminal driver would; time its effect, then its next paint."""
        refreshed = asyncio.Event()
        sent = time.perf_counter()
        app.post_message(events.Key(key, "?" if key == "question_mark" else None))
        while not effect():
            await asyncio.sleep(0.0005)
        handled[key].append(time.perf_counter() - sent)
        app.screen.call_after_refresh(refreshed.set)
        await refreshed.wait()
        painted[key].append(time.perf_counter() - sent)

    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f3")
            pane = app.query_one("JobsPane")
            await testing.until(pilot, lambda: pane.selected == job.id, what="the job selected")
            log = app.query_one("#job-log", Log)
            # Once each before the log starts: the first help screen is built then (a cold start).
            for key, effect in probes:
                await press(key, effect)
            cold = painted["question_mark"][0]
            # The same keys for a second with no log arriving: this machine's own floor.
            t_idle = time.perf_counter()
            while time.perf_counter() - t_idle < 1.0:
                for key, effect in probes:
                    await press(key, effect)
                    await asyncio.sleep(0.02)
            idle = sorted(x for v in painted.values() for x in v[1:])
            for v in (*handled.values(), *painted.values()):
                v.clear()
            t0 = time.perf_counter()
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log_path), str(lines), str(spread)])
            shown = None

            async def watch_for_last_line() -> None:
                nonlocal shown
                while not (log.lines and log.lines[-1] == "DONE"):
                    await asyncio.sleep(0.002)
                    if time.perf_counter() - t0 > 60:
                        raise SystemExit("the pane did not show the last line within 60 s")
                shown = time.perf_counter() - t0

            watcher = asyncio.create_task(watch_for_last_line())
            while not watcher.done():
                for key, effect in probes:
                    await press(key, effect)
                    await asyncio.sleep(0.02)
            await watcher
            writer.wait()
            kept = log.line_count
    finally:
        world.close()
    every = sorted(x for v in painted.values() for x in v)
    worst_handled = max(x for v in handled.values() for x in v)
    how = f"written over {spread:g} s" if spread else "written in one burst"
    print(f"jobs pane, {how}: {lines:,} lines shown in {shown:.2f} s (goal <= 2 s: "
          f"{'met' if shown <= 2 else 'NOT met'}); the log keeps the last {kept:,} lines")
    print(f"{len(every)} keys pressed meanwhile ({', '.join(k for k, _ in probes)}), from queued to painted: "
          f"p50 {every[len(every) // 2] * 1000:.0f} ms, max {every[-1] * 1000:.0f} ms (goal <= 100 ms: "
          f"{'met' if every[-1] <= 0.1 else 'NOT met'}); to handled: max {worst_handled * 1000:.0f} ms")
    for key, _ in probes:
        print(f"  {key:<13} painted max {max(painted[key]) * 1000:5.0f} ms   handled max "
              f"{max(handled[key]) * 1000:5.0f} ms")
    print(f"the same keys with no log arriving: p50 {idle[len(idle) // 2] * 1000:.0f} ms, "
          f"max {idle[-1] * 1000:.0f} ms (this machine's floor)")
    print(f"the first help screen (built once, before the log started) took {cold * 1000:.0f} ms")
    print(f"ratios: time/goal {shown / 2:.2f}, worst key/goal {every[-1] / 0.1:.2f}")
    emit(Row("log_follow", f"jobs pane: last of {lines:,} lines shown ({how})", shown, "<= 2", unit="s"),
         Row("log_follow", f"jobs pane: worst key under the flood ({how})", every[-1] * 1000, "<= 100", unit="ms"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--spread", type=float, default=1.5,
                    help="seconds the second app run spreads the lines over (default 1.5)")
    ap.add_argument("--skip-app", action="store_true", help="only the follow API, not the Jobs pane")
    args = ap.parse_args()
    log = Path(tempfile.mkdtemp(prefix="aitk-bench-")) / "log.txt"
    log.touch()
    tracemalloc.start()
    t0 = time.perf_counter()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(args.lines)])
    seen = 0
    last = ""
    for lines in follow.follow(log, 0, done=lambda: writer.poll() is not None, poll=0.01):
        seen += len(lines)
        last = lines[-1]
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()  # it slows every allocation ~2x: not during the timings below
    assert last == "DONE" and seen == args.lines + 1, (seen, last)
    print(f"followed {seen} lines in {elapsed:.2f} s: {seen / elapsed:,.0f} lines/s "
          f"(writer-bound: the follower keeps up as the writer writes)")
    print(f"follower peak Python memory {peak / 1e6:.1f} MB; process max RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    # The follow API alone on the finished file: how fast a late reader catches up.
    t0 = time.perf_counter()
    offset, n = 0, 0
    while True:
        chunk = follow.read_from(log, offset)
        if not chunk.lines:
            break
        offset, n = chunk.offset, n + len(chunk.lines)
    catch_up = time.perf_counter() - t0
    print(f"catch-up read of the whole log: {n} lines in {catch_up:.3f} s = {n / catch_up:,.0f} lines/s")
    emit(Row("log_follow", "follow API catch-up read", n / catch_up, unit="lines/s"))
    if not args.skip_app:
        # A burst (the UI catches up at once), then a sustained flood that keys are pressed through.
        asyncio.run(through_jobs_pane(args.lines, 0.0))
        asyncio.run(through_jobs_pane(args.lines, args.spread))


if __name__ == "__main__":
    main()
