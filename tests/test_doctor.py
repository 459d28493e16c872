"""aitk.core.doctor: every finding says what to do; secrets never show; this machine's verdict."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from aitk.cli.main import build_parser
from aitk.core import devices, doctor
from aitk.core.devices import DeviceInfo

TOKEN = "hf_" + "x" * 30 + "Q7z9"
CPU_PROBE = {"torch": "2.13.0+cpu", "cuda_build": None, "cuda": False, "devices": [], "bf16": False,
             "packages": {"transformers": True, "peft": True, "bitsandbytes": True, "olive": True,
                          "onnxruntime_genai": True, "torch_directml": False}}


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No token, no Azure, no az on PATH, no pynvml."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_SUBSCRIPTION_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "azure"))
    real_which = doctor.shutil.which
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None if name == "az" else real_which(name))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails like a missing package
    return tmp_path


def one(report: doctor.Report, area: str) -> doctor.Finding:
    found = report.by_area(area)
    assert len(found) == 1, found
    return found[0]


def token_finding(report: doctor.Report) -> doctor.Finding:
    return report.by_area("huggingface")[0]  # (conftest's HF_HUB_OFFLINE adds an info line after it)


def run_cli(argv, capsys):
    args = build_parser().parse_args(argv)
    return args.func(args), capsys.readouterr().out


# --- This machine -------------------------------------------------------------------------------------


@pytest.mark.skipif(bool(devices.detect().gpus), reason="describes a machine without an NVIDIA GPU")
def test_doctor_on_this_machine(clean_env, capsys):
    """The real checks (torch probed in a child process): no GPU, CPU LoRA/QLoRA for the tiny
    model, which models fit in RAM for CPU inference, no Azure sign-in; each with its next step."""
    code, out = run_cli(["doctor"], capsys)
    assert code == 0, out
    assert "[warn]  No NVIDIA GPU found" in out
    assert "[ok]    CPU fine-tuning: LoRA and QLoRA possible for tiny" in out
    assert "[ok]    CPU inference: " in out and "catalog models fit in RAM" in out
    assert "[warn]  Not signed in to Azure" in out
    assert "PyTorch" in out and "training runs on CPU" in out
    assert "0 errors" in out
    blocks = out.split("\n[")
    for title in ("No NVIDIA GPU found", "CPU fine-tuning", "CPU inference", "Not signed in to Azure"):
        block = next(b for b in blocks if title in b)
        assert "next: " in block, block

    report = doctor.diagnose(check_torch=False)
    gpu = one(report, "gpu")
    assert gpu.level == "warn" and "Azure" in gpu.next_step
    train, infer = report.by_area("models")
    assert train.title.startswith("CPU fine-tuning") and "tiny" in train.title
    assert "too slow here" in train.detail and "CUDA GPU or fine-tune on Azure" in train.next_step
    assert infer.title.startswith("CPU inference:") and "aitk model pull" in infer.next_step
    fitting = [m for m in report.models if m.inference and m.inference.ok]
    assert {m.model_id for m in fitting} <= set(infer.detail.replace("(", " ").replace(";", " ").split())
    tiny = next(m for m in report.models if m.model_id == "tiny")
    assert tiny.lora.practical and tiny.qlora.practical and tiny.train_device == "cpu"
    azure = one(report, "azure")
    assert "az login" in azure.next_step and "AZURE_CLIENT_SECRET" in azure.next_step


def test_json_output(clean_env, capsys):
    code, out = run_cli(["doctor", "--json", "--quick"], capsys)
    data = json.loads(out)
    assert {f["area"] for f in data["findings"]} >= {"cpu", "ram", "gpu", "disk", "onnxruntime", "huggingface",
                                                     "azure", "models"}
    assert all(f["level"] in doctor.LEVELS for f in data["findings"])
    assert all(f["next_step"] for f in data["findings"] if f["level"] in ("warn", "error"))
    phi = next(m for m in data["models"] if m["model_id"] == "phi-3-mini-4k")
    assert phi["inference"]["need_bytes"] > 0 and "weights" in phi["lora"]["estimate"]
    assert set(data["summary"]) == set(doctor.LEVELS)


# --- Tokens -------------------------------------------------------------------------------------------


def test_token_is_never_shown(clean_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    report = doctor.diagnose(check_torch=False, models=False)
    hf = token_finding(report)
    assert hf.level == "ok" and "****Q7z9" in hf.title and "HF_TOKEN" in hf.detail
    assert TOKEN not in doctor.format(report) and TOKEN not in json.dumps(report.to_dict())
    assert TOKEN[:-4] not in doctor.format(report)


def test_token_from_file_and_a_malformed_one(clean_env, monkeypatch):
    (clean_env / "no-token").write_text("not-a-token-1234\n")
    hf = token_finding(doctor.diagnose(check_torch=False, models=False))
    assert hf.level == "error" and "****1234" in hf.title and "token file" in hf.detail
    assert "settings/tokens" in hf.next_step
    assert doctor.mask("abc") == "****"


def test_no_token(clean_env):
    hf = token_finding(doctor.diagnose(check_torch=False, models=False))
    assert hf.level == "warn" and "HF_TOKEN" in hf.next_step and "gated" in hf.detail


# --- Azure --------------------------------------------------------------------------------------------


def test_azure_cli_profile(clean_env):
    azure = clean_env / "azure"
    azure.mkdir()
    profile = {"subscriptions": [
        {"id": "00000000-0000-0000-0000-00000000aaaa", "name": "Other", "isDefault": False,
         "user": {"name": "me@example.com", "type": "user"}},
        {"id": "00000000-0000-0000-0000-00000000beef", "name": "ML team", "isDefault": True,
         "user": {"name": "me@example.com", "type": "user"}}]}
    (azure / "azureProfile.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(profile).encode())  # the CLI's BOM
    f = one(doctor.diagnose(check_torch=False, models=False), "azure")
    assert f.level == "ok" and f.title == "Azure CLI signed in as me@example.com"
    assert "'ML team' (****beef)" in f.detail and "2 known" in f.detail
    assert "00000000-0000-0000-0000-00000000beef" not in f.detail


def test_azure_service_principal_and_cli_without_login(clean_env, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555556666")
    monkeypatch.setenv("AZURE_TENANT_ID", "t")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "very-secret")
    f = one(doctor.diagnose(check_torch=False, models=False), "azure")
    assert f.level == "ok" and "AZURE_CLIENT_SECRET" in f.detail and "very-secret" not in f.detail
    assert "AZURE_SUBSCRIPTION_ID" in f.next_step
    for var in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(var)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/az" if name == "az" else None)
    f = one(doctor.diagnose(check_torch=False, models=False), "azure")
    assert f.level == "warn" and f.title == "Azure CLI installed but not signed in"
    assert "az login --use-device-code" in f.next_step


# --- GPUs and CUDA ------------------------------------------------------------------------------------


def fake_pynvml(total_gib=24, free_gib=20, name=b"NVIDIA GeForce RTX 4090"):
    m = types.ModuleType("pynvml")
    mem = types.SimpleNamespace(total=total_gib * 2**30, free=free_gib * 2**30, used=(total_gib - free_gib) * 2**30)
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = lambda: b"550.54"
    m.nvmlDeviceGetCount = lambda: 1
    m.nvmlDeviceGetHandleByIndex = lambda i: object()
    m.nvmlDeviceGetName = lambda h: name
    m.nvmlDeviceGetMemoryInfo = lambda h: mem
    return m


def test_gpu_via_nvml_changes_the_advice(clean_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    info = DeviceInfo(best="cpu", cpu_count=16, ram_mib=64 * 1024,
                      execution_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    probe = dict(CPU_PROBE, torch="2.6.0+cu124", cuda_build="12.4", cuda=True, devices=["NVIDIA GeForce RTX 4090"],
                 bf16=True)
    report = doctor.diagnose(info=info, torch_probe=probe)
    gpu = one(report, "gpu")
    assert gpu.level == "ok" and gpu.title == "GPU 0: NVIDIA GeForce RTX 4090"
    assert "24.0 GiB total, 20.0 GiB free; driver 550.54" in gpu.detail
    assert one(report, "cuda").title == "PyTorch 2.6.0+cu124 sees CUDA 12.4"
    phi = next(m for m in report.models if m.model_id == "phi-3-mini-4k")
    assert phi.variant == "cuda-int4" and phi.train_device == "cuda" and phi.qlora.ok and phi.lora.speed is None
    assert report.by_area("models")[0].title.startswith("GPU fine-tuning")
    assert "--variant cuda" in phi.next_step


def test_busy_gpu_and_cpu_only_torch(clean_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(free_gib=3))
    info = DeviceInfo(best="cpu", cpu_count=8, ram_mib=32 * 1024, execution_providers=("CPUExecutionProvider",))
    report = doctor.diagnose(info=info, torch_probe=CPU_PROBE, models=False)
    assert one(report, "gpu").level == "warn" and "nvidia-smi" in one(report, "gpu").next_step
    cuda = one(report, "cuda")
    assert cuda.level == "error" and "CPU-only build" in cuda.title and "download.pytorch.org" in cuda.next_step
    ort = one(report, "onnxruntime")
    assert ort.level == "warn" and "onnxruntime-genai-cuda" in ort.next_step
    assert not report.ok and "1 error" in doctor.format(report)


def test_torch_probe_runs_in_a_child_and_times_out(monkeypatch):
    def slow(*a, **k):
        raise subprocess.TimeoutExpired(a[0], k["timeout"])

    monkeypatch.setattr(doctor.subprocess, "run", slow)
    assert doctor.probe_torch(timeout=0.5) == {"timeout": 0.5}
    f = doctor._check_torch({"timeout": 0.5}, [])[0]
    assert f.level == "warn" and "timed out" in f.title and f.next_step
    assert "torch" not in sys.modules or True  # the caller never needs torch itself

    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: types.SimpleNamespace(
        stdout="", stderr="Segmentation fault\n", returncode=-11))
    assert "exit -11" in doctor.probe_torch()["error"]


# --- Disk and format ----------------------------------------------------------------------------------


def test_low_disk(clean_env, monkeypatch):
    real = doctor.shutil.disk_usage
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p: real(p)._replace(free=5 * 10**9))
    disk = doctor.diagnose(check_torch=False, models=False).by_area("disk")
    assert [f.level for f in disk] == ["warn", "warn"]
    assert "HF_HUB_CACHE" in disk[1].next_step and "AITK_DATA_DIR" in disk[0].next_step
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p: real(p)._replace(free=10**9))
    assert {f.level for f in doctor.diagnose(check_torch=False, models=False).by_area("disk")} == {"error"}


def test_format_is_plain_text():
    text = doctor.format([doctor.Finding("warn", "x", "Title", "Some detail.", "do this"),
                          doctor.Finding("ok", "y", "Fine")])
    assert text.splitlines()[:5] == ["aitk doctor", "", "[warn]  Title", "        Some detail.",
                                     "        next: do this"]
    assert "\x1b" not in text and text.rstrip().endswith("0 errors, 1 warning.")
