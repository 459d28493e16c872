"""Provenance: each job's manifest.json, `aitk jobs show` printing it, and `aitk jobs rerun`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import N_ROWS, wait


def aitk(*args, cwd=None, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    return proc.returncode, proc.stdout, proc.stderr


def _project(tmp_path, rows, steps=60):
    from aitk.core import tiny
    from aitk.core.project import create_project, load_project, regenerate

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    project = create_project(tmp_path / "proj", dataset=str(data), tiny_spec=tiny.TEST)
    f = project.settings.finetune
    f.max_steps, f.eval_steps, f.save_steps, f.logging_steps = steps, steps, steps, 10
    f.per_device_train_batch_size = 4  # short: the rerun test trains twice
    project.settings.data.eval_dataset = "dataset/qa.jsonl"
    regenerate(project)
    return load_project(project.root)


def test_manifest_records_data_model_packages_and_diffs(tmp_path, tiny_test_model, rows):
    from aitk.core import provenance

    project = _project(tmp_path, rows)
    m = provenance.build(project, kind="finetune", device="cpu", olive_config={"passes": {}})
    assert m["data"]["train"]["rows"] == N_ROWS and len(m["data"]["train"]["sha256"]) == 64
    assert m["model"]["config_sha256"] and m["packages"]["torch"] and m["packages"]["aitk-tui"]
    assert m["seeds"] == {"seed": project.settings.finetune.seed, "data_seed": project.settings.finetune.data_seed}
    provenance.write(tmp_path, m)
    assert provenance.read(tmp_path) == json.loads(json.dumps(m))
    assert provenance.differences(m, provenance.build(project, kind="finetune", device="cpu", olive_config=None)) == []
    with open(project.path("dataset/qa.jsonl"), "a") as f:
        f.write(json.dumps(rows[0]) + "\n")
    diffs = provenance.differences(m, provenance.build(project, kind="finetune", device="cpu", olive_config=None),
                                   {**m["settings"], "finetune": {**m["settings"]["finetune"], "seed": 7}})
    assert any(d.startswith("train data dataset/qa.jsonl") and f"rows {N_ROWS} -> {N_ROWS + 1}" in d for d in diffs)
    assert any(d.startswith("setting finetune.seed: 0 recorded, 7") for d in diffs), diffs


def _eval_loss(store, job_id):
    return [m["eval_loss"] for m in store.metrics(job_id) if "eval_loss" in m][-1]


@pytest.mark.slow
def test_rerun_from_manifest_reproduces_eval_loss(tmp_path, tiny_test_model, rows):
    from aitk.providers.jobs import Jobs

    project = _project(tmp_path, rows)
    jobs = Jobs()
    first = jobs.submit("finetune", project.root)
    assert wait(jobs, first.id).status == "succeeded", jobs.store.log_path(first.id).read_text()[-2000:]
    manifest = json.loads((jobs.store.job_dir(first.id) / "manifest.json").read_text())
    assert manifest["olive_config"]["passes"]["finetune"]["training_args"]["max_steps"] == 60

    code, out, err = aitk("jobs", "show", first.id, "--offline")
    assert code == 0 and "manifest.json" in out and "sha256" in out and "seeds        seed 0" in out, (out, err)

    # The project changes after the run; the rerun still uses the recorded settings.
    aitk("project", "set", "finetune.max_steps=5", "-P", str(project.root))
    code, out, err = aitk("jobs", "rerun", first.id)
    assert code == 0, (out, err)
    assert "setting finetune.max_steps: 60 recorded, 5 in aitk.toml now" in out
    second = next(r for r in jobs.store.list(project=str(project.root)) if r.id != first.id)
    assert second.params["settings"]["finetune"]["max_steps"] == 60
    a, b = _eval_loss(jobs.store, first.id), _eval_loss(jobs.store, second.id)
    # Seeded before the adapter exists (core/finetune.py): the rerun is the same run (it was ~3% off).
    assert abs(a - b) <= 1e-3 * a, (a, b)

    with open(project.path("dataset/qa.jsonl"), "a") as f:
        f.write(json.dumps(rows[1]) + "\n")
    code, out, err = aitk("jobs", "rerun", first.id, "--dry-run")
    assert code == 0 and "train data dataset/qa.jsonl: sha256" in out and f"rows {N_ROWS} -> {N_ROWS + 1}" in out


def test_rerun_without_manifest_is_one_clear_error(tmp_path, tiny_test_model, rows):
    from aitk.core.jobs import JobStore

    project = _project(tmp_path, rows)
    rec = JobStore().create("finetune", project=str(project.root), device="cpu")
    JobStore().update(rec.id, status="failed")
    code, out, err = aitk("jobs", "rerun", rec.id)
    assert code == 2 and err.startswith(f"error: job {rec.id} has no manifest.json") and "jobs retry" in err
