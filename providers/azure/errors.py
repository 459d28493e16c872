"""Azure failures as AitkErrors a user can act on: always the error code, message and request id.

401 -> sign in again; 403 -> which role to ask for, where; quota -> what to request and where;
409 -> what conflicts; 429 / 5xx -> Azure's own retries (shown while waiting, see clients.py)
already ran out, so: wait and retry. Nothing secret is ever part of a message: Azure does not echo
secret values, and request bodies are never quoted.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from ...core.errors import AitkError

LOGIN_HINT = "sign in again: `aitk azure login` (or `az login`, or set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET)"
QUOTA_WORDS = re.compile(r"quota|exceed|limit|insufficient.*(core|gpu)|not enough", re.I)


@dataclass
class AzureErrorInfo:
    status: int | None
    code: str | None
    message: str
    request_id: str | None

    def line(self) -> str:
        head = f"[{self.code}] " if self.code else ""
        tail = []
        if self.status:
            tail.append(f"HTTP {self.status}")
        if self.request_id:
            tail.append(f"request id {self.request_id}")
        return head + self.message.strip() + (f" ({', '.join(tail)})" if tail else "")


def info(err: BaseException) -> AzureErrorInfo:
    """Code, message, status and request id out of any azure-core / azure-identity exception."""
    status = code = rid = None
    message = str(getattr(err, "message", None) or err) or type(err).__name__
    response = getattr(err, "response", None)
    if response is not None:
        status = getattr(response, "status_code", None)
        headers = getattr(response, "headers", None) or {}
        rid = headers.get("x-ms-request-id") or headers.get("x-ms-correlation-request-id")
        code = headers.get("x-ms-error-code")
    odata = getattr(err, "error", None)
    if odata is not None:
        code = getattr(odata, "code", None) or code
        message = getattr(odata, "message", None) or message
    code = getattr(err, "error_code", None) or code
    # azure-core puts "(Code) Message\nCode: ...\nMessage: ..." in str(err): keep the first line's text.
    first = message.splitlines()[0] if message else ""
    mo = re.match(r"^\((\w+)\)\s*(.*)$", first)
    if mo:
        code = code or mo.group(1)
        first = mo.group(2)
    if first:
        message = first
    return AzureErrorInfo(status, code if isinstance(code, str) else (str(code) if code else None), message, rid)


def quota_hint(gpu_label: str, location: str, subscription: str | None) -> str:
    return (f"request serverless GPU quota '{gpu_label}' of at least 1 in {location}"
            + (f" for subscription {subscription}" if subscription else "")
            + ": Azure portal > Quotas > Azure Container Apps (or Help + support > new support request > "
              "'Service and subscription limits (quotas)' > 'Container Apps'); approval takes hours to days. "
              "Then rerun `aitk azure provision`; or try `--gpu t4` or another region")


def translate(err: BaseException, action: str, *, scope: str | None = None, gpu_label: str | None = None,
              location: str | None = None, subscription: str | None = None) -> AitkError:
    """`action` says what we were doing ("create storage account x"); scope is where a role is needed."""
    from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ResourceExistsError,
                                       ServiceRequestError, ServiceResponseError)

    try:
        from azure.identity import CredentialUnavailableError
    except ImportError:  # pragma: no cover
        CredentialUnavailableError = ()  # type: ignore
    i = info(err)
    where = f"could not {action}"
    if isinstance(err, CredentialUnavailableError):
        return AitkError(f"{where}: not signed in to Azure ({i.message})", LOGIN_HINT)
    if isinstance(err, ClientAuthenticationError) and (i.status in (None, 401)):
        return AitkError(f"{where}: Azure refused the sign-in: {i.line()}", LOGIN_HINT)
    if isinstance(err, (ServiceRequestError, ServiceResponseError)) and not isinstance(err, HttpResponseError):
        return AitkError(f"{where}: cannot reach Azure: {i.message}",
                         "check the network (and a proxy: HTTPS_PROXY), then retry")
    if isinstance(err, HttpResponseError) or i.status:
        text = f"{i.code or ''} {i.message}"
        if i.status == 401:
            return AitkError(f"{where}: Azure refused the sign-in: {i.line()}", LOGIN_HINT)
        if (i.status in (403, 409, 400) and QUOTA_WORDS.search(text) and gpu_label) or \
                (i.code and "quota" in i.code.lower()):
            return AitkError(f"{where}: not enough quota: {i.line()}",
                             quota_hint(gpu_label or "the GPU in question", location or "this region", subscription))
        if i.status == 403:
            return AitkError(
                f"{where}: permission denied: {i.line()}",
                f"your account needs the Contributor role (or Owner) on {scope or 'the subscription or resource group'}:"
                " ask an owner to assign it under Access control (IAM), then retry")
        if i.status == 409 or isinstance(err, ResourceExistsError):
            hint = "another operation on it is in progress, or the name is taken: wait a minute and retry"
            if i.code and "AlreadyTaken" in i.code:
                hint = "the name is taken by someone else's resource: pass another name (see `aitk azure provision -h`)"
            elif i.code and "Registration" in i.code:
                hint = "register the resource provider: `az provider register -n Microsoft.App` (and " \
                       "Microsoft.OperationalInsights, Microsoft.Storage), then retry"
            return AitkError(f"{where}: conflict: {i.line()}", hint)
        if i.status == 429:
            return AitkError(f"{where}: Azure is throttling requests and retries ran out: {i.line()}",
                             "wait a few minutes and retry")
        if i.status and i.status >= 500:
            return AitkError(f"{where}: Azure had a server error and retries ran out: {i.line()}",
                             "retry later; quote the request id if you contact Azure support")
        if i.status == 404:
            return AitkError(f"{where}: not found: {i.line()}",
                             "was it deleted? rerun `aitk azure provision` to recreate what is missing")
        return AitkError(f"{where}: {i.line()}", "see the message from Azure above")
    return AitkError(f"{where}: {type(err).__name__}: {i.message}", "see ~/.local/share/aitk/logs/azure.log")


@contextlib.contextmanager
def azure_call(action: str, **ctx):
    """Turn whatever the SDK raises inside into one AitkError naming `action`."""
    from azure.core.exceptions import AzureError

    try:
        yield
    except AitkError:
        raise
    except AzureError as e:
        raise translate(e, action, **ctx) from None
    except OSError as e:  # requests' connection errors in the log stream surface as OSError subclasses
        raise AitkError(f"could not {action}: {e}", "check the network, then retry") from None
