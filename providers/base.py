"""One interface for every place a job can run (this machine, Azure Container Apps, ...).

The engine and the UI talk to a Provider only; what differs between back ends stays behind it.
Implementations are found through `providers.registry`, and front ends drive them through
`providers.jobs` (the one facade), never directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ..core import follow
from ..core.errors import AitkError
from ..core.jobs import JobRecord, JobStore

# What a back end may offer beyond submit/status; front ends grey out keys for the rest.
CAPABILITIES = ("cancel", "retry", "resume", "fetch", "logs")


class Provider(ABC):
    name: str
    store: JobStore  # every back end records its jobs, logs and metrics in the same store
    kinds: frozenset[str] = frozenset()  # job kinds this back end runs
    capabilities: frozenset[str] = frozenset({"cancel", "logs"})

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

    @abstractmethod
    def reconcile(self) -> list[str]:
        """Bring every active job of this back end in line with reality; the ids whose state changed
        (or whose follower was restarted)."""

    def retry(self, job_id: str) -> JobRecord:
        """A new job with the same inputs, on this back end (the old one stays in the history)."""
        raise self._unsupported("retry", job_id)

    def resume(self, job_id: str) -> JobRecord:
        """The same job continues from where it stopped."""
        raise self._unsupported("resume", job_id)

    def fetch(self, job_id: str, *, publish: bool = True) -> dict[str, Path]:
        """Download a finished job's outputs (again) into its folder."""
        raise self._unsupported("fetch", job_id)

    def logs(self, job_id: str, offset: int = 0, *, source: str = "auto") -> follow.Chunk:
        """Clean log lines from `offset` on, and the offset to continue from."""
        if source != "auto":
            raise AitkError(f"{self.name} jobs have no {source} log", "leave out --source")
        return follow.read_from(self.store.log_path(self.store.get(job_id).id), offset)

    def details(self, job_id: str, *, live: bool = True) -> dict[str, str]:
        """Back-end facts worth showing with the job (where it ran, the remote state), label -> text."""
        return {}

    @abstractmethod
    def outputs(self, job_id: str) -> dict[str, Path]:
        """What the job produced, by name (adapter, onnx model, metrics, log)."""

    def _unsupported(self, what: str, job_id: str) -> AitkError:
        hint = {"resume": "retry it instead (`aitk jobs retry`)", "fetch": "its outputs are already in its folder",
                "retry": "start a new job"}.get(what, "see `aitk jobs show` for what it offers")
        return AitkError(f"{what} is not on this back end: job {job_id} ran on {self.name}", hint)

    def _files(self, rec: JobRecord, **more: Path) -> dict[str, Path]:
        """The job folder's files every back end writes, plus `more`; only those that exist."""
        d = self.store.job_dir(rec.id)
        found = {"log": self.store.log_path(rec.id), "metrics": self.store.metrics_path(rec.id),
                 "adapter": d / "output" / "adapter", **more}
        return {k: v for k, v in found.items() if v.exists()}
