"""One interface for every place a job can run (this machine, Azure Container Apps, ...).

The engine and the UI talk to a Provider only; what differs between back ends stays behind it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ..core import follow
from ..core.jobs import JobRecord, JobStore


class Provider(ABC):
    name: str
    store: JobStore  # every back end records its jobs, logs and metrics in the same store

    @abstractmethod
    def submit(self, kind: str, project: Path, *, params: dict | None = None, parent: str | None = None,
               device: str | None = None) -> JobRecord:
        """Record a job and start it when a slot (and its parent) allows."""

    @abstractmethod
    def status(self, job_id: str) -> JobRecord:
        """The job's record, reconciled with reality (a vanished process is `interrupted`)."""

    @abstractmethod
    def cancel(self, job_id: str) -> JobRecord:
        """Stop the job; its log and partial outputs are kept."""

    def logs(self, job_id: str, offset: int = 0) -> follow.Chunk:
        """Clean log lines from `offset` on, and the offset to continue from."""
        return follow.read_from(self.store.log_path(self.store.get(job_id).id), offset)

    @abstractmethod
    def outputs(self, job_id: str) -> dict[str, Path]:
        """What the job produced, by name (adapter, onnx model, metrics, log)."""

    def _files(self, rec: JobRecord, **more: Path) -> dict[str, Path]:
        """The job folder's files every back end writes, plus `more`; only those that exist."""
        d = self.store.job_dir(rec.id)
        found = {"log": self.store.log_path(rec.id), "metrics": self.store.metrics_path(rec.id),
                 "adapter": d / "output" / "adapter", **more}
        return {k: v for k, v in found.items() if v.exists()}
