"""Jobs: every job in the store, and the selected one live: log, progress with ETA, loss chart, eval.

The table refreshes from the app's job feed. The selected job is followed by one worker thread
reading only the new bytes of its log and metrics files; lines arrive in batches (the `Log` widget
takes 100k lines in half a second that way) into a capped buffer, metric lines go to the chart.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Log, ProgressBar, Static
from textual.worker import get_current_worker

from aitk.core import follow
from aitk.core.errors import AitkError
from aitk.core.jobs import ACTIVE, JobRecord
from aitk.core.metrics import MARK
from aitk.tui import job_actions
from aitk.tui.formatting import PARITY_STYLE, clock_time, duration, status_text
from aitk.tui.jobs_feed import FeedUpdate, Progress
from aitk.tui.panes.base import Pane
from aitk.tui.widgets.job_log import JobLog
from aitk.tui.widgets.loss_chart import LossChart

TAIL_BYTES = 1 << 20  # a selected job shows at most the last MiB of its log
FOLLOW_POLL_S = 0.25
BATCH_INTERVAL_S = 0.05
COLUMN_KEYS = ("status", "kind", "project", "progress", "created", "device")
KIND_LABEL = {"finetune": "fine-tune", "export": "export", "evaluate": "evaluate", "download": "download"}


class FollowData(Message):
    def __init__(self, job_id: str, lines: list[str], records: list[dict], skipped_bytes: int = 0):
        super().__init__()
        self.job_id, self.lines, self.records, self.skipped_bytes = job_id, lines, records, skipped_bytes


def _json_records(lines: list[str]) -> list[dict]:
    import json

    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}"


def parity_summary(mark) -> Text:
    """The parity mark for the narrow panel beside the chart: the state, each form's agreement,
    and a failed check's first divergent example."""
    icon, style = PARITY_STYLE.get(mark.state, ("?", "dim"))
    out = Text("Parity ", style="bold")
    out.append(f"{icon} {mark.state} {mark.precision}\n", style=style)
    if mark.state == "stale":
        out.append(" export changed since\n", style="yellow")
    for c in (mark.record or {}).get("comparisons", []):
        if c.get("against") == "torch" and not c.get("skipped"):
            bad = c.get("required") and c["agree"] != c["total"]
            out.append(f" {c['form']:10} {c['agree']}/{c['total']}\n", style="red" if bad else "")
    for name in [f["name"] for f in (mark.record or {}).get("findings", []) if f.get("severity") == "error"]:
        out.append(f" ✘ {name}\n", style="red")
    return out


def eval_summary(records: list[dict], evaluation: dict | None = None, finished: bool = False,
                 parity=None) -> Text:
    """The parity mark (of an export or evaluate job, or a fine-tune's export), base vs tuned on
    the eval data (an evaluate job's result), the eval loss during training (first and last
    evaluation), and the train loss trend. `finished`: the run has ended."""
    evals = [(r["step"], r["eval_loss"]) for r in records if isinstance(r.get("eval_loss"), (int, float))]
    trains = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), (int, float))]
    out = parity_summary(parity) if parity is not None else Text()
    if evaluation and "base" in evaluation:
        out.append("Base → tuned\n", style="bold")
        base, tuned = evaluation["base"], evaluation.get("tuned")
        if tuned:
            out.append(f" loss {base['loss']:.3f} → {tuned['loss']:.3f}\n")
            out.append(f" ppl  {_num(base['perplexity'])} → {_num(tuned['perplexity'])}\n",
                       style="green" if tuned["perplexity"] < base["perplexity"] else "red")
        else:
            out.append(f" loss {base['loss']:.3f} (no adapter)\n")
    out.append("Eval loss\n", style="bold")
    if not evals and finished:
        # A run that has ended will not evaluate any more: "yet" would wait forever.
        out.append(" none in this run\n", style="dim")
        out.append(" (no eval data, or it ended before eval_steps)\n", style="dim")
    elif not evals:
        out.append(" no evaluation yet\n", style="dim")
    else:
        (s0, v0), (s1, v1) = evals[0], evals[-1]
        out.append(f" first {v0:.3f}", style="")
        out.append(f" @{s0}\n", style="dim")
        if len(evals) > 1:
            out.append(f" last  {v1:.3f}", style="")
            out.append(f" @{s1}\n", style="dim")
            change = (v1 - v0) / v0 * 100 if v0 else 0.0
            out.append(f" {change:+.1f}%\n", style="green" if change < 0 else "red")
    out.append("Train loss\n", style="bold")
    if not trains:
        out.append(" —\n", style="dim")
    else:
        out.append(f" {trains[0][1]:.3f} → {trains[-1][1]:.3f}\n")
    return out


def chart_note(rec: JobRecord | None) -> str:
    """What the loss chart says while it has no point."""
    if rec is not None and rec.kind != "finetune":
        return f"no loss curve: this is {'an' if rec.kind[0] in 'aeiou' else 'a'} {rec.kind} job"
    if rec is not None and rec.is_final:
        return f"no loss values: the job {rec.status} before its first logged step"
    if rec is not None and rec.status == "queued":
        return "waiting for the job to start…"
    return "waiting for the first loss value…"


class JobsPane(Pane):
    MAIN = "#jobs-table"
    BINDINGS = [
        Binding("c", "cancel", "Cancel", id="jobs.cancel"),
        Binding("r", "retry", "Retry", id="jobs.retry"),
        Binding("u", "resume", "Resume", id="jobs.resume"),
        Binding("delete,d", "delete", "Delete", id="jobs.delete"),
        Binding("o", "open_project", "Project", id="jobs.open_project"),
        Binding("t", "chat", "Chat", id="jobs.chat"),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.records: dict[str, JobRecord] = {}
        self.order: list[str] = []
        self.progress: dict[str, Progress] = {}
        self.selected: str | None = None
        self.metrics: list[dict] = []
        self._select_timer = None
        self._pending_select: str | None = None
        self._evaluations: dict[str, dict | None] = {}
        self._parities: dict[str, object] = {}  # job id -> its parity mark (None: it ran no check)
        self._shown: dict[str, tuple] = {}  # cells on screen per job, to update only what changed
        self._painted: dict[str, object] = {}  # content of the detail's Statics, likewise

    def compose(self) -> ComposeResult:
        table = DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        table.add_column("Status", key="status", width=13)
        table.add_column("Kind", key="kind", width=9)
        table.add_column("Project", key="project", width=18)
        table.add_column("Progress", key="progress", width=12)
        table.add_column("Created", key="created", width=7)
        table.add_column("Device", key="device", width=6)
        yield table
        with Vertical(id="job-detail"):
            yield Static("No job selected. Start one from Projects (F2: f) or the wizard (ctrl+n).",
                         id="job-head")
            with Horizontal(id="job-progress-row"):
                yield ProgressBar(id="job-progress", show_eta=False, total=100)
                yield Static("", id="job-eta")
            with Horizontal(id="job-charts"):
                yield LossChart(id="job-chart")
                yield Static(eval_summary([]), id="job-eval")
            yield JobLog(id="job-log", max_lines=self.app.config.jobs.log_lines, highlight=False)

    # -- table --------------------------------------------------------------------------------
    def jobs_updated(self, update: FeedUpdate) -> None:
        table = self.query_one(DataTable)
        now = self.app.clock()
        ids = [r.id for r in update.records]
        self.progress = update.progress
        self.records = {r.id: r for r in update.records}
        if any(r.status == "succeeded" for r, _ in update.transitions):
            self._parities.clear()  # a new export may have made an older check stale
        if ids != self.order:
            target = self._pending_select or self.selected
            # Refilling moves the cursor; those moves are not the user's choice.
            with table.prevent(DataTable.RowHighlighted):
                table.clear()
                self._shown = {}
                for rec in update.records:
                    self._shown[rec.id] = self._cells(rec, now)
                    table.add_row(*self._shown[rec.id], key=rec.id)
                if target in self.records:
                    table.move_cursor(row=ids.index(target), animate=False)
            self.order = ids
            if target in self.records:
                self._pending_select = None
            if target is None and ids:
                # Open on what is most worth watching: a running job, else the newest.
                first = next((r.id for r in update.records if r.status == "running"), ids[0])
                with table.prevent(DataTable.RowHighlighted):
                    table.move_cursor(row=ids.index(first), animate=False)
                self._select(first)
        else:
            for rec in update.records:
                cells = self._cells(rec, now)
                old = self._shown.get(rec.id)
                for i, (key, value) in enumerate(zip(COLUMN_KEYS, cells)):
                    if old is None or old[i] != value:
                        table.update_cell(rec.id, key, value)
                self._shown[rec.id] = cells
        if self.selected in self.records and (update.transitions or self.records[self.selected].status in ACTIVE
                                               or update.first):
            self._show_head(self.records[self.selected])
            if any(r.kind in ("evaluate", "export") for r, _ in update.transitions):
                self._update_eval()

    def _parity(self, rec: JobRecord | None):
        """The parity mark of a finished export or evaluate job (a fine-tune: its export's), cached
        until a job succeeds (a new export makes older checks stale)."""
        if rec is not None and rec.kind == "finetune":  # its own export's (newest first)
            rec = next((r for r in self.records.values() if r.kind == "export" and r.parent == rec.id
                        and r.status == "succeeded"), None)
        if rec is None or rec.kind not in ("export", "evaluate") or rec.status != "succeeded":
            return None
        if rec.id not in self._parities:
            self._parities[rec.id] = job_actions.parity_mark(self.app.store(), rec)
        return self._parities[rec.id]

    def _update_eval(self) -> None:
        rec = self.records.get(self.selected or "")
        evaluation = None
        if rec is not None:
            ev = rec if rec.kind == "evaluate" else \
                job_actions.child_of_kind(list(self.records.values()), rec, "evaluate")
            if ev is not None and ev.status == "succeeded":
                if ev.id not in self._evaluations:
                    self._evaluations[ev.id] = job_actions.evaluation_result(self.app.store(), ev)
                evaluation = self._evaluations[ev.id]
        self.query_one("#job-eval", Static).update(
            eval_summary(self.metrics, evaluation, finished=rec is not None and rec.is_final, parity=self._parity(rec)))

    def _cells(self, rec: JobRecord, now: float) -> tuple:
        progress = self.progress.get(rec.id)
        mark = self._parity(rec) if rec.kind != "finetune" else None
        if mark is not None:
            icon, style = PARITY_STYLE.get(mark.state, ("?", "dim"))
            prog = Text(f"{icon} parity" if mark.state != "stale" else "parity stale", style=style)
        elif rec.status == "succeeded":
            prog = Text("done", style="green")
        elif progress and progress.fraction is not None:
            prog = Text(f"{progress.fraction * 100:3.0f}% {progress.step}/{progress.max_steps}")
        elif rec.status in ACTIVE:
            prog = Text("…", style="dim")
        else:
            prog = Text("—", style="dim")
        project = Path(rec.project).name if rec.project else "—"
        return (status_text(rec.status), KIND_LABEL.get(rec.kind, rec.kind), project, prog,
                clock_time(rec.created, now), rec.device or "—")

    @on(DataTable.RowHighlighted, "#jobs-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key else None
        if self._select_timer:
            self._select_timer.stop()
            self._select_timer = None
        if key and key != self.selected:
            # Arrowing through the table should not start a log reader per row: wait a moment.
            self._pending_select = None
            self._select_timer = self.set_timer(0.12, lambda: self._select(key))

    def select_job(self, job_id: str) -> None:
        """Select a job by id (it may not be in the table yet: the cursor goes there when it appears)."""
        if job_id in self.records:
            with self.query_one(DataTable).prevent(DataTable.RowHighlighted):
                self.query_one(DataTable).move_cursor(row=self.order.index(job_id), animate=False)
        else:
            self._pending_select = job_id
        self._select(job_id)

    def _select(self, job_id: str) -> None:
        if job_id == self.selected:
            return
        self.selected = job_id
        self.refresh_bindings()  # keys this job's back end lacks are greyed out (check_action)
        self.metrics = []
        self.query_one(Log).clear()
        chart = self.query_one(LossChart)
        chart.clear()
        chart.empty_text = chart_note(self.records.get(job_id))
        self._update_eval()
        if job_id in self.records:
            self._show_head(self.records[job_id])
        self._follow(job_id)

    # -- selected job -------------------------------------------------------------------------
    def _show_head(self, rec: JobRecord) -> None:
        now = self.app.clock()
        head = Text.assemble((KIND_LABEL.get(rec.kind, rec.kind), "bold"), " · ",
                             (Path(rec.project).name if rec.project else "—", "bold"), " · ",
                             status_text(rec.status), " · ", (rec.device or "—"), " · ", (rec.id, "dim"))
        if rec.error and rec.status != "succeeded":
            head.append(f"\n{rec.error}", style="red" if rec.status == "failed" else "yellow")
        mark = self._parity(rec)
        if mark is not None and mark.state == "failed":  # a warning with the first divergent example
            div = mark.divergence
            head.append(f"\n⚠ parity failed ({div['form']}): {div['prompt']!r} expected {div['expected']!r}, "
                        f"got {div['got']!r}" if div else f"\n⚠ {mark.summary}", style="yellow")
        self._update_if_changed("#job-head", head)
        chart = self.query_one(LossChart)
        note = chart_note(rec)
        if chart.empty_text != note:
            chart.empty_text = note
            chart.refresh()
        bar = self.query_one(ProgressBar)
        progress = self.progress.get(rec.id) or self._progress_from_metrics()
        if progress and progress.max_steps:
            bar.update(total=progress.max_steps, progress=progress.step)
        elif rec.status == "succeeded":
            bar.update(total=1, progress=1)
        elif rec.status in ("starting", "running"):
            bar.update(total=None)  # no step count (export, evaluate): a pulse
        else:
            bar.update(total=1, progress=0)
        started = rec.started or rec.created
        if rec.is_final:
            took = (rec.finished or now) - started
            verb = {"succeeded": "finished in", "failed": "failed after", "cancelled": "cancelled after",
                    "interrupted": "interrupted after", "skipped": "skipped"}.get(rec.status, "ended after")
            text = f"{verb} {duration(took)}" if rec.status != "skipped" else "skipped"
        elif rec.status == "queued":
            text = "waiting for a free slot" + (" and its parent job" if rec.parent else "")
        elif progress and progress.max_steps:
            rate = progress.rate()
            eta_s = progress.eta()
            bits = [f"step {progress.step}/{progress.max_steps}"]
            if rate:
                bits.append(f"{rate:.1f} st/s")
            bits.append(f"ETA {duration(eta_s)}" if eta_s is not None else "ETA —")
            text = " · ".join(bits)
        else:
            text = f"running {duration(now - started)}"
        self._update_if_changed("#job-eta", text)

    def _update_if_changed(self, selector: str, content) -> None:
        """Static.update repaints even when nothing changed; over a slow link every byte counts."""
        if self._painted.get(selector) != content:
            self._painted[selector] = content
            self.query_one(selector, Static).update(content)

    def _progress_from_metrics(self) -> Progress | None:
        if not self.metrics:
            return None
        p = Progress()
        for rec in self.metrics:
            p.update(rec)
        return p

    @work(thread=True, exclusive=True, group="job-follow")
    def _follow(self, job_id: str) -> None:
        worker = get_current_worker()
        store = self.app.store()
        log_path, metrics_path = store.log_path(job_id), store.metrics_path(job_id)
        try:
            size = log_path.stat().st_size
        except OSError:
            size = 0
        offset, skipped = 0, 0
        if size > TAIL_BYTES:
            with open(log_path, "rb") as f:
                f.seek(size - TAIL_BYTES)
                f.readline()  # drop the partial line
                offset = f.tell()
            skipped = offset
        m_offset = 0
        keep = self.app.config.jobs.log_lines  # the Log keeps no more: clean no more
        while not worker.is_cancelled:
            chunk = follow.read_from(log_path, offset, keep_last=keep)
            offset = chunk.offset
            lines = [line for line in chunk.lines if MARK not in line]
            m_chunk = follow.read_from(metrics_path, m_offset)
            m_offset = m_chunk.offset
            records = _json_records(m_chunk.lines)
            if lines or records or skipped:
                self.post_message(FollowData(job_id, lines, records, skipped))
                skipped = 0
            # After a batch, wait a little before the next: a flood arrives as ~20 batches a second,
            # each cheap to show, instead of hundreds that would queue ahead of the user's keys.
            time.sleep(BATCH_INTERVAL_S if chunk.lines or m_chunk.lines else FOLLOW_POLL_S)

    def on_follow_data(self, message: FollowData) -> None:
        if message.job_id != self.selected:
            return
        log = self.query_one(Log)
        if message.skipped_bytes:
            log.write_line(f"… {message.skipped_bytes // 1024} KiB of earlier log not shown "
                           f"(full log: {self.app.store().log_path(message.job_id)})")
        if message.lines:
            # Only what the capped buffer keeps: a 64k-line batch would be appended, then pruned.
            log.write_lines(message.lines[-log.max_lines:] if log.max_lines else message.lines)
            if log.auto_scroll:
                self.call_after_refresh(log.scroll_end, animate=False)
        if message.records:
            self.metrics.extend(message.records)
            self.query_one(LossChart).add_records(message.records)
            self._update_eval()
            if self.selected in self.records:
                self._show_head(self.records[self.selected])

    # -- actions ------------------------------------------------------------------------------
    def _current(self) -> JobRecord | None:
        rec = self.records.get(self.selected or "")
        if rec is None:
            self.app.notify("No job selected", severity="warning")
        return rec

    @work(thread=True, group="job-actions")
    def _run(self, label: str, fn, *args) -> None:
        try:
            result = fn(self.app.store(), *args)
        except AitkError as e:
            self.app.call_from_thread(self.app.notify, str(e), title=label, severity="error", timeout=10)
            return
        self.app.wake_jobs()
        first = result[0] if isinstance(result, list) and result else result
        # No toast on success: the table shows the change, and the feed's own toast tells the end.
        if isinstance(first, JobRecord):
            self.app.call_from_thread(self.select_job, first.id)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """None (shown greyed out) for an action the selected job's back end does not offer."""
        rec = self.records.get(self.selected or "")
        if action in ("cancel", "retry", "resume") and rec is not None:
            return True if action in job_actions.capabilities(self.app.store(), rec) else None
        return True

    def _allowed(self, action: str) -> JobRecord | None:
        """The selected job if `action` may be done to it; else the facade's reason, shown now."""
        rec = self._current()
        if rec is None:
            return None
        why = job_actions.refusal(self.app.store(), action, rec)
        if why is not None:
            self.app.notify(str(why), severity="warning")
            return None
        return rec

    def _confirm(self, question: str, yes: str, then) -> None:
        from aitk.tui.widgets.confirm import ConfirmScreen

        self.app.push_screen(ConfirmScreen(question, yes=yes), lambda answer: then() if answer else None)

    def _named(self, rec: JobRecord) -> str:
        return f"{KIND_LABEL.get(rec.kind, rec.kind)} {rec.id} of {Path(rec.project).name if rec.project else '—'}"

    def action_cancel(self) -> None:
        if rec := self._allowed("cancel"):
            self._confirm(f"Cancel the {self._named(rec)} ({rec.status})? Jobs queued behind it are skipped.",
                          "Cancel job", lambda: self._run("Job cancelled", job_actions.cancel, rec))

    def action_retry(self) -> None:
        if rec := self._allowed("retry"):
            what = " When it succeeds, its adapter replaces the project's current one." \
                if rec.kind == "finetune" else ""
            self._confirm(f"Run the {self._named(rec)} ({rec.status}) again as a new job?{what}",
                          "Retry", lambda: self._run("Job restarted", job_actions.retry, rec))

    def action_resume(self) -> None:
        if rec := self._allowed("resume"):
            self._run("Fine-tune resumed from its last checkpoint", job_actions.resume, rec)

    def action_delete(self) -> None:
        rec = self._allowed("delete")
        if rec is None:
            return
        def delete() -> None:
            # The cursor stays where it was: on the next row (the previous one at the end), never
            # back at the top, where the next key would act on another job than the user expects.
            rest = [i for i in self.order if i != rec.id]
            if rest:
                at = self.order.index(rec.id) if rec.id in self.order else 0
                self.select_job(rest[min(at, len(rest) - 1)])
            self._run("Job deleted", job_actions.delete, rec)

        self._confirm(f"Delete the {self._named(rec)} ({rec.status}) and its folder (log, metrics, "
                      "checkpoints)?", "Delete", delete)

    def _project_of(self, rec: JobRecord | None) -> str | None:
        """The job's project folder if it is still there; else say so (never open another one)."""
        if rec is None:
            return None
        from aitk.core.project_index import check_present

        try:
            return str(check_present(rec.project))
        except AitkError as e:
            self.app.notify(str(e), title=f"{KIND_LABEL.get(rec.kind, rec.kind)} {rec.id}", severity="error",
                            timeout=10)
            return None

    def action_open_project(self) -> None:
        rec = self._current()
        if self._project_of(rec):
            self.app.call_later(self.app.open_project, rec.project)

    def action_chat(self) -> None:
        rec = self._current()
        if not self._project_of(rec):
            return
        if rec.kind == "export":
            if rec.status == "succeeded":
                self.app.call_later(self.app.open_chat, rec.project)
            elif rec.status in ACTIVE:
                self.app.chat_when_done(rec.id, rec.project)
                self.app.notify("The chat opens when this export finishes")
            else:
                self.app.notify(f"This export {rec.status}; retry it (r) first", severity="warning")
            return
        if rec.kind != "finetune" or rec.status != "succeeded":
            self.app.notify("Chat needs a fine-tune that succeeded", severity="warning")
            return
        later = [r for r in self.records.values() if r.kind == "export" and r.project == rec.project
                 and r.created >= rec.created]
        active = [r for r in later if r.status in ACTIVE]
        if any(r.status == "succeeded" for r in later):
            self.app.call_later(self.app.open_chat, rec.project)
        elif active:
            self.app.chat_when_done(active[0].id, rec.project)
            self.app.notify("Exporting the model for chat; the chat opens when it is ready")
        else:
            self._export_then_chat(rec)

    @work(thread=True, group="job-actions")
    def _export_then_chat(self, rec: JobRecord) -> None:
        try:
            export = job_actions.start_export(self.app.store(), rec.project)
        except AitkError as e:
            self.app.call_from_thread(self.app.notify, str(e), severity="error")
            return
        self.app.wake_jobs()
        self.app.call_from_thread(self.app.chat_when_done, export.id, rec.project)
        self.app.call_from_thread(self.app.notify, "Exporting the model for chat; the chat opens when it is ready")
