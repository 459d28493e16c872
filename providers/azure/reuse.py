"""Finding what already exists, so nothing is made twice.

- An environment is recognised by what it offers, not by our name: one in the resource group with a
  serverless GPU profile of the chosen type (under any profile name), else one with a dedicated
  profile carrying that GPU (AI Toolkit's Bicep makes `NC24-A100` named `GPU`). An environment
  without either gets the serverless profile added (serverless profiles can be added later;
  only dedicated ones must exist at creation), instead of a hint to delete it.
- An AI Toolkit project's filled `infra/finetuning.config.json` (SUBSCRIPTION_ID, RESOURCE_GROUP_NAME,
  STORAGE_ACCOUNT_NAME, FILE_SHARE_NAME, ACA_JOB_NAME) is adopted: the job leads to its environment
  and GPU profile, the environment to the share's registration and the Log Analytics workspace.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.errors import AitkError
from . import config
from .config import InfraConfig
from .errors import azure_call


@dataclass
class EnvChoice:
    env: object  # the SDK's ManagedEnvironment
    profile: str | None  # the profile name to run on; None: it must be added (serverless)
    dedicated: bool = False


def _profiles(env) -> list:
    return list((env.properties.workload_profiles if env.properties else None) or [])


def gpu_profile(env, g: config.Gpu) -> tuple[str | None, bool]:
    """(profile name, dedicated) of the environment's profile with this GPU; serverless preferred."""
    profiles = _profiles(env)
    for p in profiles:
        if p.workload_profile_type == g.profile_type:
            return p.name, False
    for p in profiles:
        if p.workload_profile_type in g.dedicated_types:
            return p.name, True
    return None, False


def choose_environment(ctx, cfg: InfraConfig, named) -> EnvChoice | None:
    """The environment to use: the named one if it exists, else one in the group with this GPU."""
    g = config.gpu(cfg.gpu)
    if named is not None:
        name, dedicated = gpu_profile(named, g)
        return EnvChoice(named, name, dedicated)
    with azure_call(f"list the Container Apps environments in {cfg.resource_group}", scope=f"resource group {cfg.resource_group}"):
        envs = list(ctx.apps.managed_environments.list_by_resource_group(cfg.resource_group))
    same_place = [e for e in envs if not cfg.location or (e.location or "").lower().replace(" ", "") == cfg.location]
    ranked = sorted(((gpu_profile(e, g), e) for e in same_place), key=lambda t: (t[0][0] is None, t[0][1]))
    for (name, dedicated), env in ranked:
        if name is not None:
            return EnvChoice(env, name, dedicated)
    return None


def adopt_environment(ctx, cfg: InfraConfig, choice: EnvChoice) -> None:
    """Point `cfg` at the chosen environment: its name, region, profile, workspace and share storage."""
    env = choice.env
    g = config.gpu(cfg.gpu)
    cfg.environment = env.name
    cfg.location = cfg.location or (env.location or "").lower().replace(" ", "")
    cfg.workload_profile = choice.profile if choice.profile and choice.profile != g.profile_name else None
    logs = env.properties.app_logs_configuration if env.properties else None
    la = getattr(logs, "log_analytics_configuration", None)
    if la is not None and la.customer_id:
        cfg.workspace_id = la.customer_id
        with azure_call(f"list the Log Analytics workspaces in {cfg.resource_group}", scope=f"resource group {cfg.resource_group}"):
            for ws in ctx.loganalytics.workspaces.list_by_resource_group(cfg.resource_group):
                if ws.customer_id == la.customer_id:
                    cfg.workspace = ws.name
    with azure_call(f"list the storages of environment {env.name}", scope=f"resource group {cfg.resource_group}"):
        storages = list(ctx.apps.managed_environments_storages.list(cfg.resource_group, env.name).value or [])
    files = [s for s in storages if s.properties and s.properties.azure_file]
    match = [s for s in files if s.properties.azure_file.share_name == cfg.file_share
             and s.properties.azure_file.account_name == cfg.storage_account]
    if match:
        cfg.environment_storage = match[0].name


def add_serverless_profile(ctx, cfg: InfraConfig, env):
    """Serverless GPU profiles can be added to a running environment (dedicated ones cannot)."""
    g = config.gpu(cfg.gpu)
    profiles = [{"name": p.name, "workloadProfileType": p.workload_profile_type,
                 **({"minimumCount": p.minimum_count, "maximumCount": p.maximum_count}
                    if p.minimum_count is not None else {})} for p in _profiles(env)]
    if not any(p["workloadProfileType"] == "Consumption" for p in profiles):
        profiles.insert(0, {"name": "Consumption", "workloadProfileType": "Consumption"})
    profiles.append({"name": g.profile_name, "workloadProfileType": g.profile_type})
    with azure_call(f"add the {g.profile_type} profile to environment {env.name}", scope=f"resource group {cfg.resource_group}"):
        return ctx.apps.managed_environments.begin_update(
            cfg.resource_group, env.name, {"properties": {"workloadProfiles": profiles}}).result()


def resolve(ctx, project_root, cfg: InfraConfig) -> InfraConfig:
    """`cfg` as it is, or, read from a file only AI Toolkit filled, the resources that file leads to."""
    if not cfg.foreign:
        return cfg
    import json

    return adopt_ai_toolkit(ctx, json.loads(config.infra_path(project_root).read_text(encoding="utf-8")))


def adopt_ai_toolkit(ctx, data: dict) -> InfraConfig:
    """An InfraConfig naming the resources an AI Toolkit project provisioned (found from its job)."""
    from azure.core.exceptions import ResourceNotFoundError

    sub, rg, job_name = data["SUBSCRIPTION_ID"], data["RESOURCE_GROUP_NAME"], data["ACA_JOB_NAME"]
    scope = f"resource group {rg} (subscription {sub})"
    with azure_call(f"read Container Apps job {job_name}", scope=scope):
        try:
            job = ctx.apps.jobs.get(rg, job_name)
        except ResourceNotFoundError:
            raise AitkError(f"the project's infra/finetuning.config.json names job {job_name}, which does not exist "
                            f"in {rg}", "provision again in AI Toolkit, or delete the file and run "
                            "`aitk azure provision`") from None
    env_id = job.properties.environment_id
    env_rg, env_name = env_id.split("/resourceGroups/", 1)[1].split("/")[0], env_id.rstrip("/").rsplit("/", 1)[1]
    with azure_call(f"read Container Apps environment {env_name}", scope=scope):
        env = ctx.apps.managed_environments.get(env_rg, env_name)
    profile = job.properties.workload_profile_name
    types = {p.name: p.workload_profile_type for p in _profiles(env)}
    g = config.gpu_of_profile_type(types.get(profile, "")) or config.gpu(config.DEFAULT_GPU)
    cfg = InfraConfig(subscription_id=sub, resource_group=rg, location=(job.location or "").lower().replace(" ", ""),
                      storage_account=data["STORAGE_ACCOUNT_NAME"], file_share=data["FILE_SHARE_NAME"], job=job_name,
                      environment=env_name, environment_storage="", workspace="", gpu=g.key,
                      timeout_s=int(job.properties.configuration.replica_timeout or config.DEFAULT_TIMEOUT_S),
                      adopted=True)
    adopt_environment(ctx, cfg, EnvChoice(env, profile, profile in types and types[profile] in g.dedicated_types))
    cfg.workload_profile = profile if profile != g.profile_name else None
    if not cfg.environment_storage:
        raise AitkError(f"environment {env_name} has no storage registration for share {cfg.file_share}",
                        "provision again in AI Toolkit, or run `aitk azure provision` in a new resource group")
    if not cfg.workspace:
        cfg.workspace = "-"  # in another group or none: logs still come from the live stream
    return cfg
