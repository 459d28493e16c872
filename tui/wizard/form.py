"""A settings form generated from the pydantic models of `aitk.core.settings`.

Every field of the chosen sections becomes a row: name, input (a checkbox for booleans, a choice
for Literal fields, text otherwise), its description and bounds as help, and an error line. Each
edit is validated by assigning to the (validate_assignment) section model, so the form accepts
exactly what `aitk.toml` accepts, with pydantic's own message shown under the field.
"""

from __future__ import annotations

import tomllib

import tomli_w
from pydantic import ValidationError
from textual import on
from textual.app import ComposeResult
from rich.text import Text
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Input, Select, Static

from aitk.tui.widgets.toggles import Checkbox

from aitk.core.settings import SettingSpec, escape_text, setting_specs, unescape_text

SECTION_TITLES = {"data": "Data", "finetune": "Fine-tuning", "inference": "Chat and export", "target": "Target",
                  "model": "Model"}


def widget_id(spec: SettingSpec) -> str:
    return f"f-{spec.section}-{spec.name}"


def to_text(value, kind: str) -> str:
    if kind == "list":
        return ", ".join(value or [])
    if kind == "table":
        return "{" + ", ".join(tomli_w.dumps({k: v}).strip() for k, v in (value or {}).items()) + "}"
    if value is None:
        return ""
    return escape_text(value) if kind == "text" else str(value)


def parse(text: str, kind: str):
    """Text of an input -> the value to assign (ValueError with a readable message)."""
    if kind == "text":
        return unescape_text(text)
    if kind == "str":
        return text
    text = text.strip()
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError("enter a whole number") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError("enter a number (e.g. 0.001 or 1e-3)") from None
    if kind == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == "optional_str":
        return text or None
    if kind == "table":
        try:
            return tomllib.loads(f"t = {text or '{}'}")["t"]
        except (ValueError, RecursionError):
            raise ValueError("enter a table, e.g. {max_grad_norm = 0.3}") from None
    return text


class SettingsForm(VerticalScroll):
    """Edits `settings` (a ProjectSettings) in place; `errors` holds what is currently invalid.

    Two widgets per field (a caption with name, help, bounds and any error; the input), so the
    forty-odd fields mount in a blink.
    """

    DEFAULT_CSS = """
    SettingsForm { height: 1fr; }
    SettingsForm .section { text-style: bold; color: $accent; margin-top: 1; }
    SettingsForm .caption { margin-top: 1; }
    SettingsForm Input, SettingsForm Select { width: 100%; max-width: 60; }
    SettingsForm Checkbox { border: none; padding: 0; height: 1; background: transparent; }
    """

    class Changed(Message):
        def __init__(self, key: str):
            super().__init__()
            self.key = key

    def __init__(self, settings, sections: list[tuple[str, set[str]]], **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.specs: dict[str, SettingSpec] = {}
        self.errors: dict[str, str] = {}
        self.sections = sections

    def compose(self) -> ComposeResult:
        for section, skip in self.sections:
            yield Static(f"── {SECTION_TITLES.get(section, section)} ──", classes="section")
            for spec in setting_specs([section]):
                if spec.name in skip:
                    continue
                wid = widget_id(spec)
                self.specs[wid] = spec
                value = getattr(getattr(self.settings, section), spec.name)
                yield Static(self._caption(spec, None), classes="caption", id=f"cap-{wid}")
                if spec.kind == "bool":
                    yield Checkbox("on", value=bool(value), id=wid)
                elif spec.kind == "choice":
                    yield Select([(str(c), c) for c in spec.choices], value=value, allow_blank=False,
                                 id=wid, compact=True)
                else:
                    yield Input(to_text(value, spec.kind), id=wid, compact=True, select_on_focus=False)

    @staticmethod
    def _caption(spec: SettingSpec, error: str | None) -> Text:
        out = Text.assemble((spec.name, "bold"), "  ", (spec.description, "dim"))
        if spec.bounds:
            out.append(f"  [{spec.bounds_text}]", style="dim italic")
        if error:
            out.append(f"\n✘ {error}", style="bold red")
        return out

    def reload(self, settings) -> None:
        """Show another settings object (e.g. after the model changed the defaults)."""
        self.settings = settings
        for wid, spec in self.specs.items():
            value = getattr(getattr(settings, spec.section), spec.name)
            widget = self.query_one(f"#{wid}")
            with widget.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
                if spec.kind == "bool":
                    widget.value = bool(value)
                elif spec.kind == "choice":
                    widget.value = value
                else:
                    widget.value = to_text(value, spec.kind)
            self._show_error(wid, None)

    def _show_error(self, wid: str, message: str | None) -> None:
        if message == self.errors.get(wid):
            return
        self.query_one(f"#cap-{wid}", Static).update(self._caption(self.specs[wid], message))
        if message:
            self.errors[wid] = message
        else:
            self.errors.pop(wid, None)

    def _assign(self, wid: str, raw) -> None:
        spec = self.specs.get(wid)
        if spec is None:
            return
        try:
            value = raw if spec.kind in ("bool", "choice") else parse(raw, spec.kind)
            setattr(getattr(self.settings, spec.section), spec.name, value)
        except ValueError as e:  # includes pydantic's ValidationError
            if isinstance(e, ValidationError):
                first = e.errors()[0]
                message = first["msg"].removeprefix("Value error, ")
            else:
                message = str(e)
            self._show_error(wid, message)
        else:
            self._show_error(wid, None)
            # A model-level rule may now hold again for another field (e.g. loftq and method).
            for other in [w for w in self.errors if w != wid and self.specs[w].section == spec.section]:
                self._retry(other)
        self.post_message(self.Changed(spec.key))

    def _retry(self, wid: str) -> None:
        widget = self.query_one(f"#{wid}")
        spec = self.specs[wid]
        try:
            value = widget.value if spec.kind in ("bool", "choice") else parse(widget.value, spec.kind)
            setattr(getattr(self.settings, spec.section), spec.name, value)
        except ValueError:
            return
        self._show_error(wid, None)

    @on(Input.Changed)
    def _input(self, event: Input.Changed) -> None:
        if event.input.id in self.specs:
            event.stop()
            self._assign(event.input.id, event.value)

    @on(Checkbox.Changed)
    def _check(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id in self.specs:
            event.stop()
            self._assign(event.checkbox.id, event.value)

    @on(Select.Changed)
    def _select(self, event: Select.Changed) -> None:
        if event.select.id in self.specs and event.value is not Select.NULL:
            event.stop()
            self._assign(event.select.id, event.value)
