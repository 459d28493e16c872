"""The project on the Azure Files share: upload only what changed, download what a run produced.

Layout on the share (mounted at /mount in the job's container):

    objects/ab/abcdef...        file contents, named by SHA-256 (uploaded once, ever)
    runs/<job id>/manifest.json the run's project: relative path -> sha256 + size
    runs/<job id>/log.txt       written by the job: its whole log
    runs/<job id>/metrics.jsonl, status.json, output/adapter/...

A run folder is tiny; a re-run of an unchanged project uploads nothing but its manifest, and a
changed dataset uploads just that file. Concurrent runs never see each other's files. An object
is trusted only once its upload finished (metadata `complete=1`), so an interrupted upload is
redone, and the job verifies every hash when it lays the project out.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...core.digest import file_sha256

# Never uploaded: outputs of earlier runs, caches, environments, VCS data.
SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache", ".ipynb_checkpoints"}
SKIP_PATHS = ("models/onnx", "models/olive", "models/checkpoints", "models/.olive-cache", "infra")
OBJECTS = "objects"
RUNS = "runs"


def project_manifest(root: Path, extra_skip: tuple[str, ...] = ()) -> dict:
    """What a run needs of the project: every file but outputs and caches, with its hash."""
    root = Path(root)
    skip = tuple(s.strip("/") for s in (*SKIP_PATHS, *extra_skip) if s)
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        keep = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if d in SKIP_DIRS or d.startswith((".adapter-", ".regen-", ".tmp")) or \
                    any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink() and not p.exists():
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            files[rel] = {"sha256": file_sha256(p), "size": p.stat().st_size}
    return {"version": 1, "created": time.time(), "files": files}


def object_path(sha: str) -> str:
    return f"{OBJECTS}/{sha[:2]}/{sha}"


@dataclass
class UploadStats:
    files: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    reused: int = 0
    reused_bytes: int = 0

    def line(self) -> str:
        return (f"{self.files} files: {self.uploaded} uploaded ({self.uploaded_bytes / 1e6:.1f} MB), "
                f"{self.reused} unchanged ({self.reused_bytes / 1e6:.1f} MB) already on the share")


class ShareFiles:
    """Azure Files operations on one share (a `ShareClient` from the SDK)."""

    def __init__(self, share_client):
        self.share = share_client
        self._dirs: set[str] = set()

    # -- primitives -----------------------------------------------------------------------------
    def ensure_dir(self, rel_dir: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        parts = [p for p in rel_dir.strip("/").split("/") if p]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d in self._dirs:
                continue
            try:
                self.share.get_directory_client(d).create_directory()
            except ResourceExistsError:
                pass
            self._dirs.add(d)

    def has_object(self, sha: str, size: int) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self.share.get_file_client(object_path(sha)).get_file_properties()
        except ResourceNotFoundError:
            return False
        return (props.metadata or {}).get("complete") == "1" and props.size == size

    def put_file(self, rel: str, source: Path | bytes, metadata: dict | None = None) -> int:
        self.ensure_dir(rel.rsplit("/", 1)[0] if "/" in rel else "")
        fc = self.share.get_file_client(rel)
        if isinstance(source, bytes):
            fc.upload_file(source, metadata=metadata)
            return len(source)
        size = Path(source).stat().st_size
        with open(source, "rb") as f:
            fc.upload_file(f, length=size, metadata=metadata, max_concurrency=4)
        return size

    def put_object(self, sha: str, source: Path) -> int:
        rel = object_path(sha)
        n = self.put_file(rel, source, metadata={"sha256": sha})
        self.share.get_file_client(rel).set_file_metadata({"sha256": sha, "complete": "1"})
        return n

    def read_bytes(self, rel: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.share.get_file_client(rel).download_file().readall()
        except ResourceNotFoundError:
            return None

    def read_text(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
        return None if data is None else data.decode("utf-8", errors="replace")

    def download_file(self, rel: str, dest: Path) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with open(tmp, "wb") as f:
                self.share.get_file_client(rel).download_file(max_concurrency=4).readinto(f)
        except ResourceNotFoundError:
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, dest)
        return True

    def list_tree(self, rel_dir: str) -> list[str]:
        """Every file under `rel_dir` (relative to it); [] when it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        out: list[str] = []
        stack = [""]
        while stack:
            sub = stack.pop()
            path = f"{rel_dir}/{sub}".rstrip("/") if sub else rel_dir
            try:
                items = list(self.share.get_directory_client(path).list_directories_and_files())
            except ResourceNotFoundError:
                continue
            for item in items:
                rel = f"{sub}/{item['name']}" if sub else item["name"]
                if item.get("is_directory"):
                    stack.append(rel)
                else:
                    out.append(rel)
        return sorted(out)

    def download_tree(self, rel_dir: str, dest: Path) -> list[Path]:
        got = []
        for rel in self.list_tree(rel_dir):
            target = dest / rel
            if self.download_file(f"{rel_dir}/{rel}", target):
                got.append(target)
        return got

    # -- a run ----------------------------------------------------------------------------------
    def upload_project(self, root: Path, run_dir: str, *, extra_skip: tuple[str, ...] = (),
                       progress: Callable[[str], None] | None = None) -> tuple[dict, UploadStats]:
        """Upload the objects the share lacks, then the run's manifest (last: it makes the run whole)."""
        manifest = project_manifest(root, extra_skip)
        return manifest, self.upload_manifest(root, manifest, run_dir, progress)

    def upload_manifest(self, root: Path, manifest: dict, dest_dir: str,
                        progress: Callable[[str], None] | None = None) -> UploadStats:
        """The manifest's files (paths relative to `root`) as content-addressed objects, only those
        the share lacks, then `dest_dir/manifest.json`. Runs and inference deploys both use it."""
        stats = UploadStats(files=len(manifest["files"]))
        by_sha: dict[str, tuple[Path, int]] = {}
        for rel, meta in manifest["files"].items():
            by_sha.setdefault(meta["sha256"], (Path(root) / rel, meta["size"]))
        for i, (sha, (path, size)) in enumerate(sorted(by_sha.items()), 1):
            if self.has_object(sha, size):
                stats.reused += 1
                stats.reused_bytes += size
            else:
                self.put_object(sha, path)
                stats.uploaded += 1
                stats.uploaded_bytes += size
            if progress is not None:
                progress(f"checked {i}/{len(by_sha)} files ({stats.uploaded} uploaded)")
        self.ensure_dir(dest_dir)
        self.put_file(f"{dest_dir}/manifest.json", json.dumps(manifest, indent=1).encode())
        return stats
