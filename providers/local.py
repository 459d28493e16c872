"""This machine: jobs as detached processes running Olive / the model builder."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from ..core.errors import AitkError
from ..core.finetune import preflight
from ..core.jobs import ACTIVE, CANCELLED, QUEUED, JobRecord, JobStore, pid_alive
from ..core.project import load_project
from ..core.scheduler import reconcile, schedule
from .base import Provider

CANCEL_GRACE_S = 3.0


class LocalProvider(Provider):
    name = "local"
    kinds = frozenset({"finetune", "export", "evaluate"})
    capabilities = frozenset({"cancel", "retry", "resume", "logs"})

    def __init__(self, store: JobStore | None = None):
        self.store = store or JobStore()

    def submit(self, kind, project, *, params=None, parent=None, device=None) -> JobRecord:
        proj = load_project(project)  # fails early, with the reason, for a bad project
        preflight(kind, proj, device or proj.device(), params or {}, parent)
        rec = self.store.create(kind, project=str(proj.root), provider=self.name,
                                device=device or proj.device(), parent=parent, params=params)
        schedule(self.store)
        return self.store.get(rec.id)

    def status(self, job_id: str) -> JobRecord:
        reconcile(self.store)
        return self.store.get(job_id)

    def reconcile(self) -> list[str]:
        return reconcile(self.store)

    def cancel(self, job_id: str) -> JobRecord:
        rec = self.store.get(job_id)
        if not self.store.update(rec.id, only_if=ACTIVE, status=CANCELLED, finished=time.time(),
                                 error="cancelled by user"):
            raise AitkError(f"job {rec.id} is already {self.store.get(rec.id).status}", "nothing to cancel")
        if rec.pid:
            _kill_group(rec.pid)
        with open(self.store.log_path(rec.id), "a", encoding="utf-8") as f:
            f.write("\n[aitk] cancelled by user\n")
        schedule(self.store)
        return self.store.get(rec.id)

    def retry(self, job_id: str) -> JobRecord:
        """A new job with the same inputs (the old one stays in the history)."""
        old = self.store.get(job_id)
        params = {k: v for k, v in old.params.items() if k != "resume"}
        return self.submit(old.kind, Path(old.project), params=params, device=old.device)

    def resume(self, job_id: str) -> JobRecord:
        """Continue the same fine-tune job from its last checkpoint; no step is trained twice.

        Metrics recorded after that checkpoint are dropped first, since those steps run again.
        """
        from ..core.finetune import last_checkpoint

        rec = self.status(job_id)  # which jobs may resume is decided in providers.jobs
        ckpt = last_checkpoint(self.store.job_dir(rec.id) / "checkpoints")
        if ckpt is None:
            raise AitkError(f"job {rec.id} saved no checkpoint to resume from", "use `aitk jobs retry`")
        step = int(ckpt.name.rsplit("-", 1)[1])
        path = self.store.metrics_path(rec.id)
        kept = [m for m in self.store.metrics(rec.id) if m.get("step", 0) <= step and m.get("event") != "end"]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(m, separators=(",", ":")) + "\n" for m in kept))
        os.replace(tmp, path)
        with open(self.store.log_path(rec.id), "a", encoding="utf-8") as f:
            f.write(f"\n[aitk] resume requested from {ckpt.name} (step {step})\n")
        self.store.update(rec.id, status=QUEUED, started=None, finished=None, exit_code=None, error=None,
                          pid=None, params={**rec.params, "resume": True})
        schedule(self.store)
        return self.store.get(rec.id)

    def outputs(self, job_id: str) -> dict[str, Path]:
        rec = self.store.get(job_id)
        more = {"checkpoints": self.store.job_dir(rec.id) / "checkpoints"}
        if rec.kind == "export" and rec.project:
            more["onnx"] = load_project(rec.project).onnx_dir(rec.params.get("precision"))
        return self._files(rec, **more)


def _kill_group(pid: int) -> None:
    """SIGTERM the job's process group, SIGKILL what is left after a grace period."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.time() + CANCEL_GRACE_S
    while time.time() < deadline and pid_alive(pid):
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
