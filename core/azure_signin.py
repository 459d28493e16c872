"""Is there an Azure sign-in? The one check doctor, the app's status bar and the Azure back end use.

Found cheaply (no Azure SDK import, no network, no subprocess), in the order the back end's
silent sign-in tries them (SOURCES): a service principal in the environment (AZURE_CLIENT_ID and
AZURE_TENANT_ID with a secret or certificate), workload identity (the same with
AZURE_FEDERATED_TOKEN_FILE), a managed identity whose endpoint the platform announces
(IDENTITY_ENDPOINT / MSI_ENDPOINT; a VM's metadata service needs a network probe, so only the back
end sees it), an `az login` profile (`azureProfile.json` under AZURE_CONFIG_DIR or ~/.azure) with a
subscription, an `azd auth login` (its auth folder under AZD_CONFIG_DIR or ~/.azd), then a device-code
sign-in the user chose to remember (`aitk azure login --remember`: its non-secret authentication
record plus the consent in azure.json). Tokens may still have expired: the Azure commands find that
out when they run.

The file names live here, below providers/, so the back end that writes them and the checks that
read them share one definition.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import paths

SECRET_VARS = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH")
ENVIRONMENT, WORKLOAD, MANAGED = "environment", "workload identity", "managed identity"
AZ_CLI, AZD, REMEMBERED = "Azure CLI", "Azure Developer CLI", "remembered device-code sign-in"
SOURCES = (ENVIRONMENT, WORKLOAD, MANAGED, AZ_CLI, AZD, REMEMBERED)  # the silent chain's order


def managed_identity_endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """The managed identity endpoint App Service, Functions, Container Apps or Arc announce."""
    env = os.environ if env is None else env
    return env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT") or None


def azd_signed_in(env: Mapping[str, str] | None = None, home: Path | None = None) -> bool:
    env = os.environ if env is None else env
    root = Path(env["AZD_CONFIG_DIR"]).expanduser() if env.get("AZD_CONFIG_DIR") else (home or Path.home()) / ".azd"
    auth = root / "auth"
    return auth.is_dir() and any(auth.iterdir())


def settings_path() -> Path:
    """aitk's Azure choices (tenant, subscription, sign-in consent); never a secret."""
    return paths.config_dir() / "azure.json"


def auth_record_path() -> Path:
    """The remembered device-code sign-in's AuthenticationRecord (account and tenant, no token)."""
    return paths.config_dir() / "azure-auth-record.json"


def load_settings() -> dict:
    try:
        data = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remembered_record() -> dict | None:
    """The remembered device-code sign-in's record, when the user consented and it is readable."""
    auth = load_settings().get("auth")
    if not isinstance(auth, dict) or not auth.get("remember"):
        return None
    try:
        record = json.loads(auth_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("tenantId") else None


def az_config_dir(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    env = os.environ if env is None else env
    value = env.get("AZURE_CONFIG_DIR")
    return Path(value).expanduser() if value else (home or Path.home()) / ".azure"


@dataclass(frozen=True)
class AzProfile:
    """What `az login` left in azureProfile.json: the subscriptions it knows, and its default."""

    path: Path
    subscriptions: list[dict]

    @property
    def default(self) -> dict | None:
        return next((s for s in self.subscriptions if s.get("isDefault")), self.subscriptions[0]
                    if self.subscriptions else None)


def az_profile(env: Mapping[str, str] | None = None, home: Path | None = None) -> AzProfile | None:
    path = az_config_dir(env, home) / "azureProfile.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # the CLI writes a BOM
    except (OSError, ValueError):
        return None
    subs = data.get("subscriptions") if isinstance(data, dict) else None
    if not isinstance(subs, list):
        return None
    return AzProfile(path, [s for s in subs if isinstance(s, dict)])


@dataclass(frozen=True)
class AzureSignIn:
    signed_in: bool
    who: str = ""
    source: str = ""  # one of SOURCES
    secret_kind: str | None = None  # service principal: which variable holds its credential
    client_id: str | None = None
    profile: AzProfile | None = None  # the az CLI's, whichever source signed in
    az: str | None = None  # the az executable, when installed
    also: tuple[str, ...] = field(default=())  # further sources that are present too

    @property
    def label(self) -> str:
        return f"Azure: {self.who}" if self.signed_in else "Azure: not signed in"


def detect(env: Mapping[str, str] | None = None, home: Path | None = None) -> AzureSignIn:
    env = os.environ if env is None else env
    found: list[tuple[str, str]] = []
    secret_kind = next((v for v in SECRET_VARS if env.get(v)), None)
    client_id = env.get("AZURE_CLIENT_ID")
    if client_id and env.get("AZURE_TENANT_ID") and secret_kind:
        found.append((ENVIRONMENT, f"app {client_id[:8]}…"))
    if client_id and env.get("AZURE_TENANT_ID") and env.get("AZURE_FEDERATED_TOKEN_FILE"):
        found.append((WORKLOAD, f"app {client_id[:8]}… (federated)"))
        secret_kind = secret_kind or "AZURE_FEDERATED_TOKEN_FILE"
    if managed_identity_endpoint(env):
        found.append((MANAGED, "managed identity" + (f" {client_id[:8]}…" if client_id else "")))
    profile = az_profile(env, home)
    default = profile.default if profile else None
    if default is not None:
        user = default.get("user") if isinstance(default.get("user"), dict) else {}
        found.append((AZ_CLI, str(user.get("name") or default.get("name") or "az login")))
    if azd_signed_in(env, home):
        found.append((AZD, "azd auth login"))
    record = remembered_record()
    if record is not None:
        found.append((REMEMBERED, str(record.get("username") or f"tenant {record['tenantId'][:8]}…")))
    az = shutil.which("az")
    if not found:
        return AzureSignIn(False, profile=profile, az=az, secret_kind=secret_kind, client_id=client_id)
    (source, who), rest = found[0], tuple(s for s, _ in found[1:])
    return AzureSignIn(True, who, source, secret_kind, client_id, profile, az, rest)
