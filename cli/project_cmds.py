"""`aitk project new|set|keys|show|list|regen|import|export-aitk`: create projects, change their
settings, and bring AI Toolkit for VS Code projects in and out (the work is core.aitk_project's)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import project_arg


def cmd_project_new(args) -> int:
    from ..core.devices import detect
    from ..core.errors import AitkError
    from ..core.project import create_project
    from ..core.defaults import default_settings
    from ..core.settings import apply_overrides

    if args.dir is None:
        # `--set a=1 b=2 DIR`: the folder went into --set's list (it takes several assignments).
        if args.set and "=" not in args.set[-1]:
            args.dir = args.set.pop()
        else:
            raise AitkError("no project folder given", "aitk project new DIR [--set KEY=VALUE ...]")
    device = detect()
    settings = None
    if args.set:
        settings = apply_overrides(default_settings(Path(args.dir).name, args.model, device.best), args.set,
                                   where="--set")
    project = create_project(args.dir, settings, model_id=args.model, dataset=args.dataset,
                             eval_dataset=args.eval_dataset)
    print(f"created project {project.name} at {project.root}")
    _warn_columns(project)
    _warn_slow_here(project, device)
    print(f"next: cd {project.root} && aitk finetune")
    return 0


def _warn_columns(project) -> None:
    """The template names columns the data lacks: say it now, not when the fine-tune fails.
    (Local files only: a hub dataset is checked by `aitk dataset check`, which may download.)"""
    from ..core.datasets import check_dataset

    s = project.settings.data
    for source in filter(None, (s.dataset, s.eval_dataset)):
        path = project.path(source)
        if not path.is_file():
            continue
        report = check_dataset(path, text_template=s.text_template, max_rows=200)
        absent = [i for i in report.issues if "is not a column" in i.message]
        if absent:
            for issue in absent[:3]:
                print(f"warning: {source}: {issue.message}", file=sys.stderr)
            columns = report.columns or ["column"]
            example = "\\n".join(f"{{{c}}}" for c in columns[:2])
            print(f"  its columns: {', '.join(report.columns) or '(none)'}. Fine-tuning fails until the template "
                  f"uses them, e.g. aitk project set -P {project.root} 'data.text_template={example}'",
                  file=sys.stderr)
            return


def _warn_slow_here(project, device) -> None:
    """A model the estimate calls slow or impractical to fine-tune on this machine: say so."""
    from ..core import catalog, estimates

    s = project.settings
    if s.target.where != "local":
        return
    try:
        entry = catalog.get(s.model.id)
    except Exception:  # noqa: BLE001 - a model outside the catalog has no estimate
        return
    fit = estimates.fits(entry, device, s.finetune.method)
    if fit.ok is False or fit.speed in ("slow", "impractical"):
        print(f"warning: fine-tuning {entry.id} here: {fit.summary()}. A GPU helps: "
              f"`aitk azure run -P {project.root}`; to try the pipeline fast, `aitk project new DIR` (tiny model).",
              file=sys.stderr)


def cmd_project_set(args) -> int:
    from ..core.project import find_project, regenerate
    from ..core.settings import apply_overrides, changes

    project = find_project(args.project)
    before = project.settings
    project.settings = apply_overrides(before, args.assignments, where="project set")
    regenerate(project)
    changed = changes(before, project.settings)
    for key, old, new in changed:
        print(f"{key}: {old!r} -> {new!r}")
    print(f"{project.root / 'aitk.toml'} and its generated files updated" if changed else "nothing changed")
    return 0


def cmd_project_keys(args) -> int:
    from ..core.settings import setting_specs

    section = None
    for spec in setting_specs():
        if spec.section != section:
            section = spec.section
            print(f"[{section}]")
        bounds = f", {spec.bounds_text}" if spec.bounds else ""
        print(f"  {spec.key} = {spec.default!r}   ({spec.type_text}{bounds})")
        if spec.description:
            print(f"      {spec.description}")
    return 0


def cmd_project_show(args) -> int:
    from ..core.project import find_project, generated_files
    from ..core.project_index import exports, parity_of

    project = find_project(args.project)
    made = exports(project.root)
    parity = parity_of(project.root, project.settings.inference.precision, made)
    if args.json:
        print(json.dumps({"root": str(project.root), "settings": project.settings.model_dump(mode="json"),
                          "exports": [{"precision": e.precision, "path": str(e.path), "state": e.state.state,
                                       "reason": e.state.reason} for e in made],
                          "parity": None if parity is None else {"state": parity.state, "summary": parity.summary,
                                                                 "divergence": parity.divergence}}, indent=2))
        return 0
    s = project.settings
    print(f"{project.name}  ({project.root})")
    print(f"  model     {s.model.id} ({s.model.path})")
    print(f"  data      {s.data.dataset}  eval: {s.data.eval_dataset or '-'}")
    f = s.finetune
    print(f"  method    {f.method} r={f.lora_r} alpha={f.lora_alpha} lr={f.learning_rate} steps={f.max_steps} "
          f"batch={f.per_device_train_batch_size} dtype={f.compute_dtype}")
    print(f"  target    {s.target.where} / {s.target.device} (here: {project.device()})")
    print(f"  olive     {generated_files(project.root)[0]}")
    from ..core.adapters import list_adapters

    named = list_adapters(project.root)
    active = next((a.name for a in named if a.active), None)
    print(f"  adapter   {f'{active} (active; {len(named)} in all: `aitk adapters list`)' if active else 'not trained yet'}")
    if not made:
        print("  onnx      not exported yet")
    for i, e in enumerate(made):
        print(f"  {'onnx' if i == 0 else '':9} {e.precision} {e.summary} ({e.path})")
    if parity is not None:
        print(f"  parity    {parity.summary}")
        if (div := parity.divergence) and parity.state != "passed":
            print(f"            {div['form']}: {div['prompt']!r} expected {div['expected']!r} got {div['got']!r}")
    return 0


def cmd_project_list(args) -> int:
    from ..core.project_index import list_projects

    entries = list_projects()
    if args.json:
        print(json.dumps([{"name": e.name, "root": e.root, "problem": e.problem, "chat": e.chat_state,
                           "exports": {x.precision: x.state.state for x in e.exports}} for e in entries], indent=2))
        return 0
    if not entries:
        print("no projects yet (create one with `aitk project new DIR`)")
    for e in entries:
        exports = ", ".join(x.label for x in e.exports) or "not exported"
        print(f"{e.name:20} {e.problem or exports:30} {e.root}")
    return 0


def cmd_project_regen(args) -> int:
    from ..core.project import find_project, regenerate

    project = find_project(args.project)
    regenerate(project)
    print(f"regenerated {project.root}")
    return 0


def register(sub) -> None:
    project = sub.add_parser("project", help="create and inspect projects").add_subparsers(dest="sub", required=True)
    register_project_commands(project)  # import / export-aitk: AI Toolkit projects
    p = project.add_parser("new", help="create a project folder")
    p.add_argument("dir", nargs="?", help="the new project folder")
    p.add_argument("--model", default="tiny", help="catalog id of the base model (default: tiny)")
    p.add_argument("--dataset", help="training data file or HF dataset (default: the bundled one for tiny)")
    p.add_argument("--eval-dataset", help="evaluation data file")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", default=[],
                   help="settings other than their defaults, e.g. --set finetune.lora_r=32 finetune.max_steps=100 "
                        "(`aitk project keys` lists them)")
    p.set_defaults(func=cmd_project_new)
    p = project.add_parser("set", help="change settings (KEY=VALUE ...) and rewrite the generated files")
    project_arg(p)
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE", help="e.g. finetune.max_steps=200")
    p.set_defaults(func=cmd_project_set)
    p = project.add_parser("keys", help="every setting: its default, type, bounds and help")
    p.set_defaults(func=cmd_project_keys)
    p = project.add_parser("show", help="show a project's settings and state")
    project_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_project_show)
    p = project.add_parser("list", help="every project aitk knows (the projects folder, those created or "
                                        "opened elsewhere, those of jobs) and its exports")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_project_list)
    p = project.add_parser("regen", help="rewrite generated files after editing aitk.toml")
    project_arg(p)
    p.set_defaults(func=cmd_project_regen)


def register_project_commands(project_subparsers: argparse._SubParsersAction) -> None:
    p = project_subparsers.add_parser(
        "import", help="open a project AI Toolkit for VS Code generated (writes aitk.toml; its files stay as they are)",
        description="Read an AI Toolkit project (finetuning/olive-config.json, setup/project-settings.json, "
                    "inference/, infra/*.config.json, dataset/) into aitk settings. In place by default: "
                    "AI Toolkit still opens the folder. Every value carried over is listed, and what is not.")
    p.add_argument("dir", help="the AI Toolkit project folder")
    p.add_argument("--to", metavar="DIR", help="write a new aitk project there instead of importing in place")
    p.add_argument("--dry-run", action="store_true", help="show what would be imported; write nothing")
    p.set_defaults(func=cmd_project_import)
    p = project_subparsers.add_parser(
        "export-aitk", help="write AI Toolkit's layout into this project, so VS Code's AI Toolkit opens it",
        description="Writes setup/project-settings.json (the Configure Project form, filled), "
                    "finetuning/olive-config.json + invoke_olive.py, infra/*.config.json and "
                    "inference/console_chat.py's template, next to aitk's own files.")
    p.add_argument("-P", "--project", help="project folder (default: the one around the current directory)")
    p.set_defaults(func=cmd_project_export_aitk)


def cmd_project_import(args) -> int:
    from ..core import aitk_project

    if args.dry_run:
        report = aitk_project.read_project(args.dir, args.to)
    else:
        report = aitk_project.import_project(args.dir, args.to)
    for line in report.lines():
        print(line)
    if args.dry_run:
        print("dry run: nothing written")
    elif report.already:
        print(f"already imported: {report.dest / 'aitk.toml'} is unchanged")
    else:
        print(f"imported: {report.dest / 'aitk.toml'}")
        print(f"next: cd {report.dest} && aitk finetune")
    return 0


def cmd_project_export_aitk(args) -> int:
    from ..core import aitk_project
    from ..core.project import find_project

    project = find_project(args.project)
    for rel in aitk_project.export_aitk(project):
        print(f"wrote {project.root / rel}")
    print("AI Toolkit for VS Code opens this folder now (its files next to aitk's)")
    return 0
