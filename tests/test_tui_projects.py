"""Projects pane: lists projects (from the projects folder and from jobs), shows one, starts its jobs."""

from __future__ import annotations

from textual.widgets import DataTable, TabbedContent

from aitk.tui import testing
from aitk.tui.testing import sync, text_of, until


async def projects_ready(app, pilot):
    await until(pilot, lambda: app.pane("projects") is not None and app.pane("projects").selected is not None
                and app.last_update is not None, what="projects listed")
    return app.pane("projects")


@sync
async def test_lists_projects_with_their_state(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await projects_ready(app, pilot)
        table = pane.query_one(DataTable)
        assert table.row_count == 2
        rows = {str(table.get_row_at(i)[0]): table.get_row_at(i) for i in range(2)}
        assert set(rows) == {"demo-qa", "support-bot"}
        await until(pilot, lambda: "queued export" in str(table.get_row(pane.selected)[3]), what="last job")
        assert str(rows["demo-qa"][4]) == "ready ?" and str(rows["support-bot"][4]) == "—"  # ?: parity not checked
        detail = text_of(pane.query_one("#project-info"))
        assert "lora  r=64" in detail and "ONNX fp32 ✔" in detail and "running  finetune" in detail
        assert pane.selected.endswith("demo-qa")


@sync
async def test_finetune_queues_the_chain_and_shows_it(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await projects_ready(app, pilot)
        support = next(r for r in pane.projects if r.endswith("support-bot"))
        pane.query_one(DataTable).move_cursor(row=list(pane.projects).index(support))
        await until(pilot, lambda: pane.selected == support, what="support-bot selected")
        await pilot.press("t")  # not exported yet: says what to do instead
        await pilot.pause(0.2)
        assert app.query_one("#panes", TabbedContent).active == "projects"
        await pilot.press("f")
        await until(pilot, lambda: len(world.store.list()) == 9, what="three jobs submitted")
        new = world.store.list()[:3]
        assert sorted(r.kind for r in new) == ["evaluate", "export", "finetune"]
        assert all(r.status == "queued" for r in new)  # the running job holds the only slot
        await until(pilot, lambda: app.query_one("#panes", TabbedContent).active == "jobs", what="jobs pane")
        finetune = next(r for r in new if r.kind == "finetune")
        await until(pilot, lambda: app.pane("jobs").selected == finetune.id, what="the new job selected")


@sync
async def test_empty_state_explains_what_to_do(tmp_path, monkeypatch):
    w = testing.World(tmp_path / "aitk", monkeypatch.setenv, populated=False)
    try:
        app = testing.fixture_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.pane("projects") is not None and app.pane("projects").ready
                        and "No projects yet" in text_of(app.pane("projects").query_one("#project-info")),
                        what="empty state")
            await pilot.press("f")  # nothing selected: a warning, no crash
            await pilot.pause(0.1)
    finally:
        w.close()
