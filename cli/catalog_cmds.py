"""`aitk catalog list|show|search`: the curated models, their variants, and what fits here."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from ..core import catalog as cat
from ..core import devices, estimates
from ..core.catalog import human_bytes
from .common import table


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


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default=None, help="only models tagged with this task (chat, code, multilingual...)")
    p.add_argument("--runtime", default=None, help="only models with a variant for cpu, cuda or directml")
    p.add_argument("--fits", action="store_true", help="only models whose inference fits this machine")


def _out() -> TextIO:
    return sys.stdout


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
    table(rows, out)
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


