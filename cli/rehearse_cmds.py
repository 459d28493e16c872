"""`aitk rehearse`: a few training steps of the project's settings on its base model's real shape
(core/shapes.py), measured memory and time next to the estimate. The training runs in a child
process this one waits on, so torch never loads in the CLI."""

from __future__ import annotations

import json

from ..core.catalog import human_bytes
from .common import project_arg


def _hours(h: float | None) -> str:
    from ..core.estimates import human_hours

    return human_hours(h) if h is not None else "-"


def _ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def cmd_rehearse(args) -> int:
    from ..core.project import find_project
    from ..core.rehearse import rehearse

    project = find_project(args.project)
    report = rehearse(project, steps=args.steps, layers=args.layers, seq_len=args.seq_len, device=args.device,
                      on_line=(lambda line: None) if args.json else (lambda line: print(f"  {line}", flush=True)))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    s, m, e, run = report["settings"], report["measured"], report["estimated"], report["run"]
    shape = report["shape"]
    print(f"{report['model']} shape ({shape['layers']}/{shape['catalog_layers']} layers, "
          f"{shape['params'] / 1e6:.0f}M parameters), {s['method']} r={s['lora_r']} {s['model_dtype']} on "
          f"{s['device']}, batch {s['batch_size']} x {s['gradient_accumulation_steps']}, seq {s['seq_len']}, "
          f"checkpointing {'on' if s['gradient_checkpointing'] else 'off'}")
    peak = m["cuda_max_allocated_bytes"] if s["device"] == "cuda" else m["peak_rss_bytes"]
    label = "peak GPU memory" if s["device"] == "cuda" else "peak memory (RSS)"
    rows = [
        ("", "measured", "formula", "measured/formula"),
        (label, human_bytes(peak), human_bytes(e["memory_bytes"]),
         _ratio(report["ratios"]["memory_measured_over_estimate"])),
        ("seconds per step", f"{m['seconds_per_step']:.2f}",
         f"{e['seconds_per_step']:.2f}" if e["seconds_per_step"] else "-",
         _ratio(report["ratios"]["step_measured_over_estimate"])),
        (f"whole run ({run['steps'] or '?'} steps)", _hours(run["measured_hours"]),
         _hours(e["run_hours"]) if e["run_hours"] is not None else "-", ""),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(width[i]) if i == 0 else c.rjust(width[i]) for i, c in enumerate(r)))
    if report["ratios"].get("step_cpu_over_estimate") is not None:
        print(f"formula time is for an idle machine with {e['cpu_count']} cores; measured process CPU time / "
              f"formula: {_ratio(report['ratios']['step_cpu_over_estimate'])} (other programs' load moves only "
              "the wall-time ratio)")
    print(f"every sample {s['seq_len']} tokens (worst case); report: {report['report_path']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("rehearse", help="a few training steps of the project's settings on its model's "
                              "shape: measured memory and time next to the estimate")
    project_arg(p)
    p.add_argument("--steps", type=int, default=2, help="optimizer steps to run (default 2)")
    p.add_argument("--layers", type=int, help="cut the shape model to N layers (quick; estimates follow)")
    p.add_argument("--seq-len", type=int, help="tokens per sample (default: the project's source_max_len)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="override the project's device")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(func=cmd_rehearse)
