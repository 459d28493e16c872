"""Create (only what is missing of) the Azure resources a remote fine-tune needs.

Resource group -> storage account + Azure Files share -> Log Analytics workspace -> Container Apps
environment with a serverless GPU workload profile and the share mounted -> the fine-tuning job
(manual trigger, a timeout, no retries, the training image and its command). Each resource is
read first and created only when absent, so a rerun changes nothing that exists (it only GETs).

Before anything is created, the GPU profile is checked against what the region offers and what
quota the subscription has, and a missing quota is explained (what to request, where) instead of
failing half-way. The names land in the project's infra/finetuning.config.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import AitkError
from . import config, quota, reuse
from .clients import AzureContext
from .config import InfraConfig
from .errors import azure_call

CONTAINER = "trainer"
VOLUME = "share"


@dataclass
class Step:
    resource: str
    name: str
    state: str  # exists | created | would create
    detail: str = ""

    def line(self) -> str:
        return f"{self.state:12} {self.resource:26} {self.name}" + (f"  ({self.detail})" if self.detail else "")


def plan_config(*, subscription_id: str, resource_group: str, location: str | None, gpu: str | None,
                image: str | None, timeout_s: int | None, existing: InfraConfig | None,
                storage_account: str | None = None, job: str | None = None, registry_server: str | None = None,
                registry_username: str | None = None, registry_identity: str | None = None) -> InfraConfig:
    """Names and settings: the project's existing file wins, then options, then derived defaults."""
    if existing and (existing.subscription_id != subscription_id or existing.resource_group != resource_group):
        existing = None  # another subscription/group: a new set of resources
    names = config.default_names(config.name_suffix(subscription_id, resource_group))
    base = existing or InfraConfig(subscription_id=subscription_id, resource_group=resource_group, location="",
                                   storage_account=names["storage_account"], file_share=names["file_share"],
                                   job=names["job"], environment=names["environment"],
                                   environment_storage=names["environment_storage"], workspace=names["workspace"])
    if location:
        base.location = location.lower().replace(" ", "")
    if gpu:
        base.gpu = config.gpu(gpu).key
    if image:
        base.image = image
    if timeout_s:
        base.timeout_s = int(timeout_s)
    if storage_account:
        base.storage_account = storage_account
    if job:
        base.job = job
    if registry_server:
        base.registry_server = registry_server.strip().removeprefix("https://").rstrip("/")
        base.registry_username, base.registry_identity = registry_username, registry_identity
        if not (registry_username or registry_identity):
            raise AitkError(f"--registry-server {registry_server} needs a way to sign in to it",
                            "add --registry-identity (ACR: 'system' or a user-assigned identity's id) or "
                            "--registry-username")
    config.check_names(base)
    return base


def job_template(cfg: InfraConfig, existing=None) -> dict:
    """The job's own template (REST shape): image, command, env and the share's mount, all of it.

    Runs start it as it is (see run.py); env entries the job already has beyond ours (secret refs
    such as HF_TOKEN from `aitk azure secret set`) are kept.
    """
    g = config.gpu(cfg.gpu)
    env = [{"name": "AITK_MOUNT", "value": config.MOUNT}]
    name = CONTAINER
    if existing is not None and existing.properties and existing.properties.template:
        old = (existing.properties.template.containers or [None])[0]
        if old is not None:
            name = old.name or CONTAINER
            for e in old.env or []:
                if e.name not in ("AITK_MOUNT", "AITK_RUN"):
                    env.append({"name": e.name, **({"secretRef": e.secret_ref} if e.secret_ref else {"value": e.value})})
    return {"containers": [{"name": name, "image": cfg.image, "command": ["/bin/bash", "-c", "; ".join(cfg.commands)],
                            "env": env, "resources": {"cpu": g.cpu, "memory": g.memory},
                            "volumeMounts": [{"volumeName": VOLUME, "mountPath": config.MOUNT}]}],
            "volumes": [{"name": VOLUME, "storageType": "AzureFile", "storageName": cfg.environment_storage}]}


def job_body(cfg: InfraConfig, env_id: str, registry_password: str | None = None) -> dict:
    conf = {"triggerType": "Manual", "replicaTimeout": cfg.timeout_s, "replicaRetryLimit": 0,
            "manualTriggerConfig": {"replicaCompletionCount": 1, "parallelism": 1}}
    if cfg.registries():
        conf["registries"] = cfg.registries()
    if registry_password:
        conf["secrets"] = [{"name": config.REGISTRY_PASSWORD_SECRET, "value": registry_password}]
    body = {"location": cfg.location, "tags": {"created-by": "aitk"}, "properties": {
        "environmentId": env_id, "workloadProfileName": cfg.profile_name, "configuration": conf,
        "template": job_template(cfg)}}
    if cfg.identity():
        body["identity"] = cfg.identity()
    return body


def provision(ctx: AzureContext, project_root: Path, cfg: InfraConfig, *, dry_run: bool = False,
              progress: Callable[[str], None] | None = None, registry_password: str | None = None) -> tuple[InfraConfig, list[Step], list[str]]:
    """Make every resource in `cfg` exist; write the project's infra file (not in a dry run)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.mgmt.appcontainers import models as am
    from azure.mgmt.loganalytics import models as lm
    from azure.mgmt.storage import models as sm

    say = progress or (lambda _: None)
    steps: list[Step] = []
    cfg = reuse.resolve(ctx, project_root, cfg)  # an AI Toolkit project: its resources, not new ones
    if not cfg.location:
        raise AitkError("no Azure region chosen", "pass --location (e.g. westus3, swedencentral, australiaeast)")
    g = config.gpu(cfg.gpu)
    sub, rg, loc = cfg.subscription_id, cfg.resource_group, cfg.location
    rg_scope = f"resource group {rg} (subscription {sub})"
    ctxkw = {"scope": rg_scope, "gpu_label": g.quota_label, "location": loc, "subscription": sub}

    def step(resource, name, state, detail=""):
        s = Step(resource, name, state, detail)
        steps.append(s)
        say(s.line())

    def exists(read, what):
        with azure_call(f"read {what}", **ctxkw):
            try:
                return read()
            except ResourceNotFoundError:
                return None

    def ensure(what, name, found, create, detail="", found_detail=""):
        """`found` (read already) as it is; else, unless a dry run, what `create()` makes. One step each."""
        if found is not None:
            step(what, name, "exists", found_detail)
            return found
        if dry_run:
            step(what, name, "would create", detail)
            return None
        with azure_call(f"create {what} {name}", **ctxkw):
            made = create()
        step(what, name, "created", detail)
        return made

    # 1. Is the environment going to be created? Then its GPU and quota must be there first.
    with azure_call(f"read Container Apps environment {cfg.environment}", **ctxkw):
        try:
            rg_exists = ctx.resources.resource_groups.check_existence(rg)
        except ResourceNotFoundError:
            rg_exists = False
    env = None
    add_profile = False
    if rg_exists:
        named = exists(lambda: ctx.apps.managed_environments.get(rg, cfg.environment),
                       f"Container Apps environment {cfg.environment}")
        choice = reuse.choose_environment(ctx, cfg, named)
        if choice is not None:
            env = choice.env
            reuse.adopt_environment(ctx, cfg, choice)
            add_profile = choice.profile is None
    warnings = quota.check(ctx, cfg, strict=False)[1] if env is None or add_profile else []

    # 2. Resource group.
    if rg_exists:
        step("resource group", rg, "exists")
    elif dry_run:
        step("resource group", rg, "would create", loc)
    else:
        with azure_call(f"create resource group {rg}", **ctxkw):
            ctx.resources.resource_groups.create_or_update(rg, {"location": loc, "tags": {"created-by": "aitk"}})
        step("resource group", rg, "created", loc)

    # 3. Storage account + share.
    acct = exists(lambda: ctx.storage.storage_accounts.get_properties(rg, cfg.storage_account),
                  f"storage account {cfg.storage_account}") if rg_exists else None
    acct = ensure("storage account", cfg.storage_account, acct, lambda: ctx.storage.storage_accounts.begin_create(
        rg, cfg.storage_account, sm.StorageAccountCreateParameters(
            sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location=loc, tags={"created-by": "aitk"},
            properties=sm.StorageAccountPropertiesCreateParameters(
                minimum_tls_version="TLS1_2", allow_blob_public_access=False, large_file_shares_state="Enabled")),
    ).result(), "Standard_LRS, StorageV2")
    share = exists(lambda: ctx.storage.file_shares.get(rg, cfg.storage_account, cfg.file_share),
                   f"file share {cfg.file_share}") if acct is not None and rg_exists else None
    ensure("file share", cfg.file_share, share, lambda: ctx.storage.file_shares.create(
        rg, cfg.storage_account, cfg.file_share, sm.FileShare(file_share_properties=sm.FileShareProperties(
            share_quota=1024))), "1 TiB quota")

    # 4. Log Analytics workspace.
    reused_logs = env is not None and cfg.workspace_id and cfg.workspace in ("-", "")
    ws = exists(lambda: ctx.loganalytics.workspaces.get(rg, cfg.workspace),
                f"Log Analytics workspace {cfg.workspace}") if rg_exists and not reused_logs else None
    if reused_logs:
        step("Log Analytics workspace", cfg.workspace_id, "exists", "the environment's, outside this group")
    else:
        ws = ensure("Log Analytics workspace", cfg.workspace, ws, lambda: ctx.loganalytics.workspaces.begin_create_or_update(
        rg, cfg.workspace, lm.Workspace(location=loc, tags={"created-by": "aitk"}, properties=lm.WorkspaceProperties(
            sku=lm.WorkspaceSku(name="PerGB2018"), retention_in_days=30))).result(), "PerGB2018, 30 days")
    if ws is not None and not reused_logs:
        cfg.workspace_id = ws.properties.customer_id

    # 5. Container Apps environment with the GPU profile.
    if env is not None and add_profile:
        if dry_run:
            step("Container Apps environment", cfg.environment, "would add", f"serverless profile {g.profile_type}")
        else:
            env = reuse.add_serverless_profile(ctx, cfg, env)
            step("Container Apps environment", cfg.environment, "updated", f"added serverless profile {g.profile_type}")
    elif env is not None:
        step("Container Apps environment", cfg.environment, "exists", f"GPU profile {cfg.profile_name}")
    elif dry_run:
        step("Container Apps environment", cfg.environment, "would create", f"GPU profile {g.profile_type}")
    else:
        with azure_call(f"read the keys of workspace {cfg.workspace}", **ctxkw):
            la_key = ctx.loganalytics.shared_keys.get_shared_keys(rg, cfg.workspace).primary_shared_key
        env_model = am.ManagedEnvironment(location=loc, tags={"created-by": "aitk"}, properties=am.ManagedEnvironmentProperties(
            app_logs_configuration=am.AppLogsConfiguration(
                destination="log-analytics",
                log_analytics_configuration=am.LogAnalyticsConfiguration(customer_id=cfg.workspace_id,
                                                                         shared_key=la_key)),
            workload_profiles=[am.WorkloadProfile(name="Consumption", workload_profile_type="Consumption"),
                               am.WorkloadProfile(name=g.profile_name, workload_profile_type=g.profile_type)],
            zone_redundant=False))
        with azure_call(f"create Container Apps environment {cfg.environment}", **ctxkw):
            env = ctx.apps.managed_environments.begin_create_or_update(rg, cfg.environment, env_model).result()
        step("Container Apps environment", cfg.environment, "created", f"GPU profile {g.profile_type}")

    # 6. The share, registered in the environment.
    env_storage = exists(lambda: ctx.apps.managed_environments_storages.get(rg, cfg.environment, cfg.environment_storage),
                         f"environment storage {cfg.environment_storage}") if env is not None and rg_exists else None
    def register_share():
        with azure_call(f"read the keys of storage account {cfg.storage_account}", **ctxkw):
            key = ctx.storage.storage_accounts.list_keys(rg, cfg.storage_account).keys_property[0].value
        with azure_call(f"register the share in environment {cfg.environment}", **ctxkw):
            return ctx.apps.managed_environments_storages.create_or_update(
                rg, cfg.environment, cfg.environment_storage, am.ManagedEnvironmentStorage(
                    properties=am.ManagedEnvironmentStorageProperties(azure_file=am.AzureFileProperties(
                        account_name=cfg.storage_account, account_key=key, share_name=cfg.file_share,
                        access_mode="ReadWrite"))))

    ensure("environment storage", cfg.environment_storage, env_storage, register_share,
           f"Azure Files {cfg.file_share}")

    # 7. The fine-tuning job.
    job = exists(lambda: ctx.apps.jobs.get(rg, cfg.job), f"Container Apps job {cfg.job}") \
        if env is not None and rg_exists else None
    def create_job():
        return ctx.apps.jobs.begin_create_or_update(rg, cfg.job, job_body(cfg, env.id, registry_password)).result()

    ensure("Container Apps job", cfg.job, job, create_job, f"manual, {cfg.timeout_s} s timeout, image {cfg.image}",
           f"image {job.properties.template.containers[0].image}"
           if job and job.properties and job.properties.template and job.properties.template.containers else "")

    if not dry_run:
        path = config.save_infra(project_root, cfg)
        say(f"wrote {path}")
    return cfg, steps, warnings
