"""`aitk push`: the adapter, the ONNX export and a model card to a Hugging Face repo."""

from __future__ import annotations

from .common import project_arg


def cmd_push(args) -> int:
    from ..core.project import find_project
    from ..core.sharing import push

    project = find_project(args.project)
    print(f"pushing {project.name} to {args.repo}" + (" (private)" if args.private else "") + " ...", flush=True)
    result = push(project, args.repo, private=args.private)
    for name in result.files:
        print(f"  {name}")
    print(f"pushed {len(result.files)} files to {result.url}" + (f" (commit {result.commit[:12]})"
                                                                 if result.commit else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("push", help="upload the adapter, ONNX export and a model card to a Hugging Face repo")
    project_arg(p)
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the Hub repo (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.set_defaults(func=cmd_push)
