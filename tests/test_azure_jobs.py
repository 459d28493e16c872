"""Azure jobs through the one jobs facade, from the app and the real CLI, against the HTTPS fake
(tests/azure_fake): cancel stops the execution, retry runs on Azure, `aitk finetune` honours
`target.where`, and a job whose watcher died is picked up by the app's feed and `aitk jobs list`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from aitk.core.errors import AitkError
from aitk.core.jobs import JobStore
from aitk.tui import testing
from aitk.tui.testing import until
from aitk.tui.widgets.confirm import ConfirmScreen

from azure_fake import running
from azure_fake.scripts import FAST_TRAIN

RG = "rg-aitk-jobs"
AITK = [sys.executable, "-m", "aitk.cli.main"]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with running(tmp_path_factory.mktemp("fake-azure-jobs"), script=FAST_TRAIN) as server:
        server.wait_for_stream = True
        yield server


@pytest.fixture(scope="module")
def project(fake, tmp_path_factory, tiny_test_model):
    from aitk.core import tiny
    from aitk.core.project import create_project
    from aitk.providers.azure import auth
    from aitk.providers.azure.clients import AzureContext
    from aitk.providers.azure.provision import plan_config, provision

    proj = create_project(tmp_path_factory.mktemp("azjobs") / "az-jobs", tiny_spec=tiny.TEST)
    cfg = plan_config(subscription_id=fake.subscription, resource_group=RG, location="westus3", gpu="a100",
                      image="registry.example/aitk-train:test", timeout_s=1800, existing=None)
    provision(AzureContext(auth.credential(), fake.subscription), proj.root, cfg)
    return proj


def target(project_root, where: str) -> None:
    from aitk.core.project import load_project, regenerate

    proj = load_project(project_root)
    proj.settings.target.where = where
    regenerate(proj)


def wait_record(store, job_id, pred, timeout=60, what="state"):
    """Poll the record only (never a provider's status, which would restart a watcher itself)."""
    deadline = time.time() + timeout
    while not pred(rec := store.get(job_id)):
        assert time.time() < deadline, f"{what}: job {job_id} is {rec.status}\n" + \
            store.log_path(job_id).read_text()[-2000:]
        time.sleep(0.1)
    return rec


def cancel_local_children(store, parent_id):
    """The export/evaluate children would export the fake's stand-in adapter: not needed here."""
    from aitk.providers.jobs import Jobs

    for r in store.list(status=("queued",)):
        if r.parent == parent_id:
            Jobs(store).cancel(r.id)


def test_the_app_cancels_an_azure_job_on_azure_and_retries_it_there(fake, project):
    from aitk.providers.jobs import Jobs

    fake.run_env.update({"FAKE_STEPS": "400", "FAKE_SLEEP": "0.05"})
    store = JobStore()
    rec = Jobs(store).submit("finetune", project.root, on="azure")
    wait_record(store, rec.id, lambda r: r.status == "running" and store.metrics(r.id), what="running")
    exe = fake.executions[rec.params["execution"]]

    async def drive():
        app = testing.fixture_app()
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.press("f3")
            await until(pilot, lambda: app.pane("jobs") is not None and rec.id in app.pane("jobs").records,
                        what="the job listed")
            pane = app.pane("jobs")
            pane.select_job(rec.id)
            await until(pilot, lambda: pane.selected == rec.id, what="the job selected")
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="cancel asks first")
            await pilot.press("y")
            await until(pilot, lambda: exe.done, timeout=20, what="the execution stopped on Azure")
            await until(pilot, lambda: store.get(rec.id).status == "cancelled", what="the record cancelled")
            before = {r.id for r in store.list()}
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="retry asks first")
            await pilot.press("y")
            await until(pilot, lambda: any(r.kind == "finetune" and r.id not in before for r in store.list()),
                        timeout=30, what="the retry")
            return next(r for r in store.list() if r.kind == "finetune" and r.id not in before)

    fake.run_env.update({"FAKE_STEPS": "4", "FAKE_SLEEP": "0.02"})  # the retry's execution
    new = asyncio.run(drive())
    new = wait_record(store, new.id, lambda r: r.params.get("execution") or r.is_final, what="the retry started")
    assert exe.status == "Stopped" and store.get(rec.id).error == "stopped by user"
    assert new.provider == "azure" and new.params["execution"] in fake.executions
    assert new.params["execution"] != rec.params["execution"]
    cancel_local_children(store, new.id)
    done = wait_record(store, new.id, lambda r: r.is_final, what="the retried run")
    assert done.status == "succeeded" and fake.executions[new.params["execution"]].status == "Succeeded"


def test_aitk_finetune_honours_an_azure_target(fake, project, tmp_path, monkeypatch, tiny_test_model):
    """Provisioned: `aitk finetune` submits to Azure. Not provisioned: the CLI and the app refuse
    with the same words."""
    from aitk.core import tiny
    from aitk.core.project import create_project
    from aitk.providers.jobs import Jobs

    store = JobStore()
    fake.run_env.update({"FAKE_STEPS": "4", "FAKE_SLEEP": "0.02"})
    target(project.root, "azure")
    try:
        out = subprocess.run([*AITK, "finetune", "-d", "-P", str(project.root)], capture_output=True, text=True,
                             timeout=120)
    finally:
        target(project.root, "local")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[1]
    assert "(finetune on azure)" in out.stdout
    rec = store.get(job_id)
    assert rec.provider == "azure" and rec.params["execution"] in fake.executions
    assert wait_record(store, job_id, lambda r: r.is_final).status == "succeeded"

    (tmp_path / "projects").mkdir()
    bare = create_project(tmp_path / "projects" / "not-provisioned", tiny_spec=tiny.TEST)
    target(bare.root, "azure")
    with pytest.raises(AitkError) as refused:
        Jobs(store).start_training(bare.root)
    assert "no Azure resources yet" in refused.value.message and "aitk azure provision" in refused.value.hint
    before = len(store.list())
    cli = subprocess.run([*AITK, "finetune", "-d", "-P", str(bare.root)], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2
    assert cli.stderr.splitlines() == [f"error: {refused.value.message}", f"hint: {refused.value.hint}"]

    monkeypatch.setenv("AITK_PROJECTS_DIR", str(bare.root.parent))
    root = str(bare.root.resolve())

    async def drive():
        app = testing.fixture_app(start_pane="projects")
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await testing.select_project(pilot, app, root)
            await pilot.press("f")
            await until(pilot, lambda: any("no Azure resources" in n.message for n in app._notifications),
                        timeout=20, what="the refusal")
            return [n.message for n in app._notifications if "no Azure resources" in n.message]

    assert asyncio.run(drive()) == [str(refused.value)]
    assert len(store.list()) == before  # nothing queued by either


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_dead_watcher_is_restarted_by_the_app_feed_and_by_jobs_list(fake, project):
    from aitk.providers.azure import run as remote
    from aitk.tui.jobs_feed import JobsFeed

    def orphan():
        """A run whose execution ended while its watcher was dead: the record still says active."""
        rec = remote.submit(store, project.root, spawn=False)
        store.update(rec.id, pid=dead_pid())
        exe = fake.executions[rec.params["execution"]]
        deadline = time.time() + 20
        while not exe.done:
            assert time.time() < deadline
            time.sleep(0.05)
        assert store.get(rec.id).status in ("starting", "running")
        return rec

    fake.run_env.update({"FAKE_STEPS": "5", "FAKE_SLEEP": "0.02"})
    fake.wait_for_stream = False
    store = JobStore()
    try:
        by_feed = orphan()
        JobsFeed(store).poll()  # what the app's feed thread does every few seconds
        final = wait_record(store, by_feed.id, lambda r: r.is_final, what="settled by the feed")
        assert final.status == "succeeded" and len(store.metrics(by_feed.id)) == 5

        by_cli = orphan()
        listed = subprocess.run([*AITK, "jobs", "list"], capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and by_cli.id in listed.stdout
        final = wait_record(store, by_cli.id, lambda r: r.is_final, what="settled after `aitk jobs list`")
        assert final.status == "succeeded" and len(store.metrics(by_cli.id)) == 5
    finally:
        fake.wait_for_stream = True
