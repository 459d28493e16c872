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

    python bench/calibrate_estimates.py --fit [--out TABLE]

fits core/estimates.py's three step-time constants (FLOP rate per core, core-seconds per layer
parameter and per embedding parameter) to the table's rows taken on a quiet machine (load average
below the core count), least squares on the relative error, and prints them with each row's
measured / formula for step time and peak memory under the constants in the code now.
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

KEY = ("model", "layers", "method", "batch", "seq", "device", "gradient_checkpointing", "lora_r")


def rehearse_row(model: str, layers: int, method: str, batch: int, seq: int, steps: int, device: str,
                 tmp: Path, lora_r: int | None = None, extra: list[str] | None = None) -> dict:
    aitk = [sys.executable, "-m", "aitk.cli.main"]
    project = tmp / f"cal-{method}-{layers}-{batch}x{seq}-r{lora_r}-{len(extra or [])}"
    rank = ["--set", f"finetune.lora_r={lora_r}"] if lora_r else []
    rank += [a for kv in extra or [] for a in ("--set", kv)]
    subprocess.run([*aitk, "project", "new", str(project), "--model", model, "--set", f"finetune.method={method}", *rank,
                    "--set", f"finetune.per_device_train_batch_size={batch}",
                    "--set", "finetune.gradient_accumulation_steps=1", "--set", f"target.device={device}"],
                   check=True, stdout=subprocess.DEVNULL)
    load = os.getloadavg()[0]
    depth = [] if model == "tiny" else ["--layers", str(layers)]  # the tiny model is its own shape
    out = subprocess.run([*aitk, "rehearse", "-P", str(project), "--steps", str(steps), *depth,
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


def row_entry(row: dict):
    """The catalog entry cut to the row's depth (the shape the rehearsal ran)."""
    from aitk.core import catalog

    return catalog.load().get(row["model"]).model_copy(update={"num_layers": row["layers"], "params": row["params"]})


def step_terms(row: dict) -> dict[str, float]:
    from aitk.core import estimates

    return estimates.cpu_step_terms(row_entry(row), batch_size=row["batch"], seq_len=row["seq"],
                                    gradient_checkpointing=row["gradient_checkpointing"], lora_r=row["lora_r"],
                                    target_modules=row["target_modules"])


def quiet(row: dict) -> bool:
    return row["load_average"] < row["cpu_count"]


def fit(table: dict, device: str = "cpu") -> int:
    """Least squares on the relative error: measured core-seconds (wall x threads) = sum of
    constant x term (estimates.cpu_step_terms), each row divided through by its measurement."""
    import numpy as np

    from aitk.core import estimates

    # The real shapes only: the embedded tiny model (hidden 128) is another regime, where fixed
    # per-step costs dominate; its rows are shown against the fit, not fitted.
    shown = [r for r in table["rows"] if quiet(r) and r["device"] == device and r["method"] == "lora"]
    rows = [r for r in shown if r["model"] != "tiny"]
    names = list(estimates.CPU_STEP_CONSTANTS)
    if len(rows) < len(names):
        print(f"{len(rows)} quiet {device} LoRA rows: at least {len(names)} are needed", file=sys.stderr)
        return 1
    core_s = np.array([r["seconds_per_step"] * r["threads"] for r in rows])
    terms = np.array([[step_terms(r)[k] for k in names] for r in rows])
    fitted, *_ = np.linalg.lstsq(terms / core_s[:, None], np.ones(len(rows)), rcond=None)
    print(f"CPU_GFLOPS_PER_CORE = {1 / fitted[0] / 1e9:.1f}")
    for name, value in zip(names[1:], fitted[1:]):
        print(f"{name}: {value:.3g} core-seconds per unit")
    print(f"{'row':<34} {'fitted step':>11}  {'code step':>9}  {'code memory':>11}   (measured / formula)")
    for r in shown:
        t = np.array([step_terms(r)[k] for k in names])
        e = row_entry(r)
        code = estimates.cpu_step_seconds(e, r["method"], r["threads"], batch_size=r["batch"], seq_len=r["seq"],
                                          gradient_accumulation_steps=1,
                                          gradient_checkpointing=r["gradient_checkpointing"], lora_r=r["lora_r"],
                                          target_modules=r["target_modules"])
        mem = estimates.memory_estimate(e, r["method"], r["device"], batch_size=r["batch"], seq_len=r["seq"],
                                        lora_r=r["lora_r"], target_modules=r["target_modules"],
                                        compute_dtype=r["dtype"],
                                        gradient_checkpointing=r["gradient_checkpointing"]).total
        name = (f"{r['model']} {r['layers']}L {r['batch']}x{r['seq']} r{r['lora_r']}"
                f"{'' if r['gradient_checkpointing'] else ' no-ckpt'}{'' if r in rows else ' (not fitted)'}")
        print(f"{name:<34} {r['seconds_per_step'] * r['threads'] / (t @ fitted):11.2f}  "
              f"{r['seconds_per_step'] / code:9.2f}  {r['peak_bytes'] / mem:11.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--layers", default="24,2", help="comma-separated depths of the shape model")
    ap.add_argument("--points", default="1x256,1x1024,2x512", help="comma-separated BATCHxSEQ")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lora-r", type=int, help="LoRA rank (default: the project default for the model and device)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another project setting (e.g. finetune.gradient_checkpointing=false)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--fit", action="store_true", help="fit the step-time constants to the table; run nothing")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "core/data/estimates_calibration.json"))
    args = ap.parse_args()
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    if args.fit:  # a GPU's rows (--device cuda) fit the same terms: constants for that GPU
        return fit(table, args.device)
    with tempfile.TemporaryDirectory(prefix="aitk-calibrate-") as tmp:
        for layers in (int(x) for x in args.layers.split(",")):
            for point in args.points.split(","):
                batch, seq = (int(x) for x in point.split("x"))
                row = rehearse_row(args.model, layers, args.method, batch, seq, args.steps, args.device, Path(tmp),
                                   args.lora_r, args.set)
                print(json.dumps({k: row[k] for k in (*KEY, "peak_bytes", "seconds_per_step",
                                                      "cpu_seconds_per_step", "load_average")}), flush=True)
                table["rows"] = [r for r in table["rows"] if tuple(r[k] for k in KEY) != tuple(row[k] for k in KEY)]
                table["rows"].append(row)
                out.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
