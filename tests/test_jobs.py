"""The job queue: survives its submitter, records what really happened, never loses a record."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for

from aitk.core import follow, jobs, tiny
from aitk.core.errors import AitkError
from aitk.core.jobs import JobStore
from aitk.core.project import create_project, regenerate
from aitk.core.scheduler import reconcile
from aitk.providers.local import LocalProvider

AITK = [sys.executable, "-m", "aitk.cli.main"]


def group_alive(pgid: int) -> bool:
    """Any non-zombie process still in this process group?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture(scope="module")
def slow_project(tmp_path_factory, tiny_test_model):
    """A project whose fine-tune runs long enough to interrupt, with frequent checkpoints."""
    project = create_project(tmp_path_factory.mktemp("jobs") / "p", tiny_spec=tiny.TEST)
    f = project.settings.finetune
    f.max_steps, f.save_steps, f.logging_steps, f.eval_steps, f.per_device_train_batch_size = 500, 50, 10, 250, 8
    regenerate(project)
    return project


def step_reached(store, job_id, step):
    return any(m.get("step", 0) >= step for m in store.metrics(job_id))


@pytest.mark.slow
def test_job_outlives_killed_cli_and_a_new_cli_reattaches(slow_project):
    cli = subprocess.Popen([*AITK, "finetune"], cwd=slow_project.root, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    store = JobStore()
    first = cli.stdout.readline()  # "job <id> (finetune) starting — log: ..."
    job_id = first.split()[1]
    wait_for(lambda: store.get(job_id).status == "running", what="job running")
    cli.kill()  # kill -9 of the CLI that submitted it
    cli.wait()
    rec = wait_for(lambda: (r := store.get(job_id)).is_final and r, timeout=300, what="job end")
    assert rec.status == "succeeded", store.log_path(job_id).read_text()[-2000:]
    again = subprocess.run([*AITK, "jobs", "logs", "-f", job_id], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and f"job {job_id} (finetune) succeeded" in again.stdout
    assert "step 500/500" in again.stdout


def training(project, step: int, what: str):
    """A fine-tune of `project`, once it has logged `step`: (provider, store, record, its pid)."""
    provider = LocalProvider()
    rec = provider.submit("finetune", project.root)
    wait_for(lambda: step_reached(provider.store, rec.id, step), what=what)
    return provider, provider.store, rec, provider.store.get(rec.id).pid


@pytest.mark.slow
def test_killed_job_is_interrupted_then_resumes_without_repeating_steps(slow_project):
    provider, store, rec, pid = training(slow_project, 130, "past the first checkpoints")
    os.killpg(pid, signal.SIGKILL)  # kill -9 of the job's process mid-training
    wait_for(lambda: not group_alive(pid), timeout=10, what="process gone")
    reconcile(store)  # what every app/CLI start does
    rec = store.get(rec.id)
    assert rec.status == "interrupted" and "resume" in rec.error
    assert (store.job_dir(rec.id) / "checkpoints").is_dir()
    log_before = store.log_path(rec.id).read_text()

    provider.resume(rec.id)
    done = wait_for(lambda: (r := store.get(rec.id)).is_final and r, timeout=300, what="resumed job end")
    assert done.status == "succeeded", store.log_path(rec.id).read_text()[-2000:]
    log_after = store.log_path(rec.id).read_text()
    assert log_after.startswith(log_before) and "resuming from checkpoint-" in log_after
    steps = [m["step"] for m in store.metrics(rec.id) if "loss" in m]
    assert len(steps) == len(set(steps)), "a step was recorded twice"
    assert steps == sorted(steps) and steps[-1] == 500 and steps[0] == 10


@pytest.mark.slow
def test_cancel_kills_the_process_group_within_5s(slow_project):
    provider, store, rec, pid = training(slow_project, 20, "training")
    t0 = time.time()
    provider.cancel(rec.id)
    wait_for(lambda: not group_alive(pid), timeout=5, what="process group gone")
    assert time.time() - t0 < 5
    rec = store.get(rec.id)
    assert rec.status == "cancelled"
    log = store.log_path(rec.id).read_text()
    assert "[aitk] cancelled by user" in log and "[aitk-metric]" in log
    with pytest.raises(AitkError, match="already cancelled"):
        provider.cancel(rec.id)


def test_child_job_skipped_when_parent_fails(tmp_path):
    store = JobStore(tmp_path)
    parent = store.create("finetune", project="x")
    child = store.create("export", project="x", parent=parent.id)
    store.update(parent.id, status="failed")
    assert store.claim_next(1) == []
    assert store.get(child.id).status == "skipped" and parent.id in store.get(child.id).error


def test_slots_and_order(tmp_path):
    store = JobStore(tmp_path)
    a, b, c = (store.create("evaluate", project="x") for _ in range(3))
    assert store.claim_next(2) == [a.id, b.id]
    assert store.claim_next(2) == []
    store.update(a.id, status="succeeded")
    assert store.claim_next(2) == [c.id]


def test_dead_process_reconciled_to_interrupted(tmp_path):
    store = JobStore(tmp_path)
    rec = store.create("finetune", project="x")
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.update(rec.id, status="running", pid=dead.pid, started=time.time())
    assert reconcile(store) == [rec.id]
    assert store.get(rec.id).status == "interrupted"
    assert "marked interrupted" in store.log_path(rec.id).read_text()


SUBMIT = """
import sys, time
from pathlib import Path
from aitk.core.jobs import JobStore
root, start = Path(sys.argv[1]), float(sys.argv[2])
store = JobStore(root)
while time.time() < start:
    time.sleep(0.001)
for i in range(50):
    store.create("evaluate", project=f"p-{sys.argv[3]}-{i}")
"""


def test_two_processes_submit_50_each_none_lost_or_doubled(tmp_path):
    JobStore(tmp_path)  # schema in place
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", SUBMIT, str(tmp_path), str(start), tag]) for tag in "ab"]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    recs = JobStore(tmp_path).list()
    assert len(recs) == 100 and len({r.id for r in recs}) == 100
    assert {r.project for r in recs} == {f"p-{t}-{i}" for t in "ab" for i in range(50)}


def test_corrupted_database_clear_error_nothing_overwritten(tmp_path):
    db = tmp_path / "jobs.db"
    junk = b"this is not a database\x00" * 200
    db.write_bytes(junk)
    with pytest.raises(AitkError) as e:
        JobStore(tmp_path)
    assert str(db) in str(e.value) and "move it aside" in e.value.hint
    assert db.read_bytes() == junk


def test_locked_database_clear_error(tmp_path, monkeypatch):
    store = JobStore(tmp_path)
    monkeypatch.setattr(jobs, "DB_TIMEOUT_S", 0.3)
    holder = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(AitkError) as e:
            store.create("evaluate", project="x")
        assert "locked" in str(e.value) and str(tmp_path / "jobs.db") in str(e.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.list() == []


def test_newer_schema_refused(tmp_path):
    JobStore(tmp_path)
    conn = sqlite3.connect(tmp_path / "jobs.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(AitkError, match="newer aitk"):
        JobStore(tmp_path)


def test_migration_from_v1(tmp_path):
    """A database written by the first schema gains the new column and keeps its rows."""
    conn = sqlite3.connect(tmp_path / "jobs.db")
    conn.executescript(jobs.MIGRATIONS[0] + ";PRAGMA user_version=1;")
    conn.execute("INSERT INTO jobs (id, kind, status, created) VALUES ('old', 'finetune', 'succeeded', 1.0)")
    conn.commit()
    conn.close()
    store = JobStore(tmp_path)
    assert store.get("old").result is None
    store.update("old", result={"base": {"loss": 2.0}})
    assert store.get("old").result == {"base": {"loss": 2.0}}


def test_follow_reads_only_new_clean_lines(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes(b"\x1b[32mgreen\x1b[0m\n 10%|#   \r 50%|####  \r100%|######\npartial")
    chunk = follow.read_from(log)
    assert chunk.lines == ["green", "100%|######"]
    with open(log, "ab") as f:
        f.write(b" line\nnext\n")
    chunk2 = follow.read_from(log, chunk.offset)
    assert chunk2.lines == ["partial line", "next"]
    assert follow.read_from(log, chunk2.offset).lines == []
    last = follow.read_from(log, 0, keep_last=2)  # a capped reader: the tail only, same offset
    assert last.lines == ["partial line", "next"] and last.offset == chunk2.offset
