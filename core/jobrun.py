"""Entry point of a local job process: `python -m aitk.core.jobrun JOB_ID`.

Started detached (own session and process group, output to the job's log.txt) so closing the
app or the shell does not stop it. It records its own start and end in the job store, then
starts whatever queued job may now run.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback


def say(text: str) -> None:
    """Print to the job's log; a full disk must not turn the end of a job into a crash."""
    try:
        print(text, flush=True)
    except OSError:
        pass


def run(job_id: str) -> int:
    from . import paths, provenance
    from .errors import AitkError
    from .jobs import CANCELLED, FAILED, QUEUED, RUNNING, STARTING, SUCCEEDED, JobStore
    from .project import load_project

    store = JobStore()
    if not store.update(job_id, only_if=(QUEUED, STARTING), status=RUNNING, started=time.time(),
                        pid=os.getpid()):
        say(f"[aitk] job {job_id} is no longer queued; nothing to do")
        return 0
    rec = store.get(job_id)
    job_dir = store.job_dir(job_id)
    try:
        store.reserve_outcome(job_id)  # also drops the outcome of a run this one resumes
    except OSError:
        store.clear_outcome(job_id)

    def on_term(signum, frame):  # cancel: the canceller has already recorded `cancelled`
        say(f"\n[aitk] stopped by signal {signum}")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    code, error, result = 0, None, None
    try:
        project = load_project(rec.project)
        if rec.params.get("settings"):  # a rerun: the settings its manifest recorded, not aitk.toml's
            project = provenance.project_with(project, rec.params["settings"])
        device = rec.device or project.device()
        if rec.kind == "finetune":
            from .finetune import finetune_config, last_checkpoint, run_finetune

            resume_path = last_checkpoint(job_dir / "checkpoints") if rec.params.get("resume") else None
            if resume_path is not None:
                say(f"[aitk] resuming from {resume_path.name}")
            record_manifest(project, rec, job_dir, device, finetune_config(project, job_dir, device, resume_path))
            run_finetune(project, job_dir, device, resume_path)
        elif rec.kind == "export":
            from .finetune import run_export

            record_manifest(project, rec, job_dir, device, None)
            precision = rec.params.get("precision") or project.settings.inference.precision
            run_export(project, job_dir, device, precision, base_only=bool(rec.params.get("base_only")),
                       merged=bool(rec.params.get("merged")))
            if not rec.params.get("base_only"):  # every export of the tuned model is checked (core/parity.py)
                from . import parity

                result = {"parity": parity.job_step(project, job_dir, precision, say=say)}
        elif rec.kind == "evaluate":
            from . import parity
            from .evaluate import run_evaluate

            record_manifest(project, rec, job_dir, device, None)
            precision, limit = rec.params.get("precision"), rec.params.get("prompts") or parity.DEFAULT_LIMIT
            if rec.params.get("parity_only"):  # asked for: a check that cannot run fails the job
                result = {"parity": parity.outcome(parity.run(project, precision, job_dir, limit, say=say))}
            else:
                result = run_evaluate(project, job_dir, device)
                result["parity"] = parity.job_step(project, job_dir, precision, reuse=True, limit=limit, say=say)
        else:
            raise AitkError(f"job kind {rec.kind!r} cannot run locally")
    except BaseException as e:  # noqa: BLE001 - a job must always record how it ended
        code = 1
        if disk_full(e, job_dir, paths):
            # Said as such: a checkpoint cut short by a full disk is neither a bug nor a kill.
            error = paths.disk_full_message(job_dir)
        elif isinstance(e, AitkError):
            error = str(e)
        else:
            try:
                traceback.print_exc()
            except OSError:
                pass
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip().rstrip(":")
        say(f"[aitk] error: {error}")
    status = SUCCEEDED if code == 0 else FAILED
    outcome = {"status": status, "finished": time.time(), "exit_code": code, "error": error, "result": result}
    store.write_outcome(job_id, outcome)  # what reconcile records if the database write below fails
    try:
        recorded = store.finish(job_id, **outcome)
        store.clear_outcome(job_id)
    except AitkError as e:
        say(f"[aitk] could not record the end in the job database ({e}); it is kept in "
            f"{store.outcome_path(job_id)} and recorded by the next `aitk` command")
        return 1
    if not recorded:  # cancelled meanwhile: the canceller's record stands
        status = CANCELLED
    say(f"[aitk] job {job_id} {status}" + (f": {error}" if error and recorded else ""))
    try:
        from .scheduler import schedule

        schedule(store)
    except Exception:  # noqa: BLE001 - never let scheduling turn a finished job into a crash
        try:
            traceback.print_exc()
        except OSError:
            pass
    return 0 if status == SUCCEEDED else (1 if status != CANCELLED else 130)


def record_manifest(project, rec, job_dir, device: str, olive_config: dict | None) -> None:
    """The job's manifest.json, before any work: a run that fails half way is still explained."""
    from . import provenance

    provenance.write(job_dir, provenance.build(project, kind=rec.kind, device=device, olive_config=olive_config,
                                               params=rec.params))


def disk_full(e: BaseException, job_dir, paths) -> bool:
    """A failure with the job's disk (nearly) full is the disk's doing: torch reports it only as
    "file write failed", without the errno, so the free space decides too."""
    if paths.is_disk_full(e, job_dir):
        return True
    free = paths.free_bytes(job_dir)
    return free is not None and free < paths.DISK_FULL_BELOW


def main() -> None:
    os.environ.setdefault("CI", "1")  # Olive's telemetry otherwise hangs 6-11 s at exit offline
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    sys.exit(run(sys.argv[1]))


if __name__ == "__main__":
    main()
