"""`make bench`: every bench, one after another, then one table of their figures and goals.

    python bench/all.py [--quick] [--only NAME ...] [--json FILE]

Each bench runs as its own process (one at a time: the real-scale ones take the machine's cores)
and reports its figures through bench/results.py; each ratio is measured side by side within its
bench, so load from elsewhere falls on both sides alike. The table is printed; the rows go to
--json (default $OUT/bench-results.json when $OUT is set, else bench/results.json) with the
machine's cores and load, and every bench's output to the `.log` beside it. `--quick` is a smoke
run: the tiny shape only, a few tokens, steps and repeats each, so its figures are not the goals'.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results import ROWS_ENV, Row, read, table  # noqa: E402

SHAPE = "qwen2.5-0.5b"
SHAPE_LARGE = "qwen2.5-1.5b"  # the largest shape this machine trains (rehearsal only)


@dataclass
class Bench:
    name: str
    argv: list[str]  # the script (relative to bench/) and its arguments
    timeout: float = 3600
    shape: str = "tiny"
    quick: list[str] | None = field(default=None)  # arguments for --quick; None: left out of a quick run


PLAN = [
    # 200 steps x 2 interleaved rounds: the ratio of the default 600 x 3 within noise, a third of the time.
    Bench("finetune_overhead", ["finetune_overhead.py", "--steps", "200", "--rounds", "2"], quick=["--steps", "20"]),
    Bench("chat_decode", ["chat_decode.py"], quick=["--tokens", "32", "--repeats", "1"]),
    Bench("serve", ["serve.py"], quick=["--tokens", "16", "--repeats", "1"]),
    Bench("serve", ["serve.py", "--shape", SHAPE], shape=SHAPE),
    Bench("serve_faults", ["serve_faults.py"], quick=["--requests", "40"]),
    Bench("log_follow", ["log_follow.py"], quick=["--lines", "5000", "--skip-app"]),
    Bench("tui_startup", ["tui_startup.py"], quick=["--runs", "1"]),
    Bench("merged_decode", ["merged_decode.py"], shape=SHAPE,
          quick=["--hidden", "128", "--layers", "2", "--inter", "256", "--tokens", "16", "--rounds", "1"]),
    Bench("finetune_overhead", ["finetune_overhead.py", "--shape", SHAPE], shape=SHAPE),
    Bench("int4_choice", ["int4_choice.py"], shape=SHAPE,
          quick=["--layers", "2", "--tokens", "16", "--rounds", "1", "--skip-tiny"]),
    Bench("decode_bandwidth", ["decode_bandwidth.py", "--shape", SHAPE], shape=SHAPE,
          quick=["--shape", SHAPE, "--layers", "2", "--tokens", "16", "--repeats", "1"]),
    Bench("rehearse", ["rehearse.py", "--model", SHAPE, "--steps", "1", "--seq-len", "256"], shape=SHAPE),
    Bench("rehearse", ["rehearse.py", "--model", SHAPE_LARGE, "--steps", "1", "--seq-len", "256"], shape=SHAPE_LARGE),
]


def run(plan: list[Bench], out_json: Path, quick: bool = False) -> list[Row]:
    """Run `plan`, write the JSON (and the `.log` of every bench's output), return the rows.
    A bench that fails or runs out of time before reporting a figure gets a row saying so."""
    log_path = out_json.with_suffix(".log")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    ran = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(log_path, "w", encoding="utf-8") as log, tempfile.TemporaryDirectory(prefix="aitk-bench-rows-") as tmp:
        for i, bench in enumerate(plan):
            args = bench.argv if not quick else [bench.argv[0], *(bench.quick or [])]
            shape = bench.shape if not quick else "quick"
            rows_file = Path(tmp) / f"{i}.jsonl"
            rows_file.touch()
            cmd = [sys.executable, str(HERE / args[0]), *args[1:]]
            print(f"[bench] {bench.name} ({shape}): {' '.join(args)}", file=sys.stderr, flush=True)
            log.write(f"\n===== {bench.name} ({shape}): {' '.join(args)}\n")
            log.flush()
            t0 = time.perf_counter()
            try:
                code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=bench.timeout,
                                      env={**os.environ, ROWS_ENV: str(rows_file)}).returncode
                why = f"exit {code}" if code else ""
            except subprocess.TimeoutExpired:
                code, why = None, f"ran past {bench.timeout:.0f} s"
            seconds = time.perf_counter() - t0
            got = read(rows_file)
            if not got:
                got = [Row(bench.name, "(no figure)", None, shape=shape,
                           note=f"{why or 'reported nothing'}; see {log_path.name}")]
            rows += got
            ran.append({"bench": bench.name, "shape": shape, "args": args, "seconds": round(seconds, 1),
                        "exit": code, "rows": len(got)})
            print(f"[bench] {bench.name}: {len(got)} figures in {seconds:.0f} s{f' ({why})' if why else ''}",
                  file=sys.stderr, flush=True)
            # Written after every bench: a long run stopped part way keeps what it measured.
            out_json.write_text(json.dumps({
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "quick": quick, "started": started,
                "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]},
                "benches": ran, "rows": [r.as_dict() for r in rows]}, indent=2) + "\n")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny shape, a few tokens/steps each")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these benches (names as in the table)")
    ap.add_argument("--json", help="where the rows go (default $OUT/bench-results.json or bench/results.json)")
    args = ap.parse_args()
    plan = [b for b in PLAN if (not args.quick or b.quick is not None) and (not args.only or b.name in args.only)]
    if not plan:
        print(f"no bench named {', '.join(args.only)}; known: {', '.join(dict.fromkeys(b.name for b in PLAN))}",
              file=sys.stderr)
        return 2
    out = Path(args.json) if args.json else (Path(os.environ["OUT"]) / "bench-results.json" if os.environ.get("OUT")
                                             else HERE / "results.json")
    rows = run(plan, out, quick=args.quick)
    print(table(rows))
    print(f"rows: {out}; outputs: {out.with_suffix('.log')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
