"""Where Azure is (endpoints), what the user chose (subscription, group, location, GPU), and the
project's `infra/finetuning.config.json` (AI Toolkit's keys, so its projects and ours interoperate).

Endpoints come from the environment so sovereign clouds and the test suite's local server work the
same way as the public cloud: AITK_AZURE_ARM_ENDPOINT, AZURE_AUTHORITY_HOST (azure-identity's own),
AITK_AZURE_LOGS_ENDPOINT, AITK_AZURE_CA_BUNDLE (a PEM to trust instead of the system store).
Nothing here is secret: keys and tokens are never written to these files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...core import azure_signin
from ...core.errors import AitkError

PUBLIC_ARM = "https://management.azure.com"
PUBLIC_AUTHORITY = "https://login.microsoftonline.com"
PUBLIC_LOGS = "https://api.loganalytics.io"
KNOWN_AUTHORITIES = ("login.microsoftonline.com", "login.chinacloudapi.cn", "login.microsoftonline.us")
# Azure CLI's public client id: what DeviceCodeCredential uses by default, consented in every tenant.
DEVICE_CODE_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"


@dataclass(frozen=True)
class Endpoints:
    arm: str = PUBLIC_ARM
    authority: str = PUBLIC_AUTHORITY
    logs: str = PUBLIC_LOGS
    verify: str | bool = True  # True: system CAs; a path: that PEM bundle
    arm_scope: str = "https://management.azure.com/.default"
    logs_audience: str = PUBLIC_LOGS
    lro_poll_s: float = 5.0  # long-running ARM operations
    poll_s: float = 10.0  # the watcher's execution status poll
    retry_backoff: float = 0.8
    retry_total: int = 6

    @classmethod
    def from_env(cls) -> "Endpoints":
        env = os.environ
        authority = env.get("AZURE_AUTHORITY_HOST") or PUBLIC_AUTHORITY
        if not authority.startswith("http"):
            authority = "https://" + authority
        return cls(
            arm=(env.get("AITK_AZURE_ARM_ENDPOINT") or PUBLIC_ARM).rstrip("/"),
            authority=authority.rstrip("/"),
            logs=(env.get("AITK_AZURE_LOGS_ENDPOINT") or PUBLIC_LOGS).rstrip("/"),
            verify=env.get("AITK_AZURE_CA_BUNDLE") or True,
            arm_scope=env.get("AITK_AZURE_ARM_SCOPE") or "https://management.azure.com/.default",
            lro_poll_s=float(env.get("AITK_AZURE_LRO_POLL_S") or 5),
            poll_s=float(env.get("AITK_AZURE_POLL_S") or 10),
            retry_backoff=float(env.get("AITK_AZURE_RETRY_BACKOFF") or 0.8),
        )

    @property
    def custom_authority(self) -> bool:
        """An authority MSAL cannot validate through instance discovery (a private/test one)."""
        host = self.authority.split("//", 1)[-1].split("/", 1)[0]
        return host not in KNOWN_AUTHORITIES


# -- GPUs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gpu:
    key: str
    profile_type: str  # the serverless workload profile type
    profile_name: str  # its name inside our environment
    cpu: float
    memory: str
    serverless_quota: str  # the usages API's name for the serverless (Consumption) GPU quota
    dedicated_quota: str  # ... and for dedicated GPU workload profiles (a separate quota, often 0)
    dedicated_types: tuple[str, ...]  # dedicated profile types with this GPU (AI Toolkit's Bicep: NC24-A100)
    quota_label: str  # how the portal names the serverless quota

    @property
    def kind_re(self) -> str:
        return "A100" if self.key == "a100" else "T4"


GPUS = {
    "a100": Gpu("a100", "Consumption-GPU-NC24-A100", "gpu-a100", 24.0, "220Gi", "SubscriptionConsumptionNCA100Gpus",
                "SubscriptionNCA100Gpus", ("NC24-A100", "NC48-A100", "NC96-A100"),
                "Managed Environment Consumption NCA100 Gpus"),
    "t4": Gpu("t4", "Consumption-GPU-NC8as-T4", "gpu-t4", 8.0, "56Gi", "SubscriptionConsumptionNCT4Gpus",
              "SubscriptionNCT4Gpus", (), "Managed Environment Consumption T4 Gpus"),
}


def gpu_of_profile_type(profile_type: str) -> Gpu | None:
    """Which of our GPUs a workload profile type (serverless or dedicated) carries."""
    for g in GPUS.values():
        if profile_type == g.profile_type or profile_type in g.dedicated_types:
            return g
    return None
DEFAULT_GPU = "a100"
# Regions documented with serverless GPUs (the API is asked first; this only words the hint).
GPU_REGIONS_HINT = ("westus3", "australiaeast", "swedencentral")


def gpu(key: str) -> Gpu:
    try:
        return GPUS[key.lower()]
    except KeyError:
        raise AitkError(f"unknown GPU {key!r}", f"choose one of: {', '.join(GPUS)}") from None


# -- user settings ------------------------------------------------------------------------------
# One definition of where sign-in state lives, shared with the checks in core (doctor, status bar).
settings_path = azure_signin.settings_path
auth_record_path = azure_signin.auth_record_path
load_settings = azure_signin.load_settings


def save_settings(data: dict) -> None:
    p = settings_path()
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def update_settings(**values) -> dict:
    data = load_settings()
    data.update({k: v for k, v in values.items() if v is not None})
    save_settings(data)
    return data


# -- project infra config -----------------------------------------------------------------------
INFRA_FILE = Path("infra") / "finetuning.config.json"
AITK_KEYS = ("SUBSCRIPTION_ID", "RESOURCE_GROUP_NAME", "STORAGE_ACCOUNT_NAME", "FILE_SHARE_NAME", "ACA_JOB_NAME",
             "COMMANDS")
MOUNT = "/mount"
ENTRY = f"{MOUNT}/aitk/entry.py"  # put on the share by each run (providers/azure/bundle.py)
# A public CUDA PyTorch image, as AI Toolkit's own jobs use: no registry, nothing to build. aitk and
# its locked dependencies are installed from the share at job start (pip's cache on the share).
DEFAULT_IMAGE = "docker.io/pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"
# Defaults of earlier versions (an image that was never published): such files move to the new one.
RETIRED_IMAGES = ("ghcr.io/aitk-tui/aitk-train:0.1.0",)
RETIRED_COMMANDS = (["cd /mount", "python3 /opt/aitk/entry.py"],)
DEFAULT_TIMEOUT_S = 3 * 3600
# How long an execution may stay Processing/Unknown (no replica running) before the watcher gives up:
# a GPU replica plus a multi-GB image pull takes minutes, not the better part of an hour.
DEFAULT_STUCK_S = 45 * 60
# The first line turns a missing share mount into one clear log line instead of "can't open file".
DEFAULT_COMMANDS = [f"test -f {ENTRY} || {{ echo '[aitk-job] failed: the file share is not mounted at {MOUNT}'; exit 3; }}",
                    f"cd {MOUNT}", f"python3 {ENTRY}"]
REGISTRY_PASSWORD_SECRET = "registry-password"


@dataclass
class InfraConfig:
    """AI Toolkit's six keys plus the names it leaves implicit (ours; extra keys it ignores)."""

    subscription_id: str
    resource_group: str
    location: str
    storage_account: str
    file_share: str
    job: str
    environment: str
    environment_storage: str
    workspace: str
    workspace_id: str | None = None  # Log Analytics customerId, for queries
    gpu: str = DEFAULT_GPU
    image: str = DEFAULT_IMAGE
    timeout_s: int = DEFAULT_TIMEOUT_S
    stuck_s: int = DEFAULT_STUCK_S  # STUCK_TIMEOUT_SECONDS; AITK_AZURE_STUCK_S overrides (tests)
    commands: list[str] = field(default_factory=lambda: list(DEFAULT_COMMANDS))
    # A private image's registry: login server, and either a username (its password is the job
    # secret `registry-password`) or a managed identity ("system" or a user-assigned identity's id).
    registry_server: str | None = None
    registry_username: str | None = None
    registry_identity: str | None = None
    workload_profile: str | None = None  # the environment's GPU profile name, when it is not ours (reused)
    price_per_hour: float | None = None  # GPU_PRICE_PER_HOUR: your price, over estimate.PRICES
    ask_above_usd: float | None = None  # ASK_ABOVE_USD: `aitk azure run` asks before a run expected above it
    adopted: bool = False  # resources AI Toolkit provisioned: its COMMANDS stay as it wrote them
    foreign: bool = False  # read from a file only AI Toolkit filled: names beyond its keys still unknown

    def to_json(self) -> dict:
        data = {
            "SUBSCRIPTION_ID": self.subscription_id,
            "RESOURCE_GROUP_NAME": self.resource_group,
            "STORAGE_ACCOUNT_NAME": self.storage_account,
            "FILE_SHARE_NAME": self.file_share,
            "ACA_JOB_NAME": self.job,
            "COMMANDS": self.commands,
            "LOCATION": self.location,
            "ACA_ENVIRONMENT_NAME": self.environment,
            "ACA_ENVIRONMENT_STORAGE_NAME": self.environment_storage,
            "LOG_ANALYTICS_WORKSPACE_NAME": self.workspace,
            "LOG_ANALYTICS_WORKSPACE_ID": self.workspace_id,
            "GPU": self.gpu,
            "IMAGE": self.image,
            "TIMEOUT_SECONDS": self.timeout_s,
            "STUCK_TIMEOUT_SECONDS": self.stuck_s,
            "REGISTRY_SERVER": self.registry_server,
            "REGISTRY_USERNAME": self.registry_username,
            "REGISTRY_IDENTITY": self.registry_identity,
            "WORKLOAD_PROFILE_NAME": self.workload_profile,
            "ADOPTED_FROM": "ai-toolkit" if self.adopted else None,
            "GPU_PRICE_PER_HOUR": self.price_per_hour,
            "ASK_ABOVE_USD": self.ask_above_usd,
        }
        if self.adopted:
            del data["COMMANDS"]  # AI Toolkit's own command line for its job; ours is the default
        return data

    @property
    def profile_name(self) -> str:
        """The workload profile the job and a GPU app run on: the environment's own when reused."""
        return self.workload_profile or gpu(self.gpu).profile_name

    def registries(self) -> list[dict]:
        """`configuration.registries` for the job and the inference app (REST shape); [] for public images."""
        if not self.registry_server:
            return []
        if self.registry_identity:
            return [{"server": self.registry_server, "identity": self.registry_identity}]
        return [{"server": self.registry_server, "username": self.registry_username,
                 "passwordSecretRef": REGISTRY_PASSWORD_SECRET}]

    def identity(self) -> dict | None:
        """The managed identity a registry pull through `identity` needs on the job/app (REST shape)."""
        ident = self.registry_identity
        if not ident:
            return None
        if ident.lower() == "system":
            return {"type": "SystemAssigned"}
        return {"type": "UserAssigned", "userAssignedIdentities": {ident: {}}}

    @classmethod
    def from_json(cls, data: dict) -> "InfraConfig":
        missing = [k for k in AITK_KEYS[:5] if not data.get(k)]
        if missing:
            raise AitkError(f"{INFRA_FILE} lacks {', '.join(missing)}", "run `aitk azure provision`")
        suffix = name_suffix(data["SUBSCRIPTION_ID"], data["RESOURCE_GROUP_NAME"])
        adopted = data.get("ADOPTED_FROM") == "ai-toolkit"
        foreign = bool(data.get("ACA_JOB_NAME")) and not data.get("ACA_ENVIRONMENT_NAME") and not adopted
        image, commands = data.get("IMAGE") or DEFAULT_IMAGE, list(data.get("COMMANDS") or DEFAULT_COMMANDS)
        if adopted or foreign:
            commands = list(DEFAULT_COMMANDS)
        if image in RETIRED_IMAGES and commands in [list(c) for c in RETIRED_COMMANDS]:
            image, commands = DEFAULT_IMAGE, list(DEFAULT_COMMANDS)
        defaults = default_names(suffix)
        return cls(
            subscription_id=data["SUBSCRIPTION_ID"], resource_group=data["RESOURCE_GROUP_NAME"],
            location=data.get("LOCATION") or "", storage_account=data["STORAGE_ACCOUNT_NAME"],
            file_share=data["FILE_SHARE_NAME"], job=data["ACA_JOB_NAME"],
            environment=data.get("ACA_ENVIRONMENT_NAME") or defaults["environment"],
            environment_storage=data.get("ACA_ENVIRONMENT_STORAGE_NAME") or defaults["environment_storage"],
            workspace=data.get("LOG_ANALYTICS_WORKSPACE_NAME") or defaults["workspace"],
            workspace_id=data.get("LOG_ANALYTICS_WORKSPACE_ID"),
            gpu=data.get("GPU") or DEFAULT_GPU, image=image,
            timeout_s=int(data.get("TIMEOUT_SECONDS") or DEFAULT_TIMEOUT_S),
            stuck_s=int(data.get("STUCK_TIMEOUT_SECONDS") or DEFAULT_STUCK_S),
            commands=commands, registry_server=data.get("REGISTRY_SERVER"),
            registry_username=data.get("REGISTRY_USERNAME"), registry_identity=data.get("REGISTRY_IDENTITY"),
            workload_profile=data.get("WORKLOAD_PROFILE_NAME"), adopted=adopted, foreign=foreign,
            price_per_hour=_number(data.get("GPU_PRICE_PER_HOUR")), ask_above_usd=_number(data.get("ASK_ABOVE_USD")),
        )


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AitkError(f"{INFRA_FILE}: {value!r} is not a number", "write a plain number, e.g. 3.5") from None


def infra_path(project_root: Path) -> Path:
    return Path(project_root) / INFRA_FILE


def load_infra(project_root: Path, *, required: bool = True) -> InfraConfig | None:
    p = infra_path(project_root)
    if not p.is_file():
        if required:
            raise AitkError(f"{p} does not exist: this project has no Azure resources yet",
                            "run `aitk azure provision` in the project first")
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise AitkError(f"{p} is not valid JSON: {e}", "fix it, or delete it and run `aitk azure provision`") from None
    if not data.get("SUBSCRIPTION_ID"):  # AI Toolkit's template before provisioning: all null
        if required:
            raise AitkError(f"{p} has no resources filled in yet", "run `aitk azure provision` in the project")
        return None
    return InfraConfig.from_json(data)


def save_infra(project_root: Path, cfg: InfraConfig) -> Path:
    p = infra_path(project_root)
    p.parent.mkdir(parents=True, exist_ok=True)
    existing = {}
    if p.is_file():
        try:
            existing = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            existing = {}
    data = {**existing, **cfg.to_json()}
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


# -- names --------------------------------------------------------------------------------------
def name_suffix(subscription_id: str, resource_group: str) -> str:
    """Stable per subscription + group (like Bicep's uniqueString): reruns find the same resources."""
    return hashlib.sha256(f"{subscription_id}/{resource_group}".lower().encode()).hexdigest()[:6]


def default_names(suffix: str) -> dict[str, str]:
    return {
        "storage_account": f"aitkstore{suffix}",  # 3-24 lowercase letters and digits, globally unique
        "file_share": "aitkshare",
        "environment": f"aitk-env-{suffix}",
        "environment_storage": "aitkshare",
        "workspace": f"aitk-logs-{suffix}",
        "job": f"aitk-ft-{suffix}",  # lowercase letters, digits, '-'; at most 32
    }


RG_RE = re.compile(r"^[-\w.()]{1,89}[-\w()]$")


def check_names(cfg: InfraConfig) -> None:
    if not RG_RE.match(cfg.resource_group):
        raise AitkError(f"{cfg.resource_group!r} is not a valid resource group name",
                        "use up to 90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'")
    if not re.fullmatch(r"[a-z0-9]{3,24}", cfg.storage_account):
        raise AitkError(f"{cfg.storage_account!r} is not a valid storage account name",
                        "use 3-24 lowercase letters and digits")
    check_app_name(cfg.job, "Container Apps job")


# What the service (and azure-cli's validator) accepts for job and app names.
APP_NAME_RE = re.compile(r"(?!.*--)[a-z][a-z0-9-]{0,30}[a-z0-9]")


def check_app_name(name: str, what: str) -> None:
    if not APP_NAME_RE.fullmatch(name or ""):
        raise AitkError(f"{name!r} is not a valid {what} name",
                        "use 2-32 lowercase letters, digits and '-', starting with a letter, ending with a letter "
                        "or digit, without '--'")
