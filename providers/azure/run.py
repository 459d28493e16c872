"""Run a project's fine-tune on the Azure job: upload, start an execution, record it, follow it, fetch.

A remote run is an ordinary job record (kind `finetune`, provider `azure`) whose status follows the
execution: queued while uploading, starting while Azure provisions the replica (image pull, GPU),
running, then succeeded / failed / cancelled (stopped). A detached watcher process
(`python -m aitk.providers.azure.watch JOB_ID`) does the following, so the queue, `aitk jobs`, the
TUI and a closed app all behave as with a local job; when the execution ends it downloads the
adapter, metrics and logs into the job folder and makes the adapter the project's current one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ...core.errors import AitkError
from ...core.jobs import ACTIVE, CANCELLED, FAILED, QUEUED, RUNNING, STARTING, SUCCEEDED, JobRecord, JobStore, pid_alive
from . import auth, bundle, config, reuse
from .clients import AzureContext
from .config import InfraConfig
from .errors import azure_call
from .files import RUNS, ShareFiles, project_manifest
from .logs import JobLog
from .provision import job_template

EXECUTIONS = "runs/executions"  # <execution>.json -> its run folder (read by the container's entry point)

# Execution states -> job states. Degraded/Unknown leave the job where it is.
STATUS_MAP = {"Processing": STARTING, "Running": RUNNING, "Succeeded": SUCCEEDED, "Failed": FAILED,
              "Stopped": CANCELLED}
FINAL_EXECUTION = ("Succeeded", "Failed", "Stopped")
FETCH_FAILED = "the run succeeded but fetching its outputs failed"


def status_text(status) -> str | None:
    """An execution status as its plain name ("Running"), whether the SDK gave a str or an enum."""
    return None if status is None else str(getattr(status, "value", status))


def infra_of(rec: JobRecord) -> InfraConfig:
    data = (rec.params or {}).get("azure")
    if not data:
        raise AitkError(f"job {rec.id} is not an Azure job", "`aitk jobs show` tells where it ran")
    return InfraConfig.from_json(data)


def execution_of(rec: JobRecord) -> str | None:
    return (rec.params or {}).get("execution")


def run_dir_of(rec: JobRecord) -> str:
    return (rec.params or {}).get("run_dir") or f"{RUNS}/{rec.id}"


def context(cfg: InfraConfig, notify: Callable[[str], None] | None = None) -> AzureContext:
    return AzureContext(auth.credential(), cfg.subscription_id, notify=notify)


def share_files(ctx: AzureContext, cfg: InfraConfig) -> ShareFiles:
    scope = f"storage account {cfg.storage_account}"
    with azure_call(f"read storage account {cfg.storage_account}", scope=scope):
        acct = ctx.storage.storage_accounts.get_properties(cfg.resource_group, cfg.storage_account)
        key = ctx.storage.storage_accounts.list_keys(cfg.resource_group, cfg.storage_account).keys_property[0].value
    return ShareFiles(ctx.share(acct.properties.primary_endpoints.file, cfg.file_share, key))


def _project_skip(project) -> tuple[str, ...]:
    return (project.settings.finetune.checkpoint_dir,)


def submit(store: JobStore, project_root: Path, *, params: dict | None = None, parent: str | None = None,
           notify: Callable[[str], None] | None = None, spawn: bool = True) -> JobRecord:
    """Upload the project, start an execution, add the job to the queue and start its watcher."""
    from azure.mgmt.appcontainers import models as am

    from ...core import olive_config
    from ...core.project import load_project

    say = notify or (lambda _: None)
    project = load_project(project_root)
    olive_config.pass_config(project.settings, "cuda")  # refuses what cannot run on the GPU, before uploading
    cfg = config.load_infra(project.root)
    if auth.session_only():
        say("note: you signed in for this session only; the background watcher cannot use that sign-in. "
            "`aitk azure login --remember` lets it follow the job after this process ends")
    ctx = context(cfg, notify)
    if cfg.foreign:  # an AI Toolkit project's resources: found once, then named in the file
        cfg = reuse.resolve(ctx, project.root, cfg)
        config.save_infra(project.root, cfg)
        say(f"reusing AI Toolkit's resources: job {cfg.job} in environment {cfg.environment} "
            f"(profile {cfg.profile_name})")
    # Sign-in, permissions and a deleted job fail here, before anything is queued.
    scope = f"job {cfg.job} in resource group {cfg.resource_group}"
    with azure_call(f"read Container Apps job {cfg.job}", scope=scope):
        job = ctx.apps.jobs.get(cfg.resource_group, cfg.job)
    share = share_files(ctx, cfg)
    rec = store.create("finetune", project=str(project.root), provider="azure", device="cuda", parent=parent,
                       params={**(params or {}), "azure": cfg.to_json(), "run_dir": f"{RUNS}/pending"})
    run_dir = f"{RUNS}/{rec.id}"
    log = JobLog(store, rec.id)
    log.note(f"remote fine-tune of {project.name} on Azure Container Apps job {cfg.job} "
             f"({cfg.gpu.upper()}, {cfg.location}), image {cfg.image}")
    # The submitter's pid until the watcher's: a submit killed before an execution starts is settled.
    store.update(rec.id, params={**rec.params, "run_dir": run_dir}, pid=os.getpid())
    try:
        say(f"uploading {project.name} to {cfg.storage_account}/{cfg.file_share}/{run_dir} (only changed files)")
        with azure_call(f"upload the project to share {cfg.file_share}", scope=f"storage account {cfg.storage_account}"):
            bundle_dir = bundle.upload(share, bundle.build())
            manifest = project_manifest(project.root, _project_skip(project))
            manifest["bundle"] = bundle_dir
            stats = share.upload_manifest(project.root, manifest, run_dir)
        log.note(f"uploaded: {stats.line()}")
        say(f"uploaded: {stats.line()}")
        # Per-run values never go into a start-time template: such a start loses the job's volume
        # mounts. The job's own template is made current (PATCH) and started as defined; the run
        # is then named in runs/executions/<execution>.json, which the entry point waits for.
        sync_job_template(ctx, cfg, job, log.note)
        with azure_call(f"start an execution of job {cfg.job}", scope=scope,
                        gpu_label=config.gpu(cfg.gpu).quota_label, location=cfg.location,
                        subscription=cfg.subscription_id):
            started = ctx.apps.jobs.begin_start(cfg.resource_group, cfg.job, polling=False).result()
        execution = started.name
        with azure_call(f"assign run {run_dir} to execution {execution}", scope=f"storage account {cfg.storage_account}"):
            share.put_file(f"{EXECUTIONS}/{execution}.json", json.dumps({"run": run_dir, "job": rec.id}).encode())
        store.update(rec.id, only_if=(QUEUED,), status=STARTING,
                     params={**store.get(rec.id).params, "execution": execution})
        log.note(f"started execution {execution}; waiting for a GPU replica (image pull and start can take minutes)")
        say(f"started execution {execution}")
    except BaseException as e:
        msg = str(e) if isinstance(e, AitkError) else f"{type(e).__name__}: {e}"
        store.update(rec.id, only_if=ACTIVE, status=FAILED, finished=time.time(), exit_code=1, error=msg)
        log.note(f"error: {msg}")
        raise
    if spawn:
        spawn_watcher(store, rec.id)
    return store.get(rec.id)


def sync_job_template(ctx: AzureContext, cfg: InfraConfig, job, note: Callable[[str], None]) -> None:
    """PATCH the job's template when its image, command, env names or share mount differ from what
    this version runs (a new default, `--image`, an adopted AI Toolkit job). Secret refs are kept."""
    want = job_template(cfg, existing=job)
    have = job.properties.template.as_dict() if job.properties and job.properties.template else {}

    def shape(t):
        c = (t.get("containers") or [{}])[0]
        mounts = [(m.get("volume_name") or m.get("volumeName"), m.get("mount_path") or m.get("mountPath"))
                  for m in c.get("volume_mounts") or c.get("volumeMounts") or []]
        env = sorted((e.get("name"), e.get("value"), e.get("secret_ref") or e.get("secretRef")) for e in c.get("env") or [])
        return c.get("image"), list(c.get("command") or []), env, sorted(mounts)

    if shape(have) == shape(want):
        return
    note(f"updating job {cfg.job}'s template (image {cfg.image}, command, share mount) before starting")
    body = {"properties": {"template": want}}
    if cfg.registries():
        body["properties"]["configuration"] = {"registries": cfg.registries()}
    with azure_call(f"update the template of job {cfg.job}", scope=f"job {cfg.job} in resource group {cfg.resource_group}"):
        ctx.apps.jobs.begin_update(cfg.resource_group, cfg.job, body).result()


def spawn_watcher(store: JobStore, job_id: str) -> int:
    """Start the detached watcher (own session, like a local job process); its own errors go to watcher.txt."""
    out = open(store.job_dir(job_id) / "watcher.txt", "ab")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "aitk.providers.azure.watch", job_id],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True,
                                env={**os.environ, "AITK_DATA_DIR": str(store.root), "PYTHONUNBUFFERED": "1"})
    finally:
        out.close()
    store.update(job_id, pid=proc.pid)
    return proc.pid


def ensure_watcher(store: JobStore, rec: JobRecord) -> bool:
    """An active Azure job whose watcher is gone (reboot, kill) gets a new one; True if started."""
    if rec.provider != "azure" or rec.status not in ACTIVE or not execution_of(rec):
        return False
    if watcher_running(store, rec):
        return False
    spawn_watcher(store, rec.id)
    return True


def watcher_running(store: JobStore, rec: JobRecord) -> bool:
    """A watcher holds the job's lock file for as long as it runs (see watch.py); a recorded pid can
    be stale (a watcher that lost the lock to another one), or reused after a reboot."""
    import fcntl

    if pid_alive(rec.pid) and _is_watcher(rec.pid):
        return True
    try:
        with open(store.job_dir(rec.id) / "watch.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        pass
    return False


def _is_watcher(pid: int) -> bool:
    """False when the pid now belongs to another program (a reused pid after a reboot)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"aitk.providers.azure.watch" in f.read()
    except OSError:
        return True  # no /proc (not Linux): trust pid_alive


def stop(store: JobStore, job_id: str, notify: Callable[[str], None] | None = None) -> JobRecord:
    rec = store.get(job_id)
    if rec.status not in ACTIVE:
        raise AitkError(f"job {rec.id} is already {rec.status}", "nothing to stop")
    cfg = infra_of(rec)
    execution = execution_of(rec)
    if execution:
        ctx = context(cfg, notify)
        with azure_call(f"stop execution {execution}", scope=f"job {cfg.job} in resource group {cfg.resource_group}"):
            ctx.apps.jobs.begin_stop_execution(cfg.resource_group, cfg.job, execution, polling=False).result()
    if store.update(rec.id, only_if=ACTIVE, status=CANCELLED, finished=time.time(), error="stopped by user"):
        JobLog(store, rec.id).note(f"stop requested: execution {execution} is being stopped")
    return store.get(rec.id)


def execution_info(ctx: AzureContext, cfg: InfraConfig, execution: str):
    with azure_call(f"read execution {execution}", scope=f"job {cfg.job} in resource group {cfg.resource_group}"):
        return ctx.apps.job_execution(cfg.resource_group, cfg.job, execution)


def fetch(store: JobStore, job_id: str, *, ctx: AzureContext | None = None, publish: bool = True,
          notify: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Download the run's adapter, metrics and logs into the job folder; publish the adapter to the project.

    The layout is a local job's: output/adapter/, metrics.jsonl, log.txt (+ container-log.txt, the
    container's whole log from the share), so export and chat work exactly as after a local run.
    """
    from ...core.finetune import publish_adapter
    from ...core.project import load_project

    rec = store.get(job_id)
    cfg = infra_of(rec)
    ctx = ctx or context(cfg, notify)
    share = share_files(ctx, cfg)
    run_dir = run_dir_of(rec)
    job_dir = store.job_dir(rec.id)
    got: dict[str, Path] = {}
    with azure_call(f"download the outputs of {run_dir}", scope=f"storage account {cfg.storage_account}"):
        state_text = share.read_text(f"{run_dir}/status.json")
        adapter_files = share.download_tree(f"{run_dir}/output/adapter", job_dir / ".fetch-adapter")
        if share.download_file(f"{run_dir}/metrics.jsonl", job_dir / ".fetch-metrics.jsonl"):
            os.replace(job_dir / ".fetch-metrics.jsonl", store.metrics_path(rec.id))
            got["metrics"] = store.metrics_path(rec.id)
        if share.download_file(f"{run_dir}/log.txt", job_dir / "container-log.txt"):
            got["container_log"] = job_dir / "container-log.txt"
    if adapter_files:
        import shutil

        dest = job_dir / "output" / "adapter"
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(job_dir / ".fetch-adapter", dest)
        got["adapter"] = dest
        if publish and (dest / "adapter_config.json").is_file() and rec.project:
            publish_adapter(load_project(rec.project), dest, rec.id)
    got["log"] = store.log_path(rec.id)
    if state_text:
        try:
            (job_dir / "remote-status.json").write_text(state_text)
            got["status"] = job_dir / "remote-status.json"
        except OSError:
            pass
    return got


def remote_status(text: str | None) -> dict:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}
