"""The app's one settings file: `config.toml` in the aitk config dir (XDG; AITK_CONFIG_DIR overrides).

    theme = "aitk-dark"             # any built-in, bundled (themes/) or user theme name
    data_dir = "~/aitk-data"        # where jobs, models and projects live (AITK_DATA_DIR wins)
    projects_dir = "~/aitk-projects"

    [keymap]                        # binding id = keys; `?` (help) lists every id
    "pane.jobs" = "f3,alt+j"

    [chat]                          # your generation options: over a project's [inference],
    max_new_tokens = 128            # under what you type in the Chat pane (core.generation);
    temperature = 0.0               # `aitk chat` and `aitk serve` read them too. Unset: the
    top_p = 1.0                     # project's value applies.
    top_k = 50
    system_prompt = ""
    endpoint = "http://127.0.0.1:8000/v1"
    endpoint_model = ""

    [jobs]
    poll_seconds = 0.5
    local_slots = 0                 # jobs at once here; 0 = one per GPU (one on CPU)
    log_lines = 5000

A file that does not parse, or a value of the wrong type, never stops the app: the problem is
reported once (`Config.problems`) and the default is used. A malformed file is never rewritten,
so the user's text survives until they fix it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from aitk.core import generation, paths

FILE_NAME = "config.toml"


@dataclass
class ChatDefaults:
    """config.toml [chat]. A generation option is None until the user sets it, so that the
    project's [inference] value applies (bounds and precedence: core.generation)."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    system_prompt: str | None = None
    endpoint: str = "http://127.0.0.1:8000/v1"
    endpoint_model: str = ""

    def options(self) -> dict:
        """The generation options set here, as core.generation.resolve takes them."""
        return {k: getattr(self, k) for k in generation.USER_KEYS if getattr(self, k) is not None}


@dataclass
class JobsDefaults:
    poll_seconds: float = 0.5
    log_lines: int = 5000
    local_slots: int = 0  # jobs at once on this machine; 0 = one per GPU (one on CPU). Read by the engine.


# (type, lower bound, upper bound) for the numeric settings; strings only need to be strings.
_BOUNDS = {
    "poll_seconds": (0.1, 60.0), "log_lines": (100, 1_000_000), "local_slots": (0, 64),
}


@dataclass
class Config:
    theme: str = "aitk-dark"
    data_dir: str = ""
    projects_dir: str = ""
    keymap: dict[str, str] = field(default_factory=dict)
    chat: ChatDefaults = field(default_factory=ChatDefaults)
    jobs: JobsDefaults = field(default_factory=JobsDefaults)
    path: Path | None = None
    problems: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)  # the parsed file, kept so saving changes only our keys
    writable: bool = True  # False when the file exists but is malformed

    def save(self, **changes) -> str | None:
        """Write `changes` (top-level keys) to the file; returns a problem text instead of raising."""
        for key, value in changes.items():
            setattr(self, key, value)
            self.raw[key] = value
        if not self.writable or self.path is None:
            return f"{self.path}: not saved, the file has errors; fix it first"
        import tomli_w

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".toml.tmp")
            tmp.write_text(tomli_w.dumps(self.raw), encoding="utf-8")
            os.replace(tmp, self.path)
        except (OSError, TypeError, ValueError) as e:
            return f"{self.path}: could not save ({e})"
        return None


def config_path() -> Path:
    return paths.config_dir() / FILE_NAME


def _coerce(name: str, value, default, where: str, problems: list[str]):
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) != isinstance(default, bool):
        problems.append(f"{where}: expected {kind.__name__}, got {value!r}; using {default!r}")
        return default
    if name in _BOUNDS:
        lo, hi = _BOUNDS[name]
        if not lo <= value <= hi:
            problems.append(f"{where}: {value!r} is outside {lo}..{hi}; using {default!r}")
            return default
    return value


def _section(cls, data, where: str, problems: list[str]):
    obj = cls()
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a table; using defaults")
        return obj
    known = {f.name for f in fields(cls)}
    for key, value in data.items():
        if key not in known:
            problems.append(f"{where}.{key}: unknown setting (known: {', '.join(sorted(known))})")
            continue
        setattr(obj, key, _coerce(key, value, getattr(obj, key), f"{where}.{key}", problems))
    return obj


def _chat_section(data, where: str, problems: list[str]) -> ChatDefaults:
    """Generation options through core's one check; the endpoint keys as any other setting."""
    options, bad = generation.user_values(data, where)
    problems.extend(bad)
    if not isinstance(data, dict):
        return ChatDefaults()
    own = {k: v for k, v in data.items() if k not in generation.USER_KEYS}
    chat = _section(ChatDefaults, own, where, problems)
    for key, value in options.items():
        setattr(chat, key, value)
    return chat


def load_config(path: Path | None = None) -> Config:
    path = path or config_path()
    cfg = Config(path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return cfg
    except (OSError, UnicodeDecodeError) as e:
        cfg.writable = False
        cfg.problems.append(f"{path}: unreadable ({e}); using defaults")
        return cfg
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        cfg.writable = False
        cfg.problems.append(f"{path}: not valid TOML ({e}); using defaults until it is fixed")
        return cfg
    cfg.raw = data
    p = cfg.problems
    where = path.name
    for key in ("theme", "data_dir", "projects_dir"):
        if key in data:
            setattr(cfg, key, _coerce(key, data[key], getattr(cfg, key), f"{where}: {key}", p))
    if "keymap" in data:
        keymap = data["keymap"]
        if isinstance(keymap, dict):
            for binding_id, keys in keymap.items():
                if isinstance(keys, str) and keys.strip():
                    cfg.keymap[binding_id] = keys.replace(" ", "")
                else:
                    p.append(f"{where}: keymap.{binding_id}: expected keys like \"f3\" or \"f3,alt+j\"")
        else:
            p.append(f"{where}: keymap: expected a table of binding id = keys")
    if "chat" in data:
        cfg.chat = _chat_section(data["chat"], f"{where}: chat", p)
    if "jobs" in data:
        cfg.jobs = _section(JobsDefaults, data["jobs"], f"{where}: jobs", p)
    known = {"theme", "data_dir", "projects_dir", "keymap", "chat", "jobs"}
    for key, value in data.items():
        # Tables belong to other parts of aitk sharing this file; a stray scalar is a typo.
        if key not in known and not isinstance(value, dict):
            p.append(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
    return cfg
