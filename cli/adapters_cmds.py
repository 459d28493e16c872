"""`aitk adapters`: a project's fine-tuned adapters by name (core/adapters.py decides everything)."""

from __future__ import annotations

import sys
import time

from .common import project_arg, table


def _project(args):
    from ..core.project import find_project

    return find_project(args.project)


def cmd_list(args) -> int:
    from ..core import adapters

    project = _project(args)
    items = adapters.list_adapters(project.root)
    if not items:
        print(f"{project.name} has no adapter yet: `aitk finetune` trains one")
        return 0
    rows = [("", "NAME", "WRITTEN", "PATH")]
    for a in items:
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.written)) if a.written else "?"
        rows.append(("*" if a.active else "", a.name, written, str(a.path.relative_to(project.root))
                     + ("  (olive run's output: `aitk adapters rename olive NAME` files it)" if a.olive else "")))
    table(rows, sys.stdout)
    return 0


def cmd_use(args) -> int:
    from ..core import adapters
    from ..core.project_index import stale_warning

    project = _project(args)
    adapter = adapters.set_active(project.root, args.name)
    print(f"{adapter.name} is now the active adapter of {project.name} (chat, serve, export, evaluate)")
    warning = stale_warning(project.root, project.settings.inference.precision)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_rm(args) -> int:
    from ..core import adapters
    from ..core.errors import AitkError
    from .common import confirm

    project = _project(args)
    if (why := adapters.refusal("rm", project.root, args.name)) is not None:
        raise why
    if not confirm(f"Delete adapter {args.name} of {project.name}?", assume_yes=args.yes,
                   refused=f"not deleting adapter {args.name} without confirmation"):
        raise AitkError("not deleted", "pass --yes to delete it")
    adapter = adapters.remove(project.root, args.name)
    print(f"removed adapter {adapter.name}")
    return 0


def cmd_rename(args) -> int:
    from ..core import adapters

    project = _project(args)
    adapter = adapters.rename(project.root, args.old, args.new)
    print(f"renamed {args.old} to {adapter.name} ({adapter.path.relative_to(project.root)})"
          + (", still the active adapter" if adapter.active else ""))
    return 0


def _short(text: str, width: int) -> str:
    from rich.cells import cell_len, set_cell_size

    text = " ".join(text.split()) or "(nothing)"
    return set_cell_size(text, width) if cell_len(text) <= width else set_cell_size(text, width - 1) + "…"


def cmd_compare(args) -> int:
    from ..core.compare import compare

    project = _project(args)
    print(f"loading {project.settings.model.id} with adapters {args.a} and {args.b}…", file=sys.stderr, flush=True)
    result = compare(project, args.a, args.b, limit=args.limit, max_new_tokens=args.max_new_tokens,
                     device=project.device())
    a, b = result.names
    wide = max(24, min(40, max((len(r["prompt"]) for r in result.rows), default=0)))
    print(f"{'prompt':{wide}}  {'expected':16}  {_short(a, 18):18}  {_short(b, 18)}".rstrip())
    for r in result.rows:
        print(f"{_short(r['prompt'], wide)}  {_short(r['expected'], 16)}  {_short(r['answers'][a], 18)}  "
              f"{_short(r['answers'][b], 18)}".rstrip())
    n = len(result.rows)
    print(f"\n{'':{wide}}  {'':16}  {a[:18]:18}  {b[:18]}")
    print(f"{'exact answers':{wide}}  {'':16}  {f'{result.exact(a)}/{n}':18}  {result.exact(b)}/{n}")
    print(f"{f'eval loss ({result.eval_rows} rows)':{wide}}  {'':16}  {result.loss[a]:<18.4f}  {result.loss[b]:.4f}")
    print(f"{'eval perplexity':{wide}}  {'':16}  {result.perplexity(a):<18.2f}  {result.perplexity(b):.2f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("adapters", help="the project's fine-tuned adapters: list, use, rm, rename, compare")
    s = p.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="every adapter, * marks the active one")
    project_arg(ls)
    ls.set_defaults(func=cmd_list)
    use = s.add_parser("use", help="make NAME the active adapter (what chat, serve, export and evaluate use)")
    use.add_argument("name")
    project_arg(use)
    use.set_defaults(func=cmd_use)
    rm = s.add_parser("rm", help="delete adapter NAME (not the active one, nor while a job reads adapters)")
    rm.add_argument("name")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask")
    project_arg(rm)
    rm.set_defaults(func=cmd_rm)
    mv = s.add_parser("rename", help="rename adapter OLD to NEW (`olive`: file olive run's output under NEW)")
    mv.add_argument("old")
    mv.add_argument("new")
    project_arg(mv)
    mv.set_defaults(func=cmd_rename)
    cmp = s.add_parser("compare", help="the eval prompts through adapters A and B (greedy): answers and eval "
                                       "loss side by side")
    cmp.add_argument("a")
    cmp.add_argument("b")
    cmp.add_argument("--limit", type=int, default=16, help="eval prompts to ask (default 16)")
    cmp.add_argument("--max-new-tokens", type=int, help="longest answer (default: the project's)")
    project_arg(cmp)
    cmp.set_defaults(func=cmd_compare)
