"""Reading a growing job log from an offset: cheap, clean lines, and waiting for more.

Only the new bytes are read each time (seek to the offset). Lines come back without ANSI codes,
and a `\r`-rewritten progress line becomes its last state. A partial last line waits for its
newline, so a reader never shows half a line. Known library noise that says nothing about the
job (see NOISE) is left out; the file on disk keeps every line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


# Lines libraries print on every CPU run that a user can do nothing about: torch's DataLoader
# warns at each evaluation that pin_memory has no accelerator; Olive asks for `tabulate` (an
# optional extra) under an empty "Run history" header. A Python warning's next line, the
# indented source line it points at, goes with it.
NOISE = re.compile(r"UserWarning: 'pin_memory' argument is set as true but no accelerator"
                   r"|Please install tabulate for better run history output"
                   r"|\] Run history for [^ ]+:$")
NOISE_IN_BLOCK = re.compile(NOISE.pattern, re.MULTILINE)  # the same, over many lines at once


def quiet(lines: list[str]) -> list[str]:
    """`lines` without the known noise (NOISE) and the source line under a dropped warning."""
    out, dropped = [], False
    for line in lines:
        if NOISE.search(line) or (dropped and line[:1].isspace() and "Warning" not in line):
            dropped = True
            continue
        dropped = False
        out.append(line)
    return out


def clean(line: str) -> str:
    """What a terminal would finally show for this line."""
    if "\x1b" in line:  # the substring test is C-fast; most lines have no escape to strip
        line = ANSI.sub("", line)
    if "\r" in line:
        parts = [p for p in line.split("\r") if p]
        line = parts[-1] if parts else ""
    return line.rstrip()


@dataclass
class Chunk:
    lines: list[str]
    offset: int  # pass back to read the next chunk


def read_from(path: Path, offset: int = 0, max_bytes: int = 4 << 20, keep_last: int | None = None) -> Chunk:
    """The complete lines after `offset` (up to `max_bytes`). `keep_last`: only the last N of
    them are cleaned and returned (a reader with a capped buffer would drop the rest anyway)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(max_bytes)
    except FileNotFoundError:
        return Chunk([], offset)
    end = data.rfind(b"\n")
    if end < 0:
        return Chunk([], offset)
    text = data[: end + 1].decode("utf-8", errors="replace")
    lines = text.split("\n")[:-1]
    if keep_last is not None:
        lines = lines[-keep_last:] if keep_last > 0 else []
    cleaned = [clean(line) for line in lines]
    # One search over the chunk first: a flood of ordinary lines skips the per-line noise check.
    noisy = NOISE_IN_BLOCK.search("\n".join(cleaned))
    return Chunk(quiet(cleaned) if noisy else cleaned, offset + end + 1)


def follow(path: Path, offset: int = 0, *, done: Callable[[], bool], poll: float = 0.2) -> Iterator[list[str]]:
    """Yield batches of new lines until `done()` is true and the file has nothing more."""
    while True:
        chunk = read_from(path, offset)
        offset = chunk.offset
        if chunk.lines:
            yield chunk.lines
            continue
        if done():
            chunk = read_from(path, offset)
            if chunk.lines:
                yield chunk.lines
            return
        time.sleep(poll)
