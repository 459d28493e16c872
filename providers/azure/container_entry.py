#!/usr/bin/env python3
"""The job's command: one aitk fine-tune of a project snapshot on the mounted file share.

It runs on a public PyTorch CUDA image, standard library only until it has installed aitk: the
job's command is `python3 /mount/aitk/entry.py`, this file, put on the share by `aitk azure run`.

Environment (from the Container Apps job's own template, never a start-time override, which
would lose the share's mount):
    AITK_MOUNT   where the Azure Files share is mounted (default /mount)
    CONTAINER_APP_JOB_EXECUTION_NAME  set by Container Apps: which run is ours (see resolve_run)
    AITK_RUN     optional: the run folder, relative (runs/<job id>); wins over the lookup
    AITK_DEVICE  optional: cuda | cpu (default: cuda when torch sees a GPU, else the best found)
    HF_TOKEN     optional, from the job secret `hf-token`: for gated base models on the hub

Steps: find this execution's run (runs/executions/<execution>.json, written by the submitter
right after the start; waited for); install the run's bundle (aitk's wheel into a local folder,
its dependency lock with pip's cache on the share); read <run>/manifest.json; lay the project out
from the share's content-addressed objects/ (checking every SHA-256); fine-tune it with aitk's
engine in a child process (the same code as a local job, so the output carries the same
`[aitk-metric]` lines); copy each output line to stdout and to <run>/log.txt; write back
<run>/metrics.jsonl, <run>/output/adapter/ and <run>/status.json. Exit 0 only when an adapter
was written. Environment variables are never printed.
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


EXECUTIONS = "runs/executions"


class RunError(Exception):
    """A reason this container cannot run, worded for the job's log."""


def resolve_run(mount: Path) -> str:
    """This execution's run folder (relative to the share).

    Per-run values never travel in a start-time template (that start loses the volume mounts), so
    the submitter starts the job as defined, then writes runs/executions/<execution>.json naming
    the run. Two runs started at once each find their own file; the container may start before
    the file is written (image pull is usually slower), so it waits for it.
    """
    explicit = os.environ.get("AITK_RUN", "")
    if explicit:
        return explicit
    if not (mount / "aitk").is_dir():
        raise RunError(f"the file share is not mounted at {mount} (an execution started with a template "
                       "override loses the job's volume mounts); start runs with `aitk azure run`")
    execution = os.environ.get("CONTAINER_APP_JOB_EXECUTION_NAME", "")
    if not execution:
        raise RunError("CONTAINER_APP_JOB_EXECUTION_NAME is not set: cannot tell which run this execution is; "
                       "start runs with `aitk azure run`")
    claim = mount / EXECUTIONS / f"{execution}.json"
    deadline = time.time() + float(os.environ.get("AITK_CLAIM_WAIT_S") or 600)
    poll = float(os.environ.get("AITK_CLAIM_POLL_S") or 2)
    while True:
        try:
            return json.loads(claim.read_text(encoding="utf-8"))["run"]
        except (OSError, ValueError, KeyError):
            pass
        if time.time() > deadline:
            raise RunError(f"no run was assigned to execution {execution} ({claim} never appeared): "
                           "was it started outside `aitk azure run`?")
        time.sleep(poll)


def install_bundle(mount: Path, bundle_rel: str, site: Path, log=None) -> dict[str, str]:
    """aitk's wheel (into `site`, put first on PYTHONPATH) and its dependency lock (into this
    Python, pip's cache on the share: the second run downloads nothing). Returns the env to add."""
    bundle = mount / bundle_rel
    wheels = sorted(bundle.glob("*.whl"))
    if not wheels or not (bundle / "requirements.lock").is_file():
        raise RunError(f"the run's bundle {bundle_rel} is incomplete on the share; rerun `aitk azure run`")
    cache = mount / "cache" / "pip"
    cache.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
           "--progress-bar", "off", "--cache-dir", str(cache)]
    t0 = time.time()
    for args, what in (([*pip, "-q", "-r", str(bundle / "requirements.lock")], "dependencies"),
                       ([*pip, "-q", "--no-deps", "--upgrade", "--target", str(site), str(wheels[0])], "aitk")):
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out = proc.stdout.decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            raise RunError(f"installing {what} failed (pip exit {proc.returncode}): " + out[-1500:])
    say(f"installed {wheels[0].name} and its locked dependencies in {time.time() - t0:.0f} s "
        f"(pip cache on the share)", log)
    return {"PYTHONPATH": os.pathsep.join([str(site)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}


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


def serve(mount: Path, deploy_rel: str, bundle_rel: str, port: str) -> int:
    """`aitk serve` of a deploy folder ("-": none yet, the built-in tiny model) on the image's Python."""
    local = Path(tempfile.gettempdir()) / "aitk-deploy"
    try:
        if ".." in Path(deploy_rel).parts or ".." in Path(bundle_rel).parts:
            raise RunError(f"unsafe folder {deploy_rel} / {bundle_rel}")
        env = {**os.environ, **install_bundle(mount, bundle_rel, Path(tempfile.gettempdir()) / "aitk-site")}
        args = [sys.executable, "-m", "aitk.cli.main", "serve", "--host", "0.0.0.0", "--port", port]
        if deploy_rel != "-":
            manifest = json.loads((mount / deploy_rel / "manifest.json").read_text(encoding="utf-8"))
            size = materialize(mount, manifest, local)
            say(f"deploy laid out: {len(manifest['files'])} files, {size / 1e6:.1f} MB")
            args += ["--project", str(local)]
    except (RunError, OSError, ValueError) as e:
        say(f"failed: {e}")
        return 2
    os.execvpe(args[0], args, env)
    return 0  # not reached


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
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":  # the inference app: install, lay out, serve
        return serve(Path(os.environ.get("AITK_MOUNT", "/mount")), sys.argv[2], sys.argv[3], sys.argv[4])
    mount = Path(os.environ.get("AITK_MOUNT", "/mount"))
    try:
        run_rel = resolve_run(mount)
    except RunError as e:
        say(f"failed: {e}")
        return 2
    if ".." in Path(run_rel).parts:
        say(f"unsafe run folder {run_rel}")
        return 2
    say(f"run folder {run_rel}")
    run_dir = mount / run_rel
    work = Path(os.environ.get("AITK_WORK") or tempfile.mkdtemp(prefix="aitk-run-"))
    work.mkdir(parents=True, exist_ok=True)
    status = {"status": "failed", "exit_code": 1, "error": None, "started": time.time()}
    with open(run_dir / "log.txt", "a", encoding="utf-8") as log:
        try:
            manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
            extra_env = install_bundle(mount, manifest["bundle"], work / "site", log) if manifest.get("bundle") else {}
            project_dir, job_dir = work / "project", work / "job"
            size = materialize(mount, manifest, project_dir)
            job_dir.mkdir(parents=True, exist_ok=True)
            say(f"project laid out: {len(manifest['files'])} files, {size / 1e6:.1f} MB", log)
            env = {**os.environ, **extra_env, "AITK_DATA_DIR": str(work / "data"), "AITK_CONFIG_DIR": str(work / "config"),
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
        except RunError as e:
            status.update(error=str(e))
            say(f"failed: {e}", log)
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
