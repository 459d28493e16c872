"""Every project aitk knows, with its exports and whether each is current with its adapter.

One list for every front end (the Projects and Chat panes, `aitk project list|show`, `aitk serve`,
`aitk chat`): the projects folder, the projects the user created or opened anywhere else
(`known_projects`), and the projects of jobs in the store. Each `aitk.toml` is read with tomllib
only (no validation), so listing a hundred projects takes milliseconds; a broken file is listed
with its problem. A remembered folder that is gone is left out of the list and, when something
asks for it by path (a job's project), reported as gone: never replaced by another project.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import adapters, aitk_layout, known_projects, paths
from .errors import AitkError
from .publish import list_exports
from .export_state import BASE, CURRENT, STALE, ExportState, export_state
from .parity import ParityMark
from .project import ONNX_DIR, SETTINGS_FILE


@dataclass(frozen=True)
class ExportInfo:
    precision: str
    path: Path
    state: ExportState

    @property
    def current(self) -> bool:
        return self.state.state == CURRENT

    @property
    def stale(self) -> bool:
        return self.state.state == STALE

    @property
    def word(self) -> str:
        return {CURRENT: "current", STALE: "stale"}.get(self.state.state, "base only")

    @property
    def label(self) -> str:
        """`fp32`, `fp32 (stale)`, `fp32 (base only)`: how every front end names this export."""
        return self.precision if self.current else f"{self.precision} ({self.word})"

    @property
    def summary(self) -> str:
        """`current`, or `stale: why and what to do`."""
        return self.word if self.current else f"{self.word}: {self.state.reason}"


AITK = "aitk"                 # an aitk project (aitk.toml)
AI_TOOLKIT = "ai-toolkit"     # a folder AI Toolkit for VS Code generated, not imported yet


@dataclass
class ProjectEntry:
    root: str
    name: str
    settings: dict = field(default_factory=dict)
    problem: str | None = None
    adapter: bool = False
    exports: list[ExportInfo] = field(default_factory=list)  # newest first
    kind: str = AITK
    from_ai_toolkit: bool = False  # AI Toolkit's layout is in the folder (imported, or not yet)
    parity: ParityMark | None = None  # of the export chat and serve use; None: no tuned export to check

    def get(self, section: str, key: str, default="—"):
        value = self.settings.get(section, {}).get(key, default)
        return default if value is None else value

    @property
    def chat_state(self) -> str:
        """`ready` (an export current with the adapter), `stale`, `base` (base-only exports), or `none`."""
        if any(e.current for e in self.exports):
            return "ready"
        if any(e.stale for e in self.exports):
            return "stale"
        return "base" if self.exports else "none"


def export_dirs(root: str | Path) -> list[Path]:
    """A project's published export folders (one per precision), newest first; `stat` calls only
    (unless a publish was cut short, which core.publish repairs on the way)."""
    return list_exports(Path(root) / ONNX_DIR)


def exports(root: str | Path) -> list[ExportInfo]:
    """The exports with their state (may hash the adapter once: call it off the UI thread)."""
    active = adapters.active_dir(root)
    return [ExportInfo(d.name, d, export_state(d, active)) for d in export_dirs(root)]


def read_entry(root: str | Path) -> ProjectEntry:
    root = Path(root)
    try:
        data = tomllib.loads((root / SETTINGS_FILE).read_text(encoding="utf-8"))
        problem = None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        data, problem = {}, f"{SETTINGS_FILE} unreadable: {e}"
    entry = ProjectEntry(str(root), str(data.get("name") or root.name), data, problem,
                         from_ai_toolkit=aitk_layout.is_aitk_layout(root))
    entry.adapter = (adapters.active_dir(root) / "adapter_config.json").is_file()
    entry.exports = exports(root)
    entry.parity = parity_of(root, str(entry.get("inference", "precision", "fp32")), entry.exports)
    return entry


def parity_of(root: str | Path, precision: str, made: list[ExportInfo]) -> ParityMark | None:
    """The parity mark of the project's `precision` export (adapter or merged form; core/parity.py),
    None when it has no tuned export there."""
    from . import parity
    from .export import MERGED_SUFFIX

    forms = {precision, precision + MERGED_SUFFIX}
    if not any(e.precision in forms and e.state.state != BASE for e in made):
        return None
    return parity.mark(root, precision, {e.precision for e in made if e.precision in forms and e.stale})


def _job_projects() -> list[str]:
    from .jobs import JobStore

    try:
        return [r.project for r in JobStore().list() if r.project]
    except AitkError:  # an unreadable store hides no project of the folder or the known list
        return []


def roots() -> list[Path]:
    """Folders of every known project that is there now, resolved, each once, sorted by name."""
    base = paths.projects_dir()
    candidates = [c for c in sorted(base.iterdir())] if base.is_dir() else []
    candidates += [Path(p) for p in known_projects.known()]
    candidates += [Path(p) for p in _job_projects()]
    seen: dict[str, Path] = {}
    for c in candidates:
        if (c / SETTINGS_FILE).is_file():
            seen.setdefault(str(c.resolve()), c.resolve())
    return sorted(seen.values(), key=lambda p: (p.name.lower(), str(p)))


def ai_toolkit_roots() -> list[Path]:
    """AI Toolkit projects in the projects folder that are not aitk projects yet (to import)."""
    base = paths.projects_dir()
    found = [c.resolve() for c in sorted(base.iterdir()) if c.is_dir() and not (c / SETTINGS_FILE).is_file()
             and aitk_layout.is_aitk_layout(c)] if base.is_dir() else []
    return sorted(found, key=lambda p: (p.name.lower(), str(p)))


def read_ai_toolkit_entry(root: Path) -> ProjectEntry:
    """Cheap: the folder and the model its Olive config reads (the full translation is the import's)."""
    import json

    try:
        config = json.loads((root / aitk_layout.OLIVE_CONFIG).read_text(encoding="utf-8"))
        model = str(config.get("input_model", {}).get("model_path", "")).removeprefix("model-cache/")
    except (OSError, ValueError, AttributeError):
        model = "?"
    return ProjectEntry(str(root), root.name, {"model": {"id": model}}, kind=AI_TOOLKIT, from_ai_toolkit=True)


def list_projects(include_ai_toolkit: bool = False) -> list[ProjectEntry]:
    """Every aitk project; with `include_ai_toolkit`, also the projects folder's AI Toolkit projects
    not imported yet (kind AI_TOOLKIT), for the front ends that offer to import them."""
    entries = [read_entry(r) for r in roots()]
    extra = [read_ai_toolkit_entry(r) for r in ai_toolkit_roots()] if include_ai_toolkit else []
    if extra:  # in the order of roots(): by folder name
        entries = sorted(entries + extra, key=lambda e: (Path(e.root).name.lower(), e.root))
    return entries


def check_present(root: str | Path | None, what: str = "this job's project") -> Path:
    """The project folder, or an AitkError saying it is gone (never another project in its place)."""
    if not root:
        raise AitkError(f"{what} is not recorded", "this job has no project folder")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise AitkError(f"{what} {path} is gone (folder deleted or moved)",
                        "recreate it with `aitk project new`, or delete the job")
    if not (path / SETTINGS_FILE).is_file():
        raise AitkError(f"{what} {path} is no longer an aitk project (no {SETTINGS_FILE})",
                        "restore its aitk.toml, or delete the job")
    return path.resolve()


def stale_warning(root: str | Path, precision: str) -> str | None:
    """One line when the export a command is about to use is out of date with the adapter."""
    for e in exports(root):
        if e.precision == precision and e.stale:
            return f"the {precision} export of {Path(root).name} is stale: {e.state.reason}"
    return None
