"""`aitk catalog ...`, `aitk model ...` and `aitk doctor`.

`register(subparsers)` adds the three commands to the main parser; every handler takes the parsed
args and returns an exit code. Problems a user can fix are raised as `AitkError` (the main CLI
prints them with their hint).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from aitk.core import catalog as cat
from aitk.core import devices, doctor, estimates, hub
from aitk.core.catalog import human_bytes
from aitk.core.errors import AitkError

VARIANT_CHOICES = ("finetune", "cpu", "cuda", "directml")


def register(subparsers: argparse._SubParsersAction) -> None:
    # catalog
    p = subparsers.add_parser("catalog", help="browse the model catalog",
                              description="Models aitk knows (bundled catalog plus your own catalog.toml).")
    _filters(p)
    p.set_defaults(func=cmd_catalog_list, json=False)
    sub = p.add_subparsers(dest="catalog_command", metavar="COMMAND")
    lst = sub.add_parser("list", help="list the catalog")
    _filters(lst)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_catalog_list)
    show = sub.add_parser("show", help="everything about one model, and whether it fits here")
    show.add_argument("model", help="catalog id or Hugging Face repo")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_catalog_show)
    search = sub.add_parser("search", help="find models by words (id, name, repo, publisher, licence, task)")
    search.add_argument("query", nargs="+", help="words that must all match")
    _filters(search)
    search.add_argument("--json", action="store_true", help="machine-readable output")
    search.set_defaults(func=cmd_catalog_search)

    # model: into the main CLI's `model` group when it has one (it holds `build-tiny`)
    existing = subparsers.choices.get("model")
    if existing is not None:
        groups = [a for a in existing._actions if isinstance(a, argparse._SubParsersAction)]
        msub = groups[0] if groups else existing.add_subparsers(dest="model_command", metavar="COMMAND")
    else:
        m = subparsers.add_parser("model", help="download, list and remove models",
                                  description="Models on this machine: the Hugging Face cache and your folders.")
        m.set_defaults(func=cmd_model_ls, json=False)
        msub = m.add_subparsers(dest="model_command", metavar="COMMAND")
    register_model_commands(msub)

    # doctor
    d = subparsers.add_parser("doctor", help="check this machine: GPU, memory, disk, tokens, sign-ins; "
                              "what fits")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--quick", action="store_true", help="skip the PyTorch/CUDA check (it imports torch)")
    d.set_defaults(func=cmd_doctor)


def register_model_commands(msub: argparse._SubParsersAction) -> None:
    """`pull`, `ls`, `rm`, `add` under an existing `model` command group."""
    pull = msub.add_parser("pull", help="download a model (only the files a variant needs); resumable")
    pull.add_argument("model", help="catalog id or Hugging Face repo (owner/name)")
    pull.add_argument("--variant", default=None, metavar="|".join(VARIANT_CHOICES),
                      help="what to fetch: `finetune` weights (default), or the ONNX build for a runtime "
                           "(cpu, cuda, directml; or runtime-precision like cuda-fp16)")
    pull.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    pull.add_argument("--include", action="append", metavar="PATTERN",
                      help="only files matching PATTERN (repeatable; for repos outside the catalog)")
    pull.add_argument("--json", action="store_true", help="print the result as JSON")
    pull.set_defaults(func=cmd_model_pull)
    ls = msub.add_parser("ls", help="what is on disk, and its size")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_model_ls)
    rm = msub.add_parser("rm", help="remove a model from the cache (or unregister a folder)")
    rm.add_argument("model", help="catalog id, Hugging Face repo, or a registered folder's name")
    rm.add_argument("--variant", default=None, help="only this variant (finetune, cpu, cuda, directml)")
    rm.add_argument("--dry-run", action="store_true", help="say what would be freed, delete nothing")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(func=cmd_model_rm)
    add = msub.add_parser("add", help="register a model folder of your own")
    add.add_argument("path", help="folder with config.json / genai_config.json / *.safetensors / *.onnx")
    add.add_argument("--name", default=None, help="name to refer to it by (default: the folder name)")
    add.set_defaults(func=cmd_model_add)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default=None, help="only models tagged with this task (chat, code, multilingual...)")
    p.add_argument("--runtime", default=None, help="only models with a variant for cpu, cuda or directml")
    p.add_argument("--fits", action="store_true", help="only models whose inference fits this machine")


def _out() -> TextIO:
    return sys.stdout


def _table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _runtimes(e: cat.CatalogEntry) -> str:
    out = []
    for rt in cat.RUNTIMES:
        vs = e.variants_for(rt)
        if vs:
            out.append(rt + ("" if any(v.published for v in vs) else "*"))
    return ",".join(out) or "-"


def _entries(args, query: str = "") -> list[cat.CatalogEntry]:
    info = devices.detect() if getattr(args, "fits", False) else None
    fit = (lambda e: estimates.fits(e, info).ok is not False) if info is not None else None
    return cat.search(query, task=getattr(args, "task", None), runtime=getattr(args, "runtime", None), where=fit)


def _print_entries(entries: list[cat.CatalogEntry], args) -> int:
    out = _out()
    if args.json:
        json.dump([e.model_dump(mode="json") for e in entries], out, indent=2)
        out.write("\n")
        return 0
    if not entries:
        out.write("no model matches\n")
        return 1
    rows = [("ID", "PARAMS", "CONTEXT", "LICENSE", "GATED", "RUNTIMES", "NAME")]
    for e in entries:
        rows.append((e.id, e.params_label, f"{e.context_length // 1024}k" if e.context_length >= 1024
                     else str(e.context_length), e.license, "yes" if e.gated else "no", _runtimes(e),
                     e.name + (" [yours]" if e.origin != "bundled" else "")))
    _table(rows, out)
    out.write("\n* built locally from the fine-tuning weights (no published ONNX build). "
              "Details: `aitk catalog show ID`.\n")
    return 0


def cmd_catalog_list(args) -> int:
    return _print_entries(_entries(args), args)


def cmd_catalog_search(args) -> int:
    return _print_entries(_entries(args, " ".join(args.query)), args)


def cmd_catalog_show(args) -> int:
    out = _out()
    e = cat.load().get(args.model)
    info = devices.detect()
    fits = {m: estimates.fits(e, info, m, "cuda" if (m != "inference" and info.gpus) else None) for m in cat.METHODS}
    rec = estimates.recommend_variant(e, info)
    if args.json:
        data = e.model_dump(mode="json")
        data["fits"] = {m: {"ok": f.ok, "need_bytes": f.need_bytes, "have_bytes": f.have_bytes, "device": f.device,
                            "hours": f.hours, "speed": f.speed, "parts": f.estimate.parts if f.estimate else None}
                        for m, f in fits.items()}
        data["recommended_variant"] = rec.key if rec else None
        json.dump(data, out, indent=2)
        out.write("\n")
        return 0
    w = out.write
    w(f"{e.name}  ({e.id}{', from your catalog' if e.origin != 'bundled' else ''})\n")
    if e.description:
        w(f"  {e.description}\n")
    w(f"  publisher     {e.publisher}\n")
    w(f"  repo          {e.repo or 'none (built on this machine)'}\n")
    w(f"  source        {e.source}\n")
    w(f"  architecture  {e.architecture}, {e.params_label} parameters ({e.params:,}), "
      f"{e.num_layers} layers, hidden {e.hidden_size}\n")
    w(f"  context       {e.context_length:,} tokens\n")
    w(f"  licence       {e.license}" + (f"  {e.license_url}" if e.license_url else "") + "\n")
    w(f"  gated         {'yes: accept the licence on its Hugging Face page and set HF_TOKEN' if e.gated else 'no'}\n")
    w(f"  chat template {e.chat_template}\n")
    w(f"  LoRA targets  {', '.join(e.lora_targets)}\n")
    w(f"  tasks         {', '.join(e.tasks)}\n")
    if e.download_bytes:
        w(f"  weights       ~{human_bytes(e.download_bytes)} ({e.weights_dtype})\n")
    w("  variants:\n")
    for v in e.variants:
        size = f", ~{human_bytes(v.download_bytes)}" if v.download_bytes else ""
        star = "  <- recommended here" if rec is not None and v.key == rec.key else ""
        where = f"{v.repo} / {v.subfolder}" if v.subfolder else (v.repo or "built locally on export")
        w(f"    {v.key:<14} {where}{size}{star}\n")
        if v.notes:
            w(f"    {'':<14} {v.notes}\n")
    w(f"  on this machine ({info.label}):\n")
    for m, f in fits.items():
        w(f"    {m:<10} {f.device:<9} {f.summary()}\n")
    pull_variant = f" --variant {rec.runtime}" if rec is not None and rec.published and not e.local else ""
    w(f"  get it:       aitk model pull {e.id}{pull_variant}\n")
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
        _table(rows, out)
        total = sum(m.size_bytes + m.incomplete_bytes for m in scan.models if m.kind == "hf-cache")
        out.write(f"\nHugging Face cache {scan.cache_dir}: {human_bytes(total)}\n")
    for w in scan.warnings:
        out.write(f"warning: {w}\n")
    return 0


def cmd_model_rm(args) -> int:
    out = _out()
    preview = hub.remove(args.model, args.variant, dry_run=True)
    if args.dry_run:
        out.write(preview.message + "\n")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise AitkError(f"not removing {args.model} without confirmation ({preview.message})",
                            "pass --yes to confirm, or --dry-run to only look")
        answer = input(f"{preview.message}. Remove? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            out.write("nothing removed\n")
            return 1
    done = hub.remove(args.model, args.variant)
    out.write(done.message + "\n")
    return 0


def cmd_model_add(args) -> int:
    folder = hub.add_folder(args.path, args.name)
    _out().write(f"registered {folder.name!r}: {folder.path}\n")
    return 0


def cmd_doctor(args) -> int:
    out = _out()
    report = doctor.diagnose(check_torch=not args.quick)
    if args.json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(doctor.format(report))
    return 0 if report.ok else 1
