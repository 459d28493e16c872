"""The app's job actions: each is one call into the jobs facade (`aitk.providers.jobs`), which
sends it to the job's own back end and decides what may be done; plus the app's read helpers.

Every function here may block (SQLite, spawning a process, a cancel's grace period, pydantic on
first use): call them from worker threads, never on the UI thread.
"""

from __future__ import annotations

from pathlib import Path

from aitk.core.jobs import JobRecord, JobStore
from aitk.providers.jobs import Jobs


def jobs(store: JobStore) -> Jobs:
    return Jobs(store)


def refusal(store: JobStore, action: str, rec: JobRecord):
    """Why `action` cannot be done to `rec` now (an AitkError), or None; cheap (no database read)."""
    return jobs(store).refusal(action, rec)


def capabilities(store: JobStore, rec: JobRecord) -> frozenset[str]:
    """What the job's back end offers (cancel, retry, resume, fetch, logs); cheap."""
    return jobs(store).capabilities(rec)


def start_finetune(store: JobStore, project_root: str | Path) -> list[JobRecord]:
    """The project's pipeline: a fine-tune where its target says, then export and evaluation here."""
    return jobs(store).start_training(project_root)


def start_export(store: JobStore, project_root: str | Path, parent: str | None = None) -> JobRecord:
    return jobs(store).submit("export", project_root, parent=parent)


def cancel(store: JobStore, rec: JobRecord) -> JobRecord:
    return jobs(store).cancel(rec.id)


def retry(store: JobStore, rec: JobRecord) -> list[JobRecord]:
    return jobs(store).retry(rec.id)


def resume(store: JobStore, rec: JobRecord) -> list[JobRecord]:
    return jobs(store).resume(rec.id)


def delete(store: JobStore, rec: JobRecord) -> None:
    jobs(store).delete(rec.id)


def evaluation_result(store: JobStore, rec: JobRecord) -> dict | None:
    """Base vs tuned loss of an evaluate job (its result.json), when it has finished."""
    import json

    try:
        return json.loads((store.job_dir(rec.id) / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def parity_mark(store: JobStore, rec: JobRecord):
    """The parity mark of the check the job ran (an export or evaluate job), or None."""
    from aitk.core import parity

    return parity.job_mark(store.job_dir(rec.id))


def child_of_kind(records: list[JobRecord], parent: JobRecord, kind: str) -> JobRecord | None:
    """The newest `kind` job of the same project created after `parent` (its child or a later run)."""
    for rec in records:  # newest first
        if rec.kind == kind and rec.project == parent.project and rec.created >= parent.created:
            return rec
    return None
