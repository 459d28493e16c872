"""`aitk dataset check|preview`: is a dataset usable, and what training will see of it."""

from __future__ import annotations

import sys

from ..core.errors import AitkError
from .common import project_arg


def _dataset_template(args) -> str | None:
    """--template as typed (`\\n` a new line), else the project's own (-P, or around the current dir)."""
    from ..core.project import text_template_around
    from ..core.settings import unescape_text

    if args.template is not None:
        return unescape_text(args.template)
    if getattr(args, "columns", None):
        return None
    found = text_template_around(args.project)
    if found is None:
        return None
    name, template = found
    print(f"(the text template of project {name})", file=sys.stderr)
    return template


def cmd_dataset_check(args) -> int:
    from ..core.datasets import check_dataset

    if args.file is None and not args.report:
        raise AitkError("which dataset?", "pass a file, or --report inside a project to check the project's data")
    if args.report:
        return _quality_report(args)
    report = check_dataset(args.file, text_template=_dataset_template(args), text_columns=args.columns,
                           split=args.split)
    print(report.format())
    return 0 if report.ok else 1


def _quality_report(args) -> int:
    """Validity first (training must read it), then the quality findings; exit 0 only if neither
    has an error. --save writes the report as JSON (.json) or Markdown (anything else)."""
    from ..core import atomic_file
    from ..core.data_quality import check_project_data, check_quality
    from ..core.datasets import check_dataset
    from ..core.project import find_project

    project = find_project(args.project, optional=args.project is None)
    template = _dataset_template(args) if args.file is not None or args.template is not None else None
    if project is not None:
        report = check_project_data(project, args.file, args.eval, template)
    elif args.file is None:
        raise AitkError("no dataset given and no project here", "pass TRAIN [--eval EVAL], or run inside a project")
    else:
        report = check_quality(args.file, eval=args.eval, template=template, split=args.split)
    valid = True
    for source in filter(None, (report.train, report.eval)):
        checked = check_dataset(source, text_template=template or (project.settings.data.text_template
                                                                  if project else None), text_columns=args.columns)
        if not checked.ok:
            valid = False
            print(checked.format())
    print(report.format())
    if args.save:
        text = report.to_json() if args.save.lower().endswith(".json") else report.to_markdown()
        print(f"report saved to {atomic_file.write_text(args.save, text)}")
    return 0 if report.ok and valid else 1


def _preview_tokens(args) -> int:
    """Each row as training sees it: the exact text (special tokens included) and its tokens."""
    from ..core.project import find_project
    from ..core.training_text import preview_tokens

    project = find_project(args.project)
    print(f"(the tokens of project {project.name}'s model {project.settings.model.id}; "
          f"cut at {project.settings.data.source_max_len})", file=sys.stderr)
    for i, p in enumerate(preview_tokens(project, args.file, n=args.n, split=args.split), 1):
        print(f"--- row {i}: {len(p.ids)} tokens")
        print(p.decoded)
        print("|" + "|".join(piece.replace("\n", "\\n") for piece in p.pieces) + "|")
    return 0


def cmd_dataset_preview(args) -> int:
    from ..core.datasets import preview

    if args.tokens:
        return _preview_tokens(args)
    template = _dataset_template(args)
    if template is None:
        raise AitkError("no text template to render with", "pass --template '...', or run inside a project")
    for i, text in enumerate(preview(args.file, template, n=args.n, split=args.split), 1):
        print(f"--- row {i}")
        print(text)
    return 0


def register(sub) -> None:
    ds = sub.add_parser("dataset", help="check and preview datasets").add_subparsers(dest="sub", required=True)
    for name, func, text in (("check", cmd_dataset_check, "validate a dataset (exit 0 only if usable)"),
                             ("preview", cmd_dataset_preview, "show rows rendered through the template")):
        p = ds.add_parser(name, help=text)
        p.add_argument("file", nargs="?" if name == "check" else None,
                       help="the dataset (check --report: default the project's train file)")
        p.add_argument("--template", help="text template, e.g. '<|user|>\\n{question}<|end|>...' (`\\n` is a "
                                          "new line, `\\t` a tab; default: the project's)")
        p.add_argument("--split", default="train")
        project_arg(p)
        if name == "check":
            p.add_argument("--columns", nargs="+", help="required columns (instead of a template)")
            p.add_argument("--report", action="store_true", help="data quality: duplicates, train/eval overlap, "
                           "too few rows, short answers, lengths, label balance")
            p.add_argument("--eval", metavar="EVAL", help="the eval file to check against train (--report)")
            p.add_argument("--save", metavar="FILE", help="write the report: FILE.json as JSON, else Markdown")
        else:
            p.add_argument("-n", type=int, default=5)
            p.add_argument("--tokens", action="store_true",
                           help="the exact tokens training sees (the project's model tokenizer and special tokens)")
        p.set_defaults(func=func)

