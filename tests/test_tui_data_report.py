"""The data-quality report in the wizard's dataset step: planted duplicates, train/eval overlap
and too few rows show under the checks (advice: Next still works), with an 80×24 snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_textual_snapshot
from textual.widgets import Input

from aitk.core import paths
from aitk.tui import testing
from aitk.tui.testing import sync, text_of, until

ROOT = Path("/tmp/aitk-tui-data-report")  # a fixed path: the file names show in the picture


pytestmark = pytest.mark.usefixtures("snapshots_in_tests_snapshots")


@pytest.fixture
def world(snapshot_world):
    return snapshot_world


@sync
async def test_wizard_shows_data_report(world, snapshot):
    rows = [json.loads(x) for x in (paths.bundled_data() / "tiny_qa" / "train.jsonl").read_text().splitlines()[:12]]
    train = ROOT / "planted.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in [*rows, rows[2]]))
    evalf = ROOT / "planted-eval.jsonl"
    evalf.write_text(json.dumps(rows[5]) + "\n")
    app = testing.fixture_app(start_pane="projects")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.pane("projects") is not None and app.pane("projects").ready
                    and app.pane("projects").selected is not None and app.last_update is not None, what="projects")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: getattr(app.screen, "index", -1) == 0, what="wizard")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: getattr(app.screen, "index", -1) == 1 and app.screen.step.entries, what="model")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: getattr(app.screen, "index", -1) == 2, what="dataset step")
        step = app.screen.step
        step.query_one("#ds-file").value = True
        await pilot.pause(0.1)
        step.query_one("#wiz-ds-eval", Input).value = str(evalf)
        step.query_one("#wiz-ds-path", Input).value = str(train)
        issues = step.query_one("#wiz-ds-issues")
        await until(pilot, lambda: "contamination" in text_of(issues), timeout=20, what="data report")
        shown = text_of(issues)
        assert "✖ only 13 rows (fewer than 20)" in shown
        assert "⚠ exact duplicate rows in train (1): planted.jsonl:3 = planted.jsonl:13" in shown
        assert "planted-eval.jsonl:1 = planted.jsonl:6" in shown
        assert step.problem is None  # advice, not a blocking error
        step.query_one("#wiz-ds-scroll").scroll_to_widget(issues, top=True, animate=False)
        for widget in app.screen.query("Input"):
            widget.cursor_blink = False
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        assert app.export_screenshot() == snapshot.use_extension(pytest_textual_snapshot.SVGImageExtension)(
            name="dataset-report-80x24")
