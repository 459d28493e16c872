"""Measure training memory and step time at real shapes, for core/estimates.py's calibration table.

    python bench/calibrate_estimates.py [--model qwen2.5-0.5b] [--layers 24,2] [--points 1x256,1x1024,2x512]
                                        [--method lora] [--steps 2] [--out core/data/estimates_calibration.json]

Runs `aitk rehearse` (the project's LoRA defaults for the device, gradient accumulation 1) once per
(depth, batch x sequence) point, one run at a time, and appends one row per run to the table:
peak RSS, RSS after load, seconds per step (wall, and process CPU seconds, which a shared machine
inflates far less) with the settings and the machine. Rows of the same model, depth, method, batch,
seq and device replace the older one. Cut depths (`--layers 2`) separate the per-layer activation
term from the vocabulary-sized logits term, which a single depth cannot (both grow with b x s).

On a GPU: the same command with `--device cuda` records torch.cuda.max_memory_allocated as the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = ("model", "layers", "method", "batch", "seq", "device", "gradient_checkpointing")


def rehearse_row(model: str, layers: int, method: str, batch: int, seq: int, steps: int, device: str,
                 tmp: Path) -> dict:
    aitk = [sys.executable, "-m", "aitk.cli.main"]
    project = tmp / f"cal-{method}-{layers}-{batch}x{seq}"
    subprocess.run([*aitk, "project", "new", str(project), "--model", model, "--set", f"finetune.method={method}",
                    "--set", f"finetune.per_device_train_batch_size={batch}",
                    "--set", "finetune.gradient_accumulation_steps=1", "--set", f"target.device={device}"],
                   check=True, stdout=subprocess.DEVNULL)
    load = os.getloadavg()[0]
    out = subprocess.run([*aitk, "rehearse", "-P", str(project), "--steps", str(steps), "--layers", str(layers),
                          "--seq-len", str(seq), "--device", device, "--json"],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    m, s = r["measured"], r["settings"]
    cpu_steps = m["step_cpu_seconds"][1:] or m["step_cpu_seconds"]
    return {
        "model": model, "layers": layers, "params": r["shape"]["params"], "method": method, "batch": batch, "seq": seq, "device": device,
        "gradient_checkpointing": s["gradient_checkpointing"], "lora_r": s["lora_r"],
        "target_modules": s["target_modules"], "dtype": s["model_dtype"],
        "peak_bytes": m["cuda_max_allocated_bytes"] if device == "cuda" else m["peak_rss_bytes"],
        "after_load_bytes": m["rss_after_load_bytes"],
        "seconds_per_step": round(m["seconds_per_step"], 3),
        "cpu_seconds_per_step": round(statistics.median(cpu_steps), 3),
        "threads": m["threads"], "cpu_count": m["cpu_count"], "load_average": round(load, 1),
        "machine": m["cuda_device"] or platform.processor() or platform.machine(),
        "torch": m["torch"], "measured": time.strftime("%Y-%m-%d"),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--layers", default="24,2", help="comma-separated depths of the shape model")
    ap.add_argument("--points", default="1x256,1x1024,2x512", help="comma-separated BATCHxSEQ")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "core/data/estimates_calibration.json"))
    args = ap.parse_args()
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    with tempfile.TemporaryDirectory(prefix="aitk-calibrate-") as tmp:
        for layers in (int(x) for x in args.layers.split(",")):
            for point in args.points.split(","):
                batch, seq = (int(x) for x in point.split("x"))
                row = rehearse_row(args.model, layers, args.method, batch, seq, args.steps, args.device, Path(tmp))
                print(json.dumps({k: row[k] for k in (*KEY, "peak_bytes", "seconds_per_step",
                                                      "cpu_seconds_per_step", "load_average")}), flush=True)
                table["rows"] = [r for r in table["rows"] if tuple(r[k] for k in KEY) != tuple(row[k] for k in KEY)]
                table["rows"].append(row)
                out.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
