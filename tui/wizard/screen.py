"""The new-project wizard as a modal: six steps, back and cancel anywhere, files only on confirm."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, ContentSwitcher, Input, Static

from aitk.core import tiny
from aitk.core.errors import AitkError
from aitk.tui.wizard.state import WizardResult, WizardState, create
from aitk.tui.wizard.step_dataset import DatasetStep
from aitk.tui.wizard.step_model import ModelStep
from aitk.tui.wizard.step_name import NameStep
from aitk.tui.wizard.step_summary import SummaryStep
from aitk.tui.wizard.step_target import TargetStep
from aitk.tui.wizard.step_training import TrainingStep

STEPS = [NameStep, ModelStep, DatasetStep, TrainingStep, TargetStep, SummaryStep]


class WizardScreen(ModalScreen[WizardResult | None]):
    DEFAULT_CSS = """
    WizardScreen { align: center middle; overflow: hidden; }  /* the step's own scrollbar is the only one */
    WizardScreen > #wizard { width: 100%; max-width: 130; height: 100%; max-height: 44;
                             border: thick $primary; background: $surface; }
    WizardScreen #wizard-steps { height: 1; padding: 0 1; background: $panel; }
    WizardScreen ContentSwitcher { height: 1fr; }
    WizardScreen #wizard-error { height: auto; max-height: 3; padding: 0 1; color: $error; }
    WizardScreen #wizard-buttons { height: 1; align-horizontal: right; padding: 0 1; }
    WizardScreen #wizard-buttons Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("ctrl+n", "next", "Next", id="wizard.next", priority=True),
        Binding("ctrl+r", "back", "Back", id="wizard.back", priority=True),
        Binding("escape", "cancel", "Cancel", id="wizard.cancel"),
        # From anywhere in the step (a button, the radio set): the step's scroll moves.
        Binding("pagedown", "page(1)", "Scroll down", id="wizard.page_down", show=False),
        Binding("pageup", "page(-1)", "Scroll up", id="wizard.page_up", show=False),
        Binding("question_mark", "app.help", "Help", id="wizard.help", show=False),
    ]

    def __init__(self, model_id: str | None = None, device=None):
        super().__init__()
        self.state = WizardState(model_id=model_id or tiny.TINY_ID, device=device.best if device else "cpu")
        if model_id and model_id != tiny.TINY_ID:
            from aitk.tui import catalog_cache

            self.state.entry = catalog_cache.load().find(model_id)
            self.state.model_path = self.state.entry.repo if self.state.entry else None
        self.state.reset_settings()
        self.index = 0
        self.creating = False

    def compose(self) -> ComposeResult:
        with Vertical(id="wizard"):
            yield Static("", id="wizard-steps")
            with ContentSwitcher(initial="step-0"):
                yield STEPS[0](self.state, id="step-0")  # the others are built when first reached
            yield Static("", id="wizard-error")
            with Horizontal(id="wizard-buttons"):
                yield Button("Cancel esc", id="wiz-cancel", compact=True)
                yield Button("◀ Back ^r", id="wiz-back", compact=True)
                yield Button("Next ▶ ^n", id="wiz-next", compact=True, variant="primary")

    async def on_mount(self) -> None:
        self.query_one("#wizard").border_title = "New project"
        await self._show(0)

    # -- navigation ---------------------------------------------------------------------------
    @property
    def step(self):
        return self.query_one(f"#step-{self.index}")

    async def _show(self, index: int) -> None:
        switcher = self.query_one(ContentSwitcher)
        if not switcher.query(f"#step-{index}"):
            await switcher.mount(STEPS[index](self.state, id=f"step-{index}"))
        self.index = index
        step = self.step
        step.enter()
        self.query_one(ContentSwitcher).current = f"step-{index}"
        self._error(None)
        crumbs = Text()
        for i, cls in enumerate(STEPS):
            if i:
                crumbs.append(" › ", style="dim")
            style = "bold reverse" if i == index else ("" if i < index else "dim")
            crumbs.append(f" {i + 1} {cls.TITLE} ", style=style)
        self.query_one("#wizard-steps", Static).update(crumbs)
        last = index == len(STEPS) - 1
        self.query_one("#wiz-next", Button).label = "Create ✔ ^n" if last else "Next ▶ ^n"
        self.query_one("#wiz-back", Button).disabled = index == 0
        self.call_after_refresh(step.focus_first)

    def _error(self, text: str | None) -> None:
        self.query_one("#wizard-error", Static).update(Text(text or "", style="bold"))

    async def action_next(self) -> None:
        if self.creating:
            return
        error = self.step.commit()
        if error:
            self._error(error)
            return
        if self.index == len(STEPS) - 1:
            self._create()
        else:
            await self._show(self.index + 1)

    async def action_back(self) -> None:
        if self.index > 0 and not self.creating:
            self.step.commit()  # keep what was typed, valid or not
            await self._show(self.index - 1)

    def action_page(self, direction: int) -> None:
        from textual.containers import ScrollableContainer

        scrolls = list(self.step.query(ScrollableContainer))
        if scrolls:
            scroll = scrolls[0]
            (scroll.scroll_page_down if direction > 0 else scroll.scroll_page_up)(animate=False)

    def action_cancel(self) -> None:
        if self.creating:
            return
        if self.index == 0:
            self.dismiss(None)
            return
        from aitk.tui.widgets.confirm import ConfirmScreen

        self.app.push_screen(ConfirmScreen("Discard this new project? Nothing has been written yet.",
                                           yes="Discard"), lambda yes: self.dismiss(None) if yes else None)

    @on(Button.Pressed)
    async def _button(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "wiz-next":
            await self.action_next()
        elif event.button.id == "wiz-back":
            await self.action_back()
        elif event.button.id == "wiz-cancel":
            self.action_cancel()

    @on(Input.Submitted)
    async def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        await self.action_next()

    # -- creating -----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="wizard-create")
    def _create(self) -> None:
        self.creating = True
        building = self.state.model_id == tiny.TINY_ID and not tiny.is_built()
        self.app.call_from_thread(self._error, "building the tiny model (once, ~10 s)…" if building
                                  else "creating the project…")
        try:
            result = create(self.state, self.app.store())
        except AitkError as e:
            self.creating = False
            self.app.call_from_thread(self._error, str(e))
            return
        except Exception as e:  # noqa: BLE001 - show it; the project folder is never half-written
            self.creating = False
            self.app.call_from_thread(self._error, f"{type(e).__name__}: {e}")
            return
        started = " and started fine-tuning" if result.job_ids else ""
        self.app.call_from_thread(self.app.notify, f"Created {result.root}{started}", title="New project")
        self.app.call_from_thread(self.dismiss, result)
