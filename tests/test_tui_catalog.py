"""Catalog pane: the bundled catalog filtered by search, task, runtime and fits-here; details with
variants and sizes; downloads with progress (bytes, speed, ETA) that `x` cancels; local models.
The hub is replaced by a fake pull that reports progress and waits for the cancel event."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from aitk.core import hub
from aitk.tui import testing
from aitk.tui.panes.catalog import VariantScreen
from aitk.tui.testing import sync, text_of, until

GB = 10**9


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = testing.World(tmp_path / "aitk", monkeypatch.setenv, populated=False)
    folder = tmp_path / "my-model"
    folder.mkdir()
    local = [hub.LocalModel("my-model", "folder", folder, 123 * 10**6, 3)]
    monkeypatch.setattr(hub, "scan_local", lambda **kw: hub.LocalScan(local, [], tmp_path))
    yield w
    w.close()


async def catalog_ready(app, pilot):
    await pilot.press("f1")
    await until(pilot, lambda: app.pane("catalog") is not None and app.pane("catalog").catalog is not None,
                what="catalog loaded")
    return app.pane("catalog")


def row_ids(pane) -> list[str]:
    return list(pane.rows)


@sync
async def test_filters_and_details(world):
    app = testing.fixture_app()
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await catalog_ready(app, pilot)
        assert {"tiny", "phi-3-mini-4k", "qwen2.5-0.5b"} <= set(row_ids(pane))
        assert any(k.startswith("local:my-model") for k in row_ids(pane))  # on disk, not in the catalog
        await pilot.press("slash")
        assert app.focused.id == "catalog-search"
        await pilot.press(*"qwen")
        await until(pilot, lambda: all(k.startswith("qwen") for k in row_ids(pane)) and row_ids(pane),
                    what="search filter")
        await pilot.press("enter")  # back to the table
        assert app.focused.id == "catalog-table"
        pane.query_one("#catalog-search", Input).value = ""
        await pilot.press("f")  # fits-this-machine: fine-tuning that is practical here
        await until(pilot, lambda: row_ids(pane) == ["tiny"], what="fits filter")
        await pilot.press("f")
        pane.query_one("#catalog-runtime").value = "directml"
        await until(pilot, lambda: "tiny" not in row_ids(pane) and row_ids(pane), what="runtime filter")
        pane.query_one("#catalog-runtime").value = "__all__"
        await until(pilot, lambda: "tiny" in row_ids(pane), what="filters cleared")
        table = pane.query_one(DataTable)
        table.move_cursor(row=row_ids(pane).index("phi-3-mini-4k"))
        await until(pilot, lambda: pane.selected == "phi-3-mini-4k", what="selection")
        detail = text_of(pane.query_one("#catalog-info"))
        for needle in ("Phi-3 mini 4k instruct", "Licence", "MIT", "microsoft/Phi-3-mini-4k-instruct",
                       "LoRA here", "QLoRA here", "Chat here", "cpu int4", "2.5 GiB", "cuda fp16"):
            assert needle in detail, needle


@sync
async def test_download_shows_progress_and_cancels(world, monkeypatch):
    started = threading.Event()

    def fake_pull(target, variant=None, *, cancel=None, on_progress=None, **kw):
        total = 7_700_000_000
        on_progress(hub.Progress("phi", "model-00001.safetensors", 1_100_000_000, total, 1, 4, 52_000_000, 127.0))
        started.set()
        cancel.wait(10)
        raise hub.DownloadCancelled("cancelled")

    monkeypatch.setattr(hub, "pull", fake_pull)
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        pane = await catalog_ready(app, pilot)
        pane.query_one(DataTable).move_cursor(row=row_ids(pane).index("phi-3-mini-4k"))
        await until(pilot, lambda: pane.selected == "phi-3-mini-4k", what="selection")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, VariantScreen), what="variant choice")
        await pilot.press("enter")  # the fine-tuning weights
        await until(pilot, lambda: started.is_set() and "1.0 GiB / 7.2 GiB" in text_of(pane.query_one("#dl-text")),
                    what="progress shown")
        text = text_of(pane.query_one("#dl-text"))
        assert "49.6 MiB/s" in text and "ETA 2m 07s" in text and "file 1/4" in text
        assert pane.query_one("#catalog-download").display
        await pilot.press("x")
        await until(pilot, lambda: any("cancelled" in n.message for n in app._notifications), what="cancelled")
        assert not pane.query_one("#catalog-download").display


@sync
async def test_new_project_from_the_catalog_preselects_the_model(world):
    from aitk.tui.wizard.screen import WizardScreen

    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await catalog_ready(app, pilot)
        pane.query_one(DataTable).move_cursor(row=row_ids(pane).index("qwen2.5-0.5b"))
        await until(pilot, lambda: pane.selected == "qwen2.5-0.5b", what="selection")
        assert app.focused is pane.query_one(DataTable), app.focused
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, WizardScreen), what="wizard")
        assert app.screen.state.model_id == "qwen2.5-0.5b"
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.index == 1 and app.screen.step.entries, what="model step")
        ol = app.screen.step.query_one("OptionList")
        await until(pilot, lambda: ol.highlighted is not None
                    and ol.get_option_at_index(ol.highlighted).id == "qwen2.5-0.5b", what="preselected")
        assert Path(testing.__file__).exists()
