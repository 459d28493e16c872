"""`aitk finetune|export|evaluate` and `aitk jobs ...`: every call goes through the jobs facade
(`aitk.providers.jobs`), so a job is steered by its own back end, local or Azure, exactly as in
the app. `aitk azure stop|logs|status` are these same commands (see azure_cmds)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import confirm, project_arg


def _err(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def facade():
    from ..providers.jobs import Jobs

    return Jobs(notify=_err)


def follow_job(job_id: str, *, quiet_log: bool = False, out=None) -> int:
    """Print a job's log (and progress) until it ends, local or remote; return 0 if it succeeded."""
    from ..core import follow, metrics
    from ..core.jobs import SUCCEEDED

    out = out or sys.stdout
    jobs = facade()
    job_id = jobs.store.get(job_id).id
    last_status = None

    def done() -> bool:
        nonlocal last_status
        rec = jobs.status(job_id)
        if quiet_log and rec.status != last_status and last_status is not None:
            print(f"  [{rec.status}]", file=out, flush=True)
        last_status = rec.status
        return rec.is_final

    for lines in follow.follow(jobs.store.log_path(job_id), 0, done=done):
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
    rec = jobs.status(job_id)
    took = f" in {rec.finished - rec.started:.1f} s" if rec.finished and rec.started else ""
    print(f"job {rec.id} ({rec.kind}) {rec.status}{took}" + (f": {rec.error}" if rec.error else ""), file=out)
    return 0 if rec.status == SUCCEEDED else 1


def submit_and_follow(kind: str, args, params: dict | None = None, on: str | None = None) -> int:
    from ..core.project import find_project

    project = find_project(args.project)
    jobs = facade()
    rec = jobs.submit(kind, project.root, params=params, device=getattr(args, "device", None), on=on)
    where = f" on {rec.provider}" if rec.provider != "local" else ""
    print(f"job {rec.id} ({kind}{where}) {rec.status} — log: {jobs.store.log_path(rec.id)}")
    code = detach_or_follow(rec.id, args.detach, quiet_log=not args.verbose)
    if code == 0 and not args.detach:
        code = _after(kind, jobs.status(rec.id), project, args)
    return code


def detach_or_follow(job_id: str, detach: bool, quiet_log: bool = True) -> int:
    """Say how to reach a detached job; else follow it. Ctrl+C stops only the following (the job is
    a process, or an Azure run, of its own), and says so."""
    if detach:
        print(f"it runs on its own: follow it with `aitk jobs logs {job_id} -f`, wait with `aitk jobs wait {job_id}`, "
              f"stop it with `aitk jobs cancel {job_id}`")
        return 0
    try:
        return follow_job(job_id, quiet_log=quiet_log)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} keeps running. Follow it again: `aitk jobs logs {job_id} -f`; "
              f"cancel it: `aitk jobs cancel {job_id}`", file=sys.stderr)
        return 130


def _after(kind: str, rec, project, args) -> int:
    """What a finished job leaves to do (and, for an evaluation, what it found); 1 when an
    evaluation's parity check failed (so scripts and CI can stop on it). After an export a failed
    check is a warning: the export itself is whole."""
    where = f" -P {project.root}"
    job_dir = facade().store.job_dir(rec.id)
    if kind == "finetune":
        print(f"next: `aitk export{where}` (ONNX for chat), then `aitk chat{where}`")
    elif kind == "export":
        precision = getattr(args, "precision", None)
        print_parity(job_dir)
        print(f"next: `aitk chat{where}" + (f" --precision {precision}" if precision else "") + "`")
    elif kind == "evaluate":
        if not getattr(args, "parity", False):
            print_evaluation(job_dir / "result.json")
        reused = bool((rec.result or {}).get("parity"))  # a check made after the export, not repeated
        return 1 if print_parity(job_dir, project.root if reused else None, (rec.params or {}).get("precision")
                                 or project.settings.inference.precision) else 0
    return 0


def print_parity(job_dir: Path, root: Path | None = None, precision: str | None = None, out=None) -> bool:
    """The parity record the job wrote (else the project's, which an evaluation may have reused);
    True when it failed."""
    from ..core import parity

    out = out or sys.stdout
    record = parity.read_record(job_dir / parity.JOB_RECORD)
    if record is None and root is not None and precision:
        record = parity.read_record(parity.record_path(root, precision))
    if record is None:
        return False
    print("", file=out)
    for line in parity.summary_lines(record):
        print(line, file=out)
    if not record["passed"]:
        print(f"warning: parity failed: the exported model does not answer like the trained one (record: "
              f"{parity.record_path(record['root'], record['precision'])})", file=out)
    return not record["passed"]


def print_evaluation(result_path: Path, out=None) -> None:
    """Base vs tuned loss and perplexity on the eval data, as a table."""
    out = out or sys.stdout
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        print(f"(no evaluation result at {result_path})", file=out)
        return
    base, tuned = result.get("base"), result.get("tuned")
    if not base:
        return
    rows = f" on {result['rows']} eval rows" if result.get("rows") else ""
    print(f"\nbase vs tuned{rows}:", file=out)
    print(f"  {'':8} {'loss':>8} {'perplexity':>12}", file=out)
    print(f"  {'base':8} {base['loss']:8.3f} {base['perplexity']:12.2f}", file=out)
    if tuned:
        print(f"  {'tuned':8} {tuned['loss']:8.3f} {tuned['perplexity']:12.2f}", file=out)
        change = lambda a, b: f"{(b - a) / a * 100:+.1f}%" if a else "—"  # noqa: E731
        print(f"  {'change':8} {change(base['loss'], tuned['loss']):>8} "
              f"{change(base['perplexity'], tuned['perplexity']):>12}", file=out)
    else:
        print("  (no adapter: only the base model was scored)", file=out)


def cmd_finetune(args) -> int:
    return submit_and_follow("finetune", args)


def cmd_export(args) -> int:
    return submit_and_follow("export", args, {"precision": args.precision, "base_only": args.base_only,
                                              "merged": args.merged})


def cmd_evaluate(args) -> int:
    if args.prompts is not None and args.prompts < 1:
        from ..core.errors import AitkError

        raise AitkError(f"--prompts {args.prompts}: the parity check needs at least one prompt", "e.g. --prompts 16")
    return submit_and_follow("evaluate", args, {k: v for k, v in (("parity_only", args.parity),
                                                                  ("precision", args.precision),
                                                                  ("prompts", args.prompts)) if v})


def rec_line(r) -> str:
    age = time.strftime("%m-%d %H:%M", time.localtime(r.created))
    name = Path(r.project).name if r.project else "-"
    where = "" if r.provider == "local" else f"  [{r.provider}]"
    return f"{r.id:24} {r.kind:9} {r.status:11} {age}  {name}{where}" + (f"  {r.error}" if r.error else "")


def cmd_jobs_list(args) -> int:
    jobs = facade()
    jobs.reconcile_all()  # every back end: dead processes and dead Azure watchers are dealt with first
    recs = jobs.store.list(limit=None if args.provider else args.limit)
    if args.provider:
        recs = [r for r in recs if r.provider == args.provider][: args.limit]
    if args.json:
        print(json.dumps([r.to_dict() for r in recs], indent=2))
    elif not recs:
        print("no jobs yet (start one with `aitk finetune`)")
    else:
        print(f"{'ID':24} {'KIND':9} {'STATUS':11} {'CREATED':12} PROJECT")
        for r in recs:
            print(rec_line(r))
    return 0


def cmd_jobs_show(args) -> int:
    jobs = facade()
    rec = jobs.status(args.id)
    data = rec.to_dict()
    data["metrics"] = jobs.store.metrics(rec.id)
    data["outputs"] = {k: str(v) for k, v in jobs.outputs(rec.id).items()}
    data["details"] = jobs.details(rec.id, live=not args.offline)
    data["capabilities"] = sorted(jobs.capabilities(rec))
    data["manifest"] = jobs.manifest(rec.id)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(rec_line(rec))
    for k, v in data["details"].items():
        print(f"  {k:12} {v}")
    losses = [m for m in data["metrics"] if "loss" in m]
    if losses:
        print(f"  loss {losses[0]['loss']:.4g} -> {losses[-1]['loss']:.4g} over {losses[-1]['step']} steps")
    for k, v in data["outputs"].items():
        print(f"  {k:12} {v}")
    if data["manifest"]:
        from ..core import provenance

        print(f"  manifest     {jobs.store.job_dir(rec.id) / provenance.MANIFEST}")
        for line in provenance.summary_lines(data["manifest"]):
            print(f"    {line}")
    return 0


def cmd_jobs_logs(args) -> int:
    jobs = facade()
    rec = jobs.store.get(args.id)
    if args.follow:
        return 130 if detach_or_follow(rec.id, False, quiet_log=False) == 130 else 0
    print("\n".join(jobs.logs(rec.id, source=args.source).lines))
    return 0


def cmd_jobs_cancel(args) -> int:
    rec = facade().cancel(args.id)
    execution = (rec.params or {}).get("execution")
    print(f"job {rec.id} {rec.status}" + (f" (execution {execution} is stopping)" if execution else ""))
    return 0


def _print_queued(new: list, what: str) -> None:
    first, *children = new
    print(f"job {first.id} ({first.kind}{'' if first.provider == 'local' else ' on ' + first.provider}) "
          f"{first.status}, {what}")
    for c in children:
        print(f"job {c.id} ({c.kind}) {c.status}, after {first.id}")


def cmd_jobs_retry(args) -> int:
    new = facade().retry(args.id)
    _print_queued(new, f"retrying {args.id}")
    return detach_or_follow(new[0].id, args.detach)


def cmd_jobs_resume(args) -> int:
    new = facade().resume(args.id)
    _print_queued(new, "resumed")
    return detach_or_follow(new[0].id, args.detach)


def cmd_jobs_rerun(args) -> int:
    new, diffs = facade().rerun(args.id, dry_run=args.dry_run)
    if diffs:
        print(f"differs from job {args.id}'s manifest now:")
        for line in diffs:
            print(f"  {line}")
    else:
        print(f"nothing differs from job {args.id}'s manifest (packages, data, model, settings)")
    if new is None:
        return 0
    _print_queued([new], f"rerunning {args.id} from its manifest")
    return 0 if args.detach else follow_job(new.id, quiet_log=True)


def cmd_jobs_report(args) -> int:
    """The model card (README.md) and loss chart (loss.svg) of a fine-tune, for sharing without the Hub."""
    from ..core.project import load_project
    from ..core.sharing import copy_report

    jobs = facade()
    rec = jobs.store.get(args.id)
    if not rec.project:
        from ..core.errors import AitkError

        raise AitkError(f"job {rec.id} has no project", "report on a fine-tune job of a project")
    out = Path(args.out) if args.out else jobs.store.job_dir(rec.id) / "report"
    for path in copy_report(load_project(rec.project), rec.id, out, jobs.store):
        print(f"wrote {path}")
    return 0


def cmd_jobs_rm(args) -> int:
    jobs = facade()
    rec = jobs.status(args.id)
    if (why := jobs.refusal("delete", rec)) is not None:
        raise why
    if not confirm(f"delete job {rec.id} and its files?", assume_yes=args.yes,
                   refused="refusing to delete without confirmation"):
        print("kept")
        return 0
    jobs.delete(rec.id)
    print(f"deleted job {rec.id}")
    return 0


def cmd_jobs_wait(args) -> int:
    jobs = facade()
    rec = jobs.store.get(args.id)
    deadline = time.time() + args.timeout if args.timeout else None
    while not (rec := jobs.status(rec.id)).is_final:
        if deadline and time.time() > deadline:
            print(f"job {rec.id} still {rec.status} after {args.timeout} s")
            return 3
        time.sleep(0.3)
    print(f"job {rec.id} {rec.status}")
    return 0 if rec.status == "succeeded" else 1


def add_show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--offline", action="store_true", help="do not ask a remote back end, show the record only")


def add_logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--source", choices=["auto", "log-analytics"], default="auto",
                   help="log-analytics: an Azure run's lines from Log Analytics (auto: when the log has none)")


def register(sub) -> None:
    """`aitk finetune|export|evaluate` and `aitk jobs ...`."""
    for name, func, text in (("finetune", cmd_finetune, "fine-tune the project's model where its target says (a job)"),
                             ("export", cmd_export, "export to ONNX for onnxruntime-genai (a job)"),
                             ("evaluate", cmd_evaluate, "base vs tuned loss on the eval split, and parity")):
        p = sub.add_parser(name, help=text)
        project_arg(p)
        p.add_argument("--detach", "-d", action="store_true", help="submit and return; follow with `aitk jobs logs -f`")
        p.add_argument("--verbose", "-v", action="store_true", help="print the whole job log, not just progress")
        p.add_argument("--device", choices=["cpu", "cuda", "dml"], help="override the project's device")
        if name in ("export", "evaluate"):
            p.add_argument("--precision", choices=["fp32", "int4", "fp16"],
                           help=None if name == "export" else "the export whose parity is checked (default: "
                           "the project's)")
        if name == "evaluate":
            p.add_argument("--parity", action="store_true",
                           help="only the parity check: the eval prompts through PyTorch + adapter, the ONNX "
                                "export (adapter and merged) and aitk serve, and their formats (exit 1 if it fails)")
            p.add_argument("--prompts", type=int, metavar="N",
                           help="eval prompts the parity check asks (default 32; fewer is faster on big models)")
        if name == "export":
            p.add_argument("--base-only", action="store_true", help="export without the adapter")
            p.add_argument("--merged", action="store_true",
                           help="fold the adapter into the weights (models/onnx/<precision>-merged): the tuned "
                                "model at the base model's speed, for serving and chat")
        p.set_defaults(func=func)

    jobs = sub.add_parser("jobs", help="the job queue").add_subparsers(dest="sub", required=True)
    p = jobs.add_parser("list", help="recent jobs (reconciled first, Azure runs included)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--provider", choices=["local", "azure"], help="only the jobs of this back end")
    p.set_defaults(func=cmd_jobs_list)
    for name, func, text in (("show", cmd_jobs_show, "one job, its metrics and outputs"),
                             ("logs", cmd_jobs_logs, "a job's log"),
                             ("cancel", cmd_jobs_cancel, "stop a job (its log and partial outputs stay)"),
                             ("retry", cmd_jobs_retry, "run a job again with the same inputs, where it ran"),
                             ("resume", cmd_jobs_resume, "continue a fine-tune from its last checkpoint"),
                             ("rerun", cmd_jobs_rerun, "repeat a run from its manifest; say what differs now"),
                             ("report", cmd_jobs_report, "a fine-tune's model card (Markdown) and loss chart (SVG)"),
                             ("rm", cmd_jobs_rm, "delete a finished job and its files"),
                             ("wait", cmd_jobs_wait, "wait until a job ends; exit 0 if it succeeded")):
        p = jobs.add_parser(name, help=text)
        p.add_argument("id", help="job id (or a unique part of it)")
        if name == "show":
            add_show_args(p)
        if name == "logs":
            add_logs_args(p)
        if name in ("retry", "resume", "rerun"):
            p.add_argument("--detach", "-d", action="store_true")
        if name == "report":
            p.add_argument("--out", "-o", metavar="DIR", help="folder for README.md and loss.svg (default: the "
                           "job folder's report/)")
        if name == "rerun":
            p.add_argument("--dry-run", action="store_true", help="only say what differs; start nothing")
        if name == "rm":
            p.add_argument("--yes", "-y", action="store_true")
        if name == "wait":
            p.add_argument("--timeout", type=float)
        p.set_defaults(func=func)
