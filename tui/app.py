"""`aitk-tui`: the full-screen workbench. Panes on F1-F4 (and tabs), commands on ctrl+p, help on `?`.

Start-up stays light: nothing here imports torch, transformers, peft, olive or an Azure SDK, and the
first paint waits for nothing slow. Device detection, the job store and everything else that
reads disks or spawns processes run in worker threads after the first frame.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import TabbedContent, TabPane
from textual.worker import get_current_worker

from aitk.tui.commands import COMMANDS
from aitk.tui.config import Config, load_config
from aitk.tui.jobs_feed import FeedUpdate, JobsFeed, transition_message
from aitk.tui.main_screen import MainScreen
from aitk.tui.theming import DEFAULT_THEME, load_themes
from aitk.tui.widgets.key_bar import KeyBar
from aitk.tui.widgets.status_bar import StatusBar

PANES = ("catalog", "projects", "jobs", "chat")
TOAST_S = 4  # how long a notification stays; errors twice as long (they also stay in the Jobs pane)
TITLES = {"catalog": "Catalog F1", "projects": "Projects F2", "jobs": "Jobs F3", "chat": "Chat F4"}
PANE_TYPES = {"catalog": ("aitk.tui.panes.catalog", "CatalogPane"),
              "projects": ("aitk.tui.panes.projects", "ProjectsPane"),
              "jobs": ("aitk.tui.panes.jobs", "JobsPane"),
              "chat": ("aitk.tui.panes.chat", "ChatPane")}


def make_pane(name: str):
    """A pane instance; its module is imported on first use, so start-up loads only the first pane."""
    import importlib

    module, cls = PANE_TYPES[name]
    return getattr(importlib.import_module(module), cls)(id=f"{name}-pane")


class PaneTabs(TabbedContent):
    """Tabs that follow focus only while it is really in the pane (Textual's own TabbedContent acts
    on a queued "a pane got focus" message even after the user has switched elsewhere)."""

    def _on_tab_pane_focused(self, event: TabPane.Focused) -> None:
        focused = self.screen.focused
        if focused is not None and event.tab_pane in focused.ancestors:
            super()._on_tab_pane_focused(event)
        else:
            event.stop()


class JobsUpdated(Message):
    def __init__(self, update: FeedUpdate):
        super().__init__()
        self.update = update


class DeviceDetected(Message):
    def __init__(self, info):
        super().__init__()
        self.info = info


class AitkApp(App):
    """The app. Every argument exists so tests and screenshots can run it on fabricated state."""

    TITLE = "aitk"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("f1", "show_pane('catalog')", "Catalog", id="pane.catalog", show=False),
        Binding("f2", "show_pane('projects')", "Projects", id="pane.projects", show=False),
        Binding("f3", "show_pane('jobs')", "Jobs", id="pane.jobs", show=False),
        Binding("f4", "show_pane('chat')", "Chat", id="pane.chat", show=False),
        Binding("ctrl+n", "new_project", "New project", id="app.new_project", show=False),
        Binding("question_mark", "help", "Help", id="app.help", show=False),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    def __init__(self, config: Config | None = None, *, start_pane: str = "projects", device=None,
                 azure=None, clock=time.time, watch_jobs: bool = True, store=None, theme: str | None = None):
        super().__init__()
        self.config = config or Config()
        self.start_pane = start_pane if start_pane in PANES else "projects"
        self.clock = clock
        self.watch_jobs = watch_jobs
        self._device = device
        self._azure = azure
        self._store = store
        self._wake = threading.Event()
        self._chat_when_done: dict[str, str] = {}  # export job id -> project root to chat with
        self.last_update: FeedUpdate | None = None
        themes, problems = load_themes()
        for found in themes:
            self.register_theme(found)
        self.startup_problems = list(self.config.problems) + problems
        wanted = theme or self.config.theme or DEFAULT_THEME
        if wanted not in self.available_themes:
            self.startup_problems.append(f"theme {wanted!r} not found; using {DEFAULT_THEME}")
            wanted = DEFAULT_THEME
        self.theme = self._session_theme = wanted
        if self.config.keymap:
            self.set_keymap(self.config.keymap)

    # -- layout -------------------------------------------------------------------------------
    def get_default_screen(self) -> MainScreen:
        return MainScreen(id="_default")

    def compose(self) -> ComposeResult:
        # The first paint is the frame only; the first pane is built right after it, each other
        # one when it is first shown.
        with PaneTabs(initial=self.start_pane, id="panes"):
            for name in PANES:
                yield TabPane(TITLES[name], id=name)
        yield StatusBar(id="status")
        yield KeyBar(id="keys")

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        self.call_after_refresh(self._after_first_paint)

    async def _after_first_paint(self) -> None:
        (await self.ensure_pane(self.start_pane)).focus_main()
        status = self.main_widget("#status", StatusBar)
        if self._azure is None:
            from aitk.core.azure_signin import detect as detect_azure

            self._azure = detect_azure()
        status.azure = self._azure.label
        if self._device is not None:
            self.post_message(DeviceDetected(self._device))
        else:
            self._detect_device()
        if self.watch_jobs:
            self._jobs_loop()
        for problem in self.startup_problems:
            self.notify(problem, title="Settings", severity="warning", timeout=12)

    # -- panes --------------------------------------------------------------------------------
    def main_widget(self, selector: str, expect_type=None):
        """A widget of the main screen, whatever modal (wizard, help, palette) is on top of it."""
        return self.screen_stack[0].query_one(selector, expect_type)

    def pane(self, name: str):
        """The pane, or None while it is not built yet (see `ensure_pane`)."""
        try:
            return self.main_widget(f"#{name}-pane")
        except NoMatches:
            return None

    async def ensure_pane(self, name: str):
        pane = self.pane(name)
        if pane is None:
            pane = make_pane(name)
            await self.main_widget(f"TabPane#{name}").mount(pane)
            self._freeze_heap()
        return pane

    @staticmethod
    def _freeze_heap() -> None:
        """Move what exists now (modules, widgets, styles: alive as long as the app) out of the
        garbage collector's reach. Its full passes over them paused the app 50-65 ms, several
        times a minute under load; after this they take ~15-25 ms (bench/log_follow.py)."""
        import gc

        gc.freeze()

    @property
    def current_pane(self) -> str:
        return self.main_widget("#panes", TabbedContent).active

    async def action_show_pane(self, name: str):
        if isinstance(self.screen, ModalScreen) or name not in PANES:
            return None
        pane = await self.ensure_pane(name)
        tabs = self.main_widget("#panes", TabbedContent)
        if tabs.active != name:
            # Drop focus first: else Textual moves it off the widget being hidden to a neighbour in
            # the old pane, and the tabs follow focus back there.
            self.screen.set_focus(None)
            tabs.active = name
        pane.focus_main()  # retries until the pane is shown
        return pane

    @on(TabbedContent.TabActivated)
    async def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # Switching tabs does not move focus into the new pane: do it, so its keys work at once.
        # (A late event for a tab switched away from already must not pull focus back.)
        if event.pane.id in PANES and len(self.screen_stack) == 1 and event.pane.id == self.current_pane:
            pane = await self.ensure_pane(event.pane.id)
            pane.focus_main()

    async def action_pane_do(self, name: str, action: str) -> None:
        pane = await self.action_show_pane(name)
        if pane is not None:
            await self.run_action(action, pane)

    # -- commands, help, theme ----------------------------------------------------------------
    def get_system_commands(self, screen):
        for cmd in COMMANDS:
            yield SystemCommand(cmd.title, cmd.help, lambda a=cmd.action: self.run_action(a))
        yield from super().get_system_commands(screen)

    def action_help(self) -> None:
        from aitk.tui.help_screen import HelpScreen
        from aitk.tui.wizard.screen import WizardScreen

        if not isinstance(self.screen, ModalScreen) or isinstance(self.screen, WizardScreen):
            # Built once and kept: laying out its tables costs ~0.3 s here, reopening ~10 ms.
            if not self.is_screen_installed("help"):
                self.install_screen(HelpScreen(), "help")
            self.push_screen("help")

    def action_new_project(self, model_id: str | None = None) -> None:
        from aitk.tui.wizard.screen import WizardScreen

        if isinstance(self.screen, ModalScreen):
            return
        self.push_screen(WizardScreen(model_id=model_id, device=self._device), self._wizard_done)

    def _wizard_done(self, result) -> None:
        if result:
            # Runs while the wizard is still on top: act once it is gone.
            self.call_after_refresh(self._show_created, result)

    async def _show_created(self, result) -> None:
        (await self.ensure_pane("projects")).refresh_projects(select=str(result.root))
        if result.job_ids:
            self.wake_jobs()
            await self.show_job(result.job_ids[0])
        else:
            await self.action_show_pane("projects")

    async def show_job(self, job_id: str) -> None:
        jobs = await self.action_show_pane("jobs")
        if jobs is not None:
            jobs.select_job(job_id)

    def _remember_theme(self, theme) -> None:
        """A theme chosen in the app (palette) is saved; the start-up one (config or --theme) is not."""
        if theme.name in (self._session_theme, self.config.theme):
            return
        self._session_theme = None
        problem = self.config.save(theme=theme.name)
        if problem:
            self.notify(problem, severity="warning")

    def action_show_config(self) -> None:
        lines = [f"Config file: {self.config.path}"]
        lines += self.startup_problems or ["no problems found"]
        self.notify("\n".join(lines), title="Settings", timeout=15)

    def action_azure_status(self) -> None:
        from aitk.core.azure_signin import detect as detect_azure

        self._azure = detect_azure()
        self.main_widget("#status", StatusBar).azure = self._azure.label
        note = "" if self._azure.signed_in else " (run `az login`, or set AZURE_CLIENT_ID/AZURE_TENANT_ID/...)"
        self.notify(self._azure.label + note, title="Azure")

    # -- background: device and jobs ----------------------------------------------------------
    @work(thread=True, exclusive=True, group="device")
    def _detect_device(self) -> None:
        from aitk.core.devices import detect

        self.post_message(DeviceDetected(detect()))

    def on_device_detected(self, message: DeviceDetected) -> None:
        self._device = message.info
        self.main_widget("#status", StatusBar).device = message.info.label

    @property
    def device(self):
        return self._device

    def store(self):
        """The job store (created on first use, off the UI thread where possible)."""
        if self._store is None:
            from aitk.core.jobs import JobStore

            self._store = JobStore()
        return self._store

    def wake_jobs(self) -> None:
        self._wake.set()

    @work(thread=True, exclusive=True, group="jobs-feed")
    def _jobs_loop(self) -> None:
        worker = get_current_worker()
        try:
            feed = JobsFeed(self.store())
        except Exception as e:  # noqa: BLE001 - an unreadable store must not kill the app
            self.call_from_thread(self.notify, f"job store: {e}", severity="error", timeout=20)
            return
        while not worker.is_cancelled and self._running:
            try:
                self.post_message(JobsUpdated(feed.poll()))
            except Exception as e:  # noqa: BLE001 - a locked database: try again next round
                if self._running:
                    self.call_from_thread(self.notify, f"job store: {e}", severity="warning")
            self._wake.wait(self.config.jobs.poll_seconds)
            self._wake.clear()

    def on_unmount(self) -> None:
        self._wake.set()  # the job feed thread notices the exit now, not a poll later

    def on_jobs_updated(self, message: JobsUpdated) -> None:
        if not self.screen_stack or self._exit:
            return
        update = message.update
        self.last_update = update
        try:
            status = self.main_widget("#status", StatusBar)
        except NoMatches:  # shutting down
            return
        status.running = sum(1 for r in update.records if r.status in ("starting", "running"))
        status.queued = sum(1 for r in update.records if r.status == "queued")
        for name in PANES:
            pane = self.pane(name)
            if pane is not None and pane.ready:  # a pane built later catches up in its on_mount
                pane.jobs_updated(update)
        notes = []
        for rec, old in update.transitions:
            note = transition_message(rec, old)
            # Watching the Jobs pane, a start is on screen already; the ends are still worth a toast.
            if note and not (rec.status == "running" and self.current_pane == "jobs"):
                notes.append(note)
            if rec.id in self._chat_when_done and rec.status == "succeeded":
                self.call_later(self.open_chat, self._chat_when_done.pop(rec.id))
            elif rec.id in self._chat_when_done and rec.is_final:
                self._chat_when_done.pop(rec.id)
        if notes:
            # One toast per poll, not one per job: a cancel that skips two children is one message.
            worst = next((sev for sev in ("error", "warning") if any(n[1] == sev for n in notes)), "information")
            self.notify("\n".join(text for text, _ in notes[:4]) + (f"\n… and {len(notes) - 4} more"
                                                                     if len(notes) > 4 else ""),
                        severity=worst, timeout=TOAST_S * (2 if worst == "error" else 1))

    # -- quitting -----------------------------------------------------------------------------
    def jobs_left_running(self) -> str | None:
        """What to tell a user quitting while jobs are active: they go on without the app."""
        from aitk.core.jobs import ACTIVE

        active = [r for r in (self.last_update.records if self.last_update else []) if r.status in ACTIVE]
        if not active:
            return None
        first = next((r for r in active if r.status != "queued"), active[0])
        n = len(active)
        return (f"{n} job{'s' if n != 1 else ''} ({', '.join(sorted({r.status for r in active}))}) "
                f"keep{'s' if n == 1 else ''} running after you quit. See {'it' if n == 1 else 'them'} again: "
                f"aitk-tui, then F3; or `aitk jobs list`, `aitk jobs logs {first.id} -f`.")

    async def action_quit(self) -> None:
        from aitk.tui.widgets.confirm import ConfirmScreen

        message = self.jobs_left_running()
        if message is None or isinstance(self.screen, ConfirmScreen):
            self.exit(message=message)
            return
        self.push_screen(ConfirmScreen(message + "\n\nQuit now?", yes="Quit"),
                         lambda yes: self.exit(message=message) if yes else None)

    def chat_when_done(self, job_id: str, project_root: str) -> None:
        self._chat_when_done[job_id] = project_root

    async def open_chat(self, project_root: str, mode: str | None = None) -> None:
        chat = await self.action_show_pane("chat")
        if chat is not None:
            chat.open_project(project_root, mode=mode)

    async def open_project(self, project_root: str) -> None:
        projects = await self.action_show_pane("projects")
        if projects is not None:
            projects.refresh_projects(select=project_root)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="aitk-tui", description="Fine-tune and chat with small language models.")
    ap.add_argument("--pane", choices=PANES, default="projects", help="pane to open first")
    ap.add_argument("--theme", help="colour theme for this run (not remembered)")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    args = ap.parse_args(argv)
    if args.version:
        from aitk import __version__

        print(f"aitk-tui {__version__}")
        return 0
    config = load_config()
    app = AitkApp(config, start_pane=args.pane, theme=args.theme)
    if args.theme and app.theme != args.theme:
        print(f"aitk-tui: no theme {args.theme!r}; choose from: {', '.join(sorted(app.available_themes))}",
              file=sys.stderr)
        return 2
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
