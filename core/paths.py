"""Where aitk keeps things. Follows the XDG variables through platformdirs.

AITK_DATA_DIR / AITK_CONFIG_DIR / AITK_CACHE_DIR override each root (tests and CI use them so
nothing touches a real home directory).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "aitk"


def _root(env: str, default) -> Path:
    value = os.environ.get(env)
    path = Path(value).expanduser() if value else Path(default(APP, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    return _root("AITK_DATA_DIR", platformdirs.user_data_dir)


def config_dir() -> Path:
    return _root("AITK_CONFIG_DIR", platformdirs.user_config_dir)


def cache_dir() -> Path:
    return _root("AITK_CACHE_DIR", platformdirs.user_cache_dir)


def models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(exist_ok=True)
    return path


def projects_dir() -> Path:
    """Default home of new projects (AITK_PROJECTS_DIR overrides)."""
    value = os.environ.get("AITK_PROJECTS_DIR")
    path = Path(value).expanduser() if value else data_dir() / "projects"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_data() -> Path:
    """The package's own data files (the bundled dataset)."""
    return Path(__file__).resolve().parent / "data"
