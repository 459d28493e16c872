"""Step 5: where the fine-tune runs: a device of this machine, or Azure."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import Label, RadioSet, Select, Static

from aitk.tui.widgets.toggles import RadioButton
from aitk.tui.wizard.memory import chosen_device, estimate_text
from aitk.tui.wizard.step import Step

DEVICES = [("auto: the best this machine has", "auto"), ("CPU", "cpu"), ("CUDA GPU", "cuda"),
           ("DirectML GPU (Windows)", "dml")]


def azure_available() -> bool:
    """Whether an Azure provider is installed (it will live in aitk.providers.azure)."""
    import importlib.util

    return importlib.util.find_spec("aitk.providers.azure") is not None


class TargetStep(Step):
    TITLE = "Target"
    FOCUS = "#wiz-where"
    DEFAULT_CSS = """
    TargetStep RadioSet, TargetStep RadioSet:focus { border: none; padding: 0; width: 100%; }
    TargetStep #wiz-device { width: 40; }
    TargetStep #wiz-target-info { margin-top: 1; }
    """

    def compose(self) -> ComposeResult:
        with RadioSet(id="wiz-where"):
            yield RadioButton("This machine", value=True, id="where-local")
            yield RadioButton("Azure (Container Apps GPU job)", id="where-azure")
        yield Label("Device", classes="field-label")
        yield Select(DEVICES, value="auto", allow_blank=False, id="wiz-device", compact=True)
        yield Static("", id="wiz-target-info")

    def enter(self) -> None:
        t = self.state.settings.target
        with self.prevent(RadioSet.Changed, Select.Changed):
            self.query_one("#where-azure" if t.where == "azure" else "#where-local", RadioButton).value = True
            self.query_one("#wiz-device", Select).value = t.device
        self._info()

    @on(RadioSet.Changed, "#wiz-where")
    def _where(self, event: RadioSet.Changed) -> None:
        self.state.settings.target.where = "azure" if event.index == 1 else "local"
        self._info()

    @on(Select.Changed, "#wiz-device")
    def _device(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL:
            self.state.settings.target.device = event.value
            self._info()

    def _problem(self) -> str | None:
        from aitk.core import olive_config
        from aitk.core.errors import AitkError

        s = self.state.settings
        info = self.app.device
        device = chosen_device(s, info)
        if s.target.where == "local" and info is not None:
            if device == "cuda" and not info.gpus:
                return "this machine has no CUDA GPU: choose auto or CPU"
            if device == "dml" and info.best != "dml":
                return "DirectML is only available on Windows with a DirectX 12 GPU"
        try:
            olive_config.pass_config(s, device)
        except AitkError as e:
            return str(e)
        return None

    def _info(self) -> None:
        s = self.state.settings
        info = self.app.device
        out = Text()
        if s.target.where == "azure":
            self.query_one("#wiz-device", Select).disabled = True
            azure = getattr(self.app, "_azure", None)
            out.append("Azure: ", style="bold")
            out.append((azure.label if azure else "Azure: unknown").removeprefix("Azure: ") + "\n")
            if not azure_available():
                out.append("This version of aitk cannot submit Azure jobs yet: the project records the Azure "
                           "target, and jobs for it can start once the Azure provider is installed. "
                           "Choose This machine to train now.", style="yellow")
                self.state.start = False
        else:
            self.query_one("#wiz-device", Select).disabled = False
            if info is not None:
                out.append("This machine: ", style="bold")
                out.append(f"{info.label} · {info.ram_mib / 1024:.1f} GiB RAM")
                if info.gpus:
                    out.append(" · " + ", ".join(f"{g.name} {g.memory_mib / 1024:.0f} GiB" for g in info.gpus))
                out.append(f"\nTraining runs on: {chosen_device(s, info)}\n")
            out.append_text(estimate_text(self.state.entry, s, info))
        problem = self._problem()
        if problem:
            out.append(f"\n{problem}", style="bold red")
        self.query_one("#wiz-target-info", Static).update(out)

    def commit(self) -> str | None:
        return self._problem()
