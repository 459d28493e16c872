"""The `aitk` CLI in a new user's first hour: what each command says next, and hints that point
the right way (issue "The first hour, without a stumble"). Drives the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from aitk.core import paths

BUNDLED = paths.bundled_data() / "tiny_qa" / "train.jsonl"


def aitk(*args, cwd=None, timeout=180):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    return proc.returncode, proc.stdout, proc.stderr


def clean_error(code, err, match):
    assert code != 0 and "Traceback" not in err and err.startswith("error: "), err
    assert match in err, err


def test_dataset_preview_without_a_template(tmp_path, tiny_test_model):
    code, out, err = aitk("dataset", "preview", str(BUNDLED), "-n", "1", cwd=tmp_path)
    clean_error(code, err, "no text template")
    assert "--template" in err
    assert aitk("project", "new", str(tmp_path / "p"))[0] == 0
    code, out, err = aitk("dataset", "preview", str(BUNDLED), "-n", "1", cwd=tmp_path / "p")
    assert code == 0 and "<|assistant|>\nGlodan." in out and "text template of project p" in err


def test_project_new_takes_several_settings_after_one_set(tmp_path, tiny_test_model):
    code, out, err = aitk("project", "new", str(tmp_path / "a"), "--set", "finetune.max_steps=50",
                          "finetune.lora_r=8")
    assert code == 0, err
    code, out, err = aitk("project", "new", "--set", "finetune.max_steps=60", "finetune.lora_r=4",
                          str(tmp_path / "b"))
    assert code == 0, err
    for name, steps, r in (("a", 50, 8), ("b", 60, 4)):
        settings = json.loads(aitk("project", "show", "--json", "-P", str(tmp_path / name))[1])["settings"]
        assert (settings["finetune"]["max_steps"], settings["finetune"]["lora_r"]) == (steps, r)


def test_project_new_warns_when_the_template_names_absent_columns(tmp_path, tiny_test_model):
    data = tmp_path / "pc.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(3)))
    code, out, err = aitk("project", "new", str(tmp_path / "p"), "--dataset", str(data))
    assert code == 0, err
    assert "warning:" in err and "{question} is not a column" in err and "prompt, completion" in err
    assert "aitk project set" in err


def test_hints_point_the_right_way(tmp_path, tiny_test_model):
    assert aitk("project", "new", str(tmp_path / "p"))[0] == 0
    code, out, err = aitk("project", "set", "-P", str(tmp_path / "p"), "finetune.lora_rr=4")
    clean_error(code, err, "error: project set 'finetune.lora_rr=4'")
    assert "--set" not in err
    code, out, err = aitk("project", "new", str(tmp_path / "q"), "--set", "finetune.lora_rr=4")
    clean_error(code, err, "error: --set 'finetune.lora_rr=4'")
    code, out, err = aitk("chat", "-p", "hi", "--precision", "fp16", "-P", str(tmp_path / "p"))
    clean_error(code, err, "no exported fp16 model")
    assert "--precision fp16" in err
    code, out, err = aitk("model", "rm", "no-such-model", "--yes")
    clean_error(code, err, "no-such-model")
    assert "aitk model ls" in err and "catalog list" not in err


def test_qwen_is_said_impractical_to_fine_tune_on_a_small_cpu(tmp_path):
    from aitk.core import catalog, estimates
    from aitk.core.devices import detect

    fit = estimates.fits(catalog.get("qwen2.5-0.5b"), detect(), "lora")
    code, out, err = aitk("project", "new", str(tmp_path / "q"), "--model", "qwen2.5-0.5b")
    assert code == 0, err
    if fit.speed in ("slow", "impractical") or fit.ok is False:
        assert "warning: fine-tuning qwen2.5-0.5b here" in err and fit.speed in err and "aitk azure run" in err
    code, out, err = aitk("catalog", "show", "qwen2.5-0.5b")
    assert code == 0 and "fast on CPU, a realistic" not in out and "fine-tune it on a GPU" in out


def test_demo_table_cells_keep_their_width():
    from rich.cells import cell_len

    from aitk.cli.demo import _pad, _short

    for answer in ("Glodan.", ".", "日本語のテキストがとても長い答え", "a\u0301bc " * 9, ""):
        cell = _pad(_short(answer), 18)
        assert cell_len(cell) == 18, (answer, cell)
    assert _short(".") == '"."' and _short("") == "(nothing)"


# -- with a trained project (the session's one real fine-tune) -------------------------------------
@pytest.mark.slow
def test_evaluate_prints_base_vs_tuned_and_commands_say_what_next(trained):
    project, _, _ = trained
    code, out, err = aitk("evaluate", "-P", str(project.root))
    assert code == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("base vs tuned"))
    table = lines[head + 1:head + 5]
    assert table[0].split() == ["loss", "perplexity"]
    assert table[1].split()[0] == "base" and table[2].split()[0] == "tuned" and table[3].split()[0] == "change"
    assert float(table[2].split()[1]) < float(table[1].split()[1])
    code, out, err = aitk("export", "-P", str(project.root), "--precision", "fp32", "--detach")
    assert code == 0, err
    job = out.split()[1]
    assert f"aitk jobs logs {job} -f" in out and f"aitk jobs cancel {job}" in out
    assert aitk("jobs", "wait", job)[0] == 0
    code, out, err = aitk("chat", "-P", str(project.root), "-p", "What colour is a Touxkru bird?")
    assert code == 0 and out.strip() and not out.startswith(" "), repr(out)


@pytest.mark.slow
def test_ctrl_c_while_following_leaves_the_job_running_and_says_so(trained):
    project, _, _ = trained
    proc = subprocess.Popen([sys.executable, "-m", "aitk.cli.main", "evaluate", "-P", str(project.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    first = proc.stdout.readline()  # "job ID (evaluate) queued — log: ..."
    job = first.split()[1]
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (first, out, err)
    assert f"job {job} keeps running" in err and f"aitk jobs cancel {job}" in err and "Traceback" not in err
    code, out, _ = aitk("jobs", "wait", job)
    assert code == 0, out  # it went on and succeeded
