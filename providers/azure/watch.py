"""The watcher of one remote job: `python -m aitk.providers.azure.watch JOB_ID`.

Started detached (own session, like a local job process), so closing the app or the shell does not
stop it; `AzureProvider.status` starts a new one if it died (reboot). One per job (a lock file). It

- polls the execution and moves the job record along: starting (provisioning), running, ...;
- streams the container's log into the job's log.txt / metrics.jsonl, reconnecting as needed;
- when the execution ends: fills log gaps (Log Analytics), reads the whole log from Log Analytics
  if it never got to stream (the execution ended first), downloads adapter, metrics and logs,
  publishes the adapter to the project, records the final state, and starts any job waiting on
  this one (e.g. a local export with this job as parent).

Sign-in problems do not fail the job (the execution runs on regardless): they are written to the
log and retried, until `aitk azure login` fixes them.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
import traceback


def run(job_id: str) -> int:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    from ...core.errors import AitkError
    from ...core.jobs import ACTIVE, CANCELLED, FAILED, QUEUED, RUNNING, STARTING, SUCCEEDED, JobStore
    from . import auth, run as remote
    from .clients import AzureContext
    from .errors import LOGIN_HINT, info
    from .logs import JobLog, StreamFollower
    from .run import FETCH_FAILED

    store = JobStore()
    rec = store.get(job_id)
    lock = open(store.job_dir(rec.id) / "watch.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"another watcher follows job {rec.id}", flush=True)
        return 0
    auth.setup_logging()
    log = JobLog(store, rec.id)
    cfg = remote.infra_of(rec)
    execution = remote.execution_of(rec)
    if not execution:
        log.note("no execution recorded for this job; nothing to follow")
        return 1
    store.update(rec.id, pid=os.getpid())
    ctx = AzureContext(auth.credential(), cfg.subscription_id, notify=log.note)
    poll = ctx.endpoints.poll_s
    final = threading.Event()
    stop_stream = threading.Event()
    follower = StreamFollower(ctx, cfg, execution, log, finished=final.is_set, workspace_id=cfg.workspace_id,
                              stop=stop_stream)
    stream_thread: threading.Thread | None = None
    last_status = None
    auth_failing_since = None
    status = None
    exe = None
    log.note(f"watcher {os.getpid()} following execution {execution}")
    stuck_s = float(os.environ.get("AITK_AZURE_STUCK_S") or cfg.stuck_s)
    waiting_since = time.time()  # since when no replica has been running (Processing / Unknown)
    while True:
        try:
            exe = ctx.apps.job_execution(cfg.resource_group, cfg.job, execution)
            if auth_failing_since is not None:
                log.note("signed in again; following on")
            auth_failing_since = None
        except ClientAuthenticationError as e:
            if auth_failing_since is None:
                auth_failing_since = time.time()
                log.note(f"cannot sign in to Azure from the background: {info(e).line()}; {LOGIN_HINT}. "
                         "The execution runs on; this watcher retries every minute")
            time.sleep(max(poll, 60 if poll >= 1 else poll))
            ctx = AzureContext(auth.credential(), cfg.subscription_id, notify=log.note)
            follower.ctx = ctx
            continue
        except ResourceNotFoundError as e:
            log.note(f"execution {execution} no longer exists in Azure: {info(e).line()}")
            store.update(rec.id, only_if=ACTIVE, status=FAILED, finished=time.time(), exit_code=1,
                         error=f"execution {execution} vanished from Azure")
            return 1
        except (HttpResponseError, Exception) as e:  # noqa: BLE001 - retried; azure-core already backed off
            log.note(f"could not read execution {execution}: {info(e).line()}; retrying")
            time.sleep(max(poll, 1))
            continue
        props = exe.properties
        status = remote.status_text(props.status) if props else None
        if status != last_status:
            log.note(f"execution {execution}: {status}" + (
                " (a replica failed or is restarting; Azure keeps the execution going, the watcher follows on)"
                if status == "Degraded" else ""))
            last_status = status
            mapped = remote.STATUS_MAP.get(status or "")
            if mapped == STARTING:
                store.update(rec.id, only_if=(QUEUED,), status=STARTING)
            elif mapped == RUNNING:
                store.update(rec.id, only_if=(QUEUED, STARTING), status=RUNNING, started=time.time())
        if status in ("Processing", "Unknown", None):
            if time.time() - waiting_since > stuck_s:
                return _give_up(store, rec, ctx, cfg, execution, log, status, stuck_s, ACTIVE, FAILED)
        else:
            waiting_since = time.time()
        if status in ("Running", "Degraded"):
            if stream_thread is None:
                follower.started_key = follower.started_key or _key(props.start_time)
                stream_thread = threading.Thread(target=follower.run, name="log-stream", daemon=True)
                stream_thread.start()
        if status in remote.FINAL_EXECUTION:
            final.set()
            break
        time.sleep(poll)

    # The execution is over.
    if stream_thread is not None:
        stream_thread.join(timeout=60)
        stop_stream.set()
    try:
        follower.catch_up()
    except Exception as e:  # noqa: BLE001
        log.note(f"could not read the rest of the log from Log Analytics: {info(e).line()}")
    try:
        follower.fill_pending()
    except Exception as e:  # noqa: BLE001
        log.note(f"could not fill log gaps from Log Analytics: {info(e).line()}")
    got = {}
    fetch_error = None
    try:
        got = remote.fetch(store, rec.id, ctx=ctx, publish=(status == "Succeeded"))
        if "adapter" in got:
            log.note(f"fetched the adapter into {got['adapter']}" + (" and made it the project's current one"
                                                                     if status == "Succeeded" else ""))
    except AitkError as e:
        fetch_error = str(e)
        log.note(f"could not fetch the outputs: {e} (retry with `aitk azure fetch {rec.id}`)")
    if not follower.complete and got.get("container_log"):
        follower.catch_up_from(got["container_log"].read_text(encoding="utf-8", errors="replace").splitlines())
    remote_state = remote.remote_status((got.get("status").read_text() if got.get("status") else None))
    now = time.time()
    if status == "Succeeded" and "adapter" in got:
        store.update(rec.id, only_if=ACTIVE, status=SUCCEEDED, finished=now, exit_code=0, error=None)
    elif status == "Succeeded":
        store.update(rec.id, only_if=ACTIVE, status=FAILED, finished=now, exit_code=1,
                     error=f"{FETCH_FAILED}: {fetch_error}" if fetch_error
                     else "the execution succeeded but wrote no adapter (see the log)")
    elif status == "Failed":
        reason = remote_state.get("error") or (props.reason if props is not None and getattr(props, "reason", None)
                                               else None) or "the execution failed (see the log)"
        store.update(rec.id, only_if=ACTIVE, status=FAILED, finished=now,
                     exit_code=int(remote_state.get("exit_code") or 1), error=f"remote: {reason}")
    else:  # Stopped
        store.update(rec.id, only_if=ACTIVE, status=CANCELLED, finished=now, error="the execution was stopped in Azure")
    final_rec = store.get(rec.id)
    log.note(f"job {rec.id} {final_rec.status}" + (f": {final_rec.error}" if final_rec.error else ""))
    try:
        from ...core.scheduler import schedule

        schedule(store)
    except Exception:  # noqa: BLE001 - never let scheduling turn a finished job into a crash
        traceback.print_exc()
    return 0 if final_rec.status == SUCCEEDED else 1


def _give_up(store, rec, ctx, cfg, execution, log, status, stuck_s, active, failed) -> int:
    """An execution that never got a running replica within the deadline: stop it, fail the job."""
    from .errors import info

    minutes = stuck_s / 60
    msg = (f"execution {execution} stayed {status or 'without a status'} for more than "
           + (f"{minutes:.0f} min" if minutes >= 1 else f"{stuck_s:g} s")
           + " without a running replica (no GPU capacity, or the image cannot be pulled); it was stopped")
    try:
        ctx.apps.jobs.begin_stop_execution(cfg.resource_group, cfg.job, execution, polling=False).result()
    except Exception as e:  # noqa: BLE001 - the job fails either way; say that the stop did not go through
        log.note(f"could not stop execution {execution}: {info(e).line()}")
    log.note(msg + ". Check `aitk azure quota`, try another region or --gpu, or raise STUCK_TIMEOUT_SECONDS "
             "in infra/finetuning.config.json")
    store.update(rec.id, only_if=active, status=failed, finished=time.time(), exit_code=1, error=msg)
    return 1


def _key(t):
    import datetime as dt

    from .logs import ts_key

    if not isinstance(t, dt.datetime):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return ts_key(t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z"))


def main() -> None:
    os.environ.setdefault("CI", "1")
    try:
        code = run(sys.argv[1])
    except Exception:  # noqa: BLE001 - the traceback lands in watcher.txt
        traceback.print_exc()
        code = 3
    sys.exit(code)


if __name__ == "__main__":
    main()
