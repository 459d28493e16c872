"""The one way front ends (the app, the CLI, the demo) start and steer jobs.

Every call goes to the job's own back end through the registry: a cancel of an Azure run stops
its execution, a retry runs where the original ran, a project's fine-tune runs where its
`target.where` says. What may be done to a job is decided here once (`refusal`), so the app and
the CLI refuse the same things with the same words.

Calls may block (SQLite, spawning a process, Azure round trips): run them off a UI thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..core import follow
from ..core.errors import AitkError
from ..core.jobs import ACTIVE, CANCELLED, FAILED, INTERRUPTED, JobRecord, JobStore
from . import registry
from .base import Provider

# The pipeline behind a fine-tune: children that run here once it succeeds, on its adapter.
PIPELINE = ("export", "evaluate")


class Jobs:
    def __init__(self, store: JobStore | None = None, notify: Callable[[str], None] | None = None):
        self.store = store or JobStore()
        self.notify = notify  # progress notes from slow back ends (uploads), e.g. to stderr

    # -- where ----------------------------------------------------------------------------------
    def provider(self, job: JobRecord | str) -> Provider:
        rec = job if isinstance(job, JobRecord) else self.store.get(job)
        return registry.for_record(rec, self.store, self.notify)

    def capabilities(self, job: JobRecord | str) -> frozenset[str]:
        """What its back end offers ({"cancel", "retry", ...}); front ends grey out the rest."""
        return self.provider(job).capabilities

    def refusal(self, action: str, job: JobRecord | str) -> AitkError | None:
        """Why `action` (cancel, retry, resume, fetch, delete) cannot be done to this job now, or None."""
        rec = job if isinstance(job, JobRecord) else self.store.get(job)
        if action != "delete" and action not in self.capabilities(rec):
            return self.provider(rec)._unsupported(action, rec.id)
        if action == "cancel" and rec.status not in ACTIVE:
            return AitkError(f"job {rec.id} is already {rec.status}", "nothing to cancel")
        if action in ("retry", "delete", "fetch") and rec.status in ACTIVE:
            return AitkError(f"job {rec.id} is still {rec.status}", f"cancel it first, or wait for it to {action}"
                             if action != "fetch" else "its outputs are fetched when it ends")
        if action == "resume":
            if rec.kind != "finetune":
                return AitkError(f"job {rec.id} is a {rec.kind} job; only fine-tunes resume", "use `aitk jobs retry`")
            if rec.status not in (INTERRUPTED, FAILED, CANCELLED):
                return AitkError(f"job {rec.id} is {rec.status}", "only interrupted, failed or cancelled jobs resume")
        return None

    def _check(self, action: str, job_id: str) -> JobRecord:
        try:
            rec = self.status(job_id)  # reconciled first: a job whose process died may be resumed
        except AitkError:
            if action != "delete":
                raise
            rec = self.store.get(job_id)  # a record of a back end this aitk lacks can still be deleted
        if (why := self.refusal(action, rec)) is not None:
            raise why
        return rec

    # -- starting -------------------------------------------------------------------------------
    def submit(self, kind: str, project, *, params: dict | None = None, parent: str | None = None,
               device: str | None = None, on: str | None = None) -> JobRecord:
        """One job, on the back end this project runs `kind` jobs on (or the one named by `on`)."""
        from ..core.project import load_project

        proj = load_project(project)
        target = registry.get(on, self.store, self.notify) if on else \
            registry.for_project(proj, kind, self.store, self.notify)
        return target.submit(kind, proj.root, params=params, parent=parent, device=device)

    def start_training(self, project, *, then_export: bool = True, then_evaluate: bool = True) -> list[JobRecord]:
        """A fine-tune where the project's target says, then (children that run here once it
        succeeds) an export, so chat is ready at the end, and an evaluation of base vs tuned."""
        from ..core.project import load_project

        proj = load_project(project)
        active = [r for r in self.store.list(status=ACTIVE, project=str(proj.root)) if r.kind == "finetune"]
        if active:
            raise AitkError(f"{proj.name} is already fine-tuning (job {active[0].id})",
                            "wait for it, or cancel it first")
        finetune = self.submit("finetune", proj.root)
        kinds = [k for k, on in zip(PIPELINE, (then_export, then_evaluate)) if on]
        return [finetune, *self._children(finetune, kinds)]

    def _children(self, parent: JobRecord, kinds, like: str | None = None) -> list[JobRecord]:
        """Queue `kinds` behind `parent`, each with the params of the same kind of child of `like`
        (the job retried or resumed), so a retried pipeline exports at the same precision."""
        before = [r for r in self.store.list(project=parent.project) if r.parent == like] if like else []
        jobs = []
        for kind in kinds:
            params = next((r.params for r in before if r.kind == kind), None)
            jobs.append(self.submit(kind, parent.project, params=params, parent=parent.id))
        return jobs

    # -- steering -------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        rec = self._check("cancel", job_id)
        return self.provider(rec).cancel(rec.id)

    def retry(self, job_id: str) -> list[JobRecord]:
        """A new job with the same inputs on the same back end; for a fine-tune, its export and
        evaluation are queued again behind it (else chat would serve the old adapter)."""
        rec = self._check("retry", job_id)
        new = self.provider(rec).retry(rec.id)
        return [new, *self._children(new, PIPELINE if rec.kind == "finetune" else (), like=rec.id)]

    def resume(self, job_id: str) -> list[JobRecord]:
        """The same fine-tune continues from its last checkpoint (no step twice); its export and
        evaluation, skipped when it stopped, are queued again behind it."""
        rec = self._check("resume", job_id)
        resumed = self.provider(rec).resume(rec.id)
        waiting = {r.kind for r in self.store.list(status=ACTIVE, project=rec.project) if r.parent == rec.id}
        return [resumed, *self._children(resumed, [k for k in PIPELINE if k not in waiting], like=rec.id)]

    def rerun(self, job_id: str, *, dry_run: bool = False) -> tuple[JobRecord | None, list[str]]:
        """A new job of the same kind from the job's manifest (the settings, params and device it
        recorded, not aitk.toml's now), and what differs now: package versions, data, base model,
        and the project's current settings. `dry_run`: only the differences."""
        from ..core import provenance
        from ..core.project import load_project

        rec = self.store.get(job_id)
        manifest = provenance.read(self.store.job_dir(rec.id))
        if manifest is None:
            raise AitkError(f"job {rec.id} has no manifest.json to rerun from",
                            "jobs record one when they start on this machine; use `aitk jobs retry` for this one")
        if rec.provider != "local":
            raise AitkError(f"job {rec.id} ran on {rec.provider}; reruns from a manifest run here",
                            "use `aitk jobs retry` to run it again where it ran")
        project = load_project(rec.project)
        then = provenance.project_with(project, manifest["settings"])
        now = provenance.build(then, kind=rec.kind, device=manifest["device"], olive_config=None)
        diffs = provenance.differences(manifest, now, project.settings.model_dump(mode="json"))
        if dry_run:
            return None, diffs
        params = {**manifest.get("params", {}), "settings": manifest["settings"]}
        params.pop("resume", None)
        return self.submit(rec.kind, project.root, params=params, device=manifest["device"], on="local"), diffs

    def manifest(self, job_id: str) -> dict | None:
        from ..core import provenance

        return provenance.read(self.store.job_dir(self.store.get(job_id).id))

    def fetch(self, job_id: str, *, publish: bool = True) -> dict[str, Path]:
        rec = self._check("fetch", job_id)
        return self.provider(rec).fetch(rec.id, publish=publish)

    def delete(self, job_id: str) -> None:
        rec = self._check("delete", job_id)
        self.store.delete(rec.id)

    # -- reading --------------------------------------------------------------------------------
    def status(self, job_id: str) -> JobRecord:
        rec = self.store.get(job_id)
        return self.provider(rec).status(rec.id)

    def logs(self, job_id: str, offset: int = 0, *, source: str = "auto") -> follow.Chunk:
        rec = self.store.get(job_id)
        return self.provider(rec).logs(rec.id, offset, source=source)

    def outputs(self, job_id: str) -> dict[str, Path]:
        rec = self.store.get(job_id)
        return self.provider(rec).outputs(rec.id)

    def details(self, job_id: str, *, live: bool = True) -> dict[str, str]:
        rec = self.store.get(job_id)
        return self.provider(rec).details(rec.id, live=live)

    def reconcile_all(self) -> list[str]:
        """Every back end with active jobs brings them in line with reality: vanished local
        processes become interrupted, dead Azure watchers are restarted (and settle their run)."""
        names = {"local"} | {r.provider for r in self.store.list(status=ACTIVE)}
        changed: list[str] = []
        for name in sorted(names):
            try:
                provider = registry.get(name, self.store, self.notify)
            except AitkError:
                continue  # a record of a back end this aitk lacks: nothing here can follow it
            changed += provider.reconcile()
        return changed
