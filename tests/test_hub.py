"""aitk.core.hub against a local Hugging Face Hub look-alike on 127.0.0.1.

The real huggingface_hub client talks to `FakeHub` (HF_ENDPOINT), which answers what the client
asks, as read from huggingface_hub 2.x: `GET /api/models/{repo}/revision/{rev}?blobs=True`
(repo info with siblings, sizes, blob ids, LFS sha256 and the commit), `HEAD
/{repo}/resolve/{rev}/{file}` (X-Repo-Commit, ETag, Content-Length; LFS files answer 302 to a
"CDN" on another port with X-Linked-Etag / X-Linked-Size, like the Hub), `GET` with Range
(206 + Content-Range) for resuming, and the Hub's error headers (X-Error-Code: GatedRepo,
RepoNotFound, EntryNotFound; X-Error-Message for a bad token). It serves the tiny model's files.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import socket
import threading
from argparse import ArgumentParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from aitk.cli import model_cmds
from aitk.cli.main import build_parser
from aitk.core import catalog as cat
from aitk.core import hub, tiny
from aitk.core.errors import AitkError

REPO = "aitk-test/tiny-phi3"
ONNX_REPO = "aitk-test/tiny-phi3-onnx"
GATED = "aitk-gated/tiny-phi3"
ALLOWED_TOKEN = "hf_" + "a" * 34
OTHER_TOKEN = "hf_" + "b" * 34
BAD_TOKEN = "hf_" + "c" * 34


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, files: dict[str, bytes], *, gated: bool = False, commit: str | None = None):
        self.files = files
        self.gated = gated
        self.commit = commit or hashlib.sha1(repr(sorted((k, len(v)) for k, v in files.items())).encode()).hexdigest()
        self.hidden: set[str] = set()  # listed by the API, 404 on resolve

    @staticmethod
    def is_lfs(name: str) -> bool:
        return name.endswith((".safetensors", ".onnx", ".data"))


class FakeHub:
    """Two servers on 127.0.0.1: the Hub (API + resolve) and a CDN for LFS blobs."""

    def __init__(self, repos: dict[str, Repo]):
        self.repos = repos
        self.blobs = {hashlib.sha256(d).hexdigest(): d for r in repos.values() for d in r.files.values()}
        self.log: list[tuple[str, str, dict]] = []
        self.cut_once: dict[str, int] = {}   # file name -> bytes sent before the connection drops
        self.lock = threading.Lock()
        self.hub = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.cdn = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        for s in (self.hub, self.cdn):
            s.daemon_threads = True
            s.block_on_close = False  # keep-alive connections of the client must not hold teardown
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def close(self) -> None:
        for s in (self.hub, self.cdn):
            s.shutdown()
            s.server_close()

    def requests(self, method: str | None = None, contains: str = "") -> list[tuple[str, str, dict]]:
        with self.lock:
            return [r for r in self.log if (method is None or r[0] == method) and contains in r[1]]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._route(head=True)

            def do_GET(self):
                self._route(head=False)

            # -- helpers --
            def _send(self, status, headers=None, body=b"", head=False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def _error(self, status, code=None, message=None, head=False, extra=None):
                headers = dict(extra or {})
                if code:
                    headers["X-Error-Code"] = code
                if message:
                    headers["X-Error-Message"] = message
                headers["Content-Type"] = "application/json"
                self._send(status, headers, json.dumps({"error": message or code}).encode(), head)

            def _token(self):
                auth = self.headers.get("Authorization", "")
                return auth[7:] if auth.startswith("Bearer ") else None

            def _serve_bytes(self, data, headers, head, name):
                rng = self.headers.get("Range")
                if rng:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else len(data) - 1
                    if start >= len(data):
                        return self._error(416, head=head, extra={"Content-Range": f"bytes */{len(data)}"})
                    part = data[start:end + 1]
                    headers = dict(headers, **{"Content-Range": f"bytes {start}-{end}/{len(data)}"})
                    return self._send(206, headers, part, head)
                cut = fake.cut_once.pop(name, None) if not head else None
                if cut is not None:  # promise everything, send `cut` bytes, drop the connection
                    self.send_response(200)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._send(200, headers, data, head)

            def _route(self, head):
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                with fake.lock:
                    fake.log.append(("HEAD" if head else "GET", path, {k.lower(): v for k, v in self.headers.items()}))
                if path.startswith("/cdn/"):
                    sha = path[5:]
                    if sha not in fake.blobs:
                        return self._error(404, head=head)
                    name = next(n for r in fake.repos.values() for n, d in r.files.items()
                                if hashlib.sha256(d).hexdigest() == sha)
                    return self._serve_bytes(fake.blobs[sha], {"ETag": f'"{sha}"'}, head, name)
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
                if m:
                    return self._api(m.group(1), m.group(2), head)
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m:
                    return self._resolve(m.group(1), m.group(2), m.group(3), head)
                return self._error(404, head=head)

            def _auth_error(self, repo, head, strict):
                token = self._token()
                if token == BAD_TOKEN:
                    return self._error(401, None, "Invalid credentials in Authorization header", head) or True
                if repo.gated and strict:
                    if token is None:
                        return self._error(401, "GatedRepo", "Access to model is restricted. You must have access "
                                           "to it and be authenticated to access it. Please log in.", head) or True
                    if token != ALLOWED_TOKEN:
                        return self._error(403, "GatedRepo", "Access to model is restricted and you are not in the "
                                           "authorized list.", head) or True
                return False

            def _api(self, repo_id, rev, head):
                repo = fake.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found", head)
                if self._auth_error(repo, head, strict=False):
                    return
                if rev not in ("main", repo.commit):
                    return self._error(404, "RevisionNotFound", "Invalid rev id", head)
                siblings = []
                for name, data in repo.files.items():
                    s = {"rfilename": name, "size": len(data), "blobId": git_sha1(data)}
                    if Repo.is_lfs(name):
                        s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    siblings.append(s)
                body = {"_id": "x", "id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                        "gated": "manual" if repo.gated else False, "disabled": False, "siblings": siblings,
                        "tags": [], "downloads": 0, "likes": 0}
                self._send(200, {"Content-Type": "application/json"}, json.dumps(body).encode(), head)

            def _resolve(self, repo_id, rev, name, head):
                repo = fake.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found", head)
                if self._auth_error(repo, head, strict=True):
                    return
                if rev not in ("main", repo.commit):
                    return self._error(404, "RevisionNotFound", "Invalid rev id", head)
                if name not in repo.files or name in repo.hidden:
                    return self._error(404, "EntryNotFound", "Entry not found", head,
                                       {"X-Repo-Commit": repo.commit})
                data = repo.files[name]
                if Repo.is_lfs(name):
                    sha = hashlib.sha256(data).hexdigest()
                    return self._send(302, {"Location": f"{fake.cdn_url}/cdn/{sha}", "X-Repo-Commit": repo.commit,
                                            "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                                            "ETag": f'"{git_sha1(data)}"'}, b"", head)
                headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{git_sha1(data)}"',
                           "Content-Type": "application/octet-stream"}
                return self._serve_bytes(data, headers, head, name)

        return Handler


# --- Fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_files(tiny_test_model) -> dict[str, bytes]:
    """The tiny model's real files (conftest builds it once per session, ~5 s)."""
    return {p.name: p.read_bytes() for p in sorted(tiny_test_model.iterdir()) if p.is_file()}


@pytest.fixture
def fake(tiny_files):
    onnx = {"cpu/model.onnx": os.urandom(200_000), "cpu/genai_config.json": b'{"model": {"type": "phi3"}}',
            "cpu/tokenizer.json": tiny_files["tokenizer.json"],
            "cuda/model.onnx": os.urandom(150_000), "cuda/genai_config.json": b'{"model": {"type": "phi3", "x": 1}}',
            "README.md": b"# onnx builds\n"}
    server = FakeHub({REPO: Repo(dict(tiny_files, **{"empty.txt": b""})), ONNX_REPO: Repo(onnx),
                      GATED: Repo(dict(tiny_files), gated=True)})
    yield server
    server.close()


USER_CATALOG = f"""
schema_version = 1

[[models]]
id = "tiny-hub"
name = "Tiny Phi-3 on the fake hub"
publisher = "aitk tests"
repo = "{REPO}"
source = "https://example.invalid/tiny"
architecture = "Phi3ForCausalLM"
params = 200000
license = "MIT"
gated = false
context_length = 512
chat_template = "phi3"
lora_targets = ["qkv_proj"]
hidden_size = 64
num_layers = 2
num_heads = 4
num_kv_heads = 4
intermediate_size = 128
vocab_size = 2048

[[models.variants]]
runtime = "cpu"
precision = "fp32"
repo = "{ONNX_REPO}"
subfolder = "cpu"
source = "https://example.invalid/tiny-onnx"

[[models.variants]]
runtime = "cuda"
precision = "fp16"
repo = "{ONNX_REPO}"
subfolder = "cuda"
source = "https://example.invalid/tiny-onnx"

[[models]]
id = "tiny-gated"
name = "Gated tiny"
publisher = "aitk tests"
repo = "{GATED}"
source = "https://example.invalid/gated"
architecture = "Phi3ForCausalLM"
params = 200000
license = "Custom"
gated = true
context_length = 512
chat_template = "phi3"
lora_targets = ["qkv_proj"]
hidden_size = 64
num_layers = 2
num_heads = 4
num_kv_heads = 4
intermediate_size = 128
vocab_size = 2048
"""


@pytest.fixture
def env(fake, tmp_path, monkeypatch):
    """Everything pointed at tmp dirs and the fake hub; no token, online."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE",
                "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    for name in ("DATA", "CONFIG", "CACHE"):
        monkeypatch.setenv(f"AITK_{name}_DIR", str(tmp_path / name.lower()))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "catalog.toml").write_text(USER_CATALOG)
    monkeypatch.setattr(hub, "RETRY_DELAYS", (0.01, 0.02, 0.05))
    # conftest sets HF_HUB_OFFLINE=1 for the session, and huggingface_hub reads it once at import
    # (its HTTP session refuses every request while it is set): these tests are online.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path


def cache(env_path: Path) -> Path:
    return env_path / "hf-cache"


class Events(list):
    def __call__(self, p: hub.Progress) -> None:
        self.append(p)


# --- Full download ----------------------------------------------------------------------------------


def test_full_download_lands_in_the_standard_cache(env, fake, tiny_files):
    events = Events()
    res = hub.pull("tiny-hub", on_progress=events)
    repo = fake.repos[REPO]
    assert res.revision == repo.commit and res.variant == "finetune" and not res.from_cache
    assert res.path == cache(env) / "models--aitk-test--tiny-phi3" / "snapshots" / repo.commit
    # Every fine-tuning file (the tiny model has no duplicates to skip), byte-identical, empty ones too.
    assert sorted(res.files) == sorted(repo.files)
    for name, data in repo.files.items():
        assert (res.path / name).read_bytes() == data
        assert (res.path / name).is_symlink()
    assert (cache(env) / "models--aitk-test--tiny-phi3" / "refs" / "main").read_text() == repo.commit
    # LFS file went through the CDN without the token header, small files straight from the hub.
    assert fake.requests("GET", "/cdn/")
    assert res.total_bytes == sum(len(d) for d in repo.files.values()) == res.downloaded_bytes

    # Progress: bytes, speed and ETA, monotonic, ending at 100%.
    assert events[-1].finished and events[-1].bytes_done == events[-1].bytes_total == res.total_bytes
    assert events[-1].files_done == events[-1].files_total == len(res.files)
    done = [e.bytes_done for e in events]
    assert done == sorted(done)
    assert all(e.speed >= 0 for e in events) and events[-1].eta == 0

    # huggingface_hub itself finds the snapshot offline, complete (our tree listing), same folder.
    from huggingface_hub import hf_hub_download, snapshot_download

    allow, ignore = cat.load().get("tiny-hub").finetune_patterns()
    path = snapshot_download(REPO, cache_dir=cache(env), local_files_only=True, allow_patterns=allow,
                             ignore_patterns=ignore)
    assert Path(path) == res.path
    assert Path(hf_hub_download(REPO, "config.json", cache_dir=cache(env), local_files_only=True)).read_bytes() \
        == tiny_files["config.json"]

    # The hub's tree listing we wrote is the whole repo, not just what was pulled.
    from huggingface_hub import get_cached_repo_tree

    assert {f.path for f in get_cached_repo_tree(REPO, cache_dir=cache(env))} == set(repo.files)

    # A second pull is a no-op: one API call, no file traffic.
    before = len(fake.requests())
    again = hub.pull("tiny-hub")
    assert again.from_cache and again.downloaded_bytes == 0 and "already on disk" in again.message
    assert [r[1] for r in fake.requests()[before:]] == [f"/api/models/{REPO}/revision/main"]


def test_variant_pull_fetches_only_its_subfolder(env, fake):
    res = hub.pull("tiny-hub", "cpu")
    assert res.variant == "cpu-fp32"
    assert res.path.name == "cpu" and (res.path / "model.onnx").is_file()
    assert sorted(res.files) == ["cpu/genai_config.json", "cpu/model.onnx", "cpu/tokenizer.json"]
    assert not fake.requests(contains="/cuda/") and not fake.requests(contains="README")
    snapshot = res.path.parent
    assert sorted(p.name for p in snapshot.iterdir()) == ["cpu"]


def test_connection_cut_mid_file_resumes_with_range(env, fake, tiny_files):
    size = len(tiny_files["model.safetensors"])
    fake.cut_once["model.safetensors"] = size // 3
    res = hub.pull("tiny-hub")
    assert (res.path / "model.safetensors").read_bytes() == tiny_files["model.safetensors"]
    ranges = [r[2].get("range") for r in fake.requests("GET", "/cdn/") if r[2].get("range")]
    assert ranges == [f"bytes={size // 3}-"]
    assert res.downloaded_bytes == res.total_bytes  # the resumed part is not counted twice


def test_cancelled_download_resumes_on_the_next_pull(env, fake, tiny_files, monkeypatch):
    monkeypatch.setattr(hub, "PROGRESS_INTERVAL", 0.0)
    size = len(tiny_files["model.safetensors"])
    started: dict[str, int] = {}
    tasks: list[hub.PullTask] = []
    seen_threads = set()

    def on_progress(p: hub.Progress) -> None:
        seen_threads.add(threading.current_thread().name)
        if p.file == "model.safetensors":
            started.setdefault("at", p.bytes_done)
            if p.bytes_done - started["at"] >= 256 * 1024:
                tasks[0].cancel()

    tasks.append(hub.PullTask("tiny-hub", on_progress=on_progress))
    tasks[0].start()
    with pytest.raises(hub.DownloadCancelled) as err:
        tasks[0].wait(timeout=30)
    assert "cancelled" in str(err.value) and "resume" in err.value.hint
    assert seen_threads == {"aitk-pull-tiny-hub"}  # progress came from the worker thread

    sha = hashlib.sha256(tiny_files["model.safetensors"]).hexdigest()
    partial = cache(env) / "models--aitk-test--tiny-phi3" / "blobs" / f"{sha}.incomplete"
    kept = partial.stat().st_size
    assert 256 * 1024 <= kept < size
    # The cache scan sees the partial download.
    listed = {m.repo_id: m for m in hub.scan_local().models}
    assert listed[REPO].incomplete_bytes == kept

    events = Events()
    res = hub.pull("tiny-hub", on_progress=events)
    assert (res.path / "model.safetensors").read_bytes() == tiny_files["model.safetensors"]
    assert not partial.exists()
    ranges = [r[2].get("range") for r in fake.requests("GET", "/cdn/") if r[2].get("range")]
    assert ranges == [f"bytes={kept}-"]
    assert events[0].resumed_bytes >= kept and res.resumed_bytes >= kept
    assert res.downloaded_bytes == res.total_bytes - res.resumed_bytes


def test_two_pulls_of_the_same_model_at_once(env, fake, tiny_files):
    tasks = [hub.start_pull("tiny-hub"), hub.start_pull("tiny-hub")]
    results = [t.wait(timeout=60) for t in tasks]
    assert results[0].path == results[1].path
    assert (results[0].path / "model.safetensors").read_bytes() == tiny_files["model.safetensors"]
    blobs = cache(env) / "models--aitk-test--tiny-phi3" / "blobs"
    assert not list(blobs.glob("*.incomplete"))


def test_corrupt_partial_is_detected_and_dropped(env, fake, tiny_files):
    sha = hashlib.sha256(tiny_files["model.safetensors"]).hexdigest()
    blobs = cache(env) / "models--aitk-test--tiny-phi3" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{sha}.incomplete").write_bytes(b"\0" * 1000)  # not a prefix of the real file
    with pytest.raises(AitkError, match="corrupt"):
        hub.pull("tiny-hub")
    assert not (blobs / f"{sha}.incomplete").exists()
    res = hub.pull("tiny-hub")
    assert (res.path / "model.safetensors").read_bytes() == tiny_files["model.safetensors"]


# --- Errors -----------------------------------------------------------------------------------------


def test_gated_repo_without_token_says_where_to_accept_the_licence(env, fake):
    with pytest.raises(AitkError) as err:
        hub.pull("tiny-gated")
    assert f"accept the licence at {fake.url}/{GATED}" in err.value.message
    assert "HF_TOKEN" in err.value.hint
    heads = fake.requests("HEAD", "/resolve/")
    assert heads and "authorization" not in heads[0][2]


def test_gated_repo_with_a_token_without_access(env, fake, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)
    with pytest.raises(AitkError) as err:
        hub.pull("tiny-gated")
    assert "gated" in err.value.message and "no access yet" in err.value.message
    assert f"{fake.url}/{GATED}" in err.value.hint
    assert fake.requests("HEAD", "/resolve/")[0][2]["authorization"] == f"Bearer {OTHER_TOKEN}"


def test_gated_repo_with_an_accepted_token_downloads(env, fake, monkeypatch, tiny_files):
    monkeypatch.setenv("HF_TOKEN", ALLOWED_TOKEN)
    res = hub.pull("tiny-gated")
    assert (res.path / "config.json").read_bytes() == tiny_files["config.json"]
    cdn = fake.requests("GET", "/cdn/")
    assert cdn and all("authorization" not in r[2] for r in cdn)  # never sent off the hub


def test_invalid_token_is_reported_as_such(env, fake, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", BAD_TOKEN)
    with pytest.raises(AitkError) as err:
        hub.pull("tiny-hub")
    assert "token was refused (401" in err.value.message and "settings/tokens" in err.value.hint


def test_missing_repo_is_a_404_with_a_next_step(env, fake):
    with pytest.raises(AitkError) as err:
        hub.pull("aitk-test/does-not-exist")
    assert err.value.message == f"repository aitk-test/does-not-exist not found on {fake.url}"
    assert "aitk catalog search" in err.value.hint


def test_missing_file_names_the_file(env, fake):
    fake.repos[REPO].hidden.add("config.json")
    with pytest.raises(AitkError) as err:
        hub.pull("tiny-hub")
    assert err.value.message.startswith(f"config.json is not in {REPO}")


def test_unknown_revision(env, fake):
    with pytest.raises(AitkError, match="revision 'v9' of"):
        hub.pull("tiny-hub", revision="v9")


def test_disk_full_before_and_during_a_download(env, fake, monkeypatch):
    real = hub.shutil.disk_usage
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    with pytest.raises(AitkError) as err:
        hub.pull("tiny-hub")
    assert err.value.message.startswith("not enough disk space for tiny-hub")
    assert "HF_HUB_CACHE" in err.value.hint
    monkeypatch.setattr(hub.shutil, "disk_usage", real)

    # ENOSPC while writing: clear message, partial kept for later.
    err2 = hub.map_error(OSError(errno.ENOSPC, "No space left on device"), repo_id=REPO)
    assert "disk full" in err2.message and "resumes" in err2.hint


# --- Offline ----------------------------------------------------------------------------------------


def test_offline_mode_uses_the_cache_and_says_so(env, fake, monkeypatch, tiny_files):
    first = hub.pull("tiny-hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(fake.requests())
    res = hub.pull("tiny-hub")
    assert len(fake.requests()) == before  # not a single request
    assert res.offline and res.from_cache and res.path == first.path
    assert res.message.startswith("offline (HF_HUB_OFFLINE is set): using the cached copy of tiny-hub")
    assert sorted(res.files) == sorted(first.files)
    with pytest.raises(AitkError) as err:
        hub.pull("tiny-hub", "cpu")  # never downloaded
    assert "not in the cache" in err.value.message and "offline" in err.value.message


def test_offline_with_an_incomplete_copy_says_what_is_missing(env, fake, monkeypatch):
    first = hub.pull("tiny-hub")
    (first.path / "tokenizer.json").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AitkError, match=r"incomplete \(1 of \d+ files missing, e.g. tokenizer.json\)"):
        hub.pull("tiny-hub")


def test_unreachable_hub_falls_back_to_a_complete_cache(env, fake, monkeypatch):
    hub.pull("tiny-hub")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    monkeypatch.setenv("HF_ENDPOINT", dead)
    res = hub.pull("tiny-hub")
    assert res.offline and res.message.startswith(f"cannot reach {dead}: using the cached copy")
    with pytest.raises(AitkError) as err:
        hub.pull("tiny-gated")
    assert "cannot reach" in err.value.message


# --- Tiny, local models, removal ----------------------------------------------------------------------


def test_tiny_is_built_not_downloaded(env, fake, monkeypatch, tmp_path):
    built = tmp_path / "built-tiny"
    built.mkdir()
    (built / "config.json").write_text("{}")
    monkeypatch.setattr(tiny, "ensure_tiny", lambda *a, **k: built)
    before = len(fake.requests())
    res = hub.pull("tiny", "cpu")
    assert res.path == built and res.variant == "local" and res.files == ["config.json"]
    assert "nothing to download" in res.message
    assert len(fake.requests()) == before


def test_plan_for_locally_built_variants_fetches_the_weights():
    p = hub.plan("qwen2.5-0.5b", "cpu")
    assert p.repo_id == "Qwen/Qwen2.5-0.5B-Instruct" and p.variant == "finetune"
    assert "built from them on export" in p.note
    p = hub.plan("phi-3-mini-4k", "cpu")
    assert p.repo_id == "microsoft/Phi-3-mini-4k-instruct-onnx"
    assert p.allow == ["cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4/*"]
    p = hub.plan("mistral-7b-instruct-v0.3")
    assert "consolidated*" in p.ignore and p.gated
    with pytest.raises(AitkError, match="no variant 'tpu'"):
        hub.plan("phi-3-mini-4k", "tpu")


def test_scan_lists_the_cache_and_folders_and_remove_frees_it(env, fake, tiny_files, tmp_path):
    hub.pull("tiny-hub")
    hub.pull("tiny-hub", "cpu")
    hub.pull("tiny-hub", "cuda")
    scan = hub.scan_local(include_builtin=False)
    by_repo = {m.repo_id: m for m in scan.models}
    base, onnx = by_repo[REPO], by_repo[ONNX_REPO]
    assert base.name == "tiny-hub" and base.uses == ["tiny-hub:finetune"] and base.kind == "hf-cache"
    assert base.size_bytes == sum(len(d) for d in fake.repos[REPO].files.values())
    assert sorted(onnx.uses) == ["tiny-hub:cpu-fp32", "tiny-hub:cuda-fp16"]
    assert base.revisions == [fake.repos[REPO].commit[:12]] and base.refs == ["main"]

    # One variant of a shared ONNX repo: only its subfolder goes.
    preview = hub.remove("tiny-hub", "cuda", dry_run=True)
    assert not preview.executed and preview.freed_bytes == sum(
        len(d) for n, d in fake.repos[ONNX_REPO].files.items() if n.startswith("cuda/"))
    done = hub.remove("tiny-hub", "cuda")
    onnx_after = {m.repo_id: m for m in hub.scan_local(include_builtin=False).models}[ONNX_REPO]
    assert onnx_after.uses == ["tiny-hub:cpu-fp32"] and done.executed

    # The whole model: every repo it uses.
    gone = hub.remove("tiny-hub")
    assert gone.freed_bytes > 0 and "freed" in gone.message
    assert not [m for m in hub.scan_local(include_builtin=False).models if m.kind == "hf-cache"]
    with pytest.raises(AitkError, match="not on disk"):
        hub.remove("tiny-hub")


def test_user_folders(env, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "genai_config.json").write_text("{}")
    (folder / "model.onnx").write_bytes(b"x" * 1000)
    added = hub.add_folder(folder, "mine")
    assert added.path == folder.resolve()
    listed = [m for m in hub.scan_local(include_builtin=False).models if m.kind == "folder"]
    assert [(m.name, m.size_bytes, m.files) for m in listed] == [("mine", 1002, 2)]
    with pytest.raises(AitkError, match="does not look like a model folder"):
        hub.add_folder(tmp_path)
    r = hub.remove("mine")
    assert r.kind == "folder" and folder.exists()  # unregistered, files untouched
    assert hub.list_folders() == []

    hub.folders_path().write_text('[[folders]]\nname = "x"\npath = 3\n')
    with pytest.raises(AitkError) as err:
        hub.list_folders()
    assert str(hub.folders_path()) in err.value.message and "folders[0].path" in err.value.message


def test_progress_speed_and_eta(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(hub.time, "monotonic", lambda: clock[0])
    events = Events()
    t = hub._Tracker("m", total=1000, files_total=1, files_done=0, initial=100, callback=events)
    for _ in range(4):
        clock[0] += 1.0
        t.advance(100)
    last = events[-1]
    assert last.bytes_done == 500 and last.resumed_bytes == 100
    assert last.speed == pytest.approx(100.0) and last.eta == pytest.approx(5.0)
    assert last.fraction == pytest.approx(0.5)


# --- CLI --------------------------------------------------------------------------------------------


def parser() -> ArgumentParser:
    return build_parser()


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    args = parser().parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_cli_pull_ls_rm(env, fake, capsys):
    code, out = run_cli(["model", "pull", "tiny-hub"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[-1].startswith("downloaded tiny-hub")
    progress = [line for line in lines if line.startswith("tiny-hub: ")]
    assert 2 <= len(progress) <= 11 and "100.0%" in progress[-1] and "ETA" in progress[0]
    assert "\r" not in out  # not a terminal: plain lines

    code, out = run_cli(["model", "pull", "tiny-hub", "--variant", "cpu", "--json"], capsys)
    assert code == 0 and json.loads(out)["variant"] == "cpu-fp32"

    code, out = run_cli(["model", "ls"], capsys)
    assert "tiny-hub" in out and "finetune" in out and "cpu-fp32" in out
    code, out = run_cli(["model", "ls", "--json"], capsys)
    assert {m["repo_id"] for m in json.loads(out)["models"] if m["kind"] == "hf-cache"} == {REPO, ONNX_REPO}

    with pytest.raises(AitkError, match="without confirmation"):
        run_cli(["model", "rm", "tiny-hub"], capsys)
    code, out = run_cli(["model", "rm", "tiny-hub", "--dry-run"], capsys)
    assert "would free" in out
    code, out = run_cli(["model", "rm", "tiny-hub", "--yes"], capsys)
    assert code == 0 and "freed" in out


def test_cli_progress_on_a_terminal_updates_one_line():
    buf = io.StringIO()
    printer = model_cmds.ProgressPrinter(buf, tty=True)
    for done in (0, 500, 1000):
        printer(hub.Progress("m", "f", done, 1000, 0, 1, 50.0, (1000 - done) / 50, finished=done == 1000))
    text = buf.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "ETA 10s" in text and "50 B/s" in text


def test_hf_hub_download_does_not_resume_a_cancelled_download(env, fake, tiny_files):
    """Why core/hub.py keeps its own puller (issue 10, item 5), measured against this fake hub.

    huggingface_hub 2.x `hf_hub_download` writes each file to a process-unique temporary file and
    deletes it when the download fails (a cancel raised from `tqdm_class` included): the next
    call starts again at byte 0, without a Range request. Within one call it does retry a dropped
    connection with Range, but a cancelled or crashed pull of a multi-GB model would start over.
    If this test fails, the library has learned to resume: switch to it and delete our copy."""
    from huggingface_hub import hf_hub_download
    from tqdm.auto import tqdm

    class CancelAfter256K(tqdm):
        def update(self, n=1):
            super().update(n)
            if self.n >= 256 * 1024:
                raise KeyboardInterrupt("cancelled by the user")

    size = len(tiny_files["model.safetensors"])
    assert size > 512 * 1024
    with pytest.raises(KeyboardInterrupt):
        hf_hub_download(REPO, "model.safetensors", cache_dir=cache(env), endpoint=fake.url,
                        tqdm_class=CancelAfter256K)
    blobs = cache(env) / "models--aitk-test--tiny-phi3" / "blobs"
    assert [p for p in blobs.iterdir() if p.name.endswith(".incomplete")] == []  # the partial is gone
    path = hf_hub_download(REPO, "model.safetensors", cache_dir=cache(env), endpoint=fake.url)
    assert Path(path).read_bytes() == tiny_files["model.safetensors"]
    ranges = [r[2].get("range") for r in fake.requests("GET", "/cdn/") if r[2].get("range")]
    assert ranges == []  # the second download fetched the whole file again
