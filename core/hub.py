"""Getting models onto the machine, and knowing what is already there.

Downloads go through huggingface_hub into the standard Hugging Face cache (`HF_HUB_CACHE`, the
same one transformers and Olive read), only the files a variant needs:

- `plan(target, variant)` turns a catalog id (or a raw `owner/name` repo) and a variant (`cpu`,
  `cuda`, `directml`, `cpu-int4`..., or `finetune`) into a repo and file patterns. The embedded
  tiny model is never downloaded: it maps to `tiny.model_dir()` and is built on first use.
- `pull(...)` resolves the revision with the hub API (`model_info(files_metadata=True)`), fetches
  each missing file's metadata with `get_hf_file_metadata` (HEAD), and downloads it itself, so
  that it can report progress (bytes, speed, ETA) to a callback, stop when a `threading.Event`
  is set, and resume: the partial file is kept as `blobs/<etag>.incomplete` (the name
  `scan_cache_dir` knows) and continued with an HTTP Range request, within the same pull after a
  dropped connection and by the next pull after a cancel, a crash or a full disk. Finished files
  are checked against their ETag (sha256 for LFS files, git blob sha1 otherwise) and linked
  into `snapshots/<commit>/` exactly as huggingface_hub does; the revision's `refs/` and the
  hub's tree listing are written too, so `snapshot_download(local_files_only=True)` and
  transformers find the files offline.
- `start_pull(...)` runs a pull in a worker thread (for the TUI); `PullTask.cancel()` stops it.
- Offline (`HF_HUB_OFFLINE=1`), or when the hub cannot be reached, a complete cached copy is
  used and the result says so.
- `scan_local()` lists what is on disk (HF cache via `scan_cache_dir`, user-added folders from
  `config_dir()/models.toml`, the built tiny model); `remove()` frees it through the cache's own
  delete strategy.

Why not `hf_hub_download(..., tqdm_class=...)` (measured with huggingface_hub 2.4 against the fake
hub in tests/test_hub.py, which pins it): it downloads to a process-unique temporary file and
deletes it when the download fails, a cancel raised from the tqdm class included, so the next
pull sends no Range and starts again at byte 0; only a dropped connection within one call is
resumed. A cancelled multi-GB pull would start over, hence this puller.

Every failure a user can fix becomes an `AitkError` with the next step (gated repo, bad token,
missing repo or file, disk full, offline).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from . import catalog as cat
from . import paths, tiny
from .errors import AitkError

CHUNK_SIZE = 8 << 20               # bytes per read when hashing a partial file
PROGRESS_INTERVAL = 0.1            # seconds between progress callbacks (the last one always comes)
SPEED_WINDOW = 5.0                 # seconds of history the speed is averaged over
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)  # waits before resuming after a dropped connection
DISK_MARGIN = 64 * 1024 * 1024     # free space kept on top of what a pull needs
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
FOLDERS_FILE = "models.toml"
TOKEN_URL = "https://huggingface.co/settings/tokens"


# --- Environment ------------------------------------------------------------------------------------
# Read at call time (huggingface_hub reads its constants once, at import).


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hf_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hf_home() -> Path:
    value = os.environ.get("HF_HOME")
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface"


def hf_cache_dir() -> Path:
    value = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(value).expanduser() if value else hf_home() / "hub"


def is_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return _truthy(env) if env is not None else constants.HF_HUB_OFFLINE


def token_file() -> Path:
    value = os.environ.get("HF_TOKEN_PATH")
    return Path(value).expanduser() if value else hf_home() / "token"


def hf_token(explicit: str | None = None) -> str | None:
    """The token downloads send: explicit, else HF_TOKEN (or HUGGING_FACE_HUB_TOKEN), else the
    token file `hf auth login` writes. Read directly, so nothing is refreshed over the network."""
    if explicit:
        return explicit.strip()
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = (os.environ.get(var) or "").strip()
        if value:
            return value
    try:
        value = token_file().read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return value or None


def repo_folder(repo_id: str, cache: Path | None = None) -> Path:
    return (cache or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


# --- Results and progress ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """One progress report, sent from the downloading thread."""

    label: str
    file: str | None
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    speed: float                 # bytes per second over the last few seconds
    eta: float | None            # seconds left at that speed
    resumed_bytes: int = 0       # already on disk when the pull started (cached files, partials)
    finished: bool = False

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else (1.0 if self.finished else 0.0)


ProgressCallback = Callable[[Progress], None]


class DownloadCancelled(AitkError):
    """The pull was cancelled; what was downloaded is kept and the next pull resumes it."""


@dataclass
class PullResult:
    model_id: str | None
    repo_id: str | None
    variant: str
    revision: str | None
    path: Path
    files: list[str] = field(default_factory=list)
    total_bytes: int = 0
    downloaded_bytes: int = 0
    resumed_bytes: int = 0
    from_cache: bool = False
    offline: bool = False
    message: str = ""
    note: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass(frozen=True)
class PullPlan:
    label: str
    model_id: str | None
    repo_id: str | None
    variant: str                 # "finetune", a variant key, "local" or "repo"
    allow: list[str] | None = None
    ignore: list[str] | None = None
    subfolder: str | None = None
    local: bool = False
    gated: bool = False
    expected_bytes: int | None = None
    note: str | None = None


def plan(target: str, variant: str | None = None, *, catalog: cat.Catalog | None = None,
         include: list[str] | None = None) -> PullPlan:
    """What a pull of `target` (catalog id or `owner/name`) with `variant` fetches."""
    catalog = catalog or cat.load()
    entry = catalog.find(target)
    if entry is None:
        if not cat.REPO_RE.match(target):
            catalog.get(target)  # raises the "did you mean" error
        if variant not in (None, "finetune", "repo"):
            raise AitkError(f"{target} is not in the catalog, so it has no variant {variant!r}",
                            "pull it without --variant (use --include to pick files), or add it to your catalog")
        return PullPlan(target, None, target, "repo", allow=include or None)
    if entry.local:
        return PullPlan(entry.id, entry.id, None, "local", local=True,
                        note="built on this machine, never downloaded")
    if variant in (None, "finetune"):
        allow, ignore = entry.finetune_patterns()
        return PullPlan(entry.id, entry.id, entry.repo, "finetune", allow=include or allow, ignore=ignore,
                        gated=entry.gated, expected_bytes=entry.download_bytes)
    v = entry.variant(variant)
    if not v.published:
        allow, ignore = entry.finetune_patterns()
        return PullPlan(entry.id, entry.id, entry.repo, "finetune", allow=allow, ignore=ignore, gated=entry.gated,
                        expected_bytes=entry.download_bytes,
                        note=f"no published {v.runtime} build: fetching the fine-tuning weights; "
                             f"the {v.precision} ONNX model is built from them on export")
    gated = entry.gated if v.repo == entry.repo else False
    return PullPlan(entry.id, entry.id, v.repo, v.key, allow=include or v.allow_patterns, subfolder=v.subfolder,
                    gated=gated, expected_bytes=v.download_bytes)


class _Tracker:
    """Turns byte counts into throttled `Progress` events with speed and ETA."""

    def __init__(self, label: str, total: int, files_total: int, files_done: int, initial: int,
                 callback: ProgressCallback | None):
        self.label, self.total, self.files_total, self.files_done = label, total, files_total, files_done
        self.done = self.resumed = initial
        self.transferred = 0
        self.file: str | None = None
        self.callback = callback
        self.samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])
        self.last_emit = 0.0

    def start_file(self, name: str) -> None:
        self.file = name
        self.emit(force=True)

    def advance(self, n: int) -> None:
        self.done += n
        self.transferred += n
        self.emit()

    def rewind(self, n: int) -> None:
        self.done -= n

    def file_done(self) -> None:
        self.files_done += 1
        self.emit(force=True)

    def speed(self, now: float) -> float:
        self.samples.append((now, self.transferred))
        while len(self.samples) > 2 and now - self.samples[1][0] >= SPEED_WINDOW:
            self.samples.popleft()
        t0, b0 = self.samples[0]
        return (self.transferred - b0) / (now - t0) if now > t0 else 0.0

    def emit(self, *, force: bool = False, finished: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if not (force or finished) and now - self.last_emit < PROGRESS_INTERVAL:
            return
        self.last_emit = now
        if finished:
            self.done = self.total  # files another process finished meanwhile count as done
        speed = self.speed(now)
        left = max(self.total - self.done, 0)
        eta = 0.0 if finished or not left else (left / speed if speed > 0 else None)
        self.callback(Progress(self.label, self.file, self.done, self.total, self.files_done, self.files_total,
                               speed, eta, self.resumed, finished))


# --- Errors -----------------------------------------------------------------------------------------


def map_error(exc: BaseException, *, repo_id: str, endpoint: str | None = None, token: str | None = None,
              cache: Path | None = None, filename: str | None = None, revision: str = "main") -> AitkError | None:
    """The user-facing error for a download failure, or None when it is not one a user can fix."""
    import httpx2
    from huggingface_hub import errors as hfe

    if isinstance(exc, AitkError):
        return exc
    endpoint = endpoint or hf_endpoint()
    page = f"{endpoint}/{repo_id}"
    cache = cache or hf_cache_dir()
    login = f"create a read token at {TOKEN_URL} and `export HF_TOKEN=hf_...` (or run `hf auth login`)"
    if isinstance(exc, hfe.GatedRepoError):
        if token:
            return AitkError(f"{repo_id} is gated and your token's account has no access yet",
                             f"accept the licence at {page} while signed in as that account (some need approval), "
                             "then pull again")
        return AitkError(f"{repo_id} is gated: accept the licence at {page}, then download with a token", login)
    if isinstance(exc, hfe.RevisionNotFoundError):
        return AitkError(f"revision {revision!r} of {repo_id} not found", "use `main` or an existing commit/tag")
    if isinstance(exc, hfe.RepositoryNotFoundError):
        return AitkError(f"repository {repo_id} not found on {endpoint}",
                         "check the id (`aitk catalog search ...`); if it is private, "
                         + ("your token has no access to it" if token else "set HF_TOKEN to a token with access"))
    if isinstance(exc, (hfe.RemoteEntryNotFoundError,)) or (
            isinstance(exc, hfe.EntryNotFoundError) and not isinstance(exc, hfe.LocalEntryNotFoundError)):
        return AitkError(f"{filename or 'a file'} is not in {repo_id} ({revision})",
                         f"the repo changed: fix the entry in your catalog ({cat.user_path()})")
    if isinstance(exc, hfe.OfflineModeIsEnabled) or isinstance(exc, hfe.LocalEntryNotFoundError):
        return AitkError(f"offline (HF_HUB_OFFLINE is set) and {repo_id} is not in the cache ({cache})",
                         "unset HF_HUB_OFFLINE on a connected machine and pull again")
    if isinstance(exc, hfe.HfHubHTTPError):
        status = exc.response.status_code if getattr(exc, "response", None) is not None else None
        if status == 401:
            if token:
                return AitkError("the Hugging Face token was refused (401 Unauthorized)",
                                 f"it is invalid or revoked: {login}")
            return AitkError(f"{repo_id} needs you to sign in (401 Unauthorized)", login)
        if status == 403:
            return AitkError(f"access to {repo_id} denied (403 Forbidden)",
                             f"accept the licence at {page}; a fine-grained token also needs "
                             "'read access to contents of public gated repos'")
        if status == 429:
            return AitkError("the Hub is rate-limiting downloads (429)", "wait a minute and pull again; "
                             "signed-in users (HF_TOKEN) get higher limits")
        if status is not None and status >= 500:
            return AitkError(f"the Hub answered {status} (server error)", "it may be down: pull again later")
        return AitkError(f"download of {repo_id} failed: HTTP {status}", str(exc).strip().splitlines()[0][:200])
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return AitkError(f"disk full while downloading {repo_id} into {cache}",
                         "free space (`aitk model ls`, `aitk model rm ID`) or set HF_HUB_CACHE to a larger disk, "
                         "then pull again: the partial download is kept and resumes")
    if isinstance(exc, httpx2.TransportError):
        return AitkError(f"cannot reach {endpoint}: {exc or type(exc).__name__}",
                         "check the network or proxy (HTTPS_PROXY); to work with cached models only, "
                         "set HF_HUB_OFFLINE=1")
    if isinstance(exc, PermissionError):
        return AitkError(f"cannot write to {cache}: permission denied", "set HF_HUB_CACHE to a writable folder")
    return None


def _raise_mapped(exc: BaseException, **kw) -> None:
    mapped = map_error(exc, **kw)
    if mapped is None or mapped is exc:
        raise exc
    raise mapped from exc


# --- Pull -------------------------------------------------------------------------------------------


@dataclass
class _File:
    name: str
    size: int | None
    etag_hint: str | None   # expected etag (lfs sha256 or blob id), to find a partial before the HEAD


def _filter(names: list[str], allow: list[str] | None, ignore: list[str] | None) -> list[str]:
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(names, allow_patterns=allow, ignore_patterns=ignore))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text() == text:
        return
    # Thread id too: two pulls in one process write the same ref at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_tree_cache(storage: Path, commit: str, siblings: list[Any]) -> None:
    """The hub's own listing of the revision, so hub tools can tell a complete snapshot offline."""
    try:
        from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
    except ImportError:
        return
    entries = {}
    for s in siblings:
        if s.size is None or s.blob_id is None:
            return
        entries[s.rfilename] = TreeCacheEntry(
            size=s.size, blob_id=s.blob_id,
            lfs_sha256=s.lfs.sha256 if s.lfs else None, lfs_size=s.lfs.size if s.lfs else None)
    try:
        write_tree_cache(str(storage), commit, entries)
    except Exception:  # best effort: only an optimisation for offline use
        pass


def _hasher_for(etag: str, size: int | None):
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        return hashlib.sha256()
    if re.fullmatch(r"[0-9a-f]{40}", etag) and size is not None:
        h = hashlib.sha1()
        h.update(f"blob {size}\0".encode())
        return h
    return None


def _link(blob: Path, pointer: Path) -> None:
    """snapshots/<commit>/<file> -> ../../blobs/<etag>, relative like huggingface_hub; a copy where
    symlinks are unavailable. Idempotent, and safe when two pulls link the same file."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(blob, pointer.parent)
    if pointer.is_symlink() and os.readlink(pointer) == rel:
        return
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink(missing_ok=True)
    try:
        os.symlink(rel, pointer)
    except FileExistsError:  # another pull linked it meanwhile
        return
    except (OSError, NotImplementedError):  # no symlinks (Windows without developer mode): copy
        tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.copyfile(blob, tmp)
        os.replace(tmp, pointer)


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _cancelled(label: str, partial_bytes: int = 0) -> DownloadCancelled:
    kept = f" ({cat.human_bytes(partial_bytes)} kept)" if partial_bytes else ""
    return DownloadCancelled(f"download of {label} cancelled{kept}", "pull again to resume where it stopped")


class _Puller:
    def __init__(self, repo_id: str, *, revision: str, allow, ignore, subfolder, token, label, model_id, variant,
                 on_progress, cancel, note):
        self.repo_id, self.revision = repo_id, revision
        self.allow, self.ignore, self.subfolder = allow, ignore, subfolder
        self.token = hf_token(token)
        self.label, self.model_id, self.variant, self.note = label, model_id, variant, note
        self.on_progress = on_progress
        self.cancel = cancel or threading.Event()
        self.endpoint = hf_endpoint()
        self.cache = hf_cache_dir()
        self.storage = repo_folder(repo_id, self.cache)
        self.tracker: _Tracker | None = None

    # -- helpers --

    def _err_kw(self, filename: str | None = None) -> dict:
        return dict(repo_id=self.repo_id, endpoint=self.endpoint, token=self.token, cache=self.cache,
                    filename=filename, revision=self.revision)

    def _result(self, commit: str | None, files: list[str], **kw) -> PullResult:
        snap = self.storage / "snapshots" / (commit or "")
        path = snap / self.subfolder if self.subfolder else snap
        return PullResult(self.model_id, self.repo_id, self.variant, commit, path, files, note=self.note, **kw)

    # -- offline / cached --

    def from_cache(self, reason: str, cause: BaseException | None = None) -> PullResult:
        commit = self.revision if COMMIT_RE.match(self.revision) else None
        ref = self.storage / "refs" / self.revision
        if commit is None and ref.is_file():
            commit = ref.read_text().strip()
        snap = self.storage / "snapshots" / (commit or "")
        not_cached = AitkError(
            f"{reason}, and {self.label} is not in the cache ({self.cache})",
            "connect and pull it (`aitk model pull ...`), or copy a Hugging Face cache holding it to HF_HUB_CACHE")
        if not commit or not snap.is_dir():
            raise not_cached from cause
        expected: list[str] | None = None
        try:
            from huggingface_hub import get_cached_repo_tree

            tree = get_cached_repo_tree(self.repo_id, revision=commit, cache_dir=self.cache)
            expected = _filter([f.path for f in tree], self.allow, self.ignore)
        except Exception:  # no listing cached (downloaded by another tool): trust what is there
            expected = None
        if expected is not None:
            missing = [p for p in expected if not (snap / p).exists()]
            if missing:
                raise AitkError(
                    f"{reason}, and the cached copy of {self.label} is incomplete "
                    f"({len(missing)} of {len(expected)} files missing, e.g. {missing[0]})",
                    "connect and pull again: it resumes where it stopped") from cause
            files = expected
        else:
            present = [p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()]
            files = _filter(present, self.allow, self.ignore)
            if not files:
                raise not_cached from cause
        total = sum((snap / f).stat().st_size for f in files)
        res = self._result(commit, files, total_bytes=total, from_cache=True, offline=True)
        res.message = f"{reason}: using the cached copy of {self.label} at {res.path}"
        return res

    # -- online --

    def run(self) -> PullResult:
        import httpx2
        from huggingface_hub import HfApi

        if is_offline():
            return self.from_cache("offline (HF_HUB_OFFLINE is set)")
        if self.cancel.is_set():
            raise _cancelled(self.label)
        from huggingface_hub.errors import OfflineModeIsEnabled

        api = HfApi(endpoint=self.endpoint, token=self.token or False)
        try:
            info = api.model_info(self.repo_id, revision=self.revision, files_metadata=True)
        except OfflineModeIsEnabled as e:  # huggingface_hub was imported with HF_HUB_OFFLINE set
            return self.from_cache("offline (HF_HUB_OFFLINE was set when the Hub client loaded)", e)
        except httpx2.TransportError as e:
            try:
                return self.from_cache(f"cannot reach {self.endpoint}", e)
            except AitkError:
                _raise_mapped(e, **self._err_kw())
        except Exception as e:
            _raise_mapped(e, **self._err_kw())
        commit = info.sha
        if not commit:
            raise AitkError(f"{self.endpoint} sent no commit for {self.repo_id}",
                            "is HF_ENDPOINT a Hugging Face Hub (or mirror)?")
        siblings = info.siblings or []
        by_name = {s.rfilename: s for s in siblings}
        names = _filter(list(by_name), self.allow, self.ignore)
        if not names:
            pattern = ", ".join(self.allow or ["*"])
            raise AitkError(f"no file of {self.repo_id} matches {pattern}",
                            f"the repo changed: fix the variant in your catalog ({cat.user_path()})")
        files = []
        for n in names:
            s = by_name[n]
            size = s.lfs.size if s.lfs else s.size
            files.append(_File(n, size, s.lfs.sha256 if s.lfs else s.blob_id))

        # Cache layout first: refs, listing, and the (possibly empty) snapshot folder.
        snap = self.storage / "snapshots" / commit
        try:
            snap.mkdir(parents=True, exist_ok=True)
            (self.storage / "blobs").mkdir(parents=True, exist_ok=True)
            if self.revision != commit:
                _write_atomic(self.storage / "refs" / self.revision, commit)
        except OSError as e:
            _raise_mapped(e, **self._err_kw())
        _write_tree_cache(self.storage, commit, siblings)  # the whole listing, as the hub writes it

        cached = [f for f in files if (snap / f.name).exists()]
        todo = [f for f in files if not (snap / f.name).exists()]
        total = sum(f.size or 0 for f in files)
        cached_bytes = sum(f.size or 0 for f in cached)
        partial_bytes = 0
        for f in todo:
            if f.etag_hint:
                part = self.storage / "blobs" / f"{f.etag_hint}.incomplete"
                blob = self.storage / "blobs" / f.etag_hint
                if blob.is_file():
                    partial_bytes += f.size or 0
                elif part.is_file():
                    partial_bytes += min(part.stat().st_size, f.size or 0)
        self._check_disk(sum(f.size or 0 for f in todo) - partial_bytes)

        tracker = self.tracker = _Tracker(self.label, total, len(files), len(cached),
                                          cached_bytes + partial_bytes, self.on_progress)
        tracker.emit(force=True)
        for f in todo:
            if self.cancel.is_set():
                raise _cancelled(self.label)
            tracker.start_file(f.name)
            try:
                self._fetch_file(f, commit, snap)
            except DownloadCancelled:
                raise
            except Exception as e:
                _raise_mapped(e, **self._err_kw(f.name))
            tracker.file_done()
        tracker.emit(finished=True)

        res = self._result(commit, names, total_bytes=total, downloaded_bytes=tracker.transferred,
                           resumed_bytes=tracker.resumed, from_cache=not todo)
        if not todo:
            res.message = f"{self.label} is already on disk at {res.path}"
        else:
            res.message = f"downloaded {self.label} ({cat.human_bytes(total)}) to {res.path}"
        return res

    def _check_disk(self, need: int) -> None:
        if need <= 0:
            return
        probe = self.storage
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if need + DISK_MARGIN > free:
            raise AitkError(
                f"not enough disk space for {self.label}: needs {cat.human_bytes(need)}, "
                f"{cat.human_bytes(free)} free in {self.cache}",
                "free space (`aitk model ls`, `aitk model rm ID`) or set HF_HUB_CACHE to a larger disk")

    def _fetch_file(self, f: _File, commit: str, snap: Path) -> None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(self.repo_id, f.name, revision=commit, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url, token=self.token or False, endpoint=self.endpoint)
        if not meta.etag:
            raise AitkError(f"{self.endpoint} sent no ETag for {f.name}", "is HF_ENDPOINT a Hugging Face Hub?")
        size = meta.size if meta.size is not None else f.size
        blob = self.storage / "blobs" / meta.etag
        if not blob.is_file():
            if f.etag_hint and f.etag_hint != meta.etag:
                stale = self.storage / "blobs" / f"{f.etag_hint}.incomplete"
                if stale.is_file():  # counted as resumable, but the server's copy differs
                    self.tracker.rewind(min(stale.stat().st_size, size or 0))
            self._download_locked(meta.location, blob, size, meta.etag)
        _link(blob, snap / f.name)

    def _download_locked(self, location: str, blob: Path, size: int | None, etag: str) -> None:
        """Under the lock huggingface_hub itself takes for this blob, so two pulls (or a pull and
        transformers) never write the same file; a cancel still gets through while waiting."""
        from filelock import Timeout
        from huggingface_hub.utils import WeakFileLock

        lock = self.cache / ".locks" / self.storage.name / f"{etag}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                with WeakFileLock(lock, timeout=0.5):
                    if not blob.is_file():  # another process may have finished it meanwhile
                        self._download(location, blob, size, etag)
                    return
            except Timeout:
                if self.cancel.is_set():
                    raise _cancelled(self.label) from None

    def _download(self, location: str, blob: Path, size: int | None, etag: str) -> None:
        import httpx2
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        headers = build_hf_headers(token=self.token or False)
        if not _same_origin(location, self.endpoint):
            headers.pop("authorization", None)  # signed CDN URL: never send the token off the Hub
        headers["Accept-Encoding"] = "identity"
        part = blob.with_name(blob.name + ".incomplete")
        hasher = _hasher_for(etag, size)
        have = part.stat().st_size if part.is_file() else 0
        if size is not None and have > size:  # not ours to resume
            part.unlink()
            self.tracker.rewind(size)
            have = 0
        if hasher and have:
            with open(part, "rb") as fh:
                for block in iter(lambda: fh.read(CHUNK_SIZE), b""):
                    hasher.update(block)
        attempt = 0
        while size is None or have < size:
            req_headers = dict(headers)
            if have:
                req_headers["Range"] = f"bytes={have}-"
            got_this_try = 0
            try:
                with get_session().stream("GET", location, headers=req_headers, follow_redirects=True,
                                          timeout=httpx2.Timeout(30.0, read=60.0)) as resp:
                    if resp.status_code == 416 and have:  # our partial is not a prefix of theirs: restart
                        part.unlink(missing_ok=True)
                        self.tracker.rewind(have)
                        have = 0
                        hasher = _hasher_for(etag, size)
                        continue
                    hf_raise_for_status(resp)
                    mode = "ab"
                    if have and resp.status_code != 206:  # server ignored the Range: start over
                        self.tracker.rewind(have)
                        have, mode = 0, "wb"
                        hasher = _hasher_for(etag, size)
                    with open(part, mode) as out:
                        # As the network delivers (<= 64 KiB): a dropped connection loses nothing
                        # already received, and a cancel is noticed within one read.
                        for chunk in resp.iter_bytes():
                            if self.cancel.is_set():
                                raise _cancelled(self.label, have)
                            out.write(chunk)
                            if hasher:
                                hasher.update(chunk)
                            have += len(chunk)
                            got_this_try += len(chunk)
                            self.tracker.advance(len(chunk))
                if size is None:
                    break
                if have < size:
                    raise httpx2.RemoteProtocolError(f"connection closed at {have} of {size} bytes")
            except httpx2.TransportError:
                if got_this_try:
                    attempt = 0  # progress was made: a fresh set of retries
                if attempt >= len(RETRY_DELAYS):
                    raise
                if self.cancel.wait(RETRY_DELAYS[attempt]):
                    raise _cancelled(self.label, have) from None
                attempt += 1
        if not part.exists():  # an empty file: no body to write
            part.touch()
        if size is not None and have != size:
            raise AitkError(f"{blob.name}: got {have} bytes, expected {size}", "pull again")
        if hasher is not None and hasher.hexdigest() != etag:
            part.unlink(missing_ok=True)
            self.tracker.rewind(have)
            raise AitkError(f"a downloaded file of {self.label} is corrupt (checksum mismatch)",
                            "pull again; if it persists, check any proxy or mirror in between")
        os.replace(part, blob)


def pull(target: str, variant: str | None = None, *, revision: str = "main", token: str | None = None,
         on_progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
         catalog: cat.Catalog | None = None, include: list[str] | None = None) -> PullResult:
    """Get `target` (catalog id or `owner/name`) onto this machine; see the module docstring.

    `on_progress` is called from the calling thread (use `start_pull` for a worker thread);
    setting `cancel` stops the download at the next chunk with `DownloadCancelled`.
    """
    p = plan(target, variant, catalog=catalog, include=include)
    if p.local:
        if cancel is not None and cancel.is_set():
            raise _cancelled(p.label)
        folder = tiny.ensure_tiny()
        files = sorted(x.relative_to(folder).as_posix() for x in folder.rglob("*") if x.is_file())
        size = sum((folder / f).stat().st_size for f in files)
        if on_progress:
            on_progress(Progress(p.label, None, size, size, len(files), len(files), 0.0, 0.0, size, True))
        return PullResult(p.model_id, None, "local", None, folder, files, total_bytes=size, from_cache=True,
                          message=f"{p.label} is built locally at {folder} (nothing to download)", note=p.note)
    assert p.repo_id is not None
    puller = _Puller(p.repo_id, revision=revision, allow=p.allow, ignore=p.ignore, subfolder=p.subfolder,
                     token=token, label=p.label if p.variant in ("repo", "finetune") else f"{p.label} [{p.variant}]",
                     model_id=p.model_id, variant=p.variant, on_progress=on_progress, cancel=cancel, note=p.note)
    return puller.run()


class PullTask:
    """A pull in a worker thread: progress via the callback (from that thread), `cancel()` to stop."""

    def __init__(self, target: str, variant: str | None = None, *, on_progress: ProgressCallback | None = None,
                 **kwargs):
        self.target, self.variant = target, variant
        self.cancel_event = threading.Event()
        self.result: PullResult | None = None
        self.error: BaseException | None = None
        self._kwargs = dict(kwargs, on_progress=on_progress)
        self._thread = threading.Thread(target=self._run, name=f"aitk-pull-{target}", daemon=True)

    def _run(self) -> None:
        try:
            self.result = pull(self.target, self.variant, cancel=self.cancel_event, **self._kwargs)
        except BaseException as e:  # handed to whoever waits
            self.error = e

    def start(self) -> PullTask:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> PullResult:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"pull of {self.target} still running")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def start_pull(target: str, variant: str | None = None, **kwargs) -> PullTask:
    return PullTask(target, variant, **kwargs).start()


# --- User-added folders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UserFolder:
    name: str
    path: Path


def folders_path() -> Path:
    return paths.config_dir() / FOLDERS_FILE


def list_folders() -> list[UserFolder]:
    """Folders the user registered (`[[folders]]` tables with `name` and `path` in models.toml)."""
    path = folders_path()
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise AitkError(f"{path}: not valid TOML: {e}", "fix the syntax, or move the file away") from e
    items = data.get("folders", [])
    if not isinstance(items, list):
        raise AitkError(f"{path}: field `folders` must be a list of tables (write `[[folders]]`)")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise AitkError(f"{path}: field `folders[{i}]` must be a table with `name` and `path`")
        for key in ("name", "path"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise AitkError(f"{path}: field `folders[{i}].{key}` is missing or not a string",
                                "each [[folders]] table needs name = \"...\" and path = \"...\"")
        unknown = set(item) - {"name", "path"}
        if unknown:
            raise AitkError(f"{path}: field `folders[{i}].{sorted(unknown)[0]}` is unknown",
                            "a [[folders]] table has `name` and `path` only")
        out.append(UserFolder(item["name"], Path(item["path"]).expanduser()))
    return out


def _save_folders(folders: list[UserFolder]) -> None:
    import tomli_w

    text = tomli_w.dumps({"folders": [{"name": f.name, "path": str(f.path)} for f in folders]})
    _write_atomic(folders_path(), text)


def _looks_like_model(folder: Path) -> bool:
    markers = ("config.json", "genai_config.json", "adapter_config.json")
    if any((folder / m).is_file() for m in markers):
        return True
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.onnx"))


def add_folder(path: str | Path, name: str | None = None) -> UserFolder:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise AitkError(f"{folder} is not a folder")
    if not _looks_like_model(folder):
        raise AitkError(f"{folder} does not look like a model folder",
                        "it needs config.json, genai_config.json, *.safetensors or *.onnx")
    name = name or folder.name
    if not cat.ID_RE.match(name.lower()):
        raise AitkError(f"{name!r} is not a usable name", "use letters, digits, '.', '_' or '-'")
    folders = list_folders()
    for f in folders:
        if f.name == name and f.path != folder:
            raise AitkError(f"a folder named {name!r} is already registered ({f.path})", "pass another --name")
    folders = [f for f in folders if f.name != name] + [UserFolder(name, folder)]
    _save_folders(folders)
    return UserFolder(name, folder)


def remove_folder(name: str) -> UserFolder:
    folders = list_folders()
    for f in folders:
        if f.name == name:
            _save_folders([x for x in folders if x.name != name])
            return f
    raise AitkError(f"no registered folder named {name!r}", "see `aitk model ls`")


# --- Local models -----------------------------------------------------------------------------------


@dataclass
class LocalModel:
    name: str                                  # catalog id when known, else repo id / folder name
    kind: Literal["hf-cache", "folder", "builtin"]
    path: Path
    size_bytes: int = 0
    files: int = 0
    repo_id: str | None = None
    revisions: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    uses: list[str] = field(default_factory=list)   # "phi-3-mini-4k:finetune", "phi-3-mini-4k:cpu-int4"
    incomplete_bytes: int = 0
    last_accessed: float | None = None
    exists: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass
class LocalScan:
    models: list[LocalModel]
    warnings: list[str]
    cache_dir: Path


def _dir_size(folder: Path) -> tuple[int, int]:
    size = count = 0
    for p in folder.rglob("*"):
        if p.is_file():
            size += p.stat().st_size
            count += 1
    return size, count


def _uses(repo_id: str, file_names: set[str], catalog: cat.Catalog) -> list[str]:
    out = []
    for entry, what in catalog.for_repo(repo_id):
        if what == "finetune":
            allow, ignore = entry.finetune_patterns()
            if any(n.endswith(".safetensors") for n in _filter(sorted(file_names), allow, ignore)):
                out.append(f"{entry.id}:finetune")
        else:
            v = entry.variant(what)
            prefix = f"{v.subfolder}/" if v.subfolder else ""
            if any(n.startswith(prefix) for n in file_names):
                out.append(f"{entry.id}:{what}")
    return out


def scan_local(*, catalog: cat.Catalog | None = None, include_builtin: bool = True) -> LocalScan:
    """Everything on disk aitk can use: HF cache models, user folders, the built tiny model."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    catalog = catalog or cat.load()
    cache = hf_cache_dir()
    models: list[LocalModel] = []
    warnings: list[str] = []
    if include_builtin and tiny.is_built():
        folder = tiny.model_dir()
        size, count = _dir_size(folder)
        models.append(LocalModel("tiny", "builtin", folder, size, count, uses=["tiny:local"],
                                 last_accessed=folder.stat().st_mtime))
    try:
        info = scan_cache_dir(cache) if cache.is_dir() else None
    except CacheNotFound:
        info = None
    if info is not None:
        partials: dict[str, int] = {}
        for inc in info.incomplete_files:
            partials[inc.file_path.parent.parent.name] = partials.get(inc.file_path.parent.parent.name, 0) + \
                inc.size_on_disk
        for w in info.warnings:
            warnings.append(str(w))
        for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
            if repo.repo_type != "model":
                continue
            names = {f.file_path.relative_to(rev.snapshot_path).as_posix()
                     for rev in repo.revisions for f in rev.files}
            uses = _uses(repo.repo_id, names, catalog)
            ids = sorted({u.split(":")[0] for u in uses})
            refs = sorted({ref for rev in repo.revisions for ref in rev.refs})
            models.append(LocalModel(
                name=ids[0] if len(ids) == 1 else repo.repo_id, kind="hf-cache", path=repo.repo_path,
                size_bytes=repo.size_on_disk, files=repo.nb_files, repo_id=repo.repo_id,
                revisions=sorted(rev.commit_hash[:12] for rev in repo.revisions), refs=refs, uses=uses,
                incomplete_bytes=partials.pop(repo.repo_path.name, 0), last_accessed=repo.last_accessed))
        # Partial downloads of repos with nothing complete yet.
        for folder_name, size in sorted(partials.items()):
            repo_id = folder_name.removeprefix("models--").replace("--", "/")
            if folder_name.startswith("models--"):
                models.append(LocalModel(repo_id, "hf-cache", cache / folder_name, 0, 0, repo_id=repo_id,
                                         incomplete_bytes=size))
    for f in list_folders():
        exists = f.path.is_dir()
        size, count = _dir_size(f.path) if exists else (0, 0)
        models.append(LocalModel(f.name, "folder", f.path, size, count, exists=exists))
        if not exists:
            warnings.append(f"registered folder {f.name!r} is missing: {f.path}")
    return LocalScan(models, warnings, cache)


@dataclass
class Removal:
    target: str
    kind: Literal["hf-cache", "folder", "builtin"]
    paths: list[Path]
    freed_bytes: int
    executed: bool
    message: str


def remove(target: str, variant: str | None = None, *, dry_run: bool = False,
           catalog: cat.Catalog | None = None) -> Removal:
    """Free what `target` takes: a catalog id (all its cached repos, or one `variant`), a repo id,
    a registered folder (only unregistered: its files are the user's), or the built tiny model."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    catalog = catalog or cat.load()
    for f in list_folders():
        if f.name == target:
            if not dry_run:
                remove_folder(target)
            return Removal(target, "folder", [f.path], 0, not dry_run,
                           f"unregistered folder {target!r} ({f.path}); its files were left in place")
    entry = catalog.find(target)
    if entry is not None and entry.local:
        folder = tiny.model_dir()
        if not folder.exists():
            raise AitkError(f"{entry.id} is not built, nothing to remove")
        size, _ = _dir_size(folder)
        if not dry_run:
            shutil.rmtree(folder)
        return Removal(target, "builtin", [folder], size, not dry_run,
                       f"removed the built {entry.id} model ({cat.human_bytes(size)}); it is rebuilt when needed")

    # (repo, subfolder or None for the whole repo)
    wanted: list[tuple[str, str | None]] = []
    if entry is not None:
        if variant in (None, "all"):
            repos = {entry.repo} | {v.repo for v in entry.variants if v.repo}
            wanted = [(r, None) for r in sorted(r for r in repos if r)]
        elif variant == "finetune":
            wanted = [(entry.repo, None)]
        else:
            v = entry.variant(variant)
            if not v.published:
                raise AitkError(f"{entry.id} [{v.key}] is built locally, not downloaded",
                                f"remove the fine-tuning weights with `aitk model rm {entry.id} --variant finetune`")
            shared = any(o.repo == v.repo and o.subfolder != v.subfolder for o in entry.variants)
            wanted = [(v.repo, v.subfolder if (shared and v.subfolder) else None)]
    elif cat.REPO_RE.match(target):
        wanted = [(target, None)]
    else:
        catalog.get(target)  # unknown: raises with suggestions

    cache = hf_cache_dir()
    try:
        info = scan_cache_dir(cache) if cache.is_dir() else None
    except CacheNotFound:
        info = None
    repos = {r.repo_id.lower(): r for r in info.repos if r.repo_type == "model"} if info else {}
    removed_paths: list[Path] = []
    freed = 0
    strategies = []
    for repo_id, subfolder in wanted:
        repo = repos.get(repo_id.lower())
        folder = repo_folder(repo_id, cache)
        if repo is None:
            if folder.is_dir():  # only partial downloads (no complete revision yet)
                size, _ = _dir_size(folder)
                removed_paths.append(folder)
                freed += size
                strategies.append(("rmtree", folder))
            continue
        if subfolder:
            files = [f for rev in repo.revisions for f in rev.files
                     if f.file_path.relative_to(rev.snapshot_path).as_posix().startswith(subfolder + "/")]
            if not files:
                continue
            strategy = info.delete_files(*files)
            removed_paths.append(repo.repo_path / "snapshots" / "*" / subfolder)
        else:
            strategy = info.delete_revisions(*(rev.commit_hash for rev in repo.revisions))
            removed_paths.append(repo.repo_path)
        freed += strategy.expected_freed_size
        strategies.append(("strategy", strategy))
    if not strategies:
        what = f"{target} [{variant}]" if variant else target
        raise AitkError(f"{what} is not on disk (cache: {cache})", "see what is with `aitk model ls`")
    if not dry_run:
        for kind, item in strategies:
            if kind == "rmtree":
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.execute()
    verb = "would free" if dry_run else "freed"
    label = f"{target} [{variant}]" if variant else target
    return Removal(target, "hf-cache", removed_paths, freed, not dry_run,
                   f"{label}: {verb} {cat.human_bytes(freed)} in {cache}")
