"""AI Toolkit's public project templates (`../shared/aitk-templates`), materialised the way its
"Generate Project" fills them: every `<token>` of setup/project-settings.json replaced by the
form's value in every file, the form itself saved with the values chosen, and the data-files
marker block resolved for a local dataset file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

TEMPLATES = Path(os.environ.get("AITK_TEMPLATES", Path(__file__).resolve().parents[2] / "shared" / "aitk-templates"))
NAMES = ["Phi-3-mini-4k-instruct", "llama-v2-7b", "llama-v3-8b", "mistral-7b", "mistral-7b-v02", "phi-1_5",
         "phi-2", "zephyr-7b-beta"]
needs_templates = pytest.mark.skipif(not TEMPLATES.is_dir(),
                                     reason=f"AI Toolkit templates not found at {TEMPLATES}")


def form_fields(template: str) -> dict[str, dict]:
    groups = json.loads((TEMPLATES / template / "setup" / "project-settings.json").read_text(encoding="utf-8"))
    return {f["replaceToken"]: f for g in groups for f in g["fields"]}


def _fill(text: str, values: dict[str, object], fields: dict[str, dict], json_file: bool) -> str:
    lines, out, skipping = text.splitlines(keepends=True), [], False
    for line in lines:
        if line.strip() == "#data_configs_data_files_extension_start":
            skipping = True
            ext = Path(str(values["<data_configs_data_files>"])).suffix.lstrip(".") or "json"
            out.append(f'                "data_name": "{ext}",\n')
            continue
        if line.strip() == "#data_configs_data_files_extension_end":
            skipping = False
            continue
        if not skipping:
            out.append(line)
    text = "".join(out).replace("<data_files>", "data_files")
    for token, value in values.items():
        if isinstance(value, bool):
            rendered = json.dumps(value) if json_file else str(value)
        elif isinstance(value, list):
            rendered = json.dumps(value)
        else:
            rendered = str(value)
        text = text.replace(token, rendered)
    return text


def materialise(template: str, dest: Path, overrides: dict[str, object] | None = None) -> dict[str, object]:
    """Generate the project at `dest`; return the form values used (token -> value, as typed in
    the form: text fields JSON-escaped, e.g. `\\n` for a new line)."""
    fields = form_fields(template)
    values = {t: f["defaultValue"] for t, f in fields.items()}
    values.update(overrides or {})
    src = TEMPLATES / template
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        target = dest / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() == "setup/project-settings.json":
            groups = json.loads(path.read_text(encoding="utf-8"))
            for g in groups:
                for f in g["fields"]:
                    f["defaultValue"] = values[f["replaceToken"]]
            target.write_text(json.dumps(groups, indent=2), encoding="utf-8")
        elif rel.parts[0] == "dataset":
            shutil.copy2(path, target)
        else:
            target.write_text(_fill(path.read_text(encoding="utf-8"), values, fields, path.suffix == ".json"),
                              encoding="utf-8")
    return values
