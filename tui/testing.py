"""Fabricated state for tests, snapshots and README screenshots: projects, jobs with logs and
metrics, a fixed clock and device, and a chat engine that streams canned answers.

Nothing here trains or loads a model. Jobs look exactly like real ones to the app (the same store,
log and metrics files); a "running" job points at a process that really exists (a `sleep`), so
reconciliation keeps it running and the local scheduler sees its slot taken and starts nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path  # noqa: F401 - tests use testing.Path

from aitk.core.chat import ChatStream
from aitk.core.devices import DeviceInfo
from aitk.core.jobs import JobRecord, JobStore
from aitk.core.azure_signin import AzureSignIn
from aitk.tui.config import Config

FIXED_NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC: ages and ETAs in fixtures never move
DEVICE = DeviceInfo(best="cpu", cpu_count=8, ram_mib=32768, execution_providers=("CPUExecutionProvider",))
AZURE = AzureSignIn(False)


def isolated_env(root: Path, setenv=os.environ.__setitem__) -> dict[str, str]:
    """Point every aitk folder under `root` (emptied first) and return the variables set.

    Tests pass `monkeypatch.setenv` so the environment is restored afterwards.
    """
    shutil.rmtree(root, ignore_errors=True)
    env = {"AITK_DATA_DIR": str(root / "data"), "AITK_CONFIG_DIR": str(root / "config"),
           "AITK_CACHE_DIR": str(root / "cache"), "AITK_PROJECTS_DIR": str(root / "projects"),
           "AITK_LOCAL_SLOTS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"),
           "TZ": "UTC"}  # times of day in tables: the same pictures on every machine
    for key, value in env.items():
        setenv(key, value)
        if key.endswith("_DIR"):
            Path(value).mkdir(parents=True, exist_ok=True)
    time.tzset()
    return env


def fabricate_project(name: str, *, adapter: bool = False, exported: bool = False,
                      model_id: str = "tiny") -> Path:
    """A project folder as `create_project` writes it, with a stand-in model folder (the files the
    job preflight looks for; nothing here loads it)."""
    import tomli_w

    from aitk.core import paths, tiny
    from aitk.core.defaults import default_settings

    root = paths.projects_dir() / name
    (root / "dataset").mkdir(parents=True)
    bundled = paths.bundled_data() / "tiny_qa"
    shutil.copy2(bundled / "train.jsonl", root / "dataset" / "train.jsonl")
    shutil.copy2(bundled / "eval.jsonl", root / "dataset" / "eval.jsonl")
    settings = default_settings(name, model_id if model_id == tiny.TINY_ID else "someone/custom", "cpu")
    settings.model.id = model_id
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text('{"architectures": ["Phi3ForCausalLM"]}', encoding="utf-8")
    (root / "model" / "model.safetensors").write_bytes(b"")
    (root / "aitk.toml").write_text(tomli_w.dumps(settings.to_toml_dict()), encoding="utf-8")
    if adapter or exported:
        a = root / "models" / "olive" / "adapter"
        a.mkdir(parents=True)
        (a / "adapter_config.json").write_text("{}")
    if exported:
        o = root / "models" / "onnx" / "fp32"
        o.mkdir(parents=True)
        (o / "genai_config.json").write_text("{}")
    return root


def loss_curve(max_steps: int = 600, upto: int | None = None, every: int = 10, eval_every: int = 200,
               t0: float = FIXED_NOW - 300, seconds_per_step: float = 0.25) -> list[dict]:
    """Metric records of a plausible run, as the trainer callback writes them."""
    upto = max_steps if upto is None else upto
    out = [{"step": 0, "max_steps": max_steps, "epoch": 0.0, "t": t0, "event": "begin"}]
    for step in range(every, upto + 1, every):
        loss = 0.15 + 5.2 * math.exp(-step / 45) + 0.04 * math.sin(step / 7)
        rec = {"step": step, "max_steps": max_steps, "epoch": round(step / 20, 2), "loss": round(loss, 4),
               "learning_rate": 0.002, "t": t0 + step * seconds_per_step}
        out.append(rec)
        if step % eval_every == 0:
            out.append({"step": step, "max_steps": max_steps, "epoch": round(step / 20, 2),
                        "eval_loss": round(0.9 + 3.0 * math.exp(-step / 120), 4), "t": t0 + step * seconds_per_step})
    return out


def fabricate_job(store: JobStore, kind: str, status: str, project: Path | None, *, created: float,
                  started: float | None = None, finished: float | None = None, metrics: list[dict] = (),
                  log: list[str] = (), error: str | None = None, pid: int | None = None,
                  parent: str | None = None, params: dict | None = None, result: dict | None = None,
                  job_id: str | None = None) -> JobRecord:
    rec = store.create(kind, project=str(project) if project else None, device="cpu", parent=parent, params=params)
    if job_id:  # a fixed id, so snapshots do not change between runs
        store._exec("UPDATE jobs SET id = ? WHERE id = ?", (job_id, rec.id))
        store.job_dir(rec.id).rename(store.job_dir(job_id))
        rec = store.get(job_id)
    store.update(rec.id, status=status, created=created, started=started, finished=finished, error=error, pid=pid,
                 exit_code=None if status in ("queued", "starting", "running") else (0 if status == "succeeded" else 1))
    if log:
        store.log_path(rec.id).write_text("\n".join(log) + "\n", encoding="utf-8")
    if metrics:
        store.metrics_path(rec.id).write_text("".join(json.dumps(m) + "\n" for m in metrics), encoding="utf-8")
    if result is not None:
        (store.job_dir(rec.id) / "result.json").write_text(json.dumps(result))
    return store.get(rec.id)


def fabricate_parity(store: JobStore, project: Path, job: JobRecord | None, *, passed: bool,
                     checked: float = FIXED_NOW - 7130) -> dict:
    """A parity record as `core.parity.run` writes it, for the project's fp32 export (and in the
    folder of the job that checked), made against the project's export stamps now."""
    from aitk.core import atomic_file, parity

    def comparison(form, agree, divergence=None):
        return {"form": form, "label": parity.FORMS[form], "against": "torch", "required": True, "agree": agree,
                "total": 32, "rate": agree / 32, "first_divergence": divergence}

    divergence = None if passed else {"row": 2, "prompt": "Who invented the Brounshan?", "expected": "Kounglour.",
                                      "got": "What.", "answer": "Kounglour."}
    agree = 32 if passed else 14
    findings = [] if passed else [{
        "name": "chat template: export fp32", "severity": "error",
        "message": "renders eval row 1 as '<|user|>What colour is a Touxkru bir', training saw "
                   "'<|user|>\\nWhat colour is a Touxkru bi'", "hint": "export again"}]
    record = {"schema": parity.SCHEMA, "project": project.name, "root": str(project), "precision": "fp32",
              "checked": checked, "seconds": 31.5, "prompts": 32, "max_new_tokens": 16, "reference": "torch",
              "rule": parity.PASS_RULE, "exports": parity.export_versions(project, "fp32"), "end_token": "<|end|>",
              "stops": {"training": [0, 4], "torch-chat": [4, 0]},
              "comparisons": [comparison("torch-chat", 32), comparison("onnx", agree, divergence),
                              {**comparison("merged", 0), "required": False, "total": 0,
                               "skipped": "no merged export (`aitk export --merged`)"},
                              comparison("serve", agree, divergence)],
              "findings": findings, "passed": passed,
              "verdict": "" if passed else "onnx vs torch; serve vs torch; chat template: export fp32"}
    text = json.dumps(record, indent=2)
    atomic_file.write_text(parity.record_path(project, "fp32"), text)
    if job is not None:
        atomic_file.write_text(store.job_dir(job.id) / parity.JOB_RECORD, text)
    return record


def training_log(steps: int) -> list[str]:
    lines = ["[aitk] fine-tuning tiny (lora) on cpu",
             "[2026-01-01 00:00:01,000] [INFO] [engine.py:842:_create_system] Host system created",
             "[2026-01-01 00:00:01,020] [INFO] [engine.py:665:_run_pass] Running pass finetune:lora",
             "[2026-01-01 00:00:02,400] [INFO] [lora.py:460:train_and_save_new_model] Running fine-tuning"]
    for m in loss_curve(upto=steps)[1:]:
        if "loss" in m:
            lines.append(f"{{'loss': {m['loss']}, 'learning_rate': 0.002, 'epoch': {m['epoch']}}}")
    return lines


class SleepingProcess:
    """A real process to stand for a running job (killed by `stop`)."""

    def __init__(self):
        # No inherited stdout/stderr: a reader of the parent's pipes would otherwise wait for it.
        self.proc = subprocess.Popen(["sleep", "600"], start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def populate(store: JobStore, running_pid: int | None) -> dict[str, JobRecord]:
    """Two projects and the jobs of a typical afternoon: one fine-tune running at 62 %."""
    demo = fabricate_project("demo-qa", exported=True)
    support = fabricate_project("support-bot", adapter=True)
    t = FIXED_NOW
    jobs = {}

    def job(name, kind, status, project, **kw):
        jobs[name] = fabricate_job(store, kind, status, project, job_id=f"20260101-0000{len(jobs) + 1:02d}-{name}",
                                   **kw)
        return jobs[name]

    job("ft-old", "finetune", "succeeded", demo, created=t - 7200, started=t - 7190, finished=t - 7150,
        metrics=loss_curve(), log=training_log(600) + ["[aitk] job succeeded"])
    job("export", "export", "succeeded", demo, created=t - 7199, started=t - 7150, finished=t - 7135,
        parent=jobs["ft-old"].id, log=["[aitk] exporting tiny (fp32, cpu) with its adapter", "[aitk] job succeeded"])
    job("evaluate", "evaluate", "succeeded", demo, created=t - 7198, started=t - 7135, finished=t - 7128,
        parent=jobs["ft-old"].id, result={"rows": 40, "base": {"loss": 7.61, "perplexity": 2018.0},
                                           "tuned": {"loss": 0.912, "perplexity": 2.49}},
        log=["[aitk] base:  loss 7.6100  perplexity 2018.00", "[aitk] tuned: loss 0.9120  perplexity 2.49"])
    job("failed", "finetune", "failed", support, created=t - 3600, started=t - 3590, finished=t - 3580,
        error="dataset/train.jsonl:12: answer: empty value",
        log=["[aitk] error: dataset/train.jsonl:12: answer: empty value"])
    job("running", "finetune", "running", demo, created=t - 160, started=t - 155, metrics=loss_curve(upto=370),
        log=training_log(370), pid=running_pid)
    job("queued", "export", "queued", demo, created=t - 159, parent=jobs["running"].id)
    return jobs


class FakeEngine:
    """Streams canned answers word by word, with fixed token counts and speed (deterministic)."""

    adapters = ["tuned"]

    def __init__(self, answers: dict[str | None, str] | None = None, delay: float = 0.0,
                 adapters: list[str] | None = None):
        self.answers = answers or {"base": "Methlmix mousmirzen soxzueth gixor.", "tuned": "Glodan."}
        self.delay = delay
        if adapters is not None:
            self.adapters = adapters
        self.calls: list[tuple[list[dict], str | None]] = []

    def stream(self, messages, options=None, adapter=None, stop: threading.Event | None = None) -> ChatStream:
        self.calls.append((messages, adapter))
        text = self.answers.get(adapter, self.answers.get("tuned", ""))
        words = [w + " " for w in text.split(" ")]
        result = ChatStream(iter(()))

        def pieces():
            for w in words:
                if stop is not None and stop.is_set():
                    result.stopped = True
                    return
                if self.delay:
                    time.sleep(self.delay)
                result.tokens += 2
                result.seconds = result.tokens / 800.0
                yield w

        result.pieces = pieces()
        return result


def text_of(widget_or_renderable, width: int = 140) -> str:
    """Plain text of a Static's content (or any Rich renderable), for assertions."""
    import io

    from rich.console import Console

    content = getattr(widget_or_renderable, "content", widget_or_renderable)
    console = Console(width=width, file=io.StringIO(), color_system=None, record=True)
    console.print(content)
    return console.export_text()


def sync(test):
    """Run an async test function with asyncio (no pytest async plugin needed)."""
    import asyncio
    import functools

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


async def until(pilot, condition, timeout: float = 20.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds (for workers and polls); AssertionError on timeout.
    The limit only bounds a failure: a 2-core CI machine under load takes seconds for a worker."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def fixture_app(**kwargs):
    """The app on fixtures: fixed clock, device and Azure state, default config."""
    from aitk.tui.app import AitkApp

    kwargs.setdefault("config", Config())
    app = AitkApp(device=DEVICE, azure=AZURE, clock=lambda: FIXED_NOW, **kwargs)
    app.animation_level = "none"  # tab underlines and scrolls would make every step wait ~0.4 s
    return app


class World:
    """Isolated folders, the fabricated projects and jobs, and the process of the running job."""

    def __init__(self, root: Path, setenv=os.environ.__setitem__, populated: bool = True):
        self.env = isolated_env(root, setenv)
        self.store = JobStore()
        self.sleeper = SleepingProcess()
        self.jobs = populate(self.store, self.sleeper.pid) if populated else {}

    def close(self) -> None:
        self.sleeper.stop()


async def select_project(pilot, app, root: str) -> None:
    """Wait for the Projects pane to list `root`, then put the cursor on it: the index lists every
    project the session knows (others' too), so the first row need not be this one."""
    await until(pilot, lambda: app.pane("projects") is not None and root in app.pane("projects").projects,
                what=f"project {root} listed")
    pane = app.pane("projects")
    pane.query_one("DataTable").move_cursor(row=list(pane.projects).index(root))
    await until(pilot, lambda: pane.selected == root, what=f"project {root} selected")


async def open_jobs(app, pilot, rows: int | None = None):
    """F3, then wait for the Jobs pane to select a job (and to show `rows` rows, when given)."""
    from textual.widgets import DataTable

    await pilot.press("f3")
    await until(pilot, lambda: app.pane("jobs") is not None and app.pane("jobs").selected is not None
                and (rows is None or app.pane("jobs").query_one(DataTable).row_count == rows), what="jobs listed")
    return app.pane("jobs")
