"""`aitk doctor`: what this machine can do, what is missing, and what to do about it.

`diagnose()` returns a `Report`: a list of `Finding`s (level ok / info / warn / error, a title, the
detail, and the next step) and per-model `ModelAdvice` (the variant to chat with here, and whether
inference, LoRA and QLoRA fit, with a rough CPU training time). `format(report)` renders it as
plain text for the CLI; `Report.to_dict()` is the `--json` form and what the TUI screen reads.

Cheap and side-effect free: GPUs via nvidia-ml-py when importable (else nvidia-smi through
`devices.detect()`), torch's view of CUDA in a subprocess with a timeout (torch is never imported
here), RAM and CPU from /proc or the OS, free disk where models go, onnxruntime's execution
providers, the Hugging Face token (never shown: only its last 4 characters), and the Azure sign-in
state from the environment and the Azure CLI's cached profile, without any network call.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from . import catalog as cat
from . import azure_signin, devices, estimates, hub, paths
from .catalog import human_bytes

Level = Literal["ok", "info", "warn", "error"]
LEVELS: tuple[str, ...] = ("ok", "info", "warn", "error")

CUDA_PROBE_TIMEOUT = 60.0
DISK_WARN = 20 * 10**9      # a 3.8B model: ~7.1 GiB of weights + ~2.5 GiB ONNX + adapters and exports
DISK_ERROR = 2 * 10**9
RAM_WARN_MIB = 8 * 1024
TOKEN_MIN_LEN = 30
AZURE_CLI_URL = "https://aka.ms/installazurecli"


@dataclass(frozen=True)
class Finding:
    level: Level
    area: str           # gpu, cuda, directml, cpu, ram, disk, onnxruntime, huggingface, azure, models
    title: str
    detail: str = ""
    next_step: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelAdvice:
    model_id: str
    name: str
    params: str
    device: str                       # runtime the advice is for (inference)
    variant: str | None               # variant key to chat with here, None: none fits
    variant_label: str | None
    published: bool                   # downloaded build (True) or built locally from the weights
    inference: estimates.Fit | None
    train_device: str
    lora: estimates.Fit
    qlora: estimates.Fit
    next_step: str

    def to_dict(self) -> dict:
        def fit(f: estimates.Fit | None) -> dict | None:
            if f is None:
                return None
            return {"ok": f.ok, "need_bytes": f.need_bytes, "have_bytes": f.have_bytes, "device": f.device,
                    "variant": f.variant, "hours": f.hours, "speed": f.speed, "summary": f.summary(),
                    "estimate": f.estimate.parts if f.estimate else None}
        d = {k: v for k, v in asdict(self).items() if k not in ("inference", "lora", "qlora")}
        d.update(inference=fit(self.inference), lora=fit(self.lora), qlora=fit(self.qlora))
        return d


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    models: list[ModelAdvice] = field(default_factory=list)

    def count(self, level: str) -> int:
        return sum(1 for f in self.findings if f.level == level)

    @property
    def ok(self) -> bool:
        return self.count("error") == 0

    def by_area(self, area: str) -> list[Finding]:
        return [f for f in self.findings if f.area == area]

    def to_dict(self) -> dict:
        return {"findings": [f.to_dict() for f in self.findings], "models": [m.to_dict() for m in self.models],
                "summary": {lvl: self.count(lvl) for lvl in LEVELS}}


# --- Probes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuState:
    name: str
    total_mib: int
    free_mib: int
    driver: str | None = None


def nvml_gpus() -> tuple[list[GpuState] | None, str]:
    """GPUs via nvidia-ml-py (`pynvml`). None when the package is missing or NVML does not load."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None, "nvidia-ml-py not installed"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML unavailable ({e})"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else str(name)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out.append(GpuState(name, int(mem.total) // 2**20, int(mem.free) // 2**20, driver))
        return out, "nvidia-ml-py"
    except Exception as e:
        return None, f"NVML query failed ({e})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


_TORCH_PROBE = r"""
import importlib.util, json
out = {"torch": None, "packages": {}}
for m in ("transformers", "peft", "bitsandbytes", "olive", "onnxruntime_genai", "torch_directml"):
    out["packages"][m] = importlib.util.find_spec(m) is not None
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda_build"] = torch.version.cuda
    out["cuda"] = bool(torch.cuda.is_available())
    out["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if out["cuda"] else []
    out["bf16"] = bool(out["cuda"] and torch.cuda.is_bf16_supported())
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def probe_torch(timeout: float = CUDA_PROBE_TIMEOUT) -> dict:
    """torch's view of CUDA, from a child process (importing torch costs seconds and memory)."""
    try:
        proc = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    except OSError as e:
        return {"error": f"cannot start {sys.executable}: {e}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"probe failed (exit {proc.returncode}): {tail[0][:200]}"}


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (Linux); empty elsewhere."""
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except OSError:
        pass
    return out


def cpu_details() -> tuple[str, list[str]]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags.update(line.split(":", 1)[1].split())
                if name and flags:
                    break
    except OSError:
        pass
    wanted = [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"), ("amx_tile", "AMX")]
    return name, [label for flag, label in wanted if flag in flags]


def mask(secret: str) -> str:
    """`****abcd`: enough to tell tokens apart, never enough to use one."""
    return "****" + secret[-4:] if len(secret) >= 8 else "****"


def token_looks_valid(token: str) -> bool:
    return token.startswith("hf_") and len(token) >= TOKEN_MIN_LEN and re.fullmatch(r"[A-Za-z0-9_]+", token) is not None


def token_source() -> tuple[str | None, str | None]:
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if (os.environ.get(var) or "").strip():
            return os.environ[var].strip(), f"environment variable {var}"
    path = hub.token_file()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None, None
    return (value, f"token file {path}") if value else (None, None)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _pkg_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- Checks -----------------------------------------------------------------------------------------


def _check_cpu(info: devices.DeviceInfo) -> list[Finding]:
    name, feats = cpu_details()
    detail = f"{name}; {', '.join(feats) if feats else 'no AVX2'}; {platform.system()} {platform.machine()}"
    if info.cpu_count < 4:
        return [Finding("warn", "cpu", f"CPU: {info.cpu_count} cores", detail + ". Fine-tuning on so few cores "
                        "suits the tiny model only.", "train real models on a CUDA GPU or on Azure")]
    return [Finding("ok", "cpu", f"CPU: {info.cpu_count} cores", detail)]


def _check_ram(info: devices.DeviceInfo) -> list[Finding]:
    mi = meminfo()
    total = mi.get("MemTotal") or info.ram_mib * 2**20
    avail = mi.get("MemAvailable")
    detail = f"{human_bytes(total)} total" + (f", {human_bytes(avail)} available now" if avail else "")
    detail += f"; jobs may use ~{int(estimates.RAM_USABLE * 100)}% ({human_bytes(total * estimates.RAM_USABLE)})"
    if total and total < RAM_WARN_MIB * 2**20:
        return [Finding("warn", "ram", f"RAM: {human_bytes(total)}", detail,
                        "close other programs; prefer int4 variants and models up to 1.5B")]
    return [Finding("ok", "ram", f"RAM: {human_bytes(total)}", detail)]


def _check_gpu(info: devices.DeviceInfo,
               nvml: tuple[list[GpuState] | None, str]) -> tuple[list[Finding], list[GpuState]]:
    gpus, how = nvml
    if gpus is None:
        gpus = [GpuState(g.name, g.memory_mib, g.free_mib) for g in info.gpus]
        how = f"{how}; nvidia-smi" if shutil.which("nvidia-smi") else f"{how}; nvidia-smi not found"
    if not gpus:
        return [Finding("warn", "gpu", "No NVIDIA GPU found", f"{how}.",
                        "fine-tune the tiny model here on CPU; for real models use a machine with a CUDA GPU "
                        "or fine-tune on Azure (needs an Azure sign-in, see below)")], []
    out = []
    for i, g in enumerate(gpus):
        detail = f"{g.total_mib / 1024:.1f} GiB total, {g.free_mib / 1024:.1f} GiB free" + \
            (f"; driver {g.driver}" if g.driver else "")
        if g.free_mib < 0.5 * g.total_mib:
            out.append(Finding("warn", "gpu", f"GPU {i}: {g.name}", detail + ". Other processes hold much of its "
                               "memory.", "stop them (see `nvidia-smi`) before training"))
        else:
            out.append(Finding("ok", "gpu", f"GPU {i}: {g.name}", detail))
    return out, gpus


def _check_torch(probe: dict | None, gpus: list[GpuState]) -> list[Finding]:
    if probe is None:
        return [Finding("info", "cuda", "PyTorch/CUDA check skipped", "run `aitk doctor` without --quick")]
    if "timeout" in probe:
        return [Finding("warn", "cuda", "PyTorch check timed out",
                        f"`import torch` took over {probe['timeout']:.0f} s in a child process.",
                        "run `python -c 'import torch'` to see why (a broken install or a slow disk)")]
    pk = probe.get("packages", {})
    missing = [m for m in ("transformers", "peft", "olive") if not pk.get(m)]
    stack = "" if not missing else f" Missing for fine-tuning: {', '.join(missing)}."
    if not probe.get("torch"):
        return [Finding("error", "cuda", "PyTorch is not usable", (probe.get("error") or "not installed") + stack,
                        "reinstall the environment (`make install`) to fine-tune locally")]
    version = probe["torch"]
    qlora = "QLoRA available (bitsandbytes)" if pk.get("bitsandbytes") else "QLoRA unavailable (no bitsandbytes)"
    if probe.get("cuda"):
        devs = ", ".join(probe.get("devices") or [])
        bf16 = "bf16 supported" if probe.get("bf16") else "no bf16 (use float16)"
        return [Finding("ok", "cuda", f"PyTorch {version} sees CUDA {probe.get('cuda_build')}",
                        f"{devs}; {bf16}; {qlora}.{stack}")]
    if gpus:
        if not probe.get("cuda_build"):
            return [Finding("error", "cuda", f"PyTorch {version} is a CPU-only build, but a GPU is present",
                            f"training would run on CPU.{stack}",
                            "install a CUDA build: pip install torch --index-url https://download.pytorch.org/whl/cu124")]
        return [Finding("error", "cuda", f"PyTorch {version} (CUDA {probe.get('cuda_build')}) cannot use the GPU",
                        (probe.get("error") or "torch.cuda.is_available() is False") + stack,
                        "update the NVIDIA driver to one supporting this CUDA version, or install a matching torch")]
    build = f"CUDA {probe['cuda_build']} build" if probe.get("cuda_build") else "CPU build"
    return [Finding("ok", "cuda", f"PyTorch {version} ({build}): training runs on CPU",
                    f"no GPU for CUDA; {qlora}.{stack}")]


def _check_directml(info: devices.DeviceInfo) -> list[Finding]:
    if platform.system() != "Windows":
        return [Finding("info", "directml", "DirectML: Windows only", "not applicable on this system.")]
    if "DmlExecutionProvider" in info.execution_providers:
        return [Finding("ok", "directml", "DirectML available", "GPU chat through onnxruntime's DmlExecutionProvider.")]
    return [Finding("info", "directml", "DirectML not installed", "chat runs on CPU.",
                    "for GPU chat on any DirectX 12 GPU: pip install onnxruntime-directml onnxruntime-genai-directml")]


def _check_onnxruntime(info: devices.DeviceInfo, gpus: list[GpuState]) -> list[Finding]:
    ort = _pkg_version("onnxruntime") or _pkg_version("onnxruntime-gpu") or _pkg_version("onnxruntime-directml")
    genai = _pkg_version("onnxruntime-genai") or _pkg_version("onnxruntime-genai-cuda") or \
        _pkg_version("onnxruntime-genai-directml")
    eps = list(info.execution_providers)
    if not ort or not eps:
        return [Finding("error", "onnxruntime", "ONNX Runtime is not installed", "chat needs it.",
                        "pip install onnxruntime onnxruntime-genai")]
    detail = f"execution providers: {', '.join(eps)}; onnxruntime-genai {genai or 'missing'}"
    if not genai:
        return [Finding("error", "onnxruntime", f"ONNX Runtime {ort}, but no onnxruntime-genai", detail,
                        "pip install onnxruntime-genai")]
    if gpus and "CUDAExecutionProvider" not in eps:
        return [Finding("warn", "onnxruntime", f"ONNX Runtime {ort}: no CUDA provider", detail + ". Chat runs on CPU.",
                        "for GPU chat: pip install onnxruntime-gpu onnxruntime-genai-cuda")]
    return [Finding("ok", "onnxruntime", f"ONNX Runtime {ort}", detail)]


def _check_disk() -> list[Finding]:
    out = []
    places = [("data", paths.data_dir()), ("Hugging Face cache", hub.hf_cache_dir())]
    for label, where in places:
        probe = _nearest_existing(where)
        try:
            usage = shutil.disk_usage(probe)
        except OSError as e:
            out.append(Finding("warn", "disk", f"Disk: cannot check {label} ({where})", str(e)))
            continue
        title = f"Disk: {human_bytes(usage.free)} free for {label}"
        detail = f"{where} ({human_bytes(usage.total)} volume)"
        if usage.free < DISK_ERROR:
            out.append(Finding("error", "disk", title, detail + ". Downloads and exports will fail.",
                               "free space, or set " + ("HF_HUB_CACHE" if "cache" in label else "AITK_DATA_DIR")
                               + " to a larger disk"))
        elif usage.free < DISK_WARN:
            out.append(Finding("warn", "disk", title, detail + ". A 3.8B model with its ONNX build takes ~10 GiB.",
                               "free space (`aitk model ls` / `aitk model rm`) or set "
                               + ("HF_HUB_CACHE" if "cache" in label else "AITK_DATA_DIR") + " to a larger disk"))
        else:
            out.append(Finding("ok", "disk", title, detail))
    return out


def _check_hf() -> list[Finding]:
    out = []
    token, source = token_source()
    if token is None:
        out.append(Finding("warn", "huggingface", "No Hugging Face token",
                           "public models download without one; gated models (Llama 3.2, Mistral) need it.",
                           f"create a read token at {hub.TOKEN_URL}, then `export HF_TOKEN=hf_...` "
                           "(or `hf auth login`)"))
    elif token_looks_valid(token):
        out.append(Finding("ok", "huggingface", f"Hugging Face token present ({mask(token)})",
                           f"from {source}; looks valid (not checked online). Gated models also need their licence "
                           "accepted on the model page."))
    else:
        out.append(Finding("error", "huggingface", f"Hugging Face token looks wrong ({mask(token)})",
                           f"from {source}: tokens start with `hf_` and are {TOKEN_MIN_LEN}+ characters.",
                           f"copy a read token from {hub.TOKEN_URL} again"))
    endpoint = hub.hf_endpoint()
    if endpoint != "https://huggingface.co":
        out.append(Finding("info", "huggingface", f"Hub endpoint: {endpoint}", "set by HF_ENDPOINT."))
    if hub.is_offline():
        out.append(Finding("info", "huggingface", "Offline mode (HF_HUB_OFFLINE)",
                           f"only models already in {hub.hf_cache_dir()} can be used.",
                           "unset HF_HUB_OFFLINE to download"))
    return out


def _check_azure() -> list[Finding]:
    st = azure_signin.detect()
    sources = (st.source, *st.also) if st.signed_in else ()
    out = []
    if azure_signin.ENVIRONMENT in sources:
        sub = os.environ.get("AZURE_SUBSCRIPTION_ID")
        out.append(Finding("ok", "azure", "Azure: service principal credentials in the environment",
                           f"AZURE_CLIENT_ID {mask(st.client_id or '')} with {st.secret_kind}; "
                           + (f"subscription {mask(sub)} (AZURE_SUBSCRIPTION_ID)." if sub else
                              "no AZURE_SUBSCRIPTION_ID set."),
                           None if sub else "set AZURE_SUBSCRIPTION_ID to the subscription to run jobs in"))
    if azure_signin.WORKLOAD in sources:
        out.append(Finding("ok", "azure", "Azure: workload identity (federated token) in the environment",
                           f"AZURE_CLIENT_ID {mask(st.client_id or '')} with AZURE_FEDERATED_TOKEN_FILE.", None))
    if azure_signin.MANAGED in sources:
        out.append(Finding("ok", "azure", "Azure: managed identity endpoint announced by the platform",
                           f"{'IDENTITY_ENDPOINT' if os.environ.get('IDENTITY_ENDPOINT') else 'MSI_ENDPOINT'}; "
                           "`aitk azure login --check` asks it for a token.", None))
    if azure_signin.AZD in sources:
        out.append(Finding("ok", "azure", "Azure Developer CLI signed in (azd auth login)",
                           "not checked online: the sign-in may have expired.", None))
    if azure_signin.REMEMBERED in sources:
        record = azure_signin.remembered_record() or {}
        out.append(Finding("ok", "azure", f"Azure: signed in as {record.get('username') or '?'} "
                           "(remembered device-code sign-in)",
                           f"tenant {mask(str(record.get('tenantId', '')))}; from {azure_signin.auth_record_path()} "
                           "(not checked online: the sign-in may have expired).",
                           None))
    default = st.profile.default if st.profile else None
    if default:
        user = (default.get("user") or {}).get("name", "?")
        out.append(Finding("ok", "azure", f"Azure CLI signed in as {user}",
                           f"subscription {default.get('name', '?')!r} ({mask(str(default.get('id', '')))}), "
                           f"{len(st.profile.subscriptions)} known; from {st.profile.path} (not checked online: "
                           "the sign-in may have expired).",
                           None if st.az else "install the Azure CLI to refresh it: " + AZURE_CLI_URL))
    if out:
        return out
    if st.az:
        return [Finding("warn", "azure", "Azure CLI installed but not signed in",
                        "fine-tuning on Azure needs a sign-in.",
                        "run `az login` (over SSH: `az login --use-device-code`)")]
    return [Finding("warn", "azure", "Not signed in to Azure",
                    "only needed to fine-tune or serve on Azure; no Azure CLI, no cached profile, "
                    "no AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET.",
                    f"install the Azure CLI ({AZURE_CLI_URL}) and run `az login` "
                    "(`az login --use-device-code` over SSH), or set a service principal's "
                    "AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET")]


def _device_info_with(info: devices.DeviceInfo, gpus: list[GpuState]) -> devices.DeviceInfo:
    """DeviceInfo whose GPUs are the ones the doctor found (NVML may see what nvidia-smi did not)."""
    if gpus and not info.gpus:
        return devices.DeviceInfo(best="cuda", gpus=tuple(devices.Gpu(g.name, g.total_mib, g.free_mib) for g in gpus),
                                  cpu_count=info.cpu_count, ram_mib=info.ram_mib,
                                  execution_providers=info.execution_providers)
    return info


def advise(entry: cat.CatalogEntry, info: devices.DeviceInfo) -> ModelAdvice:
    rt_best = estimates.best_runtime(info)
    v = estimates.recommend_variant(entry, info)
    rt = v.runtime if v else rt_best
    inference = estimates.fits(entry, info, "inference", rt) if entry.variants_for(rt) else None
    train_dev = "cuda" if info.gpus else "cpu"
    lora = estimates.fits(entry, info, "lora", train_dev)
    qlora = estimates.fits(entry, info, "qlora", train_dev)
    if v is None:
        step = "no variant fits this machine's memory: chat with it on a larger machine or on Azure"
    elif entry.local:
        step = f"`aitk model pull {entry.id}` builds it locally (seconds)"
    elif v.published:
        step = f"`aitk model pull {entry.id} --variant {v.runtime}` ({human_bytes(v.download_bytes)})"
    else:
        step = (f"`aitk model pull {entry.id}` ({human_bytes(entry.download_bytes)} of weights); the {v.precision} "
                "ONNX model is built from them on export")
    if entry.gated and not entry.local:
        step += f"; gated: accept the licence at https://huggingface.co/{entry.repo} and set HF_TOKEN"
    return ModelAdvice(entry.id, entry.name, entry.params_label, rt, v.key if v else None, v.label if v else None,
                       bool(v and v.published), inference, train_dev, lora, qlora, step)


def _summaries(advice: list[ModelAdvice], info: devices.DeviceInfo) -> list[Finding]:
    out = []
    train_dev = "cuda" if info.gpus else "cpu"
    where = "GPU" if train_dev == "cuda" else "CPU"
    practical = {m: [a.model_id for a in advice if getattr(a, m).practical] for m in ("lora", "qlora")}
    fit_slow = [a for a in advice if (a.lora.ok or a.qlora.ok) and not (a.lora.practical or a.qlora.practical)]
    no_fit = [a.model_id for a in advice if a.lora.ok is False and a.qlora.ok is False]
    both = [i for i in practical["lora"] if i in practical["qlora"]]
    if both or practical["lora"] or practical["qlora"]:
        names = both or practical["lora"] or practical["qlora"]
        methods = "LoRA and QLoRA" if both else ("LoRA" if practical["lora"] else "QLoRA")
        detail_bits = []
        for a in advice:
            if a.model_id in names:
                f = a.lora if a.lora.practical else a.qlora
                detail_bits.append(f"{a.model_id}: {f.summary()}")
        if fit_slow:
            detail_bits.append("fit in memory but too slow here: " + ", ".join(
                f"{a.model_id} (~{estimates.human_hours((a.lora if a.lora.ok else a.qlora).hours)})" for a in fit_slow))
        if no_fit:
            detail_bits.append("do not fit: " + ", ".join(no_fit))
        step = ("start with the tiny model: `aitk model pull tiny` builds it, then create a project with it"
                if train_dev == "cpu" and "tiny" in names else "pick one of these for your project")
        if train_dev == "cpu":
            step += "; for real models use a CUDA GPU or fine-tune on Azure"
        out.append(Finding("ok", "models", f"{where} fine-tuning: {methods} possible for {', '.join(names)}",
                           "; ".join(detail_bits) + ".", step))
    else:
        out.append(Finding("warn", "models", f"{where} fine-tuning: no catalog model is practical here",
                           "; ".join(f"{a.model_id}: {a.lora.summary()}" for a in advice) + ".",
                           "use a machine with a CUDA GPU, or fine-tune on Azure"))

    rt = estimates.best_runtime(info)
    rt_label = {"cpu": "CPU", "cuda": "GPU (CUDA)", "directml": "GPU (DirectML)"}[rt]
    fitting = [a for a in advice if a.inference is not None and a.inference.ok is not False and a.variant]
    not_fitting = [a for a in advice if a not in fitting]
    mem = "RAM" if rt == "cpu" else "GPU memory"
    if fitting:
        budget = estimates.device_budget(info, rt)
        detail = "; ".join(
            f"{a.model_id} ({a.variant}{'' if a.published else ', built locally'}, "
            f"~{human_bytes(a.inference.need_bytes)})" for a in fitting)
        if not_fitting:
            detail += "; too large: " + ", ".join(a.model_id for a in not_fitting)
        example = next((a for a in fitting if a.published), fitting[0])
        out.append(Finding("ok", "models",
                           f"{rt_label} inference: {len(fitting)} of {len(advice)} catalog models fit in {mem}"
                           + (f" ({human_bytes(budget)} usable)" if budget else ""),
                           detail + ".", f"download one to chat with, e.g. {example.next_step}"))
    else:
        out.append(Finding("warn", "models", f"{rt_label} inference: no catalog model fits in {mem}",
                           "; ".join(f"{a.model_id}: {a.inference.summary() if a.inference else 'no variant'}"
                                     for a in advice) + ".",
                           "free memory, or chat on a larger machine"))
    return out


def diagnose(*, info: devices.DeviceInfo | None = None, catalog: cat.Catalog | None = None,
             check_torch: bool = True, torch_probe: dict | None = None,
             torch_timeout: float = CUDA_PROBE_TIMEOUT, models: bool = True) -> Report:
    """Run every check. `torch_probe` injects the child-process result (tests); `check_torch=False`
    skips it (`aitk doctor --quick`)."""
    info = info or devices.detect()
    report = Report()
    nvml = nvml_gpus()
    gpu_findings, gpus = _check_gpu(info, nvml)
    info = _device_info_with(info, gpus)
    probe = torch_probe if torch_probe is not None else (probe_torch(torch_timeout) if check_torch else None)
    report.findings += _check_cpu(info)
    report.findings += _check_ram(info)
    report.findings += gpu_findings
    report.findings += _check_torch(probe, gpus)
    report.findings += _check_directml(info)
    report.findings += _check_onnxruntime(info, gpus)
    report.findings += _check_disk()
    report.findings += _check_hf()
    report.findings += _check_azure()
    if models:
        catalog = catalog or cat.load()
        report.models = [advise(e, info) for e in catalog]
        report.findings += _summaries(report.models, info)
    return report


# --- Text -------------------------------------------------------------------------------------------

_TAGS = {lvl: f"[{lvl}]".ljust(8) for lvl in LEVELS}


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=False) or [indent]


def format(report: Report | list[Finding], *, width: int = 100) -> str:  # noqa: A001 - the module's API
    """Plain text (no colours, no box drawing) for terminals, logs and bug reports."""
    if isinstance(report, list):
        report = Report(findings=report)
    lines = ["aitk doctor", ""]
    for f in report.findings:
        lines.append(f"{_TAGS[f.level]}{f.title}")
        if f.detail:
            lines += _wrap(f.detail, " " * 8, width)
        if f.next_step:
            lines += _wrap("next: " + f.next_step, " " * 8, width)
    if report.models:
        lines += ["", "Models (recommended variant on this machine; memory estimates, ±30%):"]
        rows = [("model", "params", "chat variant", "inference", f"LoRA ({report.models[0].train_device})",
                 f"QLoRA ({report.models[0].train_device})")]
        for a in report.models:
            inf = a.inference
            rows.append((
                a.model_id, a.params,
                (a.variant + ("" if a.published else " (build)")) if a.variant else "-",
                _cell(inf), _cell(a.lora), _cell(a.qlora)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    n_err, n_warn = report.count("error"), report.count("warn")
    lines += ["", f"{n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''}."]
    return "\n".join(lines) + "\n"


def _cell(f: estimates.Fit | None) -> str:
    if f is None:
        return "-"
    need = human_bytes(f.need_bytes)
    if f.ok is False:
        return f"no ({need})"
    mark = "yes" if f.ok else "?"
    if f.speed and f.speed != "ok":
        return f"{mark} {need}, {f.speed}"
    return f"{mark} {need}"
