"""Step 6: everything at a glance, the Olive config it will run, the equivalent `aitk` commands."""

from __future__ import annotations

import json

from rich.console import Group
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from aitk.tui.widgets.toggles import Checkbox
from aitk.tui.wizard.memory import chosen_device, estimate_text
from aitk.tui.wizard.state import command_line
from aitk.tui.wizard.step import Step
from aitk.tui.wizard.step_target import azure_available


def azure_estimate_text(settings) -> Text:
    """GPU time and cost on Azure's default GPU, with where the numbers come from (dim)."""
    from aitk.providers.azure import config, estimate

    est = estimate.estimate(settings, config.DEFAULT_GPU)
    out = Text(est.line())
    for src in est.sources():
        out.append("\n" + src, style="dim")
    return out


class SummaryStep(Step):
    TITLE = "Summary"
    FOCUS = "#wiz-start"
    DEFAULT_CSS = """
    SummaryStep #wiz-summary-scroll { height: 1fr; }
    SummaryStep Checkbox { border: none; padding: 0; height: 1; margin-top: 1; background: transparent; }
    """

    def __init__(self, state, **kwargs):
        super().__init__(state, **kwargs)
        self.problem: str | None = None

    def compose(self) -> ComposeResult:
        yield Checkbox("Start now: fine-tune, then export for chat and evaluate", value=True,
                       id="wiz-start")
        with VerticalScroll(id="wiz-summary-scroll"):
            yield Static("", id="wiz-summary")

    def enter(self) -> None:
        start = self.query_one("#wiz-start", Checkbox)
        local = self.state.settings.target.where == "local" or azure_available()
        start.disabled = not local
        with self.prevent(Checkbox.Changed):
            start.value = self.state.start and local
        self.state.start = start.value
        self.query_one("#wiz-summary", Static).update(self._summary())

    @on(Checkbox.Changed, "#wiz-start")
    def _start(self, event: Checkbox.Changed) -> None:
        self.state.start = event.value
        self.query_one("#wiz-summary", Static).update(self._summary())

    def _summary(self):
        from aitk.core import olive_config
        from aitk.core.errors import AitkError

        st, s = self.state, self.state.settings
        f = s.finetune
        device = chosen_device(s, self.app.device)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("Project", f"{st.name}  [dim]{st.dest}[/dim]")
        grid.add_row("Model", f"{s.model.id}  [dim]{st.model_path or 'embedded'}[/dim]")
        train, evaluation = st.dataset_args()
        data = {"bundled": "bundled sample (Q&A facts)"}.get(st.dataset_mode, train or "")
        grid.add_row("Data", f"{data}  [dim]eval: {evaluation or ('bundled' if st.dataset_mode == 'bundled' else 'none')}"
                             f" · {s.data.corpus_strategy} · max {s.data.source_max_len} tokens[/dim]")
        grid.add_row("Training", f"{f.method} r={f.lora_r} alpha={f.lora_alpha} lr={f.learning_rate} "
                                 f"{'steps=' + str(f.max_steps) if f.max_steps > 0 else 'epochs=' + str(f.num_train_epochs)}"
                                 f" batch={f.per_device_train_batch_size}×{f.gradient_accumulation_steps} "
                                 f"{f.compute_dtype}")
        grid.add_row("Target", f"{s.target.where} · {s.target.device} (runs on {device})")
        grid.add_row("", estimate_text(st.entry, s, self.app.device))
        if s.target.where == "azure" and azure_available():
            grid.add_row("Azure", azure_estimate_text(s))
        parts = [grid, Text("\nEquivalent commands", style="bold"), Syntax(command_line(st), "bash",
                                                                             word_wrap=True, theme="ansi_dark")]
        try:
            config = olive_config.build(s, device)
            self.problem = None
            parts += [Text("\nOlive config (finetuning/olive-config.json)", style="bold"),
                      Syntax(json.dumps(config, indent=2), "json", word_wrap=True, theme="ansi_dark")]
        except AitkError as e:
            self.problem = str(e)
            parts.append(Text(f"\n{e}", style="bold red"))
        return Group(*parts)

    def commit(self) -> str | None:
        return self.problem
