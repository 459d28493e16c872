"""Jobs pane on a fabricated job store: table, live log and metrics, progress/ETA, eval results, and
the actions (cancel, retry, resume, delete, open project, chat with result). Nothing trains here:
the one "running" job is a `sleep` process, which also keeps the only local slot busy, so jobs
submitted by the actions stay queued."""

from __future__ import annotations

import json
import time

import pytest
from textual.widgets import DataTable, Log, TabbedContent

from aitk.core.jobs import CANCELLED, FAILED, INTERRUPTED, JobStore
from aitk.tui import testing
from aitk.tui.jobs_feed import JobsFeed, read_progress, transition_message
from aitk.tui.testing import sync, text_of, until
from aitk.tui.widgets.confirm import ConfirmScreen
from aitk.tui.widgets.loss_chart import LossChart


def test_feed_reports_progress_and_transitions(world):
    feed = JobsFeed(world.store)
    first = feed.poll()
    assert first.first and first.transitions == [] and first.running == 2  # running + queued
    p = first.progress[world.jobs["running"].id]
    assert (p.step, p.max_steps) == (370, 600) and p.fraction == pytest.approx(370 / 600)
    assert p.eta() == pytest.approx(0.25 * 230) and p.rate() == pytest.approx(4.0)
    world.store.update(world.jobs["running"].id, status="succeeded")
    changes = feed.poll().transitions
    assert [(r.id, old) for r, old in changes] == [(world.jobs["running"].id, "running")]
    text, severity = transition_message(changes[0][0], "running")
    assert text == "Fine-tune of demo-qa succeeded" and severity == "information"


def test_progress_reads_only_the_ends_of_a_big_metrics_file(world, tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = testing.loss_curve(max_steps=20_000, upto=20_000, every=1, eval_every=10**9)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 12')  # a line being written
    p = read_progress(path)
    assert p.step == 20_000 and p.begin_t == rows[0]["t"]


@sync
async def test_running_job_shows_log_chart_progress_and_eta(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await testing.open_jobs(app, pilot)
        rec = world.jobs["running"]
        assert pane.selected == rec.id  # opens on the running job
        table = pane.query_one(DataTable)
        assert table.row_count == 6
        assert "62% 370/600" in str(table.get_row(rec.id)[3])
        log = pane.query_one(Log)
        await until(pilot, lambda: log.line_count > 30, what="log lines")
        assert not any("[aitk-metric]" in line for line in log.lines)
        chart = pane.query_one(LossChart)
        await until(pilot, lambda: len(chart.train) == 37 and len(chart.eval) == 1, what="chart data")
        assert "step 370/600" in str(pane.query_one("#job-eta").content) and "ETA 58s" in \
            str(pane.query_one("#job-eta").content)
        # The job goes on: new lines and metrics appear without reselecting.
        with open(world.store.log_path(rec.id), "a") as f:
            f.write("step 380 done\n")
        with open(world.store.metrics_path(rec.id), "a") as f:
            f.write(json.dumps({"step": 380, "max_steps": 600, "loss": 0.2, "t": testing.FIXED_NOW - 60}) + "\n")
        await until(pilot, lambda: log.lines[-1] == "step 380 done" and len(chart.train) == 38, what="follow")


@sync
async def test_finished_fine_tune_shows_eval_before_and_after(world):
    app = testing.fixture_app()
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await testing.open_jobs(app, pilot)
        pane.select_job(world.jobs["ft-old"].id)
        evals = [r["eval_loss"] for r in testing.loss_curve() if "eval_loss" in r]
        await until(pilot, lambda: "Base → tuned" in text_of(pane.query_one("#job-eval"))
                    and "@600" in text_of(pane.query_one("#job-eval")), what="eval results")
        text = text_of(pane.query_one("#job-eval"))
        assert "loss 7.610 → 0.912" in text and "ppl  2,018 → 2.49" in text
        assert f"first {evals[0]:.3f} @200" in text and f"last  {evals[-1]:.3f} @600" in text
        assert "finished in 40s" in str(pane.query_one("#job-eta").content)


@sync
async def test_cancel_stops_the_job_process(world, monkeypatch):
    monkeypatch.setattr("aitk.providers.local.CANCEL_GRACE_S", 0.2)
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await testing.open_jobs(app, pilot)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="cancel asks first")
        await pilot.press("y")
        rec_id = world.jobs["running"].id
        await until(pilot, lambda: world.store.get(rec_id).status == CANCELLED, what="cancelled")
        await until(pilot, lambda: world.sleeper.proc.poll() is not None, what="process gone")
        await until(pilot, lambda: "cancelled" in str(app.pane("jobs").query_one(DataTable).get_row(rec_id)[0]),
                    what="table updated")


@sync
async def test_retry_and_delete_a_failed_job(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await testing.open_jobs(app, pilot)
        failed = world.jobs["failed"]
        pane.select_job(failed.id)
        before = {r.id for r in world.store.list()}
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="retry asks first")
        await pilot.press("y")
        # A retried fine-tune brings its pipeline: export and evaluation queued behind it again.
        await until(pilot, lambda: len(world.store.list()) == 9, what="a new fine-tune, export and evaluation")
        added = [r for r in world.store.list() if r.id not in before]
        new = next(r for r in added if r.kind == "finetune")
        assert (new.kind, new.status, new.project, new.provider) == ("finetune", "queued", failed.project, "local")
        assert sorted((r.kind, r.parent) for r in added if r is not new) == [("evaluate", new.id), ("export", new.id)]
        await until(pilot, lambda: pane.selected == new.id, what="the new job selected")
        pane.select_job(failed.id)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        await until(pilot, lambda: failed.id not in {r.id for r in world.store.list()}, what="deleted")
        assert not world.store.job_dir(failed.id).exists()
        await until(pilot, lambda: pane.query_one(DataTable).row_count == 8, what="row removed")


@sync
async def test_resume_from_the_last_checkpoint(world):
    rec = world.jobs["failed"]
    world.store.update(rec.id, status=INTERRUPTED)
    ckpt = world.store.job_dir(rec.id) / "checkpoints" / "checkpoint-200"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await testing.open_jobs(app, pilot)
        pane.select_job(world.jobs["ft-old"].id)
        await pilot.press("u")  # a finished job has nothing to resume
        await pilot.pause(0.3)
        assert len(world.store.list()) == 6
        pane.select_job(rec.id)
        await pilot.press("u")
        # Resumed in place (the same record, so no step is trained twice) with export and
        # evaluate queued behind it again.
        await until(pilot, lambda: len(world.store.list()) == 8, what="export and evaluate queued again")
        assert world.store.get(rec.id).params.get("resume") is True
        kinds = {r.kind: r for r in world.store.list()[:2]}
        assert kinds["export"].parent == kinds["evaluate"].parent == rec.id


@sync
async def test_open_project_and_chat_with_result(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await testing.open_jobs(app, pilot)
        pane.select_job(world.jobs["ft-old"].id)
        await pilot.press("o")
        await until(pilot, lambda: app.query_one("#panes", TabbedContent).active == "projects", what="projects")
        await until(pilot, lambda: (app.pane("projects").selected or "").endswith("demo-qa"), what="selected")
        await pilot.press("f3")
        await pilot.pause(0.2)
        await pilot.press("t")  # its export succeeded: straight to chat on that model
        await until(pilot, lambda: app.query_one("#panes", TabbedContent).active == "chat", what="chat")
        await until(pilot, lambda: str(app.pane("chat").query_one("#chat-model").value).endswith("onnx/fp32"),
                    what="model chosen")


@sync
async def test_failed_job_shows_its_error(world):
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await testing.open_jobs(app, pilot)
        pane.select_job(world.jobs["failed"].id)
        await until(pilot, lambda: "empty value" in text_of(pane.query_one("#job-head")), what="the error")
        assert world.store.get(world.jobs["failed"].id).status == FAILED


def test_jobs_of_another_process_are_followed(world):
    """A job the CLI starts is just a row in the same store: the feed sees it on the next poll."""
    feed = JobsFeed(JobStore())
    before = {r.id for r in feed.poll().records}
    other = JobStore()  # another process' view of the same files
    rec = other.create("export", project=str(testing.fabricate_project("cli-made")))
    after = feed.poll()
    assert rec.id in {r.id for r in after.records} - before
    assert time.time() - rec.created < 60


@sync
async def test_keys_a_jobs_back_end_lacks_are_greyed_out(world):
    """An Azure run cannot resume from a local checkpoint: `u` is shown disabled on it, not on a local job."""
    remote = testing.fabricate_job(world.store, "finetune", "failed", testing.Path(world.jobs["failed"].project),
                                   created=testing.FIXED_NOW - 100, error="remote: CUDA out of memory")
    world.store.update(remote.id, provider="azure")
    app = testing.fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await testing.open_jobs(app, pilot)
        pane.select_job(remote.id)
        await until(pilot, lambda: "u" in app.active_bindings and not app.active_bindings["u"].enabled,
                    what="resume greyed out")
        assert app.active_bindings["r"].enabled and app.active_bindings["c"].enabled
        pane.select_job(world.jobs["failed"].id)
        await until(pilot, lambda: app.active_bindings["u"].enabled, what="resume offered for a local job")
