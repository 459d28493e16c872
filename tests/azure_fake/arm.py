"""Azure Resource Manager as the fake answers it: resource groups, storage accounts and shares,
Log Analytics workspaces, Container Apps environments (+ storages), jobs (+ executions, secrets,
auth tokens), container apps (+ revisions, replicas), long-running operations; executions run
as local subprocesses."""

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

from .common import ENTRY_SCRIPT, GPU_REGIONS, Execution, _Handler, _merge_patch, _now_iso, _b64url  # noqa: F401


class ArmService:
    """ARM routes and resources (mixed into FakeAzure: state lives on the server)."""

    def _arm(self, h: _Handler) -> None:
        """ARM: the bearer token, api-version, then the ARM route table."""
        p, m = h._path, h.command
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
