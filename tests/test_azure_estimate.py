"""Cost and time before a remote run: `aitk azure run` shows the estimate (with its sources) and asks
before a run above the user's threshold; the app's wizard summary shows the same estimate."""

from __future__ import annotations

import io
import json

import pytest

from aitk.tui import testing
from aitk.tui.testing import sync, text_of, until
from test_azure import _reset_fake, fake, project, run_cli  # noqa: F401 (fixtures)


def set_infra(project, **values):
    from aitk.providers.azure import config

    p = config.infra_path(project.root)
    data = json.loads(p.read_text())
    data.update(values)
    p.write_text(json.dumps(data, indent=2))


def test_estimate_from_steps_throughput_and_price_with_sources():
    from aitk.core.settings import ProjectSettings
    from aitk.providers.azure import estimate

    s = ProjectSettings(name="est")
    s.finetune.max_steps, s.finetune.per_device_train_batch_size, s.data.source_max_len = 1000, 8, 512
    a100, t4 = estimate.estimate(s, "a100"), estimate.estimate(s, "t4")
    assert a100.tokens == t4.tokens == 1000 * 8 * 512
    assert t4.train_h == pytest.approx(a100.train_h * 312 / 65)  # throughput table: peak ratio
    assert a100.cost == pytest.approx(a100.hours * 3.67)
    assert "datasheet" in a100.sources()[0] and "2025-06" in a100.sources()[1]
    mine = estimate.estimate(s, "a100", price_per_hour=1.0)
    assert mine.cost == pytest.approx(mine.hours) and "GPU_PRICE_PER_HOUR" in mine.sources()[1]


def wait_jobs_final(timeout=60):
    """`--detach` leaves the runs to their watchers: wait until none is active (none outlives the fake)."""
    import time

    from aitk.core.jobs import ACTIVE, JobStore

    deadline = time.time() + timeout
    while any(r.provider == "azure" for r in JobStore().list(status=ACTIVE)):
        assert time.time() < deadline, "an Azure job is still active"
        time.sleep(0.1)


def test_azure_run_shows_the_estimate_and_asks_above_the_threshold(fake, project, monkeypatch):
    before = len(fake.executions)
    set_infra(project, ASK_ABOVE_USD=0.01, GPU_PRICE_PER_HOUR=2.5)
    try:
        monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
        code, out, _ = run_cli("azure", "run", "-P", str(project.root), "--detach")
        assert code == 1 and "not started" in out
        assert "estimate: A100: ~" in out and "at $2.50/h" in out and "GPU_PRICE_PER_HOUR" in out
        assert "expected to cost more than $0.01" in out
        assert len(fake.executions) == before  # nothing uploaded or started

        fake.run_env.update({"FAKE_STEPS": "2", "FAKE_SLEEP": "0.01"})
        monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
        code, out, err = run_cli("azure", "run", "-P", str(project.root), "--detach")
        assert code == 0, err
        assert len(fake.executions) == before + 1

        set_infra(project, ASK_ABOVE_USD=1000)  # under the threshold: no question
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        code, out, err = run_cli("azure", "run", "-P", str(project.root), "--detach")
        assert code == 0 and "Start it?" not in out, err
        wait_jobs_final()
    finally:
        set_infra(project, ASK_ABOVE_USD=None, GPU_PRICE_PER_HOUR=None)


@pytest.fixture
def world(wizard_world):
    return wizard_world


@sync
async def test_the_wizard_summary_shows_the_azure_estimate(world):
    from textual.widgets import RadioSet

    from aitk.tui.wizard.screen import WizardScreen

    app = testing.fixture_app()
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, WizardScreen) and app.screen.index == 0, what="wizard")
        await pilot.press("ctrl+u", *"az-est", "enter")
        await until(pilot, lambda: app.screen.index == 1 and "tiny" in app.screen.step.entries, what="models")
        for i in (2, 3, 4):
            await pilot.press("ctrl+n")
            await until(pilot, lambda i=i: app.screen.index == i, what=f"step {i + 1}")
        target = app.screen.step
        target.query_one(RadioSet).action_next_button()
        target.query_one(RadioSet).action_toggle_button()
        await until(pilot, lambda: app.screen.state.settings.target.where == "azure", what="azure target")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.screen.index == 5, what="summary")
        await pilot.pause(0.05)
        text = text_of(app.screen.step.query_one("#wiz-summary"))
        assert "A100: ~" in text and "of GPU time" in text and "$" in text and "datasheet" in text
