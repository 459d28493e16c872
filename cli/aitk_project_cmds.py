"""`aitk project import DIR` and `aitk project export-aitk`: AI Toolkit for VS Code projects in and out.

`register_project_commands(project_subparsers)` adds both to the `project` group. The work is
`aitk.core.aitk_project`'s; these handlers only print its report.
"""

from __future__ import annotations

import argparse


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
