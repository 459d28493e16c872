"""Projects pane: an AI Toolkit folder in the projects folder is listed with its mark and imported
by keys (i, then y), in a worker; AI Toolkit's files stay as they were."""

from __future__ import annotations

import hashlib

import pytest
from textual.widgets import DataTable

from aitk.core import paths
from aitk.tui import testing
from aitk.tui.testing import sync, text_of, until
from aitk_templates import materialise, needs_templates

pytestmark = needs_templates


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = testing.World(tmp_path / "aitk", monkeypatch.setenv)
    yield w
    w.close()


def digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@sync
async def test_an_ai_toolkit_folder_is_marked_and_imported_by_keys(world):
    root = (paths.projects_dir() / "vscode-phi3").resolve()
    materialise("Phi-3-mini-4k-instruct", root)
    before = digests(root)
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.pane("projects") is not None and str(root) in app.pane("projects").projects,
                    what="AI Toolkit folder listed")
        pane = app.pane("projects")
        table = pane.query_one(DataTable)
        assert str(table.get_row(str(root))[0]) == "◆ vscode-phi3"
        assert str(table.get_row(str(root))[3]) == "import: i"
        table.move_cursor(row=list(pane.projects).index(str(root)))
        await until(pilot, lambda: pane.selected == str(root), what="selected")
        assert "AI Toolkit project" in text_of(pane.query_one("#project-info"))
        await pilot.press("f")  # not imported yet: says so, submits nothing
        await pilot.pause(0.1)
        assert len(world.store.list()) == 6
        await pilot.press("i")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="confirm")
        await pilot.press("y")
        await until(pilot, lambda: pane.projects.get(str(root)) is not None
                    and pane.projects[str(root)].kind == "aitk", timeout=20, what="imported")
        assert (root / "aitk.toml").is_file()
        assert {k: v for k, v in digests(root).items() if k in before} == before
        await until(pilot, lambda: pane.selected == str(root), what="still selected")
        detail = text_of(pane.query_one("#project-info"))
        assert "finetune.lora_r = 64" in detail and "not carried:" in detail and "qlora" in detail
        assert str(table.get_row(str(root))[0]) == "◆ vscode-phi3"
