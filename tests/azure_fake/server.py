"""The fake Azure: one TLS HTTP server on 127.0.0.1 answering Entra ID, ARM, log stream, Log Analytics
and Azure Files requests, with in-memory resources and a folder per file share.

Faithful where the SDK clients look (status codes, long-running-operation headers, error bodies,
`x-ms-request-id`), simple elsewhere (no RBAC, no SharedKey signature check). Where the service is
known to differ from what a client might assume, the fake does what the service does (facts in
../shared/README.md, azure-cli's containerapp code, the Microsoft.App REST specs): a start with a
template override loses the job's volume mounts; quotas are named as the usages API names them
(serverless `SubscriptionConsumption*`, dedicated `Subscription*`, dedicated A100 at 0); environments
provision through several states; replicas are listed before their container runs (the stream
answers 4xx meanwhile); streams may send JSON or CRI lines; Log Analytics answers "Failed to
resolve table" until the first log; api-version, names, secretRefs and workload profiles are checked.

An execution "runs" as a local subprocess: `runner="engine"` runs the job's own command (the entry
script the run put on the share, /mount mapped to the share's folder), so a full run installs and
trains for real; `runner="script"` runs a short Python script (fast tests). Its output becomes the
replica's log stream and Log Analytics rows.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import email.utils
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from .certs import make_certs
from .arm import ArmService
from .common import ENTRY_SCRIPT, GPU_REGIONS, REPO, Execution, Fault, _Handler, _b64url, _merge_patch, _now_iso  # noqa: F401
from .files import FilesService
from .identity import IdentityService
from .loganalytics import LogAnalyticsService
from .logstream import LogStreamService


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeAzure(IdentityService, ArmService, LogStreamService, LogAnalyticsService, FilesService):
    """One HTTPS server, one route table, a service class per Azure service (their own modules)."""

    def __init__(self, root: Path, *, tenant: str = "72f988bf-0000-4000-8000-00000000aaaa",
                 subscription: str = "00000000-1111-4222-8333-444444444444", runner: str = "script",
                 script: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ca, cert, key = make_certs(self.root / "certs")
        self.tenant, self.subscription = tenant, subscription
        self.share_root = self.root / "shares"
        self.share_root.mkdir(exist_ok=True)
        self.resources: dict[str, dict] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.faults: list[Fault] = []
        self.executions: dict[str, Execution] = {}
        self.app_replicas: dict[str, Execution] = {}  # Container App replicas (their console log), by name
        self.operations: dict[str, dict] = {}
        self.file_meta: dict[str, dict] = {}  # share file path -> metadata
        self.tokens: dict[str, float] = {}  # access token -> expiry
        self.log_tokens: set[str] = set()
        self.device_codes: dict[str, int] = {}  # device code -> polls left before approval
        self.federated_tokens: set[str] = set()  # workload identity assertions Entra ID trusts
        self.identity_header = "fake-identity-header-" + uuid.uuid4().hex[:8]  # the managed identity endpoint's
        # As the usages API names them: serverless (Consumption) and dedicated GPU quotas apart, and
        # dedicated A100 at 0 as on most subscriptions. `usage(name)` finds one for a test to change.
        self.usages = [
            {"name": {"value": "SubscriptionConsumptionNCA100Gpus",
                      "localizedValue": "Subscription Consumption NCA100 Gpus"}, "currentValue": 0, "limit": 1,
             "unit": "Count"},
            {"name": {"value": "SubscriptionNCA100Gpus", "localizedValue": "Subscription NCA100 Gpus"},
             "currentValue": 0, "limit": 0, "unit": "Count"},
            {"name": {"value": "SubscriptionConsumptionNCT4Gpus", "localizedValue": "Subscription Consumption NCT4 Gpus"},
             "currentValue": 0, "limit": 1, "unit": "Count"},
            {"name": {"value": "SubscriptionNCT4Gpus", "localizedValue": "Subscription NCT4 Gpus"},
             "currentValue": 0, "limit": 0, "unit": "Count"},
            {"name": {"value": "ManagedEnvironmentCount", "localizedValue": "Managed Environment Count"},
             "currentValue": 0, "limit": 15, "unit": "Count"}]
        self.runner = runner
        self.script = script
        self.processing_s = 0.2
        self.stream_format = "text"  # text | json ({"TimeStamp","Log"}, 7 digits, +00:00) | cri ("stdout F ")
        self.hold_status: str | None = None  # executions stay in this state (Unknown, Processing) until stopped
        self.env_states = ["InitializationInProgress", "InfrastructureSetupInProgress"]  # an environment's, polled through
        self.lro_polls = 1  # "InProgress" answers before an operation succeeds
        self.stream_drops: list[int] = []  # per connection: close after this many lines
        self.stream_tail_cap = 300  # the most lines a (re)connection replays
        self.la_delay_s = 0.0  # Log Analytics ingestion lag
        self.run_env: dict[str, str] = {}  # extra env for executions (tests)
        # Hold a running execution's process until a log stream connects (up to 10 s), so tests of
        # the live stream do not depend on how fast the watcher starts on a busy machine.
        self.wait_for_stream = False
        self.lock = threading.RLock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "FakeAzure":
        self._thread.start()
        return self

    def stop(self) -> None:
        for exe in list(self.executions.values()):
            if exe.proc and exe.proc.poll() is None:
                exe.proc.kill()
        self._httpd.shutdown()
        self._httpd.server_close()

    def env(self) -> dict[str, str]:
        """Environment that points aitk (and azure-identity) at this server, signed in as a service principal."""
        return {
            "AITK_AZURE_ARM_ENDPOINT": self.url,
            "AITK_AZURE_LOGS_ENDPOINT": self.url,
            "AZURE_AUTHORITY_HOST": self.url,
            "AITK_AZURE_CA_BUNDLE": str(self.ca),
            "AITK_AZURE_LRO_POLL_S": "0",
            "AITK_AZURE_POLL_S": "0.2",
            "AITK_AZURE_RETRY_BACKOFF": "0.05",
            "AZURE_TENANT_ID": self.tenant,
            "AZURE_CLIENT_ID": "11111111-2222-4333-8444-555555555555",
            "AZURE_CLIENT_SECRET": "fake-client-secret",
            "AZURE_SUBSCRIPTION_ID": self.subscription,
        }

    def usage(self, name: str) -> dict:
        return next(u for u in self.usages if u["name"]["value"] == name)

    def fault(self, method: str, path: str, status: int, **kw) -> Fault:
        f = Fault(method, path, status, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def expire_tokens(self) -> None:
        """Every access token issued so far is now expired (as after a long sleep)."""
        with self.lock:
            for t in self.tokens:
                self.tokens[t] = 0

    def mutations(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] in ("PUT", "PATCH", "DELETE", "POST")
                and "/oauth2/" not in r[1] and "/query" not in r[1]]

    # -- plumbing -------------------------------------------------------------------------------
    def _send(self, h: _Handler, status: int, body=b"", headers: dict | None = None,
              ctype: str = "application/json") -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        headers = dict(headers or {})
        length = headers.pop("Content-Length", None)
        h.send_response(status)
        rid = str(uuid.uuid4())
        h.send_header("x-ms-request-id", rid)
        h.send_header("x-ms-correlation-request-id", rid)
        h.send_header("Date", email.utils.formatdate(usegmt=True))
        if body or status not in (202, 204, 304):
            h.send_header("Content-Type", ctype)
        for k, v in headers.items():
            h.send_header(k, str(v))
        h.send_header("Content-Length", str(length if length is not None else len(body)))
        h.end_headers()
        if h.command != "HEAD" and body:
            h.wfile.write(body)
        self.requests.append((h.command, h._path, status))

    def _arm_error(self, h, status, code, message, headers=None):
        self._send(h, status, {"error": {"code": code, "message": message}}, headers)

    def _storage_error(self, h, status, code, message):
        xml = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>'
        self._send(h, status, xml, {"x-ms-error-code": code}, ctype="application/xml")

    def _token(self, claims: dict, ttl: float = 3600) -> str:
        now = int(time.time())
        payload = {"iat": now, "nbf": now, "exp": now + int(ttl), **claims}
        return ".".join([_b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
                         _b64url(json.dumps(payload).encode()), _b64url(b"sig")])

    def _dispatch(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        h._path = unquote(parts.path)
        h._query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            h._data = h._body()
            with self.lock:
                fault = next((f for f in self.faults if f.matches(h.command, h._path)), None)
                if fault:
                    fault.hits += 1
            if fault:
                headers = dict(fault.headers)
                if self._is_storage(h._path):
                    return self._storage_error(h, fault.status, fault.code, fault.message)
                return self._arm_error(h, fault.status, fault.code, fault.message, headers)
            self._route(h)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        except Exception as e:  # a bug in the fake: answer 500 with the reason (tests will show it)
            import traceback

            traceback.print_exc()
            try:
                self._arm_error(h, 500, "FakeServerBug", f"{type(e).__name__}: {e}")
            except Exception:
                pass

    def _is_storage(self, path: str) -> bool:
        return path.strip("/").split("/")[0] in self._accounts()

    def _accounts(self) -> set[str]:
        return {r["name"] for r in self.resources.values() if r.get("type") == "Microsoft.Storage/storageAccounts"}

    # -- routing --------------------------------------------------------------------------------
    def _routes(self):
        """The route table: which service answers a path (ARM answers whatever no other service claims)."""
        tenant = re.compile(rf"^/(?:{re.escape(self.tenant)}|organizations)/")
        return [
            (lambda p: bool(tenant.match(p)), self._aad),  # Entra ID (identity.py)
            (lambda p: p == "/msi/token", self._managed_identity),  # managed identity endpoint (identity.py)
            (lambda p: p.startswith("/v1/workspaces/"), self._la_query),  # Log Analytics (loganalytics.py)
            (self._is_storage, self._files),  # Azure Files data plane (files.py)
            (lambda p: "/logstream" in p, self._logstream),  # Container Apps log stream (logstream.py)
        ]

    def _route(self, h: _Handler) -> None:
        for matches, handler in self._routes():
            if matches(h._path):
                return handler(h)
        return self._arm(h)  # arm.py
