"""Job secrets: `hf-token` (and others) stored on the Container Apps job, exposed to the container as
environment variables through `secretRef`.

The value goes from the user (a hidden prompt, stdin or an environment variable) straight into
the PATCH request body; it is never written to a project file, a job record or a log, and Azure
never returns it on a GET. Secret names must be lowercase (`[a-z0-9.-]`), hence `hf-token` ->
`HF_TOKEN`.
"""

from __future__ import annotations

import re

from ...core.errors import AitkError
from .clients import AzureContext
from .config import InfraConfig
from .errors import azure_call

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")
ENV_FOR = {"hf-token": "HF_TOKEN"}


def env_name(secret_name: str) -> str:
    return ENV_FOR.get(secret_name) or re.sub(r"[^A-Z0-9_]", "_", secret_name.upper())


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise AitkError(f"{name!r} is not a valid Container Apps secret name",
                        "use lowercase letters, digits, '-' and '.', e.g. hf-token")


def set_secret(ctx: AzureContext, cfg: InfraConfig, name: str, value: str) -> str:
    """Add or replace the job secret `name` and expose it as an env var; returns that env var's name."""
    from azure.mgmt.appcontainers import models as am

    check_name(name)
    value = value.strip("\r\n")
    if not value:
        raise AitkError(f"empty value for secret {name}", "pass the value on stdin or with --from-env VAR")
    env = env_name(name)
    rg, job_name = cfg.resource_group, cfg.job
    scope = f"job {job_name} in resource group {rg}"
    with azure_call(f"read Container Apps job {job_name}", scope=scope):
        job = ctx.apps.jobs.get(rg, job_name)
        current = {s.name: s.value for s in ctx.apps.jobs.list_secrets(rg, job_name).value}
    current[name] = value
    configuration = job.properties.configuration
    configuration.secrets = [am.Secret(name=n, value=v) for n, v in current.items()]
    template = job.properties.template
    for c in template.containers or []:
        c.env = [e for e in (c.env or []) if e.name != env] + [am.EnvironmentVar(name=env, secret_ref=name)]
    patch = am.JobPatchProperties(properties=am.JobPatchPropertiesProperties(configuration=configuration,
                                                                            template=template))
    with azure_call(f"set secret {name} on job {job_name}", scope=scope):
        ctx.apps.jobs.begin_update(rg, job_name, patch).result()
    return env


def secret_names(ctx: AzureContext, cfg: InfraConfig) -> list[str]:
    with azure_call(f"read Container Apps job {cfg.job}", scope=f"resource group {cfg.resource_group}"):
        job = ctx.apps.jobs.get(cfg.resource_group, cfg.job)
    return [s.name for s in (job.properties.configuration.secrets or [])]
