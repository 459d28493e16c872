"""Remote fine-tuning on Azure Container Apps, against a local HTTPS fake of Azure (tests/azure_fake).

The real SDK clients (azure-identity, azure-mgmt-*, azure-monitor-query, azure-storage-file-share)
talk to 127.0.0.1 over TLS with a CA made at test time. Executions run a one-second stand-in for
the training image (tests/azure_fake/scripts.py); test_azure_full_run.py runs the real engine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from aitk.core.errors import AitkError
from aitk.core.jobs import JobStore

from azure_fake import running
from azure_fake.scripts import FAST_TRAIN

RG = "rg-aitk-tests"


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with running(tmp_path_factory.mktemp("fake-azure"), script=FAST_TRAIN) as server:
        server.wait_for_stream = True
        yield server


@pytest.fixture(autouse=True)
def _reset_fake(request):
    """Faults and knobs never leak from one test into the next."""
    yield
    if "fake" in request.fixturenames:
        f = request.getfixturevalue("fake")
        f.faults.clear()
        f.stream_drops.clear()
        f.stream_tail_cap = 300
        f.run_env.clear()
        f.usages[0]["limit"] = 1
        f.wait_for_stream = True


def ctx_for(fake, notes=None):
    from aitk.providers.azure import auth
    from aitk.providers.azure.clients import AzureContext

    return AzureContext(auth.credential(), fake.subscription, notify=(notes.append if notes is not None else None))


@pytest.fixture(scope="module")
def project(fake, tmp_path_factory, tiny_test_model):
    from aitk.core import tiny
    from aitk.core.project import create_project
    from aitk.providers.azure.provision import plan_config, provision

    proj = create_project(tmp_path_factory.mktemp("azproj") / "remote-proj", tiny_spec=tiny.TEST)
    cfg = plan_config(subscription_id=fake.subscription, resource_group=RG, location="westus3", gpu="a100",
                      image="registry.example/aitk-train:test", timeout_s=1800, existing=None)
    provision(ctx_for(fake), proj.root, cfg)
    return proj


def wait_final(provider, job_id, timeout=60):
    seen = []
    deadline = time.time() + timeout
    while True:
        rec = provider.status(job_id)
        if not seen or seen[-1] != rec.status:
            seen.append(rec.status)
        if rec.is_final:
            return rec, seen
        assert time.time() < deadline, f"job {job_id} still {rec.status}: " + \
            provider.store.log_path(job_id).read_text()[-2000:]
        time.sleep(0.1)


def console_lines(store, job_id) -> list[str]:
    return [ln for ln in store.log_path(job_id).read_text().splitlines() if not ln.startswith("[aitk] ")]


def fake_execution(fake, rec):
    return fake.executions[rec.params["execution"]]


# -- unit: names, config, parsing, errors -------------------------------------------------------
def test_infra_file_uses_ai_toolkit_keys_and_reads_its_template(tmp_path):
    from aitk.providers.azure import config

    (tmp_path / "infra").mkdir()
    template = {"SUBSCRIPTION_ID": None, "RESOURCE_GROUP_NAME": None, "STORAGE_ACCOUNT_NAME": None,
                "FILE_SHARE_NAME": None, "ACA_JOB_NAME": None, "COMMANDS": ["cd /mount", "python3 x.py"]}
    (tmp_path / config.INFRA_FILE).write_text(json.dumps(template))
    assert config.load_infra(tmp_path, required=False) is None  # AI Toolkit's unprovisioned template
    with pytest.raises(AitkError, match="provision"):
        config.load_infra(tmp_path)
    names = config.default_names(config.name_suffix("sub", "rg"))
    cfg = config.InfraConfig(subscription_id="sub", resource_group="rg", location="westus3", **names)
    config.save_infra(tmp_path, cfg)
    data = json.loads((tmp_path / config.INFRA_FILE).read_text())
    for key in config.AITK_KEYS:
        assert data[key], key
    assert data["COMMANDS"] == config.DEFAULT_COMMANDS
    assert config.load_infra(tmp_path) == cfg
    config.check_names(cfg)
    assert names == config.default_names(config.name_suffix("SUB", "RG"))  # stable across reruns


def test_stream_lines_parse_timestamps_formats_and_system_lines():
    from aitk.providers.azure.logs import parse_stream_line, ts_key

    k, text, system = parse_stream_line("2026-01-02T03:04:05.123456789Z [aitk-metric] {\"step\":1}")
    assert (k, text, system) == ("2026-01-02T03:04:05.123456789", '[aitk-metric] {"step":1}', False)
    assert parse_stream_line("2026-01-02T03:04:05.12Z  Connecting to the container 'trainer'...")[2]
    assert parse_stream_line('{"TimeStamp":"2026-01-02T03:04:05.5+00:00","Log":"F hello"}')[:2] == \
        ("2026-01-02T03:04:05.500000000", "hello")
    assert parse_stream_line("2026-01-02T03:04:05Z stdout F hi")[1] == "hi"
    assert parse_stream_line("no timestamp at all") == (None, "no timestamp at all", False)
    # Sorts like time, whatever the precision or offset.
    assert ts_key("2026-01-02T03:04:05.9Z") > ts_key("2026-01-02T03:04:05.123456789Z")
    assert ts_key("2026-01-02T05:04:05+02:00") == ts_key("2026-01-02T03:04:05Z")


def test_error_translation_names_code_message_and_request_id():
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    from aitk.providers.azure.errors import translate

    class Resp:
        def __init__(self, status, code, msg):
            self.status_code, self.reason = status, "x"
            self.headers = {"x-ms-request-id": "rid-123", "content-type": "application/json"}
            self._body = json.dumps({"error": {"code": code, "message": msg}}).encode()

        def text(self, encoding=None):
            return self._body.decode()

        def body(self):
            return self._body

    e = translate(HttpResponseError(response=Resp(403, "AuthorizationFailed", "no access")), "create x", scope="rg y")
    assert "AuthorizationFailed" in str(e) and "rid-123" in str(e) and "Contributor" in e.hint and "rg y" in e.hint
    e = translate(ClientAuthenticationError(response=Resp(401, "ExpiredAuthenticationToken", "expired")), "read x")
    assert "ExpiredAuthenticationToken" in str(e) and "aitk azure login" in e.hint
    e = translate(HttpResponseError(response=Resp(409, "StorageAccountAlreadyTaken", "taken")), "create x")
    assert "conflict" in str(e) and "name is taken" in e.hint
    e = translate(HttpResponseError(response=Resp(400, "MaxNumberOfGpuQuotaExceeded", "quota exceeded")), "create",
                  gpu_label="Managed Environment Consumption NCA100 Gpus", location="westus3", subscription="s")
    assert "quota" in str(e) and "NCA100" in e.hint and "Quotas" in e.hint
    e = translate(HttpResponseError(response=Resp(503, "ServerBusy", "busy")), "read x")
    assert "retries ran out" in str(e) and "rid-123" in str(e)


def test_azure_logging_goes_to_a_file_never_the_terminal(capfd):
    from aitk.providers.azure import auth

    path = auth.setup_logging()
    logging.getLogger("azure.identity._credentials.chained").warning("DefaultAzureCredential failed (test)")
    logging.getLogger("msal.application").warning("msal says hi (test)")
    out, err = capfd.readouterr()
    assert "failed (test)" not in err + out and "msal says hi" not in err + out
    for h in logging.getLogger("azure").handlers:
        h.flush()
    text = path.read_text()
    assert "DefaultAzureCredential failed (test)" in text and "msal says hi (test)" in text


# -- sign-in ------------------------------------------------------------------------------------
def test_silent_sign_in_with_environment_credentials(fake):
    from aitk.providers.azure import auth

    cred = auth.credential()
    who = auth.identity(cred)
    assert who.source == "environment" and who.tenant_id == fake.tenant and who.app_id


def test_device_code_sign_in_is_drawn_by_the_caller_and_not_persisted(fake):
    from aitk.providers.azure import auth, config

    shown = []
    try:
        who = auth.login(device_code=True, prompt=lambda uri, code, exp: shown.append((uri, code)),
                         tenant=fake.tenant)
        assert shown == [("https://microsoft.com/devicelogin", "FAKE-CODE")]
        assert who.user == "ada@contoso.example" and who.source.endswith("(this session)")
        assert auth.session_only()
        assert not config.auth_record_path().exists()  # no consent, nothing written but the choice
        assert config.load_settings()["auth"]["remember"] is False
    finally:
        auth.logout()
    assert not auth.session_only()


LOGIN_PROBE = r"""
import json, os, sys
from aitk.core.errors import AitkError
from aitk.providers.azure import auth
from aitk.providers.azure.config import Endpoints
if sys.argv[1] == "login":
    try:
        who = auth.login(device_code=True, prompt=lambda *a: None, remember=True,
                         allow_unencrypted=sys.argv[2] == "1", tenant=os.environ["FAKE_TENANT"])
        print(json.dumps({"user": who.user, "source": who.source}))
    except AitkError as e:
        print(json.dumps({"error": str(e)}))
else:
    chain = auth.SilentChain()
    try:
        chain.get_token(Endpoints.from_env().arm_scope)
        print(json.dumps({"used": chain.used}))
    except Exception as e:
        print(json.dumps({"error": type(e).__name__}))
"""


def test_remembered_sign_in_needs_consent_and_then_works_in_other_processes(fake, tmp_path):
    """What a background watcher needs: a device-code sign-in persisted only with the user's consent."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_CLIENT") and k != "AZURE_TENANT_ID"}
    env.update(HOME=str(tmp_path / "home"), AITK_CONFIG_DIR=str(tmp_path / "cfg"), FAKE_TENANT=fake.tenant)

    def probe(*args):
        out = subprocess.run([sys.executable, "-c", LOGIN_PROBE, *args], env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0 and out.stderr == "", out.stderr  # azure.* logging never reaches the terminal
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert probe("silent") == {"error": "CredentialUnavailableError"}  # not signed in anywhere
    first = probe("login", "0")  # consent to a cache, but not to an unencrypted one
    if "error" in first:  # no keyring on this machine: refused, and told how to consent
        assert "keyring" in first["error"] and "--allow-unencrypted" in first["error"]
        assert probe("silent") == {"error": "CredentialUnavailableError"}
        assert probe("login", "1")["source"] == "device-code sign-in (remembered)"
    assert probe("silent") == {"used": "saved device-code sign-in"}  # another process, silently
    record = (tmp_path / "cfg" / "azure-auth-record.json").read_text()
    assert "ada@contoso.example" in record and "token" not in record.lower()


def test_after_a_remembered_sign_in_doctor_and_the_status_bar_say_signed_in(fake, tmp_path, monkeypatch):
    """One sign-in check (core.azure_signin) for doctor, the app's status bar and the back end."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_CLIENT") and k != "AZURE_TENANT_ID"}
    env.update(HOME=str(tmp_path / "home"), AITK_CONFIG_DIR=str(tmp_path / "cfg"), FAKE_TENANT=fake.tenant,
               AZURE_CONFIG_DIR=str(tmp_path / "no-az-cli"))

    def run(*args):
        out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode in (0, 1), out.stderr
        return out.stdout

    def doctor_azure() -> list[dict]:
        report = json.loads(run("-m", "aitk.cli.main", "doctor", "--quick", "--json"))
        return [f for f in report["findings"] if f["area"] == "azure"]

    assert [f["title"] for f in doctor_azure()] in (["Not signed in to Azure"],
                                                    ["Azure CLI installed but not signed in"])
    first = json.loads(run("-c", LOGIN_PROBE, "login", "0").strip().splitlines()[-1])
    if "error" in first:  # no keyring here: the consent to an unencrypted cache file
        assert json.loads(run("-c", LOGIN_PROBE, "login", "1").strip().splitlines()[-1])["user"]
    found = doctor_azure()
    assert [(f["level"], f["title"]) for f in found] == [
        ("ok", "Azure: signed in as ada@contoso.example (remembered device-code sign-in)")]
    assert json.loads(run("-c", LOGIN_PROBE, "silent").strip().splitlines()[-1]) == {"used": "saved device-code sign-in"}

    from aitk.tui import testing
    from aitk.tui.app import AitkApp
    from aitk.tui.config import Config

    for key in ("AITK_CONFIG_DIR", "AZURE_CONFIG_DIR", "HOME"):
        monkeypatch.setenv(key, env[key])
    for key in [k for k in os.environ if k.startswith("AZURE_CLIENT") or k == "AZURE_TENANT_ID"]:
        monkeypatch.delenv(key)

    @testing.sync
    async def status_bar() -> str:
        app = AitkApp(device=testing.DEVICE, azure=None, config=Config(), clock=lambda: testing.FIXED_NOW)
        async with app.run_test(size=(100, 24)) as pilot:
            status = app.query_one("#status")
            await testing.until(pilot, lambda: "Azure" in testing.text_of(status.render())
                                and "CPU" in testing.text_of(status.render()), what="device and azure state")
            await pilot.pause(0.1)
            return testing.text_of(status.render())

    assert "Azure: ada@contoso.example" in status_bar()


# -- provisioning -------------------------------------------------------------------------------
def test_provision_creates_everything_once_then_changes_nothing(fake, project):
    from aitk.providers.azure import config
    from aitk.providers.azure.provision import provision

    cfg = config.load_infra(project.root)
    data = json.loads(config.infra_path(project.root).read_text())
    assert data["RESOURCE_GROUP_NAME"] == RG and data["ACA_JOB_NAME"] == cfg.job
    assert data["SUBSCRIPTION_ID"] == fake.subscription and data["FILE_SHARE_NAME"] == "aitkshare"
    env = fake._get(fake._rid(RG, f"Microsoft.App/managedEnvironments/{cfg.environment}"))
    assert {"name": "gpu-a100", "workloadProfileType": "Consumption-GPU-NC24-A100"} in env["properties"]["workloadProfiles"]
    assert env["properties"]["appLogsConfiguration"]["logAnalyticsConfiguration"]["customerId"] == cfg.workspace_id
    job = fake._get(fake._rid(RG, f"Microsoft.App/jobs/{cfg.job}"))["properties"]
    assert job["workloadProfileName"] == "gpu-a100"
    assert job["configuration"]["triggerType"] == "Manual" and job["configuration"]["replicaRetryLimit"] == 0
    assert job["configuration"]["replicaTimeout"] == 1800
    c = job["template"]["containers"][0]
    assert c["image"] == "registry.example/aitk-train:test" and c["command"][:2] == ["/bin/bash", "-c"]
    assert c["volumeMounts"] == [{"volumeName": "share", "mountPath": "/mount"}]
    assert job["template"]["volumes"][0]["storageName"] == cfg.environment_storage

    before = len(fake.mutations())
    _, steps, _ = provision(ctx_for(fake), project.root, cfg)
    assert [s.state for s in steps] == ["exists"] * 7
    assert fake.mutations()[before:] == []  # a rerun only reads


def test_provision_dry_run_and_unavailable_gpu_region_create_nothing(fake, tmp_path):
    from aitk.providers.azure.provision import plan_config, provision

    before = len(fake.mutations())
    cfg = plan_config(subscription_id=fake.subscription, resource_group="rg-dry", location="westus3", gpu="t4",
                      image=None, timeout_s=None, existing=None)
    _, steps, _ = provision(ctx_for(fake), tmp_path, cfg, dry_run=True)
    assert {s.state for s in steps} == {"would create"} and len(steps) == 7
    assert not (tmp_path / "infra").exists()
    cfg = plan_config(subscription_id=fake.subscription, resource_group="rg-east", location="eastus", gpu="a100",
                      image=None, timeout_s=None, existing=None)
    with pytest.raises(AitkError) as e:
        provision(ctx_for(fake), tmp_path, cfg)
    assert "eastus does not offer" in str(e.value) and "westus3" in e.value.hint
    assert fake.mutations()[before:] == []


def test_zero_gpu_quota_is_explained_before_anything_is_created(fake, tmp_path):
    from aitk.providers.azure.provision import plan_config, provision

    fake.usages[0]["limit"] = 0
    before = len(fake.mutations())
    cfg = plan_config(subscription_id=fake.subscription, resource_group="rg-noquota", location="westus3", gpu="a100",
                      image=None, timeout_s=None, existing=None)
    with pytest.raises(AitkError) as e:
        provision(ctx_for(fake), tmp_path, cfg)
    assert "quota for Managed Environment Consumption NCA100 Gpus in westus3 is 0" in str(e.value)
    assert "Quotas" in e.value.hint and "support request" in e.value.hint and "--gpu t4" in e.value.hint
    assert fake.mutations()[before:] == []


# -- errors from Azure --------------------------------------------------------------------------
def test_429_and_500_are_retried_with_backoff_and_shown_while_waiting(fake, project):
    from aitk.providers.azure import config

    cfg = config.load_infra(project.root)
    fake.fault("GET", rf"/jobs/{cfg.job}$", 429, code="TooManyRequests", message="slow down",
               headers={"Retry-After": "1"})
    fake.fault("GET", rf"/jobs/{cfg.job}$", 500, code="InternalServerError", message="oops")
    notes = []
    t0 = time.time()
    job = ctx_for(fake, notes).apps.jobs.get(RG, cfg.job)
    assert job.name == cfg.job
    assert time.time() - t0 >= 1.0  # honoured Retry-After
    assert any("HTTP 429" in n and "retrying in 1.0 s" in n for n in notes), notes
    assert any("HTTP 500" in n and "request id" in n for n in notes), notes


def test_expired_token_401_says_sign_in_again(fake, project):
    from aitk.providers.azure import config
    from aitk.providers.azure.secret import secret_names

    cfg = config.load_infra(project.root)
    ctx = ctx_for(fake)
    secret_names(ctx, cfg)  # a token is issued and cached
    fake.expire_tokens()
    with pytest.raises(AitkError) as e:
        secret_names(ctx, cfg)
    assert "ExpiredAuthenticationToken" in str(e.value) and "request id" in str(e.value)
    assert "aitk azure login" in e.value.hint
    assert isinstance(secret_names(ctx_for(fake), cfg), list)  # signed in again: works
    # `run` signed out: said before anything is uploaded or queued.
    from aitk.providers.azure.provider import AzureProvider

    fake.fault("GET", rf"/jobs/{cfg.job}$", 401, code="ExpiredAuthenticationToken", message="The token expired.")
    store = JobStore()
    before = len(store.list())
    with pytest.raises(AitkError) as e:
        AzureProvider(store).submit("finetune", project.root)
    assert "aitk azure login" in e.value.hint and len(store.list()) == before


def test_403_and_409_are_explained(fake, tmp_path):
    from aitk.providers.azure.provision import plan_config, provision

    fake.fault("PUT", r"/resourcegroups/rg-forbidden$", 403, code="AuthorizationFailed",
               message="The client does not have authorization to perform action 'Microsoft.Resources/"
                       "subscriptions/resourcegroups/write'.")
    cfg = plan_config(subscription_id=fake.subscription, resource_group="rg-forbidden", location="westus3",
                      gpu="a100", image=None, timeout_s=None, existing=None)
    with pytest.raises(AitkError) as e:
        provision(ctx_for(fake), tmp_path, cfg)
    assert "AuthorizationFailed" in str(e.value) and "Contributor" in e.value.hint and "rg-forbidden" in e.value.hint
    fake.fault("PUT", r"/storageAccounts/", 409, code="StorageAccountAlreadyTaken",
               message="The storage account named x is already taken.")
    cfg = plan_config(subscription_id=fake.subscription, resource_group="rg-taken", location="westus3",
                      gpu="a100", image=None, timeout_s=None, existing=None)
    with pytest.raises(AitkError) as e:
        provision(ctx_for(fake), tmp_path, cfg)
    assert "StorageAccountAlreadyTaken" in str(e.value) and "name is taken" in e.value.hint


# -- files --------------------------------------------------------------------------------------
def test_upload_sends_only_changed_files(fake, project, tmp_path):
    import shutil

    from aitk.providers.azure import config
    from aitk.providers.azure.run import share_files

    cfg = config.load_infra(project.root)
    copy = tmp_path / "p"
    shutil.copytree(project.root, copy)
    share = share_files(ctx_for(fake), cfg)
    _, first = share.upload_project(copy, "runs/upload-a")
    _, again = share.upload_project(copy, "runs/upload-b")
    assert again.uploaded == 0 and again.reused == first.uploaded + first.reused
    with open(copy / "dataset" / "train.jsonl", "a") as f:
        f.write('{"question": "new?", "answer": "yes"}\n')
    _, changed = share.upload_project(copy, "runs/upload-c")
    assert changed.uploaded == 1 and changed.uploaded_bytes == (copy / "dataset" / "train.jsonl").stat().st_size
    notes = []
    fake.fault("PUT", r"/runs/upload-d/manifest.json$", 500, code="InternalError", message="try again")
    _, retried = share_files(ctx_for(fake, notes), cfg).upload_project(copy, "runs/upload-d")
    assert retried.files == changed.files and any("Azure Files answered HTTP 500" in n for n in notes), notes
    manifest = json.loads(share.read_text("runs/upload-c/manifest.json"))
    assert "dataset/train.jsonl" in manifest["files"] and not any(k.startswith("infra/") for k in manifest["files"])


# -- runs ---------------------------------------------------------------------------------------
def test_secret_then_run_streams_metrics_fetches_adapter_and_never_leaks_the_token(fake, project, session_root):
    from aitk.providers.azure import config
    from aitk.providers.azure.provider import AzureProvider
    from aitk.providers.azure.secret import set_secret

    cfg = config.load_infra(project.root)
    token = "hf_" + uuid.uuid4().hex
    assert set_secret(ctx_for(fake), cfg, "hf-token", token) == "HF_TOKEN"
    job = fake._get(fake._rid(RG, f"Microsoft.App/jobs/{cfg.job}"))["properties"]
    assert {"name": "hf-token", "value": token} in job["configuration"]["secrets"]
    assert {"name": "HF_TOKEN", "secretRef": "hf-token"} in job["template"]["containers"][0]["env"]

    fake.run_env.update({"FAKE_STEPS": "15", "FAKE_SLEEP": "0.08"})
    provider = AzureProvider()
    rec = provider.submit("finetune", project.root)
    assert rec.provider == "azure" and rec.kind == "finetune" and rec.status == "starting"
    final, seen = wait_final(provider, rec.id)
    assert final.status == "succeeded", provider.store.log_path(rec.id).read_text()
    assert "running" in seen
    # Streamed live (not only read back at the end), each line once, metrics as for a local job.
    log = provider.store.log_path(rec.id).read_text()
    assert "lines from Log Analytics" not in log
    lines = console_lines(provider.store, rec.id)
    assert [ln for ln in lines if ln.startswith("training line")] == [f"training line {i}" for i in range(1, 16)]
    assert "[aitk-job] hf token present: yes" in lines  # the container got it as $HF_TOKEN
    m = provider.store.metrics(rec.id)
    assert [x["step"] for x in m] == list(range(10, 160, 10)) and m[-1]["loss"] == 0.2
    out = provider.outputs(rec.id)
    assert (out["adapter"] / "adapter_config.json").is_file() and "container_log" in out
    assert (project.adapter_dir / "adapter_config.json").is_file()  # published: export/chat use it
    exe = fake_execution(fake, final)
    env = {e["name"]: e.get("value") or e.get("secretRef") for e in exe.template["containers"][0]["env"]}
    assert env["AITK_RUN"] == f"runs/{rec.id}" and env["HF_TOKEN"] == "hf-token"
    # The token is in no file the app (or the fake container) wrote.
    leaks = [str(p) for base in (session_root, fake.root, project.root)
             for p in Path(base).rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert leaks == []
    assert token not in json.dumps(provider.store.get(rec.id).to_dict())


def test_log_stream_drop_reconnects_without_losing_or_repeating_lines(fake, project):
    from aitk.providers.azure.provider import AzureProvider

    fake.run_env.update({"FAKE_STEPS": "20", "FAKE_SLEEP": "0.06"})
    fake.stream_drops[:] = [7, 9]
    provider = AzureProvider()
    rec = provider.submit("finetune", project.root)
    final, _ = wait_final(provider, rec.id)
    assert final.status == "succeeded"
    log = provider.store.log_path(rec.id).read_text()
    assert log.count("log stream dropped") >= 2, log
    lines = console_lines(provider.store, rec.id)
    assert [ln for ln in lines if ln.startswith("training line")] == [f"training line {i}" for i in range(1, 21)]
    assert len([x for x in provider.store.metrics(rec.id)]) == 20


def test_gap_after_reconnect_is_filled_from_log_analytics(fake, project):
    from aitk.providers.azure.provider import AzureProvider

    fake.run_env.update({"FAKE_STEPS": "25", "FAKE_SLEEP": "0.1"})
    fake.stream_drops[:] = [6]
    fake.stream_tail_cap = 1  # the replay cannot reach back: a gap
    provider = AzureProvider()
    rec = provider.submit("finetune", project.root)
    final, _ = wait_final(provider, rec.id)
    assert final.status == "succeeded"
    log = provider.store.log_path(rec.id).read_text()
    assert "recovered from Log Analytics" in log, log
    lines = console_lines(provider.store, rec.id)
    assert [ln for ln in lines if ln.startswith("training line")] == [f"training line {i}" for i in range(1, 26)]


def test_failed_execution_fails_the_job_with_the_reason(fake, project):
    from aitk.providers.azure.provider import AzureProvider

    fake.run_env.update({"FAKE_STEPS": "8", "FAKE_SLEEP": "0.02", "FAKE_FAIL": "1"})
    provider = AzureProvider()
    rec = provider.submit("finetune", project.root)
    final, _ = wait_final(provider, rec.id)
    assert final.status == "failed" and "CUDA out of memory" in final.error
    assert fake_execution(fake, final).status == "Failed"
    assert "adapter" not in provider.outputs(rec.id)
    assert len(provider.store.metrics(rec.id)) == 4


def test_stop_stops_the_execution_and_keeps_the_log(fake, project):
    from aitk.providers.azure.provider import AzureProvider

    fake.run_env.update({"FAKE_STEPS": "200", "FAKE_SLEEP": "0.05"})
    provider = AzureProvider()
    rec = provider.submit("finetune", project.root)
    deadline = time.time() + 30
    while provider.status(rec.id).status != "running" or not provider.store.metrics(rec.id):
        assert time.time() < deadline
        time.sleep(0.1)
    stopped = provider.cancel(rec.id)
    assert stopped.status == "cancelled" and stopped.error == "stopped by user"
    exe = fake_execution(fake, stopped)
    deadline = time.time() + 20
    while not exe.done:
        assert time.time() < deadline
        time.sleep(0.1)
    assert exe.status == "Stopped"
    deadline = time.time() + 20
    while "job " + rec.id + " cancelled" not in provider.store.log_path(rec.id).read_text():
        assert time.time() < deadline, provider.store.log_path(rec.id).read_text()
        time.sleep(0.1)
    with pytest.raises(AitkError, match="already cancelled"):
        provider.cancel(rec.id)


def test_watcher_killed_mid_run_is_restarted_and_finishes(fake, project):
    from aitk.core.jobs import pid_alive
    from aitk.providers.azure.provider import AzureProvider

    fake.run_env.update({"FAKE_STEPS": "30", "FAKE_SLEEP": "0.08"})
    provider = AzureProvider()
    rec = provider.submit("finetune", project.root)
    deadline = time.time() + 30
    while len(provider.store.metrics(rec.id)) < 5:
        assert time.time() < deadline
        time.sleep(0.1)
    old = provider.store.get(rec.id).pid
    os.killpg(old, signal.SIGKILL)  # as if the machine's session ended
    while pid_alive(old):
        time.sleep(0.05)
    final, _ = wait_final(provider, rec.id)  # status() notices and starts a new watcher
    assert final.status == "succeeded" and final.pid != old
    lines = console_lines(provider.store, rec.id)
    training = [ln for ln in lines if ln.startswith("training line")]
    assert training == [f"training line {i}" for i in range(1, 31)]
    assert len(provider.store.metrics(rec.id)) == 30


def test_fetch_failure_is_recorded_and_aitk_azure_fetch_recovers(fake, project):
    from aitk.providers.azure.provider import AzureProvider

    fake.run_env.update({"FAKE_STEPS": "3", "FAKE_SLEEP": "0.01"})
    fake.fault("GET", r"/output/adapter", 403, times=1000, code="AuthorizationPermissionMismatch",
               message="This request is not authorized to perform this operation using this permission.")
    provider = AzureProvider()
    rec = provider.submit("finetune", project.root)
    final, _ = wait_final(provider, rec.id)
    assert final.status == "failed" and final.error.startswith("the run succeeded but fetching its outputs failed")
    assert "AuthorizationPermissionMismatch" in final.error and "request id" in final.error
    fake.faults.clear()
    code, out, err = run_cli("azure", "fetch", rec.id)
    assert code == 0, err
    assert "succeeded (outputs fetched)" in out
    assert provider.store.get(rec.id).status == "succeeded" and "adapter" in provider.outputs(rec.id)


def test_finished_execution_log_comes_from_log_analytics(fake, project):
    """A watcher that starts after the execution ended reads the whole log from Log Analytics."""
    from aitk.providers.azure import run as remote
    from aitk.providers.azure.provider import AzureProvider

    fake.run_env.update({"FAKE_STEPS": "5", "FAKE_SLEEP": "0.01"})
    fake.wait_for_stream = False  # nobody follows it while it runs
    store = JobStore()
    rec = remote.submit(store, project.root, spawn=False)
    exe = fake_execution(fake, rec)
    deadline = time.time() + 20
    while not exe.done:
        assert time.time() < deadline
        time.sleep(0.05)
    final, _ = wait_final(AzureProvider(store), rec.id)  # status() starts the watcher now
    assert final.status == "succeeded"
    log = store.log_path(rec.id).read_text()
    assert "lines from Log Analytics" in log and "training line 5" in log
    assert len(store.metrics(rec.id)) == 5


# -- CLI ----------------------------------------------------------------------------------------
def run_cli(*argv) -> tuple[int, str, str]:
    """`aitk azure ...` through the parser `register` builds, with the CLI's error convention."""
    from aitk.cli.azure_cmds import register

    ap = argparse.ArgumentParser(prog="aitk")
    register(ap.add_subparsers(dest="command", required=True))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        args = ap.parse_args(list(argv))
        try:
            code = args.func(args)
        except AitkError as e:
            print(f"error: {e.message}", file=err)
            if e.hint:
                print(f"hint: {e.hint}", file=err)
            code = 2
    return code, out.getvalue(), err.getvalue()


def test_cli_login_whoami_provision_secret_run_status_logs_fetch(fake, project, monkeypatch):
    code, out, err = run_cli("azure", "login", "--subscription", fake.subscription, "--location", "westus3")
    assert code == 0, err
    assert "via environment" in out and fake.subscription in out
    code, out, _ = run_cli("azure", "whoami", "--list")
    assert code == 0 and "Fake Subscription" in out and "location       westus3" in out
    code, out, _ = run_cli("azure", "provision", "-P", str(project.root), "--dry-run")
    assert code == 0 and "nothing changed" in out and out.count("exists") == 7
    monkeypatch.setenv("MY_HF", "hf_cli_" + uuid.uuid4().hex)
    code, out, _ = run_cli("azure", "secret", "set", "hf-token", "--from-env", "MY_HF", "-P", str(project.root))
    assert code == 0 and "$HF_TOKEN" in out and os.environ["MY_HF"] not in out
    code, out, _ = run_cli("azure", "secret", "list", "-P", str(project.root))
    assert "hf-token  -> $HF_TOKEN" in out
    code, out, _ = run_cli("azure", "secret", "set", "HF_TOKEN", "--from-env", "MY_HF", "-P", str(project.root))
    assert code == 2 and "lowercase" in out + _
    fake.run_env.update({"FAKE_STEPS": "6", "FAKE_SLEEP": "0.05"})
    code, out, err = run_cli("azure", "run", "-P", str(project.root))
    assert code == 0, out + err
    assert "step 60/60  loss 0.5" in out and "succeeded" in out.splitlines()[-2]
    assert out.splitlines()[-1].startswith("next: `aitk export")
    job_id = out.split()[1]
    code, out, _ = run_cli("azure", "status", job_id)  # = `aitk jobs show`, with the live execution
    assert code == 0 and "Succeeded" in out and "adapter" in out and "loss 3 -> 0.5 over 60 steps" in out
    assert "share " in out and "execution" in out
    code, out, _ = run_cli("azure", "status")
    assert job_id in out
    code, out, _ = run_cli("azure", "logs", job_id)
    assert "training line 6" in out
    code, out, _ = run_cli("azure", "logs", job_id, "--source", "log-analytics")
    assert code == 0 and out.splitlines()[0].startswith("[aitk-job]") and "training line 6" in out
    code, out, _ = run_cli("azure", "fetch", job_id)
    assert code == 0 and "adapter" in out and "metrics" in out
    code, out, err = run_cli("azure", "stop", job_id)
    assert code == 2 and "already succeeded" in err


def test_cli_run_without_provisioning_says_what_to_do(fake, tmp_path, tiny_test_model):
    from aitk.core import tiny
    from aitk.core.project import create_project

    proj = create_project(tmp_path / "unprovisioned", tiny_spec=tiny.TEST)
    code, _, err = run_cli("azure", "run", "-P", str(proj.root))
    assert code == 2 and "no Azure resources yet" in err and "aitk azure provision" in err


def test_the_app_fine_tunes_an_azure_target_project_on_azure(fake, project, monkeypatch):
    """From the Projects pane, `f` on a project whose target is Azure starts the run there (the
    export and evaluation children wait here), and the Jobs pane follows its streamed log."""
    import asyncio

    from aitk.core.project import load_project, regenerate
    from aitk.tui import testing
    from aitk.tui.testing import until

    proj = load_project(project.root)
    proj.settings.target.where = "azure"
    regenerate(proj)
    monkeypatch.setenv("AITK_PROJECTS_DIR", str(project.root.parent))
    fake.run_env.update({"FAKE_STEPS": "6", "FAKE_SLEEP": "0.05"})
    store = JobStore()
    before = {r.id for r in store.list()}
    root = str(project.root.resolve())

    async def drive():
        app = testing.fixture_app(start_pane="projects")
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane("projects")
            await until(pilot, lambda: pane is not None and pane.selected == root, what="project listed")
            await pilot.press("f")
            await until(pilot, lambda: any(r.id not in before and r.kind == "finetune" for r in store.list()),
                        timeout=30, what="a fine-tune job")
            new = [r for r in store.list() if r.id not in before]
            ft = next(r for r in new if r.kind == "finetune")
            await pilot.press("f3")
            jobs = app.pane("jobs")
            await until(pilot, lambda: jobs is not None and jobs.selected == ft.id, what="the job selected")
            await until(pilot, lambda: store.get(ft.id).is_final, timeout=60, what="the Azure run finished")
            await until(pilot, lambda: any("training line 6" in line for line in jobs.query_one("#job-log").lines),
                        timeout=10, what="the streamed log in the pane")
            return [r for r in store.list() if r.id not in before], store.get(ft.id)

    try:
        new, ft = asyncio.run(drive())
    finally:  # the module's other tests use this project as it was
        proj.settings.target.where = "local"
        regenerate(proj)
    assert ft.provider == "azure" and ft.status == "succeeded", store.log_path(ft.id).read_text()[-2000:]
    assert ft.params.get("execution") in fake.executions
    children = [r for r in new if r.parent == ft.id]
    assert {r.kind for r in children} == {"export", "evaluate"} and all(r.provider == "local" for r in children)
    for r in children:  # they would now export the fetched adapter: not needed here
        if not store.get(r.id).is_final:
            from aitk.providers.local import LocalProvider

            LocalProvider(store).cancel(r.id)
