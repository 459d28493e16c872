"""Which adapter an export was built from, and whether it still matches the project's adapter.

The export step records, in the version stamp it publishes the export with (core/publish.py), the
content hash of the adapter it read. An export is current while the project's adapter has that hash: a new
fine-tune (or a retry) that publishes different weights makes it stale, one that reproduces the
same weights does not, and copying or touching the project changes nothing. The stamp also keeps
the adapter files' sizes and mtimes, so the common check is a few `stat` calls; the files are hashed
only when those differ (and that hash is remembered per process for the same sizes and mtimes).

Exports made before stamps existed are judged by mtime: stale when the adapter was written after
the export's manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .publish import stamp_of

MANIFEST = "aitk-export.json"  # written by core/export.py; only its mtime and "adapter" are read here

CURRENT, STALE, BASE = "current", "stale", "base"

_hashes: dict[tuple, str] = {}


@dataclass(frozen=True)
class ExportState:
    state: str  # CURRENT | STALE (not built from the adapter the project has now) | BASE (no adapter)
    reason: str = ""

    @property
    def current(self) -> bool:
        return self.state == CURRENT


def _fingerprint(adapter: Path) -> tuple:
    """(relative path, size, mtime_ns) of every file, sorted: cheap, and changes with any rewrite."""
    out = []
    for p in sorted(adapter.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append((p.relative_to(adapter).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


def adapter_hash(adapter: Path, fingerprint: tuple | None = None) -> str:
    """sha256 over the adapter's file names and contents."""
    fingerprint = _fingerprint(adapter) if fingerprint is None else fingerprint
    cached = _hashes.get((str(adapter), fingerprint))
    if cached:
        return cached
    h = hashlib.sha256()
    for rel, _, _ in fingerprint:
        h.update(rel.encode() + b"\0")
        with open(adapter / rel, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    _hashes[(str(adapter), fingerprint)] = digest = h.hexdigest()
    return digest


def read_adapter(adapter: Path | None) -> dict | None:
    """What a stamp records about the adapter an export is about to read (None: a base-only export).

    Called before the export builds, so a fine-tune publishing meanwhile makes the export stale."""
    if adapter is None:
        return None
    fingerprint = _fingerprint(adapter)
    return {"sha256": adapter_hash(adapter, fingerprint), "files": [list(f) for f in fingerprint]}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def export_state(export_dir: Path, adapter: Path) -> ExportState:
    """Whether the export in `export_dir` was built from the adapter now in `adapter`."""
    stamp = stamp_of(export_dir)
    have_adapter = (adapter / "adapter_config.json").is_file()
    if stamp is not None and "adapter" in stamp:
        built = stamp["adapter"]
        if not isinstance(built, dict):
            return ExportState(BASE, "exported without an adapter (base model only)")
        if not have_adapter:
            return ExportState(STALE, "the project's adapter is gone: fine-tune again")
        fingerprint = _fingerprint(adapter)
        # An export carrying several adapters (core/adapters.py) is current while the active one is among
        # them: `aitk adapters use` another one it carries needs no new export. A merged export carries one.
        carried = [b for b in (stamp.get("adapters") or {}).values() if isinstance(b, dict)] or [built]
        files = [list(f) for f in fingerprint]
        if any(files == b.get("files") for b in carried) or \
                adapter_hash(adapter, fingerprint) in {b.get("sha256") for b in carried}:
            return ExportState(CURRENT)
        return ExportState(STALE, "the adapter changed after this export (a newer fine-tune, or another one "
                                  "made active): export again")
    # An export from before stamps: its manifest says whether an adapter went in, mtimes say which.
    manifest_path = export_dir / MANIFEST
    manifest = _read_json(manifest_path)
    if manifest is not None and not manifest.get("adapter"):
        return ExportState(BASE, "exported without an adapter (base model only)")
    if not have_adapter:
        return ExportState(STALE, "the project's adapter is gone: fine-tune again")
    marker = manifest_path if manifest is not None else export_dir / "genai_config.json"
    try:
        exported = marker.stat().st_mtime_ns
    except OSError:
        return ExportState(STALE, "the export is incomplete: export again")
    newest = max((m for _, _, m in _fingerprint(adapter)), default=0)
    if newest > exported:
        return ExportState(STALE, "the adapter changed after this export (a newer fine-tune): export again")
    return ExportState(CURRENT)
