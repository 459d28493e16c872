"""A loopback stand-in for the Hugging Face Hub's write API, as huggingface_hub 2.x calls it for
`create_repo` and `upload_folder` (HF_HUB_DISABLE_XET=1: the LFS protocol, not Xet):

- POST /api/repos/create                           {"name", "organization", "visibility"?, "type"}
- POST /api/validate-yaml                          (README.md front matter)
- POST /api/models/{repo}/preupload/{revision}     which files go through LFS
- POST /{repo}.git/info/lfs/objects/batch          where to PUT each LFS object
- PUT  /lfs/{oid}                                  the object's bytes (sha256 checked)
- POST /api/models/{repo}/commit/{revision}        ndjson: header, file (base64), lfsFile (oid)

Every API request needs `Authorization: Bearer <token>`; the repos' files end up in `.repos`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_http import read_body

LFS_SUFFIXES = (".onnx", ".onnx_adapter", ".data", ".safetensors", ".bin")


class HubFake:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "files": {path: bytes}, "commits": [...]}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                return read_body(self)

            def _send(self, code: int, data: dict | None = None):
                body = json.dumps(data or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self, method: str):
                body = self._body()
                path = self.path.split("?")[0]
                fake.requests.append((method, path))
                # The LFS upload href is pre-signed (S3 on the real Hub): no Authorization on it.
                if not path.startswith("/lfs/") and self.headers.get("Authorization") != f"Bearer {fake.token}":
                    return self._send(401, {"error": "Invalid credentials in Authorization header"})
                base = f"http://{self.headers['Host']}"
                if method == "POST" and path == "/api/repos/create":
                    req = json.loads(body)
                    repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    if repo in fake.repos:
                        return self._send(409, {"error": "You already created this model repo", "url": f"{base}/{repo}"})
                    fake.repos[repo] = {"private": req.get("visibility") == "private" or bool(req.get("private")),
                                        "files": {}, "commits": []}
                    return self._send(200, {"url": f"{base}/{repo}", "name": repo})
                if method == "POST" and path == "/api/validate-yaml":
                    return self._send(200, {"errors": [], "warnings": []})
                if m := re.fullmatch(r"/api/models/(.+)/preupload/([^/]+)", path):
                    if m[1] not in fake.repos:
                        return self._send(404, {"error": "Repository not found"})
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [
                        {"path": f["path"], "shouldIgnore": False,
                         "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) or f["size"] > 100_000 else "regular"}
                        for f in files]})
                if m := re.fullmatch(r"/(.+)\.git/info/lfs/objects/batch", path):
                    objs = json.loads(body)["objects"]
                    return self._send(200, {"transfer": "basic", "objects": [
                        {"oid": o["oid"], "size": o["size"],
                         "actions": {"upload": {"href": f"{base}/lfs/{o['oid']}"}}}
                        for o in objs]})
                if method == "PUT" and (m := re.fullmatch(r"/lfs/([0-9a-f]{64})", path)):
                    if hashlib.sha256(body).hexdigest() != m[1]:
                        return self._send(400, {"error": "sha256 mismatch"})
                    fake.lfs[m[1]] = body
                    return self._send(200)
                if m := re.fullmatch(r"/api/models/(.+)/commit/([^/]+)", path):
                    repo = fake.repos.get(m[1])
                    if repo is None:
                        return self._send(404, {"error": "Repository not found"})
                    items = [json.loads(line) for line in body.splitlines() if line.strip()]
                    for item in items:
                        value = item["value"]
                        if item["key"] == "file":
                            repo["files"][value["path"]] = base64.b64decode(value["content"])
                        elif item["key"] == "lfsFile":
                            if value["oid"] not in fake.lfs:
                                return self._send(400, {"error": f"LFS object {value['oid']} was never uploaded"})
                            repo["files"][value["path"]] = fake.lfs[value["oid"]]
                    oid = hashlib.sha1(body).hexdigest()
                    repo["commits"].append({"oid": oid, "summary": items[0]["value"].get("summary")})
                    return self._send(200, {"commitUrl": f"{base}/{m[1]}/commit/{oid}", "commitOid": oid,
                                            "pullRequestUrl": None})
                return self._send(404, {"error": f"no route {method} {path}"})

            def do_POST(self):
                self._route("POST")

            def do_PUT(self):
                self._route("PUT")

            def do_GET(self):
                self._route("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
