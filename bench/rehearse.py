"""Rehearsal at real scale: measured training memory and step time vs the app's formulas.

    python bench/rehearse.py [--model qwen2.5-0.5b] [--steps 1] [--layers N] [--seq-len N]
                             [--set KEY=VALUE ...] [--device cpu|cuda] [--json FILE]

Makes a throwaway project on the catalog model with the device's default settings (plus LoRA r 16
and any --set), runs `aitk rehearse` on its shape model, and prints measured / formula for peak
memory, seconds per step and the whole run. Writes the report as JSON to --json, or to
$OUT/rehearse-<model>.json when $OUT is set. One real-scale run at a time: at the 0.5B shape a
default step (batch 1 x 4 accumulation x 1024 tokens, checkpointing) takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from results import Row, emit


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--device", choices=["cpu", "cuda"])
    ap.add_argument("--set", action="append", default=["finetune.lora_r=16"], metavar="KEY=VALUE")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args()

    aitk = [sys.executable, "-m", "aitk.cli.main"]
    with tempfile.TemporaryDirectory(prefix="aitk-bench-rehearse-") as tmp:
        project = Path(tmp) / "rehearse"
        new = [*aitk, "project", "new", str(project), "--model", args.model]
        for assignment in args.set:
            new += ["--set", assignment]
        subprocess.run(new, check=True, stdout=subprocess.DEVNULL)
        run = [*aitk, "rehearse", "-P", str(project), "--steps", str(args.steps)]
        for flag, value in (("--layers", args.layers), ("--seq-len", args.seq_len), ("--device", args.device)):
            if value is not None:
                run += [flag, str(value)]
        subprocess.run(run, check=True)
        report = json.loads((project / "models" / "rehearsal.json").read_text())
    out = args.json or (os.path.join(os.environ["OUT"], f"rehearse-{args.model}.json")
                        if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {out}")
    ratios, settings = report["ratios"], report["settings"]
    at = f"seq {settings['seq_len']}, {report['shape']['layers']} layers"
    emit(Row("rehearse", "peak memory, measured / formula", ratios["memory_measured_over_estimate"], "0.75..1.25",
             args.model, "x", at),
         Row("rehearse", "s/step, measured / formula", ratios["step_measured_over_estimate"], "0.75..1.25",
             args.model, "x", at if ratios["step_measured_over_estimate"] is not None
             else f"{at}: the formula knows only the default run's settings"),
         Row("rehearse", "s/step measured", report["measured"]["seconds_per_step"], "", args.model, "s", at))
    return 0


if __name__ == "__main__":
    sys.exit(main())
