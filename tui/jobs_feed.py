"""What the app knows about jobs, refreshed from the job store by one background thread.

The store (SQLite) and each job's `metrics.jsonl` are the whole truth (kept true by the jobs
facade's `reconcile_all`, every few seconds): jobs started by the CLI, by
another app or by an earlier run of this one show up the same way. A poll returns every record,
the progress of active fine-tunes (read from the tail of their metrics file, never the whole
file), and the state changes since the previous poll, which become notifications.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from aitk.core.jobs import ACTIVE, JobRecord, JobStore
from aitk.providers.jobs import Jobs

RECONCILE_EVERY_S = 5.0


@dataclass
class Progress:
    step: int = 0
    max_steps: int = 0
    begin_t: float | None = None
    last_t: float | None = None
    loss: float | None = None

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.step / self.max_steps) if self.max_steps > 0 else None

    def eta(self) -> float | None:
        """Seconds left at the average pace so far."""
        if not (self.begin_t and self.last_t and self.step > 0 and self.max_steps > 0):
            return None
        per_step = (self.last_t - self.begin_t) / self.step
        return max(0.0, per_step * (self.max_steps - self.step))

    def rate(self) -> float | None:
        if not (self.begin_t and self.last_t and self.last_t > self.begin_t and self.step > 0):
            return None
        return self.step / (self.last_t - self.begin_t)

    def update(self, record: dict) -> None:
        if record.get("event") == "begin" and self.begin_t is None:
            self.begin_t = record.get("t")
        if isinstance(record.get("step"), int):
            self.step = max(self.step, record["step"])
        if isinstance(record.get("max_steps"), int) and record["max_steps"] > 0:
            self.max_steps = record["max_steps"]
        if isinstance(record.get("t"), (int, float)):
            self.last_t = record["t"]
            if self.begin_t is None:
                self.begin_t = record["t"]
        if isinstance(record.get("loss"), (int, float)):
            self.loss = record["loss"]


def _json_lines(data: bytes) -> list[dict]:
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a partial first line of a tail, or a line being written
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_progress(metrics_path: Path, tail_bytes: int = 4096) -> Progress | None:
    """Progress from the first and last records of a metrics file, reading at most ~5 KB."""
    try:
        with open(metrics_path, "rb") as f:
            head = f.read(1024)
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(0, end - tail_bytes))
            tail = f.read()
    except OSError:
        return None
    records = _json_lines(head[: head.rfind(b"\n") + 1]) + _json_lines(tail)
    if not records:
        return None
    progress = Progress()
    for rec in records:
        progress.update(rec)
    return progress


@dataclass
class FeedUpdate:
    records: list[JobRecord]
    progress: dict[str, Progress] = field(default_factory=dict)
    transitions: list[tuple[JobRecord, str | None]] = field(default_factory=list)  # (record, old status)
    first: bool = False

    @property
    def running(self) -> int:
        return sum(1 for r in self.records if r.status in ACTIVE)


class JobsFeed:
    def __init__(self, store: JobStore | None = None, limit: int = 500):
        self.store = store or JobStore()
        self.jobs = Jobs(self.store)
        self.limit = limit
        self._previous: dict[str, str] | None = None
        self._last_reconcile = 0.0

    def poll(self) -> FeedUpdate:
        now = time.monotonic()
        if now - self._last_reconcile >= RECONCILE_EVERY_S:
            # Every back end: a vanished local process is interrupted, a dead Azure watcher is
            # restarted (it settles a finished run). The feed runs in a worker thread.
            self.jobs.reconcile_all()
            self._last_reconcile = now
        records = self.store.list(limit=self.limit)
        progress = {}
        for rec in records:
            if rec.kind == "finetune" and (rec.status in ACTIVE or self._previous is None
                                           or self._previous.get(rec.id) in ACTIVE):
                p = read_progress(self.store.metrics_path(rec.id))
                if p:
                    progress[rec.id] = p
        first = self._previous is None
        transitions = []
        if not first:
            for rec in records:
                old = self._previous.get(rec.id)
                if old != rec.status:
                    transitions.append((rec, old))
        self._previous = {r.id: r.status for r in records}
        return FeedUpdate(records, progress, transitions, first)


def transition_message(rec: JobRecord, old: str | None) -> tuple[str, str] | None:
    """(text, severity) of a notification for a job state change, or None for quiet changes."""
    name = Path(rec.project).name if rec.project else rec.id
    what = {"finetune": "Fine-tune", "export": "Export", "evaluate": "Evaluation",
            "download": "Download"}.get(rec.kind, rec.kind.capitalize())
    if rec.status == "running" and old in (None, "queued", "starting"):
        return f"{what} of {name} started", "information"
    if rec.status == "succeeded":
        parity = (rec.result or {}).get("parity") if isinstance(rec.result, dict) else None
        if parity and not parity.get("passed"):
            div = parity.get("divergence")
            example = f": {div['prompt']!r} expected {div['expected']!r}, got {div['got']!r} ({div['form']})" \
                if div else f": {parity.get('verdict')}"
            return f"{what} of {name} succeeded, but parity failed{example}", "warning"
        return f"{what} of {name} succeeded", "information"
    if rec.status == "failed":
        return f"{what} of {name} failed: {rec.error or 'see its log'}", "error"
    if rec.status == "interrupted":
        return f"{what} of {name} was interrupted: resume or retry it", "warning"
    if rec.status == "skipped":
        return f"{what} of {name} skipped: {rec.error or 'its parent did not succeed'}", "warning"
    if rec.status == "cancelled" and old is not None:
        return f"{what} of {name} cancelled", "warning"
    return None
