"""The Azure inference endpoint (a Container App running `aitk serve`), against the local HTTPS fake of Azure.

The exported model is fabricated (small dummy files in `project.onnx_dir()`): what is tested here is
provisioning, upload, revisions, the config file, logs and errors, not the model.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from aitk.core.errors import AitkError

from test_azure import RG, _reset_fake, ctx_for, fake, project, run_cli  # noqa: F401 (fixtures)


def fabricate_export(project, tuned: bytes = b"tuned-v1") -> Path:
    onnx = Path(project.onnx_dir())
    (onnx / "adapters").mkdir(parents=True, exist_ok=True)
    (onnx / "model.onnx").write_bytes(b"fake-onnx-model" * 64)
    (onnx / "genai_config.json").write_text('{"model": {"type": "phi3"}}')
    (onnx / "tokenizer.json").write_text('{"version": "1.0"}')
    (onnx / "adapters" / "base.onnx_adapter").write_bytes(b"base-adapter")
    (onnx / "adapters" / "tuned.onnx_adapter").write_bytes(tuned)
    return onnx


def app_res(fake, name):
    return fake._get(fake._rid(RG, f"Microsoft.App/containerApps/{name}"))


def grep_tree(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for p in Path(root).rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                if needle in p.read_bytes():
                    hits.append(p)
            except OSError:
                pass
    return hits


def test_provision_app_creates_it_once_then_changes_nothing(fake, project):
    from aitk.providers.azure import config
    from aitk.providers.azure.inference import app_name, provision_app

    cfg = config.load_infra(project.root)
    name = app_name(cfg)
    app, step = provision_app(ctx_for(fake), cfg)
    assert step.state == "created" and app.name == name
    props = app_res(fake, name)["properties"]
    assert props["workloadProfileName"] == "Consumption"
    ing = props["configuration"]["ingress"]
    assert ing["external"] is True and ing["targetPort"] == 8000 and ing["fqdn"].startswith(name + ".")
    c = props["template"]["containers"][0]
    assert c["image"] == cfg.image == "registry.example/aitk-train:test"
    # No image of our own: the entry script on the share installs aitk's bundle, then `aitk serve`s.
    cmd = c["command"][-1]
    assert cmd.startswith(f"exec python3 {config.ENTRY} --serve - aitk/bundles/") and cmd.endswith(" 8000")
    share = fake.share_root / cfg.storage_account / cfg.file_share
    assert (share / cmd.split()[5] / "requirements.lock").is_file() and (share / "aitk" / "entry.py").is_file()
    probes = {p["type"]: p["httpGet"] for p in c["probes"]}
    assert probes["Liveness"] == probes["Readiness"] == {"path": "/health", "port": 8000, "scheme": "HTTP"}
    assert c["volumeMounts"] == [{"volumeName": "share", "mountPath": "/mount"}]
    assert props["template"]["volumes"][0]["storageName"] == cfg.environment_storage
    assert not any(e.get("secretRef") for e in c["env"])  # no key asked for: none referenced

    before = len(fake.mutations())
    _, step = provision_app(ctx_for(fake), cfg)
    assert step.state == "exists" and fake.mutations()[before:] == []


def test_deploy_twice_rolls_two_revisions_and_never_writes_the_key(fake, project, session_root):
    from aitk.providers.azure import config
    from aitk.providers.azure.inference import AITK_INFERENCE_KEYS, app_name, deploy, inference_path

    cfg = config.load_infra(project.root)
    name = app_name(cfg)
    ctx = ctx_for(fake)
    with pytest.raises(AitkError, match="no exported model") as e:
        deploy(ctx, project, cfg)
    assert "aitk export" in e.value.hint
    fabricate_export(project)
    key = "sk-" + uuid.uuid4().hex
    revs_before = len(list(ctx.apps.container_apps_revisions.list_revisions(RG, name)))
    first = deploy(ctx, project, cfg, api_key=key)
    data = json.loads(inference_path(project.root).read_text())
    for k in AITK_INFERENCE_KEYS:
        assert data[k], k
    assert data["ACA_APP_NAME"] == name and data["RESOURCE_GROUP_NAME"] == RG
    assert data["ACA_APP_ENDPOINT"] == f"https://{app_res(fake, name)['properties']['configuration']['ingress']['fqdn']}"
    assert data["API_KEY_SECRET"] == "api-key" and data["ADAPTER"] == "tuned"
    assert first["UPLOADED_FILES"] == 6  # aitk.toml + 5 model files
    props = app_res(fake, name)["properties"]
    assert {"name": "api-key", "value": key} in props["configuration"]["secrets"]
    env = props["template"]["containers"][0]["env"]
    assert {"name": "AITK_API_KEY", "secretRef": "api-key"} in env
    assert {"name": "AITK_DEPLOY", "value": data["DEPLOY_FOLDER"]} in env
    assert data["DEPLOY_FOLDER"] in props["template"]["containers"][0]["command"][-1]
    assert props["latestRevisionName"] == data["ACA_REVISION"] == f"{name}--{data['DEPLOY_FOLDER'].split('/')[-1]}"
    # GET never shows the value; the share has the deploy's manifest
    assert all("value" not in s for s in ctx.apps.container_apps.get(RG, name).as_dict()["properties"]
               ["configuration"]["secrets"])
    share = fake.share_root / cfg.storage_account / cfg.file_share
    manifest = json.loads((share / data["DEPLOY_FOLDER"] / "manifest.json").read_text())
    assert "aitk.toml" in manifest["files"] and any(k.endswith("adapters/tuned.onnx_adapter") for k in manifest["files"])

    # A new adapter: only it is uploaded; a new revision serves the new folder; the key is kept.
    fabricate_export(project, tuned=b"tuned-v2")
    second = deploy(ctx, project, cfg)
    assert second["UPLOADED_FILES"] == 1 and second["REUSED_FILES"] == 5
    assert second["ACA_REVISION"] != first["ACA_REVISION"] and second["API_KEY_SECRET"] == "api-key"
    revs = {r.name: r for r in ctx.apps.container_apps_revisions.list_revisions(RG, name)}
    assert len(revs) == revs_before + 2 and first["ACA_REVISION"] in revs and second["ACA_REVISION"] in revs
    assert revs[second["ACA_REVISION"]].properties.active and not revs[first["ACA_REVISION"]].properties.active
    props = app_res(fake, name)["properties"]
    assert {"name": "api-key", "value": key} in props["configuration"]["secrets"]
    assert json.loads(inference_path(project.root).read_text())["ACA_REVISION"] == second["ACA_REVISION"]

    for root in (project.root, session_root, fake.root):
        assert grep_tree(root, key.encode()) == [], root


def test_endpoint_reads_the_file_and_the_live_app(fake, project):
    from aitk.providers.azure.inference import endpoint

    data = endpoint(ctx_for(fake), project.root)
    assert data["ACA_APP_ENDPOINT"].startswith("https://aitk-inf-")
    assert data["live"]["ACA_REVISION"] == data["ACA_REVISION"] == data["live"]["READY_REVISION"]
    assert data["live"]["PROVISIONING_STATE"] == "Succeeded"
    assert endpoint(None, project.root)["ACA_APP_ENDPOINT"] == data["ACA_APP_ENDPOINT"]


def test_the_container_lays_the_deploy_out_as_a_project(fake, project, tmp_path):
    """What the app's command does before `aitk serve --project`: the deploy laid out, hash-checked."""
    import os
    import subprocess
    import sys

    from aitk.core.project import load_project
    from aitk.providers.azure import config
    from aitk.providers.azure.inference import endpoint

    cfg = config.load_infra(project.root)
    data = endpoint(None, project.root)
    props = app_res(fake, data["ACA_APP_NAME"])["properties"]
    assert f"--serve {data['DEPLOY_FOLDER']} aitk/bundles/" in props["template"]["containers"][0]["command"][-1]
    share = fake.share_root / cfg.storage_account / cfg.file_share
    out = subprocess.run([sys.executable, str(share / "aitk" / "entry.py"),
                          "--layout", data["DEPLOY_FOLDER"], str(tmp_path / "deploy")],
                         env={**os.environ, "AITK_MOUNT": str(share)}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    laid = load_project(tmp_path / "deploy")
    onnx = Path(laid.onnx_dir())
    assert (onnx / "adapters" / "tuned.onnx_adapter").read_bytes() == b"tuned-v2"
    assert (onnx / "adapters" / "base.onnx_adapter").is_file() and (onnx / "model.onnx").is_file()


def test_app_logs_stream_live_then_from_log_analytics(fake, project):
    from aitk.providers.azure import config
    from aitk.providers.azure.inference import endpoint, stream_app_logs

    cfg = config.load_infra(project.root)
    data = endpoint(None, project.root)
    name, rev = data["ACA_APP_NAME"], data["ACA_REVISION"]
    got = []
    stream_app_logs(ctx_for(fake), cfg, name, got.append)  # no follow: what is there, then return
    assert any(f"serving on http://0.0.0.0:8000/v1 (revision {rev})" in ln for ln in got), got
    assert not any("Connecting to the container" in ln for ln in got)

    live, stop = [], threading.Event()
    fake.stream_drops.append(1)  # the first connection breaks after one line: reconnect, no repeats
    streams = lambda: sum("/containerApps/" in r[1] and r[1].endswith("/logstream") for r in fake.requests)  # noqa: E731
    before = streams()
    t = threading.Thread(target=stream_app_logs, args=(ctx_for(fake), cfg, name, live.append),
                         kwargs={"follow": True, "stop": stop}, daemon=True)
    t.start()
    deadline = time.time() + 10
    while not any("serving on" in ln for ln in live) and time.time() < deadline:
        time.sleep(0.05)
    fake.app_log(name, "INFO: 10.0.0.1 - POST /v1/chat/completions 200")
    while not any("/v1/chat/completions" in ln for ln in live) and time.time() < deadline:
        time.sleep(0.05)
    assert any("/v1/chat/completions" in ln for ln in live), live
    fake.app_log(name, "", end=True)  # the container exits: the stream ends
    t.join(10)
    assert not t.is_alive()
    assert len([ln for ln in live if "serving on" in ln]) == 1  # no replays
    assert len([ln for ln in live if "[fake-app] revision" in ln]) == 1
    assert streams() - before >= 2  # it did reconnect

    # No running replica now: the lines come from Log Analytics.
    rows = []
    stream_app_logs(ctx_for(fake), cfg, name, rows.append)
    assert any("/v1/chat/completions" in ln for ln in rows), rows


def test_409_and_403_on_the_app_are_explained(fake, project):
    from aitk.providers.azure import config
    from aitk.providers.azure.inference import deploy, provision_app

    cfg = config.load_infra(project.root)
    fake.fault("PUT", r"/containerApps/aitk-inf-busy$", 409, code="ContainerAppOperationInProgress",
               message="Cannot modify a container app while an operation is in progress.")
    with pytest.raises(AitkError) as e:
        provision_app(ctx_for(fake), cfg, name="aitk-inf-busy")
    assert "ContainerAppOperationInProgress" in str(e.value) and "request id" in str(e.value)
    assert "in progress" in e.value.hint
    fake.fault("PATCH", r"/containerApps/", 403, code="AuthorizationFailed",
               message="The client does not have authorization to perform action 'Microsoft.App/containerApps/write'.")
    fabricate_export(project)
    with pytest.raises(AitkError) as e:
        deploy(ctx_for(fake), project, cfg)
    assert "permission denied" in str(e.value) and "AuthorizationFailed" in str(e.value)
    assert "Contributor" in e.value.hint and RG in e.value.hint


def test_cli_deploy_endpoint_app_logs(fake, project, monkeypatch):
    key = "sk-cli-" + uuid.uuid4().hex
    monkeypatch.setenv("MY_KEY", key)
    code, out, err = run_cli("azure", "deploy", "-P", str(project.root), "--api-key-secret", "--from-env", "MY_KEY",
                             "--gpu")
    assert code == 0, out + err
    props = app_res(fake, json.loads(
        (project.root / "infra" / "inference.config.json").read_text())["ACA_APP_NAME"])["properties"]
    assert props["workloadProfileName"] == "gpu-a100"
    assert props["template"]["containers"][0]["resources"] == {"cpu": 24.0, "memory": "220Gi"}
    assert "endpoint https://aitk-inf-" in out and "api-key" in out and key not in out + err
    code, out, err = run_cli("azure", "endpoint", "-P", str(project.root))
    assert code == 0, err
    assert "endpoint   https://aitk-inf-" in out and "Succeeded" in out and "required (secret api-key)" in out
    code, out, err = run_cli("azure", "app-logs", "-P", str(project.root))
    assert code == 0 and "serving on http://0.0.0.0:8000/v1" in out, out + err
    assert key not in out + err
    assert key not in (project.root / "infra" / "inference.config.json").read_text()
