"""One interface for every place a job can run (this machine, Azure Container Apps, ...).

The engine and the UI talk to a Provider only; what differs between back ends stays behind it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ..core.follow import Chunk
from ..core.jobs import JobRecord


class Provider(ABC):
    name: str

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
    def logs(self, job_id: str, offset: int = 0) -> Chunk:
        """Clean log lines from `offset` on, and the offset to continue from."""

    @abstractmethod
    def outputs(self, job_id: str) -> dict[str, Path]:
        """What the job produced, by name (adapter, onnx model, metrics, log)."""
