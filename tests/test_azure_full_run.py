"""A whole remote fine-tune against the fake Azure, with the real engine doing the training.

provision -> secret -> run -> the log stream's `[aitk-metric]` lines become the job's metrics ->
succeeded -> fetch -> export -> chat with the fetched adapter on the tiny model. The fake's
execution runs the job's own command (the entry script on the share, which installs aitk's bundle,
with the default public image's path) on the uploaded project copy in its share folder, so what comes back is a real adapter. Then a grep proves the HF token
is in no file the app (or the "container") wrote.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from azure_fake import running

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with running(tmp_path_factory.mktemp("fake-azure-engine"), runner="engine") as server:
        yield server


def test_full_remote_run_then_chat_with_the_fetched_adapter(fake, tmp_path, tiny_test_model, session_root):
    from aitk.core import metrics, tiny
    from aitk.core.chat import GenaiChatEngine, GenerationOptions
    from aitk.core.export import export_model
    from aitk.core.project import create_project, load_project, regenerate
    from aitk.providers.azure import auth, config
    from aitk.providers.azure.clients import AzureContext
    from aitk.providers.azure.provider import AzureProvider
    from aitk.providers.azure.provision import plan_config, provision
    from aitk.providers.azure.secret import set_secret

    t0 = time.time()
    project = create_project(tmp_path / "full-remote", tiny_spec=tiny.TEST)
    f = project.settings.finetune
    f.max_steps, f.logging_steps, f.save_steps, f.eval_steps = 100, 10, 1000, 1000
    f.learning_rate = 3e-3
    regenerate(project)
    project = load_project(project.root)

    ctx = AzureContext(auth.credential(), fake.subscription)
    cfg = plan_config(subscription_id=fake.subscription, resource_group="rg-full", location="swedencentral",
                      gpu="t4", image=None, timeout_s=None, existing=None)
    cfg, steps, _ = provision(ctx, project.root, cfg)
    assert {s.state for s in steps} == {"created"}
    token = "hf_" + uuid.uuid4().hex
    set_secret(ctx, config.load_infra(project.root), "hf-token", token)

    provider = AzureProvider()
    rec = provider.submit("finetune", project.root)
    statuses = []
    deadline = time.time() + 240
    while not (r := provider.status(rec.id)).is_final:
        if not statuses or statuses[-1] != r.status:
            statuses.append(r.status)
        assert time.time() < deadline, provider.store.log_path(rec.id).read_text()[-3000:]
        time.sleep(0.25)
    log = provider.store.log_path(rec.id).read_text()
    assert r.status == "succeeded", log[-4000:]
    assert "running" in statuses

    # The live stream carried every metric line; parsed, they are exactly the trainer's own records.
    streamed = [m for m in (metrics.parse_line(line) for line in log.splitlines()) if m]
    recorded = provider.store.metrics(rec.id)
    assert streamed == recorded
    losses = [m["loss"] for m in recorded if "loss" in m]
    assert len(losses) >= 9 and losses[-1] < losses[0]
    assert recorded[0]["event"] == "begin" and recorded[-1]["event"] == "end"
    assert "lines from Log Analytics" not in log  # streamed live, not recovered afterwards
    # The registry-free path: the job's own command ran the entry script from the share, which found
    # its run there and installed aitk's wheel + dependency lock before training.
    assert f"[aitk-job] run folder runs/{rec.id}" in log and "[aitk-job] installed aitk_tui-" in log
    exe = fake.executions[rec.params["execution"]]
    assert not exe.overridden and config.ENTRY in exe.template["containers"][0]["command"][-1]

    # Fetched like a local run's outputs, and published as the project's adapter.
    adapter = provider.outputs(rec.id)["adapter"]
    assert (adapter / "adapter_config.json").is_file() and (project.adapter_dir / "adapter_config.json").is_file()
    assert json.loads((provider.store.job_dir(rec.id) / "remote-status.json").read_text())["status"] == "succeeded"

    # Export + chat exactly as after a local run.
    onnx = export_model(project.base_model_path(), project.adapter_dir, project.onnx_dir("fp32"), precision="fp32")
    engine = GenaiChatEngine(onnx)
    assert engine.adapters == ["tuned"]
    rows = [json.loads(line) for line in (project.root / "dataset" / "train.jsonl").read_text().splitlines()[:8]]
    opts = GenerationOptions(max_new_tokens=8)
    tuned = [engine.stream([{"role": "user", "content": q["question"]}], opts, adapter="tuned").read().strip()
             for q in rows]
    base = [engine.stream([{"role": "user", "content": q["question"]}], opts, adapter="base").read().strip()
            for q in rows]
    assert any(tuned) and tuned != base  # the fetched adapter changes what the model says

    # The HF token reached the container (as $HF_TOKEN) but no file anyone wrote.
    leaks = [str(p) for base_dir in (session_root, fake.root, project.root, tmp_path)
             for p in Path(base_dir).rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert leaks == []
    print(f"full remote run + export + chat in {time.time() - t0:.1f} s; tuned answers: {tuned[:3]}")
