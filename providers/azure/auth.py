"""Signing in to Azure without surprises.

Silent first, in this order (core/azure_signin.SOURCES, which doctor and the status bar share): a
service principal in the environment (AZURE_CLIENT_ID + a secret or certificate), workload identity
(AZURE_FEDERATED_TOKEN_FILE: GitHub Actions OIDC, AKS), a managed identity (App Service, Container
Apps, Functions through IDENTITY_ENDPOINT; VMs through IMDS, probed in a fraction of a second), the
Azure CLI (`az login`), the Azure Developer CLI (`azd auth login`), a device-code sign-in the user
chose to remember. When none works, a device-code sign-in: a code and a URL the
caller draws (CLI: two lines; TUI: a dialog), usable over SSH since the browser can be anywhere.

Tokens stay in memory unless the user consents (`--remember`): then MSAL's cache is persisted,
encrypted by the OS keyring, or, with the separate `--allow-unencrypted` consent where no keyring
exists, in a file only the user can read. Only the non-secret AuthenticationRecord (account,
tenant) is written by aitk itself. All `azure.*` and `msal` logging goes to a file, never to the
terminal (it would tear a TUI apart).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ...core import azure_signin, paths
from ...core.errors import AitkError
from . import config
from .config import Endpoints
from .errors import LOGIN_HINT, translate

_LOG_HANDLER: logging.Handler | None = None
_SESSION = None  # a device-code credential signed in this process without a persisted cache
_SESSION_LOCK = threading.Lock()


def log_file() -> Path:
    d = paths.data_dir() / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d / "azure.log"


def setup_logging(level: int = logging.INFO) -> Path:
    """Route `azure.*` and `msal` records to logs/azure.log only (idempotent)."""
    global _LOG_HANDLER
    path = log_file()
    if _LOG_HANDLER is None:
        _LOG_HANDLER = logging.FileHandler(path, encoding="utf-8")
        _LOG_HANDLER.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    for name in ("azure", "msal", "msal_extensions"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if h is not _LOG_HANDLER:
                lg.removeHandler(h)
        if _LOG_HANDLER not in lg.handlers:
            lg.addHandler(_LOG_HANDLER)
        lg.setLevel(level)
        lg.propagate = False
    return path


@dataclass
class Identity:
    """Who a token belongs to (read from its claims; nothing here is secret)."""

    name: str | None
    user: str | None
    tenant_id: str | None
    object_id: str | None
    app_id: str | None
    source: str | None

    @property
    def display(self) -> str:
        who = self.user or (f"application {self.app_id}" if self.app_id else self.object_id or "unknown")
        return f"{who}" + (f" ({self.name})" if self.name and self.name != who else "")

    @classmethod
    def from_token(cls, token: str, source: str | None) -> "Identity":
        claims = _claims(token)
        return cls(name=claims.get("name"),
                   user=claims.get("upn") or claims.get("preferred_username") or claims.get("unique_name"),
                   tenant_id=claims.get("tid"), object_id=claims.get("oid"),
                   app_id=claims.get("appid") if claims.get("idtyp") == "app" or not claims.get("upn") else None,
                   source=source)


def _claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def _identity_kwargs(e: Endpoints) -> dict:
    kw = {"authority": e.authority, "connection_verify": e.verify}
    if e.custom_authority:
        kw["disable_instance_discovery"] = True
    return kw


class SilentChain:
    """Try each silent source in turn; remember which one worked. Never prompts."""

    def __init__(self, endpoints: Endpoints | None = None, tenant: str | None = None):
        setup_logging()  # the credentials log their failures as warnings: to the file, not the terminal
        self.endpoints = endpoints or Endpoints.from_env()
        self.tenant = tenant
        self.used: str | None = None
        self._sources: list | None = None
        self._current = None

    def _build(self) -> list:
        """(name, credential or None, why it is absent) per source, in the one order."""
        from azure.identity import (AzureCliCredential, AzureDeveloperCliCredential, EnvironmentCredential,
                                    ManagedIdentityCredential, WorkloadIdentityCredential)

        e = self.endpoints
        kw = _identity_kwargs(e)
        env = os.environ
        tenant_kw = {"tenant_id": self.tenant} if self.tenant else {}
        sources: list[tuple[str, object | None, str]] = [(azure_signin.ENVIRONMENT, EnvironmentCredential(**kw), "")]
        if env.get("AZURE_FEDERATED_TOKEN_FILE") and env.get("AZURE_CLIENT_ID") and env.get("AZURE_TENANT_ID"):
            sources.append((azure_signin.WORKLOAD, WorkloadIdentityCredential(
                tenant_id=env["AZURE_TENANT_ID"], client_id=env["AZURE_CLIENT_ID"],
                token_file_path=env["AZURE_FEDERATED_TOKEN_FILE"], **kw), ""))
        else:
            sources.append((azure_signin.WORKLOAD, None, "AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID or "
                            "AZURE_TENANT_ID not set"))
        if azure_signin.managed_identity_endpoint() or _imds_reachable():
            mi_kw = {"client_id": env["AZURE_CLIENT_ID"]} if env.get("AZURE_CLIENT_ID") and not env.get(
                "AZURE_CLIENT_SECRET") else {}
            sources.append((azure_signin.MANAGED, ManagedIdentityCredential(
                **mi_kw, connection_verify=e.verify), ""))
        else:
            sources.append((azure_signin.MANAGED, None, "no IDENTITY_ENDPOINT/MSI_ENDPOINT and no instance "
                            "metadata service (not an Azure machine)"))
        sources.append((azure_signin.AZ_CLI, AzureCliCredential(**tenant_kw, process_timeout=20), ""))
        sources.append((azure_signin.AZD, AzureDeveloperCliCredential(**tenant_kw, process_timeout=20), ""))
        saved = _saved_device_code(e)
        sources.append((azure_signin.REMEMBERED, saved, "" if saved is not None else
                        "none remembered (`aitk azure login --remember`)"))
        return sources

    def check(self, scope: str) -> list[tuple[str, str, str]]:
        """Each source in order: (name, answered | unavailable | not tried, detail); stops at the first
        that answers, as a real sign-in would."""
        from azure.identity import CredentialUnavailableError

        out: list[tuple[str, str, str]] = []
        answered = False
        for name, cred, why in self._build():
            if answered:
                out.append((name, "not tried", "an earlier source answered"))
                continue
            if cred is None:
                out.append((name, "unavailable", why))
                continue
            try:
                token = cred.get_token(scope)
            except CredentialUnavailableError as e:
                out.append((name, "unavailable", (str(e).splitlines() or ["unavailable"])[0][:160]))
                continue
            except Exception as e:  # noqa: BLE001 - a source that exists but refused: say how
                out.append((name, "failed", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"))
                continue
            answered = True
            out.append((name, "answered", Identity.from_token(token.token, name).display))
        return out

    def get_token(self, *scopes, **kwargs):
        from azure.identity import CredentialUnavailableError

        if self._current is not None:
            return self._current.get_token(*scopes, **kwargs)
        if self._sources is None:
            self._sources = self._build()
        why = []
        for name, cred, absent in self._sources:
            if cred is None:
                why.append(f"{name}: {absent}")
                continue
            try:
                token = cred.get_token(*scopes, **kwargs)
            except CredentialUnavailableError as e:
                why.append(f"{name}: {str(e).splitlines()[0] if str(e) else 'unavailable'}")
                continue
            except Exception as e:  # noqa: BLE001 - an AuthenticationRequiredError from a saved sign-in is "unavailable"
                if type(e).__name__ == "AuthenticationRequiredError":
                    why.append(f"{name}: the saved sign-in needs renewing")
                    continue
                raise
            self.used, self._current = name, cred
            return token
        raise CredentialUnavailableError(message="no silent sign-in found (" + "; ".join(why) + ")")

    def close(self) -> None:
        for _, cred, _ in self._sources or []:
            try:
                cred.close() if cred is not None else None
            except Exception:  # noqa: BLE001
                pass


def _imds_reachable(timeout_s: float = 0.3) -> bool:
    """An Azure VM's instance metadata service answers on a link-local address; elsewhere a connect
    fails or times out at once. Probed only when no earlier source answered (the chain is lazy)."""
    import socket

    if os.environ.get("AITK_AZURE_NO_IMDS"):
        return False
    try:
        with socket.create_connection(("169.254.169.254", 80), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_sources(endpoints: Endpoints | None = None) -> list[tuple[str, str, str]]:
    """`aitk azure login --check`: every silent source, in order, and which one answered."""
    e = endpoints or Endpoints.from_env()
    chain = SilentChain(e)
    try:
        return chain.check(e.arm_scope)
    finally:
        chain.close()


def _cache_options(allow_unencrypted: bool):
    from azure.identity import TokenCachePersistenceOptions

    return TokenCachePersistenceOptions(name="aitk", allow_unencrypted_storage=allow_unencrypted)


def _saved_device_code(e: Endpoints):
    """The remembered device-code sign-in, silent only (None unless the user consented to a cache)."""
    if azure_signin.remembered_record() is None:  # the same check doctor and the status bar make
        return None
    from azure.identity import AuthenticationRecord, DeviceCodeCredential

    auth = config.load_settings().get("auth") or {}
    try:
        record = AuthenticationRecord.deserialize(config.auth_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return None
    kw = {k: v for k, v in _identity_kwargs(e).items() if k != "authority"}  # the record names its authority
    return DeviceCodeCredential(client_id=record.client_id, tenant_id=record.tenant_id, authentication_record=record,
                                cache_persistence_options=_cache_options(bool(auth.get("allow_unencrypted"))),
                                disable_automatic_authentication=True, **kw)


def credential(endpoints: Endpoints | None = None):
    """The credential API calls use: this process's device-code sign-in, else the silent chain."""
    setup_logging()
    with _SESSION_LOCK:
        if _SESSION is not None:
            return _SESSION
    return SilentChain(endpoints)


def session_only() -> bool:
    """True when the sign-in lives only in this process (background watchers cannot use it)."""
    return _SESSION is not None


def identity(cred, endpoints: Endpoints | None = None) -> Identity:
    e = endpoints or Endpoints.from_env()
    from azure.core.exceptions import ClientAuthenticationError

    try:
        token = cred.get_token(e.arm_scope)
    except ClientAuthenticationError as err:
        raise translate(err, "sign in to Azure") from None
    return Identity.from_token(token.token, getattr(cred, "used", None) or "device-code sign-in (this session)")


def login(*, device_code: bool = False, prompt=None, remember: bool = False, allow_unencrypted: bool = False,
          tenant: str | None = None, endpoints: Endpoints | None = None, timeout_s: int = 900) -> Identity:
    """Sign in: silently if any source works (unless `device_code`), else with a device code.

    `prompt(verification_uri, user_code, expires_on)` draws the code; `remember` persists the
    token cache (consent), `allow_unencrypted` lets it be a plain file where no keyring exists.
    """
    global _SESSION
    from azure.core.exceptions import ClientAuthenticationError

    setup_logging()
    e = endpoints or Endpoints.from_env()
    if not device_code:
        chain = SilentChain(e, tenant)
        try:
            return Identity.from_token(chain.get_token(e.arm_scope).token, chain.used)
        except ClientAuthenticationError:
            if prompt is None:
                raise AitkError("no silent Azure sign-in works here and no way to show a device code",
                                LOGIN_HINT) from None
    from azure.identity import DeviceCodeCredential

    cred = DeviceCodeCredential(tenant_id=tenant or config.load_settings().get("tenant_id") or "organizations",
                                client_id=config.DEVICE_CODE_CLIENT_ID, prompt_callback=prompt, timeout=timeout_s,
                                cache_persistence_options=_cache_options(allow_unencrypted) if remember else None,
                                **_identity_kwargs(e))
    try:
        record = cred.authenticate(scopes=[e.arm_scope])
    except Exception as err:  # noqa: BLE001
        text = str(err).lower()
        if remember and not allow_unencrypted and ("encrypt" in text or "keyring" in text or "libsecret" in text):
            # msal-extensions found no keyring (libsecret) to encrypt the persisted cache with.
            raise AitkError("this machine has no keyring to encrypt the remembered sign-in with",
                            "rerun with --allow-unencrypted to keep it in a file only you can read, or without "
                            "--remember to stay signed in for this session only") from None
        if isinstance(err, ClientAuthenticationError):
            raise translate(err, "sign in with a device code") from None
        raise
    if remember:
        path = config.auth_record_path()
        path.write_text(record.serialize(), encoding="utf-8")
        os.chmod(path, 0o600)
        _SESSION = None
    else:
        with _SESSION_LOCK:
            _SESSION = cred
    config.update_settings(tenant_id=record.tenant_id,
                           auth={"method": "device-code", "remember": remember, "allow_unencrypted": allow_unencrypted})
    token = cred.get_token(e.arm_scope)
    return Identity.from_token(token.token, "device-code sign-in" + (" (remembered)" if remember else " (this session)"))


def logout() -> list[str]:
    """Forget what aitk saved (the auth record and consent); MSAL's persisted cache goes with the consent."""
    global _SESSION
    done = []
    path = config.auth_record_path()
    if path.exists():
        path.unlink()
        done.append(str(path))
    data = config.load_settings()
    if data.pop("auth", None) is not None:
        config.save_settings(data)
        done.append("remembered sign-in consent")
    _SESSION = None
    return done


def _az_default_subscription() -> str | None:
    """The Azure CLI's default subscription, when the CLI is how the user signed in."""
    profile = azure_signin.az_profile()
    default = profile.default if profile else None
    return default.get("id") if default and default.get("isDefault") else None


def resolve_subscription(explicit: str | None = None, ctx=None) -> str:
    """--subscription, else AZURE_SUBSCRIPTION_ID, else the saved choice, else the CLI's default, else
    the only one visible; several and none chosen is an error listing them."""
    for value in (explicit, os.environ.get("AZURE_SUBSCRIPTION_ID"), config.load_settings().get("subscription_id"),
                  _az_default_subscription()):
        if value:
            return value
    if ctx is not None:
        from .errors import azure_call

        with azure_call("list your Azure subscriptions"):
            subs = [s for s in ctx.list_subscriptions() if s.get("state", "Enabled") == "Enabled"]
        if len(subs) == 1:
            return subs[0]["subscriptionId"]
        if subs:
            listing = "; ".join(f"{s['subscriptionId']} ({s.get('displayName', '')})" for s in subs[:8])
            raise AitkError(f"several subscriptions are visible: {listing}",
                            "choose one: `aitk azure login --subscription ID` (or --subscription on the command)")
        raise AitkError("the signed-in identity sees no enabled subscription",
                        "sign in with another account, or ask for access to a subscription")
    raise AitkError("no Azure subscription chosen", "pass --subscription ID, or `aitk azure login --subscription ID`")
