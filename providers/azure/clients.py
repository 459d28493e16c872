"""The Azure SDK clients, built one way: our endpoints, our CA bundle, retries that say what they wait for.

azure-core already retries 408/429/5xx with backoff and honours Retry-After; the retry policies here
only add a `notify(text)` call before each wait, so the CLI, the TUI and the job log can show
"Azure answered 429 ...; retrying in 2 s" instead of looking frozen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from azure.core.pipeline.policies import RetryPolicy

from .config import Endpoints

Notify = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _describe(response) -> str:
    if response is None:
        return "no answer (connection error)"
    r = getattr(response, "http_response", response)
    code = getattr(r, "status_code", "?")
    reason = getattr(r, "reason", "") or ""
    rid = (getattr(r, "headers", None) or {}).get("x-ms-request-id")
    return f"HTTP {code} {reason}".strip() + (f", request id {rid}" if rid else "")


class NotifyingRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy, telling `notify` about each wait."""

    def __init__(self, notify: Notify = _quiet, **kwargs: Any):
        super().__init__(**kwargs)
        self._notify = notify

    def sleep(self, settings, transport, response=None):
        wait = None
        if response is not None:
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time(settings)
        attempt = len(settings.get("history") or [])
        url = ""
        if response is not None:
            url = response.http_request.url.split("?")[0]
        self._notify(f"Azure answered {_describe(response)} for {url or 'a request'}; retrying in {wait:.1f} s "
                     f"(retry {attempt} of {self.total_retries})")
        return super().sleep(settings, transport, response=response)


def storage_retry_policy(notify: Notify, backoff: float, total: int):
    """The Azure Files SDK's own exponential retry (it retries 5xx and timeouts), also notifying."""
    from azure.storage.fileshare import ExponentialRetry

    class _Retry(ExponentialRetry):
        def sleep(self, settings, transport):
            wait = self.get_backoff_time(settings)
            history = settings.get("history") or []
            last = history[-1] if history else None
            response = getattr(last, "http_response", None) if last else None
            notify(f"Azure Files answered {_describe(response)}; retrying in {wait:.1f} s "
                   f"(retry {settings.get('count', 0)} of {self.total_retries})")
            return super().sleep(settings, transport)

    # waits initial + base**n: 2+2, 2+4, 2+8 s ... in production; tiny when the backoff is (tests)
    base = 2 if backoff >= 0.5 else backoff
    return _Retry(initial_backoff=2 if backoff >= 0.5 else backoff, increment_base=base, retry_total=total,
                  random_jitter_range=0)


class AzureContext:
    """A credential + subscription + endpoints, handing out (cached) SDK clients."""

    def __init__(self, credential, subscription_id: str | None, endpoints: Endpoints | None = None,
                 notify: Notify | None = None):
        from .auth import setup_logging

        setup_logging()  # azure.* logging to a file before any client logs anything
        self.credential = credential
        self.subscription_id = subscription_id
        self.endpoints = endpoints or Endpoints.from_env()
        self.notify = notify or _quiet
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _common(self) -> dict:
        e = self.endpoints
        return {
            "connection_verify": e.verify,
            "retry_policy": NotifyingRetryPolicy(self.notify, retry_total=e.retry_total,
                                                 retry_backoff_factor=e.retry_backoff, retry_backoff_max=60),
        }

    def _arm(self, key: str, factory):
        with self._lock:
            if key not in self._clients:
                if not self.subscription_id:
                    from ...core.errors import AitkError

                    raise AitkError("no Azure subscription chosen",
                                    "pass --subscription ID, or `aitk azure login --subscription ID`")
                e = self.endpoints
                self._clients[key] = factory(self.credential, self.subscription_id, base_url=e.arm,
                                             credential_scopes=[e.arm_scope], polling_interval=e.lro_poll_s,
                                             **self._common())
            return self._clients[key]

    @property
    def resources(self):
        from azure.mgmt.resource.resources import ResourceManagementClient

        return self._arm("resources", ResourceManagementClient)

    @property
    def storage(self):
        from azure.mgmt.storage import StorageManagementClient

        return self._arm("storage", StorageManagementClient)

    @property
    def loganalytics(self):
        from azure.mgmt.loganalytics import LogAnalyticsManagementClient

        return self._arm("loganalytics", LogAnalyticsManagementClient)

    @property
    def apps(self):
        from azure.mgmt.appcontainers import ContainerAppsAPIClient

        return self._arm("apps", ContainerAppsAPIClient)

    @property
    def logs_query(self):
        from azure.monitor.query import LogsQueryClient

        with self._lock:
            if "logs_query" not in self._clients:
                e = self.endpoints
                self._clients["logs_query"] = LogsQueryClient(self.credential, endpoint=e.logs,
                                                              audience=e.logs_audience, **self._common())
            return self._clients["logs_query"]

    def share(self, file_endpoint: str, share_name: str, account_key: str):
        """A ShareClient on the account's file endpoint (from ARM: primaryEndpoints.file)."""
        from azure.storage.fileshare import ShareClient

        e = self.endpoints
        return ShareClient(account_url=file_endpoint.rstrip("/"), share_name=share_name, credential=account_key,
                           connection_verify=e.verify,
                           retry_policy=storage_retry_policy(self.notify, e.retry_backoff, e.retry_total))

    def arm_request(self, method: str, path: str, api_version: str, body: dict | None = None) -> dict:
        """A raw ARM call through the same pipeline (auth, retries): for preview APIs the SDK lacks."""
        from azure.core.exceptions import HttpResponseError, map_error
        from azure.core.rest import HttpRequest

        sep = "&" if "?" in path else "?"
        req = HttpRequest(method, f"{self.endpoints.arm}{path}{sep}api-version={api_version}", json=body)
        resp = self.apps.send_request(req)
        if resp.status_code >= 400:
            map_error(resp.status_code, resp, {})
            raise HttpResponseError(response=resp)
        try:
            return resp.json()
        except ValueError:
            return {}

    def list_subscriptions(self) -> list[dict]:
        """Subscriptions the signed-in identity can see (ARM's tenant-level list)."""
        from azure.core.exceptions import HttpResponseError, map_error
        from azure.core.rest import HttpRequest
        from azure.mgmt.resource.resources import ResourceManagementClient

        client = ResourceManagementClient(self.credential, self.subscription_id or "00000000-0000-0000-0000-000000000000",
                                          base_url=self.endpoints.arm, credential_scopes=[self.endpoints.arm_scope],
                                          **self._common())
        out, url = [], f"{self.endpoints.arm}/subscriptions?api-version=2022-12-01"
        while url:
            resp = client.send_request(HttpRequest("GET", url))
            if resp.status_code >= 400:
                map_error(resp.status_code, resp, {})
                raise HttpResponseError(response=resp)
            data = resp.json()
            out += data.get("value", [])
            url = data.get("nextLink")
        return out
