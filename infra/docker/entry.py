#!/usr/bin/env python3
"""The training image's command: one aitk fine-tune of a project snapshot on the mounted file share.

Environment (set by the Container Apps job and by `aitk azure run` per execution):
    AITK_MOUNT   where the Azure Files share is mounted (default /mount)
    AITK_RUN     the run folder on it, relative: runs/<job id>
    AITK_DEVICE  optional: cuda | cpu (default: cuda when torch sees a GPU, else the best found)
    HF_TOKEN     optional, from the job secret `hf-token`: for gated base models on the hub

Steps: read <run>/manifest.json; lay the project out in a local work folder from the share's
content-addressed objects/ (checking every SHA-256); fine-tune it with aitk's engine in a child
process (the same code as a local job, so the output carries the same `[aitk-metric]` lines);
copy each output line to stdout (the Container Apps log stream / Log Analytics) and to <run>/log.txt;
write back <run>/metrics.jsonl, <run>/output/adapter/ and <run>/status.json. Exit 0 only when an
adapter was written. Environment variables are never printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path


def say(text: str, log=None) -> None:
    line = f"[aitk-job] {text}"
    print(line, flush=True)
    if log is not None:
        log.write(line + "\n")
        log.flush()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def materialize(mount: Path, manifest: dict, dest: Path) -> int:
    total = 0
    for rel, meta in sorted(manifest["files"].items()):
        rel_path = Path(rel)
        if rel_path.is_absolute() or ".." in rel_path.parts:
            raise ValueError(f"unsafe path in manifest: {rel}")
        src = mount / "objects" / meta["sha256"][:2] / meta["sha256"]
        target = dest / rel_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        if sha256(target) != meta["sha256"]:
            raise ValueError(f"{rel}: the uploaded copy is corrupt (hash mismatch); rerun `aitk azure run`")
        total += meta["size"]
    return total


def train(project_dir: str, job_dir: str) -> int:
    """Child process: the engine's fine-tune, as a local job runs it."""
    from aitk.core.devices import detect
    from aitk.core.errors import AitkError
    from aitk.core.finetune import run_finetune
    from aitk.core.project import load_project

    try:
        project = load_project(project_dir)
        device = os.environ.get("AITK_DEVICE")
        if not device:
            import torch  # loaded for training anyway; the authority on whether CUDA works here

            device = "cuda" if torch.cuda.is_available() else detect().best
        print(f"[aitk-job] device: {device}", flush=True)
        run_finetune(project, Path(job_dir), device)
    except AitkError as e:
        print(f"[aitk] error: {e}", flush=True)
        return 1
    return 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--train":
        return train(sys.argv[2], sys.argv[3])
    if len(sys.argv) == 4 and sys.argv[1] == "--layout":  # the inference app: a deploy folder -> a local project
        mount = Path(os.environ.get("AITK_MOUNT", "/mount"))
        if ".." in Path(sys.argv[2]).parts:
            say(f"unsafe deploy folder {sys.argv[2]}")
            return 2
        manifest = json.loads((mount / sys.argv[2] / "manifest.json").read_text(encoding="utf-8"))
        size = materialize(mount, manifest, Path(sys.argv[3]))
        say(f"deploy laid out: {len(manifest['files'])} files, {size / 1e6:.1f} MB")
        return 0
    mount = Path(os.environ.get("AITK_MOUNT", "/mount"))
    run_rel = os.environ.get("AITK_RUN", "")
    if not run_rel or ".." in Path(run_rel).parts:
        say("AITK_RUN is not set to a run folder (runs/<job id>); nothing to do")
        return 2
    run_dir = mount / run_rel
    work = Path(os.environ.get("AITK_WORK") or tempfile.mkdtemp(prefix="aitk-run-"))
    work.mkdir(parents=True, exist_ok=True)
    status = {"status": "failed", "exit_code": 1, "error": None, "started": time.time()}
    with open(run_dir / "log.txt", "a", encoding="utf-8") as log:
        try:
            manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
            project_dir, job_dir = work / "project", work / "job"
            size = materialize(mount, manifest, project_dir)
            job_dir.mkdir(parents=True, exist_ok=True)
            say(f"project laid out: {len(manifest['files'])} files, {size / 1e6:.1f} MB", log)
            env = {**os.environ, "AITK_DATA_DIR": str(work / "data"), "AITK_CONFIG_DIR": str(work / "config"),
                   "AITK_CACHE_DIR": str(work / "cache"), "CI": "1", "PYTHONUNBUFFERED": "1",
                   "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
            env.setdefault("HF_HOME", str(mount / "cache" / "huggingface"))  # models download once per share
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--train", str(project_dir),
                                     str(job_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=str(project_dir))
            last_error = None
            for raw in proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                print(line, flush=True)
                log.write(line + "\n")
                log.flush()
                if line.startswith("[aitk] error:") or (line and not line.startswith(" ") and "Error" in line.split(":")[0]):
                    last_error = line
            code = proc.wait()
            if (job_dir / "metrics.jsonl").is_file():
                shutil.copyfile(job_dir / "metrics.jsonl", run_dir / "metrics.jsonl")
            adapter = job_dir / "output" / "adapter"
            if code == 0 and (adapter / "adapter_config.json").is_file():
                out = run_dir / "output" / "adapter"
                shutil.rmtree(out, ignore_errors=True)
                shutil.copytree(adapter, out)
                status.update(status="succeeded", exit_code=0)
                say(f"adapter written to {run_rel}/output/adapter", log)
            else:
                status.update(exit_code=code or 1,
                              error=(last_error or f"training exited with code {code}").removeprefix("[aitk] error: "))
                say(f"failed: {status['error']}", log)
        except Exception as e:  # noqa: BLE001 - record how it ended, whatever happened
            traceback.print_exc()
            status.update(error=f"{type(e).__name__}: {e}")
            say(f"failed: {status['error']}", log)
        status["finished"] = time.time()
        (run_dir / "status.json").write_text(json.dumps(status, indent=2), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return int(status["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
