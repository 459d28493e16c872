"""What every command group shares: the project argument, the confirmation prompt, and the
stale-export warning. Job helpers (the facade, following a job, a job's row) live in jobs_cmds."""

from __future__ import annotations

import argparse
import sys

from ..core.errors import AitkError


def project_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", "-P", metavar="DIR", help="project folder (default: the one around the current dir)")


def confirm(question: str, *, assume_yes: bool, refused: str, hint: str = "pass --yes to confirm") -> bool:
    """True to go ahead: `--yes`, or "y" typed at a terminal. Without a terminal (a script, CI) it
    refuses with `refused` rather than wait for an answer nobody will type."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise AitkError(refused, hint)
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def warn_if_stale(project, precision: str) -> None:
    from ..core.project_index import stale_warning

    warning = stale_warning(project.root, precision)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def table(rows: list[tuple[str, ...]], out) -> None:
    """Columns padded to their widest cell; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
