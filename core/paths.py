"""Where aitk keeps things. Follows the XDG variables through platformdirs.

Each folder, first found wins: the environment (AITK_DATA_DIR / AITK_CONFIG_DIR / AITK_CACHE_DIR /
AITK_PROJECTS_DIR; tests and CI use them so nothing touches a real home directory), then
`data_dir` / `projects_dir` in the config file (`config.toml`, the file the app edits too), then
the XDG default. The app, the CLI and every job process read the same file, so they agree.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import platformdirs

APP = "aitk"
CONFIG_FILE = "config.toml"

_config_cache: dict[Path, tuple[int, dict]] = {}


def _root(env: str, default, config_key: str | None = None) -> Path:
    value = os.environ.get(env) or (configured(config_key) if config_key else None)
    path = Path(value).expanduser() if value else Path(default(APP, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def configured(key: str) -> str | None:
    """A top-level text setting of the config file, or None (unset, or the file unreadable: the
    app tells the user about a broken file; here it only means "use the default")."""
    path = config_dir() / CONFIG_FILE
    try:
        mtime = path.stat().st_mtime_ns
        cached = _config_cache.get(path)
        if cached is None or cached[0] != mtime:
            cached = (mtime, tomllib.loads(path.read_text(encoding="utf-8")))
            _config_cache[path] = cached
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    value = cached[1].get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


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
