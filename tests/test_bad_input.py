"""Bad input through the real `aitk` CLI: one clear line (error + hint, exit 2), never exit 3 or a
half-written project; and the template grammar, fuzzed against how training renders a row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aitk.core import text_template as grammar
from aitk.core.errors import AitkError
from aitk.core.settings import DataSettings, escape_text, unescape_text


def aitk(*args, cwd=None, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    return proc.returncode, proc.stdout, proc.stderr


def assert_clean_error(result, match=None, code=2):
    rc, out, err = result
    assert rc == code, (out, err)
    assert "Traceback" not in err + out and "unexpected" not in err and "this is a bug" not in err, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and len(lines) <= 2, err
    assert code != 2 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    if match:
        assert match in err, err


@pytest.fixture(scope="module")
def proj(tmp_path_factory, tiny_test_model):
    root = tmp_path_factory.mktemp("bad") / "proj"
    rc, _, err = aitk("project", "new", str(root))
    assert rc == 0, err
    return root


def settings_of(root: Path) -> dict:
    return tomllib.loads((root / "aitk.toml").read_text())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the template grammar: project set refuses what the check and training refuse ----------------
@pytest.mark.parametrize("template", ["{question", "{q:%}", "{q!x}", "{q!r}", "{q.text}", "{q[0]}",
                                      "{question:>999999999}", "{}", "{0}", "no fields", "a } b {question}"])
def test_project_set_refuses_templates_outside_the_grammar(proj, template):
    before = (proj / "aitk.toml").read_text()
    assert_clean_error(aitk("project", "set", "-P", str(proj), f"data.text_template={template}"),
                       match="data.text_template")
    assert (proj / "aitk.toml").read_text() == before  # nothing half-written


def test_dataset_check_and_preview_refuse_the_same_templates(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"q": "a"}\n')
    for template in ("{q:%}", "{q!x}", "{q.text}", "{q[0]}", "{q:>999999999}", "{q"):
        rc, out, _ = aitk("dataset", "check", str(data), "--template", template, cwd=tmp_path)
        assert rc == 1 and "text template" in out, out
        assert_clean_error(aitk("dataset", "preview", str(data), "--template", template, cwd=tmp_path),
                           match="template")


def test_new_line_and_tab_in_a_cli_template_are_a_new_line_and_a_tab(proj, tmp_path):
    rc, _, err = aitk("project", "set", "-P", str(proj), r"data.text_template=Q:\t{question}\nA: {answer}")
    assert rc == 0, err
    assert settings_of(proj)["data"]["text_template"] == "Q:\t{question}\nA: {answer}"
    config = json.loads((proj / "finetuning" / "olive-config.json").read_text())
    # The template ends with no end token: the model's EOS ends each sample (core/training_text.py).
    assert config["data_configs"][0]["pre_process_data_config"]["text_template"] == \
        "Q:\t{question}\nA: {answer}<|endoftext|>"
    data = write(tmp_path / "d.jsonl", '{"question": "q1", "answer": "a1"}\n')
    rc, out, _ = aitk("dataset", "preview", str(data), "--template", r"{question}\n{answer}", cwd=tmp_path)
    assert rc == 0 and "q1\na1" in out
    new = tmp_path / "p2"
    rc, _, err = aitk("project", "new", str(new), "--set", r"data.text_template=<|user|>\n{question}\t{answer}")
    assert rc == 0, err
    assert settings_of(new)["data"]["text_template"] == "<|user|>\n{question}\t{answer}"
    # A doubled backslash is one backslash: a literal `\n` stays typeable.
    rc, _, err = aitk("project", "set", "-P", str(new), r"data.text_template={question}\\n{answer}")
    assert rc == 0 and settings_of(new)["data"]["text_template"] == "{question}\\n{answer}"
    rc, _, err = aitk("project", "set", "-P", str(new), r"model.path=C:\new\tiny")  # a path is taken as typed
    assert rc == 0 and settings_of(new)["model"]["path"] == r"C:\new\tiny"


def test_escapes_are_the_wizards():
    from aitk.tui.wizard import form

    assert form.parse(r"a\nb\tc", "text") == unescape_text(r"a\nb\tc") == "a\nb\tc"
    assert form.to_text("a\nb\tc\\", "text") == escape_text("a\nb\tc\\") == r"a\nb\tc\\"
    assert form.parse(r"C:\new\train.jsonl", "str") == r"C:\new\train.jsonl"  # only templates have escapes


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_escape_round_trip(text):
    assert unescape_text(escape_text(text)) == text
    assert "\n" not in escape_text(text) and "\t" not in escape_text(text)


# -- the template grammar, fuzzed: refused, or rendered exactly as Olive renders it --------------
def olive_render(template: str, row: dict) -> str:
    """What Olive's text_gen_pre_process does with a row (olive.data.component.text_generation.get_text)."""
    from olive.data.component.text_generation import get_text

    return get_text(dict(row), template=template)


TEMPLATE_ALPHABET = st.sampled_from(list("{}:!.[]0 ab\\n%>") + ["q", "{q}", "{{", "}}", "{a}", "é", "\n"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.one_of(st.text(), st.lists(TEMPLATE_ALPHABET, max_size=12).map("".join)),
       values=st.lists(st.text(), min_size=1, max_size=4))
def test_fuzz_template_grammar_matches_training(template, values):
    try:
        grammar.check(template)
    except AitkError:
        with pytest.raises(ValueError):  # settings validation refuses it too
            DataSettings(text_template=template)
        return
    assert DataSettings(text_template=template).text_template == template
    names = grammar.fields(template)
    row = {name: values[i % len(values)] for i, name in enumerate(names)}
    row["unused"] = "x"
    assert grammar.render(template, row) == template.format(**row) == olive_render(template, row)


# -- data that training refuses: dataset check refuses it first --------------------------------
BAD_DATA = {
    "surrogate.jsonl": ('{"question": "\\ud800 q", "answer": "a"}\n', "lone surrogate"),
    "nan.jsonl": ('{"question": "q", "answer": "a", "score": NaN}\n', "NaN is not valid JSON"),
    "inf.json": ('[{"question": "q", "answer": Infinity}]', "Infinity is not valid JSON"),
    "object.jsonl": ('{"question": {"text": "q"}, "answer": "a"}\n', "is an object, not text"),
    "list.jsonl": ('{"question": ["q"], "answer": "a"}\n', "is an array, not text"),
    "null.jsonl": ('{"question": null, "answer": "a"}\n', "null value"),
    "mixed.jsonl": ('{"question": "q", "answer": "a"}\n{"question": 3, "answer": "b"}\n', "is a whole number here but a string"),
    "overflow.jsonl": ('{"question": "q", "answer": 1e999}\n', "too large for a float"),
    "huge.jsonl": ('{"question": "q", "answer": "a", "n": ' + "9" * 5001 + "}\n", "5001 digits"),
}


@pytest.mark.parametrize("name", sorted(BAD_DATA))
def test_dataset_check_is_as_strict_as_training(tmp_path, name):
    text, expected = BAD_DATA[name]
    data = write(tmp_path / name, text)
    rc, out, err = aitk("dataset", "check", str(data), "--template", "{question} {answer}", cwd=tmp_path)
    assert rc == 1 and expected in out and "Traceback" not in err, (out, err)


def test_dataset_check_uses_the_projects_template(proj, tmp_path):
    data = write(tmp_path / "nulls.jsonl", '{"question": "q", "answer": null}\n')
    rc, out, err = aitk("dataset", "check", str(data), cwd=proj)  # inside the project: its template
    assert rc == 1 and "answer: null value" in out and "project proj" in err, (out, err)
    rc, out, _ = aitk("dataset", "check", str(data), "-P", str(proj), cwd=tmp_path)
    assert rc == 1 and "null value" in out
    rc, out, _ = aitk("dataset", "check", str(data), cwd=tmp_path)  # no project, no template: readable is ok
    assert rc == 0, out


def test_finetune_refuses_what_the_check_refuses(proj, tmp_path):
    """The job's own data check (core.finetune.check_data) is the dataset check: same verdict."""
    from aitk.core.finetune import check_data
    from aitk.core.project import load_project

    project = load_project(proj)
    target = proj / project.settings.data.dataset
    original = target.read_text()
    try:
        for name in ("surrogate.jsonl", "nan.jsonl", "null.jsonl", "object.jsonl"):
            target.write_text(BAD_DATA[name][0])
            with pytest.raises(AitkError, match=BAD_DATA[name][1]):
                check_data(project)
    finally:
        target.write_text(original)


# -- datasets that are not datasets, paths that are not hub names -------------------------------
def test_project_new_refuses_files_that_are_not_datasets(tmp_path, tiny_test_model):
    cases = [("/etc/passwd", "not a dataset file"), ("/etc", "is a folder"),
             ("./missing.jsonl", "not found"), ("/nonexistent/data", "not found"), ("../x/y/z", "not found")]
    broken = write(tmp_path / "broken.jsonl", '{"question": "q"\n')
    cases.append((str(broken), "invalid JSON"))
    for source, expected in cases:
        dest = tmp_path / "p"
        assert_clean_error(aitk("project", "new", str(dest), "--dataset", source, cwd=tmp_path), match=expected)
        assert not dest.exists() and not list(tmp_path.glob(".p-*"))  # nothing half-written
    rc, _, err = aitk("project", "new", str(tmp_path / "hub"), "--dataset", "someone/qa-set", cwd=tmp_path)
    assert rc == 0, err
    assert settings_of(tmp_path / "hub")["data"]["dataset"] == "someone/qa-set"


@pytest.mark.parametrize("value,expected", [("/etc", "relative to the project"), ("../../etc", "leaves the project"),
                                            ("models/../../x", "leaves the project"), ("~/ckpt", "relative")])
def test_checkpoint_dir_stays_inside_the_project(proj, value, expected):
    assert_clean_error(aitk("project", "set", "-P", str(proj), f"finetune.checkpoint_dir={value}"), match=expected)
    assert settings_of(proj)["finetune"]["checkpoint_dir"] == "models/checkpoints"


# -- inputs that used to be exit 3 "this is a bug" ---------------------------------------------
def test_deeply_nested_aitk_toml_is_one_clear_error(proj, tmp_path):
    bad = tmp_path / "deep"
    bad.mkdir()
    write(bad / "aitk.toml", "x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert_clean_error(aitk("project", "show", "-P", str(bad)), match="not valid TOML")
    write(bad / "aitk.toml", "x = " + "9" * 5001 + "\n")
    assert_clean_error(aitk("project", "show", "-P", str(bad)), match="not valid TOML")
    assert_clean_error(aitk("project", "set", "-P", str(proj), "finetune.lora_r=" + "[" * 5000),
                       match="finetune.lora_r")
    assert_clean_error(aitk("project", "set", "-P", str(proj), "finetune.lora_r=" + "9" * 5001),
                       match="finetune.lora_r")


def test_dataset_number_of_5001_digits_is_located(tmp_path):
    data = write(tmp_path / "n.jsonl", '{"question": "q", "answer": ' + "1" * 5001 + "}\n")
    rc, out, err = aitk("dataset", "check", str(data), cwd=tmp_path)
    assert rc == 1 and "n.jsonl:1" in out and "5001 digits" in out and not err
    assert_clean_error(aitk("dataset", "preview", str(data), "--template", "{answer}", cwd=tmp_path),
                       match="5001 digits")


def test_olive_config_being_a_folder_is_one_clear_error(tmp_path, tiny_test_model):
    root = tmp_path / "p"
    assert aitk("project", "new", str(root))[0] == 0
    config = root / "finetuning" / "olive-config.json"
    config.unlink()
    config.mkdir()
    before = (root / "aitk.toml").read_text()
    for cmd in (["project", "set", "-P", str(root), "finetune.max_steps=5"], ["project", "regen", "-P", str(root)]):
        assert_clean_error(aitk(*cmd), match="olive-config.json")
    assert (root / "aitk.toml").read_text() == before and config.is_dir()
    config.rmdir()
    assert aitk("project", "regen", "-P", str(root))[0] == 0 and config.is_file()


# -- settings introspection: `project keys` and the wizard's form read one function -------------
def test_project_keys_and_the_wizard_form_list_the_same_settings():
    from textual.app import App

    from aitk.core.defaults import default_settings
    from aitk.core.settings import setting_specs
    from aitk.tui.testing import sync
    from aitk.tui.wizard.form import SettingsForm

    rc, out, _ = aitk("project", "keys")
    assert rc == 0
    for spec in setting_specs():
        assert f"  {spec.key} = {spec.default!r}   ({spec.type_text}" in out
    assert "finetune.lora_r = 64   (int, ≥ 1, ≤ 1024)" in out

    class FormApp(App):
        def compose(self):
            yield SettingsForm(default_settings("p"), [("data", {"dataset"}), ("finetune", set())])

    @sync
    async def shown() -> list:
        app = FormApp()
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            return list(app.query_one(SettingsForm).specs.values())

    expected = [s for s in setting_specs(["data", "finetune"]) if s.key != "data.dataset"]
    assert shown() == expected
