"""`AzureProvider`: the Provider interface for fine-tunes on an Azure Container Apps job."""

from __future__ import annotations

import time
from pathlib import Path

from ...core import follow
from ...core.errors import AitkError
from ...core.jobs import ACTIVE, FAILED, SUCCEEDED, JobRecord, JobStore, pid_alive
from ..base import Provider

# A record of a submit that never got an execution and whose submitter is gone is settled after
# this long when no submitter pid was recorded (records from before pids were).
ORPHAN_SUBMIT_S = 3600
# Per-run keys the provider writes into a job's params; a retry starts without them.
RUN_KEYS = ("azure", "execution", "run_dir", "resume")


class AzureProvider(Provider):
    name = "azure"
    kinds = frozenset({"finetune"})
    capabilities = frozenset({"cancel", "retry", "fetch", "logs"})

    def __init__(self, store: JobStore | None = None, notify=None):
        self.store = store or JobStore()
        self.notify = notify

    def submit(self, kind, project, *, params=None, parent=None, device=None) -> JobRecord:
        if kind not in self.kinds:
            raise AitkError(f"{kind} jobs run on this machine, not on Azure", "only fine-tunes run remotely")
        from ...core.project import load_project
        from . import config

        proj = load_project(project)
        if config.load_infra(proj.root, required=False) is None:
            raise AitkError(f"{proj.name} fine-tunes on Azure (target.where = azure) but has no Azure resources "
                            "yet", "run `aitk azure provision` in the project, or train here: "
                            "`aitk project set target.where=local`")
        from .run import submit

        return submit(self.store, proj.root, params=params, parent=parent, notify=self.notify)

    def status(self, job_id: str) -> JobRecord:
        """The record (the watcher keeps it in step with the execution); restarts a dead watcher."""
        rec = self.store.get(job_id)
        self._reconcile_one(rec)
        return self.store.get(rec.id)

    def reconcile(self) -> list[str]:
        return [rec.id for rec in self.store.list(status=ACTIVE) if rec.provider == self.name
                and self._reconcile_one(rec)]

    def _reconcile_one(self, rec: JobRecord) -> bool:
        """A dead watcher of an active job is restarted (it settles a finished execution); a submit
        that died before Azure started an execution is failed. True if something was done."""
        if rec.provider != self.name or rec.status not in ACTIVE:
            return False
        from .run import ensure_watcher, execution_of

        if execution_of(rec):
            return ensure_watcher(self.store, rec)
        submitter_gone = (not pid_alive(rec.pid)) if rec.pid else time.time() - rec.created > ORPHAN_SUBMIT_S
        if not submitter_gone:
            return False
        from .logs import JobLog

        if self.store.update(rec.id, only_if=ACTIVE, status=FAILED, finished=time.time(), exit_code=1,
                             error="the submit stopped before Azure started an execution; retry it"):
            JobLog(self.store, rec.id).note("the submitting process is gone and no execution was started")
            return True
        return False

    def cancel(self, job_id: str) -> JobRecord:
        from .run import stop

        return stop(self.store, job_id, notify=self.notify)

    def retry(self, job_id: str) -> JobRecord:
        """A new run on Azure with the same inputs (the project's current Azure resources)."""
        old = self.store.get(job_id)
        params = {k: v for k, v in (old.params or {}).items() if k not in RUN_KEYS}
        return self.submit(old.kind, Path(old.project), params=params)

    def fetch(self, job_id: str, *, publish: bool = True) -> dict[str, Path]:
        """Download the outputs again; a run recorded failed only because its fetch failed succeeds now."""
        from .run import FETCH_FAILED, fetch

        rec = self.store.get(job_id)
        got = fetch(self.store, rec.id, publish=publish, notify=self.notify)
        if "adapter" in got and rec.status == FAILED and (rec.error or "").startswith(FETCH_FAILED):
            self.store.update(rec.id, status=SUCCEEDED, error=None, exit_code=0)
        return got

    def logs(self, job_id: str, offset: int = 0, *, source: str = "auto") -> follow.Chunk:
        """The job's log; from Log Analytics when asked, or when a finished run's log has no console
        lines (its watcher never streamed them)."""
        if source not in ("auto", "log-analytics"):
            return super().logs(job_id, offset, source=source)
        rec = self.store.get(job_id)
        chunk = follow.read_from(self.store.log_path(rec.id), offset)
        console = [ln for ln in chunk.lines if not ln.startswith("[aitk] ")]
        if source == "auto" and (console or offset or not rec.is_final):
            return chunk
        from . import run as remote
        from .errors import azure_call
        from .logs import query_logs

        cfg, execution = remote.infra_of(rec), remote.execution_of(rec)
        if not cfg.workspace_id or not execution:
            raise AitkError("no Log Analytics workspace or execution recorded for this job",
                            "rerun `aitk azure provision` to record the workspace")
        with azure_call(f"query Log Analytics for execution {execution}"):
            rows = query_logs(remote.context(cfg, self.notify), cfg.workspace_id, execution)
        lines = [line for _, line in rows] or ["[aitk] Log Analytics has no lines for this execution yet "
                                               "(ingestion takes a few minutes)"]
        return follow.Chunk(lines, chunk.offset)

    def details(self, job_id: str, *, live: bool = True) -> dict[str, str]:
        from . import run as remote

        rec = self.store.get(job_id)
        cfg, execution = remote.infra_of(rec), remote.execution_of(rec)
        out = {"execution": execution or "-"}
        if execution and live:
            p = remote.execution_info(remote.context(cfg, self.notify), cfg, execution).properties
            if p is not None:
                when = ", ".join(f"{label} {t.isoformat()}" for label, t in (("started", p.start_time),
                                                                             ("ended", p.end_time)) if t)
                out["execution"] += f"  {remote.status_text(p.status)}" + (f"  ({when})" if when else "")
        out["where"] = (f"{cfg.job} in {cfg.resource_group} ({cfg.location}, {cfg.gpu.upper()}), "
                        f"share {cfg.storage_account}/{cfg.file_share}/{remote.run_dir_of(rec)}")
        return out

    def outputs(self, job_id: str) -> dict[str, Path]:
        rec = self.store.get(job_id)
        return self._files(rec, container_log=self.store.job_dir(rec.id) / "container-log.txt")
