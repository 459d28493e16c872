"""Starting, stopping and cleaning up jobs through the local provider.

Every function here may block (SQLite, spawning a process, a cancel's grace period, pydantic on
first use): call them from worker threads, never on the UI thread.
"""

from __future__ import annotations

from pathlib import Path

from aitk.core.errors import AitkError
from aitk.core.jobs import ACTIVE, JobRecord, JobStore


def provider(store: JobStore):
    from aitk.providers.local import LocalProvider

    return LocalProvider(store)


def start_finetune(store: JobStore, project_root: str | Path, *, then_export: bool = True,
                   then_evaluate: bool = True) -> list[JobRecord]:
    """A fine-tune, then (as children that run only if it succeeds) an export, so chat is ready at
    the end, and an evaluation of base vs tuned on the eval data.

    A project whose target is Azure fine-tunes there (the children still run here, on the
    fetched adapter)."""
    from aitk.core.project import load_project

    local = provider(store)
    trainer = local
    if load_project(project_root).settings.target.where == "azure":
        from aitk.providers.azure.provider import AzureProvider

        trainer = AzureProvider(store)
    finetune = trainer.submit("finetune", Path(project_root))
    return [finetune, *_children(local, project_root, finetune.id, then_export, then_evaluate)]


def _children(local, project_root, parent: str, export: bool = True, evaluate: bool = True) -> list[JobRecord]:
    jobs = []
    if export:
        jobs.append(local.submit("export", Path(project_root), parent=parent))
    if evaluate:
        jobs.append(local.submit("evaluate", Path(project_root), parent=parent))
    return jobs


def start_export(store: JobStore, project_root: str | Path, parent: str | None = None) -> JobRecord:
    return provider(store).submit("export", Path(project_root), parent=parent)


def cancel(store: JobStore, rec: JobRecord) -> JobRecord:
    return provider(store).cancel(rec.id)


def retry(store: JobStore, rec: JobRecord) -> JobRecord:
    if rec.status in ACTIVE:
        raise AitkError(f"job {rec.id} is still {rec.status}", "cancel it first, or wait for it")
    return provider(store).retry(rec.id)


def last_checkpoint(store: JobStore, rec: JobRecord) -> Path | None:
    from aitk.core.finetune import last_checkpoint as newest

    return newest(store.job_dir(rec.id) / "checkpoints")


def resume(store: JobStore, rec: JobRecord) -> list[JobRecord]:
    """The same job continues from its last checkpoint (no step twice); its export and evaluation,
    skipped when it stopped, are queued again behind it. The provider says why when it cannot."""
    local = provider(store)
    resumed = local.resume(rec.id)
    return [resumed, *_children(local, rec.project, rec.id)]


def delete(store: JobStore, rec: JobRecord) -> None:
    if rec.status in ACTIVE:
        raise AitkError(f"job {rec.id} is {rec.status}", "cancel it before deleting it")
    store.delete(rec.id)


def evaluation_result(store: JobStore, rec: JobRecord) -> dict | None:
    """Base vs tuned loss of an evaluate job (its result.json), when it has finished."""
    import json

    try:
        return json.loads((store.job_dir(rec.id) / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def child_of_kind(records: list[JobRecord], parent: JobRecord, kind: str) -> JobRecord | None:
    """The newest `kind` job of the same project created after `parent` (its child or a later run)."""
    for rec in records:  # newest first
        if rec.kind == kind and rec.project == parent.project and rec.created >= parent.created:
            return rec
    return None
