"""Several adapters per project (core/adapters.py): names, the active one, the old single-folder
layout, `aitk adapters list|use|rm|rename|compare` through the real CLI, and two adapters trained on
different facts served by one `aitk serve`, each answering its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aitk.core import adapters, project_index, publish
from aitk.core.export_state import read_adapter
from aitk.core.project import load_project
from aitk.tui import testing


def aitk(*args, cwd=None, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    return proc.returncode, proc.stdout, proc.stderr


def fake_adapter(tmp: Path, r: int) -> Path:
    """A folder shaped like a peft adapter (nothing here loads it)."""
    folder = tmp / f"run-{time.monotonic_ns()}" / "adapter"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": r}))
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(64))
    return folder


# -- the old layout ----------------------------------------------------------------------------
def test_old_single_adapter_project_still_loads(world):
    """A project from before named adapters: its one folder is the adapter `olive`, active, read in
    place (nothing moved), and its export stays current."""
    root = testing.fabricate_project("old-layout", adapter=True)
    legacy = root / "models" / "olive" / "adapter"
    out = root / "models" / "onnx" / "fp32"
    staged = publish.work_dir(out, "build")
    (staged / "genai_config.json").write_text("{}")
    publish.publish(staged, out, adapter=read_adapter(legacy))  # a stamp as exports wrote it before

    project = load_project(root)
    assert project.adapter_dir == legacy and publish.current_adapter(project) == legacy
    [only] = adapters.list_adapters(root)
    assert only.name == "olive" and only.active and only.olive
    entry = project_index.read_entry(root)
    assert entry.adapter and entry.chat_state == "ready"
    code, text, err = aitk("adapters", "list", "-P", str(root))
    assert code == 0, err
    assert "* olive" in " ".join(text.split()) and "models/olive/adapter" in text
    assert not (root / "models" / "adapters").exists()  # listing wrote nothing


def test_a_new_fine_tune_is_kept_beside_the_old_adapter_and_becomes_active(world, tmp_path):
    root = testing.fabricate_project("upgraded", adapter=True)
    adapters.publish_adapter(root, fake_adapter(tmp_path, 8), "20260101-000000-abcdef")
    project = load_project(root)
    assert project.adapter_dir == root / "models" / "adapters" / "20260101-000000-abcdef"
    assert [a.name for a in adapters.list_adapters(root)] == ["olive", "20260101-000000-abcdef"]
    assert (root / "models" / "olive" / "adapter" / "adapter_config.json").is_file()


# -- names and the CLI -------------------------------------------------------------------------
def test_list_use_rm_rename_through_the_cli(world, tmp_path):
    root = testing.fabricate_project("three", adapter=True)  # `olive`, then two named ones
    adapters.publish_adapter(root, fake_adapter(tmp_path, 8), "first")
    adapters.publish_adapter(root, fake_adapter(tmp_path, 16), "second")
    p = ["-P", str(root)]

    code, text, err = aitk("adapters", "list", *p)
    assert code == 0, err
    names = [line.split()[1] if line.startswith("*") else line.split()[0] for line in text.splitlines()[1:]]
    assert names == ["olive", "first", "second"]
    assert [line for line in text.splitlines() if line.startswith("*")][0].split()[1] == "second"

    code, text, err = aitk("adapters", "use", "first", *p)
    assert code == 0 and "first is now the active adapter" in text, err
    assert load_project(root).adapter_dir == root / "models" / "adapters" / "first"

    code, _, err = aitk("adapters", "rm", "first", "--yes", *p)  # the active one
    assert code == 2 and "adapter first is the active one" in err and "aitk adapters use" in err
    code, _, err = aitk("adapters", "rm", "second", *p)  # no terminal, no --yes: nothing deleted
    assert code == 2 and (root / "models" / "adapters" / "second").is_dir()
    code, text, err = aitk("adapters", "rm", "second", "--yes", *p)
    assert code == 0 and "removed adapter second" in text, err
    assert not (root / "models" / "adapters" / "second").exists()
    assert [p.name for p in (root / "models" / "adapters").iterdir() if p.name.startswith(".s")] == []

    code, text, err = aitk("adapters", "rename", "first", "support-v1", *p)
    assert code == 0 and "still the active adapter" in text, err
    assert adapters.active_name(root) == "support-v1"
    for bad, words in (("Bad Name", "not a valid adapter name"), ("base", "reserved"), ("tuned", "reserved"),
                       ("olive", "reserved")):
        code, _, err = aitk("adapters", "rename", "support-v1", bad, *p)
        assert code == 2 and words in err, err
    code, _, err = aitk("adapters", "use", "nope", *p)
    assert code == 2 and "no adapter 'nope'" in err and "support-v1" in err

    # What `olive run` wrote is filed under a name of its own; the next run writes a fresh folder.
    code, text, err = aitk("adapters", "rename", "olive", "from-olive", *p)
    assert code == 0, err
    assert (root / "models" / "adapters" / "from-olive" / "adapter_config.json").is_file()
    assert not (root / "models" / "olive" / "adapter").exists()
    assert [a.name for a in adapters.list_adapters(root)] == ["from-olive", "support-v1"]


def test_rm_is_refused_while_a_job_reads_the_adapters(world, tmp_path):
    root = testing.fabricate_project("busy")
    adapters.publish_adapter(root, fake_adapter(tmp_path, 8), "old")
    adapters.publish_adapter(root, fake_adapter(tmp_path, 8), "new")
    sleeper = testing.SleepingProcess()
    try:
        job = testing.fabricate_job(world.store, "export", "running", root, created=time.time(),
                                    started=time.time(), pid=sleeper.pid)
        code, _, err = aitk("adapters", "rm", "old", "--yes", "-P", str(root))
        assert code == 2 and f"job {job.id} (export, running)" in err and f"aitk jobs cancel {job.id}" in err
        assert (root / "models" / "adapters" / "old").is_dir()
        code, _, err = aitk("adapters", "rename", "old", "older", "-P", str(root))
        assert code == 2 and f"job {job.id}" in err
    finally:
        sleeper.stop()


def test_export_state_follows_the_active_adapter(world, tmp_path):
    """An export carrying both adapters stays current when the other one is made active; a merged
    export (one adapter) goes stale."""
    root = testing.fabricate_project("switch")
    adapters.publish_adapter(root, fake_adapter(tmp_path, 8), "a")
    adapters.publish_adapter(root, fake_adapter(tmp_path, 8), "b")
    stamps = {n: read_adapter(adapters.folder(root, n)) for n in ("a", "b")}
    for precision, carried in (("fp32", stamps), ("fp32-merged", {"b": stamps["b"]})):
        out = root / "models" / "onnx" / precision
        staged = publish.work_dir(out, "build")
        (staged / "genai_config.json").write_text("{}")
        publish.publish(staged, out, adapter=stamps["b"], adapters=carried)
    assert {e.precision: e.current for e in project_index.exports(root)} == {"fp32": True, "fp32-merged": True}
    adapters.set_active(root, "a")
    assert {e.precision: e.current for e in project_index.exports(root)} == {"fp32": True, "fp32-merged": False}


# -- two adapters trained on different facts, one server ---------------------------------------
def _finetune(provider, root, wait):
    rec = wait(provider, provider.submit("finetune", root).id)
    assert rec.status == "succeeded", provider.store.log_path(rec.id).read_text()[-3000:]
    return rec


@pytest.fixture(scope="module")
def two_facts(tmp_path_factory, tiny_test_model, rows):
    """One project, fine-tuned on the first half of the rows as `facts-a`, then on the second half
    as `facts-b`, then exported once (both adapters in it)."""
    from aitk.core import tiny
    from aitk.core.project import create_project, regenerate
    from aitk.providers.local import LocalProvider

    from conftest import wait

    base = tmp_path_factory.mktemp("two-facts")
    half = len(rows) // 2
    facts = {"facts-a": rows[:half], "facts-b": rows[half:]}
    for name, part in facts.items():
        (base / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    project = create_project(base / "proj", dataset=str(base / "facts-a.jsonl"), tiny_spec=tiny.TEST)
    shutil.copy2(base / "facts-b.jsonl", project.root / "dataset" / "facts-b.jsonl")
    f = project.settings.finetune
    f.max_steps, f.save_steps, f.logging_steps, f.lora_r, f.lora_alpha = 300, 300, 50, 64, 128.0
    f.learning_rate = 3e-3
    provider = LocalProvider()
    for name in facts:
        project.settings.data.dataset = f"dataset/{name}.jsonl"
        project.settings.data.eval_dataset = f"dataset/{name}.jsonl"
        regenerate(project)
        rec = _finetune(provider, project.root, wait)
        assert adapters.active_name(project.root) == rec.id  # named by its job, and active
        code, _, err = aitk("adapters", "rename", rec.id, name, "-P", str(project.root))
        assert code == 0, err
    ex = wait(provider, provider.submit("export", project.root, params={"precision": "fp32"}).id)
    assert ex.status == "succeeded", provider.store.log_path(ex.id).read_text()[-3000:]
    return load_project(project.root), facts


@pytest.mark.slow
def test_one_server_serves_two_adapters_each_with_its_own_facts(two_facts):
    from openai import OpenAI

    from test_serve import start_server

    project, facts = two_facts
    files = sorted(p.name for p in (project.onnx_dir("fp32") / "adapters").iterdir())
    assert files == ["base.onnx_adapter", "facts-a.onnx_adapter", "facts-b.onnx_adapter"]
    manifest = json.loads((project.onnx_dir("fp32") / "aitk-export.json").read_text())
    assert manifest["active"] == "facts-b" and manifest["adapters"] == ["facts-b", "facts-a"]
    proc, url = start_server(project)
    try:
        client = OpenAI(base_url=f"{url}/v1", api_key="none")
        ids = [m.id for m in client.models.list().data]
        assert {f"{project.name}:facts-a", f"{project.name}:facts-b", f"{project.name}:tuned"} <= set(ids), ids

        def right(model, part):
            return sum(client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": r["question"]}], max_tokens=12,
                temperature=0).choices[0].message.content.strip() == r["answer"] for r in part[:12])

        score = {(a, f): right(f"{project.name}:{a}", facts[f]) for a in facts for f in facts}
        assert score[("facts-a", "facts-a")] >= 8 and score[("facts-b", "facts-b")] >= 8, score
        assert score[("facts-a", "facts-b")] <= 2 and score[("facts-b", "facts-a")] <= 2, score
        # `tuned` is the active adapter (the last fine-tune): facts-b
        assert right(f"{project.name}:tuned", facts["facts-b"]) == score[("facts-b", "facts-b")]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_compare_prints_both_answers_and_eval_loss(two_facts):
    project, facts = two_facts
    code, text, err = aitk("adapters", "compare", "facts-a", "facts-b", "--limit", "8", "-P", str(project.root))
    assert code == 0, err
    lines = text.splitlines()
    assert lines[0].split()[-2:] == ["facts-a", "facts-b"]
    row = facts["facts-b"][0]  # the project's eval data is facts-b's now: facts-b knows it, facts-a not
    assert row["question"][:20] in lines[1] and lines[1].split()[-1].startswith(row["answer"].split()[0])
    loss = next(line for line in lines if line.startswith("eval loss")).split()[-2:]
    assert float(loss[1]) < float(loss[0]), text
    exact = next(line for line in lines if line.startswith("exact answers")).split()[-2:]
    assert int(exact[1].split("/")[0]) > int(exact[0].split("/")[0]), text
