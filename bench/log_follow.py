"""Follow a job log that another process writes 100k lines into; print lines/s and peak memory.

    python bench/log_follow.py [--lines 100000]

The writer mixes plain lines, ANSI colour and tqdm-style `\\r` rewrites, flushing in small
bursts like a training job. The follower is `aitk.core.follow.follow`, the API `aitk jobs logs
-f` and the app use.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from aitk.core import follow

WRITER = r"""
import sys, time
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "a", buffering=1 << 16) as f:
    for i in range(n):
        if i % 10 == 0:
            f.write(f"\x1b[32mstep {i}\x1b[0m  10%|#   \r 50%|####  \r100%|######\n")
        else:
            f.write(f"[2026-11-27 10:00:00] INFO train step {i} loss {1/(i+1):.6f} lr 0.002\n")
        if i % 500 == 0:
            f.flush()
    f.write("DONE\n")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
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


if __name__ == "__main__":
    main()
