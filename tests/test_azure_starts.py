"""How runs start, against the fake Azure (which, like the service, drops the job's volume mounts
from an execution started with a template override): a run never overrides the template, so it
keeps its share; two runs started at once each get their own inputs."""

from __future__ import annotations

import json
import threading
import time

from test_azure import RG, _reset_fake, ctx_for, fake, project  # noqa: F401 (fixtures)


def settle(store, rec) -> str:
    """Follow the job to its end with the real watcher, in this process (no job is left active)."""
    from aitk.providers.azure import watch

    watch.run(rec.id)
    return store.get(rec.id).status


def wait_done(exe, timeout=30):
    deadline = time.time() + timeout
    while not exe.done:
        assert time.time() < deadline, "\n".join(t for _, t in exe.lines)
        time.sleep(0.05)


def test_a_start_with_a_template_override_loses_the_share_and_aitk_never_uses_one(fake, project):
    """The failure the old start had, shown on the fake; then aitk's start of the same job."""
    from azure.mgmt.appcontainers import models as am

    from aitk.core.jobs import JobStore
    from aitk.providers.azure import config, run as remote

    cfg = config.load_infra(project.root)
    job = fake._get(fake._rid(RG, f"Microsoft.App/jobs/{cfg.job}"))["properties"]["template"]["containers"][0]
    override = am.JobExecutionTemplate(containers=[am.JobExecutionContainer(
        name=job["name"], image=job["image"], command=job["command"],
        env=[am.EnvironmentVar(name="AITK_RUN", value="runs/x")],
        resources=am.ContainerResources(cpu=job["resources"]["cpu"], memory=job["resources"]["memory"]))])
    started = ctx_for(fake).apps.jobs.begin_start(RG, cfg.job, override, polling=False).result()
    lost = fake.executions[started.name]
    wait_done(lost)
    assert lost.status == "Failed" and lost.overridden
    assert any("the file share is not mounted" in t for _, t in lost.lines)

    fake.run_env.update({"FAKE_STEPS": "3", "FAKE_SLEEP": "0.01"})
    store = JobStore()
    rec = remote.submit(store, project.root, spawn=False)
    exe = fake.executions[rec.params["execution"]]
    wait_done(exe)
    assert exe.status == "Succeeded" and not exe.overridden
    assert settle(store, rec) == "succeeded"
    assert f"[aitk-job] run folder runs/{rec.id}" in [t for _, t in exe.lines]
    # The job's own template is current now: the next run starts it without changing it.
    patches = len([r for r in fake.requests if r[0] == "PATCH" and r[1].endswith(f"/jobs/{cfg.job}")])
    again = remote.submit(store, project.root, spawn=False)
    wait_done(fake.executions[again.params["execution"]])
    assert settle(store, again) == "succeeded"
    assert len([r for r in fake.requests if r[0] == "PATCH" and r[1].endswith(f"/jobs/{cfg.job}")]) == patches


def test_two_runs_started_at_once_each_get_their_own_inputs(fake, project):
    from aitk.core.jobs import JobStore
    from aitk.core.project import load_project
    from aitk.providers.azure import config, run as remote

    fake.run_env.update({"FAKE_STEPS": "3", "FAKE_SLEEP": "0.01"})
    cfg = config.load_infra(project.root)
    store = JobStore()
    # Two different inputs: a second project folder with another dataset row, same Azure job.
    import shutil

    other_root = project.root.parent / "remote-proj-b"
    shutil.rmtree(other_root, ignore_errors=True)
    shutil.copytree(project.root, other_root, ignore=shutil.ignore_patterns("models", ".aitk*"))
    other = load_project(other_root)
    data = other.root / other.settings.data.dataset
    data.write_text(data.read_text() + json.dumps({"question": "only in B?", "answer": "yes"}) + "\n")

    recs: dict[str, object] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def go(key, root):
        try:
            barrier.wait()
            recs[key] = remote.submit(store, root, spawn=False)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=("a", project.root)), threading.Thread(target=go, args=("b", other_root))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    share = fake.share_root / cfg.storage_account / cfg.file_share
    for key in ("a", "b"):
        rec = recs[key]
        exe = fake.executions[rec.params["execution"]]
        wait_done(exe)
        assert exe.status == "Succeeded"
        lines = [t for _, t in exe.lines]
        assert f"[aitk-job] run folder runs/{rec.id}" in lines  # its own run, not the other one
        claim = json.loads((share / "runs" / "executions" / f"{exe.name}.json").read_text())
        assert claim == {"run": f"runs/{rec.id}", "job": rec.id}
        assert settle(store, rec) == "succeeded"
    ma = json.loads((share / "runs" / recs["a"].id / "manifest.json").read_text())
    mb = json.loads((share / "runs" / recs["b"].id / "manifest.json").read_text())
    rel = str(project.settings.data.dataset)
    assert ma["files"][rel]["sha256"] != mb["files"][rel]["sha256"]


def test_an_execution_stuck_in_unknown_ends_with_a_clear_message_after_the_deadline(fake, project, monkeypatch):
    from aitk.core.jobs import JobStore
    from aitk.providers.azure import run as remote, watch

    fake.hold_status = "Unknown"
    monkeypatch.setenv("AITK_AZURE_STUCK_S", "0.5")
    store = JobStore()
    rec = remote.submit(store, project.root, spawn=False)
    assert watch.run(rec.id) == 1  # the watcher itself, in this process: it returns when it gives up
    final = store.get(rec.id)
    assert final.status == "failed"
    assert "stayed Unknown for more than" in final.error and "without a running replica" in final.error
    log = store.log_path(rec.id).read_text()
    assert "aitk azure quota" in log and "STUCK_TIMEOUT_SECONDS" in log
    exe = fake.executions[rec.params["execution"]]
    wait_done(exe)
    assert exe.status == "Stopped"  # and the execution was stopped, not left holding a GPU request


def test_a_new_workspace_without_its_table_yet_reads_as_no_lines(tmp_path):
    """Log Analytics answers "Failed to resolve table" until the first log arrives: no lines, no error."""
    from azure_fake import running

    from aitk.providers.azure import auth
    from aitk.providers.azure.clients import AzureContext
    from aitk.providers.azure.logs import query_logs

    with running(tmp_path / "fresh") as fresh:
        ctx = AzureContext(auth.credential(), fresh.subscription)
        assert query_logs(ctx, "00000000-0000-0000-0000-000000000000", "aitk-ft-x-abc1234") == []
        assert any(r[1].startswith("/v1/workspaces/") and r[2] == 400 for r in fresh.requests)
