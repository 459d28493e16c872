"""A project's adapters: every fine-tune keeps its own under a name, and one of them is active.

Layout (paths relative to the project):

    models/adapters/<name>/   one folder per adapter, each published atomically (core/publish.py);
                              a fine-tune's name is its job id until renamed
    models/adapters/.active   the active adapter's name, written whole (core/atomic_file.py)
    models/olive/adapter/     where `olive run --config finetuning/olive-config.json` writes, and
                              where projects kept their one adapter before adapters had names

The active adapter is the one chat, serve, export and evaluate use by default; `Project.adapter_dir`
is its folder, so every caller that knew one adapter keeps working.

The Olive folder is read in place as the adapter named `olive`, never moved by a reader: readers run
on the app's UI refresh and beside a running `olive run`, which rewrites that folder file by file
(moving it then would file half an adapter), and an old project then needs no migration step that
could fail half way. `aitk adapters rename olive NAME` files it under a name of its own (a rename on
one file system), after which the next `olive run` no longer replaces it.

Which is active: the name in `.active` while that adapter exists; else the newest adapter (an old
project: its Olive folder, exactly as before).
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import atomic_file, olive_config, publish
from .errors import AitkError

ROOT = Path("models") / "adapters"
ACTIVE_FILE = ".active"
OLIVE = "olive"  # the Olive output folder's name as an adapter
LEGACY_DIR = Path(olive_config.ADAPTER_OUTPUT) / "adapter"
BASE = "base"  # the zero adapter an export carries: the base model
TUNED = "tuned"  # the active adapter, by the name it had when a project had one (AITK_ADAPTER=tuned)
RESERVED = (BASE, TUNED, OLIVE)
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# The job kinds that read a project's adapters while they run (a fine-tune writes its own name).
READERS = ("export", "evaluate")


@dataclass(frozen=True)
class Adapter:
    name: str
    path: Path
    active: bool
    written: float  # when it was published (or, for the Olive folder, last written)
    olive: bool = False  # the Olive output folder, read in place


def check_name(name: str) -> str:
    """The name, or an AitkError saying what a name may be."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name.endswith(".onnx_adapter"):
        raise AitkError(f"{name!r} is not a valid adapter name",
                        "use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit")
    if name in RESERVED:
        raise AitkError(f"{name!r} is a reserved adapter name ({BASE}: the base model, {TUNED}: the active "
                        f"adapter, {OLIVE}: what `olive run` wrote)", "choose another name")
    return name


def new_name() -> str:
    """A fresh name in the shape of a job id, for an adapter published outside a job."""
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def folder(root: str | Path, name: str) -> Path:
    root = Path(root)
    return root / LEGACY_DIR if name == OLIVE else root / ROOT / name


def _present(path: Path) -> Path | None:
    found = publish.current(path)
    return found if found is not None and (found / "adapter_config.json").is_file() else None


def _written(path: Path) -> float:
    stamp = publish.stamp_of(path)
    if stamp and isinstance(stamp.get("published"), (int, float)):
        return float(stamp["published"])
    try:
        return (path / "adapter_config.json").stat().st_mtime
    except OSError:
        return 0.0


def _names_on_disk(root: Path) -> list[str]:
    base = root / ROOT
    names = set()
    if base.is_dir():
        for entry in base.iterdir():
            if not entry.name.startswith("."):
                names.add(entry.name)
            elif entry.name.count("-") >= 3 and entry.name.split("-")[-3] in ("staged", "retired"):
                names.add(entry.name[1:].rsplit("-", 3)[0])  # a publish cut short: current() repairs it
    return sorted(n for n in names if NAME_RE.fullmatch(n) and n not in RESERVED)


def _found(root: Path) -> list[tuple[str, Path]]:
    out = [(n, p) for n in _names_on_disk(root) if (p := _present(folder(root, n))) is not None]
    legacy = _present(root / LEGACY_DIR)
    if legacy is not None:
        out.append((OLIVE, legacy))
    return out


def _chosen(root: Path) -> str | None:
    try:
        return (root / ROOT / ACTIVE_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _active_of(root: Path, found: list[tuple[str, Path]]) -> str | None:
    chosen = _chosen(root)
    if chosen is not None and any(n == chosen for n, _ in found):
        return chosen
    return max(found, key=lambda f: _written(f[1]))[0] if found else None


def list_adapters(root: str | Path) -> list[Adapter]:
    """Every adapter of the project, oldest first."""
    root = Path(root)
    found = _found(root)
    active = _active_of(root, found)
    items = [Adapter(n, p, n == active, _written(p), n == OLIVE) for n, p in found]
    return sorted(items, key=lambda a: (a.written, a.name))


def active_name(root: str | Path) -> str | None:
    root = Path(root)
    return _active_of(root, _found(root))


def active_dir(root: str | Path) -> Path:
    """The active adapter's folder; with no adapter yet, the Olive folder (absent, so every
    "is there an adapter" check says no, as it did before adapters had names)."""
    name = active_name(root)
    return folder(root, name) if name is not None else Path(root) / LEGACY_DIR


def get(root: str | Path, name: str) -> Adapter:
    """The adapter called `name` (`tuned`: the active one), or an AitkError listing the names."""
    items = list_adapters(root)
    for a in items:
        if a.name == name or (name == TUNED and a.active):
            return a
    have = ", ".join(a.name for a in items) or "none yet (run `aitk finetune`)"
    raise AitkError(f"no adapter {name!r} in this project", f"adapters: {have}")


def set_active(root: str | Path, name: str) -> Adapter:
    adapter = get(root, name)
    atomic_file.write_text(Path(root) / ROOT / ACTIVE_FILE, adapter.name + "\n")
    return adapter


def publish_adapter(root: str | Path, source: Path, name: str, *, activate: bool = True) -> str:
    """Copy the adapter folder `source` in as adapter `name` (replacing one of that name, e.g. a
    resumed run's, in one atomic swap) and make it the active one; return its version id."""
    check_name(name)
    dest = folder(root, name)
    publish.clean_leftovers(dest)
    staged = publish.work_dir(dest, "staged")
    shutil.copytree(source, staged, dirs_exist_ok=True)
    version = publish.publish(staged, dest)
    if activate:
        atomic_file.write_text(Path(root) / ROOT / ACTIVE_FILE, name + "\n")
    return version


def _users(root: Path, name: str, store) -> list:
    """Jobs of this project, queued or running, that read its adapters (or will publish `name`)."""
    from .jobs import ACTIVE

    return [r for r in store.list(status=ACTIVE, project=str(root))
            if r.kind in READERS or (r.kind == "finetune" and r.id == name)]


def refusal(action: str, root: str | Path, name: str, store=None) -> AitkError | None:
    """Why `action` (rm, rename) cannot be done to adapter `name` now, or None. The one place
    the CLI and the app ask, so both refuse the same things with the same words."""
    root = Path(root)
    try:
        adapter = get(root, name)
    except AitkError as e:
        return e
    if action == "rm" and adapter.active:
        others = [a.name for a in list_adapters(root) if not a.active]
        return AitkError(f"adapter {adapter.name} is the active one (chat, serve, export and evaluate use it)",
                         f"make another one active first: `aitk adapters use {others[-1]}`" if others else
                         "it is the project's only adapter; fine-tune another one first")
    if store is None:
        from .jobs import JobStore

        store = JobStore()
    users = _users(root, adapter.name, store)
    if users:
        job = users[0]
        return AitkError(f"job {job.id} ({job.kind}, {job.status}) is using the adapters of this project",
                         f"wait for it to end, or cancel it first: `aitk jobs cancel {job.id}`")
    return None


def remove(root: str | Path, name: str, store=None) -> Adapter:
    if (why := refusal("rm", root, name, store)) is not None:
        raise why
    adapter = get(root, name)
    trash = publish.work_dir(adapter.path, "build")  # renamed away first: never half a folder listed
    trash.rmdir()
    adapter.path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    return adapter


def rename(root: str | Path, old: str, new: str, store=None) -> Adapter:
    """Rename adapter `old` to `new` (the Olive folder is filed into models/adapters/NEW); the
    active adapter stays active under its new name."""
    root = Path(root)
    check_name(new)
    if (why := refusal("rename", root, old, store)) is not None:
        raise why
    adapter = get(root, old)
    if adapter.name == new:
        return adapter
    dest = folder(root, new)
    if dest.exists() or _present(dest) is not None:
        raise AitkError(f"there is already an adapter {new!r}", "choose another name, or remove that one first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    adapter.path.rename(dest)
    if adapter.active:
        atomic_file.write_text(root / ROOT / ACTIVE_FILE, new + "\n")
    return get(root, new)


def for_export(root: str | Path) -> dict[str, Path]:
    """Every adapter by name, the active one first (the one the export's graph is built from)."""
    items = sorted(list_adapters(root), key=lambda a: not a.active)
    return {a.name: a.path for a in items}
