"""`aitk serve`: the OpenAI-compatible server for a project (or the embedded tiny model)."""

from __future__ import annotations

import os

from .common import project_arg, warn_if_stale


def cmd_serve(args) -> int:
    from ..core.project import find_project
    from ..core.server import serve

    project = find_project(args.project, optional=True)  # outside any project: the tiny model
    if project is not None:
        warn_if_stale(project, args.precision or project.settings.inference.precision)
    serve(str(project.root) if project else None, args.host, args.port,
          args.api_key or os.environ.get("AITK_API_KEY"), args.precision,
          args.adapter if args.adapter is not None else os.environ.get("AITK_ADAPTER"))
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible server on 127.0.0.1:8000 for the project around the "
                                   "current dir (outside one: the embedded tiny model)")
    project_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this bearer key (default: $AITK_API_KEY; none if unset)")
    p.add_argument("--precision", choices=["fp32", "int4", "fp16"])
    p.add_argument("--adapter", help="adapter the bare model name answers with, e.g. tuned (default: "
                                     "$AITK_ADAPTER, which `aitk azure deploy --adapter` sets; else base)")
    p.set_defaults(func=cmd_serve)

