"""`aitk model build-shape` and `aitk rehearse`: real model shapes on this machine, measured.

`register(subparsers)` adds `build-shape` into the `model` group (which must exist: it holds
`build-tiny`) and `rehearse` at the top level. Both run in the CLI process: build-shape is a
few seconds of tensor filling; rehearse's training runs in a child process it waits on.
"""

from __future__ import annotations

import argparse
import json
import time

from ..core.catalog import human_bytes


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.choices["model"]
    msub = next(a for a in model._actions if isinstance(a, argparse._SubParsersAction))
    p = msub.add_parser("build-shape", help="a random model with a catalog model's real shape and the tiny "
                        "tokenizer (offline, deterministic; for benchmarks and rehearsals)")
    p.add_argument("model", help="catalog id, e.g. qwen2.5-0.5b or phi-3-mini-4k")
    p.add_argument("--layers", type=int, help="keep only the first N layers (for tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dest", help="folder to build into (default: the data dir's models/shapes/)")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--json", action="store_true", help="print the model's facts as JSON")
    p.set_defaults(func=cmd_build_shape)

    p = subparsers.add_parser("rehearse", help="a few training steps of the project's settings on its model's "
                              "shape: measured memory and time next to the estimate")
    p.add_argument("--project", "-P", metavar="DIR", help="project folder (default: the one around the current dir)")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps to run (default 2)")
    p.add_argument("--layers", type=int, help="cut the shape model to N layers (quick; estimates follow)")
    p.add_argument("--seq-len", type=int, help="tokens per sample (default: the project's source_max_len)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="override the project's device")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(func=cmd_rehearse)


def cmd_build_shape(args) -> int:
    from pathlib import Path

    from ..core import catalog, shapes

    spec = shapes.spec_for(catalog.get(args.model), args.layers, args.seed)
    t0 = time.time()
    path = shapes.build_shape(spec, Path(args.dest).expanduser() if args.dest else None, rebuild=args.rebuild)
    facts = shapes.info(path)
    if args.json:
        print(json.dumps({"path": str(path), **facts}, indent=2))
        return 0
    f = facts["facts"]
    print(f"{spec.name}: {f['architecture']} {facts['params']:,} parameters, {f['num_layers']} layers, hidden "
          f"{f['hidden_size']}, heads {f['num_heads']}/{f['num_kv_heads']} kv, vocab {f['vocab_size']} "
          f"(tokenizer {facts['tokenizer_vocab']})")
    print(f"ready at {path} ({time.time() - t0:.1f} s)")
    return 0


def _hours(h: float | None) -> str:
    from ..core.catalog import human_hours

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
    if e["time_assumptions"]:
        a = e["time_assumptions"]
        same = report["ratios"]["step_measured_over_estimate"] is not None
        print(f"formula time is for the default run: {a['max_steps']} steps, batch {a['batch_size']} x "
              f"{a['gradient_accumulation_steps']}, seq {a['seq_len']}, {a['cpu_count']} cores"
              + ("" if same else " (not these settings: no ratio)"))
    print(f"every sample {s['seq_len']} tokens (worst case); report: {report['report_path']}")
    return 0
