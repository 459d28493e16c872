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
    from ..core.settings import apply_overrides, default_settings

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
    from ..core.settings import SECTIONS, ProjectSettings

    for section in SECTIONS:
        fields = ProjectSettings.model_fields[section].annotation.model_fields
        print(f"[{section}]")
        for name, field in fields.items():
            default = field.get_default(call_default_factory=True)
            bounds = " ".join(f"{attr} {getattr(m, attr)}" for m in field.metadata
                              for attr in ("ge", "gt", "le", "lt") if hasattr(m, attr))
            kind = str(field.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
            print(f"  {section}.{name} = {default!r}   ({kind}{', ' + bounds if bounds else ''})")
            if field.description:
                print(f"      {field.description}")
    return 0


def cmd_project_show(args) -> int:
    from ..core.project import OLIVE_CONFIG, find_project

    project = find_project(args.project)
    if args.json:
        print(json.dumps({"root": str(project.root), "settings": project.settings.model_dump(mode="json")}, indent=2))
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
    print(f"  adapter   {'yes' if project.adapter_dir.is_dir() else 'not trained yet'}")
    exported = project.onnx_dir()
    print(f"  onnx      {'yes (' + str(exported) + ')' if exported.is_dir() else 'not exported yet'}")
    return 0


def cmd_project_regen(args) -> int:
    from ..core.project import find_project, regenerate

    project = find_project(args.project)
    regenerate(project)
    print(f"regenerated {project.root}")
    return 0


def cmd_dataset_check(args) -> int:
    from ..core.datasets import check_dataset

    report = check_dataset(args.file, text_template=args.template, text_columns=args.columns, split=args.split)
    print(report.format())
    return 0 if report.ok else 1


def cmd_dataset_preview(args) -> int:
    from ..core.datasets import preview

    for i, text in enumerate(preview(args.file, args.template, n=args.n, split=args.split), 1):
        print(f"--- row {i}")
        print(text)
    return 0


# -- jobs ---------------------------------------------------------------------------------------
def _provider(job_id: str | None = None):
    """The back end that owns a job (local unless its record says otherwise)."""
    from ..providers.local import LocalProvider

    local = LocalProvider()
    if job_id is not None and local.store.get(job_id).provider == "azure":
        from ..providers.azure.provider import AzureProvider

        return AzureProvider(local.store)
    return local


def follow_job(job_id: str, *, quiet_log: bool = False, out=None) -> int:
    """Print a job's log (and progress) until it ends, local or remote; return 0 if it succeeded."""
    from ..core import follow, metrics
    from ..core.jobs import SUCCEEDED

    out = out or sys.stdout
    provider = _provider(job_id)
    store = provider.store
    job_id = store.get(job_id).id
    last_status = None

    def done() -> bool:
        nonlocal last_status
        rec = provider.status(job_id)
        if quiet_log and rec.status != last_status and last_status is not None:
            print(f"  [{rec.status}]", file=out, flush=True)
        last_status = rec.status
        return rec.is_final

    for lines in follow.follow(store.log_path(job_id), 0, done=done):
        for line in lines:
            rec = metrics.parse_line(line)
            if rec is not None:
                if "loss" in rec or "eval_loss" in rec:
                    parts = [f"step {rec['step']}/{rec.get('max_steps', '?')}"]
                    for k, label in (("loss", "loss"), ("eval_loss", "eval loss"), ("learning_rate", "lr")):
                        if k in rec:
                            parts.append(f"{label} {rec[k]:.4g}")
                    print("  " + "  ".join(parts), file=out, flush=True)
            elif line and (not quiet_log or line.startswith("[aitk] error")):
                print(line, file=out, flush=True)
    rec = provider.status(job_id)
    took = f" in {rec.finished - rec.started:.1f} s" if rec.finished and rec.started else ""
    print(f"job {rec.id} ({rec.kind}) {rec.status}{took}" + (f": {rec.error}" if rec.error else ""), file=out)
    return 0 if rec.status == SUCCEEDED else 1


def _submit_and_follow(kind: str, args, params: dict | None = None) -> int:
    from ..core.project import find_project

    project = find_project(args.project)
    rec = _provider().submit(kind, project.root, params=params, device=getattr(args, "device", None))
    print(f"job {rec.id} ({kind}) {rec.status} — log: {_provider().store.log_path(rec.id)}")
    if args.detach:
        return 0
    return follow_job(rec.id, quiet_log=not args.verbose)


def cmd_finetune(args) -> int:
    return _submit_and_follow("finetune", args)


def cmd_export(args) -> int:
    return _submit_and_follow("export", args, {"precision": args.precision, "base_only": args.base_only})


def cmd_evaluate(args) -> int:
    return _submit_and_follow("evaluate", args)


def _rec_line(r) -> str:
    age = time.strftime("%m-%d %H:%M", time.localtime(r.created))
    name = Path(r.project).name if r.project else "-"
    return f"{r.id:24} {r.kind:9} {r.status:11} {age}  {name}" + (f"  {r.error}" if r.error else "")


def cmd_jobs_list(args) -> int:
    from ..core.scheduler import reconcile

    provider = _provider()
    reconcile(provider.store)
    recs = provider.store.list(limit=args.limit)
    if args.json:
        print(json.dumps([r.to_dict() for r in recs], indent=2))
    elif not recs:
        print("no jobs yet (start one with `aitk finetune`)")
    else:
        print(f"{'ID':24} {'KIND':9} {'STATUS':11} {'CREATED':12} PROJECT")
        for r in recs:
            print(_rec_line(r))
    return 0


def cmd_jobs_show(args) -> int:
    provider = _provider(args.id)
    rec = provider.status(args.id)
    data = rec.to_dict()
    data["metrics"] = provider.store.metrics(rec.id)
    data["outputs"] = {k: str(v) for k, v in provider.outputs(rec.id).items()}
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(_rec_line(rec))
    losses = [m for m in data["metrics"] if "loss" in m]
    if losses:
        print(f"  loss {losses[0]['loss']:.4g} -> {losses[-1]['loss']:.4g} over {losses[-1]['step']} steps")
    for k, v in data["outputs"].items():
        print(f"  {k:12} {v}")
    return 0


def cmd_jobs_logs(args) -> int:
    provider = _provider()
    rec = provider.store.get(args.id)
    if args.follow:
        follow_job(rec.id)
        return 0
    chunk = provider.logs(rec.id)
    print("\n".join(chunk.lines))
    return 0


def cmd_jobs_cancel(args) -> int:
    rec = _provider(args.id).cancel(args.id)
    print(f"job {rec.id} {rec.status}")
    return 0


def cmd_jobs_retry(args) -> int:
    provider = _provider(args.id)
    if not hasattr(provider, "retry"):
        raise AitkError("remote jobs are retried by starting a new run", "use `aitk azure run`")
    rec = provider.retry(args.id)
    print(f"job {rec.id} ({rec.kind}) {rec.status}, retrying {args.id}")
    return 0 if args.detach else follow_job(rec.id, quiet_log=True)


def cmd_jobs_resume(args) -> int:
    provider = _provider(args.id)
    if not hasattr(provider, "resume"):
        raise AitkError("remote jobs cannot resume from a local checkpoint", "start a new `aitk azure run`")
    rec = provider.resume(args.id)
    print(f"job {rec.id} resumed ({rec.status})")
    return 0 if args.detach else follow_job(rec.id, quiet_log=True)


def cmd_jobs_rm(args) -> int:
    provider = _provider()
    rec = provider.status(args.id)
    if not rec.is_final:
        raise AitkError(f"job {rec.id} is {rec.status}", "cancel it first")
    if not args.yes:
        if not sys.stdin.isatty():
            raise AitkError("refusing to delete without confirmation", "pass --yes")
        if input(f"delete job {rec.id} and its files? [y/N] ").strip().lower() not in ("y", "yes"):
            print("kept")
            return 0
    provider.store.delete(rec.id)
    print(f"deleted job {rec.id}")
    return 0


def cmd_jobs_wait(args) -> int:
    provider = _provider(args.id)
    rec = provider.store.get(args.id)
    deadline = time.time() + args.timeout if args.timeout else None
    while not (rec := provider.status(rec.id)).is_final:
        if deadline and time.time() > deadline:
            print(f"job {rec.id} still {rec.status} after {args.timeout} s")
            return 3
        time.sleep(0.3)
    print(f"job {rec.id} {rec.status}")
    return 0 if rec.status == "succeeded" else 1


# -- chat ---------------------------------------------------------------------------------------
def _open_engine(args):
    from ..core.chat import GenaiChatEngine, RemoteChatEngine
    from ..core.project import find_project
    from ..core.settings import InferenceSettings

    if args.endpoint:
        from types import SimpleNamespace

        engine = RemoteChatEngine(args.endpoint, args.api_key or os.environ.get("AITK_API_KEY"))
        fake = SimpleNamespace(settings=SimpleNamespace(inference=InferenceSettings(),
                                                        model=SimpleNamespace(id=args.endpoint)))
        return fake, engine
    project = find_project(args.project)
    onnx = project.onnx_dir(args.precision)
    if not (onnx / "genai_config.json").is_file():
        raise AitkError(f"{project.name} has no exported {args.precision or project.settings.inference.precision} "
                        "model yet", "run `aitk export` first")
    return project, GenaiChatEngine(onnx)


def cmd_chat(args) -> int:
    from ..core.chat import GenerationOptions

    project, engine = _open_engine(args)
    inf = project.settings.inference
    options = GenerationOptions(
        max_new_tokens=args.max_new_tokens or inf.max_new_tokens,
        temperature=inf.temperature if args.temperature is None else args.temperature,
        top_p=args.top_p or inf.top_p, top_k=inf.top_k if args.top_k is None else args.top_k,
        system_prompt=args.system)
    if args.endpoint:
        adapter = args.model or engine.adapters[0]
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
    print(f"chatting with {project.settings.model.id} ({adapter}); empty line or ctrl-d quits, ctrl-c stops a reply")
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
        stream = engine.stream(history, options, adapter=adapter, stop=stop)
        sys.stdout.write("model> ")
        try:
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stop.set()
            sys.stdout.write(" [stopped]")
        print(f"   ({stream.tokens_per_second:.0f} tok/s)")
        history.append({"role": "assistant", "content": "".join(stream.text).strip()})
    return 0


def cmd_serve(args) -> int:
    from ..core.server import serve

    serve(args.project, args.host, args.port, args.api_key or os.environ.get("AITK_API_KEY"), args.precision,
          args.adapter if args.adapter is not None else os.environ.get("AITK_ADAPTER"))
    return 0


def cmd_demo(args) -> int:
    from ..core.demo import run_demo

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
    from .model_shapes import register as register_shapes

    register_shapes(sub)  # model build-shape, rehearse

    project = sub.add_parser("project", help="create and inspect projects").add_subparsers(dest="sub", required=True)
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
    p = project.add_parser("regen", help="rewrite generated files after editing aitk.toml")
    _project_arg(p)
    p.set_defaults(func=cmd_project_regen)

    ds = sub.add_parser("dataset", help="check and preview datasets").add_subparsers(dest="sub", required=True)
    for name, func, text in (("check", cmd_dataset_check, "validate a dataset (exit 0 only if usable)"),
                             ("preview", cmd_dataset_preview, "show rows rendered through the template")):
        p = ds.add_parser(name, help=text)
        p.add_argument("file")
        p.add_argument("--template", help="text template, e.g. '<|user|>\\n{question}<|end|>...'")
        p.add_argument("--split", default="train")
        if name == "check":
            p.add_argument("--columns", nargs="+", help="required columns (instead of a template)")
        else:
            p.add_argument("-n", type=int, default=5)
        p.set_defaults(func=func)

    for name, func, text in (("finetune", cmd_finetune, "fine-tune the project's model (a job)"),
                             ("export", cmd_export, "export to ONNX for onnxruntime-genai (a job)"),
                             ("evaluate", cmd_evaluate, "loss/perplexity of base vs tuned on the eval split")):
        p = sub.add_parser(name, help=text)
        _project_arg(p)
        p.add_argument("--detach", "-d", action="store_true", help="submit and return; follow with `aitk jobs logs -f`")
        p.add_argument("--verbose", "-v", action="store_true", help="print the whole job log, not just progress")
        p.add_argument("--device", choices=["cpu", "cuda", "dml"], help="override the project's device")
        if name == "export":
            p.add_argument("--precision", choices=["fp32", "int4", "fp16"])
            p.add_argument("--base-only", action="store_true", help="export without the adapter")
        p.set_defaults(func=func)

    p = sub.add_parser("chat", help="chat with the exported model (tuned by default)")
    _project_arg(p)
    p.add_argument("--prompt", "-p", help="one-shot: answer this and exit")
    p.add_argument("--base", action="store_true", help="the base model, without the adapter")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--precision", choices=["fp32", "int4", "fp16"])
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--endpoint", help="chat with an OpenAI-compatible endpoint instead (e.g. http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="API key for --endpoint (default: $AITK_API_KEY)")
    p.add_argument("--model", help="model name at --endpoint (default: the first it lists)")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="OpenAI-compatible server (default: the tiny model on 127.0.0.1:8000)")
    _project_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this bearer key (default: $AITK_API_KEY; none if unset)")
    p.add_argument("--precision", choices=["fp32", "int4", "fp16"])
    p.add_argument("--adapter", help="adapter the bare model name answers with, e.g. tuned (default: "
                                     "$AITK_ADAPTER, which `aitk azure deploy --adapter` sets; else base)")
    p.set_defaults(func=cmd_serve)

    jobs = sub.add_parser("jobs", help="the job queue").add_subparsers(dest="sub", required=True)
    p = jobs.add_parser("list", help="recent jobs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_jobs_list)
    for name, func, text in (("show", cmd_jobs_show, "one job, its metrics and outputs"),
                             ("logs", cmd_jobs_logs, "a job's log"),
                             ("cancel", cmd_jobs_cancel, "stop a job (its log and partial outputs stay)"),
                             ("retry", cmd_jobs_retry, "run a job again with the same inputs"),
                             ("resume", cmd_jobs_resume, "continue a fine-tune from its last checkpoint"),
                             ("rm", cmd_jobs_rm, "delete a finished job and its files"),
                             ("wait", cmd_jobs_wait, "wait until a job ends; exit 0 if it succeeded")):
        p = jobs.add_parser(name, help=text)
        p.add_argument("id", help="job id (or a unique part of it)")
        if name == "show":
            p.add_argument("--json", action="store_true")
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true")
        if name in ("retry", "resume"):
            p.add_argument("--detach", "-d", action="store_true")
        if name == "rm":
            p.add_argument("--yes", "-y", action="store_true")
        if name == "wait":
            p.add_argument("--timeout", type=float)
        p.set_defaults(func=func)

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
