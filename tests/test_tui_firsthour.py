"""The first hour of a new user, by keys: what each screen says and refuses (issue "The first hour,
without a stumble"). Each test drives the real app on the fixtures of aitk.tui.testing."""

from __future__ import annotations

import json

import pytest
from textual.widgets import DataTable, Input, Log, Select

from aitk.core import follow
from aitk.tui import testing
from aitk.tui.config import load_config
from aitk.tui.help_screen import KEYMAP_EXAMPLE, HelpScreen
from aitk.tui.testing import sync, text_of, until
from aitk.tui.widgets.confirm import ConfirmScreen
from aitk.tui.widgets.loss_chart import LossChart
from aitk.tui.widgets.toggles import Checkbox, RadioButton
from aitk.tui.wizard.screen import WizardScreen


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = testing.World(tmp_path / "aitk", monkeypatch.setenv)
    yield w
    w.close()


async def dataset_step(app, pilot):
    await pilot.press("ctrl+n")
    await until(pilot, lambda: isinstance(app.screen, WizardScreen), what="wizard")
    await pilot.press("enter")
    await until(pilot, lambda: app.screen.index == 1 and app.screen.step.entries, timeout=10, what="model step")
    await pilot.press("ctrl+n")
    await until(pilot, lambda: app.screen.index == 2, what="dataset step")
    step = app.screen.step
    await until(pilot, lambda: step.problem is None, timeout=10, what="the bundled data checked")
    return step


# -- help ------------------------------------------------------------------------------------------
@sync
async def test_help_keymap_example_is_shown_whole_and_works_when_copied(world, tmp_path):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = text_of(app.screen.query_one("#help-text"))
        assert '[keymap]' in text and '"pane.jobs" = "f3,alt+j"' in text
        bound = {k for b in app.BINDINGS for k in b.key.split(",")}
        assert "ctrl+j" not in KEYMAP_EXAMPLE and "alt+j" not in bound
    config = tmp_path / "config.toml"
    config.write_text(KEYMAP_EXAMPLE + "\n")
    loaded = load_config(config)
    assert loaded.keymap == {"pane.jobs": "f3,alt+j"} and not loaded.problems


@sync
async def test_question_mark_opens_help_in_the_wizard(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 32)) as pilot:
        step = await dataset_step(app, pilot)
        step.query_one("#wiz-ds-mode").focus()
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help over the wizard")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, WizardScreen), what="back in the wizard")


# -- toggles say on/off ----------------------------------------------------------------------------
@sync
async def test_checkboxes_and_radio_buttons_show_state_without_colour(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 32)) as pilot:
        step = await dataset_step(app, pilot)
        radios = list(step.query(RadioButton))
        on = [r for r in radios if r.value]
        assert len(on) == 1 and str(on[0]._button) == "▐●▌"
        assert all(str(r._button) == "▐ ▌" for r in radios if not r.value)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.screen.index == 3, what="training step")
        box = app.screen.query_one("#f-data-pad_to_max_len", Checkbox)
        assert not box.value and str(box.label) == "off" and str(box._button) == "▐ ▌"
        box.focus()
        await pilot.press("space")
        await until(pilot, lambda: box.value and str(box.label) == "on", what="on")
        assert str(box._button) == "▐✔▌" and app.screen.state.settings.data.pad_to_max_len is True


# -- the wizard's dataset step ---------------------------------------------------------------------
@sync
async def test_dataset_verdict_is_visible_at_80x24_and_pagedown_works_from_a_button(world):
    app = testing.fixture_app()
    async with app.run_test(size=(80, 24)) as pilot:
        step = await dataset_step(app, pilot)
        verdict = step.query_one("#wiz-ds-issues")
        await until(pilot, lambda: "max length 128: no row cut" in text_of(verdict), what="verdict")
        scroll = step.query_one("#wiz-ds-scroll")
        assert verdict.region.bottom <= scroll.region.bottom, "the verdict is below the fold"
        app.screen.query_one("#wiz-next").focus()
        await pilot.press("pagedown")
        await until(pilot, lambda: scroll.scroll_y > 0, what="scrolled from the Next button")
        await pilot.press("pageup")
        await until(pilot, lambda: scroll.scroll_y == 0, what="scrolled back")


@sync
async def test_max_length_that_cuts_rows_warns_and_cutting_every_row_blocks(world, tmp_path):
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"question": f"q{i}", "answer": " ".join(["zebra"] * 40)}) + "\n"
                            for i in range(5)))
    app = testing.fixture_app()
    async with app.run_test(size=(100, 32)) as pilot:
        step = await dataset_step(app, pilot)
        issues = step.query_one("#wiz-ds-issues")
        step.query_one("#wiz-ds-maxlen", Input).value = "16"  # the bundled rows are 14-17 tokens
        await until(pilot, lambda: "cuts 21 of 300 rows" in text_of(issues), what="the warning")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.screen.index == 3, what="a partial cut may go on")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.screen.index == 2, what="back")
        step.query_one("#ds-file", RadioButton).value = True
        await pilot.pause(0.05)
        step.query_one("#wiz-ds-path", Input).value = str(long)
        await until(pilot, lambda: "cuts every row" in text_of(issues), what="refusal")
        await pilot.press("ctrl+n")
        await pilot.pause(0.3)
        assert app.screen.index == 2 and "cuts every row" in text_of(app.screen.query_one("#wizard-error"))


@sync
async def test_local_file_then_tab_reaches_the_path_and_keeps_what_is_typed(world, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(4)))
    app = testing.fixture_app()
    async with app.run_test(size=(100, 32)) as pilot:
        step = await dataset_step(app, pilot)
        step.query_one("#wiz-ds-mode").focus()
        await pilot.press("right", "space")  # Local file
        await until(pilot, lambda: app.screen.state.dataset_mode == "file", what="local file chosen")
        await pilot.press("tab")
        assert app.focused.id == "wiz-ds-path"
        await pilot.press(*str(data))
        await pilot.press("tab")
        assert app.focused.id == "wiz-ds-eval"  # not the Browse button
        assert step.query_one("#wiz-ds-path", Input).value == str(data)
        await until(pilot, lambda: "{question} is not a column" in text_of(step.query_one("#wiz-ds-issues")),
                    what="the template names columns the file lacks")


@sync
async def test_offline_hugging_face_dataset_is_refused_at_once(world, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = testing.fixture_app()
    async with app.run_test(size=(100, 32)) as pilot:
        step = await dataset_step(app, pilot)
        step.query_one("#ds-hf", RadioButton).value = True
        await pilot.pause(0.05)
        step.query_one("#wiz-ds-path", Input).value = "someone/not-cached"
        # The debounce is 0.25 s; `datasets` alone would take many seconds to give up.
        await until(pilot, lambda: "not in the Hugging Face cache" in text_of(step.query_one("#wiz-ds-issues")),
                    timeout=1.5, what="the offline refusal")
        assert step.problem and "problem" in step.problem


@sync
async def test_training_step_has_one_scrollbar(world):
    app = testing.fixture_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await dataset_step(app, pilot)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.screen.index == 3, what="training step")
        await pilot.pause(0.1)
        shown = [app.screen, app.screen.query_one("#wizard"), app.screen.query_one("ContentSwitcher"),
                 app.screen.step, *app.screen.step.query("*")]
        scrolling = [w for w in shown if w.display and (w.show_vertical_scrollbar or w.show_horizontal_scrollbar)]
        assert [w.id for w in scrolling] == ["wiz-form"]


# -- Jobs ------------------------------------------------------------------------------------------
async def jobs_pane(app, pilot):
    return await testing.open_jobs(app, pilot, rows=6)


@sync
async def test_after_a_delete_the_cursor_stays_in_place(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await jobs_pane(app, pilot)
        table = pane.query_one(DataTable)
        failed = world.jobs["failed"]
        pane.select_job(failed.id)
        row = pane.order.index(failed.id)
        below = pane.order[row + 1]
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await until(pilot, lambda: table.row_count == 5, what="row removed")
        await pilot.pause(0.3)
        assert pane.selected == below and table.cursor_row == row
        assert table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value == below


@sync
async def test_retry_and_cancel_ask_first(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await jobs_pane(app, pilot)
        pane.select_job(world.jobs["ft-old"].id)
        count = len(world.store.list())
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="retry confirmation")
        assert "adapter replaces" in str(app.screen.question)
        await pilot.press("n")
        pane.select_job(world.jobs["running"].id)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="cancel confirmation")
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert len(world.store.list()) == count and world.store.get(world.jobs["running"].id).status == "running"


@sync
async def test_failed_job_without_metrics_and_run_without_eval_say_so(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await jobs_pane(app, pilot)
        pane.select_job(world.jobs["failed"].id)
        await until(pilot, lambda: pane.selected == world.jobs["failed"].id, what="selected")
        await pilot.pause(0.1)
        chart = pane.query_one(LossChart)
        assert "failed before its first" in chart.empty_text and "waiting" not in chart.empty_text
        ev = text_of(pane.query_one("#job-eval"))
        assert "none in this run" in ev and "yet" not in ev
        pane.select_job(world.jobs["running"].id)
        await until(pilot, lambda: "no evaluation yet" in text_of(pane.query_one("#job-eval"))
                    or "Eval loss" in text_of(pane.query_one("#job-eval")), what="running job's panel")
        assert "waiting" in pane.query_one(LossChart).empty_text or pane.query_one(LossChart).train


def test_log_reader_leaves_out_known_library_noise(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(
        "[aitk] fine-tuning tiny\n"
        "/x/torch/utils/data/dataloader.py:759: UserWarning: 'pin_memory' argument is set as true but no "
        "accelerator is found, then device pinned memory won't be used.\n"
        "  super().__init__(loader)\n"
        "{'loss': 1.2}\n"
        "[2026-12-01 11:17:52,597] [INFO] [engine.py:216:run] Run history for cpu-cpu:\n"
        "[2026-12-01 11:17:52,598] [INFO] [engine.py:476:_dump_run_history_internal] Please install tabulate "
        "for better run history output\n"
        "/x/y.py:3: UserWarning: something real\n"
        "  f()\n"
        "[aitk] job succeeded\n")
    lines = follow.read_from(log).lines
    assert lines == ["[aitk] fine-tuning tiny", "{'loss': 1.2}", "/x/y.py:3: UserWarning: something real", "  f()",
                     "[aitk] job succeeded"]
    assert "pin_memory" in log.read_text()  # the file keeps everything


def test_noise_is_found_inside_a_flood_chunk(tmp_path):
    """The chunk is searched once for noise (a flood skips the per-line check): a noise line in the
    middle of thousands of ordinary ones is still left out, ANSI colour and all."""
    log = tmp_path / "log.txt"
    ordinary = [f"step {i} loss 0.5" for i in range(2000)]
    log.write_text("\n".join([*ordinary[:1000], "\x1b[32m[INFO] [engine.py:216:run] Run history for cpu-cpu:\x1b[0m",
                              *ordinary[1000:]]) + "\n")
    assert follow.read_from(log).lines == ordinary


@sync
async def test_job_log_measures_wide_and_plain_lines():
    """JobLog finds its width in the call (no thread per write): ASCII by length, the rest in cells."""
    from textual.app import App

    from aitk.tui.widgets.job_log import JobLog

    class One(App):
        def compose(self):
            yield JobLog()

    async with One().run_test() as pilot:
        log = pilot.app.query_one(JobLog)
        log.write_lines(["short", "x" * 40])
        await pilot.pause()
        assert log.virtual_size.width == 40
        log.write_lines(["日本語" * 10, "a\tb"])  # 60 cells; a tab expands
        await pilot.pause()
        assert log.virtual_size.width == 60 and log.line_count == 4


@sync
async def test_jobs_pane_log_has_no_noise(world):
    rec = world.jobs["failed"]
    world.store.log_path(rec.id).write_text(
        "[aitk] start\n/t/dataloader.py:1: UserWarning: 'pin_memory' argument is set as true but no accelerator "
        "is found, then device pinned memory won't be used.\n  super().__init__(loader)\n[aitk] error: boom\n")
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await jobs_pane(app, pilot)
        pane.select_job(rec.id)
        log = pane.query_one(Log)
        await until(pilot, lambda: log.line_count == 2, what="log")
        assert list(log.lines) == ["[aitk] start", "[aitk] error: boom"]


@sync
async def test_no_truncated_last_job_licence_or_failed_job_hint(world):
    app = testing.fixture_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.pane("projects") is not None and app.pane("projects").selected
                    and app.last_update is not None, what="projects")
        await pilot.pause(0.3)
        projects = app.pane("projects").query_one(DataTable)
        width = projects.columns["last"].width
        cells = [str(projects.get_cell(row, "last")) for row in projects.rows]
        assert "✘ failed finetune" in cells, cells
        assert width >= max(len("⚠ interrupted finetune"), *map(len, cells))
        await pilot.press("f1")
        await until(pilot, lambda: app.pane("catalog") is not None and app.pane("catalog").catalog is not None,
                    what="catalog")
        catalog = app.pane("catalog")
        assert catalog.query_one(DataTable).columns["model"].width >= max(len(e.id) for e in catalog.catalog)
    from aitk.tui.panes.catalog import short_licence

    assert short_licence("Llama 3.2 Community License") == "Llama 3.2"
    assert short_licence("A Very Long Licence Name Here") == "A Very Long L…"


# -- quitting --------------------------------------------------------------------------------------
@sync
async def test_ctrl_q_with_a_running_job_says_it_keeps_running(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.last_update is not None, what="jobs known")
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="quit question")
        question = str(app.screen.question)
        assert "keep running after you quit" in question and "aitk jobs logs" in question and "F3" in question
        await pilot.press("n")
        await pilot.pause(0.1)
        assert app.is_running and not isinstance(app.screen, ConfirmScreen)
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asked again")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, what="quit")


@sync
async def test_ctrl_q_with_nothing_running_quits_at_once(tmp_path, monkeypatch):
    w = testing.World(tmp_path / "aitk", monkeypatch.setenv, populated=False)
    try:
        app = testing.fixture_app()
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.last_update is not None, what="jobs known")
            await pilot.press("ctrl+q")
            await until(pilot, lambda: not app.is_running, what="quit at once")
    finally:
        w.close()


# -- chat ------------------------------------------------------------------------------------------
@pytest.fixture
def fake_engine(monkeypatch):
    engine = testing.FakeEngine()
    monkeypatch.setattr("aitk.core.server.open_export", lambda model_dir: engine)
    return engine


async def chat_ready(app, pilot):
    await pilot.press("f4")
    await until(pilot, lambda: app.pane("chat") is not None
                and app.pane("chat").query_one("#chat-model", Select).value is not Select.NULL, what="model")
    pane = app.pane("chat")
    await until(pilot, lambda: "model ready" in text_of(pane.query_one("#chat-status")), what="loaded")
    return pane


@sync
async def test_chat_parameters_are_checked_as_typed(world, fake_engine):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await chat_ready(app, pilot)
        await pilot.press("ctrl+o")
        top_p = pane.query_one("#opt-top-p", Input)
        top_p.value = "3"
        await until(pilot, lambda: "top_p" in text_of(pane.query_one("#opt-error")), what="error in the form")
        assert top_p.has_class("-invalid") and pane.query_one("#opt-error").display
        assert "top_p" in text_of(pane.query_one("#chat-status"))
        top_p.value = "0.9"
        await until(pilot, lambda: not pane.query_one("#opt-error").display, what="error gone")
        assert not top_p.has_class("-invalid")


@sync
async def test_ctrl_t_asks_before_clearing_the_conversation(world, fake_engine):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await chat_ready(app, pilot)
        pane.send("What colour is a Touxkru bird?")
        await until(pilot, lambda: not pane.generating and pane.conversation.turns, what="answer")
        pane.query_one("#chat-input").focus()
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asked")
        await pilot.press("n")
        await pilot.pause(0.2)
        assert pane.mode == "tuned" and pane.conversation.turns
        assert pane.query_one("#chat-mode", Select).value == "tuned"
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asked again")
        await pilot.press("y")
        await until(pilot, lambda: pane.mode == "base" and not pane.conversation.turns, what="switched and cleared")


# -- toasts ----------------------------------------------------------------------------------------
@sync
async def test_one_cancel_makes_one_short_toast(world, monkeypatch):
    monkeypatch.setattr("aitk.providers.local.CANCEL_GRACE_S", 0.2)
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        pane = await jobs_pane(app, pilot)
        pane.select_job(world.jobs["running"].id)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await until(pilot, lambda: world.store.get(world.jobs["queued"].id).status == "skipped", timeout=10,
                    what="the queued export skipped")
        await until(pilot, lambda: any("skipped" in n.message for n in app._notifications), what="toast")
        await pilot.pause(0.6)
        toasts = list(app._notifications)
        assert len(toasts) <= 2, [n.message for n in toasts]
        assert all(n.timeout <= 8 for n in toasts)


# -- units -----------------------------------------------------------------------------------------
def test_one_unit_for_sizes():
    from aitk.core.catalog import human_bytes

    assert human_bytes(3 * 1024**3) == "3.0 GiB" and human_bytes(512 * 1024**2) == "512.0 MiB"


# -- idle redraws ----------------------------------------------------------------------------------
@pytest.mark.parametrize("active", [False, True], ids=["no-job-active", "running-job-with-nothing-new"])
@sync
async def test_a_jobs_pane_with_nothing_new_redraws_nothing(world, monkeypatch, active):
    """Polls keep coming (every 0.5 s); when nothing they report differs, nothing is repainted,
    even with a job running (the fixture clock stands still, so its elapsed time does too)."""
    from textual.widget import Widget

    if not active:
        world.sleeper.stop()
        for name in ("running", "queued"):
            world.store.update(world.jobs[name].id, status="succeeded", finished=testing.FIXED_NOW, exit_code=0)
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await jobs_pane(app, pilot)
        await pilot.pause(1.0)  # the first paint and the selected job's log settle
        polls = []
        original_jobs_updated = pane.jobs_updated
        monkeypatch.setattr(pane, "jobs_updated", lambda update: (polls.append(1), original_jobs_updated(update)))
        repainted = []
        original_refresh = Widget.refresh

        def refresh(self, *args, **kwargs):
            repainted.append(self)
            return original_refresh(self, *args, **kwargs)

        monkeypatch.setattr(Widget, "refresh", refresh)
        await until(pilot, lambda: len(polls) >= 4, timeout=6, what="four polls")
        monkeypatch.setattr(Widget, "refresh", original_refresh)
        assert not repainted, sorted({f"{type(w).__name__}#{w.id}" for w in repainted})
