"""Themes: ours (themes/*.toml in the package), the user's (`<config dir>/themes/*.toml`), Textual's.

A theme file is flat TOML: `name`, `dark`, the colour slots of `textual.theme.Theme` (primary,
secondary, accent, warning, error, success, foreground, background, surface, panel, boost) and an
optional `[variables]` table. A broken user theme is skipped with a message, never a crash.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from aitk.core import paths
from aitk.themes import bundled_theme_files

COLOR_SLOTS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground", "background",
               "surface", "panel", "boost")
DEFAULT_THEME = "aitk-dark"


def user_themes_dir() -> Path:
    return paths.config_dir() / "themes"


def parse_theme(text: str, source: str) -> Theme:
    """A Theme from a theme file's text; ValueError naming the file and the bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: not valid TOML ({e})") from None
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: needs `name = \"...\"`")
    if not isinstance(data.get("primary"), str):
        raise ValueError(f"{source}: needs `primary = \"#rrggbb\"`")
    kwargs: dict = {"name": name.strip()}
    for slot in COLOR_SLOTS:
        if slot in data:
            value = data[slot]
            try:
                Color.parse(value)
            except (ColorParseError, TypeError, ValueError):
                raise ValueError(f"{source}: {slot} = {value!r} is not a colour (use \"#rrggbb\")") from None
            kwargs[slot] = value
    if "dark" in data:
        if not isinstance(data["dark"], bool):
            raise ValueError(f"{source}: dark must be true or false")
        kwargs["dark"] = data["dark"]
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ValueError(f"{source}: [variables] must map names to strings")
    kwargs["variables"] = dict(variables)
    unknown = set(data) - set(COLOR_SLOTS) - {"name", "dark", "variables"}
    if unknown:
        raise ValueError(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    return Theme(**kwargs)


def load_themes() -> tuple[list[Theme], list[str]]:
    """Bundled then user themes (a user theme may replace a bundled one of the same name)."""
    themes: list[Theme] = []
    problems: list[str] = []
    user_dir = user_themes_dir()
    user_files = sorted(user_dir.glob("*.toml")) if user_dir.is_dir() else []
    for file in [*bundled_theme_files(), *user_files]:
        try:
            themes.append(parse_theme(file.read_text(encoding="utf-8"), str(file)))
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{file}: unreadable ({e})")
        except ValueError as e:
            problems.append(f"theme skipped: {e}")
    return themes, problems


def theme_color(app, variable: str, fallback: str) -> str:
    """A theme variable (e.g. `chart-train`) or a fallback colour, for widgets that draw in Python."""
    try:
        value = app.theme_variables.get(variable)
    except Exception:  # noqa: BLE001 - no app yet
        value = None
    return value or fallback
