"""`aitk`: the engine from a shell, for scripts and CI.

Every failure a user can fix is one `error: ...` line (plus a `hint:` line) and exit code 2;
a job that ran and failed is exit code 1. Never a traceback, unless AITK_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..core.errors import AitkError
from . import (adapters_cmds, azure_cmds, catalog_cmds, chat_cmds, dataset_cmds, demo, doctor_cmds, jobs_cmds,
               model_cmds, project_cmds, push_cmds, rehearse_cmds, serve_cmds)


# One module per command group, each with `register(subparsers)`, in `aitk --help`'s order.
GROUPS = (demo, model_cmds, project_cmds, dataset_cmds, jobs_cmds, rehearse_cmds, adapters_cmds, chat_cmds, serve_cmds,
          push_cmds, catalog_cmds, doctor_cmds, azure_cmds)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aitk", description="Fine-tune, export and chat with small language models.")
    ap.add_argument("--version", action="version", version="aitk 0.1.0")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return ap


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("CI", "1")  # Olive telemetry hangs at exit offline; see shared notes
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except AitkError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `aitk ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except Exception as e:  # noqa: BLE001
        if os.environ.get("AITK_DEBUG"):
            raise
        print(f"error: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        print("hint: this is a bug in aitk; rerun with AITK_DEBUG=1 for the traceback and report it",
              file=sys.stderr)
        code = 3
    sys.exit(code)


if __name__ == "__main__":
    main()
