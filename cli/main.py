"""`aitk`: the engine from a shell, for scripts and CI.

Every failure a user can fix is one `error: ...` line (plus a `hint:` line) and exit code 2;
a job that ran and failed is exit code 1. Never a traceback, unless AITK_DEBUG=1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from ..core.errors import AitkError


def _project_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", "-P", metavar="DIR", help="project folder (default: the one around the current dir)")


# -- model / project / dataset ------------------------------------------------------------------
def cmd_build_tiny(args) -> int:
    from ..core import tiny

    t0 = time.time()
    spec = tiny.TEST if args.small else tiny.DEMO
    path = tiny.ensure_tiny(spec, Path(args.dest) if args.dest else None, rebuild=args.rebuild)
    print(f"tiny model ready at {path} ({time.time() - t0:.1f} s)")
    return 0


def cmd_project_new(args) -> int:
    from ..core.devices import detect
    from ..core.project import create_project
    from ..core.defaults import default_settings
    from ..core.settings import apply_overrides

    settings = None
    if args.set:
        settings = apply_overrides(default_settings(Path(args.dir).name, args.model, detect().best), args.set)
    project = create_project(args.dir, settings, model_id=args.model, dataset=args.dataset,
                             eval_dataset=args.eval_dataset)
    print(f"created project {project.name} at {project.root}")
    print(f"next: cd {project.root} && aitk finetune")
    return 0


def cmd_project_set(args) -> int:
    from ..core.project import find_project, regenerate
    from ..core.settings import apply_overrides, changes

    project = find_project(args.project)
    before = project.settings
    project.settings = apply_overrides(before, args.assignments)
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
    from ..core.project import OLIVE_CONFIG, find_project
    from ..core.project_index import exports

    project = find_project(args.project)
    made = exports(project.root)
    if args.json:
        print(json.dumps({"root": str(project.root), "settings": project.settings.model_dump(mode="json"),
                          "exports": [{"precision": e.precision, "path": str(e.path), "state": e.state.state,
                                       "reason": e.state.reason} for e in made]}, indent=2))
        return 0
    s = project.settings
    print(f"{project.name}  ({project.root})")
    print(f"  model     {s.model.id} ({s.model.path})")
    print(f"  data      {s.data.dataset}  eval: {s.data.eval_dataset or '-'}")
    f = s.finetune
    print(f"  method    {f.method} r={f.lora_r} alpha={f.lora_alpha} lr={f.learning_rate} steps={f.max_steps} "
          f"batch={f.per_device_train_batch_size} dtype={f.compute_dtype}")
    print(f"  target    {s.target.where} / {s.target.device} (here: {project.device()})")
    print(f"  olive     {OLIVE_CONFIG}")
    from ..core.publish import current_adapter

    print(f"  adapter   {'yes' if current_adapter(project) else 'not trained yet'}")
    if not made:
        print("  onnx      not exported yet")
    for i, e in enumerate(made):
        print(f"  {'onnx' if i == 0 else '':9} {e.precision} {e.summary} ({e.path})")
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


def cmd_dataset_preview(args) -> int:
    from ..core.datasets import preview

    template = _dataset_template(args)
    if template is None:
        raise AitkError("no text template to render with", "pass --template '...', or run inside a project")
    for i, text in enumerate(preview(args.file, template, n=args.n, split=args.split), 1):
        print(f"--- row {i}")
        print(text)
    return 0


# -- chat ---------------------------------------------------------------------------------------
def _open_engine(args):
    """(project or None for an endpoint, engine, label)."""
    from ..core.chat import GenaiChatEngine, RemoteChatEngine
    from ..core.project import find_project

    if args.endpoint:
        engine = RemoteChatEngine(args.endpoint, args.model, args.api_key)
        return None, engine, f"{engine.model} at {engine.base_url}"
    project = find_project(args.project)
    from ..core.publish import current_export

    onnx = current_export(project, args.precision)
    if onnx is None:
        raise AitkError(f"{project.name} has no exported {args.precision or project.settings.inference.precision} "
                        "model yet", "run `aitk export` first")
    _warn_if_stale(project, onnx.name)
    return project, GenaiChatEngine(onnx), project.settings.model.id


def _warn_if_stale(project, precision: str) -> None:
    from ..core.project_index import stale_warning

    warning = stale_warning(project.root, precision)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def cmd_chat(args) -> int:
    from ..core import generation

    project, engine, label = _open_engine(args)
    options = generation.resolve(project.settings.inference if project else None, generation.load_user_values(), {
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
        "top_k": args.top_k, "system_prompt": args.system})
    if args.endpoint:
        adapter = engine.model
    else:
        adapter = "base" if args.base else (engine.adapters[0] if engine.adapters else "base")
    if args.prompt is not None:
        stream = engine.stream([{"role": "user", "content": args.prompt}], options, adapter=adapter)
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        print()
        return 0
    history: list[dict] = []
    context = f", context {engine.context_length} tokens" if getattr(engine, "context_length", None) else ""
    print(f"chatting with {label} ({adapter}{context}); empty line or ctrl-d quits, ctrl-c stops a reply")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            break
        if not text:
            break
        history.append({"role": "user", "content": text})
        stop = threading.Event()
        sys.stdout.write("model> ")
        try:
            stream = engine.stream(history, options, adapter=adapter, stop=stop)
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stop.set()
            sys.stdout.write(" [stopped]")
        except AitkError as e:  # this message failed; the conversation goes on without it
            history.pop()
            print(f"\nerror: {e}", file=sys.stderr)
            continue
        dropped = f", oldest {stream.dropped} turns left out to fit the context" if stream.dropped else ""
        print(f"   ({stream.tokens_per_second:.0f} tok/s{dropped})")
        history.append({"role": "assistant", "content": "".join(stream.text).strip()})
    return 0


def cmd_serve(args) -> int:
    from ..core.project import find_project
    from ..core.server import serve

    project = find_project(args.project, optional=True)  # outside any project: the tiny model
    if project is not None:
        _warn_if_stale(project, args.precision or project.settings.inference.precision)
    serve(str(project.root) if project else None, args.host, args.port,
          args.api_key or os.environ.get("AITK_API_KEY"), args.precision,
          args.adapter if args.adapter is not None else os.environ.get("AITK_ADAPTER"))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep, questions=args.questions)


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aitk", description="Fine-tune, export and chat with small language models.")
    ap.add_argument("--version", action="version", version="aitk 0.1.0")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="run the whole pipeline on the embedded tiny model and score it")
    p.add_argument("--keep", action="store_true", help="keep the demo project (printed at the end)")
    p.add_argument("--questions", type=int, default=16, help="held training questions to ask (default 16)")
    p.set_defaults(func=cmd_demo)

    model = sub.add_parser("model", help="models on this machine").add_subparsers(dest="sub", required=True)
    p = model.add_parser("build-tiny", help="build the embedded tiny Phi-3 model (offline, deterministic)")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--small", action="store_true", help="the smaller variant the test suite uses")
    p.add_argument("--dest", help="folder to build into (default: the user data dir)")
    p.set_defaults(func=cmd_build_tiny)

    project = sub.add_parser("project", help="create and inspect projects").add_subparsers(dest="sub", required=True)
    from .aitk_project_cmds import register_project_commands; register_project_commands(project)  # noqa: E702
    p = project.add_parser("new", help="create a project folder")
    p.add_argument("dir")
    p.add_argument("--model", default="tiny", help="catalog id of the base model (default: tiny)")
    p.add_argument("--dataset", help="training data file or HF dataset (default: the bundled one for tiny)")
    p.add_argument("--eval-dataset", help="evaluation data file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="a setting other than its default, e.g. finetune.lora_r=32 (repeatable; "
                        "`aitk project keys` lists them)")
    p.set_defaults(func=cmd_project_new)
    p = project.add_parser("set", help="change settings (KEY=VALUE ...) and rewrite the generated files")
    _project_arg(p)
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE", help="e.g. finetune.max_steps=200")
    p.set_defaults(func=cmd_project_set)
    p = project.add_parser("keys", help="every setting: its default, type, bounds and help")
    p.set_defaults(func=cmd_project_keys)
    p = project.add_parser("show", help="show a project's settings and state")
    _project_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_project_show)
    p = project.add_parser("list", help="every project aitk knows (the projects folder, those created or "
                                        "opened elsewhere, those of jobs) and its exports")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_project_list)
    p = project.add_parser("regen", help="rewrite generated files after editing aitk.toml")
    _project_arg(p)
    p.set_defaults(func=cmd_project_regen)

    ds = sub.add_parser("dataset", help="check and preview datasets").add_subparsers(dest="sub", required=True)
    for name, func, text in (("check", cmd_dataset_check, "validate a dataset (exit 0 only if usable)"),
                             ("preview", cmd_dataset_preview, "show rows rendered through the template")):
        p = ds.add_parser(name, help=text)
        p.add_argument("file")
        p.add_argument("--template", help="text template, e.g. '<|user|>\\n{question}<|end|>...' (`\\n` is a "
                                          "new line, `\\t` a tab; default: the project's)")
        p.add_argument("--split", default="train")
        _project_arg(p)
        if name == "check":
            p.add_argument("--columns", nargs="+", help="required columns (instead of a template)")
        else:
            p.add_argument("-n", type=int, default=5)
        p.set_defaults(func=func)

    from .jobs_cmds import register as register_jobs

    register_jobs(sub)  # finetune, export, evaluate and jobs ...

    p = sub.add_parser("chat", help="chat with the exported model (tuned by default)")
    _project_arg(p)
    p.add_argument("--prompt", "-p", help="one-shot: answer this and exit")
    p.add_argument("--base", action="store_true", help="the base model, without the adapter")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--precision", choices=["fp32", "int4", "fp16"])
    layers = "default: config.toml [chat], else the project's [inference]"
    p.add_argument("--max-new-tokens", type=int, help=f"longest answer ({layers}; capped by the context)")
    p.add_argument("--temperature", type=float, help=layers)
    p.add_argument("--top-p", type=float, help=layers)
    p.add_argument("--top-k", type=int, help=layers)
    p.add_argument("--endpoint", help="chat with an OpenAI-compatible endpoint instead (e.g. http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="API key for --endpoint (default: $AITK_API_KEY)")
    p.add_argument("--model", help="model name at --endpoint, checked against its /v1/models (default: the "
                                   "first it lists)")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="OpenAI-compatible server on 127.0.0.1:8000 for the project around the "
                                   "current dir (outside one: the embedded tiny model)")
    _project_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this bearer key (default: $AITK_API_KEY; none if unset)")
    p.add_argument("--precision", choices=["fp32", "int4", "fp16"])
    p.add_argument("--adapter", help="adapter the bare model name answers with, e.g. tuned (default: "
                                     "$AITK_ADAPTER, which `aitk azure deploy --adapter` sets; else base)")
    p.set_defaults(func=cmd_serve)

    from .catalog_cmds import register as register_catalog

    register_catalog(sub)  # catalog, doctor, and model pull|ls|rm|add into the `model` group above
    from .azure_cmds import register as register_azure

    register_azure(sub)
    return ap


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("CI", "1")  # Olive telemetry hangs at exit offline; see shared notes
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except AitkError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `aitk ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except Exception as e:  # noqa: BLE001
        if os.environ.get("AITK_DEBUG"):
            raise
        print(f"error: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        print("hint: this is a bug in aitk; rerun with AITK_DEBUG=1 for the traceback and report it",
              file=sys.stderr)
        code = 3
    sys.exit(code)


if __name__ == "__main__":
    main()
