"""The Container Apps log stream as the fake answers it: text, JSON or CRI lines, tails, drops."""

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


class LogStreamService:
    """The replica log stream (mixed into FakeAzure)."""

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
