"""Provenance: what exactly a job ran, recorded when it starts (`manifest.json` in its folder).

The manifest holds the Olive config the run used, the project settings it came from, the
package versions, each dataset file's SHA-256 and row count, the seeds, the device and the base
model's id with its hub revision and a hash of its config.json. `aitk jobs rerun` repeats a
run from the settings recorded here and `differences` says what is not the same any more.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import atomic_file
from .digest import file_sha256
from .errors import AitkError

MANIFEST = "manifest.json"
FORMAT = 1
PACKAGES = ("torch", "transformers", "peft", "olive-ai", "onnxruntime", "onnxruntime-genai", "aitk-tui")


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def dataset_record(project, source: str | None, split: str) -> dict | None:
    """A dataset as the run saw it: a local file by hash and rows, a hub dataset by its name."""
    from .datasets import DatasetError, is_file_source, load_rows

    if not source:
        return None
    if not is_file_source(source):
        return {"source": source, "split": split, "hub": True}
    path = project.path(source)
    record: dict = {"source": source, "path": str(path), "split": split}
    if not path.is_file():
        return record | {"missing": True}
    record["sha256"] = file_sha256(path)
    record["bytes"] = path.stat().st_size
    try:
        record["rows"] = len(load_rows(path, split))
    except DatasetError:
        record["rows"] = None
    return record


def model_record(project) -> dict:
    """The base model: its id and, for a hub model in the cache, the revision it resolves to; the
    config.json hash tells a changed model apart even in a local folder."""
    from . import hub

    s = project.settings.model
    base = project.base_model_path()
    record: dict = {"id": s.id, "path": s.path}
    folder = Path(base)
    if not folder.is_dir():
        repo = hub.repo_folder(base)
        ref = repo / "refs" / "main"
        if ref.is_file():
            commit = ref.read_text().strip()
            record["revision"] = commit
            folder = repo / "snapshots" / commit
    config = folder / "config.json"
    if config.is_file():
        record["config_sha256"] = file_sha256(config)
    return record


def build(project, *, kind: str, device: str, olive_config: dict | None, params: dict | None = None) -> dict:
    f, d = project.settings.finetune, project.settings.data
    return {
        "format": FORMAT,
        "kind": kind,
        "created": time.time(),
        "project": str(project.root),
        "device": device,
        "params": {k: v for k, v in (params or {}).items() if k != "settings"},
        "seeds": {"seed": f.seed, "data_seed": f.data_seed},
        "model": model_record(project),
        "data": {"train": dataset_record(project, d.dataset, d.train_split),
                 "eval": dataset_record(project, d.eval_dataset, d.eval_split)},
        "packages": package_versions(),
        "settings": project.settings.model_dump(mode="json"),
        "olive_config": olive_config,
    }


def write(job_dir: Path, manifest: dict) -> Path:
    return atomic_file.write_text(Path(job_dir) / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def read(job_dir: Path) -> dict | None:
    try:
        return json.loads((Path(job_dir) / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise AitkError(f"cannot read {Path(job_dir) / MANIFEST}: {e}", "the job's manifest is damaged") from None


def project_with(project, settings: dict):
    """The project as it was when a manifest was written: its folder, the recorded settings."""
    from .project import Project
    from .settings import ProjectSettings

    return Project(project.root, ProjectSettings.model_validate(settings))


def _flat(d, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(old: dict, now: dict, current_settings: dict | None = None) -> list[str]:
    """What differs between a recorded manifest and one built now from the same settings (package
    versions, data, model), and between the recorded settings and the project's current ones."""
    lines = []
    for name in PACKAGES:
        a, b = old.get("packages", {}).get(name), now.get("packages", {}).get(name)
        if a != b:
            lines.append(f"package {name}: {a or 'absent'} -> {b or 'absent'}")
    for split in ("train", "eval"):
        a, b = (old.get("data") or {}).get(split) or {}, (now.get("data") or {}).get(split) or {}
        if a.get("sha256") != b.get("sha256") or a.get("rows") != b.get("rows"):
            lines.append(f"{split} data {b.get('source') or a.get('source')}: sha256 "
                         f"{(a.get('sha256') or '-')[:12]} -> {(b.get('sha256') or '-')[:12]}, rows "
                         f"{a.get('rows')} -> {b.get('rows')}")
    for key in ("revision", "config_sha256"):
        a, b = old.get("model", {}).get(key), now.get("model", {}).get(key)
        if a != b:
            lines.append(f"base model {key}: {(a or '-')[:12]} -> {(b or '-')[:12]}")
    if old.get("device") != now.get("device"):
        lines.append(f"device: {old.get('device')} -> {now.get('device')}")
    if current_settings is not None:
        a, b = _flat(old.get("settings")), _flat(current_settings)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                lines.append(f"setting {key}: {a.get(key)!r} recorded, {b.get(key)!r} in aitk.toml now "
                             "(the rerun uses the recorded one)")
    return lines


def summary_lines(m: dict) -> list[str]:
    """`aitk jobs show`'s manifest section: one line per fact."""
    model = m.get("model", {})
    lines = [f"model        {model.get('id')} ({model.get('path')})"
             + (f" revision {model['revision'][:12]}" if model.get("revision") else "")
             + (f" config {model['config_sha256'][:12]}" if model.get("config_sha256") else ""),
             f"device       {m.get('device')}",
             f"seeds        seed {m.get('seeds', {}).get('seed')}, data_seed {m.get('seeds', {}).get('data_seed')}"]
    for split, d in (m.get("data") or {}).items():
        if d:
            lines.append(f"{split + ' data':12} {d.get('source')}"
                         + (f" sha256 {d['sha256'][:12]}, {d.get('rows')} rows" if d.get("sha256") else ""))
    lines.append("packages     " + ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items() if v))
    if m.get("olive_config"):
        passes = m["olive_config"].get("passes", {})
        args = passes.get("finetune", {}).get("training_args", {})
        lines.append(f"olive config {len(passes)} pass(es), max_steps {args.get('max_steps')}, "
                     f"lr {args.get('learning_rate')} (full config: --json)")
    return lines
