"""Entra ID as the fake answers it: OpenID metadata, client secret, workload identity (a federated
assertion), device code, refresh; and the managed identity endpoint (IDENTITY_ENDPOINT)."""

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


class IdentityService:
    """Token endpoints (mixed into FakeAzure: state lives on the server)."""

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
