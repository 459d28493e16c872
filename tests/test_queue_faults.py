"""The queue under faults: kills, a held lock, a full disk, a crash mid-publish.

Every test drives real job processes (the CLI, or `jobrun` spawned by the scheduler). A full disk
is a real one: a small tmpfs mounted for the test (needs root or CAP_SYS_ADMIN; skipped otherwise),
since RLIMIT_FSIZE gives EFBIG rather than ENOSPC and SQLite reports that differently.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for

from aitk.core import publish, tiny
from aitk.core.jobs import JobStore, pid_alive
from aitk.core.project import create_project, regenerate

AITK = [sys.executable, "-m", "aitk.cli.main"]


def cli(*args, data: Path, env: dict | None = None, cwd=None, timeout=300):
    return subprocess.run([*AITK, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "AITK_DATA_DIR": str(data), **(env or {})})


@pytest.fixture
def job_env(monkeypatch, tmp_path):
    """Job processes the scheduler spawns from this test inherit os.environ: give them their own
    data dir (no other test's jobs take the slots) and one slot."""
    data = tmp_path / "data"
    monkeypatch.setenv("AITK_DATA_DIR", str(data))
    monkeypatch.setenv("AITK_LOCAL_SLOTS", "1")
    return data


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_test_model):
    return create_project(tmp_path_factory.mktemp("faults") / "p", tiny_spec=tiny.TEST)


def final(store, job_id, timeout=300):
    return wait_for(lambda: (r := store.get(job_id)).is_final and r, timeout=timeout, what=f"{job_id} final")


def dead_job(store: JobStore, kind="finetune", project="x"):
    """A job recorded as running whose process was killed (what kill -9, an OOM kill or a reboot leaves)."""
    rec = store.create(kind, project=project)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    store.update(rec.id, status="running", pid=proc.pid, started=time.time())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return rec


# -- reconcile also schedules ----------------------------------------------------------------
def test_job_queued_behind_a_killed_one_starts_on_the_next_command(job_env, project):
    store = JobStore(job_env)
    killed = dead_job(store)
    queued = store.create("evaluate", project=str(project.root))
    assert store.claim_next(1) == []  # the slot is taken by the (dead) running job
    out = cli("jobs", "list", data=job_env)  # any command reconciles; nothing new is submitted
    assert out.returncode == 0, out.stderr
    assert store.get(killed.id).status == "interrupted"
    rec = final(store, queued.id)
    assert rec.status == "succeeded", store.log_path(queued.id).read_text()[-2000:]
    assert rec.result and "base" in rec.result


# -- a held lock never loses a finished job's result ------------------------------------------
def hold_lock(db: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def evaluate_under_a_held_lock(job_env, project):
    """An evaluate job, started; once it has reserved its outcome file, another process takes the
    database's lock and holds it (the caller releases it)."""
    from aitk.core.scheduler import schedule

    store = JobStore(job_env)
    rec = store.create("evaluate", project=str(project.root))
    schedule(store)
    wait_for(lambda: store.outcome_path(rec.id).exists(), what="job started")
    return store, rec, hold_lock(store.db_path)


def test_finish_waits_out_a_lock_held_past_the_timeout(job_env, project, monkeypatch):
    monkeypatch.setenv("AITK_DB_TIMEOUT", "0.3")
    store, rec, holder = evaluate_under_a_held_lock(job_env, project)
    try:
        # The job has finished its work and is trying to record it, and stays alive doing so.
        wait_for(lambda: store.read_outcome(rec.id), what="job at its end")
        pid = holder.execute("SELECT pid FROM jobs WHERE id = ?", (rec.id,)).fetchone()[0]
        time.sleep(1.5)  # five lock timeouts: without retries it would have given up by now
        assert pid_alive(pid)
        assert holder.execute("SELECT status FROM jobs WHERE id = ?", (rec.id,)).fetchone()[0] == "running"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    done = final(store, rec.id)
    assert done.status == "succeeded" and done.error is None and done.result["base"]["loss"] > 0
    assert not store.outcome_path(rec.id).exists()


def test_outcome_file_is_recorded_when_the_job_gave_up_on_the_lock(job_env, project, monkeypatch):
    monkeypatch.setenv("AITK_DB_TIMEOUT", "0.3")
    monkeypatch.setenv("AITK_FINAL_WRITE_S", "1")
    store, rec, holder = evaluate_under_a_held_lock(job_env, project)
    try:
        pid = holder.execute("SELECT pid FROM jobs WHERE id = ?", (rec.id,)).fetchone()[0]
        wait_for(lambda: not pid_alive(pid), what="job process gave up and ended")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "could not record the end" in store.log_path(rec.id).read_text()
    out = cli("jobs", "show", rec.id, data=job_env)
    assert out.returncode == 0, out.stderr
    done = store.get(rec.id)
    assert done.status == "succeeded" and done.result["base"]["loss"] > 0, done
    assert "recorded from outcome.json" in store.log_path(rec.id).read_text()


# -- kill -9 of an export: its builder dies too, its leftovers go on the next run ---------------
def builder_children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"onnxruntime_genai.models.builder" in cmd and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_killed_export_takes_its_builder_along_and_the_next_export_cleans_up(job_env, project):
    store = JobStore(job_env)
    from aitk.core.scheduler import schedule

    rec = store.create("export", project=str(project.root), params={"precision": "fp32", "base_only": True})
    schedule(store)
    pid = wait_for(lambda: store.get(rec.id).pid, what="job pid")
    child = wait_for(lambda: builder_children(pid), what="model builder running")[0]
    os.kill(pid, signal.SIGKILL)  # the job process only, as the OOM killer would
    wait_for(lambda: not pid_alive(child), timeout=10, what="builder gone with its job")
    onnx_parent = project.onnx_dir("fp32").parent
    left = [p.name for p in onnx_parent.glob(".fp32-*")]
    assert left, "the killed export left no work folder (the test did not hit the build)"

    out = cli("jobs", "list", data=job_env)
    assert store.get(rec.id).status == "interrupted", out.stdout
    again = store.create("export", project=str(project.root), params={"precision": "fp32", "base_only": True})
    schedule(store)
    done = final(store, again.id)
    assert done.status == "succeeded", store.log_path(again.id).read_text()[-2000:]
    assert [p.name for p in onnx_parent.glob(".fp32-*")] == []
    assert "left by an export that did not finish" in store.log_path(again.id).read_text()
    assert publish.current_export(project, "fp32") is not None


# -- publishing is one atomic step -----------------------------------------------------------
PUBLISHER = """
import sys
from pathlib import Path
from aitk.core import publish
dest = Path(sys.argv[1])
for i in range(100000):
    staged = publish.work_dir(dest, "staged")
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
        (staged / name).write_text(str(i) * 2000)
    publish.publish(staged, dest)
    print(i, flush=True)
"""


def test_kill_9_while_publishing_never_leaves_no_adapter_or_half_of_one(tmp_path):
    proj = type("P", (), {"adapter_dir": tmp_path / "models" / "olive" / "adapter"})()
    dest = proj.adapter_dir
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(dest)], stdout=subprocess.PIPE, text=True)
    for _ in range(20):
        pub.stdout.readline()
    seen = set()
    while len(seen) < 30:  # readers see whole versions only, never none, while swaps go on
        folder = publish.current_adapter(proj)
        assert folder is not None
        contents = {(folder / n).read_text()[:10] for n in ("adapter_config.json", "tokenizer.json")}
        stamp = publish.stamp_of(folder)
        if stamp and stamp == publish.stamp_of(folder) and len(contents) == 1:
            seen.add(stamp["version"])
    pub.kill()  # kill -9 at whatever point it has reached
    pub.wait()
    folder = publish.current_adapter(proj)
    assert folder == dest and (dest / "adapter_model.safetensors").is_file()
    assert publish.version(dest) is not None
    publish.clean_leftovers(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["adapter"]


def test_crash_between_fallback_renames_is_repaired_for_readers(tmp_path):
    """Without RENAME_EXCHANGE publish takes two renames; a crash between them leaves the path
    missing with the staged folder beside it. The first reader puts it in place."""
    dest = tmp_path / "adapter"
    staged = publish.work_dir(dest, "staged")
    (staged / "adapter_config.json").write_text("{}")
    code = ("import os, sys; from pathlib import Path; from aitk.core import publish\n"
            "publish._exchange = lambda a, b: False\n"
            "real = os.replace\n"
            "def crash(a, b):\n"
            "    real(a, b)\n"
            "    if '-retired-' in str(b): os._exit(9)\n"
            "os.replace = crash\n"
            "s = publish.work_dir(Path(sys.argv[1]), 'staged'); (s / 'adapter_config.json').write_text('{\"v\": 2}')\n"
            "publish.publish(s, Path(sys.argv[1]))\n")
    publish.publish(staged, dest)
    assert subprocess.run([sys.executable, "-c", code, str(dest)]).returncode == 9
    assert not dest.exists()  # the state the crash left
    assert publish.current(dest) == dest and json.loads((dest / "adapter_config.json").read_text()) == {"v": 2}
    publish.clean_leftovers(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_olive_run_can_still_replace_the_published_adapter(tmp_path):
    """`olive run` of the project config writes models/olive/adapter in place (delete, copy);
    the published path is a real folder, so that keeps working and readers take its result."""
    from olive.resource_path import LocalFolder

    proj = type("P", (), {"adapter_dir": tmp_path / "models" / "olive" / "adapter"})()
    staged = publish.work_dir(proj.adapter_dir, "staged")
    (staged / "adapter_config.json").write_text("{}")
    publish.publish(staged, proj.adapter_dir)
    assert publish.version(proj.adapter_dir)
    olive_out = tmp_path / "olive-made"
    olive_out.mkdir()
    (olive_out / "adapter_config.json").write_text('{"olive": true}')
    LocalFolder({"path": olive_out}).save_to_dir(proj.adapter_dir.parent, "adapter", overwrite=True)
    assert json.loads((publish.current_adapter(proj) / "adapter_config.json").read_text()) == {"olive": True}
    assert publish.version(proj.adapter_dir) is None  # not one aitk published


@pytest.mark.slow
def test_export_records_the_adapter_it_was_built_from(trained):
    from aitk.core.export_state import adapter_hash

    project, _, _ = trained
    assert publish.version(project.adapter_dir)  # published by aitk, with a version stamp
    stamp = publish.stamp_of(publish.current_export(project, "fp32"))
    assert stamp["adapter"]["sha256"] == adapter_hash(publish.current_adapter(project))


# -- a full disk ----------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 4 MiB (tmpfs), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass


def test_full_disk_is_named_as_such_not_as_a_corrupt_database(small_disk, tmp_path):
    data = small_disk / "data"
    store = JobStore(data)
    store.create("evaluate", project="x")
    fill(small_disk)
    for args in (("jobs", "list"), ("jobs", "show", "x")):
        out = cli(*args, data=data)
        assert out.returncode != 0
        err = out.stderr + out.stdout
        assert "the disk is full" in err and str(data) in err and "bytes free" in err, err
        assert "move it aside" not in err and "corrupt" not in err
    (small_disk / "filler").unlink()
    out = cli("jobs", "list", data=data)  # room again: the history is all there
    assert out.returncode == 0 and "evaluate" in out.stdout, out.stderr


@pytest.mark.slow
def test_finetune_stopped_by_a_full_disk_is_recorded_as_that(small_disk, tmp_path, tiny_test_model, monkeypatch):
    proj = create_project(tmp_path / "p", tiny_spec=tiny.TEST)
    f = proj.settings.finetune
    f.max_steps, f.save_steps, f.logging_steps = 2000, 20, 10
    regenerate(proj)
    data = small_disk / "data"
    monkeypatch.setenv("AITK_DATA_DIR", str(data))
    monkeypatch.setenv("AITK_FINAL_WRITE_S", "2")  # the database is on the full disk too
    from aitk.providers.local import LocalProvider

    store = JobStore(data)
    rec = LocalProvider(store).submit("finetune", proj.root)
    wait_for(lambda: any(m.get("step", 0) >= 10 for m in store.metrics(rec.id)), what="training")
    pid = store.get(rec.id).pid
    fill(small_disk)  # the disk fills up under the running fine-tune
    wait_for(lambda: not pid_alive(pid), timeout=300, what="job process ended")
    (small_disk / "filler").unlink()
    listed = cli("jobs", "list", data=data)  # the next command records what the job left
    done = store.get(rec.id)
    assert done.status == "failed", (done, listed.stderr, store.log_path(rec.id).read_text()[-3000:],
                                     store.outcome_path(rec.id).read_bytes()[:500])
    assert "the disk is full" in done.error and str(data) in done.error and "bytes free" in done.error
    assert "interrupted" not in done.error and "killed" not in done.error
    shown = cli("jobs", "logs", rec.id, data=data)
    assert "the disk is full" in shown.stdout, shown.stdout[-2000:]


# -- telemetry stays out of the home folder ---------------------------------------------------
@pytest.mark.slow
def test_chat_writes_no_telemetry_under_home(trained, tmp_path):
    project, _, _ = trained
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "OLIVE_DISABLE_TELEMETRY",
                                                            "XDG_CACHE_HOME")}
    out = subprocess.run([*AITK, "chat", "-p", "hello", "--max-new-tokens", "4"], cwd=project.root,
                         capture_output=True, text=True, timeout=120, env={**env, "HOME": str(home)})
    assert out.returncode == 0, out.stderr
    assert list(home.rglob("*")) == [], list(home.rglob("*"))


def test_child_claimed_long_after_it_was_queued_gets_its_start_up_grace(tmp_path):
    """A child waits for its parent (minutes to hours); once claimed it is not yet running and has
    no pid for a moment. A reconcile in that moment must not call it interrupted."""
    from aitk.core.jobs import STARTING
    from aitk.core.scheduler import settle

    store = JobStore(tmp_path / "data")
    rec = store.create("export", project=str(tmp_path))
    with store._transaction() as conn:  # queued an hour ago, behind a long fine-tune
        conn.execute("UPDATE jobs SET created = ? WHERE id = ?", (time.time() - 3600, rec.id))
    assert store.claim_next(1) == [rec.id]
    assert settle(store) == []
    assert store.get(rec.id).status == STARTING
