"""New-project wizard, by keys: every step, inline errors that block, back/cancel, nothing written
before confirm, and create (+ start). The tiny model's build (torch, seconds) is replaced by an
empty folder here; the tmux end-to-end test creates the real one."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from textual.widgets import Input

from aitk.core import paths
from aitk.tui import testing
from aitk.tui.testing import sync, text_of, until
from aitk.tui.widgets.confirm import ConfirmScreen
from aitk.tui.wizard.screen import WizardScreen


@pytest.fixture
def world(wizard_world):
    return wizard_world


def wizard(app) -> WizardScreen:
    assert isinstance(app.screen, WizardScreen), app.screen
    return app.screen


async def at_step(app, pilot, index: int, timeout: float = 8):
    await until(pilot, lambda: isinstance(app.screen, WizardScreen) and app.screen.index == index,
                timeout=timeout, what=f"wizard step {index + 1}")
    await pilot.pause(0.05)
    return app.screen.step


def error_text(app) -> str:
    return text_of(app.screen.query_one("#wizard-error"))


@sync
async def test_create_and_start_by_keys_alone(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("ctrl+n")
        await at_step(app, pilot, 0)
        await pilot.press("ctrl+u", *"my-qa", "enter")
        model = await at_step(app, pilot, 1)
        await until(pilot, lambda: "tiny" in model.entries, what="the catalog")
        await pilot.press("ctrl+n")
        dataset = await at_step(app, pilot, 2)
        await until(pilot, lambda: "300 rows" in text_of(dataset.query_one("#wiz-ds-issues")), what="data check")
        assert "What colour is a Touxkru bird?" in text_of(dataset.query_one("#wiz-ds-preview"))
        hist = dataset.query_one("#wiz-ds-hist")
        assert hist.bins and "none cut" in hist.summary
        await pilot.press("ctrl+n")
        training = await at_step(app, pilot, 3)
        assert "Memory ≈" in text_of(training.query_one("#wiz-memory"))
        r = training.query_one("#f-finetune-lora_r", Input)
        r.value = "0"
        await pilot.pause(0.1)
        assert "greater than or equal to 1" in text_of(training.query_one("#cap-f-finetune-lora_r"))
        await pilot.press("ctrl+n")
        assert wizard(app).index == 3 and "finetune.lora_r" in error_text(app)
        r.value = "16"
        training.query_one("#f-finetune-max_steps", Input).value = "0"  # a rule of the whole section
        await pilot.pause(0.1)
        assert "max_steps must be positive" in text_of(training.query_one("#cap-f-finetune-max_steps"))
        training.query_one("#f-finetune-max_steps", Input).value = "50"
        await pilot.pause(0.1)
        await pilot.press("ctrl+n")
        await at_step(app, pilot, 4)
        await pilot.press("ctrl+n")
        summary = await at_step(app, pilot, 5)
        text = text_of(summary.query_one("#wiz-summary"))
        dest = paths.projects_dir() / "my-qa"
        assert f"aitk project new {dest}" in text and "--model tiny" in text
        assert "--set finetune.lora_r=16" in text and '"r": 16' in text and '"max_steps": 50' in text
        assert not dest.exists()  # nothing written before confirm
        await pilot.press("ctrl+n")
        await until(pilot, lambda: not isinstance(app.screen, WizardScreen), timeout=10, what="created")
        new = [r for r in world.store.list() if r.project == str(dest)]
        finetune = next(r for r in new if r.kind == "finetune")
        await until(pilot, lambda: app.pane("jobs") is not None and app.pane("jobs").selected == finetune.id,
                    what="the new fine-tune shown")
    settings = tomllib.loads((dest / "aitk.toml").read_text())
    assert settings["name"] == "my-qa" and settings["finetune"]["lora_r"] == 16
    assert json.loads((dest / "finetuning" / "olive-config.json").read_text())["passes"]["finetune"]["r"] == 16
    assert (dest / "dataset" / "train.jsonl").is_file()
    assert sorted(r.kind for r in new) == ["evaluate", "export", "finetune"]


@sync
async def test_dataset_problems_show_inline_and_block(world, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "response": "yo"}\n{"prompt": "x"\n')
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(5)))
    app = testing.fixture_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("ctrl+n")
        await at_step(app, pilot, 0)
        await pilot.press("enter")
        await at_step(app, pilot, 1)
        await pilot.press("ctrl+n")
        step = await at_step(app, pilot, 2)
        step.query_one("#ds-file").value = True
        await pilot.pause(0.1)
        step.query_one("#wiz-ds-path", Input).value = str(bad)
        await until(pilot, lambda: "bad.jsonl:2" in text_of(step.query_one("#wiz-ds-issues")), what="located issue")
        await pilot.press("ctrl+n")
        assert wizard(app).index == 2 and "problem" in error_text(app)
        step.query_one("#wiz-ds-path", Input).value = str(good)
        await until(pilot, lambda: "{question} is not a column" in text_of(step.query_one("#wiz-ds-issues")),
                    what="template/column mismatch")
        step.query_one("#wiz-ds-template", Input).value = r"<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}"
        await until(pilot, lambda: "5 rows" in text_of(step.query_one("#wiz-ds-issues")), what="clean data")
        assert "<|assistant|>\na0" in text_of(step.query_one("#wiz-ds-preview"))
        await pilot.press("ctrl+n")
        await at_step(app, pilot, 3)
        assert wizard(app).state.settings.data.text_template.endswith("{response}")


@sync
async def test_back_keeps_values_and_cancel_writes_nothing(world):
    app = testing.fixture_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+n")
        await at_step(app, pilot, 0)
        await pilot.press("escape")  # on the first step: closes at once
        await until(pilot, lambda: not isinstance(app.screen, WizardScreen), what="cancelled")
        await pilot.press("ctrl+n")
        await at_step(app, pilot, 0)
        await pilot.press("ctrl+u", *"keep-me", "enter")
        await at_step(app, pilot, 1)
        await pilot.press("ctrl+n")
        await at_step(app, pilot, 2)
        await pilot.press("ctrl+r", "ctrl+r")
        step = await at_step(app, pilot, 0)
        assert step.query_one("#wiz-name", Input).value == "keep-me"
        step.query_one("#wiz-name", Input).value = "bad name!"
        await pilot.press("ctrl+n")
        assert wizard(app).index == 0 and "letters, digits" in error_text(app)
        step.query_one("#wiz-name", Input).value = "keep-me"
        await pilot.press("ctrl+n")
        await at_step(app, pilot, 1)
        await pilot.press("escape")  # later steps ask first
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="discard question")
        await pilot.press("y")
        await until(pilot, lambda: len(app.screen_stack) == 1, what="back to the app")
    assert sorted(p.name for p in Path(paths.projects_dir()).iterdir()) == ["demo-qa", "support-bot"]


def test_the_equivalent_command_recreates_the_wizards_settings(tmp_path):
    """The summary's `aitk project new ... --set ...` line gives the same settings as the wizard."""
    import shlex

    from aitk.cli.main import build_parser
    from aitk.core.defaults import default_settings
    from aitk.core.settings import apply_overrides
    from aitk.tui.wizard.state import WizardState, command_line

    state = WizardState(name="demo", model_id="tiny", location=str(tmp_path))
    state.reset_settings()
    f = state.settings.finetune
    f.lora_r, f.learning_rate, f.target_modules = 16, 5e-4, ["qkv_proj", "o_proj"]
    state.settings.data.text_template = "Q: {question}\nA: {answer}"
    state.settings.data.train_split = "123"  # text that looks like a TOML literal stays text
    first = command_line(state).splitlines()
    words = shlex.split(" ".join(line.rstrip("\\") for line in first if not line.startswith("aitk finetune")))
    args = build_parser().parse_args(words[1:])
    assert args.dir == str(tmp_path / "demo") and len(args.set) == 5
    rebuilt = apply_overrides(default_settings("demo", "tiny", state.device or "cpu"), args.set)
    assert rebuilt.model_dump() == {**state.settings.model_dump(), "name": "demo"}
