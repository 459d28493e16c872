"""`aitk doctor`: what this machine can do (GPU, memory, disk, runtimes, tokens, sign-ins), what fits."""

from __future__ import annotations

import json
import sys


def cmd_doctor(args) -> int:
    from ..core import doctor

    out = sys.stdout
    report = doctor.diagnose(check_torch=not args.quick)
    if args.json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(doctor.format(report))
    return 0 if report.ok else 1


def register(sub) -> None:
    d = sub.add_parser("doctor", help="check this machine: GPU, memory, disk, tokens, sign-ins; what fits")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--quick", action="store_true", help="skip the PyTorch/CUDA check (it imports torch)")
    d.set_defaults(func=cmd_doctor)
