"""The `aitk` CLI: exit codes, one-line errors, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aitk.core import paths


def aitk(*args, cwd=None, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    return proc.returncode, proc.stdout, proc.stderr


def assert_clean_error(code, out, err, expected_code=2, match=None):
    assert code == expected_code, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("error: "), err
    assert len(err.strip().splitlines()) <= 2
    if match:
        assert match in err


def test_dataset_check_exit_codes(tmp_path):
    good = paths.bundled_data() / "tiny_qa" / "train.jsonl"
    code, out, _ = aitk("dataset", "check", str(good), "--template", "{question} {answer}")
    assert code == 0 and "300" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{"question": broken\n')
    code, out, _ = aitk("dataset", "check", str(bad))
    assert code == 1 and "bad.jsonl:2" in out
    code, out, _ = aitk("dataset", "check", str(good), "--template", "{question} {nope}")
    assert code == 1 and "nope" in out


def test_dataset_preview(tmp_path):
    good = paths.bundled_data() / "tiny_qa" / "train.jsonl"
    code, out, _ = aitk("dataset", "preview", str(good), "--template", "Q: {question} A: {answer}", "-n", "2")
    assert code == 0 and out.count("--- row") == 2 and "Q: What colour is a Touxkru bird? A: Glodan." in out


def test_outside_a_project(tmp_path):
    for cmd in (["finetune"], ["export"], ["chat", "-p", "hi"], ["project", "show"]):
        assert_clean_error(*aitk(*cmd, cwd=tmp_path), match="not an aitk project")


def test_project_new_show_and_errors(tmp_path, tiny_test_model):
    if True:
        code, out, err = aitk("project", "new", str(tmp_path / "p1"), "--model", "tiny")
        assert code == 0, err
        code, out, _ = aitk("project", "show", "--json", cwd=tmp_path / "p1")
        assert code == 0 and json.loads(out)["settings"]["model"]["id"] == "tiny"
        code, out, _ = aitk("project", "show", "-P", str(tmp_path / "p1"))
        assert "not trained yet" in out and "not exported yet" in out
        assert_clean_error(*aitk("project", "new", str(tmp_path / "p1")), match="already exists")
        assert_clean_error(*aitk("project", "new", str(tmp_path / "bad name")), match="not a usable project name")
        assert_clean_error(*aitk("chat", "-p", "hi", cwd=tmp_path / "p1"), match="no exported")
        assert_clean_error(*aitk("export", "-d", cwd=tmp_path / "p1"), match="no fine-tuned adapter yet")


def test_settings_from_the_command_line(tmp_path, tiny_test_model):
    code, out, err = aitk("project", "new", str(tmp_path / "p"), "--set", "finetune.max_steps=50",
                          "--set", "finetune.learning_rate=5e-4", "--set", "data.text_columns=question,answer")
    assert code == 0, err
    olive = json.loads((tmp_path / "p" / "finetuning" / "olive-config.json").read_text())
    assert '"max_steps": 50' in json.dumps(olive) and '"learning_rate": 0.0005' in json.dumps(olive)
    code, out, err = aitk("project", "set", "-P", str(tmp_path / "p"), "finetune.lora_r=8", "data.eval_dataset=")
    assert code == 0, err
    assert "finetune.lora_r: 64 -> 8" in out and "data.eval_dataset: 'dataset/eval.jsonl' -> None" in out
    settings = json.loads(aitk("project", "show", "--json", "-P", str(tmp_path / "p"))[1])["settings"]
    assert settings["finetune"]["lora_r"] == 8 and settings["data"]["eval_dataset"] is None
    before = (tmp_path / "p" / "aitk.toml").read_text()
    assert_clean_error(*aitk("project", "set", "-P", str(tmp_path / "p"), "finetune.lora_rr=4"),
                       match="did you mean finetune.lora_r")
    assert_clean_error(*aitk("project", "set", "-P", str(tmp_path / "p"), "finetune.lora_r=4",
                             "finetune.lora_dropout=7"), match="finetune.lora_dropout")
    assert (tmp_path / "p" / "aitk.toml").read_text() == before, "a refused change writes nothing"
    assert_clean_error(*aitk("project", "new", str(tmp_path / "q"), "--set", "target.device=tpu"),
                       match="target.device")
    assert not (tmp_path / "q").exists()
    code, out, _ = aitk("project", "keys")
    assert code == 0 and "finetune.lora_r = 64" in out and "≥ 1" in out


def test_jobs_unknown_id():
    assert_clean_error(*aitk("jobs", "show", "no-such-job"), match="no job")
    code, out, _ = aitk("jobs", "list", "--json")
    assert code == 0 and isinstance(json.loads(out), list)


def test_usage_errors_are_argparse_exit_2():
    code, _, err = aitk("finetune", "--bogus")
    assert code == 2 and "usage:" in err
