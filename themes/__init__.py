"""aitk.themes: the app's own colour themes, one TOML file each (see aitk-dark.toml).

`aitk.tui.theming` loads these and the user's from `<config dir>/themes/*.toml`.
"""

from pathlib import Path

THEMES_DIR = Path(__file__).resolve().parent


def bundled_theme_files() -> list[Path]:
    return sorted(THEMES_DIR.glob("*.toml"))
