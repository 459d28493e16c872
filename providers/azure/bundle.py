"""What a registry-free run installs at job start: aitk's own wheel and a lock of its dependencies.

The job runs a public PyTorch CUDA image (AI Toolkit does the same), so nothing has to be built or
pushed. Each `aitk azure run` puts on the share, once per content hash:

    aitk/entry.py                          the job's command runs this (container_entry.py)
    aitk/bundles/<hash>/<wheel>.whl        aitk's Python code, as installed here (pure Python)
    aitk/bundles/<hash>/requirements.lock  `name==version` of every dependency installed here

The entry point installs the wheel into a local folder (`--no-deps --target`) and the lock into the
image's Python with pip's cache on the share, so a second run reuses the downloaded wheels. torch
is left to the image (the lock keeps only aitk's range for it): its CUDA build is what the image is for.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import importlib.util
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

DIST = "aitk-tui"
BUNDLES = "aitk/bundles"
ENTRY_REL = "aitk/entry.py"
ENTRY_SOURCE = Path(__file__).resolve().with_name("container_entry.py")
# The image supplies these (CUDA builds); locking the local (often CPU) build would replace them.
IMAGE_PROVIDED = re.compile(r"^(torch|triton|nvidia-.*|torchvision|torchaudio)$")
_EPOCH = (2020, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same code gives the same hash


@dataclass(frozen=True)
class Bundle:
    wheel_name: str
    wheel: bytes
    lock: str

    @property
    def digest(self) -> str:
        h = hashlib.sha256(self.wheel)
        h.update(self.lock.encode())
        return h.hexdigest()[:16]

    @property
    def rel_dir(self) -> str:
        return f"{BUNDLES}/{self.digest}"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _package_files() -> list[tuple[str, Path]]:
    """(path inside the wheel, file here) for every module and data file of the aitk namespace."""
    import aitk

    out: list[tuple[str, Path]] = []
    roots = [("aitk", Path(p)) for p in aitk.__path__]
    for sub in ("core", "providers", "cli", "tui", "themes"):
        spec = importlib.util.find_spec(f"aitk.{sub}")
        for loc in (spec.submodule_search_locations or []) if spec else []:
            roots.append((f"aitk/{sub}", Path(loc)))
    seen = set()
    for prefix, root in roots:
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root)
            if not f.is_file() or "__pycache__" in rel.parts or f.suffix in (".pyc", ".pyo"):
                continue
            if prefix == "aitk" and rel.parts[0] in ("core", "providers", "cli", "tui", "themes"):
                continue
            name = f"{prefix}/{rel.as_posix()}"
            if name not in seen:
                seen.add(name)
                out.append((name, f))
    return out


def build_wheel() -> tuple[str, bytes]:
    """A py3-none-any wheel of the installed aitk (editable or not), built in memory, reproducibly."""
    version = md.version(DIST)
    tag = f"aitk_tui-{version}"
    info = f"{tag}.dist-info"
    meta = md.metadata(DIST)
    body = [f"Metadata-Version: 2.1", f"Name: {DIST}", f"Version: {version}",
            f"Requires-Python: {meta.get('Requires-Python') or '>=3.11'}"]
    entries: list[tuple[str, bytes]] = [(name, path.read_bytes()) for name, path in _package_files()]
    entries.append((f"{info}/METADATA", ("\n".join(body) + "\n").encode()))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: aitk\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
    record = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            zi = zipfile.ZipInfo(name, _EPOCH)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return f"{tag}-py3-none-any.whl", buf.getvalue()


def build_lock() -> str:
    """Every installed dependency of aitk (transitively, no extras) pinned to the version here."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    ranges: list[str] = []
    todo = [(DIST, None)]
    while todo:
        name, marker = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # not installed here (a marker excluded it): the container decides by the marker
        key = _norm(dist.metadata["Name"])
        if key in pins:
            continue
        if key != _norm(DIST):
            pins[key] = f"{key}=={dist.version}" + (f"; {marker}" if marker else "")
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and "extra" in str(req.marker):
                continue
            if IMAGE_PROVIDED.match(_norm(req.name)):
                if key == _norm(DIST):
                    ranges.append(f"{_norm(req.name)}{req.specifier}")
                continue
            todo.append((req.name, str(req.marker) if req.marker is not None else None))
    lines = sorted(pins.values()) + sorted(ranges)
    return "# aitk's dependencies as installed where `aitk azure run` ran; torch comes from the image\n" + \
        "\n".join(lines) + "\n"


def build() -> Bundle:
    name, wheel = build_wheel()
    return Bundle(name, wheel, build_lock())


def upload(share, bundle: Bundle) -> str:
    """Put the bundle (once per hash) and the entry script on the share; returns the bundle folder."""
    rel = bundle.rel_dir
    lock_rel = f"{rel}/requirements.lock"
    if share.read_bytes(lock_rel) is None:  # the lock goes last: its presence means the bundle is whole
        share.put_file(f"{rel}/{bundle.wheel_name}", bundle.wheel)
        share.put_file(lock_rel, bundle.lock.encode())
    entry = ENTRY_SOURCE.read_bytes()
    if share.read_bytes(ENTRY_REL) != entry:
        share.put_file(ENTRY_REL, entry)
    return rel
