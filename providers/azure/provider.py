"""`AzureProvider`: the Provider interface (submit / status / cancel / logs / outputs) for Azure runs."""

from __future__ import annotations

from pathlib import Path

from ...core.errors import AitkError
from ...core.jobs import JobRecord, JobStore
from ..base import Provider


class AzureProvider(Provider):
    name = "azure"

    def __init__(self, store: JobStore | None = None, notify=None):
        self.store = store or JobStore()
        self.notify = notify

    def submit(self, kind, project, *, params=None, parent=None, device=None) -> JobRecord:
        if kind != "finetune":
            raise AitkError(f"{kind} jobs run on this machine, not on Azure", "only fine-tunes run remotely")
        from .run import submit

        return submit(self.store, Path(project), params=params, parent=parent, notify=self.notify)

    def status(self, job_id: str) -> JobRecord:
        """The record (the watcher keeps it in step with the execution); restarts a dead watcher."""
        from .run import ensure_watcher

        rec = self.store.get(job_id)
        ensure_watcher(self.store, rec)
        return self.store.get(rec.id)

    def cancel(self, job_id: str) -> JobRecord:
        from .run import stop

        return stop(self.store, job_id, notify=self.notify)

    def outputs(self, job_id: str) -> dict[str, Path]:
        rec = self.store.get(job_id)
        return self._files(rec, container_log=self.store.job_dir(rec.id) / "container-log.txt")

    def fetch(self, job_id: str) -> dict[str, Path]:
        from .run import fetch

        return fetch(self.store, job_id, notify=self.notify)
