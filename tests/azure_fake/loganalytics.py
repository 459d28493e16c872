"""The Log Analytics query API as the fake answers it (ContainerAppConsoleLogs_CL)."""

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


class LogAnalyticsService:
    """Log Analytics queries (mixed into FakeAzure)."""

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
