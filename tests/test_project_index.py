"""The one project index: the same projects in Projects, Chat and the CLI, wherever they live; a
project whose folder is gone is reported, never replaced; exports know whether they are current
with the adapter; `aitk serve` and `aitk chat` inside a project folder use that project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from textual.widgets import DataTable, Select, TabbedContent

from aitk.core import known_projects, project_index
from aitk.core.errors import AitkError
from aitk.core import publish
from aitk.core.export_state import adapter_hash, read_adapter
from aitk.core.finetune import publish_adapter
from aitk.core.project import load_project
from aitk.tui import testing
from aitk.tui.testing import sync, text_of, until


def aitk(*args, cwd=None, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def use_engine(monkeypatch):
    monkeypatch.setattr("aitk.core.server.open_export", lambda model_dir: testing.FakeEngine())


def export_as_the_export_step_does(root: Path, precision: str = "fp32") -> Path:
    """An adapter, and an export stamped with it (the real step: tests/test_pipeline.py)."""
    adapter = root / "models" / "olive" / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    out = root / "models" / "onnx" / precision
    staged = publish.work_dir(out, "build")
    (staged / "genai_config.json").write_text("{}")
    publish.publish(staged, out, adapter=read_adapter(adapter))
    return out


def publish_new_adapter(root: Path, tmp: Path, config: str = '{"r": 16}') -> None:
    """What a new fine-tune (a retry) does at its end: a different adapter becomes the project's."""
    run = tmp / f"run-{time.monotonic_ns()}" / "adapter"
    shutil.copytree(load_project(root).adapter_dir, run)
    (run / "adapter_config.json").write_text(config)
    publish_adapter(load_project(root), run)


def select_options(select: Select) -> list[tuple[str, str]]:
    return [(str(label), str(value)) for label, value in select._options if value is not Select.NULL]


# -- the index ----------------------------------------------------------------------------------
def test_stamped_export_is_current_until_a_different_adapter_is_published(world, tmp_path):
    root = testing.fabricate_project("stamped")
    export_as_the_export_step_does(root)
    [e] = project_index.exports(root)
    assert e.current and e.label == "fp32"
    copy = tmp_path / "copied"  # copying the project (mtimes kept or not) changes nothing
    shutil.copytree(root, copy)
    assert project_index.exports(copy)[0].current
    for f in (copy / "models" / "olive" / "adapter").iterdir():
        os.utime(f, (time.time() + 60, time.time() + 60))  # touched, same content: still current
    assert project_index.exports(copy)[0].current
    publish_new_adapter(root, tmp_path)
    [e] = project_index.exports(root)
    assert e.stale and e.label == "fp32 (stale)" and "export again" in e.summary
    assert project_index.read_entry(root).chat_state == "stale"


def test_export_from_before_stamps_is_judged_by_mtime(world):
    root = testing.fabricate_project("legacy", exported=True)  # no stamp: adapter written first
    assert project_index.exports(root)[0].current
    later = time.time() + 60
    os.utime(root / "models" / "olive" / "adapter" / "adapter_config.json", (later, later))
    assert project_index.exports(root)[0].stale


def test_index_lists_remembered_and_job_projects_and_skips_gone_ones(world, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = aitk("project", "new", str(elsewhere / "qa"), "--model", "qwen2.5-0.5b")
    assert code == 0, err
    job_only = testing.fabricate_project("from-a-job")
    moved = elsewhere / "from-a-job"
    shutil.move(job_only, moved)
    world.store.create("finetune", project=str(moved))
    names = {e.name for e in project_index.list_projects()}
    assert names == {"demo-qa", "support-bot", "qa", "from-a-job"}
    code, out, _ = aitk("project", "list", "--json")
    assert code == 0 and {e["name"] for e in json.loads(out)} == names
    shutil.rmtree(elsewhere / "qa")
    assert "qa" not in {e.name for e in project_index.list_projects()}
    with pytest.raises(AitkError, match="is gone"):
        project_index.check_present(elsewhere / "qa")


def test_remembered_list_survives_a_broken_file(world, tmp_path):
    (Path(world.env["AITK_DATA_DIR"]) / known_projects.FILE).write_text("{not json")
    assert known_projects.known() == []
    known_projects.remember(tmp_path)
    assert known_projects.known() == [str(tmp_path.resolve())]
    assert not list(Path(world.env["AITK_DATA_DIR"]).glob(f".{known_projects.FILE}-*"))  # no temp file left


def test_remembered_folders_that_are_gone_are_dropped_at_the_next_add(world, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    known_projects.remember(tmp_path / "a")
    known_projects.remember(tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    assert len(known_projects.known()) == 2  # reading never rewrites
    (tmp_path / "c").mkdir()
    known_projects.remember(tmp_path / "c")
    assert known_projects.known() == [str((tmp_path / n).resolve()) for n in ("b", "c")]


# -- the CLI ------------------------------------------------------------------------------------
def test_project_show_reports_exports_and_staleness(world, tmp_path):
    root = testing.fabricate_project("shown")
    export_as_the_export_step_does(root)
    code, out, err = aitk("project", "show", cwd=root / "dataset")  # found from the cwd upward
    assert code == 0, err
    assert "fp32 current" in out
    publish_new_adapter(root, tmp_path)
    code, out, _ = aitk("project", "show", "-P", str(root))
    assert "fp32 stale: the adapter changed after this export" in out
    code, out, _ = aitk("project", "show", "--json", "-P", str(root))
    assert [e["state"] for e in json.loads(out)["exports"]] == ["stale"]
    code, out, _ = aitk("project", "list")
    assert code == 0 and any(line.startswith("shown") and "fp32 (stale)" in line for line in out.splitlines())


def test_a_deleted_project_folder_is_one_clear_error(world, tmp_path):
    code, out, err = aitk("project", "show", "-P", str(tmp_path / "was-here"))
    assert code == 2 and err.startswith("error: project folder") and "does not exist" in err
    assert "Traceback" not in err


# -- the app ------------------------------------------------------------------------------------
@sync
async def test_chat_lists_exactly_what_projects_lists(world, tmp_path, use_engine):
    """A project made with `aitk project new` outside the projects folder is in both; `t` on it in
    Projects opens its model; a stale export is marked in both and Projects does not say ready."""
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    code, _, err = aitk("project", "new", str(elsewhere / "qa"), "--model", "qwen2.5-0.5b")
    assert code == 0, err
    qa = (elsewhere / "qa").resolve()
    export_as_the_export_step_does(qa)
    stale = testing.fabricate_project("stale-bot")
    export_as_the_export_step_does(stale)
    publish_new_adapter(stale, tmp_path)
    app = testing.fixture_app()
    async with app.run_test(size=(110, 30), notifications=True) as pilot:
        await until(pilot, lambda: app.pane("projects") is not None and len(app.pane("projects").projects) == 4,
                    what="four projects listed")
        projects = app.pane("projects")
        table = projects.query_one(DataTable)
        chat_cell = {str(table.get_row(root)[0]): str(table.get_row(root)[4]) for root in projects.projects}
        # "?": parity not checked (qa's export is not at its settings' precision: no mark)
        assert chat_cell == {"demo-qa": "ready ?", "qa": "ready", "stale-bot": "stale ?", "support-bot": "—"}
        in_projects = sorted((f"{p.name} · {e.label}", str(e.path))
                             for p in projects.projects.values() for e in p.exports)
        table.move_cursor(row=list(projects.projects).index(str(stale.resolve())))
        await until(pilot, lambda: projects.selected == str(stale.resolve()), what="stale-bot selected")
        assert "ONNX fp32 stale: the adapter changed" in text_of(projects.query_one("#project-info"))

        table.move_cursor(row=list(projects.projects).index(str(qa)))
        await until(pilot, lambda: projects.selected == str(qa), what="qa selected")
        await pilot.press("t")
        await until(pilot, lambda: app.query_one("#panes", TabbedContent).active == "chat", what="chat")
        select = app.pane("chat").query_one("#chat-model", Select)
        await until(pilot, lambda: select.value == str(qa / "models" / "onnx" / "fp32"), what="qa's model chosen")
        assert sorted(select_options(select)) == in_projects
        assert ("stale-bot · fp32 (stale)", str(stale.resolve() / "models" / "onnx" / "fp32")) in in_projects


@sync
async def test_job_whose_project_is_gone_says_so(world):
    gone = testing.fabricate_project("gone-bot", exported=True)
    ft = testing.fabricate_job(world.store, "finetune", "succeeded", gone, created=testing.FIXED_NOW - 60,
                               finished=testing.FIXED_NOW - 30)
    testing.fabricate_job(world.store, "export", "succeeded", gone, created=testing.FIXED_NOW - 59,
                          parent=ft.id, finished=testing.FIXED_NOW - 20)
    shutil.rmtree(gone)
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await pilot.press("f3")
        await until(pilot, lambda: app.pane("jobs") is not None and ft.id in app.pane("jobs").records,
                    what="jobs listed")
        jobs = app.pane("jobs")
        jobs.select_job(ft.id)
        for key in ("o", "t"):
            app.clear_notifications()
            await pilot.press(key)
            await until(pilot, lambda: any("is gone" in n.message for n in app._notifications),
                        what=f"{key}: the project is gone")
            assert str(gone) in next(n.message for n in app._notifications if "is gone" in n.message)
            assert app.query_one("#panes", TabbedContent).active == "jobs"


# -- a real export ------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_inside_a_project_folder_serves_that_project(trained):
    project, _, _ = trained
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aitk.cli.main", "serve", "--port", str(port)],
                            cwd=project.root / "dataset", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).json()
                break
            except httpx.HTTPError:
                assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else ""
                time.sleep(0.2)
        ids = [m["id"] for m in models["data"]]
        assert project.name in ids and "tiny" not in ids, ids
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_chat_inside_a_project_folder_uses_that_project(trained, learned):
    project, _, _ = trained
    row = learned[0]
    code, out, err = aitk("chat", "-p", row["question"], "--max-new-tokens", "12", cwd=project.root / "dataset")
    assert code == 0, err
    assert out.strip() == row["answer"]
    assert "stale" not in err


@pytest.mark.slow
def test_real_export_is_current_then_stale_after_a_new_adapter(trained, tmp_path):
    project, _, _ = trained
    copy = tmp_path / "proj"
    shutil.copytree(project.root, copy)  # the session's project stays as it is for the other tests
    stamp = publish.stamp_of(copy / "models" / "onnx" / "fp32")  # written by the export step
    active = load_project(copy).adapter_dir  # the active one of the project's named adapters
    assert active.parent == copy / "models" / "adapters"
    assert stamp["adapter"]["sha256"] == adapter_hash(active)
    code, out, err = aitk("project", "show", "-P", str(copy))
    assert code == 0 and "fp32 current" in out, (out, err)
    publish_new_adapter(copy, tmp_path, config=(active / "adapter_config.json").read_text() + "\n")
    code, out, _ = aitk("project", "show", "-P", str(copy))
    assert "fp32 stale" in out
    code, out, err = aitk("chat", "-P", str(copy), "-p", "hi", "--max-new-tokens", "2")
    assert code == 0 and "warning: the fp32 export of proj is stale" in err

