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

REPO = Path(__file__).resolve().parents[2]
ENTRY_SCRIPT = REPO / "providers" / "azure" / "container_entry.py"
GPU_REGIONS = {"westus3", "swedencentral", "australiaeast"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _now_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _merge_patch(target, patch):
    """RFC 7396 JSON merge patch (lists are replaced, null removes)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out


@dataclass
class Fault:
    """Answer matching requests with `status` instead of serving them, `times` times."""

    method: str  # "*" for any
    path: str  # regex searched in the path (case-insensitive)
    status: int
    times: int = 1
    code: str = "InjectedFault"
    message: str = "an injected fault"
    headers: dict = field(default_factory=dict)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and self.method in ("*", method) and re.search(self.path, path, re.I) is not None


@dataclass
class Execution:
    name: str
    job_id: str
    rg: str
    job: str
    status: str = "Processing"
    start: float = field(default_factory=time.time)
    end: float | None = None
    replica: str = ""
    container: str = ""
    template: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)  # (t, text)
    done: bool = False
    stop_requested: bool = False
    proc: subprocess.Popen | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)
    reason: str | None = None
    streamed: threading.Event = field(default_factory=threading.Event)  # a log stream has connected
    overridden: bool = False  # started with a template override: the job's volume mounts are lost


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _any(self):
        self.server.fake._dispatch(self)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeAzure:
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
    def _route(self, h: _Handler) -> None:
        p, m = h._path, h.command
        if re.match(rf"^/{re.escape(self.tenant)}/", p) or p.startswith("/organizations/"):
            return self._aad(h)
        if p == "/msi/token":
            return self._managed_identity(h)
        if p.startswith("/v1/workspaces/"):
            return self._la_query(h)
        if self._is_storage(p):
            return self._files(h)
        if "/logstream" in p:
            return self._logstream(h)
        auth = h.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        exp = self.tokens.get(token)
        if exp is None:
            return self._arm_error(h, 401, "InvalidAuthenticationToken", "The access token is invalid.")
        if exp < time.time():
            return self._arm_error(
                h, 401, "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
                {"WWW-Authenticate": f'Bearer authorization_uri="{self.url}/{self.tenant}", error="invalid_token", '
                                     'error_description="The access token has expired."'})
        if "api-version" not in h._query and "/Fake.Operations/" not in p:
            return self._arm_error(h, 400, "MissingApiVersionParameter",
                                   "The api-version query parameter (?api-version=) is required for all requests.")
        if p.rstrip("/") == "/subscriptions":
            return self._send(h, 200, {"value": [{
                "id": f"/subscriptions/{self.subscription}", "subscriptionId": self.subscription,
                "displayName": "Fake Subscription", "state": "Enabled", "tenantId": self.tenant}]})
        mo = re.match(r"^/subscriptions/[^/]+/providers/Microsoft\.App/locations/([^/]+)/(\w+)(?:/([^/]+))?$", p, re.I)
        if mo:
            loc, what, op = mo.group(1).lower(), mo.group(2), mo.group(3)
            if what.lower() == "operationstatuses" or what.lower() == "operationresults":
                return self._operation(h, op)
            if what == "availableManagedEnvironmentsWorkloadProfileTypes":
                return self._send(h, 200, {"value": self._profiles(loc)})
            if what == "usages":
                return self._send(h, 200, {"value": self.usages if loc in GPU_REGIONS else []})
        mo = re.match(r"^/subscriptions/[^/]+/providers/Fake\.Operations/operations/([^/]+)$", p)
        if mo:
            return self._operation(h, mo.group(1))
        mo = re.match(r"^/subscriptions/([^/]+)/resourcegroups/([^/]+)$", p, re.I)
        if mo:
            return self._resource_group(h, mo.group(2))
        mo = re.match(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/(.+)$", p, re.I)
        if mo:
            return self._provider_resource(h, mo.group(2), mo.group(3))
        return self._arm_error(h, 404, "NotFound", f"no route for {m} {p}")

    # -- Entra ID -------------------------------------------------------------------------------
    def _aad(self, h: _Handler) -> None:
        p = h._path
        base = f"{self.url}/{self.tenant}"
        if p.endswith("/.well-known/openid-configuration"):
            return self._send(h, 200, {
                "issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "tenant_region_scope": "WW"})
        form = {k: v[-1] for k, v in parse_qs(h._data.decode()).items()}
        if p.endswith("/oauth2/v2.0/devicecode"):
            code = uuid.uuid4().hex
            self.device_codes[code] = 1
            return self._send(h, 200, {"device_code": code, "user_code": "FAKE-CODE", "verification_uri":
                                       "https://microsoft.com/devicelogin", "expires_in": 900, "interval": 1,
                                       "message": "To sign in, use a web browser ..."})
        if p.endswith("/oauth2/v2.0/token"):
            grant = form.get("grant_type", "")
            user = None
            if grant == "client_credentials" and "client_assertion" in form:  # workload identity (federated)
                if form["client_assertion"] not in self.federated_tokens:
                    return self._send(h, 401, {"error": "invalid_client", "error_description": "AADSTS700211: No "
                                               "matching federated identity record found for presented assertion.",
                                               "error_codes": [700211]})
                claims = {"oid": "wi-object-id", "appid": form.get("client_id"), "tid": self.tenant, "idtyp": "app"}
            elif grant == "client_credentials":
                if form.get("client_secret") != "fake-client-secret":
                    return self._send(h, 401, {"error": "invalid_client", "error_description": "AADSTS7000215: "
                                               "Invalid client secret provided.", "error_codes": [7000215]})
                claims = {"oid": "sp-object-id", "appid": form.get("client_id"), "tid": self.tenant,
                          "idtyp": "app"}
            elif grant.endswith("device_code"):
                left = self.device_codes.get(form.get("device_code"))
                if left is None:
                    return self._send(h, 400, {"error": "expired_token", "error_description": "expired"})
                if left > 0:
                    self.device_codes[form["device_code"]] = left - 1
                    return self._send(h, 400, {"error": "authorization_pending",
                                               "error_description": "AADSTS70016: pending"})
                user = True
            elif grant == "refresh_token":
                user = True
            else:
                return self._send(h, 400, {"error": "unsupported_grant_type"})
            if user:
                claims = {"oid": "user-object-id", "tid": self.tenant, "upn": "ada@contoso.example",
                          "name": "Ada Lovelace", "preferred_username": "ada@contoso.example"}
            access = self._token({**claims, "aud": "https://management.azure.com"})
            with self.lock:
                self.tokens[access] = time.time() + 3600
            body = {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": access,
                    "scope": form.get("scope", "")}
            if user:
                now = int(time.time())
                body["id_token"] = self._token({"aud": form.get("client_id"), "iss": f"{base}/v2.0", "sub": "sub",
                                                **claims, "iat": now}, 3600)
                body["refresh_token"] = "fake-refresh-" + uuid.uuid4().hex
                body["client_info"] = _b64url(json.dumps({"uid": claims["oid"], "utid": self.tenant}).encode())
            return self._send(h, 200, body)
        return self._send(h, 404, {"error": "not_found"})

    def _managed_identity(self, h: _Handler) -> None:
        """The App Service / Container Apps managed identity endpoint (IDENTITY_ENDPOINT, 2019-08-01)."""
        if h.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return self._send(h, 401, {"error": "invalid_request", "error_description": "bad X-IDENTITY-HEADER"})
        access = self._token({"oid": "mi-object-id", "tid": self.tenant, "idtyp": "app",
                              "appid": h._query.get("client_id") or "system-assigned",
                              "aud": "https://management.azure.com"})
        with self.lock:
            self.tokens[access] = time.time() + 3600
        return self._send(h, 200, {"access_token": access, "expires_on": str(int(time.time()) + 3600),
                                   "resource": h._query.get("resource", ""), "token_type": "Bearer"})

    # -- ARM ------------------------------------------------------------------------------------
    def _rid(self, rg: str, provider_path: str) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{rg}/providers/{provider_path}"

    def _get(self, rid: str) -> dict | None:
        return self.resources.get(rid.lower())

    def _put(self, rid: str, res: dict) -> None:
        self.resources[rid.lower()] = res

    def _profiles(self, loc: str) -> list[dict]:
        names = [("Consumption", 4, 8, 0), ("D4", 4, 16, 0)]
        if loc in GPU_REGIONS:
            names += [("Consumption-GPU-NC24-A100", 24, 220, 1), ("Consumption-GPU-NC8as-T4", 8, 56, 1),
                      ("NC24-A100", 24, 220, 1)]  # dedicated: its own quota (SubscriptionNCA100Gpus)
        return [{"id": f"/subscriptions/{self.subscription}/providers/Microsoft.App/locations/{loc}/"
                       f"availableManagedEnvironmentsWorkloadProfileTypes/{n}", "name": n, "location": loc,
                 "properties": {"category": "GPU" if g else "GeneralPurpose", "applicability": "LocationDefault",
                                "cores": c, "memoryGiB": mem, "gpus": g, "displayName": n}}
                for n, c, mem, g in names]

    def _resource_group(self, h: _Handler, rg: str) -> None:
        rid = f"/subscriptions/{self.subscription}/resourceGroups/{rg}"
        res = self._get(rid)
        if h.command == "HEAD":
            return self._send(h, 204 if res else 404)
        if h.command == "GET":
            return self._send(h, 200, res) if res else self._arm_error(
                h, 404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        if h.command == "PUT":
            body = json.loads(h._data or b"{}")
            new = {"id": rid, "name": rg, "type": "Microsoft.Resources/resourceGroups",
                   "location": body.get("location"), "tags": body.get("tags"),
                   "properties": {"provisioningState": "Succeeded"}}
            self._put(rid, new)
            return self._send(h, 200 if res else 201, new)
        return self._arm_error(h, 405, "MethodNotAllowed", h.command)

    def _lro_accepted(self, h: _Handler, status: int, final: dict | None, style: str = "async",
                      on_done=None, on_poll=None, polls: int | None = None) -> None:
        op = uuid.uuid4().hex
        self.operations[op] = {"left": self.lro_polls if polls is None else polls, "final": final,
                               "on_done": on_done, "on_poll": on_poll}
        url = f"{self.url}/subscriptions/{self.subscription}/providers/Fake.Operations/operations/{op}"
        if style == "location":
            return self._send(h, 202, b"", {"Location": url, "Retry-After": "0"})
        body = dict(final or {})
        if body.get("properties") is not None:
            body["properties"] = {**body["properties"], "provisioningState": "InProgress"}
        return self._send(h, status, body, {"Azure-AsyncOperation": url, "Retry-After": "0"})

    def _operation(self, h: _Handler, op: str) -> None:
        state = self.operations.get(op)
        if state is None:
            return self._arm_error(h, 404, "OperationNotFound", op)
        if state["left"] > 0:
            state["left"] -= 1
            if state.get("on_poll"):
                state["on_poll"]()
            if state.get("location"):
                return self._send(h, 202, b"", {"Location": self.url + h.path, "Retry-After": "0"})
            return self._send(h, 200, {"status": "InProgress"})
        if state.get("on_done"):
            state.pop("on_done")()
        if state.get("location"):
            return self._send(h, 200, state["final"]) if state.get("final") else self._send(h, 204)
        return self._send(h, 200, {"status": "Succeeded", "name": op})

    def _public(self, res: dict) -> dict:
        """A resource as GET shows it: secret values and keys never come back."""
        out = copy.deepcopy(res)
        props = out.get("properties") or {}
        for s in (props.get("configuration") or {}).get("secrets") or []:
            s.pop("value", None)
        la = (props.get("appLogsConfiguration") or {}).get("logAnalyticsConfiguration")
        if la:
            la.pop("sharedKey", None)
        (props.get("azureFile") or {}).pop("accountKey", None)
        return out

    def _list(self, h: _Handler, parent_rid: str) -> None:
        """GET of a collection: the resources directly under `parent_rid` (one level)."""
        prefix = parent_rid.lower().rstrip("/") + "/"
        depth = prefix.count("/")
        items = [self._public(r) for rid, r in self.resources.items()
                 if rid.startswith(prefix) and rid.count("/") == depth]
        return self._send(h, 200, {"value": items})

    def _provider_resource(self, h: _Handler, rg: str, ppath: str) -> None:
        segs = ppath.split("/")
        ns_type = "/".join(segs[:2]).lower()
        if len(segs) == 2 and h.command == "GET":  # list by resource group
            return self._list(h, self._rid(rg, ppath))
        if ns_type == "microsoft.storage/storageaccounts":
            return self._storage_account(h, rg, segs)
        if ns_type == "microsoft.operationalinsights/workspaces":
            return self._workspace(h, rg, segs)
        if ns_type == "microsoft.app/managedenvironments":
            return self._environment(h, rg, segs)
        if ns_type == "microsoft.app/jobs":
            return self._job(h, rg, segs)
        if ns_type == "microsoft.app/containerapps":
            return self._container_app(h, rg, segs)
        return self._arm_error(h, 404, "NoRegisteredProviderFound", ppath)

    def _rg_exists(self, h, rg) -> bool:
        if not self._get(f"/subscriptions/{self.subscription}/resourceGroups/{rg}"):
            self._arm_error(h, 404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
            return False
        return True

    def _storage_account(self, h, rg, segs):
        name = segs[2]
        rid = self._rid(rg, f"Microsoft.Storage/storageAccounts/{name}")
        res = self._get(rid)
        if len(segs) == 3:
            if h.command == "GET":
                return self._send(h, 200, res) if res else self._arm_error(
                    h, 404, "ResourceNotFound", f"The Resource 'Microsoft.Storage/storageAccounts/{name}' under "
                    f"resource group '{rg}' was not found.")
            if h.command == "PUT":
                if not self._rg_exists(h, rg):
                    return None
                body = json.loads(h._data)
                new = {"id": rid, "name": name, "type": "Microsoft.Storage/storageAccounts",
                       "location": body["location"], "kind": body.get("kind"), "sku": body.get("sku"),
                       "properties": {**(body.get("properties") or {}), "provisioningState": "Succeeded",
                                      "primaryEndpoints": {"file": f"{self.url}/{name}/"}}}
                op = {"left": self.lro_polls, "final": new, "location": True}
                opid = uuid.uuid4().hex
                self.operations[opid] = op
                self._put(rid, new)
                (self.share_root / name).mkdir(exist_ok=True)
                url = f"{self.url}/subscriptions/{self.subscription}/providers/Fake.Operations/operations/{opid}"
                return self._send(h, 202, b"", {"Location": url, "Retry-After": "0"})
        if not res:
            return self._arm_error(h, 404, "ResourceNotFound", f"storage account {name} not found")
        if len(segs) == 4 and segs[3] == "listKeys" and h.command == "POST":
            return self._send(h, 200, {"keys": [{"keyName": "key1", "value": base64.b64encode(name.encode() * 4).decode(),
                                                  "permissions": "FULL"}]})
        if len(segs) == 7 and segs[3] == "fileServices" and segs[5] == "shares":
            share = segs[6]
            srid = rid + f"/fileServices/default/shares/{share}"
            sres = self._get(srid)
            if h.command == "GET":
                return self._send(h, 200, sres) if sres else self._arm_error(
                    h, 404, "ShareNotFound", f"The specified share {share} does not exist.")
            if h.command == "PUT":
                body = json.loads(h._data or b"{}")
                new = {"id": srid, "name": share, "type": "Microsoft.Storage/storageAccounts/fileServices/shares",
                       "properties": {**(body.get("properties") or {})}}
                self._put(srid, new)
                (self.share_root / name / share).mkdir(parents=True, exist_ok=True)
                return self._send(h, 201, new)
        return self._arm_error(h, 404, "NotFound", "/".join(segs))

    def _workspace(self, h, rg, segs):
        name = segs[2]
        rid = self._rid(rg, f"Microsoft.OperationalInsights/workspaces/{name}")
        res = self._get(rid)
        if len(segs) == 3:
            if h.command == "GET":
                return self._send(h, 200, res) if res else self._arm_error(
                    h, 404, "ResourceNotFound", f"workspace {name} not found")
            if h.command == "PUT":
                if not self._rg_exists(h, rg):
                    return None
                body = json.loads(h._data)
                new = {"id": rid, "name": name, "type": "Microsoft.OperationalInsights/workspaces",
                       "location": body["location"],
                       "properties": {**(body.get("properties") or {}), "provisioningState": "Succeeded",
                                      "customerId": str(uuid.uuid4())}}
                self._put(rid, new)
                return self._lro_accepted(h, 201, new)
        if res and len(segs) == 4 and segs[3] == "sharedKeys" and h.command == "POST":
            return self._send(h, 200, {"primarySharedKey": "fake-la-key==", "secondarySharedKey": "fake-la-key2=="})
        return self._arm_error(h, 404, "NotFound", "/".join(segs))

    def _environment(self, h, rg, segs):
        name = segs[2]
        rid = self._rid(rg, f"Microsoft.App/managedEnvironments/{name}")
        res = self._get(rid)
        if len(segs) == 3:
            if h.command == "GET":
                if not res:
                    return self._arm_error(h, 404, "ResourceNotFound", f"environment {name} not found")
                out = copy.deepcopy(res)
                la = out["properties"].get("appLogsConfiguration", {}).get("logAnalyticsConfiguration")
                if la:
                    la.pop("sharedKey", None)
                return self._send(h, 200, out)
            if h.command == "PUT":
                if not self._rg_exists(h, rg):
                    return None
                body = json.loads(h._data)
                loc = body["location"].lower().replace(" ", "")
                avail = {p["name"] for p in self._profiles(loc)}
                for wp in body.get("properties", {}).get("workloadProfiles") or []:
                    if wp["workloadProfileType"] not in avail:
                        return self._arm_error(h, 400, "WorkloadProfileTypeNotSupported",
                                               f"Workload profile type {wp['workloadProfileType']} is not "
                                               f"supported in {loc}.")
                new = {"id": rid, "name": name, "type": "Microsoft.App/managedEnvironments", "location": loc,
                       "properties": {**body.get("properties", {}), "provisioningState": "Waiting",
                                      "defaultDomain": f"{name}.{loc}.azurecontainerapps.io",
                                      "eventStreamEndpoint": f"{self.url}/subscriptions/{self.subscription}/"
                                                             f"resourceGroups/{rg}/managedEnvironments/{name}/eventstream"}}
                self._put(rid, new)
                # Environments take minutes, through several states; GETs meanwhile show each one.
                states = iter(self.env_states)

                def advance(res=new):
                    res["properties"]["provisioningState"] = next(states, "InfrastructureSetupInProgress")

                def done(res=new):
                    res["properties"]["provisioningState"] = "Succeeded"

                return self._lro_accepted(h, 201, self._public(new), on_poll=advance, on_done=done,
                                          polls=len(self.env_states))
            if h.command == "PATCH":
                if not res:
                    return self._arm_error(h, 404, "ResourceNotFound", f"environment {name} not found")
                body = json.loads(h._data)
                new_profiles = (body.get("properties") or {}).get("workloadProfiles")
                if new_profiles is not None:
                    old = {p["name"]: p for p in res["properties"].get("workloadProfiles") or []}
                    avail = {p["name"]: p for p in self._profiles(res["location"])}
                    for wp in new_profiles:
                        t = wp["workloadProfileType"]
                        if t not in avail and not t.startswith("NC"):
                            return self._arm_error(h, 400, "WorkloadProfileTypeNotSupported",
                                                   f"Workload profile type {t} is not supported in {res['location']}.")
                        if wp["name"] not in old and not t.startswith("Consumption"):
                            # Only serverless (Consumption*) profiles can be added to an existing environment.
                            return self._arm_error(h, 400, "ManagedEnvironmentWorkloadProfileNotUpdatable",
                                                   f"Dedicated workload profile {wp['name']} ({t}) can only be set "
                                                   "when the environment is created.")
                new = _merge_patch(res, body)
                self._put(rid, new)
                return self._lro_accepted(h, 200, self._public(new))
        if not res:
            return self._arm_error(h, 404, "ResourceNotFound", f"environment {name} not found")
        if len(segs) == 4 and segs[3] == "storages" and h.command == "GET":
            return self._list(h, rid + "/storages")
        if len(segs) == 5 and segs[3] == "storages":
            srid = rid + f"/storages/{segs[4]}"
            sres = self._get(srid)
            if h.command == "GET":
                if not sres:
                    return self._arm_error(h, 404, "ResourceNotFound", f"storage {segs[4]} not found")
                out = copy.deepcopy(sres)
                out["properties"].get("azureFile", {}).pop("accountKey", None)
                return self._send(h, 200, out)
            if h.command == "PUT":
                body = json.loads(h._data)
                new = {"id": srid, "name": segs[4], "type": "Microsoft.App/managedEnvironments/storages",
                       "properties": body.get("properties", {})}
                self._put(srid, new)
                return self._send(h, 200, new)
        return self._arm_error(h, 404, "NotFound", "/".join(segs))

    def _public_job(self, res: dict) -> dict:
        out = copy.deepcopy(res)
        for s in out["properties"].get("configuration", {}).get("secrets") or []:
            s.pop("value", None)
        return out

    def _job(self, h, rg, segs):
        name = segs[2]
        rid = self._rid(rg, f"Microsoft.App/jobs/{name}")
        res = self._get(rid)
        if len(segs) == 3:
            if h.command == "GET":
                return self._send(h, 200, self._public_job(res)) if res else self._arm_error(
                    h, 404, "ResourceNotFound", f"The Resource 'Microsoft.App/jobs/{name}' under resource group "
                    f"'{rg}' was not found.")
            if h.command in ("PUT", "PATCH"):
                body = json.loads(h._data)
                if h.command == "PATCH":
                    if not res:
                        return self._arm_error(h, 404, "ResourceNotFound", f"job {name} not found")
                    new = _merge_patch(res, body)
                else:
                    if not self._rg_exists(h, rg):
                        return None
                    env_id = body.get("properties", {}).get("environmentId", "")
                    env_res = self._get(env_id)
                    if not env_res:
                        return self._arm_error(h, 400, "ManagedEnvironmentNotFound", f"{env_id} not found")
                    wpn = body.get("properties", {}).get("workloadProfileName")
                    names = [p["name"] for p in env_res["properties"].get("workloadProfiles") or []]
                    if wpn and wpn not in names:
                        return self._arm_error(h, 400, "WorkloadProfileNameNotFound",
                                               f"Workload profile '{wpn}' does not exist in the managed environment. "
                                               f"Available profiles: {', '.join(names)}")
                    new = {"id": rid, "name": name, "type": "Microsoft.App/jobs", "location": body["location"],
                           "properties": body.get("properties", {})}
                    if body.get("identity"):
                        new["identity"] = body["identity"]
                for s in new["properties"].get("configuration", {}).get("secrets") or []:
                    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", s["name"]):
                        return self._arm_error(h, 400, "ContainerAppSecretInvalid",
                                               f"Invalid Request: Container app secret(s) with name(s) "
                                               f"'{s['name']}' are invalid: value must consist of lower case "
                                               "alphanumeric characters, '-' or '.'")
                    if "value" not in s:
                        old = {x["name"]: x.get("value") for x in
                               (res or {}).get("properties", {}).get("configuration", {}).get("secrets") or []}
                        if s["name"] in old:
                            s["value"] = old[s["name"]]
                conf = new["properties"].get("configuration") or {}
                names = {x["name"] for x in conf.get("secrets") or []}
                refs = [e["secretRef"] for c in (new["properties"].get("template") or {}).get("containers") or []
                        for e in c.get("env") or [] if e.get("secretRef")]
                refs += [r["passwordSecretRef"] for r in conf.get("registries") or [] if r.get("passwordSecretRef")]
                missing = [r for r in refs if r not in names]
                if missing:
                    return self._arm_error(h, 400, "ContainerAppSecretRefNotFound",
                                           f"Secret(s) '{', '.join(missing)}' referenced by the job are not defined "
                                           "in configuration.secrets.")
                if h.command == "PUT" and not re.fullmatch(r"(?!.*--)[a-z][a-z0-9-]{0,30}[a-z0-9]", name):
                    return self._arm_error(h, 400, "ContainerAppInvalidName",
                                           f"Invalid ContainerApp name '{name}'. A name must consist of lower case "
                                           "alphanumeric characters or '-', start with an alphabetic character, "
                                           "and end with an alphanumeric character and cannot have '--'. The "
                                           "length must not be more than 32 characters.")
                new["properties"]["provisioningState"] = "Succeeded"
                new["properties"]["eventStreamEndpoint"] = (
                    f"{self.url}/subscriptions/{self.subscription}/resourceGroups/{rg}/jobs/{name}/eventstream")
                self._put(rid, new)
                return self._lro_accepted(h, 200 if h.command == "PATCH" else 201, self._public_job(new))
        if not res:
            return self._arm_error(h, 404, "ResourceNotFound", f"job {name} not found")
        action = segs[3] if len(segs) > 3 else ""
        if action == "listSecrets" and h.command == "POST":
            return self._send(h, 200, {"value": [dict(s) for s in
                                                 res["properties"].get("configuration", {}).get("secrets") or []]})
        if action == "getAuthToken" and h.command == "POST":
            token = "logstream-" + uuid.uuid4().hex
            self.log_tokens.add(token)
            return self._send(h, 200, {"id": rid + "/getAuthToken", "name": name, "location": res["location"],
                                       "properties": {"token": token, "expires": _now_iso(time.time() + 3600)}})
        if action == "start" and h.command == "POST":
            body = json.loads(h._data) if h._data else {}
            exe = self._start_execution(rg, name, res, body)
            return self._send(h, 202, {"id": f"{rid}/executions/{exe.name}", "name": exe.name},
                              {"Location": f"{self.url}/subscriptions/{self.subscription}/providers/Fake.Operations/"
                                           f"operations/{self._done_op()}", "Retry-After": "0"})
        if action == "executions":
            if len(segs) == 4 and h.command == "GET":
                return self._send(h, 200, {"value": [self._execution_json(e) for e in self.executions.values()
                                                     if e.job_id.lower() == rid.lower()]})
            exe = self.executions.get(segs[4]) if len(segs) > 4 else None
            if exe is None:
                return self._arm_error(h, 404, "ResourceNotFound", f"execution {segs[4:5]} not found")
            if len(segs) == 5 and h.command == "GET":
                return self._send(h, 200, self._execution_json(exe))
            if len(segs) == 6 and segs[5] == "stop" and h.command == "POST":
                self._stop_execution(exe)
                return self._send(h, 202, b"", {"Location": f"{self.url}/subscriptions/{self.subscription}/"
                                                            f"providers/Fake.Operations/operations/{self._done_op()}",
                                                "Retry-After": "0"})
            if len(segs) == 6 and segs[5] == "replicas" and h.command == "GET":
                reps = [] if exe.done else [{
                    "id": f"{rid}/executions/{exe.name}/replicas/{exe.replica}", "name": exe.replica,
                    "properties": {"containers": [{"name": exe.container, "ready": True, "started": True}]}}]
                return self._send(h, 200, {"value": reps})
        return self._arm_error(h, 404, "NotFound", "/".join(segs))

    def _done_op(self) -> str:
        op = uuid.uuid4().hex
        self.operations[op] = {"left": 0, "final": None}
        return op

    # -- Container Apps (the inference app) ---------------------------------------------------------
    def app_log(self, app: str, text: str, *, end: bool = False) -> None:
        """The app's running replica prints `text` (tests); `end`: its container exits."""
        for exe in list(self.app_replicas.values()):
            if exe.job == app and not exe.done:
                if text:
                    self._emit(exe, text)
                if end:
                    self._finish(exe, "Stopped")

    def _new_revision(self, rid: str, rg: str, app: str, rev: str, template: dict) -> None:
        for exe in list(self.app_replicas.values()):  # activeRevisionsMode Single: the old one stops
            if exe.job == app and not exe.done:
                self._finish(exe, "Deactivated")
                old = self._get(f"{rid}/revisions/{exe.name}")
                if old:
                    old["properties"].update({"active": False, "replicas": 0, "trafficWeight": 0,
                                              "runningState": "Stopped"})
        containers = template.get("containers") or [{"name": app}]
        exe = Execution(name=rev, job_id=rid, rg=rg, job=app, status="Running", template=copy.deepcopy(template))
        exe.replica, exe.container = f"{rev}-{uuid.uuid4().hex[:5]}", containers[0]["name"]
        self.app_replicas[exe.replica] = exe
        self._put(f"{rid}/revisions/{rev}", {
            "id": f"{rid}/revisions/{rev}", "name": rev, "type": "Microsoft.App/containerApps/revisions",
            "properties": {"createdTime": _now_iso(), "active": True, "replicas": 1, "trafficWeight": 100,
                           "healthState": "Healthy", "provisioningState": "Provisioned", "runningState": "Running",
                           "template": copy.deepcopy(template)}})
        self._emit(exe, f"[fake-app] revision {rev} started: {' '.join(containers[0].get('command') or [])}")
        self._emit(exe, f"serving on http://0.0.0.0:8000/v1 (revision {rev})")

    def _container_app(self, h, rg, segs):
        name = segs[2]
        rid = self._rid(rg, f"Microsoft.App/containerApps/{name}")
        res = self._get(rid)
        if len(segs) == 3:
            if h.command == "GET":
                return self._send(h, 200, self._public_job(res)) if res else self._arm_error(
                    h, 404, "ResourceNotFound", f"The Resource 'Microsoft.App/containerApps/{name}' under resource "
                    f"group '{rg}' was not found.")
            if h.command not in ("PUT", "PATCH"):
                return self._arm_error(h, 405, "MethodNotAllowed", h.command)
            body = json.loads(h._data)
            if h.command == "PATCH":
                if not res:
                    return self._arm_error(h, 404, "ResourceNotFound", f"container app {name} not found")
                new = _merge_patch(res, body)
            else:
                if not self._rg_exists(h, rg):
                    return None
                new = {"id": rid, "name": name, "type": "Microsoft.App/containerApps", "location": body["location"],
                       "tags": body.get("tags"), "properties": copy.deepcopy(body.get("properties", {}))}
            props = new["properties"]
            env = self._get(props.get("environmentId", ""))
            if not env:
                return self._arm_error(h, 400, "ManagedEnvironmentNotFound", f"{props.get('environmentId')} not found")
            old_secrets = {x["name"]: x.get("value") for x in
                           (res or {}).get("properties", {}).get("configuration", {}).get("secrets") or []}
            for s in props.get("configuration", {}).get("secrets") or []:
                if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", s["name"]):
                    return self._arm_error(h, 400, "ContainerAppSecretInvalid",
                                           f"Invalid Request: Container app secret(s) with name(s) '{s['name']}' "
                                           "are invalid: value must consist of lower case alphanumeric characters, "
                                           "'-' or '.'")
                if "value" not in s and s["name"] in old_secrets:
                    s["value"] = old_secrets[s["name"]]
            names = {s["name"] for s in props.get("configuration", {}).get("secrets") or []}
            for c in props.get("template", {}).get("containers") or []:
                for e in c.get("env") or []:
                    if e.get("secretRef") and e["secretRef"] not in names:
                        return self._arm_error(h, 400, "ContainerAppSecretRefNotFound",
                                               f"Secret '{e['secretRef']}' referenced by env {e['name']} not found")
            tmpl = props.get("template") or {}
            old_tmpl = (res or {}).get("properties", {}).get("template")
            rev = (res or {}).get("properties", {}).get("latestRevisionName")
            if res is None or tmpl != old_tmpl:
                suffix = tmpl.get("revisionSuffix") or uuid.uuid4().hex[:7]
                if self._get(f"{rid}/revisions/{name}--{suffix}"):
                    return self._arm_error(h, 400, "ContainerAppRevisionSuffixConflict",
                                           f"Revision with suffix {suffix} already exists.")
                rev = f"{name}--{suffix}"
                self._new_revision(rid, rg, name, rev, tmpl)
            domain = env["properties"]["defaultDomain"]
            ingress = props.get("configuration", {}).get("ingress")
            if ingress is not None:
                ingress["fqdn"] = f"{name}.{domain}" if ingress.get("external") else f"{name}.internal.{domain}"
            props.update({"provisioningState": "Succeeded", "runningStatus": "Running", "latestRevisionName": rev,
                          "latestReadyRevisionName": rev, "latestRevisionFqdn": f"{rev}.{domain}",
                          "eventStreamEndpoint": f"{self.url}/subscriptions/{self.subscription}/resourceGroups/{rg}/"
                                                 f"containerApps/{name}/eventstream"})
            self._put(rid, new)
            return self._lro_accepted(h, 200 if h.command == "PATCH" else 201, self._public_job(new))
        if not res:
            return self._arm_error(h, 404, "ResourceNotFound", f"container app {name} not found")
        action = segs[3]
        if action == "listSecrets" and h.command == "POST":
            return self._send(h, 200, {"value": [dict(s) for s in
                                                 res["properties"].get("configuration", {}).get("secrets") or []]})
        if action == "getAuthToken" and h.command == "POST":
            token = "logstream-" + uuid.uuid4().hex
            self.log_tokens.add(token)
            return self._send(h, 200, {"id": rid + "/getAuthToken", "name": name, "location": res["location"],
                                       "properties": {"token": token, "expires": _now_iso(time.time() + 3600)}})
        if action == "revisions" and h.command == "GET":
            if len(segs) == 4:
                prefix = f"{rid}/revisions/".lower()
                return self._send(h, 200, {"value": [v for k, v in self.resources.items()
                                                     if k.startswith(prefix) and k.count("/") == prefix.count("/")]})
            rev = self._get(f"{rid}/revisions/{segs[4]}")
            if rev is None:
                return self._arm_error(h, 404, "ResourceNotFound", f"revision {segs[4]} not found")
            if len(segs) == 5:
                return self._send(h, 200, rev)
            if len(segs) == 6 and segs[5] == "replicas":
                reps = [{"id": f"{rid}/revisions/{e.name}/replicas/{e.replica}", "name": e.replica,
                         "type": "Microsoft.App/containerApps/revisions/replicas",
                         "properties": {"createdTime": _now_iso(e.start), "runningState": "Running",
                                        "containers": [{"name": e.container, "ready": True, "started": True,
                                                        "runningState": "Running"}]}}
                        for e in self.app_replicas.values() if e.name == segs[4] and not e.done]
                return self._send(h, 200, {"value": reps})
        return self._arm_error(h, 404, "NotFound", "/".join(segs))

    # -- executions -----------------------------------------------------------------------------
    def _execution_json(self, exe: Execution) -> dict:
        props = {"status": exe.status, "startTime": _now_iso(exe.start),
                 "template": exe.template}
        if exe.end:
            props["endTime"] = _now_iso(exe.end)
        return {"id": f"{exe.job_id}/executions/{exe.name}", "name": exe.name,
                "type": "Microsoft.App/jobs/executions", "properties": props}

    def _start_execution(self, rg: str, job: str, res: dict, body: dict) -> Execution:
        props = res["properties"]
        jt = copy.deepcopy(props.get("template", {}))
        containers = jt.get("containers") or []
        given = {c.get("name"): c for c in body.get("containers") or []}
        for c in containers:
            c.update({k: v for k, v in given.get(c.get("name"), {}).items() if v is not None})
        # As the service does (microsoft/azure-container-apps #909, #1044): an execution template's
        # containers carry no volumeMounts, so a start with an override runs without the share.
        exe = Execution(name=f"{job}-{uuid.uuid4().hex[:7]}", job_id=res["id"], rg=rg, job=job,
                        template={"containers": containers}, overridden=bool(body.get("containers")))
        exe.replica = f"{exe.name}-{uuid.uuid4().hex[:5]}"
        exe.container = containers[0]["name"] if containers else job
        self.executions[exe.name] = exe
        threading.Thread(target=self._run_execution, args=(exe, res), daemon=True).start()
        return exe

    def _mount_dir(self, res: dict) -> Path | None:
        props = res["properties"]
        env = self._get(props["environmentId"])
        for vol in props.get("template", {}).get("volumes") or []:
            st = self._get(f"{env['id']}/storages/{vol.get('storageName')}") if env else None
            if st:
                af = st["properties"]["azureFile"]
                return self.share_root / af["accountName"] / af["shareName"]
        return None

    def _emit(self, exe: Execution, text: str) -> None:
        with exe.cond:
            t = time.time()
            if exe.lines and t <= exe.lines[-1][0]:
                t = exe.lines[-1][0] + 1e-6
            exe.lines.append((t, text))
            exe.cond.notify_all()

    def _run_execution(self, exe: Execution, res: dict) -> None:
        time.sleep(self.processing_s)
        if self.hold_status:  # no replica ever runs (no capacity, an image that cannot be pulled)
            exe.status = self.hold_status
            while not exe.stop_requested:
                time.sleep(0.02)
        if exe.stop_requested:
            return self._finish(exe, "Stopped")
        secrets = {s["name"]: s.get("value") for s in
                   res["properties"].get("configuration", {}).get("secrets") or []}
        env = {**os.environ, **self.run_env, "PYTHONUNBUFFERED": "1"}
        container = exe.template["containers"][0] if exe.template.get("containers") else {}
        for e in container.get("env") or []:
            if e.get("secretRef"):
                if e["secretRef"] in secrets:
                    env[e["name"]] = secrets[e["secretRef"]]
            elif e.get("value") is not None:
                env[e["name"]] = e["value"]
        mount = None if exe.overridden else self._mount_dir(res)
        if mount is None:  # what the container sees at /mount without the share: an empty folder
            mount = self.root / "unmounted" / exe.name
            mount.mkdir(parents=True, exist_ok=True)
        env["AITK_MOUNT"] = str(mount)  # the share, "mounted" where the container would see /mount
        env["AITK_WORK"] = str(self.root / "work" / exe.name)
        env["CONTAINER_APP_JOB_NAME"] = exe.job  # as Container Apps sets them in a job's containers
        env["CONTAINER_APP_JOB_EXECUTION_NAME"] = exe.name
        env["AITK_CLAIM_POLL_S"] = "0.05"
        if self.runner == "engine":
            # The job's own command, with /mount where the share lies and this Python as python3.
            command = container.get("command") or []
            script = command[-1] if command[:2] == ["/bin/bash", "-c"] else " ".join(command)
            env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
            cmd = ["/bin/bash", "-c", script.replace("/mount", str(mount))]
        else:
            cmd = [sys.executable, "-c", self.script or "print('hello from the fake container')"]
        exe.status = "Running"
        if self.wait_for_stream:
            exe.streamed.wait(10)
        exe.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=str(mount or self.root))
        for raw in exe.proc.stdout:
            self._emit(exe, raw.decode("utf-8", "replace").rstrip("\n"))
        code = exe.proc.wait()
        if exe.stop_requested:
            return self._finish(exe, "Stopped")
        self._finish(exe, "Succeeded" if code == 0 else "Failed", None if code == 0 else f"exit code {code}")

    def _finish(self, exe: Execution, status: str, reason: str | None = None) -> None:
        with exe.cond:
            exe.status, exe.end, exe.done, exe.reason = status, time.time(), True, reason
            exe.cond.notify_all()

    def _stop_execution(self, exe: Execution) -> None:
        exe.stop_requested = True
        if exe.proc and exe.proc.poll() is None:
            exe.proc.terminate()

    # -- log stream -----------------------------------------------------------------------------
    def _logstream(self, h: _Handler) -> None:
        mo = re.match(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/jobs/([^/]+)/executions/([^/]+)/replicas/([^/]+)"
                      r"/containers/([^/]+)/logstream$", h._path)
        app = re.match(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/containerApps/([^/]+)/revisions/([^/]+)"
                       r"/replicas/([^/]+)/containers/([^/]+)/logstream$", h._path)
        mo = mo or app
        auth = h.headers.get("Authorization", "")
        if not mo:
            return self._send(h, 404, "not found", ctype="text/plain")
        if auth[7:] not in self.log_tokens:
            return self._send(h, 401, "Unauthorized", ctype="text/plain")
        exe = self.app_replicas.get(mo.group(3)) if app else self.executions.get(mo.group(2))
        if exe is None or exe.replica != mo.group(3) or exe.done:
            return self._send(h, 404, f"replica {mo.group(3)} not found", ctype="text/plain")
        if exe.status in ("Processing", "Unknown"):  # listed, but its container is not running yet
            return self._send(h, 400, f"container {mo.group(4)} is not running yet (replica {exe.replica} is "
                                      "pending)", ctype="text/plain")
        follow = h._query.get("follow", "false").lower() == "true"
        tail = min(int(h._query.get("tailLines") or 20), self.stream_tail_cap)
        drop = self.stream_drops.pop(0) if self.stream_drops else None
        h.send_response(200)
        h.send_header("Content-Type", "text/plain; charset=utf-8")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        self.requests.append(("GET", h._path, 200))
        exe.streamed.set()

        def chunk(text: str) -> None:
            data = text.encode()
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        sent = 0
        chunk(f"{_now_iso()}  Connecting to the container '{exe.container}'...\n")
        chunk(f"{_now_iso()}  Successfully Connected to container: '{exe.container}' [Execution: '{exe.name}', "
              f"Replica: '{exe.replica}']\n")
        with exe.cond:
            pos = max(0, len(exe.lines) - tail)
        while True:
            with exe.cond:
                while pos >= len(exe.lines) and not exe.done and follow:
                    exe.cond.wait(0.5)
                batch = exe.lines[pos:]
                finished = exe.done or not follow
            for t, text in batch:
                if drop is not None and sent >= drop:
                    h.close_connection = True
                    h.connection.shutdown(2) if hasattr(h.connection, "shutdown") else None
                    return
                chunk(self._stream_line(t, text))
                sent += 1
            pos += len(batch)
            if finished and pos >= len(exe.lines):
                break
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def _stream_line(self, t: float, text: str) -> str:
        if self.stream_format == "json":  # 7 fractional digits and an explicit offset, as real streams send
            stamp = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + \
                f"{int(t * 1e7) % 10}+00:00"
            return json.dumps({"TimeStamp": stamp, "Log": f"F {text}"}) + "\n"
        if self.stream_format == "cri":
            return f"{_now_iso(t)} stdout F {text}\n"
        return f"{_now_iso(t)} {text}\n"

    # -- Log Analytics --------------------------------------------------------------------------
    def _la_query(self, h: _Handler) -> None:
        auth = h.headers.get("Authorization", "")
        if self.tokens.get(auth[7:], 0) < time.time():
            return self._send(h, 401, {"error": {"code": "InvalidTokenError", "message": "bad token"}})
        body = json.loads(h._data or b"{}")
        query = body.get("query", "")
        mo = re.search(r"ContainerGroupName_s\s+startswith\s+'([^']+)'", query)
        prefix = mo.group(1) if mo else ""
        bounds = re.findall(r"TimeGenerated\s*(>=|>|<=|<)\s*datetime\(([^)]+)\)", query)
        now = time.time()
        everything = list(self.executions.values()) + list(self.app_replicas.values())
        if not any(t <= now - self.la_delay_s for exe in everything for t, _ in list(exe.lines)):
            # A new workspace has no table until its first log line is ingested.
            return self._send(h, 400, {"error": {
                "code": "BadArgumentError", "message": "The request had some invalid properties",
                "innererror": {"code": "SemanticError", "message": "A semantic error occurred.",
                               "innererror": {"code": "SEM0100", "message": "'where' operator: Failed to resolve "
                                              "table or column expression named 'ContainerAppConsoleLogs_CL'"}}}})
        rows = []
        for exe in everything:
            if not exe.replica.startswith(prefix):
                continue
            for t, text in list(exe.lines):
                if t > now - self.la_delay_s:
                    continue
                ok = True
                for op, value in bounds:
                    b = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
                    ok &= {">": t > b, ">=": t >= b, "<": t < b, "<=": t <= b}[op]
                if ok:
                    rows.append([_now_iso(t), text, exe.replica])
        rows.sort(key=lambda r: r[0])
        self._send(h, 200, {"tables": [{"name": "PrimaryResult", "columns": [
            {"name": "TimeGenerated", "type": "datetime"}, {"name": "Log_s", "type": "string"},
            {"name": "ContainerGroupName_s", "type": "string"}], "rows": rows}]})

    # -- Azure Files ----------------------------------------------------------------------------
    def _files(self, h: _Handler) -> None:
        parts = h._path.strip("/").split("/")
        account = parts[0]
        if not h.headers.get("Authorization", "").startswith("SharedKey "):
            return self._storage_error(h, 403, "AuthenticationFailed", "Server failed to authenticate the request.")
        if len(parts) < 2:
            return self._storage_error(h, 400, "InvalidUri", "no share")
        share_dir = self.share_root / account / parts[1]
        if not share_dir.is_dir():
            return self._storage_error(h, 404, "ShareNotFound", "The specified share does not exist.")
        rel = "/".join(parts[2:])
        target = share_dir / rel if rel else share_dir
        q = h._query
        ts = email.utils.formatdate(usegmt=True)
        common = {"ETag": f'"0x{uuid.uuid4().hex[:16].upper()}"', "Last-Modified": ts, "x-ms-version": "2025-11-05"}
        if q.get("restype") == "directory":
            if q.get("comp") == "list":
                if not target.is_dir():
                    return self._storage_error(h, 404, "ResourceNotFound", "The specified resource does not exist.")
                entries = []
                for child in sorted(target.iterdir()):
                    if child.is_dir():
                        entries.append(f"<Directory><Name>{escape(child.name)}</Name><Properties /></Directory>")
                    else:
                        entries.append(f"<File><Name>{escape(child.name)}</Name><Properties><Content-Length>"
                                       f"{child.stat().st_size}</Content-Length></Properties></File>")
                xml = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="{self.url}/'
                       f'{account}/" ShareName="{parts[1]}" DirectoryPath="{escape(rel)}"><Entries>'
                       f'{"".join(entries)}</Entries><NextMarker /></EnumerationResults>')
                return self._send(h, 200, xml, common, ctype="application/xml")
            if h.command == "PUT":
                if target.exists():
                    return self._storage_error(h, 409, "ResourceAlreadyExists", "The specified resource already exists.")
                if not target.parent.is_dir():
                    return self._storage_error(h, 404, "ParentNotFound", "The specified parent path does not exist.")
                target.mkdir()
                return self._send(h, 201, b"", {**common, "x-ms-request-server-encrypted": "true"})
            if h.command in ("GET", "HEAD"):
                if not target.is_dir():
                    return self._storage_error(h, 404, "ResourceNotFound", "The specified resource does not exist.")
                return self._send(h, 200, b"", common)
            if h.command == "DELETE":
                shutil.rmtree(target, ignore_errors=True)
                return self._send(h, 202, b"", common)
        meta_in = {k[len("x-ms-meta-"):]: v for k, v in h.headers.items() if k.lower().startswith("x-ms-meta-")}
        meta_out = {f"x-ms-meta-{k}": v for k, v in self.file_meta.get(str(target), {}).items()}
        if h.command == "PUT" and q.get("comp") == "metadata":
            if not target.is_file():
                return self._storage_error(h, 404, "ResourceNotFound", "The specified resource does not exist.")
            self.file_meta[str(target)] = {k.lower(): v for k, v in meta_in.items()}
            return self._send(h, 200, b"", common)
        if h.command == "PUT" and q.get("comp") == "range":
            if not target.is_file():
                return self._storage_error(h, 404, "ResourceNotFound", "The specified resource does not exist.")
            rng = h.headers.get("x-ms-range") or h.headers.get("Range")
            start, end = (int(x) for x in rng.split("=")[1].split("-"))
            with open(target, "r+b") as f:
                f.seek(start)
                f.write(h._data[: end - start + 1])
            return self._send(h, 201, b"", {**common, "x-ms-request-server-encrypted": "true"})
        if h.command == "PUT":
            if not target.parent.is_dir():
                return self._storage_error(h, 404, "ParentNotFound", "The specified parent path does not exist.")
            size = int(h.headers.get("x-ms-content-length") or 0)
            with open(target, "wb") as f:
                f.truncate(size)
            self.file_meta[str(target)] = {k.lower(): v for k, v in meta_in.items()}
            return self._send(h, 201, b"", {**common, "x-ms-request-server-encrypted": "true"})
        if h.command in ("GET", "HEAD"):
            if not target.is_file():
                return self._storage_error(h, 404, "ResourceNotFound", "The specified resource does not exist.")
            data = target.read_bytes()
            total = len(data)
            hdrs = {**common, **meta_out, "x-ms-type": "File", "Accept-Ranges": "bytes"}
            rng = h.headers.get("x-ms-range") or h.headers.get("Range")
            if rng and h.command == "GET":
                start, end = (int(x) for x in rng.split("=")[1].split("-"))
                if total == 0 or start >= total:
                    return self._storage_error(h, 416, "InvalidRange", "The range specified is invalid.")
                end = min(end, total - 1)
                hdrs["Content-Range"] = f"bytes {start}-{end}/{total}"
                return self._send(h, 206, data[start:end + 1], hdrs, ctype="application/octet-stream")
            if h.command == "HEAD":
                return self._send(h, 200, b"", {**hdrs, "Content-Length": str(total)},
                                  ctype="application/octet-stream")
            return self._send(h, 200, data, hdrs, ctype="application/octet-stream")
        if h.command == "DELETE":
            if not target.is_file():
                return self._storage_error(h, 404, "ResourceNotFound", "The specified resource does not exist.")
            target.unlink()
            return self._send(h, 202, b"", common)
        return self._storage_error(h, 400, "UnsupportedHttpVerb", h.command)
