"""What exists is reused, against the fake Azure: an environment found by its GPU profile's type
(not our name), one without a GPU profile gets the serverless one added, and an AI Toolkit
project's provisioned resources (its Bicep's names, a dedicated `NC24-A100` profile named `GPU`)
are adopted instead of duplicated."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from test_azure import _reset_fake, ctx_for, fake, project, run_cli, wait_final  # noqa: F401 (fixtures)

TEMPLATES = Path("/work/shared/aitk-templates")


def arm_put(fake, rid: str, body: dict) -> dict:
    """A PUT through the real SDK pipeline (what the portal or Bicep would have done)."""
    return ctx_for(fake).arm_request("PUT", rid, "2025-01-01", body)


def make_environment(fake, rg: str, name: str, profiles: list[dict], *, location="westus3") -> str:
    sub = fake.subscription
    arm_put(fake, f"/subscriptions/{sub}/resourcegroups/{rg}", {"location": location})
    rid = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/managedEnvironments/{name}"
    arm_put(fake, rid, {"location": location, "properties": {"workloadProfiles": profiles}})
    return rid


def envs_in(fake, rg: str) -> list[str]:
    prefix = f"/subscriptions/{fake.subscription}/resourcegroups/{rg}/providers/microsoft.app/managedenvironments/"
    return sorted(r["name"] for k, r in fake.resources.items() if k.startswith(prefix) and k.count("/") == prefix.count("/"))


def test_an_environment_with_a_differently_named_serverless_gpu_profile_is_reused(fake, tmp_path):
    from aitk.providers.azure import config
    from aitk.providers.azure.provision import plan_config, provision

    rg = "rg-theirs"
    make_environment(fake, rg, "team-env", [{"name": "Consumption", "workloadProfileType": "Consumption"},
                                            {"name": "a100-pool", "workloadProfileType": "Consumption-GPU-NC24-A100"}])
    cfg = plan_config(subscription_id=fake.subscription, resource_group=rg, location="westus3", gpu="a100",
                      image=None, timeout_s=None, existing=None)
    cfg, steps, _ = provision(ctx_for(fake), tmp_path, cfg)
    assert envs_in(fake, rg) == ["team-env"]  # no second environment
    env_step = next(s for s in steps if s.resource == "Container Apps environment")
    assert (env_step.state, env_step.name, env_step.detail) == ("exists", "team-env", "GPU profile a100-pool")
    job = fake._get(fake._rid(rg, f"Microsoft.App/jobs/{cfg.job}"))["properties"]
    assert job["workloadProfileName"] == "a100-pool"  # the job runs on their profile (else: 400)
    saved = config.load_infra(tmp_path)
    assert saved.environment == "team-env" and saved.profile_name == "a100-pool"


def test_an_environment_without_a_gpu_profile_gets_the_serverless_one_added(fake, tmp_path):
    from aitk.providers.azure import config
    from aitk.providers.azure.provision import plan_config, provision

    rg = "rg-cpu-only"
    names = config.default_names(config.name_suffix(fake.subscription, rg))
    make_environment(fake, rg, names["environment"], [{"name": "Consumption", "workloadProfileType": "Consumption"}])
    cfg = plan_config(subscription_id=fake.subscription, resource_group=rg, location="westus3", gpu="t4",
                      image=None, timeout_s=None, existing=None)
    _, steps, _ = provision(ctx_for(fake), tmp_path, cfg)
    env_step = next(s for s in steps if s.resource == "Container Apps environment")
    assert env_step.state == "updated" and "Consumption-GPU-NC8as-T4" in env_step.detail
    env = fake._get(fake._rid(rg, f"Microsoft.App/managedEnvironments/{names['environment']}"))
    assert {"name": "gpu-t4", "workloadProfileType": "Consumption-GPU-NC8as-T4"} in env["properties"]["workloadProfiles"]


def ai_toolkit_resources(fake, rg: str, suffix: str) -> dict:
    """What AI Toolkit's Bicep provisions (infra/provision/finetuning.bicep), made through ARM."""
    sub = fake.subscription
    base = f"/subscriptions/{sub}/resourceGroups/{rg}/providers"
    names = {"storage": f"aistorage{suffix}", "share": "aifileshare", "env": f"aienv{suffix}",
             "job": f"aiacajob{suffix}", "logs": f"ailog{suffix}"}
    arm_put(fake, f"/subscriptions/{sub}/resourcegroups/{rg}", {"location": "westus3"})
    arm_put(fake, f"{base}/Microsoft.Storage/storageAccounts/{names['storage']}",
            {"location": "westus3", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}})
    arm_put(fake, f"{base}/Microsoft.Storage/storageAccounts/{names['storage']}/fileServices/default/shares/"
                  f"{names['share']}", {"properties": {"shareQuota": 1024}})
    ws = arm_put(fake, f"{base}/Microsoft.OperationalInsights/workspaces/{names['logs']}",
                 {"location": "westus3", "properties": {"sku": {"name": "PerGB2018"}}})
    customer = ws.get("properties", {}).get("customerId") or fake._get(
        f"{base}/Microsoft.OperationalInsights/workspaces/{names['logs']}")["properties"]["customerId"]
    env_rid = f"{base}/Microsoft.App/managedEnvironments/{names['env']}"
    arm_put(fake, env_rid, {"location": "westus3", "properties": {
        "appLogsConfiguration": {"destination": "log-analytics", "logAnalyticsConfiguration": {
            "customerId": customer, "sharedKey": "k"}},
        "workloadProfiles": [{"name": "Consumption", "workloadProfileType": "Consumption"},
                             {"name": "GPU", "workloadProfileType": "NC24-A100", "minimumCount": 0,
                              "maximumCount": 1}]}})
    arm_put(fake, f"{env_rid}/storages/{names['share']}", {"properties": {"azureFile": {
        "accountName": names["storage"], "accountKey": "k", "shareName": names["share"], "accessMode": "ReadWrite"}}})
    arm_put(fake, f"{base}/Microsoft.App/jobs/{names['job']}", {"location": "westus3", "properties": {
        "environmentId": env_rid, "workloadProfileName": "GPU",
        "configuration": {"triggerType": "Manual", "replicaTimeout": 10800, "replicaRetryLimit": 0,
                          "manualTriggerConfig": {"replicaCompletionCount": 1, "parallelism": 1}},
        "template": {"containers": [{"name": "aiacajob", "image": "docker.io/pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime",
                                     "command": ["/bin/bash", "-c", "echo AI Toolkit's own command"],
                                     "resources": {"cpu": 24, "memory": "220Gi"},
                                     "volumeMounts": [{"volumeName": "azure-file-volume", "mountPath": "/mount"}]}],
                     "volumes": [{"name": "azure-file-volume", "storageType": "AzureFile",
                                  "storageName": names["share"]}]}}})
    return names


def fill_ai_toolkit_infra(folder: Path, fake, rg: str, names: dict) -> dict:
    """AI Toolkit's own infra/finetuning.config.json from the template, filled as its provisioning does."""
    template = TEMPLATES / "Phi-3-mini-4k-instruct" / "infra"
    (folder / "infra").mkdir(parents=True, exist_ok=True)
    for f in template.glob("*.json"):
        shutil.copyfile(f, folder / "infra" / f.name)
    data = json.loads((folder / "infra" / "finetuning.config.json").read_text())
    data.update(SUBSCRIPTION_ID=fake.subscription, RESOURCE_GROUP_NAME=rg, STORAGE_ACCOUNT_NAME=names["storage"],
                FILE_SHARE_NAME=names["share"], ACA_JOB_NAME=names["job"])
    (folder / "infra" / "finetuning.config.json").write_text(json.dumps(data, indent=2))
    return data


@pytest.mark.skipif(not TEMPLATES.is_dir(), reason="AI Toolkit templates not on this machine")
def test_an_ai_toolkit_projects_provisioned_resources_are_reused_not_duplicated(fake, tmp_path, tiny_test_model):
    from aitk.core import tiny
    from aitk.core.jobs import JobStore
    from aitk.core.project import create_project
    from aitk.providers.azure import config, run as remote

    rg, suffix = "rg-ai-toolkit", "k3x9q"
    names = ai_toolkit_resources(fake, rg, suffix)
    proj = create_project(tmp_path / "from-ai-toolkit", tiny_spec=tiny.TEST)
    theirs = fill_ai_toolkit_infra(proj.root, fake, rg, names)
    before = len(fake.mutations())

    code, out, err = run_cli("azure", "provision", "--project", str(proj.root))
    assert code == 0, err
    assert "0 created" in out, out
    assert fake.mutations()[before:] == []  # nothing made, nothing changed
    assert envs_in(fake, rg) == [names["env"]]
    data = json.loads(config.infra_path(proj.root).read_text())
    assert data["COMMANDS"] == theirs["COMMANDS"]  # AI Toolkit's own command line is left as it wrote it
    assert (data["ACA_ENVIRONMENT_NAME"], data["WORKLOAD_PROFILE_NAME"]) == (names["env"], "GPU")
    assert data["ACA_ENVIRONMENT_STORAGE_NAME"] == names["share"] and data["LOG_ANALYTICS_WORKSPACE_NAME"] == names["logs"]
    assert data["LOCATION"] == "westus3" and data["GPU"] == "a100"

    # A run goes to their job, on their share; the job's template gets our command and mount.
    fake.run_env.update({"FAKE_STEPS": "3", "FAKE_SLEEP": "0.01"})
    store = JobStore()
    rec = remote.submit(store, proj.root, spawn=False)
    exe = fake.executions[rec.params["execution"]]
    assert exe.job == names["job"]
    job = fake._get(fake._rid(rg, f"Microsoft.App/jobs/{names['job']}"))["properties"]
    assert job["workloadProfileName"] == "GPU"
    c = job["template"]["containers"][0]
    assert c["name"] == "aiacajob" and config.ENTRY in c["command"][-1]
    assert c["volumeMounts"] == [{"volumeName": "share", "mountPath": "/mount"}]
    deadline = time.time() + 30
    while not exe.done:
        assert time.time() < deadline
        time.sleep(0.05)
    assert exe.status == "Succeeded", "\n".join(t for _, t in exe.lines)
    share = fake.share_root / names["storage"] / names["share"]
    assert (share / "runs" / rec.id / "output" / "adapter" / "adapter_config.json").is_file()
    from aitk.providers.azure import watch

    watch.run(rec.id)  # the real watcher settles it: fetched from their share into the job
    assert store.get(rec.id).status == "succeeded"
    assert envs_in(fake, rg) == [names["env"]]


def test_a_private_image_gets_its_registry_wired_into_the_job(fake, tmp_path):
    """ACR through a managed identity, or a username whose password is a job secret (never in files)."""
    from aitk.providers.azure.provision import plan_config, provision

    rg = "rg-private-image"
    cfg = plan_config(subscription_id=fake.subscription, resource_group=rg, location="westus3", gpu="a100",
                      image="myacr.azurecr.io/aitk-train:1", timeout_s=None, existing=None,
                      registry_server="myacr.azurecr.io", registry_username="puller")
    polls_before = sum(1 for r in fake.requests if "/Fake.Operations/" in r[1])
    cfg, _, _ = provision(ctx_for(fake), tmp_path, cfg, registry_password="s3cret-pull")
    # The environment went through its provisioning states (several polls) before the job could use it.
    assert sum(1 for r in fake.requests if "/Fake.Operations/" in r[1]) - polls_before >= len(fake.env_states) + 1
    job = fake._get(fake._rid(rg, f"Microsoft.App/jobs/{cfg.job}"))["properties"]
    assert job["configuration"]["registries"] == [{"server": "myacr.azurecr.io", "username": "puller",
                                                   "passwordSecretRef": "registry-password"}]
    assert {"name": "registry-password", "value": "s3cret-pull"} in job["configuration"]["secrets"]
    assert "s3cret-pull" not in (tmp_path / "infra" / "finetuning.config.json").read_text()

    rg2 = "rg-private-acr"
    ident = f"/subscriptions/{fake.subscription}/resourceGroups/{rg2}/providers/Microsoft.ManagedIdentity/" \
            "userAssignedIdentities/aitk-pull"
    cfg2 = plan_config(subscription_id=fake.subscription, resource_group=rg2, location="westus3", gpu="a100",
                       image="myacr.azurecr.io/aitk-train:1", timeout_s=None, existing=None,
                       registry_server="myacr.azurecr.io", registry_identity=ident)
    cfg2, _, _ = provision(ctx_for(fake), tmp_path / "acr", cfg2)
    res = fake._get(fake._rid(rg2, f"Microsoft.App/jobs/{cfg2.job}"))
    assert res["properties"]["configuration"]["registries"] == [{"server": "myacr.azurecr.io", "identity": ident}]
    assert res["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {ident: {}}}


def test_job_names_are_checked_as_the_service_checks_them(fake, tmp_path):
    """Length, a leading digit and `--` are refused before any call, in the service's terms; the fake
    refuses the same names (so a name our check let through would fail there too)."""
    from azure.core.exceptions import HttpResponseError

    from aitk.core.errors import AitkError
    from aitk.providers.azure import config

    for bad in ("1job", "my--job", "a" * 33, "Job", "job-", "j"):
        with pytest.raises(AitkError, match="not a valid Container Apps job name"):
            config.check_app_name(bad, "Container Apps job")
    config.check_app_name("a" * 32, "Container Apps job")
    config.check_app_name("ft-2", "Container Apps job")
    ctx = ctx_for(fake)
    env_rid = make_environment(fake, "rg-names", "env-names", [{"name": "Consumption", "workloadProfileType": "Consumption"}])
    for bad in ("1job", "my--job"):
        with pytest.raises(HttpResponseError) as e:
            ctx.arm_request("PUT", f"/subscriptions/{fake.subscription}/resourceGroups/rg-names/providers/"
                                   f"Microsoft.App/jobs/{bad}", "2025-01-01",
                            {"location": "westus3", "properties": {"environmentId": env_rid, "configuration": {
                                "triggerType": "Manual", "replicaTimeout": 60}, "template": {"containers": []}}})
        assert e.value.status_code == 400 and "cannot have '--'" in str(e.value)


@pytest.mark.skipif(not TEMPLATES.is_dir(), reason="AI Toolkit templates not on this machine")
def test_ai_toolkits_inference_file_with_a_bare_fqdn_names_a_usable_endpoint(fake, tmp_path):
    from aitk.providers.azure import config
    from aitk.providers.azure.inference import endpoint, existing_app_name

    names = {"storage": "aistoragez1", "share": "aifileshare", "job": "aiacajobz1"}
    fill_ai_toolkit_infra(tmp_path, fake, "rg-ai-inf", names)
    p = tmp_path / "infra" / "inference.config.json"
    data = json.loads(p.read_text())
    data.update(SUBSCRIPTION_ID=fake.subscription, RESOURCE_GROUP_NAME="rg-ai-inf", STORAGE_ACCOUNT_NAME="aistoragez1",
                FILE_SHARE_NAME="aifileshare", ACA_APP_NAME="aiacaappz1",
                ACA_APP_ENDPOINT="aiacaappz1.happyhill-1234.westus3.azurecontainerapps.io")
    p.write_text(json.dumps(data))
    got = endpoint(None, tmp_path)
    assert got["ACA_APP_ENDPOINT"] == "https://aiacaappz1.happyhill-1234.westus3.azurecontainerapps.io"
    assert got["OPENAI_BASE_URL"] == got["ACA_APP_ENDPOINT"] + "/v1"
    cfg = config.InfraConfig(subscription_id=fake.subscription, resource_group="rg-ai-inf", location="westus3",
                             storage_account="aistoragez1", file_share="aifileshare", job="aiacajobz1",
                             environment="e", environment_storage="s", workspace="w")
    assert existing_app_name(tmp_path, cfg) == "aiacaappz1"  # a deploy updates their app, not a second one
