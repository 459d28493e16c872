"""Snapshots of every screen at 80×24 and 120×40 (pytest-textual-snapshot's SVG format; files in
tests/snapshots/). Each test takes several pictures in one app run, so 22 screens cost 4 runs.

Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`, then look
at the new SVGs. The app runs on fixtures: fixed clock, device, job ids and folder, so the
pictures only change when the UI does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_textual_snapshot
from textual.widgets import Select

from aitk.tui import testing
from aitk.tui.testing import sync, until

ROOT = Path("/tmp/aitk-tui-snapshots")  # a fixed path: it shows in some screens
SIZES = [(80, 24), (120, 40)]


pytestmark = pytest.mark.usefixtures("snapshots_in_tests_snapshots")


@pytest.fixture
def world(snapshot_world):
    return snapshot_world


def steady(app) -> None:
    """No blinking cursors in pictures."""
    for widget in app.screen.query("Input, TextArea"):
        widget.cursor_blink = False


async def ready_pane(pilot, name: str, condition=lambda pane: True):
    app = pilot.app
    await until(pilot, lambda: app.pane(name) is not None and app.pane(name).ready and condition(app.pane(name))
                and app.last_update is not None, timeout=10, what=name)


async def picture(pilot) -> str:
    steady(pilot.app)
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()
    return pilot.app.export_screenshot()


@pytest.fixture
def svg(snapshot):
    return snapshot.use_extension(pytest_textual_snapshot.SVGImageExtension)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@sync
async def test_panes(size, world, svg, monkeypatch):
    """Projects, help, catalog, jobs and chat (base | tuned side by side), one app run."""
    monkeypatch.setattr("aitk.core.server.open_export", lambda model_dir: testing.FakeEngine())
    app = testing.fixture_app(start_pane="projects")
    async with app.run_test(size=size) as pilot:
        await ready_pane(pilot, "projects", lambda p: p.selected is not None)
        assert await picture(pilot) == svg(name="projects")
        await pilot.press("question_mark")
        assert await picture(pilot) == svg(name="help")
        await pilot.press("escape", "f1")
        await ready_pane(pilot, "catalog", lambda p: p.catalog is not None and p.selected)
        assert await picture(pilot) == svg(name="catalog")
        await pilot.press("f3")
        await ready_pane(pilot, "jobs", lambda p: p.selected and len(p.query_one("LossChart").train) == 37
                         and p.query_one("Log").line_count > 30)
        assert await picture(pilot) == svg(name="jobs")
        await pilot.press("f4")
        await ready_pane(pilot, "chat", lambda p: p.query_one("#chat-model", Select).value is not Select.NULL)
        pane = app.pane("chat")
        await until(pilot, lambda: "model ready" in testing.text_of(pane.query_one("#chat-status")), what="model")
        pane.query_one("#chat-mode", Select).value = "both"
        await pilot.pause()
        pane.send("What colour is a Touxkru bird?")
        await until(pilot, lambda: not pane.generating and pane.conversation.turns, what="answers")
        assert await picture(pilot) == svg(name="chat")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@sync
async def test_wizard(size, world, svg):
    """Every step of the new-project wizard, one app run."""
    app = testing.fixture_app(start_pane="projects")
    async with app.run_test(size=size) as pilot:
        await ready_pane(pilot, "projects", lambda p: p.selected is not None)
        await pilot.press("ctrl+n")
        for step in range(6):
            await until(pilot, lambda: getattr(app.screen, "index", -1) == step, timeout=10, what=f"step {step}")
            if step == 1:
                await until(pilot, lambda: app.screen.step.entries, what="catalog")
            if step == 2:
                await until(pilot, lambda: app.screen.step.problem is None, timeout=10, what="data checked")
            assert await picture(pilot) == svg(name=f"step-{step + 1}-{app.screen.step.TITLE.lower()}")
            if step < 5:  # not on the summary: that would create the project
                await pilot.press("ctrl+n")


@sync
async def test_ai_toolkit_folder(world, svg):
    """An AI Toolkit project in the projects folder: listed with its mark, then the import question."""
    from aitk_templates import TEMPLATES, materialise

    if not TEMPLATES.is_dir():
        pytest.skip(f"AI Toolkit templates not found at {TEMPLATES}")
    from aitk.core import paths

    root = paths.projects_dir() / "vscode-phi3"
    materialise("Phi-3-mini-4k-instruct", root)
    app = testing.fixture_app(start_pane="projects")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready_pane(pilot, "projects", lambda p: str(root) in p.projects and p.selected is not None)
        pane = app.pane("projects")
        pane.query_one("DataTable").move_cursor(row=list(pane.projects).index(str(root)))
        await until(pilot, lambda: pane.selected == str(root), what="AI Toolkit folder selected")
        assert await picture(pilot) == svg(name="ai-toolkit-listed")
        await pilot.press("i")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="confirm")
        assert await picture(pilot) == svg(name="ai-toolkit-import")
        await pilot.press("n")


@sync
async def test_first_hour(world, svg):
    """At 80×24: the dataset step with its verdict in view, a checkbox off then on, and the Jobs
    pane after a delete (the cursor stays on the row below the deleted one)."""
    from aitk.tui.widgets.confirm import ConfirmScreen

    app = testing.fixture_app(start_pane="projects")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready_pane(pilot, "projects", lambda p: p.selected is not None)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: getattr(app.screen, "index", -1) == 0, what="wizard")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.screen.index == 1 and app.screen.step.entries, timeout=10, what="model")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.screen.index == 2 and app.screen.step.problem is None, timeout=10,
                    what="data checked")
        step = app.screen.step
        verdict, scroll = step.query_one("#wiz-ds-issues"), step.query_one("#wiz-ds-scroll")
        assert verdict.region.bottom <= scroll.region.bottom
        assert await picture(pilot) == svg(name="dataset-verdict")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.screen.index == 3, what="training")
        box = app.screen.query_one("#f-data-pad_to_max_len")
        box.focus()
        app.screen.query_one("#wiz-form").scroll_to_widget(box, animate=False, top=True)
        assert await picture(pilot) == svg(name="checkbox-off")
        await pilot.press("space")
        await until(pilot, lambda: box.value, what="on")
        assert await picture(pilot) == svg(name="checkbox-on")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="discard?")
        await pilot.press("y")
        await pilot.press("f3")
        await ready_pane(pilot, "jobs", lambda p: p.selected and p.query_one("DataTable").row_count == 6)
        pane = app.pane("jobs")
        pane.select_job(world.jobs["failed"].id)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="delete?")
        await pilot.press("y")
        await until(pilot, lambda: pane.query_one("DataTable").row_count == 5
                    and pane.selected == world.jobs["evaluate"].id, what="deleted, cursor kept")
        await until(pilot, lambda: not app._notifications, timeout=10, what="toasts gone")
        assert await picture(pilot) == svg(name="jobs-after-delete")
