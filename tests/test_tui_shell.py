"""The app shell: panes on F-keys, command palette, help, keymap, status bar, notifications, themes,
and the promise that the UI process never imports the heavy libraries."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from textual.widgets import TabbedContent

from aitk.tui import testing
from aitk.tui.commands import COMMANDS
from aitk.tui.config import Config, load_config
from aitk.tui.help_screen import HelpScreen
from aitk.tui.testing import sync, until


HEAVY_PROBE = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from aitk.tui import testing
    world = testing.World(Path(sys.argv[1]))
    async def main():
        app = testing.fixture_app()
        async with app.run_test(size=(100, 30)) as pilot:
            for key, pane in (("f1", "catalog"), ("f3", "jobs"), ("f4", "chat")):
                await pilot.press(key)
                await testing.until(pilot, lambda: app.pane(pane) is not None, what=pane)
            await testing.until(pilot, lambda: app.pane("catalog").catalog is not None, what="catalog")
            await pilot.press("ctrl+n")
            for step in range(5):
                await testing.until(pilot, lambda: getattr(app.screen, "index", -1) == step, timeout=30,
                                    what=f"step {step}")
                await pilot.press("ctrl+n")
            await testing.until(pilot, lambda: app.screen.index == 5, timeout=30, what="summary")
            print("STEP", app.screen.index)
    try:
        asyncio.run(main())
    finally:
        world.close()
    heavy = [m for m in ("torch", "transformers", "peft", "olive", "azure", "datasets", "accelerate")
             if m in sys.modules]
    print("HEAVY", heavy)
""")


@pytest.fixture(scope="module")
def heavy_probe(tmp_path_factory):
    """A fresh process walks the whole UI (a clean sys.modules); started with this module's first
    test so it runs beside the others, checked by the last one."""
    root = tmp_path_factory.mktemp("heavy")
    proc = subprocess.Popen([sys.executable, "-c", HEAVY_PROBE, str(root / "aitk")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture
def world(tmp_path, monkeypatch, heavy_probe):
    w = testing.World(tmp_path / "aitk", monkeypatch.setenv)
    yield w
    w.close()


def active(app) -> str:
    return app.query_one("#panes", TabbedContent).active


@sync
async def test_f_keys_switch_panes_and_focus_their_main_widget(world):
    app = testing.fixture_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for key, pane, main in (("f1", "catalog", "catalog-table"), ("f3", "jobs", "jobs-table"),
                                ("f4", "chat", "chat-input"), ("f2", "projects", "projects-table")):
            await pilot.press(key)
            await until(pilot, lambda: active(app) == pane and app.focused is not None
                        and app.focused.id == main, what=f"{pane} focused")


@sync
async def test_tabs_by_mouse_also_focus_the_pane(world):
    app = testing.fixture_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.click("#--content-tab-jobs")
        await until(pilot, lambda: app.focused is not None and app.focused.id == "jobs-table", what="jobs focus")


@sync
async def test_palette_lists_every_command_and_runs_them(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {c.title for c in COMMANDS} <= titles and "Theme" in titles
        await pilot.press("ctrl+p")
        await pilot.press(*"to jo")  # fuzzy: "Go to Jobs"
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: active(app) == "jobs", what="jobs pane via the palette")


@sync
async def test_help_lists_keys_with_their_ids(world):
    app = testing.fixture_app(config=Config(keymap={"jobs.cancel": "k"}))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help screen")
        text = testing.text_of(app.screen.query_one("#help-text"))
        for needle in ("pane.jobs", "F3", "jobs.cancel", "chat.stop", "wizard.next", "Command palette"):
            assert needle in text, needle
        assert any(line.split()[:2] == ["k", "Cancel"] for line in text.splitlines())  # the remapped key
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")


@sync
async def test_help_screen_is_built_once_and_reopens(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screens = []
        for _ in range(2):
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help screen")
            screens.append(app.screen)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")
        assert screens[0] is screens[1]


def bar_text(app) -> str:
    return str(app.query_one("#keys").render())


@sync
async def test_key_bar_follows_focus_shows_remapped_keys_and_clicks_run_them(world):
    app = testing.fixture_app(config=Config(keymap={"jobs.cancel": "k"}))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await until(pilot, lambda: app.focused is not None and app.focused.id == "jobs-table", what="jobs")
        await until(pilot, lambda: " k Cancel " in bar_text(app) and "Retry" in bar_text(app), what="jobs keys")
        assert "palette" in bar_text(app) and "Fine-tune" not in bar_text(app)
        await pilot.press("f2")
        await until(pilot, lambda: "Fine-tune" in bar_text(app) and "Cancel" not in bar_text(app),
                    what="projects keys")
        bar = app.query_one("#keys")
        start = next(s for s, _e, key in bar._spans if key == "ctrl+q")
        quit_requested = []
        app.action_quit = lambda: quit_requested.append(True)
        await pilot.click("#keys", offset=(start + 1, 0))
        await until(pilot, lambda: quit_requested, what="a click on ^q runs quit")


@sync
async def test_keymap_from_the_config_remaps_keys(world):
    app = testing.fixture_app(config=Config(keymap={"pane.jobs": "f9"}))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await pilot.pause(0.2)
        assert active(app) == "projects"
        await pilot.press("f9")
        await until(pilot, lambda: active(app) == "jobs", what="f9 opens jobs")


@sync
async def test_status_bar_shows_device_jobs_and_azure(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 24)) as pilot:
        status = app.query_one("#status")
        await until(pilot, lambda: status.running == 1 and status.queued == 1, what="job counts")
        text = testing.text_of(status.render())
        assert "CPU · 8 cores" in text and "1 job running, 1 queued" in text and "Azure: not signed in" in text


@sync
async def test_job_events_become_notifications(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 24), notifications=True) as pilot:
        await until(pilot, lambda: app.last_update is not None, what="first poll")
        rec = world.jobs["running"]
        world.store.update(rec.id, status="succeeded", finished=time.time())
        app.wake_jobs()
        await until(pilot, lambda: any("Fine-tune of demo-qa succeeded" in n.message
                                       for n in app._notifications), what="a success notification")
        world.store.update(world.jobs["queued"].id, status="failed", error="boom")
        app.wake_jobs()
        await until(pilot, lambda: any("failed: boom" in n.message and n.severity == "error"
                                       for n in app._notifications), what="a failure notification")


@sync
async def test_malformed_config_starts_with_defaults_and_says_so(world, tmp_path):
    from pathlib import Path

    (Path(world.env["AITK_CONFIG_DIR"]) / "config.toml").write_text("theme = [oops\n")
    app = testing.fixture_app(config=load_config())
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await until(pilot, lambda: any("not valid TOML" in n.message for n in app._notifications),
                    what="the config problem shown")
        assert app.theme == "aitk-dark"


@sync
async def test_theme_chosen_in_the_app_is_remembered(world):
    app = testing.fixture_app(config=load_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.theme = "aitk-light"
        await until(pilot, lambda: load_config().theme == "aitk-light", what="theme saved")
    again = testing.fixture_app(config=load_config())
    async with again.run_test(size=(80, 24)) as pilot:
        assert again.theme == "aitk-light"
        again.theme = "dracula"  # Textual's own themes too
        await until(pilot, lambda: load_config().theme == "dracula", what="built-in theme saved")


def test_the_ui_process_never_imports_heavy_libraries(heavy_probe):
    """Every pane visited, the wizard walked to its summary: then no heavy library is loaded."""
    out, err = heavy_probe.communicate(timeout=120)
    assert "STEP 5" in out, out + err
    assert "HEAVY []" in out, out + err[-3000:]
