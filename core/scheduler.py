"""Starting local jobs: detached processes, a slot limit, parents before children.

There is no daemon: whoever changes the queue (a submit, a job ending, the app or CLI starting)
calls `schedule()`, which claims what may run now in one database transaction and spawns it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from . import paths
from .devices import detect
from .jobs import ACTIVE, FAILED, INTERRUPTED, RUNNING, STARTING, JobStore, pid_alive

STARTING_GRACE_S = 60  # a job claimed (not queued: a child may wait hours) but never seen running


def default_slots() -> int:
    """Jobs run at once: AITK_LOCAL_SLOTS, else `[jobs] local_slots` in config.toml (0 = auto),
    else one per GPU, one on CPU (two trainings on one device only slow each other down)."""
    env = os.environ.get("AITK_LOCAL_SLOTS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    configured = paths.configured_int("jobs", "local_slots")
    if configured is not None and configured > 0:
        return configured
    return max(1, len(detect().gpus))


def spawn(store: JobStore, job_id: str) -> int:
    """Start `python -m aitk.core.jobrun JOB_ID` in its own session, output to the job's log."""
    log = open(store.log_path(job_id), "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aitk.core.jobrun", job_id],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
            env={**os.environ, "AITK_DATA_DIR": str(store.root), "PYTHONUNBUFFERED": "1"},
        )
    except OSError as e:
        store.update(job_id, status=FAILED, finished=time.time(), error=f"could not start: {e}")
        raise
    finally:
        log.close()
    store.update(job_id, only_if=(STARTING,), pid=proc.pid)
    return proc.pid


def reconcile(store: JobStore) -> list[str]:
    """Settle jobs recorded as active whose process is gone, then start what may now run.

    A job that wrote its outcome file but could not record it (the database locked or the disk
    full past its retries) gets that outcome; one that did not is `interrupted`, with the reason.
    What is left of its process group (a model builder, data loaders) is killed. Scheduling here
    too means the job queued behind a killed one starts without waiting for another submit."""
    changed = settle(store)
    if changed:
        schedule(store)
    return changed


def settle(store: JobStore) -> list[str]:
    changed = []
    now = time.time()
    for rec in store.list(status=(STARTING, RUNNING)):
        if rec.provider != "local":
            continue
        if rec.pid is None and now - (rec.started or rec.created) < STARTING_GRACE_S:
            continue
        if pid_alive(rec.pid):
            continue
        _kill_leftovers(rec.pid)
        outcome = store.read_outcome(rec.id)
        if outcome is not None:
            fields = {k: outcome.get(k) for k in ("status", "finished", "exit_code", "error", "result")}
            note = f"its end ({fields['status']}) was recorded from {store.outcome_path(rec.id).name}"
        else:
            fields = {"status": INTERRUPTED, "finished": now,
                      "error": "the job process ended without recording a result (killed, or the machine "
                               "restarted); resume or retry it"}
            note = "marked interrupted"
        if store.update(rec.id, only_if=ACTIVE, **fields):
            store.clear_outcome(rec.id)
            try:
                with open(store.log_path(rec.id), "a", encoding="utf-8") as f:
                    f.write(f"\n[aitk] job process {rec.pid} is gone: {note}"
                            + (f"\n[aitk] error: {fields['error']}" if outcome and fields.get("error") else "") + "\n")
            except OSError:
                pass  # a full disk: the record says it
            changed.append(rec.id)
    return changed


def _kill_leftovers(pid: int | None) -> None:
    """SIGKILL what is left of a dead job's process group (it was the group's leader). Linux does
    not reuse a pid as a group id while the group has members, so this reaches only its own."""
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def schedule(store: JobStore, slots: int | None = None) -> list[str]:
    settle(store)
    started = []
    for job_id in store.claim_next(slots or default_slots()):
        spawn(store, job_id)
        started.append(job_id)
    return started
