"""What the new-project wizard has gathered, and the one place it turns into files (on confirm).

Until `create()` runs nothing is written: the steps read datasets and tokenizers to preview them,
and keep every choice in a `WizardState` (with a `ProjectSettings` validated field by field).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aitk.core import paths, tiny
from aitk.core.errors import AitkError
from aitk.core.defaults import default_settings
from aitk.core.settings import ESCAPED_TEXT, NAME_RE, ProjectSettings, changes, escape_text

DATASET_MODES = ("bundled", "file", "hf")


@dataclass
class WizardResult:
    root: Path
    job_ids: list[str] = field(default_factory=list)


@dataclass
class WizardState:
    name: str = ""
    location: str = ""
    model_id: str = tiny.TINY_ID
    model_path: str | None = None  # HF repo id or local folder, for models outside the catalog
    entry: object | None = None  # the catalog entry of the model, when it has one
    dataset_mode: str = "bundled"
    dataset: str = ""
    eval_dataset: str = ""
    settings: ProjectSettings | None = None
    device: str = "cpu"  # the machine's best device (for defaults)
    start: bool = True

    @property
    def dest(self) -> Path:
        return Path(self.location or paths.projects_dir()).expanduser() / self.name

    def reset_settings(self) -> None:
        """The engine's defaults for this model (catalog id, HF repo or folder) and device."""
        model = self.model_path if self.entry is None and self.model_path else self.model_id
        self.settings = default_settings(self.name or "project", model, self.device)

    def dataset_args(self) -> tuple[str | None, str | None]:
        """(dataset, eval_dataset) as create_project takes them."""
        bundled = paths.bundled_data() / "tiny_qa"
        if self.dataset_mode == "bundled":
            if self.model_id == tiny.TINY_ID:
                return None, None
            return str(bundled / "train.jsonl"), str(bundled / "eval.jsonl")
        return self.dataset.strip() or None, self.eval_dataset.strip() or None

    def preview_sources(self) -> tuple[str | None, str | None]:
        if self.dataset_mode == "bundled":
            bundled = paths.bundled_data() / "tiny_qa"
            return str(bundled / "train.jsonl"), str(bundled / "eval.jsonl")
        return self.dataset.strip() or None, self.eval_dataset.strip() or None


def check_name(name: str, location: str) -> str | None:
    if not name:
        return "Give the project a name"
    if not NAME_RE.match(name) or name in {".", ".."}:
        return f"{name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    base = Path(location or paths.projects_dir()).expanduser()
    if not base.is_dir():
        return f"{base} does not exist: choose an existing folder"
    if (base / name).exists():
        return f"{base / name} already exists: choose another name"
    return None


def free_name(location: str | None = None) -> str:
    base = Path(location or paths.projects_dir()).expanduser()
    for i in range(1, 1000):
        if not (base / f"project-{i}").exists():
            return f"project-{i}"
    return "project"


def command_line(state: WizardState) -> str:
    """The `aitk` commands doing what the wizard will do (settings beyond the defaults go in aitk.toml)."""
    import shlex

    dataset, eval_dataset = state.dataset_args()
    parts = ["aitk", "project", "new", str(state.dest), "--model", state.model_id]
    if dataset:
        parts += ["--dataset", dataset]
    if eval_dataset:
        parts += ["--eval-dataset", eval_dataset]
    for key, value in changed_settings(state):
        parts += ["--set", f"{key}={_cli_value(key, value)}"]
    quoted = [shlex.quote(p) for p in parts]
    one_line = " ".join(quoted)
    lines = [one_line if len(one_line) <= 100 and "\n" not in one_line else " \\\n    ".join(_chunks(quoted))]
    if state.start:
        lines.append(f"aitk finetune -P {shlex.quote(str(state.dest))} && aitk export -P {shlex.quote(str(state.dest))}"
                     f" && aitk evaluate -P {shlex.quote(str(state.dest))}")
    return "\n".join(lines)


def _cli_value(key: str, value: object) -> str:
    """How `--set` reads it back: TOML literals for numbers, booleans and lists; text as it is."""
    import json

    if value is None:
        return ""
    if isinstance(value, str):
        # Templates travel as `\n` (`--set` reads them through `unescape_text`); text that starts
        # with a quote, has surrounding spaces or (another field) a new line goes as a TOML string.
        if value != value.strip() or value[:1] in "\"'" or ("\n" in value and key not in ESCAPED_TEXT):
            return json.dumps(value, ensure_ascii=False)
        return escape_text(value) if key in ESCAPED_TEXT else value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # numbers and lists of text are valid TOML in their JSON form


def _chunks(words: list[str]) -> list[str]:
    """The command first, then one `--flag value` per line, so a long command stays readable."""
    out = [words[0]]
    for word in words[1:]:
        if word.startswith("--"):
            out.append(word)
        else:
            out[-1] += " " + word
    head = [out[0]]
    while len(out) > 1 and not out[1].startswith("--"):
        head[0] += " " + out.pop(1)
    return head + out[1:]


def changed_settings(state: WizardState) -> list[tuple[str, object]]:
    """Settings that differ from what `aitk project new` would write for this model."""
    if state.settings is None:
        return []
    base = WizardState(name=state.name, model_id=state.model_id, model_path=state.model_path,
                       entry=state.entry, device=state.device)
    base.reset_settings()
    # The data files travel as --dataset / --eval-dataset, not as settings.
    return [(key, new) for key, _old, new in changes(base.settings, state.settings)
            if key not in ("data.dataset", "data.eval_dataset")]


def build_tiny_if_needed() -> None:
    """The tiny model is built with torch: in a child process, never in the UI process."""
    if tiny.is_built():
        return
    proc = subprocess.run([sys.executable, "-c", "from aitk.core.tiny import ensure_tiny; ensure_tiny()"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AitkError(f"could not build the tiny model: {tail}", "run `aitk model build-tiny` to see why")


def create(state: WizardState, store=None) -> WizardResult:
    """Write the project (and start its jobs when asked). Runs in a worker thread."""
    from aitk.core.project import create_project

    if state.settings is None:
        state.reset_settings()
    settings = state.settings.model_copy(deep=True)
    settings.name = state.name
    if state.model_id == tiny.TINY_ID:
        build_tiny_if_needed()
    dataset, eval_dataset = state.dataset_args()
    project = create_project(state.dest, settings, model_id=state.model_id, dataset=dataset,
                             eval_dataset=eval_dataset)
    result = WizardResult(project.root)
    if state.start:
        from aitk.tui import job_actions

        jobs = job_actions.start_finetune(store, project.root) if store is not None else []
        result.job_ids = [j.id for j in jobs]
    return result
