"""Chat pane with an export that carries several adapters: the adapter select switches the adapter
on the one loaded model (the conversation goes on), and two adapters answer side by side; 80×24
snapshots of both. The engine is the fake that streams canned answers per adapter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytest_textual_snapshot
from textual.widgets import Select

from aitk.core import adapters, paths
from aitk.tui import testing
from aitk.tui.panes.chat import ChatColumn
from aitk.tui.testing import sync, text_of, until

ROOT = Path("/tmp/aitk-tui-adapters")  # a fixed path: it shows in the pictures

pytestmark = pytest.mark.usefixtures("snapshots_in_tests_snapshots")
NAMES = ["support-v1", "support-v2"]


@pytest.fixture
def world(snapshot_world, monkeypatch, tmp_path):
    """The fixture projects, demo-qa with two named adapters (support-v2 active), and an engine
    whose export carries both."""
    root = paths.projects_dir() / "demo-qa"
    for name in NAMES:
        src = tmp_path / name
        src.mkdir()
        (src / "adapter_config.json").write_text(json.dumps({"r": 8}))
        (src / "adapter_model.safetensors").write_bytes(os.urandom(32))
        adapters.publish_adapter(root, src, name)
    engine = testing.FakeEngine({"support-v1": "Glodan.", "support-v2": "Glodan, by the river.",
                                 "base": "Methlmix mousmirzen soxzueth gixor."}, adapters=list(NAMES))
    monkeypatch.setattr("aitk.core.server.open_export", lambda model_dir: engine)
    snapshot_world.engine = engine
    return snapshot_world


@pytest.fixture
def svg(snapshot):
    return snapshot.use_extension(pytest_textual_snapshot.SVGImageExtension)


async def picture(pilot) -> str:
    # No focus, so no cursor: a focused prompt's cursor is drawn or not by its blink phase at the
    # moment blinking is turned off, which made these pictures differ from run to run under load.
    pilot.app.set_focus(None)
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()
    return pilot.app.export_screenshot()


def column_text(pane, i: int) -> str:
    return "\n".join(text_of(w) for w in pane.query_one(f"#col-{i}", ChatColumn).children)


@sync
async def test_switch_adapter_then_two_adapters_side_by_side(world, svg):
    engine = world.engine
    app = testing.fixture_app(start_pane="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.pane("chat") is not None and app.pane("chat").ready, what="chat pane")
        pane = app.pane("chat")
        first, second = pane.query_one("#chat-adapter", Select), pane.query_one("#chat-adapter-b", Select)
        await until(pilot, lambda: first.value == "support-v2", what="the project's active adapter chosen")
        assert first.display and not second.display  # a choice of adapters, one column
        assert pane.query_one("#col-0", ChatColumn).border_title == "support-v2"

        pane.send("Where does Glodan live?")
        await until(pilot, lambda: not pane.generating and pane.conversation.turns, what="first answer")
        first.value = "support-v1"  # another adapter on the same loaded model: the chat goes on
        await pilot.pause()
        assert pane.query_one("#col-0", ChatColumn).border_title == "support-v1"
        pane.send("And what colour is it?")
        await until(pilot, lambda: not pane.generating and len(pane.conversation.turns) == 2, what="second answer")
        assert [adapter for _, adapter in engine.calls] == ["support-v2", "support-v1"]
        assert len(engine.calls[1][0]) == 3  # the first turn is history for the second adapter
        assert await picture(pilot) == svg(name="adapter-switch-80x24")

        pane.action_clear()
        pane.query_one("#chat-mode", Select).value = "pair"
        await pilot.pause()
        assert second.display and second.value == "support-v1"
        first.value = "support-v2"
        await pilot.pause()
        titles = [c.border_title for c in pane.query(ChatColumn) if c.display]
        assert titles == ["support-v2", "support-v1"]
        pane.send("Where does Glodan live?")
        await until(pilot, lambda: not pane.generating and pane.conversation.turns, what="two answers")
        assert sorted(adapter for _, adapter in engine.calls[2:]) == NAMES
        assert "by the river" in column_text(pane, 0) and "by the river" not in column_text(pane, 1)
        assert await picture(pilot) == svg(name="two-adapters-80x24")


@sync
async def test_two_adapters_side_by_side_needs_two(world):
    world.engine.adapters = ["support-v1"]
    app = testing.fixture_app(start_pane="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.pane("chat") is not None and app.pane("chat").ready, what="chat pane")
        pane = app.pane("chat")
        await until(pilot, lambda: pane.query_one("#chat-adapter", Select).value == "support-v1", what="adapter")
        assert not pane.query_one("#chat-adapter", Select).display  # one adapter: nothing to choose
        pane.query_one("#chat-mode", Select).value = "pair"
        await pilot.pause()
        pane.send("Where does Glodan live?")
        await pilot.pause()
        assert not pane.conversation.turns and not world.engine.calls
        assert any("carries one adapter" in n.message for n in app._notifications)
