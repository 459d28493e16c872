"""aitk.tui config, themes and Azure state: bad input gives a clear message and defaults, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aitk.tui import testing
from aitk.core.azure_signin import detect as detect_azure
from aitk.tui.config import load_config
from aitk.tui.theming import load_themes, parse_theme


@pytest.fixture
def env(tmp_path, monkeypatch):
    return testing.isolated_env(tmp_path / "aitk", monkeypatch.setenv)


def write_config(env, text: str):
    path = Path(env["AITK_CONFIG_DIR"]) / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file_gives_defaults(env):
    cfg = load_config()
    assert cfg.problems == [] and cfg.theme == "aitk-dark" and cfg.chat.max_new_tokens is None


def test_values_keymap_and_sections_are_read(env):
    write_config(env, 'theme = "nord"\ndata_dir = "~/x"\n[keymap]\n"pane.jobs" = "f9, ctrl+j"\n'
                      '[chat]\ntemperature = 1\nsystem_prompt = "be brief"\n[jobs]\nlog_lines = 200\n')
    cfg = load_config()
    assert cfg.problems == []
    assert cfg.theme == "nord" and cfg.keymap == {"pane.jobs": "f9,ctrl+j"}
    assert cfg.chat.temperature == 1.0 and isinstance(cfg.chat.temperature, float)
    assert cfg.chat.system_prompt == "be brief" and cfg.jobs.log_lines == 200


def test_malformed_toml_is_reported_and_never_overwritten(env):
    path = write_config(env, 'theme = "nord\n[chat\n')
    cfg = load_config()
    assert cfg.theme == "aitk-dark" and not cfg.writable
    assert len(cfg.problems) == 1 and "not valid TOML" in cfg.problems[0] and str(path) in cfg.problems[0]
    assert "not saved" in cfg.save(theme="dracula")
    assert path.read_text() == 'theme = "nord\n[chat\n'


def test_wrong_types_and_bounds_fall_back_per_value(env):
    write_config(env, 'theme = 3\nmystery = 1\n[chat]\ntop_p = 7.0\nmax_new_tokens = "many"\nbogus = 1\n'
                      '[keymap]\n"pane.jobs" = 5\n[other_tool]\nkey = 1\n')
    cfg = load_config()
    text = "\n".join(cfg.problems)
    assert cfg.theme == "aitk-dark" and cfg.chat.top_p is None and cfg.chat.max_new_tokens is None
    for needle in ("theme: expected str", "top_p: 7.0 is outside", "max_new_tokens: expected int",
                   "chat.bogus: unknown setting", "unknown setting 'mystery'", "keymap.pane.jobs"):
        assert needle in text, text
    assert "other_tool" not in text  # tables of other aitk parts sharing the file are theirs


def test_save_keeps_other_keys(env):
    path = write_config(env, '[chat]\ntop_k = 7\n')
    cfg = load_config()
    assert cfg.save(theme="dracula") is None
    again = load_config()
    assert again.theme == "dracula" and again.chat.top_k == 7 and "top_k = 7" in path.read_text()


def test_folders_from_the_config_reach_the_engine_unless_the_environment_says_otherwise(env, monkeypatch,
                                                                                        tmp_path):
    from aitk.core import paths

    path = write_config(env, f'projects_dir = "{tmp_path / "p"}"\ndata_dir = "{tmp_path / "d"}"\n')
    monkeypatch.delenv("AITK_PROJECTS_DIR")
    assert paths.projects_dir() == tmp_path / "p"
    assert paths.data_dir() == Path(env["AITK_DATA_DIR"])  # set in the environment: wins
    monkeypatch.delenv("AITK_DATA_DIR")
    assert paths.data_dir() == tmp_path / "d"
    path.write_text("data_dir = [broken")  # the app reports it; the engine falls back to XDG
    assert paths.data_dir() != tmp_path / "d"


def test_the_cli_finds_jobs_in_the_configured_data_dir(env, monkeypatch, tmp_path):
    """`aitk` in a shell sees what the app sees when only config.toml names the folder."""
    import subprocess
    import sys

    write_config(env, f'data_dir = "{tmp_path / "d"}"\n')
    monkeypatch.delenv("AITK_DATA_DIR")
    from aitk.core.jobs import JobStore

    rec = JobStore().create("export", project=str(tmp_path / "proj"))
    out = subprocess.run([sys.executable, "-m", "aitk.cli.main", "jobs", "list"], capture_output=True,
                         text=True, timeout=60)
    assert rec.id in out.stdout, out.stdout + out.stderr
    assert (tmp_path / "d" / "jobs").is_dir()


def test_bundled_themes_parse_and_user_themes_load(env):
    from pathlib import Path

    themes_dir = Path(env["AITK_CONFIG_DIR"]) / "themes"
    themes_dir.mkdir()
    (themes_dir / "mine.toml").write_text('name = "mine"\nprimary = "#ff0000"\ndark = false\n')
    (themes_dir / "broken.toml").write_text('name = "broken"\nprimary = "not a colour"\n')
    themes, problems = load_themes()
    names = {t.name for t in themes}
    assert {"aitk-dark", "aitk-light", "aitk-contrast", "mine"} <= names and "broken" not in names
    assert len(problems) == 1 and "broken.toml" in problems[0] and "primary" in problems[0]


@pytest.mark.parametrize("text, needle", [
    ("primary = '#fff'", "needs `name"),
    ("name = 'x'", "needs `primary"),
    ("name = 'x'\nprimary = '#fff'\ndark = 'yes'", "dark must be"),
    ("name = 'x'\nprimary = '#fff'\ncolour = '#000'", "unknown keys colour"),
    ("name = [", "not valid TOML"),
])
def test_bad_theme_files_name_the_problem(text, needle):
    with pytest.raises(ValueError, match=needle.replace("`", ".").replace("[", r"\[")):
        parse_theme(text, "t.toml")


def test_azure_state_is_found_cheaply(tmp_path):
    assert not detect_azure({}, tmp_path).signed_in
    assert detect_azure({}, tmp_path).label == "Azure: not signed in"
    sp = {"AZURE_CLIENT_ID": "12345678-aaaa", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_SECRET": "s"}
    assert detect_azure(sp, tmp_path).signed_in
    (tmp_path / ".azure").mkdir()
    profile = {"subscriptions": [{"name": "dev", "isDefault": True, "user": {"name": "ada@example.com"}}]}
    (tmp_path / ".azure" / "azureProfile.json").write_text("\ufeff" + json.dumps(profile), encoding="utf-8")
    state = detect_azure({}, tmp_path)
    assert state.signed_in and state.label == "Azure: ada@example.com"
    (tmp_path / ".azure" / "azureProfile.json").write_text("{broken")
    assert not detect_azure({}, tmp_path).signed_in


def test_local_slots_from_the_config_reach_the_scheduler(env, monkeypatch):
    from aitk.core import scheduler

    monkeypatch.delenv("AITK_LOCAL_SLOTS")
    write_config(env, "[jobs]\nlocal_slots = 3\n")
    assert scheduler.default_slots() == 3 and load_config().jobs.local_slots == 3
    monkeypatch.setenv("AITK_LOCAL_SLOTS", "2")
    assert scheduler.default_slots() == 2  # the environment wins
    monkeypatch.delenv("AITK_LOCAL_SLOTS")
    write_config(env, "[jobs]\nlocal_slots = 0\n")
    assert scheduler.default_slots() == 1  # auto: one on a machine without GPUs
    write_config(env, '[jobs]\nlocal_slots = "many"\n')
    assert scheduler.default_slots() == 1 and any("local_slots" in p for p in load_config().problems)
