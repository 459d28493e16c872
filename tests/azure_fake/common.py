"""What the fake's services share: time and id helpers, the request handler, an execution's state."""

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

from fake_http import read_body

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
        return read_body(self)

    def _any(self):
        self.server.fake._dispatch(self)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _any
