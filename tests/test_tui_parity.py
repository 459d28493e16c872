"""The parity mark in the app: Projects (table and detail) and Jobs (table, head and the panel
beside the chart), passed, failed (a warning with the divergent example), stale and not checked;
snapshots at 80×24 in tests/snapshots/test_tui_parity/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_textual_snapshot

from aitk.core import paths, publish
from aitk.tui import testing
from aitk.tui.testing import sync, until

ROOT = Path("/tmp/aitk-tui-parity")  # fixed: it shows in the pictures

pytestmark = pytest.mark.usefixtures("snapshots_in_tests_snapshots")


@pytest.fixture
def svg(snapshot):
    return snapshot.use_extension(pytest_textual_snapshot.SVGImageExtension)


async def picture(pilot) -> str:
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()
    return pilot.app.export_screenshot()


def chat_cell(pane, root: str) -> str:
    return testing.text_of(pane.query_one("DataTable").get_cell(root, "chat")).strip()


@sync
async def test_parity_marks(snapshot_world, svg):
    world = snapshot_world
    demo = paths.projects_dir() / "demo-qa"
    support = paths.projects_dir() / "support-bot"
    testing.fabricate_parity(world.store, demo, world.jobs["export"], passed=False)
    app = testing.fixture_app(start_pane="projects")
    async with app.run_test(size=(80, 24)) as pilot:
        await testing.select_project(pilot, app, str(demo))
        pane = app.pane("projects")
        assert chat_cell(pane, str(demo)) == "ready ✘"
        assert chat_cell(pane, str(support)) == "—"  # no export: nothing to check, no mark
        detail = testing.text_of(pane.query_one("#project-info"))
        assert "✘ failed (fp32): onnx vs torch 14/32; serve vs torch 14/32; chat template: export fp32" in detail
        assert "'Who invented the Brounshan?'" in detail and "expected 'Kounglour.', got 'What.'" in detail
        assert await picture(pilot) == svg(name="projects-failed")

        jobs = await testing.open_jobs(app, pilot)
        jobs.select_job(world.jobs["export"].id)
        await until(pilot, lambda: "Parity" in testing.text_of(jobs.query_one("#job-eval")), what="parity panel")
        table = jobs.query_one("DataTable")
        assert testing.text_of(table.get_cell(world.jobs["export"].id, "progress")).strip() == "✘ parity"
        panel = testing.text_of(jobs.query_one("#job-eval"))
        assert "✘ failed fp32" in panel and "onnx       14/32" in panel and "chat template: export fp32" in panel
        assert "⚠ parity failed (onnx): 'Who invented the Brounshan?' expected 'Kounglour.', got 'What.'" in \
            testing.text_of(jobs.query_one("#job-head"))
        assert await picture(pilot) == svg(name="jobs-failed")
        # The fine-tune shows its export's check too.
        jobs.select_job(world.jobs["ft-old"].id)
        await until(pilot, lambda: "✘ failed fp32" in testing.text_of(jobs.query_one("#job-eval")), what="ft parity")

        # Passed, then stale once the export is replaced after the check.
        testing.fabricate_parity(world.store, demo, world.jobs["export"], passed=True)
        await pilot.press("f2")
        pane.refresh_projects(str(demo))
        await until(pilot, lambda: chat_cell(pane, str(demo)) == "ready ✔", what="passed mark")
        assert "✔ passed (fp32): torch-chat 32/32, onnx 32/32, serve 32/32" in \
            testing.text_of(pane.query_one("#project-info"))
        (demo / "models" / "onnx" / "fp32" / publish.STAMP).write_text(json.dumps({"version": "newer"}))
        pane.refresh_projects(str(demo))
        await until(pilot, lambda: chat_cell(pane, str(demo)) == "ready ~", what="stale mark")
        assert "~ stale: the export changed after the check" in testing.text_of(pane.query_one("#project-info"))
        assert await picture(pilot) == svg(name="projects-stale")

        # No check yet: "not checked", with the command that checks.
        (demo / "models" / "parity" / "fp32.json").unlink()
        pane.refresh_projects(str(demo))
        await until(pilot, lambda: chat_cell(pane, str(demo)) == "ready ?", what="not checked mark")
        assert "? not checked: `aitk evaluate --parity` checks it" in testing.text_of(pane.query_one("#project-info"))


def test_failed_parity_is_a_warning_toast_with_the_example():
    from aitk.core.jobs import JobRecord
    from aitk.tui.jobs_feed import transition_message

    rec = JobRecord(id="x", kind="export", status="succeeded", created=0.0, project="/p/demo-qa", result={"parity": {
        "passed": False, "precision": "fp32", "verdict": "onnx vs torch",
        "divergence": {"form": "onnx", "prompt": "Q?", "expected": "A.", "got": "B."}}})
    text, severity = transition_message(rec, "running")
    assert severity == "warning"
    assert text == "Export of demo-qa succeeded, but parity failed: 'Q?' expected 'A.', got 'B.' (onnx)"
    ok = JobRecord(id="y", kind="export", status="succeeded", created=0.0, project="/p/demo-qa",
                   result={"parity": {"passed": True, "precision": "fp32", "verdict": ""}})
    assert transition_message(ok, "running") == ("Export of demo-qa succeeded", "information")
