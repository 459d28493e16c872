"""The model catalog and its fit estimates, loaded once per process (reloaded when a file changes).

The catalog is validated TOML (pydantic) and every fit estimate builds default settings: cheap
once, wasteful for each pane and wizard step that shows it. Call from worker threads.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_state: dict = {}


def _key():
    from aitk.core import catalog

    return tuple(p.stat().st_mtime_ns if p.is_file() else 0 for p in (catalog.bundled_path(), catalog.user_path()))


def load():
    """The merged catalog (bundled + user), as `aitk.core.catalog.load()` returns it."""
    from aitk.core import catalog

    with _lock:
        key = _key()
        if _state.get("key") != key:
            _state.clear()
            _state.update(key=key, catalog=catalog.load(), fits={})
        return _state["catalog"]


def fits(entry, device, method: str):
    """`estimates.fits(entry, device, method)`, remembered; None when the estimate fails."""
    from aitk.core import estimates

    load()
    memo = _state["fits"]
    key = (entry.id, device, method)
    if key not in memo:
        try:
            memo[key] = estimates.fits(entry, device, method)
        except Exception:  # noqa: BLE001 - an estimate is a nicety, never a blocker
            memo[key] = None
    return memo[key]
