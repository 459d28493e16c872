"""`aitk model build-tiny|pull|ls|rm|add`: models on this machine (the embedded tiny model, the
Hugging Face cache, your own folders)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO

from ..core import hub
from ..core.catalog import human_bytes
from .common import confirm, table

VARIANT_CHOICES = ("finetune", "cpu", "cuda", "directml")


def _out() -> TextIO:
    return sys.stdout


def cmd_build_tiny(args) -> int:
    from ..core import tiny

    t0 = time.time()
    spec = tiny.TEST if args.small else tiny.DEMO
    path = tiny.ensure_tiny(spec, Path(args.dest) if args.dest else None, rebuild=args.rebuild)
    print(f"tiny model ready at {path} ({time.time() - t0:.1f} s)")
    return 0


class ProgressPrinter:
    """One updating line on a terminal; on anything else a line per 10%."""

    def __init__(self, out: TextIO, tty: bool | None = None):
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.last_decile = -1
        self.width = 0

    @staticmethod
    def line(p: hub.Progress) -> str:
        pct = 100 * p.fraction
        speed = f"{human_bytes(p.speed)}/s" if p.speed else "-/s"
        eta = "-" if p.eta is None else _duration(p.eta)
        files = f"{p.files_done}/{p.files_total} files"
        name = f"  {p.file}" if p.file and not p.finished else ""
        return (f"{p.label}: {pct:5.1f}%  {human_bytes(p.bytes_done)} / {human_bytes(p.bytes_total)}  "
                f"{speed}  ETA {eta}  {files}{name}")

    def __call__(self, p: hub.Progress) -> None:
        text = self.line(p)
        if self.tty:
            pad = max(self.width - len(text), 0)
            self.out.write("\r" + text + " " * pad)
            self.width = len(text)
            if p.finished:
                self.out.write("\n")
            self.out.flush()
            return
        decile = min(int(p.fraction * 10), 10)
        if decile > self.last_decile or (p.finished and self.last_decile < 10):
            self.last_decile = 10 if p.finished else decile
            self.out.write(text + "\n")
            self.out.flush()

    def close(self) -> None:
        if self.tty and self.width:
            self.out.write("\n")
            self.out.flush()
            self.width = 0


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def cmd_model_pull(args) -> int:
    out = _out()
    p = hub.plan(args.model, args.variant, include=args.include)
    if p.note and not args.json:
        out.write(f"note: {p.note}\n")
    printer = None if args.json else ProgressPrinter(out)
    task = hub.start_pull(args.model, args.variant, revision=args.revision, include=args.include,
                          on_progress=printer)
    try:
        while not task.done:
            time.sleep(0.1)
    except KeyboardInterrupt:
        task.cancel()
    try:
        result = task.wait()
    finally:
        if printer is not None and printer.tty and not task.result:
            printer.close()
    if args.json:
        json.dump(result.to_dict(), out, indent=2)
        out.write("\n")
        return 0
    out.write(result.message + "\n")
    if result.offline:
        out.write("note: nothing was checked online; pull again when connected to get updates\n")
    return 0


def cmd_model_ls(args) -> int:
    out = _out()
    scan = hub.scan_local()
    if args.json:
        json.dump({"cache_dir": str(scan.cache_dir), "models": [m.to_dict() for m in scan.models],
                   "warnings": scan.warnings}, out, indent=2)
        out.write("\n")
        return 0
    if not scan.models:
        out.write(f"no models on disk yet (Hugging Face cache: {scan.cache_dir}). "
                  "Get one: `aitk model pull ID` (see `aitk catalog list`).\n")
    else:
        rows = [("NAME", "KIND", "SIZE", "FILES", "USED AS", "PATH")]
        for m in scan.models:
            size = human_bytes(m.size_bytes) + (f" (+{human_bytes(m.incomplete_bytes)} partial)"
                                                if m.incomplete_bytes else "")
            uses = ",".join(u.split(":", 1)[1] if u.startswith(m.name + ":") else u for u in m.uses) or "-"
            rows.append((m.name, m.kind, size, str(m.files), uses, str(m.path) + ("" if m.exists else " (missing)")))
        table(rows, out)
        total = sum(m.size_bytes + m.incomplete_bytes for m in scan.models if m.kind == "hf-cache")
        out.write(f"\nHugging Face cache {scan.cache_dir}: {human_bytes(total)}\n")
    for w in scan.warnings:
        out.write(f"warning: {w}\n")
    return 0


def cmd_model_rm(args) -> int:
    from ..core.errors import AitkError

    out = _out()
    try:
        preview = hub.remove(args.model, args.variant, dry_run=True)
    except AitkError as e:
        if "aitk catalog list" in (e.hint or ""):
            # Removing is about what is on disk, not what could be downloaded.
            raise AitkError(e.message, "`aitk model ls` lists the models on disk") from None
        raise
    if args.dry_run:
        out.write(preview.message + "\n")
        return 0
    if not confirm(f"{preview.message}. Remove?", assume_yes=args.yes,
                   refused=f"not removing {args.model} without confirmation ({preview.message})",
                   hint="pass --yes to confirm, or --dry-run to only look"):
        out.write("nothing removed\n")
        return 1
    done = hub.remove(args.model, args.variant)
    out.write(done.message + "\n")
    return 0


def cmd_model_add(args) -> int:
    folder = hub.add_folder(args.path, args.name)
    _out().write(f"registered {folder.name!r}: {folder.path}\n")
    return 0


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


def register(sub) -> None:
    model = sub.add_parser("model", help="models on this machine: build, download, list, remove").add_subparsers(
        dest="sub", required=True)
    p = model.add_parser("build-tiny", help="build the embedded tiny Phi-3 model (offline, deterministic)")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--small", action="store_true", help="the smaller variant the test suite uses")
    p.add_argument("--dest", help="folder to build into (default: the user data dir)")
    p.set_defaults(func=cmd_build_tiny)

    pull = model.add_parser("pull", help="download a model (only the files a variant needs); resumable")
    pull.add_argument("model", help="catalog id or Hugging Face repo (owner/name)")
    pull.add_argument("--variant", default=None, metavar="|".join(VARIANT_CHOICES),
                      help="what to fetch: `finetune` weights (default), or the ONNX build for a runtime "
                           "(cpu, cuda, directml; or runtime-precision like cuda-fp16)")
    pull.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    pull.add_argument("--include", action="append", metavar="PATTERN",
                      help="only files matching PATTERN (repeatable; for repos outside the catalog)")
    pull.add_argument("--json", action="store_true", help="print the result as JSON")
    pull.set_defaults(func=cmd_model_pull)
    ls = model.add_parser("ls", help="what is on disk, and its size")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_model_ls)
    rm = model.add_parser("rm", help="remove a model from the cache (or unregister a folder)")
    rm.add_argument("model", help="catalog id, Hugging Face repo, or a registered folder's name")
    rm.add_argument("--variant", default=None, help="only this variant (finetune, cpu, cuda, directml)")
    rm.add_argument("--dry-run", action="store_true", help="say what would be freed, delete nothing")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(func=cmd_model_rm)
    add = model.add_parser("add", help="register a model folder of your own")
    add.add_argument("path", help="folder with config.json / genai_config.json / *.safetensors / *.onnx")
    add.add_argument("--name", default=None, help="name to refer to it by (default: the folder name)")
    add.set_defaults(func=cmd_model_add)

    p = model.add_parser("build-shape", help="a random model with a catalog model's real shape and the tiny "
                        "tokenizer (offline, deterministic; for benchmarks and rehearsals)")
    p.add_argument("model", help="catalog id, e.g. qwen2.5-0.5b or phi-3-mini-4k")
    p.add_argument("--layers", type=int, help="keep only the first N layers (for tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dest", help="folder to build into (default: the data dir's models/shapes/)")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--json", action="store_true", help="print the model's facts as JSON")
    p.set_defaults(func=cmd_build_shape)
