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

    report = check_dataset(args.file, text_template=_dataset_template(args), text_columns=args.columns,
                           split=args.split)
    print(report.format())
    return 0 if report.ok else 1


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
        p.add_argument("file")
        p.add_argument("--template", help="text template, e.g. '<|user|>\\n{question}<|end|>...' (`\\n` is a "
                                          "new line, `\\t` a tab; default: the project's)")
        p.add_argument("--split", default="train")
        project_arg(p)
        if name == "check":
            p.add_argument("--columns", nargs="+", help="required columns (instead of a template)")
        else:
            p.add_argument("-n", type=int, default=5)
            p.add_argument("--tokens", action="store_true",
                           help="the exact tokens training sees (the project's model tokenizer and special tokens)")
        p.set_defaults(func=func)

