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


def run(job_id: str) -> int:
    from .errors import AitkError
    from .jobs import CANCELLED, FAILED, QUEUED, RUNNING, STARTING, SUCCEEDED, JobStore
    from .project import load_project

    store = JobStore()
    if not store.update(job_id, only_if=(QUEUED, STARTING), status=RUNNING, started=time.time(),
                        pid=os.getpid()):
        print(f"[aitk] job {job_id} is no longer queued; nothing to do", flush=True)
        return 0
    rec = store.get(job_id)
    job_dir = store.job_dir(job_id)

    def on_term(signum, frame):  # cancel: the canceller has already recorded `cancelled`
        print(f"\n[aitk] stopped by signal {signum}", flush=True)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    code, error, result = 0, None, None
    try:
        project = load_project(rec.project)
        device = rec.device or project.device()
        if rec.kind == "finetune":
            from .finetune import last_checkpoint, run_finetune

            resume_path = last_checkpoint(job_dir / "checkpoints") if rec.params.get("resume") else None
            if resume_path is not None:
                print(f"[aitk] resuming from {resume_path.name}", flush=True)
            run_finetune(project, job_dir, device, resume_path)
        elif rec.kind == "export":
            from .finetune import run_export

            run_export(project, job_dir, device, rec.params.get("precision") or project.settings.inference.precision,
                       base_only=bool(rec.params.get("base_only")))
        elif rec.kind == "evaluate":
            from .evaluate import run_evaluate

            result = run_evaluate(project, job_dir, device)
        else:
            raise AitkError(f"job kind {rec.kind!r} cannot run locally")
    except AitkError as e:
        code, error = 1, str(e)
        print(f"[aitk] error: {e}", flush=True)
    except BaseException as e:  # noqa: BLE001 - a job must always record how it ended
        traceback.print_exc()
        code, error = 1, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip().rstrip(":")
    status = SUCCEEDED if code == 0 else FAILED
    store.update(job_id, only_if=(RUNNING,), status=status, finished=time.time(), exit_code=code, error=error,
                 result=result)
    print(f"[aitk] job {job_id} {store.get(job_id).status}", flush=True)
    try:
        from .scheduler import schedule

        schedule(store)
    except Exception:  # noqa: BLE001 - never let scheduling turn a finished job into a crash
        traceback.print_exc()
    return 0 if status == SUCCEEDED else (1 if status != CANCELLED else 130)


def main() -> None:
    os.environ.setdefault("CI", "1")  # Olive's telemetry otherwise hangs 6-11 s at exit offline
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    sys.exit(run(sys.argv[1]))


if __name__ == "__main__":
    main()
