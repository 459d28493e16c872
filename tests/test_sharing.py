"""Sharing: `aitk push` to a loopback Hub fake, and `aitk jobs report`'s card and SVG chart.

The adapter and export pushed here are published folders with the files a real run leaves
(peft's adapter_config.json + weights, genai_config.json + model.onnx): what is under test is
what push stages, the card it writes and the Hub protocol, not training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from hub_fake.server import HubFake

TOKEN = "hf_fake_write_token"


def aitk(*args, cwd=None, env=None):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def shared_project(tmp_path, tiny_test_model, rows):
    """A project with a published adapter and fp32 export, a succeeded fine-tune job with metrics
    and an evaluation with its result, as the job store records them."""
    from aitk.core import publish, tiny
    from aitk.core.jobs import SUCCEEDED, JobStore
    from aitk.core.project import create_project

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    project = create_project(tmp_path / "proj", dataset=str(data), tiny_spec=tiny.TEST)
    staged = publish.work_dir(project.adapter_dir, "staged")
    (staged / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 64}))
    (staged / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    publish.publish(staged, project.adapter_dir)
    dest = project.onnx_dir("fp32")
    staged = publish.work_dir(dest, "staged")
    (staged / "genai_config.json").write_text(json.dumps({"model": {"type": "phi3"}}))
    (staged / "model.onnx").write_bytes(os.urandom(200_000))
    publish.publish(staged, dest)

    store = JobStore()
    ft = store.create("finetune", project=str(project.root), device="cpu")
    with open(store.metrics_path(ft.id), "w") as f:
        for step in range(10, 110, 10):
            f.write(json.dumps({"step": step, "max_steps": 100, "loss": round(3.0 / (step / 10), 4)}) + "\n")
        f.write(json.dumps({"step": 100, "max_steps": 100, "eval_loss": 0.52}) + "\n")
    store.update(ft.id, status=SUCCEEDED, started=time.time(), finished=time.time(), exit_code=0)
    ev = store.create("evaluate", project=str(project.root), device="cpu", parent=ft.id)
    store.update(ev.id, status=SUCCEEDED, exit_code=0, result={
        "rows": 48, "tokens": 900, "device": "cpu", "base": {"loss": 6.1, "perplexity": 445.9},
        "tuned": {"loss": 0.51, "perplexity": 1.665}})
    return project, ft


def test_push_uploads_adapter_export_and_card(shared_project):
    project, _ = shared_project
    with HubFake(TOKEN) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
        code, out, err = aitk("push", "-P", str(project.root), "--repo", "alice/qa-lora", "--private", env=env)
        assert code == 0, (out, err[-3000:])
        repo = hub.repos["alice/qa-lora"]
        assert repo["private"] is True and len(repo["commits"]) == 1
        files = repo["files"]
        assert set(files) == {"README.md", "loss.svg", "adapter/adapter_config.json",
                              "adapter/adapter_model.safetensors", "onnx/fp32/genai_config.json", "onnx/fp32/model.onnx"}
        assert files["onnx/fp32/model.onnx"] == (project.onnx_dir("fp32") / "model.onnx").read_bytes()  # via LFS
        assert len(hub.lfs) == 2  # the two weight files went through LFS, the rest inline
        card = files["README.md"].decode()
        assert card.startswith("---\nlibrary_name: peft")
        assert "| tuned | 0.51 | 1.665 |" in card and "![loss curve](loss.svg)" in card
        assert "| train | qa.jsonl | 48 |" in card and "- `onnx/fp32/model.onnx`" in card
        assert TOKEN not in card and "alice/qa-lora" in out

        # A second push to the same repo is a new commit, not an error; a wrong token is one clear line.
        assert aitk("push", "-P", str(project.root), "--repo", "alice/qa-lora", env=env)[0] == 0
        assert len(repo["commits"]) == 2
        code, out, err = aitk("push", "-P", str(project.root), "--repo", "alice/other", env={**env, "HF_TOKEN": "hf_bad"})
        assert code == 2 and "refused the push" in err and "Traceback" not in err


def test_jobs_report_writes_card_and_svg(shared_project, tmp_path):
    project, ft = shared_project
    out_dir = tmp_path / "report"
    code, out, err = aitk("jobs", "report", ft.id, "--out", str(out_dir))
    assert code == 0, (out, err)
    card = (out_dir / "README.md").read_text()
    assert f"# {project.name}" in card and "Train loss 3 → 0.3 over 100 steps; eval loss 0.52" in card
    assert "| lora_r | 64 |" in card and "| base | 6.1 | 445.9 |" in card
    svg = ET.fromstring((out_dir / "loss.svg").read_text())
    ns = "{http://www.w3.org/2000/svg}"
    line = svg.find(f"{ns}polyline")
    assert line is not None and len(line.get("points").split()) == 10  # one vertex per train-loss record
    assert svg.find(f"{ns}circle") is not None  # the single eval point
