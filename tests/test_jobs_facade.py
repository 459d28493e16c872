"""The provider registry and the jobs facade: every front end reaches a job's own back end.

A fake back end registered into the registry (as a plugin would be) receives the facade's calls;
the local back end runs a real retried pipeline (slow)."""

from __future__ import annotations

import subprocess
import time

import pytest

from aitk.core import tiny
from aitk.core.errors import AitkError
from aitk.core.jobs import ACTIVE, CANCELLED, QUEUED, JobStore
from aitk.core.project import create_project, load_project, regenerate
from aitk.providers import registry
from aitk.providers.base import Provider
from aitk.providers.jobs import Jobs


class Recorder(Provider):
    """A back end that runs nothing and records what it was asked."""

    name = "azure"  # stands in for the target a project can name
    kinds = frozenset({"finetune"})
    capabilities = frozenset({"cancel", "retry", "logs"})
    calls: list[tuple[str, str]] = []

    def __init__(self, store, notify=None):
        self.store = store

    def submit(self, kind, project, *, params=None, parent=None, device=None):
        rec = self.store.create(kind, project=str(project), provider=self.name, parent=parent, params=params)
        self.calls.append(("submit", rec.id))
        return rec

    def status(self, job_id):
        return self.store.get(job_id)

    def cancel(self, job_id):
        self.calls.append(("cancel", job_id))
        self.store.update(job_id, status=CANCELLED, finished=time.time())
        return self.store.get(job_id)

    def retry(self, job_id):
        self.calls.append(("retry", job_id))
        old = self.store.get(job_id)
        return self.submit(old.kind, old.project, params=old.params)

    def reconcile(self):
        self.calls.append(("reconcile", ""))
        return []

    def outputs(self, job_id):
        return {}


@pytest.fixture
def remote_project(tmp_path, tiny_test_model):
    project = create_project(tmp_path / "remote", tiny_spec=tiny.TEST)
    project.settings.target.where = "azure"
    regenerate(project)
    return load_project(project.root)


def test_a_registered_back_end_gets_every_call_for_its_jobs(remote_project):
    store = JobStore()
    Recorder.calls = []
    with registry.registered("azure", Recorder):
        jobs = Jobs(store)
        ft, export, evaluate = jobs.start_training(remote_project.root)
        # The fine-tune goes to the project's target; its pipeline waits here, behind it.
        assert (ft.provider, export.provider, evaluate.provider) == ("azure", "local", "local")
        assert export.parent == evaluate.parent == ft.id and store.get(export.id).status == QUEUED
        with pytest.raises(AitkError, match="already fine-tuning"):
            jobs.start_training(remote_project.root)
        assert jobs.capabilities(ft) == {"cancel", "retry", "logs"}
        with pytest.raises(AitkError, match="resume is not on this back end"):
            jobs.resume(ft.id)
        with pytest.raises(AitkError, match="still queued"):
            jobs.retry(ft.id)
        assert jobs.cancel(ft.id).status == CANCELLED
        with pytest.raises(AitkError, match="already cancelled"):
            jobs.cancel(ft.id)
        with pytest.raises(AitkError, match="fetch is not on this back end"):
            jobs.fetch(ft.id)
        new, *children = jobs.retry(ft.id)
        assert new.provider == "azure" and {(c.kind, c.parent, c.provider) for c in children} == \
            {("export", new.id, "local"), ("evaluate", new.id, "local")}
        jobs.reconcile_all()
        assert [c[0] for c in Recorder.calls] == ["submit", "cancel", "retry", "submit", "reconcile"]
        for rec in store.list(status=ACTIVE, project=str(remote_project.root)):
            jobs.cancel(rec.id)
    assert registry.get("azure", store).__class__.__name__ == "AzureProvider"  # restored after the block
    with pytest.raises(AitkError, match="no job back end named 'nowhere'"):
        registry.get("nowhere")


def test_a_submit_that_died_before_azure_started_is_settled(tmp_path):
    """An Azure record with no execution whose submitting process is gone fails with the reason."""
    store = JobStore(tmp_path / "data")
    gone = subprocess.Popen(["true"])
    gone.wait()
    rec = store.create("finetune", project=str(tmp_path), provider="azure", params={"run_dir": "runs/pending"})
    store.update(rec.id, pid=gone.pid)
    assert Jobs(store).reconcile_all() == [rec.id]
    after = store.get(rec.id)
    assert after.status == "failed" and "before Azure started an execution" in after.error


@pytest.mark.slow
def test_a_retried_fine_tune_runs_its_export_and_evaluation_again(tmp_path, tiny_test_model):
    project = create_project(tmp_path / "p", tiny_spec=tiny.TEST)
    f = project.settings.finetune
    f.max_steps, f.save_steps, f.logging_steps, f.eval_steps = 10, 10, 5, 10
    regenerate(project)
    jobs = Jobs()
    ft, export, evaluate = jobs.start_training(project.root)
    jobs.cancel(ft.id)
    jobs.reconcile_all()

    def final(job_id, timeout=300):
        # The record only: a reconcile racing a spawn can mark a child claimed more than a minute
        # after it was queued interrupted (core/scheduler.reconcile counts its grace from `created`).
        deadline = time.time() + timeout
        while not (rec := jobs.store.get(job_id)).is_final:
            assert time.time() < deadline, jobs.store.log_path(job_id).read_text()[-2000:]
            time.sleep(0.2)
        return rec

    assert final(export.id).status == final(evaluate.id).status == "skipped"
    new, *children = jobs.retry(ft.id)
    assert {c.kind for c in children} == {"export", "evaluate"} and all(c.parent == new.id for c in children)
    for rec in (new, *children):
        assert final(rec.id).status == "succeeded", jobs.store.log_path(rec.id).read_text()[-2000:]
    assert (project.onnx_dir() / "adapters" / f"{new.id}.onnx_adapter").is_file()  # the retry: a new adapter
