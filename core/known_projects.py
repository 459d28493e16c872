"""The projects the user created or opened outside the projects folder, remembered in the data dir.

One small JSON list (`known-projects.json`) of absolute folders. Written atomically (a temporary
file renamed over it) under an advisory lock, so the app, the CLI and job processes adding at the
same time lose nothing; an unreadable file counts as empty and is rewritten on the next add.
Folders that are gone (a deleted project, `aitk demo`'s temporary one) are dropped at the next
add, so the file stays small; one on a drive that comes back is remembered again when opened, and a
project with jobs is listed from the job store anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from . import paths

FILE = "known-projects.json"


def _file() -> Path:
    return paths.data_dir() / FILE


def known() -> list[str]:
    """Remembered project folders, oldest first."""
    try:
        data = json.loads(_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [p for p in data if isinstance(p, str)] if isinstance(data, list) else []


@contextlib.contextmanager
def _locked():
    try:
        import fcntl
    except ImportError:  # Windows: the rename is still atomic, only a simultaneous add may be lost
        yield
        return
    with open(paths.data_dir() / f".{FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(roots: list[str]) -> None:
    target = _file()
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE}-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(roots, f, indent=1)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remember(root: str | Path) -> None:
    """Add a project folder (no-op if known). Never fails the caller: it is only a convenience."""
    root = str(Path(root).expanduser().resolve())
    if root in known():
        return
    try:
        with _locked():
            roots = known()
            if root not in roots:
                _write([r for r in roots if Path(r).is_dir()] + [root])
    except OSError:
        pass

