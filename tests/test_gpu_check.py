"""bench/gpu_check.sh cannot run here (no GPU): its syntax, its dry run and its fail-fast paths can."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BASH = shutil.which("bash")  # absolute: some tests run the script with a bare PATH
SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.sh"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_dry_run_lists_every_step_and_touches_nothing(tmp_path):
    proc = run("--dry-run", env={"OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    for word in ("tiny-qlora", "build-shape phi-3-mini-4k", "shape-qlora", "shape-lora", "export-int4", "decode",
                 str(tmp_path / "gpu_check.json")):
        assert word in proc.stdout
    assert not any(tmp_path.iterdir())
    assert "--layers 8" in run("--dry-run", "--quick").stdout


def test_without_a_gpu_it_stops_at_once_with_a_hint(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("dirname", "mktemp", "rm", "sed", "cat"):
        (bare / tool).symlink_to(shutil.which(tool))
    proc = run(env={"PATH": str(bare), "OUT": str(tmp_path / "out")})
    assert proc.returncode == 3
    assert "not a CUDA machine" in proc.stderr and "hint:" in proc.stderr


def test_a_cpu_only_torch_is_refused_before_anything_long(tmp_path):
    """With a GPU driver present but this (CPU) torch, it names the torch build, not a later failure."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: Fake'\n")
    (fake / "nvidia-smi").chmod(0o755)
    proc = run(env={"PATH": f"{fake}:{os.environ['PATH']}", "PYTHON": sys.executable, "OUT": str(tmp_path / "out")})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "CPU-only build" in proc.stderr and "CUDA build of torch" in proc.stderr
    assert not (tmp_path / "out").exists()
