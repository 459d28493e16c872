"""Where aitk keeps things. Follows the XDG variables through platformdirs.

Each folder, first found wins: the environment (AITK_DATA_DIR / AITK_CONFIG_DIR / AITK_CACHE_DIR /
AITK_PROJECTS_DIR; tests and CI use them so nothing touches a real home directory), then
`data_dir` / `projects_dir` in the config file (`config.toml`, the file the app edits too), then
the XDG default. The app, the CLI and every job process read the same file, so they agree.
"""

from __future__ import annotations

import errno
import os
import shutil
import tomllib
from pathlib import Path

import platformdirs

APP = "aitk"
CONFIG_FILE = "config.toml"


def _root(env: str, default, config_key: str | None = None) -> Path:
    value = os.environ.get(env) or (configured(config_key) if config_key else None)
    path = Path(value).expanduser() if value else Path(default(APP, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _config() -> dict:
    """The parsed config file; {} when missing or unreadable (the app tells the user about a
    broken file; for the engine it only means "use the defaults")."""
    # Read each time (a small file, ~50 µs): a cache keyed on mtime can miss an edit made within
    # the file system's timestamp granularity.
    try:
        return tomllib.loads((config_dir() / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def configured(key: str) -> str | None:
    """A top-level text setting of the config file, or None."""
    value = _config().get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def configured_int(section: str, key: str) -> int | None:
    """A whole-number setting of a config table (`[jobs] local_slots = 2`), or None."""
    table = _config().get(section)
    value = table.get(key) if isinstance(table, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def data_dir() -> Path:
    return _root("AITK_DATA_DIR", platformdirs.user_data_dir, "data_dir")


def config_dir() -> Path:
    return _root("AITK_CONFIG_DIR", platformdirs.user_config_dir)


def cache_dir() -> Path:
    return _root("AITK_CACHE_DIR", platformdirs.user_cache_dir)


def models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(exist_ok=True)
    return path


def projects_dir() -> Path:
    """Default home of new projects."""
    value = os.environ.get("AITK_PROJECTS_DIR") or configured("projects_dir")
    path = Path(value).expanduser() if value else data_dir() / "projects"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_data() -> Path:
    """The package's own data files (the bundled dataset)."""
    return Path(__file__).resolve().parent / "data"


# -- a full disk, told apart from a broken file -----------------------------------------------
FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")
# SQLite's vaguer words for a write it could not make; with the disk this nearly full, that is why.
VAGUE_TEXTS = ("disk i/o error", "unable to open database file")
DISK_FULL_BELOW = 1 << 20


def free_bytes(path: str | Path) -> int | None:
    """Free bytes for an unprivileged writer on the file system holding `path` (or its nearest
    existing parent); None if it cannot be asked."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def is_disk_full(exc: BaseException | None, path: str | Path | None = None) -> bool:
    """Did this error come from a full disk? ENOSPC/EDQUOT anywhere in the exception chain, SQLite's
    SQLITE_FULL, or SQLite's vaguer errors while the disk holding `path` has under DISK_FULL_BELOW free."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc).lower()
        if any(t in text for t in FULL_TEXTS) or getattr(exc, "sqlite_errorcode", None) == 13:  # SQLITE_FULL
            return True
        if path is not None and any(t in text for t in VAGUE_TEXTS):
            free = free_bytes(path)
            if free is not None and free < DISK_FULL_BELOW:
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_message(path: str | Path) -> str:
    free = free_bytes(path)
    where = f"{path} ({free:,} bytes free)" if free is not None else str(path)
    return f"the disk is full: no room to write {where}"
