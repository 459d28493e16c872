"""Quick stand-ins for the training image's entry script (the "script" runner of FakeAzure).

FAST_TRAIN behaves like the job's entry script (providers/azure/container_entry.py) seen from
outside, in a second: it finds its run as the entry script does (with that script's own code, from
the copy on the mounted share, so a missing mount or a missing run assignment fails as it would),
reads the run's manifest, prints `[aitk-metric]` lines as the trainer does, and writes
log.txt, metrics.jsonl, output/adapter/ and status.json into the run folder. Env knobs:
FAKE_STEPS (lines of progress), FAKE_SLEEP (seconds between them), FAKE_FAIL=1 (exit 1 midway).
"""

FAST_TRAIN = r'''
import importlib.util, json, os, sys, time
from pathlib import Path
mount = Path(os.environ["AITK_MOUNT"])
if not (mount / "aitk" / "entry.py").is_file():
    print("[aitk-job] failed: the file share is not mounted at /mount", flush=True); sys.exit(3)
spec = importlib.util.spec_from_file_location("aitk_entry", mount / "aitk" / "entry.py")
entry = importlib.util.module_from_spec(spec); spec.loader.exec_module(entry)
try:
    run_rel = entry.resolve_run(mount)
except entry.RunError as e:
    print(f"[aitk-job] failed: {e}", flush=True); sys.exit(2)
run = mount / run_rel
steps = int(os.environ.get("FAKE_STEPS", "10")); pause = float(os.environ.get("FAKE_SLEEP", "0.05"))
fail = os.environ.get("FAKE_FAIL") == "1"
manifest = json.loads((run / "manifest.json").read_text())
log = open(run / "log.txt", "a")
def out(line):
    print(line, flush=True); log.write(line + "\n"); log.flush()
out(f"[aitk-job] run folder {run_rel}")
out(f"[aitk-job] project laid out: {len(manifest['files'])} files")
out("[aitk-job] hf token present: " + ("yes" if os.environ.get("HF_TOKEN") else "no"))
metrics = []
for i in range(1, steps + 1):
    rec = {"step": i * 10, "max_steps": steps * 10, "epoch": round(i / steps, 4), "loss": round(3.0 / i, 4), "t": time.time()}
    metrics.append(rec)
    out("[aitk-metric] " + json.dumps(rec, separators=(",", ":")))
    out(f"training line {i}")
    if fail and i == steps // 2:
        out("[aitk] error: CUDA out of memory (simulated)")
        (run / "status.json").write_text(json.dumps({"status": "failed", "exit_code": 1, "error": "CUDA out of memory (simulated)"}))
        sys.exit(1)
    time.sleep(pause)
(run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
adapter = run / "output" / "adapter"; adapter.mkdir(parents=True, exist_ok=True)
(adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
(adapter / "adapter_model.safetensors").write_bytes(b"\0" * 1024)
(run / "status.json").write_text(json.dumps({"status": "succeeded", "exit_code": 0}))
out("[aitk-job] adapter written")
'''
