"""Publishing a job's output folder (the adapter, an export) as a project's current one.

One atomic step: the new folder is staged complete beside the old one, then the two are swapped
with `renameat2(RENAME_EXCHANGE)`, so the published path is always a whole folder, old or new,
never missing. The published path stays a real folder (`models/olive/adapter`,
`models/onnx/<precision>`), so readers outside aitk and `olive run` of the project config (which
replaces its output folder in place and cannot write through a symlink) keep working.

Each folder aitk publishes carries a stamp (`.aitk-version`, written last while staging) naming
its version; an export's stamp also records the adapter it was built from (core/export_state.py).

Where RENAME_EXCHANGE is missing (another OS, an old file system) it falls back to two renames;
`current()` repairs the one state a crash between them can leave (the path missing, the staged
or retired folder beside it), so every reader still finds a whole folder.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import time
import uuid
from pathlib import Path

STAMP = ".aitk-version"
RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the OS or file system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not supported here
        return False
    raise OSError(err, os.strerror(err), str(a))


def _alive(pid: int) -> bool:
    from .jobs import pid_alive

    return pid == os.getpid() or pid_alive(pid)


def _owner(entry: Path, dest: Path) -> int | None:
    """The pid in a work folder's name `.{dest}-{kind}-{pid}-{rand}`, None if not one of ours."""
    prefix = f".{dest.name}-"
    if not entry.name.startswith(prefix):
        return None
    parts = entry.name[len(prefix):].split("-")
    if len(parts) != 3 or parts[0] not in ("staged", "retired", "build") or not parts[1].isdigit():
        return None
    return int(parts[1])


def work_dir(dest: Path, kind: str) -> Path:
    """A fresh folder beside `dest` (same file system, so it can be renamed into place) that
    `clean_leftovers` removes once the process that made it is gone."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    path = dest.parent / f".{dest.name}-{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def stamp_of(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(staged: Path, dest: Path, **stamp) -> str:
    """Make the complete folder `staged` (a `work_dir` of `dest`) the one at `dest`; return its
    version id. `stamp` adds facts to the version stamp (e.g. the adapter an export was built from)."""
    version = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    (staged / STAMP).write_text(json.dumps({"version": version, "published": time.time(), **stamp}),
                                encoding="utf-8")
    _fsync_dir(staged)
    if not dest.exists() and not dest.is_symlink():
        try:
            os.replace(staged, dest)
            staged = None
        except OSError as e:  # another publisher put one there first: swap with theirs
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    # After the exchange `staged` holds the previous folder, removed below.
    if staged is not None and not _exchange(staged, dest):
        retired = dest.parent / f".{dest.name}-retired-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(dest, retired)  # a crash here is repaired by current(): staged is whole
        os.replace(staged, dest)
        staged = retired
    _fsync_dir(dest.parent)
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)
    clean_leftovers(dest)
    return version


def current(dest: Path) -> Path | None:
    """The published folder at `dest`, or None if nothing is published there.

    Every reader (chat, serve, export, evaluate, project status) asks here, never `is_dir()` on
    its own: this is also where a crash in the two-rename fallback is repaired."""
    if dest.is_dir():
        return dest
    if dest.exists() or dest.is_symlink():
        return None
    for kind in ("staged", "retired"):  # only the fallback can leave these with `dest` missing
        for entry in sorted(dest.parent.glob(f".{dest.name}-{kind}-*"), reverse=True):
            pid = _owner(entry, dest)
            if pid is not None and not _alive(pid) and stamp_of(entry) is not None:
                try:
                    os.replace(entry, dest)
                except OSError:
                    continue
                return dest
    return None


def version(dest: Path) -> str | None:
    """The version id of what is published at `dest`; None when nothing is, or when the folder
    was written outside aitk (e.g. by `olive run`), which carries no stamp."""
    folder = current(dest)
    stamp = stamp_of(folder) if folder else None
    return stamp.get("version") if stamp else None


def clean_leftovers(dest: Path) -> list[Path]:
    """Remove the work folders beside `dest` whose process is gone (a killed export's build, a
    publish cut short). A staged folder is kept while `dest` is missing: current() needs it."""
    removed = []
    if not dest.parent.is_dir():
        return removed
    for entry in dest.parent.iterdir():
        pid = _owner(entry, dest)
        if pid is None or _alive(pid):
            continue
        if not dest.exists() and stamp_of(entry) is not None:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


# -- a project's published outputs (duck-typed on core.project.Project, which imports this) -----
def current_adapter(project) -> Path | None:
    """The project's fine-tuned adapter folder, or None if it has none yet."""
    folder = current(project.adapter_dir)
    return folder if folder is not None and (folder / "adapter_config.json").is_file() else None


def current_export(project, precision: str | None = None) -> Path | None:
    """The project's ONNX export folder for `precision` (default: the project's), or None."""
    folder = current(project.onnx_dir(precision))
    return folder if folder is not None and (folder / "genai_config.json").is_file() else None


def snapshot(dest: Path, into: Path, attempts: int = 5) -> Path | None:
    """Copy what is published at `dest` to `into`, consistently: a reader that works from the
    folder for minutes (the model builder reading the adapter) must not see half of one version
    and half of the next. Versions are unique, so the same stamp before and after the copy means
    no swap happened during it."""
    for _ in range(attempts):
        folder = current(dest)
        if folder is None:
            return None
        before = stamp_of(folder)
        shutil.rmtree(into, ignore_errors=True)
        try:
            shutil.copytree(folder, into)
        except (OSError, shutil.Error):
            continue  # swapped and removed under us: take the new one
        if before == stamp_of(folder):
            return into
    raise OSError(f"{dest} kept changing while being read")


def list_exports(onnx_root: Path) -> list[Path]:
    """Every export folder published under a project's `models/onnx/` (one per precision), newest
    first; work folders of builds in progress or killed are not exports."""
    names = set()
    if onnx_root.is_dir():
        for entry in onnx_root.iterdir():
            if not entry.name.startswith("."):
                names.add(entry.name)
            elif entry.name.count("-") >= 3 and entry.name.split("-")[1] in ("staged", "retired"):
                names.add(entry.name[1:].split("-")[0])  # a publish cut short: current() repairs it
    found = [d for d in (current(onnx_root / n) for n in sorted(names)) if d and (d / "genai_config.json").is_file()]
    return sorted(found, key=lambda d: (d / "genai_config.json").stat().st_mtime, reverse=True)
