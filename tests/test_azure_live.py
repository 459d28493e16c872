"""Opt-in: the whole remote path against a real Azure subscription. Skipped unless AITK_AZURE_LIVE=1.

It creates real, billed resources (a resource group with storage, Log Analytics, a Container Apps
environment with a serverless GPU profile and a job) and runs one short fine-tune of the tiny model.

    AITK_AZURE_LIVE=1                 run it
    AZURE_SUBSCRIPTION_ID             the subscription (sign in first: `az login` or `aitk azure login --remember`)
    AITK_AZURE_LIVE_IMAGE             optional: your own image (default: the public PyTorch CUDA image, aitk
                                      installed from the share at job start: no registry)
    AITK_AZURE_LIVE_LOCATION          region with serverless GPUs (default westus3)
    AITK_AZURE_LIVE_GPU               a100 | t4 (default t4: cheaper)
    AITK_AZURE_LIVE_RG                resource group (default aitk-live-test)
    HF_TOKEN                          optional: set as the job secret hf-token
    AITK_AZURE_LIVE_CLEANUP=1         delete the resource group afterwards
    AITK_AZURE_LIVE_TWICE=1           run a second time: the install should come from the share's pip cache

It prints what only a real subscription can tell: the sign-in source that answered, the quota lines
(serverless vs dedicated), each execution state seen, and how long the install at job start took.
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("AITK_AZURE_LIVE") != "1",
                                                   reason="live Azure test: set AITK_AZURE_LIVE=1 (creates billed resources)")]


def test_live_provision_run_fetch_chat(tmp_path, tiny_test_model):
    from aitk.core import tiny
    from aitk.core.chat import GenaiChatEngine, GenerationOptions
    from aitk.core.export import export_model
    from aitk.core.project import create_project, load_project, regenerate
    from aitk.providers.azure import auth, config
    from aitk.providers.azure.clients import AzureContext
    from aitk.providers.azure.provider import AzureProvider
    from aitk.providers.azure.provision import plan_config, provision
    from aitk.providers.azure.secret import set_secret

    image = os.environ.get("AITK_AZURE_LIVE_IMAGE")  # None: the registry-free default
    for k in ("AITK_AZURE_ARM_ENDPOINT", "AITK_AZURE_LOGS_ENDPOINT", "AZURE_AUTHORITY_HOST", "AITK_AZURE_CA_BUNDLE",
              "AITK_AZURE_LRO_POLL_S", "AITK_AZURE_POLL_S"):
        os.environ.pop(k, None)  # the real cloud
    for row in auth.check_sources():
        print("sign-in source:", *row)
    cred = auth.credential()
    print("signed in as", auth.identity(cred).display)
    sub = auth.resolve_subscription(None, AzureContext(cred, None))
    ctx = AzureContext(cred, sub, notify=print)

    project = create_project(tmp_path / "live-remote", tiny_spec=tiny.TEST)
    project.settings.finetune.max_steps = 60
    regenerate(project)
    project = load_project(project.root)
    cfg = plan_config(subscription_id=sub, resource_group=os.environ.get("AITK_AZURE_LIVE_RG", "aitk-live-test"),
                      location=os.environ.get("AITK_AZURE_LIVE_LOCATION", "westus3"),
                      gpu=os.environ.get("AITK_AZURE_LIVE_GPU", "t4"), image=image, timeout_s=3600, existing=None)
    from aitk.providers.azure import quota

    for line in quota.report(ctx, cfg).lines():
        print("quota:", line)
    try:
        _, plan, _ = provision(ctx, project.root, cfg, dry_run=True, progress=print)
        cfg, steps, warnings = provision(ctx, project.root, cfg, progress=print)
        _, again, _ = provision(ctx, project.root, config.load_infra(project.root), progress=print)
        assert {s.state for s in again} == {"exists"}
        if os.environ.get("HF_TOKEN"):
            set_secret(ctx, config.load_infra(project.root), "hf-token", os.environ["HF_TOKEN"])
        provider = AzureProvider(notify=print)
        for attempt in range(2 if os.environ.get("AITK_AZURE_LIVE_TWICE") == "1" else 1):
            rec = provider.submit("finetune", project.root)
            deadline = time.time() + 3600
            while not (r := provider.status(rec.id)).is_final:
                assert time.time() < deadline, "the live run took over an hour"
                time.sleep(10)
            log = provider.store.log_path(rec.id).read_text()
            print(*[ln for ln in log.splitlines() if "execution" in ln and ": " in ln][-8:], sep="\n")
            print(*[ln for ln in log.splitlines() if "[aitk-job] installed" in ln], sep="\n")
            assert r.status == "succeeded", log[-4000:]
            assert f"[aitk-job] run folder runs/{rec.id}" in log  # the run came through the share
            assert any("loss" in m for m in provider.store.metrics(rec.id))
        onnx = export_model(project.base_model_path(), project.adapter_dir, project.onnx_dir("fp32"), precision="fp32")
        engine = GenaiChatEngine(onnx)
        assert engine.stream([{"role": "user", "content": "hello"}], GenerationOptions(max_new_tokens=8),
                             adapter="tuned").read() is not None
    finally:
        if os.environ.get("AITK_AZURE_LIVE_CLEANUP") == "1":
            ctx.resources.resource_groups.begin_delete(cfg.resource_group).result()
