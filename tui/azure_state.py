"""Whether an Azure sign-in is visible, found cheaply: no Azure SDK import, no network.

Signed in means one of: a service principal / workload identity in the environment (AZURE_CLIENT_ID
with AZURE_TENANT_ID and a secret, certificate or federated token file), or an `az login` profile
(`~/.azure/azureProfile.json`, or under AZURE_CONFIG_DIR) with a subscription. Tokens may still be
expired: the Azure commands find that out when they run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AzureState:
    signed_in: bool
    who: str = ""
    source: str = ""

    @property
    def label(self) -> str:
        return f"Azure: {self.who}" if self.signed_in else "Azure: not signed in"


def detect_azure(env: dict | None = None, home: Path | None = None) -> AzureState:
    env = os.environ if env is None else env
    if env.get("AZURE_CLIENT_ID") and env.get("AZURE_TENANT_ID") and (
        env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH")
        or env.get("AZURE_FEDERATED_TOKEN_FILE")
    ):
        return AzureState(True, f"app {env['AZURE_CLIENT_ID'][:8]}…", "environment")
    config_dir = Path(env["AZURE_CONFIG_DIR"]) if env.get("AZURE_CONFIG_DIR") else (home or Path.home()) / ".azure"
    try:
        profile = json.loads((config_dir / "azureProfile.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return AzureState(False)
    subs = profile.get("subscriptions") if isinstance(profile, dict) else None
    if not subs:
        return AzureState(False)
    chosen = next((s for s in subs if isinstance(s, dict) and s.get("isDefault")), subs[0])
    user = chosen.get("user", {}).get("name") if isinstance(chosen, dict) else None
    return AzureState(True, user or chosen.get("name", "az login"), "az cli")
