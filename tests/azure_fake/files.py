"""The Azure Files data plane as the fake answers it: a folder per share."""

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


class FilesService:
    """Azure Files REST (mixed into FakeAzure)."""

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
