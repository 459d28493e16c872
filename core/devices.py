"""What this machine can train and run on, found without importing torch.

The UI calls `detect()` at start-up, so it must stay cheap: NVIDIA GPUs are found through
`nvidia-smi` (or /proc on Linux), DirectML by platform, execution providers through onnxruntime.
Job processes, which have torch loaded anyway, confirm with `torch.cuda.is_available()`.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int
    free_mib: int


@dataclass(frozen=True)
class DeviceInfo:
    best: str  # "cuda" | "dml" | "cpu"
    gpus: tuple[Gpu, ...] = ()
    cpu_count: int = 1
    ram_mib: int = 0
    execution_providers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        if self.best == "cuda" and self.gpus:
            return f"CUDA · {self.gpus[0].name}"
        if self.best == "dml":
            return "DirectML"
        return f"CPU · {self.cpu_count} cores"


def _nvidia_gpus() -> tuple[Gpu, ...]:
    if os.environ.get("AITK_FORCE_CPU"):
        return ()
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            gpus.append(Gpu(parts[0], int(parts[1]), int(parts[2])))
    return tuple(gpus)


def _ram_mib() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return 0


def _execution_providers() -> tuple[str, ...]:
    try:
        import onnxruntime  # light (~0.1 s) and needed by chat anyway

        return tuple(onnxruntime.get_available_providers())
    except ImportError:
        return ()


@functools.cache
def detect() -> DeviceInfo:
    gpus = _nvidia_gpus()
    eps = _execution_providers()
    if gpus:
        best = "cuda"
    elif platform.system() == "Windows" and "DmlExecutionProvider" in eps:
        best = "dml"
    else:
        best = "cpu"
    return DeviceInfo(best=best, gpus=gpus, cpu_count=os.cpu_count() or 1, ram_mib=_ram_mib(),
                      execution_providers=eps)
